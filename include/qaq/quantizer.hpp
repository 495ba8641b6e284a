#pragma once
// Quantizer<Bits, Outliers, Storage, Backend>: one key or value cache in,
// a packed_tensor of real bytes out, and back.
//
//   Bits      how many bits per group      (qaq::bits::fixed, value_attention, key_query_norm)
//   Outliers  which values stay exact      (qaq::outliers::none, quantile)
//   Storage   how a group becomes codes    (qaq::storage::uniform_mean_centred,
//                                           uniform_zero_point, normal_quantile)
//   Backend   where the loops run          (qaq::backend::cpu)
//
// See docs/policies.md for the concepts each role must model.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "qaq/backend/cpu/batch_statistics.hpp"
#include "qaq/backend/cpu/cpu_backend.hpp"
#include "qaq/backend/cpu/simd.hpp"
#include "qaq/backend/cpu/zero_point_fit.hpp"
#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/group_layout.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/packed_tensor.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/policy/traits.hpp"
#include "qaq/precision.hpp"
#include "qaq/predicted_attention.hpp"
#include "qaq/tensor_view.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN

namespace outliers {
struct none;
}
namespace storage {
struct uniform_zero_point;
}

template <class Bits, class Outliers, class Storage, class Backend = backend::cpu>
class quantizer {
    static_assert(traits::is_bits_policy_v<Bits>,
                  "qaq: quantizer's first parameter must be a bit-allocation policy: a type with "
                  "`static constexpr bool is_bits_policy = true`, `needs_attention`, `adaptive`, "
                  "`bits_min()`, `bits_max()`, `window()` and `int operator()(const qaq::bits::context&) const` "
                  "(see docs/policies.md)");
    static_assert(!traits::is_bits_policy_v<Bits> || traits::has_bits_members_v<Bits>,
                  "qaq: a bit-allocation policy must declare `static constexpr bool needs_attention` and "
                  "`adaptive`, and provide `int bits_min() const`, `int bits_max() const`, `int window() const` "
                  "and `int operator()(const qaq::bits::context&) const` (see docs/policies.md)");
    static_assert(traits::is_outlier_policy_v<Outliers>,
                  "qaq: quantizer's second parameter must be an outlier policy: a type with "
                  "`static constexpr bool is_outlier_policy = true`, `double ratio() const` and "
                  "`std::int64_t mark(const float*, std::int64_t, std::uint8_t*, float*) const` "
                  "(see docs/policies.md)");
    static_assert(!traits::is_outlier_policy_v<Outliers> || traits::has_outlier_members_v<Outliers>,
                  "qaq: an outlier policy must provide `std::int64_t mark(const float* values, std::int64_t n, "
                  "std::uint8_t* is_outlier, float* scratch) const` and `double ratio() const` "
                  "(see docs/policies.md)");
    static_assert(traits::is_codec_v<Storage>,
                  "qaq: quantizer's third parameter must be a storage codec: a type with "
                  "`static constexpr bool is_codec = true`, fit/store/load/encode/decode "
                  "(see docs/policies.md)");
    static_assert(!traits::is_codec_v<Storage> || traits::has_codec_members_v<Storage>,
                  "qaq: a storage codec must declare `static constexpr bool needs_std` and "
                  "`supports_adaptive_bits`, hold a `precision`, and provide `stored_parameter_count()`, "
                  "`range(stats)`, `fit(stats, bits)`, `store(params, float*)`, `load(const float*, bits)`, "
                  "`encode(x, params, bits)` and `decode(code, params, bits)` (see docs/policies.md)");
    static_assert(traits::is_backend_v<Backend>,
                  "qaq: quantizer's fourth parameter must be a backend such as qaq::backend::cpu");
    static_assert(!Bits::adaptive || Storage::supports_adaptive_bits,
                  "qaq: this codec has no error formula for adaptive bit widths (the reference normal codec "
                  "is used with fixed bits only); combine it with qaq::bits::fixed or use a uniform codec");

public:
    using bits_policy = Bits;
    using outlier_policy = Outliers;
    using storage_policy = Storage;
    using backend_type = Backend;

    quantizer(Bits bits, Outliers outliers, Storage storage, group_level level, int group_dims = 0)
        : bits_(std::move(bits)), outliers_(std::move(outliers)), storage_(std::move(storage)), level_(level),
          group_dims_(group_dims) {
        if (level == group_level::sub_head)
            QAQ_CHECK(group_dims >= 1, "sub_head level needs group_dims >= 1, got ", group_dims);
        QAQ_CHECK(storage_.stored_parameter_count() >= 0 && storage_.stored_parameter_count() <= max_parameters,
                  "codec ", Storage::name, " stores ", storage_.stored_parameter_count(),
                  " parameters per group; at most ", max_parameters, " are supported");
    }

    /// Stored parameters a codec may keep per group.
    static constexpr int max_parameters = 2;

    // What generic code (the KV cache, the type-erased dynamic_quantizer) asks of any quantizer.
    static constexpr bool needs_attention() noexcept { return Bits::needs_attention; }
    int window() const noexcept { return bits_.window(); }
    int bits_min() const noexcept { return bits_.bits_min(); }
    int bits_max() const noexcept { return bits_.bits_max(); }
    double outlier_ratio() const noexcept { return outliers_.ratio(); }
    storage_precision precision() const noexcept { return storage_.precision; }
    int stored_parameter_count() const noexcept { return storage_.stored_parameter_count(); }

    const Bits& bits() const noexcept { return bits_; }
    const Outliers& outliers() const noexcept { return outliers_; }
    const Storage& storage() const noexcept { return storage_; }
    group_level level() const noexcept { return level_; }
    int group_dims() const noexcept { return group_dims_; }

    // ---- Group-level building blocks (shared by quantize/dequantize and the KV cache) ----

    /// Marks the outliers of one group (`is_outlier`, n bytes) and returns the
    /// statistics of its non-outliers. `scratch` holds n floats.
    group_statistics analyze(const float* values, std::int64_t n, std::uint8_t* is_outlier, float* scratch) const {
        return checked_statistics(values, is_outlier, n, mark_outliers(values, n, is_outlier, scratch));
    }

    /// The outlier policy's marks, checked against its count.
    std::int64_t mark_outliers(const float* values, std::int64_t n, std::uint8_t* is_outlier, float* scratch) const {
        const std::int64_t outlier_count = outliers_.mark(values, n, is_outlier, scratch);
        QAQ_CHECK(outlier_count == Backend::count_marked(is_outlier, n), "outlier policy ", Outliers::name,
                  " returned ", outlier_count, " but marked a different number of values");
        return outlier_count;
    }

    /// Statistics of the non-outliers, checked to be finite.
    group_statistics checked_statistics(const float* values, const std::uint8_t* is_outlier, std::int64_t n,
                                        std::int64_t outlier_count) const {
        const group_statistics stats = Backend::statistics(values, is_outlier, n, outlier_count, Storage::needs_std);
        // A non-finite value left unmarked poisons the sum (NaN or Inf mean).
        QAQ_CHECK(stats.count == 0 || std::isfinite(stats.mean), "outlier policy ", Outliers::name,
                  " left a non-finite value unmarked; every outlier policy must mark NaN and +-Inf");
        return stats;
    }

    /// Statistics of the non-outliers when the outlier mask is already known
    /// (re-quantizing from codes: the mask was fixed when the group arrived).
    group_statistics statistics(const float* values, const std::uint8_t* is_outlier, std::int64_t n,
                                std::int64_t outlier_count) const {
        return Backend::statistics(values, is_outlier, n, outlier_count, Storage::needs_std);
    }

    /// The range R the bit formulas read, checked to be finite.
    float range(const group_statistics& stats) const {
        const float r = storage_.range(stats);
        QAQ_CHECK(std::isfinite(r), "a group's range overflows float32 (", r,
                  "); values must be below 1.7e38 in magnitude");
        return r;
    }

    /// The width of one group from its range, predicted attention and position.
    int choose_bits(float group_range, float predicted_attention, std::int64_t tokens, std::int64_t token) const {
        bits::context ctx;
        ctx.range = group_range;
        ctx.predicted_attention = predicted_attention;
        ctx.tokens = tokens;
        ctx.token = token;
        const int width = bits_(ctx);
        QAQ_CHECK(width >= 0 && width <= max_bits, "bit policy returned ", width, " bits, expected 0..", max_bits);
        return width;
    }

    /// Fits the codec at `width`, encodes and packs the group into
    /// packed_code_bytes(n, width) bytes at `out`; returns the stored parameters.
    codec_parameters encode(const float* values, const std::uint8_t* is_outlier, std::int64_t n,
                            const group_statistics& stats, int width, std::uint32_t* scratch,
                            std::uint8_t* out) const {
        const codec_parameters params = storage_.fit(stats, width);
        Backend::encode(storage_, params, width, values, is_outlier, n, scratch, out);
        return params;
    }

    /// Unpacks and decodes a group (outliers are not restored here).
    void decode(const std::uint8_t* codes, std::int64_t n, int width, const codec_parameters& params,
                std::uint32_t* scratch, float* out) const {
        Backend::decode(storage_, params, width, codes, n, scratch, out);
    }

    /// The codec's affine form at `width` (x' = (code - bias) * scale + centre), when
    /// it has one; attention kernels then work on raw codes (docs/kv-cache.md).
    bool affine(const codec_parameters& params, int width, affine_code& out) const noexcept {
        if constexpr (backend::detail::has_affine_form<Storage>::value) {
            if (width == 0) return false;
            out = storage_.affine(params, width);
            return true;
        } else {
            (void)params, (void)width, (void)out;
            return false;
        }
    }

    /// The affine forms of `count` groups at once (attention kernels): group i's stored
    /// parameters are at `parameters + i * group_stride * parameter_bytes()`, its width is
    /// widths[i]; scales[i] and offsets[i] = centre - bias * scale are set (0 for width 0).
    /// Returns false (and sets nothing) when the codec has no affine form.
    bool affine_forms(const std::uint8_t* parameters, std::int64_t group_stride, const int* widths,
                      std::int64_t count, float* scales, float* offsets) const noexcept {
        return affine_forms_of(parameters, group_stride, width_list{widths}, count, scales, offsets);
    }
    /// The same for `count` groups that all have width `width` (the common case in attention:
    /// a block of tokens at one width); the per-group work is then free of width dispatch.
    bool affine_forms_at_width(const std::uint8_t* parameters, std::int64_t group_stride, int width, std::int64_t count,
                               float* scales, float* offsets) const noexcept {
        return affine_forms_of(parameters, group_stride, one_width{width}, count, scales, offsets);
    }

    /// Reconstruction of element i of a packed group (outliers not restored).
    float decode_element(const std::uint8_t* codes, std::int64_t i, int width, const codec_parameters& params) const {
        return storage_.decode(width > 0 ? read_code(codes, i, width) : 0u, params, width);
    }

    /// Writes the stored form of `params` (stored_parameter_count values in `precision`).
    void store_parameters(const codec_parameters& params, std::uint8_t* out) const noexcept {
        float stored[2] = {0.0f, 0.0f};
        storage_.store(params, stored);
        const std::int64_t bytes = bytes_per_value(storage_.precision);
        for (int k = 0; k < storage_.stored_parameter_count(); ++k) store_value(storage_.precision, stored[k], out + k * bytes);
    }
    codec_parameters load_parameters(const std::uint8_t* in, int width) const noexcept {
        float stored[2] = {0.0f, 0.0f};
        const std::int64_t bytes = bytes_per_value(storage_.precision);
        for (int k = 0; k < storage_.stored_parameter_count(); ++k) stored[k] = load_value(storage_.precision, in + k * bytes);
        return storage_.load(stored, width);
    }
    /// Bytes of stored parameters per group.
    std::int64_t parameter_bytes() const noexcept {
        return storage_.stored_parameter_count() * bytes_per_value(storage_.precision);
    }
    /// Throws unless an exact outlier value can be stored in the codec's precision.
    void check_outlier_value(float v) const {
        QAQ_CHECK(!std::isfinite(v) || std::isfinite(round_to(storage_.precision, v)), "outlier value ", v,
                  " does not fit fp16 storage; use storage_precision::fp32");
    }

    // ---- Whole tensors ----

    /// Quantizes a whole cache. `attention` is required when the bit policy needs it
    /// (value_attention) and ignored otherwise.
    packed_tensor quantize(const kv_view<const float>& cache,
                           const attention_view<const float>& attention = {}) const {
        packed_tensor out;
        out.layout = group_layout(cache.shape, level_, group_dims_);
        out.precision = storage_.precision;
        out.parameters_per_group = storage_.stored_parameter_count();
        const group_layout& layout = out.layout;
        const std::int64_t n = layout.group_size();
        const std::int64_t groups = layout.group_count();

        std::vector<float> predicted;
        if constexpr (Bits::needs_attention) predicted = predicted_attention(attention, cache.shape, bits_.window());

        out.widths.resize(static_cast<std::size_t>(groups));
        out.parameters.resize(static_cast<std::size_t>(groups * parameter_bytes()));
        out.codes.resize(static_cast<std::size_t>(groups * packed_code_bytes(n, bits_.bits_max())));  // trimmed below
        out.outlier_counts = packed_uint_array(static_cast<std::uint64_t>(n));
        out.outlier_positions = packed_uint_array(static_cast<std::uint64_t>(n - 1));

        quantize_state st(n, groups);
        const kv_shape& s = cache.shape;
        if ((level_ == group_level::head || level_ == group_level::sub_head) && cache.strides[4] == 1) {
            // Each group is a contiguous run of the cache: encoded where it lies, no gather, no
            // group_layout::box (divisions) per group.
            const std::int64_t subs = s.head_dim / n;
            std::int64_t g = 0;
            pending_group batch[batch_size];
            int pending = 0;
            (void)batch, (void)pending;
            for (std::int64_t b = 0; b < s.batch; ++b)
                for (std::int64_t t = 0; t < s.tokens; ++t)
                    for (std::int64_t l = 0; l < s.layers; ++l)
                        for (std::int64_t h = 0; h < s.heads; ++h) {
                            float attention_max = 0.0f;
                            if constexpr (Bits::needs_attention)
                                attention_max = std::max(attention_max, predicted[predicted_attention_index(s, b, t, l, h)]);
                            const float* row = &cache(l, b, h, t, 0);
                            // Consecutive groups lie in different heads (rows far apart): fetch this
                            // row's successor a few tokens ahead, which hardware prefetchers miss.
                            if (t + prefetch_tokens < s.tokens) prefetch_row(row + prefetch_tokens * cache.strides[3], s.head_dim);
                            for (std::int64_t sub = 0; sub < subs; ++sub, ++g) {
                                if constexpr (batches) {
                                    batch[pending++] = {row + sub * n, g, t, attention_max};
                                    if (pending == batch_size) {
                                        quantize_batch(batch, pending, n, s.tokens, st, out);
                                        pending = 0;
                                    }
                                } else {
                                    quantize_group(row + sub * n, n, g, attention_max, s.tokens, t, st, out);
                                }
                            }
                        }
            if constexpr (batches)
                if (pending > 0) quantize_batch(batch, pending, n, s.tokens, st, out);
        } else {
            for (std::int64_t g = 0; g < groups; ++g) {
                layout.gather(cache, g, st.values.data());
                const group_box box = layout.box(g);
                float attention_max = 0.0f;
                if constexpr (Bits::needs_attention) {
                    for (std::int64_t l = box.layer_begin; l < box.layer_end; ++l)
                        for (std::int64_t h = box.head_begin; h < box.head_end; ++h)
                            attention_max = std::max(attention_max, predicted[predicted_attention_index(s, box.batch, box.token, l, h)]);
                }
                quantize_group(st.values.data(), n, g, attention_max, s.tokens, box.token, st, out);
            }
        }
        if (st.total_outliers > 0) {  // otherwise nothing to index: hold no bytes for the counts
            out.outlier_counts.reserve(groups);
            for (std::int64_t g = 0; g < groups; ++g) out.outlier_counts.push_back(st.counts[static_cast<std::size_t>(g)]);
        }
        out.codes.resize(static_cast<std::size_t>(st.code_offset));
        out.codes.shrink_to_fit();
        out.outlier_counts.shrink_to_fit();
        out.outlier_positions.shrink_to_fit();
        out.outlier_values.shrink_to_fit();
        return out;
    }

    /// Reconstructs a packed cache into `out` (same shape as the quantized cache).
    void dequantize(const packed_tensor& packed, const kv_view<float>& out) const {
        const group_layout& layout = packed.layout;
        QAQ_CHECK(out.shape == layout.shape(), "dequantize target shape ", to_string(out.shape),
                  " differs from the packed cache shape ", to_string(layout.shape()));
        QAQ_CHECK(packed.parameters_per_group == storage_.stored_parameter_count() &&
                      packed.precision == storage_.precision,
                  "packed cache was written by a codec with a different parameter layout");
        const std::int64_t n = layout.group_size();
        std::vector<float> values(static_cast<std::size_t>(n));
        std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
        dequantize_state st{0, 0};
        const kv_shape& s = out.shape;
        const group_level level = layout.level();
        if ((level == group_level::head || level == group_level::sub_head) && out.strides[4] == 1) {
            // Each group decodes straight into its contiguous run of the output.
            const std::int64_t subs = s.head_dim / n;
            std::int64_t g = 0;
            float* rows[batch_size];
            int pending = 0;
            for (std::int64_t b = 0; b < s.batch; ++b)
                for (std::int64_t t = 0; t < s.tokens; ++t)
                    for (std::int64_t l = 0; l < s.layers; ++l)
                        for (std::int64_t h = 0; h < s.heads; ++h) {
                            float* row = &out(l, b, h, t, 0);
                            for (std::int64_t sub = 0; sub < subs; ++sub, ++g) {
                                if constexpr (batches) {
                                    rows[pending++] = row + sub * n;
                                    if (pending == batch_size) {
                                        dequantize_batch(packed, g + 1 - batch_size, n, codes.data(), rows, st);
                                        pending = 0;
                                    }
                                } else {
                                    dequantize_group(packed, g, n, codes.data(), row + sub * n, st);
                                }
                            }
                        }
            for (int k = 0; k < pending; ++k) dequantize_group(packed, g - pending + k, n, codes.data(), rows[k], st);
        } else {
            for (std::int64_t g = 0; g < layout.group_count(); ++g) {
                dequantize_group(packed, g, n, codes.data(), values.data(), st);
                layout.scatter(values.data(), g, out);
            }
        }
    }

private:
    struct width_list {
        static constexpr bool uniform = false;
        const int* widths;
        int operator()(std::int64_t i) const noexcept { return widths[i]; }
    };
    struct one_width {
        static constexpr bool uniform = true;
        int width;
        int operator()(std::int64_t) const noexcept { return width; }
    };
    // affine_forms with group i's width from width_of(i); a codec's optional batch form
    // (Storage::affine_forms) serves blocks of one width.
    template <class WidthOf>
    bool affine_forms_of(const std::uint8_t* parameters, std::int64_t group_stride, WidthOf width_of, std::int64_t count,
                         float* scales, float* offsets) const noexcept {
        if constexpr (backend::detail::has_affine_form<Storage>::value) {
            constexpr std::int64_t chunk = 64;
            float raw[max_parameters * chunk];
            const int per_group = storage_.stored_parameter_count();
            const std::int64_t value_bytes = bytes_per_value(storage_.precision);
            const std::int64_t stride = group_stride * parameter_bytes();
            for (std::int64_t i0 = 0; i0 < count; i0 += chunk) {
                const std::int64_t m = std::min(chunk, count - i0);
                const std::uint8_t* in = parameters + i0 * stride;
                if (group_stride == 1 && storage_.precision == storage_precision::fp16) {
                    backend::simd::halves_to_floats(in, m * per_group, raw);
                } else if (storage_.precision == storage_precision::fp16) {
                    // Sub-head groups of one head lie group_stride records apart: gather, then convert in bulk.
                    std::uint8_t packed[2 * max_parameters * chunk];
                    const std::int64_t record = per_group * value_bytes;
                    for (std::int64_t i = 0; i < m; ++i)
                        std::memcpy(packed + i * record, in + i * stride, static_cast<std::size_t>(record));
                    backend::simd::halves_to_floats(packed, m * per_group, raw);
                } else {
                    for (std::int64_t i = 0; i < m; ++i)
                        std::memcpy(raw + i * per_group, in + i * stride, static_cast<std::size_t>(per_group * value_bytes));
                }
                if constexpr (WidthOf::uniform && backend::detail::has_affine_batch<Storage>::value) {
                    const int width = width_of(i0);
                    if (width > 0) {
                        storage_.affine_forms(raw, width, m, scales + i0, offsets + i0);
                        continue;
                    }
                }
                for (std::int64_t i = 0; i < m; ++i) {
                    const int width = width_of(i0 + i);
                    if (width == 0) {
                        scales[i0 + i] = offsets[i0 + i] = 0.0f;
                        continue;
                    }
                    const affine_code a = storage_.affine(storage_.load(raw + i * per_group, width), width);
                    scales[i0 + i] = a.scale;
                    offsets[i0 + i] = a.centre - a.bias * a.scale;
                }
            }
            return true;
        } else {
            (void)parameters, (void)group_stride, (void)width_of, (void)count, (void)scales, (void)offsets;
            return false;
        }
    }

    // Contiguous groups on the CPU backend go through quantize_batch.
    static constexpr bool batches = std::is_same_v<Backend, backend::cpu>;
    static constexpr int batch_size = 8;
    // Running state of quantize(): scratch, per-group outlier counts, the code cursor.
    struct quantize_state {
        std::vector<float> values, scratch;
        std::vector<std::uint8_t> is_outlier;
        std::vector<std::uint32_t> codes, counts, positions;
        std::int64_t code_offset = 0, total_outliers = 0;
        // quantize_batch's groups.
        group_statistics batch_stats[batch_size];
        codec_parameters batch_params[batch_size];
        int batch_widths[batch_size];
        std::int64_t batch_offsets[batch_size];
        bool batch_dense[batch_size];
        // zero_point_batch's.
        alignas(32) float batch_min[batch_size];
        alignas(32) float batch_max[batch_size];
        backend::batch::zero_point_fits batch_fits;
        std::vector<std::uint8_t> batch_masks;  // batch_size masks of n bytes
        quantize_state(std::int64_t n, std::int64_t groups)
            : values(static_cast<std::size_t>(n)), scratch(static_cast<std::size_t>(n)),
              is_outlier(static_cast<std::size_t>(n)),
              codes(static_cast<std::size_t>(n)), counts(static_cast<std::size_t>(groups)),
              positions(static_cast<std::size_t>(n)),
              batch_masks(static_cast<std::size_t>(batches ? batch_size * n : 0)) {}
        std::uint8_t* batch_mask(int j, std::int64_t n) noexcept { return batch_masks.data() + j * n; }
    };

    static constexpr std::int64_t prefetch_tokens = 4;
    static void prefetch_row(const float* row, std::int64_t n) noexcept {
#if defined(__GNUC__) || defined(__clang__)
        for (std::int64_t i = 0; i < n; i += 16) __builtin_prefetch(row + i, 0, 3);
#else
        (void)row, (void)n;
#endif
    }

    // The uniform zero-point codec never reads the mean (fit and range use min, max, max|x|).
    static constexpr bool codec_reads_mean = !std::is_same_v<Storage, ::qaq::storage::uniform_zero_point>;

    // A group waiting for quantize_batch: its values, index, token and attention.
    struct pending_group {
        const float* x;
        std::int64_t g, token;
        float attention_max;
    };

    // Statistics of a group without outliers in one pass (min, max, and the sum when the codec
    // reads the mean); false when the configuration has no such pass or a value is NaN or
    // infinite (the group then takes analyze()).
    bool dense_statistics(const float* x, std::int64_t n, group_statistics& stats) const noexcept {
        if constexpr (std::is_same_v<Outliers, ::qaq::outliers::none> && std::is_same_v<Backend, backend::cpu> &&
                      !Storage::needs_std) {
            double sum = 0.0;
            if (!backend::affine::dense_statistics(x, n, codec_reads_mean, stats.min, stats.max, sum)) return false;
            stats.count = n;
            stats.mean = codec_reads_mean ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
            stats.absmax = std::max(std::fabs(stats.min), std::fabs(stats.max));
            stats.std = 0.0f;
            return true;
        } else {
            (void)x, (void)n, (void)stats;
            return false;
        }
    }

    // quantize_group for `count` groups, in three passes: statistics (and outlier marks) of all,
    // then widths, parameters, code offsets and exact outliers in group order, then encode +
    // pack. Each group's work is a chain of dependent scalar steps (horizontal min/max, quantile
    // ranks, fp16 roundings, divisions); side by side, the chains of different groups overlap
    // instead of each waiting for the one before. A group whose analysis throws ends the batch:
    // the groups before it are finished first, then it goes through quantize_group, so the same
    // error comes first as in group order.
    void quantize_batch(const pending_group* batch, int count, std::int64_t n, std::int64_t tokens,
                        quantize_state& st, packed_tensor& out) const {
        static_assert(batches, "the batch path is the CPU backend's");
        // In the state, not on the stack: zeroing them per batch (rep stos) cost 3% of quantize.
        group_statistics* stats = st.batch_stats;
        codec_parameters* params = st.batch_params;
        int* widths = st.batch_widths;
        std::int64_t* offsets = st.batch_offsets;
        bool* dense = st.batch_dense;
        if constexpr (zero_point_batches) {
            if (count == batch_size && zero_point_batch(batch, n, tokens, st, out)) return;
        }
        if constexpr (std::is_same_v<Outliers, ::qaq::outliers::none>) {
            // Only a non-finite value makes an outlier here: such a (rare) group goes through
            // quantize_group at its turn, and the others never carry a mask.
            for (int j = 0; j < count; ++j) dense[j] = dense_statistics(batch[j].x, n, stats[j]);
            for (int j = 0; j < count; ++j) {
                if (dense[j]) fit_group(batch, j, n, tokens, st, out);
                else quantize_group(batch[j].x, n, batch[j].g, batch[j].attention_max, tokens, batch[j].token, st, out);
            }
            for (int j = 0; j < count; ++j)
                if (dense[j])
                    Backend::encode(storage_, params[j], widths[j], batch[j].x, nullptr, n, st.codes.data(),
                                    out.codes.data() + offsets[j], stats[j].min, stats[j].max);
        } else {
            for (int j = 0; j < count; ++j) dense[j] = false;
            const int ready = analyze_batch(batch, count, n, st);
            for (int j = 0; j < ready; ++j) {
                fit_group(batch, j, n, tokens, st, out);
                if (stats[j].count < n) store_outliers(batch[j].x, n, n - stats[j].count, st.batch_mask(j, n), st, out);
            }
            for (int j = 0; j < ready; ++j)
                Backend::encode(storage_, params[j], widths[j], batch[j].x,
                                stats[j].count < n ? st.batch_mask(j, n) : nullptr, n, st.codes.data(),
                                out.codes.data() + offsets[j], stats[j].min, stats[j].max);
            for (int j = ready; j < count; ++j)
                quantize_group(batch[j].x, n, batch[j].g, batch[j].attention_max, tokens, batch[j].token, st, out);
        }
    }

    // The zero-point codec without outliers has a batch path in vector registers throughout.
    static constexpr bool zero_point_batches = batches && std::is_same_v<Outliers, ::qaq::outliers::none> &&
                                               std::is_same_v<Storage, ::qaq::storage::uniform_zero_point>;

    // quantize_batch for eight groups of the zero-point codec without outliers (not symmetric,
    // fp16 parameters): min and max of the eight groups together (batch_statistics.hpp), then in
    // group order the widths, code offsets, and everything that may throw (a group with a
    // non-finite value goes through quantize_group, one with values beyond the vector fit's
    // bound through fit_group), then the parameters of the rest in vector registers
    // (zero_point_fit.hpp; fit() for the lanes it leaves), then encode + pack. Returns false,
    // having done nothing, when this configuration or processor has no such path.
    bool zero_point_batch(const pending_group* batch, std::int64_t n, std::int64_t tokens, quantize_state& st,
                          packed_tensor& out) const {
        if constexpr (zero_point_batches) {
            if (storage_.symmetric || storage_.precision != storage_precision::fp16) return false;
            const float* x[batch_size];
            for (int j = 0; j < batch_size; ++j) x[j] = batch[j].x;
            float* mins = st.batch_min;
            float* maxs = st.batch_max;
            unsigned finite = 0;
            if (!backend::batch::min_max8(x, n, mins, maxs, finite)) return false;
            group_statistics* stats = st.batch_stats;
            int* widths = st.batch_widths;
            std::int64_t* offsets = st.batch_offsets;
            const auto set_stats = [&](int j) {
                stats[j].count = n;
                stats[j].min = mins[j];
                stats[j].max = maxs[j];
                stats[j].absmax = std::max(std::fabs(mins[j]), std::fabs(maxs[j]));
                stats[j].mean = stats[j].std = 0.0f;  // as dense_statistics leaves them for this codec
            };
            constexpr float bound = backend::batch::zero_point_fit_bound;
            unsigned vector_lanes = 0;  // groups whose parameters come from the vector fit
            for (int j = 0; j < batch_size; ++j) {
                const pending_group& p = batch[j];
                if (!(finite >> j & 1u)) {
                    widths[j] = 0;
                    quantize_group(p.x, n, p.g, p.attention_max, tokens, p.token, st, out);
                } else if (!(std::fabs(mins[j]) <= bound && std::fabs(maxs[j]) <= bound)) {
                    set_stats(j);
                    fit_group(batch, j, n, tokens, st, out);
                } else {
                    // range() cannot throw here (|max - min| <= 2 bound); choose_bits may.
                    widths[j] = choose_bits(maxs[j] - mins[j], p.attention_max, tokens, p.token);
                    out.widths[static_cast<std::size_t>(p.g)] = static_cast<std::uint8_t>(widths[j]);
                    offsets[j] = st.code_offset;
                    st.code_offset += packed_code_bytes(n, widths[j]);
                    // st.counts[g] stays 0: no outliers.
                    vector_lanes |= 1u << j;
                }
            }
            backend::batch::zero_point_fits& f = st.batch_fits;
            backend::batch::fit_zero_point_fp16(mins, maxs, widths, f);  // AVX2 ran above: always done
            const unsigned fitted = f.fitted & vector_lanes;
            std::uint8_t* parameters = out.parameters.data() + batch[0].g * parameter_bytes();  // consecutive groups
            if (fitted == 0xFFu) {
                std::memcpy(parameters, f.stored, sizeof f.stored);
            } else {
                for (int j = 0; j < batch_size; ++j) {
                    if (fitted >> j & 1u) {
                        std::memcpy(parameters + 4 * j, f.stored + 2 * j, 4);
                    } else if (vector_lanes >> j & 1u) {  // fit() steps s up, width 0, constant group
                        set_stats(j);
                        st.batch_params[j] = storage_.fit(stats[j], widths[j]);
                        store_parameters(st.batch_params[j], parameters + 4 * j);
                    }
                }
            }
            // The usual case, eight groups of one width from the vector fit: one kernel call.
            // (All eight from the vector fit: their codes follow one another.)
            if (fitted == 0xFFu && std::equal(widths + 1, widths + batch_size, widths) &&
                backend::affine::encode_groups(x, n, widths[0], batch_size, f.centre, f.scale, f.inverse, 0.0f,
                                               f.steps[0], 0.0f, f.in_range, st.codes.data(),
                                               out.codes.data() + offsets[0]))
                return true;
            for (int j = 0; j < batch_size; ++j) {
                if (fitted >> j & 1u) {
                    const affine_code a{f.centre[j], f.scale[j], 0.0f, f.steps[j], 0.0f};
                    backend::affine::encode_with_reciprocal(x[j], nullptr, n, widths[j], a, f.inverse[j],
                                                            f.in_range >> j & 1u, st.codes.data(),
                                                            out.codes.data() + offsets[j]);
                } else if (finite >> j & 1u) {  // parameters from fit() or fit_group; the others are done
                    Backend::encode(storage_, st.batch_params[j], widths[j], x[j], nullptr, n, st.codes.data(),
                                    out.codes.data() + offsets[j], stats[j].min, stats[j].max);
                }
            }
            return true;
        } else {
            (void)batch, (void)n, (void)tokens, (void)st, (void)out;
            return false;
        }
    }

    // Widths, parameters, code offset and outlier count of group j of a batch whose statistics
    // are in st.batch_stats[j], in group order.
    void fit_group(const pending_group* batch, int j, std::int64_t n, std::int64_t tokens, quantize_state& st,
                   packed_tensor& out) const {
        const pending_group& p = batch[j];
        const group_statistics& stats = st.batch_stats[j];
        st.batch_widths[j] = choose_bits(range(stats), p.attention_max, tokens, p.token);
        out.widths[static_cast<std::size_t>(p.g)] = static_cast<std::uint8_t>(st.batch_widths[j]);
        st.batch_params[j] = storage_.fit(stats, st.batch_widths[j]);
        st.batch_offsets[j] = st.code_offset;
        st.code_offset += packed_code_bytes(n, st.batch_widths[j]);
        store_parameters(st.batch_params[j], out.parameters.data() + p.g * parameter_bytes());
        st.counts[static_cast<std::size_t>(p.g)] = static_cast<std::uint32_t>(n - stats.count);
    }

    // Marks and statistics of the batch's groups that the dense pass left; returns how many
    // groups lead up to the first whose analysis throws (count when none does). Out of line for
    // the same reason as quantize_group.
    QAQ_NOINLINE int analyze_batch(const pending_group* batch, int count, std::int64_t n, quantize_state& st) const {
        for (int j = 0; j < count; ++j) {
            if (st.batch_dense[j]) continue;
            try {
                st.batch_stats[j] = analyze_for_codec(batch[j].x, n, st.batch_mask(j, n), st.scratch.data());
            } catch (...) {
                return j;
            }
        }
        return count;
    }

    // The exact values and positions of a group's outliers (is_outlier: its mask, outlier_count > 0).
    QAQ_NOINLINE void store_outliers(const float* x, std::int64_t n, std::int64_t outlier_count,
                                     const std::uint8_t* is_outlier, quantize_state& st, packed_tensor& out) const {
        const std::int64_t value_bytes = bytes_per_value(out.precision);
        std::size_t vat = out.outlier_values.size();
        out.outlier_values.resize(vat + static_cast<std::size_t>(outlier_count * value_bytes));
        std::uint32_t* positions = st.positions.data();
        std::int64_t k = 0;
        backend::for_each_marked(is_outlier, n, [&](std::int64_t i) {
            check_outlier_value(x[i]);
            positions[k++] = static_cast<std::uint32_t>(i);
            store_value(out.precision, x[i], &out.outlier_values[vat]);
            vat += static_cast<std::size_t>(value_bytes);
        });
        out.outlier_positions.append(positions, k);
        st.total_outliers += outlier_count;
    }

    // analyze(), except that a codec reading neither mean nor std (the zero-point codec) on the
    // CPU backend gets min and max of the non-outliers from one AVX2 pass (no double sum; the
    // mean is left 0, as the dense path leaves it).
    group_statistics analyze_for_codec(const float* x, std::int64_t n, std::uint8_t* is_outlier, float* scratch) const {
        if constexpr (!codec_reads_mean && !Storage::needs_std && std::is_same_v<Backend, backend::cpu>) {
            const std::int64_t outlier_count = mark_outliers(x, n, is_outlier, scratch);
            group_statistics stats;
            if (outlier_count < n && backend::affine::kept_min_max(x, is_outlier, n, stats.min, stats.max)) {
                stats.count = n - outlier_count;
                stats.absmax = std::max(std::fabs(stats.min), std::fabs(stats.max));
                return stats;
            }
            return checked_statistics(x, is_outlier, n, outlier_count);
        } else {
            return analyze(x, n, is_outlier, scratch);
        }
    }

    // Quantizes group g (n contiguous values at x) into `out`. Out of line: inlined into
    // quantize() beside the batch path, it pushed the fit out of that path's inlining budget.
    QAQ_NOINLINE void quantize_group(const float* x, std::int64_t n, std::int64_t g, float attention_max, std::int64_t tokens,
                        std::int64_t token, quantize_state& st, packed_tensor& out) const {
        group_statistics stats;
        const bool dense = dense_statistics(x, n, stats);
        if (!dense) stats = analyze_for_codec(x, n, st.is_outlier.data(), st.scratch.data());
        const int width = choose_bits(range(stats), attention_max, tokens, token);
        out.widths[static_cast<std::size_t>(g)] = static_cast<std::uint8_t>(width);
        const codec_parameters params = storage_.fit(stats, width);
        // The CPU backend takes a null mask for "no outliers" (no scan of n zero bytes), and the
        // range of the non-outliers (its encoder then need not clamp).
        if constexpr (std::is_same_v<Backend, backend::cpu>)
            Backend::encode(storage_, params, width, x, dense ? nullptr : st.is_outlier.data(), n, st.codes.data(),
                            out.codes.data() + st.code_offset, stats.min, stats.max);
        else
            Backend::encode(storage_, params, width, x, st.is_outlier.data(), n, st.codes.data(),
                            out.codes.data() + st.code_offset);
        st.code_offset += packed_code_bytes(n, width);
        store_parameters(params, out.parameters.data() + g * parameter_bytes());

        st.counts[static_cast<std::size_t>(g)] = static_cast<std::uint32_t>(n - stats.count);
        if (stats.count < n) store_outliers(x, n, n - stats.count, st.is_outlier.data(), st, out);
    }

    struct dequantize_state {
        std::int64_t code_offset, outlier_cursor;
    };

    // Decodes group g into n floats at `values`, exact outliers restored.
    void dequantize_group(const packed_tensor& packed, std::int64_t g, std::int64_t n, std::uint32_t* codes, float* values,
                          dequantize_state& st) const {
        const int width = packed.widths[static_cast<std::size_t>(g)];
        const codec_parameters params = load_parameters(packed.parameters.data() + g * parameter_bytes(), width);
        decode(packed.codes.data() + st.code_offset, n, width, params, codes, values);
        st.code_offset += packed_code_bytes(n, width);
        restore_outliers(packed, g, values, st);
    }

    // Writes group g's exact outliers over its decoded values.
    static void restore_outliers(const packed_tensor& packed, std::int64_t g, float* values, dequantize_state& st) {
        if (packed.outlier_counts.empty()) return;
        const std::int64_t value_bytes = bytes_per_value(packed.precision);
        const std::int64_t count = packed.outlier_counts[g];
        for (std::int64_t k = 0; k < count; ++k, ++st.outlier_cursor)
            values[packed.outlier_positions[st.outlier_cursor]] = load_value(
                packed.precision, &packed.outlier_values[static_cast<std::size_t>(st.outlier_cursor * value_bytes)]);
    }

    // dequantize_group for the eight groups g0.. (consecutive in the code stream) into rows[k].
    // When they share one width (the usual case) and the codec has an affine form, their
    // parameters are converted together and the kernel is dispatched once for all eight (on
    // 64-value groups the per-group work was a third of dequantize). Each group's outliers
    // are restored right after its own decode, as dequantize_group does (outputs may overlap).
    void dequantize_batch(const packed_tensor& packed, std::int64_t g0, std::int64_t n, std::uint32_t* codes,
                          float* const* rows, dequantize_state& st) const {
        if constexpr (batches && backend::detail::has_affine_form<Storage>::value) {
            const std::uint8_t* widths = packed.widths.data() + g0;
            const int width = widths[0];
            bool same = width > 0 && backend::simd::use_avx2();  // (the scalar path has no batch kernel)
            for (int k = 1; k < batch_size; ++k) same &= widths[k] == width;
            const int per_group = storage_.stored_parameter_count();
            float raw[max_parameters * batch_size];
            if (same) {
                const std::uint8_t* in = packed.parameters.data() + g0 * parameter_bytes();
                if (storage_.precision == storage_precision::fp16) backend::simd::halves_to_floats(in, batch_size * per_group, raw);
                else std::memcpy(raw, in, static_cast<std::size_t>(batch_size * per_group) * sizeof(float));
                // A NaN parameter keeps load_value's conversion (its payload bits).
                for (int i = 0; i < batch_size * per_group; ++i) same &= !std::isnan(raw[i]);
            }
            if (same) {
                affine_code a[batch_size];
                for (int k = 0; k < batch_size; ++k) {
                    float stored[max_parameters] = {0.0f, 0.0f};  // as load_parameters hands them to load()
                    for (int i = 0; i < per_group; ++i) stored[i] = raw[k * per_group + i];
                    a[k] = storage_.affine(storage_.load(stored, width), width);
                }
                const std::uint8_t* in = packed.codes.data() + st.code_offset;
                const bool done = packed.outlier_counts.empty()
                                      ? backend::affine::decode_groups(in, n, width, a, batch_size, rows, [](int) {})
                                      : backend::affine::decode_groups(in, n, width, a, batch_size, rows, [&](int k) {
                                            restore_outliers(packed, g0 + k, rows[k], st);
                                        });
                if (done) {
                    st.code_offset += batch_size * packed_code_bytes(n, width);
                    return;
                }
            }
        }
        for (int k = 0; k < batch_size; ++k) dequantize_group(packed, g0 + k, n, codes, rows[k], st);
    }

    Bits bits_;
    Outliers outliers_;
    Storage storage_;
    group_level level_;
    int group_dims_;
};

QAQ_NAMESPACE_END
