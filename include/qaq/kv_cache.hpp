#pragma once
// quantized_kv_cache: the compressed key/value memory of a whole model and the
// paper's decode-time protocol (QAQ-METHOD section 8), for one sequence.
//
// One decode step, per layer l:
//   cache.append(l, k, v)        full-precision copy kept on the host; codes at bits_max
//   cache.attend(l, q, out, p)   softmax(q K^T / sqrt(D)) V straight over the packed codes
//   cache.observe(l, p)          the attention-window tracker records the row
// then, after the last layer:
//   cache.rebalance()            new widths for every group; moves down from codes or the
//                                host copy (an option), up always from the host copy
// Prefill-then-quantize (the paper's evaluation) is cache.prefill(K, V, attention).
//
// Groups are per (token, layer, KV head) or finer (head / sub_head levels):
// token- and layer-level groups span heads or layers that a decode step
// produces separately, so this cache rejects them (the whole-tensor quantizer
// supports them).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qaq/attention_window.hpp"
#include "qaq/backend/cpu/code_kernels.hpp"
#include "qaq/cache/group_stream.hpp"
#include "qaq/cache/step_tracker.hpp"
#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/packed_tensor.hpp"
#include "qaq/predicted_attention.hpp"
#include "qaq/reference_accounting.hpp"
#include "qaq/tensor_view.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN

/// Where a group that needs fewer bits is re-quantized from.
enum class downgrade_source : std::uint8_t {
    codes,      ///< its current codes, as in the paper (no host traffic; error compounds)
    host_copy,  ///< its full-precision host copy (a fresh quantization; costs host reads)
};

struct kv_cache_options {
    downgrade_source downgrade = downgrade_source::host_copy;
};

/// What rebalancing did so far.
struct rebalance_counters {
    std::int64_t rebalances = 0;
    std::int64_t groups_up = 0;
    std::int64_t groups_down = 0;
    std::int64_t host_bytes_read = 0;

    /// What happened since `before`, reported as one rebalance.
    rebalance_counters since(const rebalance_counters& before) const noexcept {
        rebalance_counters step = *this;
        step.groups_up -= before.groups_up;
        step.groups_down -= before.groups_down;
        step.host_bytes_read -= before.host_bytes_read;
        step.rebalances = 1;
        return step;
    }
};

/// Every byte the cache holds. keys/values: the compressed memory (codes in
/// their width pools, parameters, tags, slot indices, outliers, slack);
/// host-side: the full-precision copy, group ranges and the attention window.
struct kv_cache_byte_report {
    byte_report keys;
    byte_report values;
    std::int64_t host_copy = 0;
    std::int64_t host_metadata = 0;
    std::int64_t attention_window = 0;

    byte_report quantized() const noexcept {
        byte_report r = keys;
        r += values;
        return r;
    }
    std::int64_t total() const noexcept { return quantized().total() + host_copy + host_metadata + attention_window; }
};

template <class KeyQuantizer, class ValueQuantizer>
class quantized_kv_cache {
public:
    quantized_kv_cache(const kv_cache_shape& shape, KeyQuantizer keys, ValueQuantizer values,
                       kv_cache_options options = {})
        : steps_(shape), shape_(shape), options_(options), keys_(std::move(keys)), values_(std::move(values)) {
        keys_.init(shape, "key");
        values_.init(shape, "value");
        window_ = attention_window(shape.layers, shape.kv_heads, shape.query_heads,
                                   std::max(keys_.quantizer.window(), values_.quantizer.window()));
    }

    const kv_cache_shape& shape() const noexcept { return shape_; }
    /// Tokens held by `layer`.
    std::int64_t tokens(std::int64_t layer = 0) const { return steps_.tokens(layer); }
    const rebalance_counters& counters() const noexcept { return counters_; }
    const KeyQuantizer& key_quantizer() const noexcept { return keys_.quantizer; }
    const ValueQuantizer& value_quantizer() const noexcept { return values_.quantizer; }
    const attention_window& window() const noexcept { return window_; }

    /// Appends the next token of `layer`: keys and values [kv_heads][head_dim].
    /// Layers take the token in order 0, 1, ..., layers - 1.
    void append(std::int64_t layer, const float* keys, std::int64_t key_count, const float* values,
                std::int64_t value_count) {
        (void)steps_.check_append(layer, key_count, value_count);
        for (std::int64_t i = 0; i < key_count; ++i)
            QAQ_CHECK(std::isfinite(keys[i]) && std::isfinite(values[i]), "non-finite key or value at index ", i,
                      " of layer ", layer, "; the cache accepts finite values only");
        // Both roles encode the whole token before either stores anything, so a refused token
        // (a qaq::error from a parameter or an outlier that storage cannot hold) leaves no trace.
        keys_.stage_token(shape_, keys);
        values_.stage_token(shape_, values);
        keys_.commit_token(shape_, layer, keys);
        values_.commit_token(shape_, layer, values);
        steps_.appended(layer);
    }

    /// Attention of one query token over every cached token of `layer`, straight
    /// over the packed codes and exact outliers: queries [query_heads][head_dim],
    /// output [query_heads][head_dim], probabilities [query_heads][tokens(layer)].
    void attend(std::int64_t layer, const float* queries, std::int64_t query_count, float* output,
                std::int64_t output_count, float* probabilities, std::int64_t probability_count) const {
        const std::int64_t T = steps_.check_attend(layer, query_count, output_count, probability_count);
        const std::int64_t D = shape_.head_dim, Hq = shape_.query_heads;
        const std::int64_t per_kv = Hq / shape_.kv_heads;
        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        for (std::int64_t h = 0; h < shape_.kv_heads; ++h) {
            const std::int64_t first_query = h * per_kv;
            float* scores = probabilities + first_query * T;
            attend_scores(keys_, keys_.stream(shape_, layer, h), queries + first_query * D, per_kv, T, scores);
            for (std::int64_t j = 0; j < per_kv; ++j) {
                Eigen::Map<Eigen::ArrayXf>(scores + j * T, T) *= scale;
                softmax(scores + j * T, T);
            }
            attend_values(values_, values_.stream(shape_, layer, h), scores, per_kv, T, output + first_query * D);
        }
    }

    /// Records an attention row of `layer` ([query_heads][tokens(layer)]) in the window tracker.
    void observe(std::int64_t layer, const float* probabilities, std::int64_t probability_count) {
        window_.observe(layer, probabilities, steps_.check_observe(layer, probability_count));
    }

    /// Recomputes every group's width and re-quantizes the groups whose width
    /// changed. An empty cache has nothing to rebalance (a no-op).
    rebalance_counters rebalance() {
        const std::int64_t T = steps_.step_tokens();
        const rebalance_counters before = counters_;
        if (T > 0) {
            keys_.rebalance(shape_, T, window_, options_.downgrade, counters_);
            values_.rebalance(shape_, T, window_, options_.downgrade, counters_);
        }
        ++counters_.rebalances;
        return counters_.since(before);
    }

    /// Quantizes a whole prefilled cache in one call, exactly as the whole-tensor
    /// quantizer would: keys and values [layers, 1, kv_heads, tokens, head_dim],
    /// attention [layers, 1, query_heads, rows, tokens] (needed when a bit policy
    /// reads attention). The last rows seed the attention window. The cache must be empty.
    void prefill(const kv_view<const float>& keys, const kv_view<const float>& values,
                 const attention_view<const float>& attention = {}) {
        const kv_shape expected = steps_.check_prefill(
            keys, values, attention, keys_.quantizer.needs_attention() || values_.quantizer.needs_attention());
        try {
            keys_.prefill(shape_, keys, attention);
            values_.prefill(shape_, values, attention);
        } catch (...) {
            // A refused prefill leaves the cache as it was: empty, as constructed.
            keys_.init(shape_, "key");
            values_.init(shape_, "value");
            throw;
        }
        steps_.set_all(expected.tokens);
        if (!attention.empty()) {
            const std::int64_t T = expected.tokens, R = attention.shape.rows;
            std::vector<float> row(static_cast<std::size_t>(shape_.query_heads * T));
            for (std::int64_t l = 0; l < shape_.layers; ++l)
                for (std::int64_t r = std::max<std::int64_t>(0, R - window_.window()); r < R; ++r) {
                    for (std::int64_t q = 0; q < shape_.query_heads; ++q)
                        for (std::int64_t t = 0; t < T; ++t) row[static_cast<std::size_t>(q * T + t)] = attention(l, 0, q, r, t);
                    window_.observe(l, row.data(), T);
                }
        }
    }

    /// Reconstructs one layer of keys or values into out [kv_heads][tokens][head_dim]
    /// (for evaluation and tests; attend never does this).
    void dequantize(std::int64_t layer, cache_role role, float* out, std::int64_t out_count) const {
        const std::int64_t T = steps_.tokens(layer);
        QAQ_CHECK(out_count == shape_.kv_heads * T * shape_.head_dim, "dequantize got room for ", out_count,
                  " values; expected kv_heads x tokens x head_dim = ", shape_.kv_heads * T * shape_.head_dim);
        std::vector<std::uint32_t> scratch(static_cast<std::size_t>(shape_.head_dim));
        for (std::int64_t h = 0; h < shape_.kv_heads; ++h) {
            float* head_out = out + h * T * shape_.head_dim;
            auto read = [&](const auto& store) {
                token_reader<std::decay_t<decltype(store.quantizer)>> reader(store, store.stream(shape_, layer, h),
                                                                               nullptr, scratch.data());
                for (std::int64_t t = 0; t < T; ++t) reader.read_token(t, head_out + t * shape_.head_dim);
            };
            if (role == cache_role::key) read(keys_);
            else read(values_);
        }
    }

    /// The width of every group of one layer and role, [kv_heads][tokens][groups per head].
    std::vector<int> widths(std::int64_t layer, cache_role role) const {
        check_layer(layer);
        std::vector<int> out;
        auto collect = [&](const auto& store) {
            for (std::int64_t h = 0; h < shape_.kv_heads; ++h) {
                const cache::group_stream& s = store.stream(shape_, layer, h);
                for (std::int64_t g = 0; g < s.group_count(); ++g) out.push_back(s.width(g));
            }
        };
        if (role == cache_role::key) collect(keys_);
        else collect(values_);
        return out;
    }

    kv_cache_byte_report bytes() const noexcept {
        kv_cache_byte_report r;
        r.keys = keys_.bytes();
        r.values = values_.bytes();
        r.host_copy = keys_.host_copy_bytes() + values_.host_copy_bytes();
        r.host_metadata = keys_.host_metadata_bytes() + values_.host_metadata_bytes();
        r.attention_window = window_.bytes();
        return r;
    }

    /// The original implementation's accounting of one cache role.
    reference_accounting accounting(cache_role role) const {
        std::vector<std::uint8_t> all;
        double ratio = 0.0;
        int parameters = 0;
        std::int64_t group_size = 0;
        auto collect = [&](const auto& store) {
            for (const auto& s : store.streams)
                for (std::int64_t g = 0; g < s.group_count(); ++g) all.push_back(static_cast<std::uint8_t>(s.width(g)));
            ratio = store.quantizer.outlier_ratio();
            parameters = store.quantizer.stored_parameter_count();
            group_size = store.group_size;
        };
        if (role == cache_role::key) collect(keys_);
        else collect(values_);
        return reference_accounting::of(all, ratio, parameters, group_size);
    }

private:
    // Everything one cache role (keys or values) holds.
    template <class Quantizer>
    struct role_store {
        Quantizer quantizer;
        cache::width_pools pools;
        std::vector<cache::group_stream> streams;  // [layer][kv_head]
        std::int64_t group_size = 0;
        std::int64_t groups_per_head = 0;

        explicit role_store(Quantizer q) : quantizer(std::move(q)) {}

        void init(const kv_cache_shape& s, const char* role) {
            const group_level level = quantizer.level();
            QAQ_CHECK(level == group_level::head || level == group_level::sub_head, "the ", role,
                      " quantizer groups at ", to_string(level),
                      " level; the decode-time cache needs head or sub_head groups (a decode step produces one "
                      "layer at a time)");
            group_size = level == group_level::head ? s.head_dim : quantizer.group_dims();
            QAQ_CHECK(group_size >= 1 && s.head_dim % group_size == 0, "sub_head group_dims ", group_size,
                      " must divide head_dim ", s.head_dim);
            groups_per_head = s.head_dim / group_size;
            pools = cache::width_pools(group_size);
            streams.clear();
            streams.reserve(static_cast<std::size_t>(s.layers * s.kv_heads));
            for (std::int64_t i = 0; i < s.layers * s.kv_heads; ++i)
                streams.emplace_back(group_size, quantizer.parameter_bytes(), quantizer.precision());
        }

        cache::group_stream& stream(const kv_cache_shape& s, std::int64_t layer, std::int64_t head) {
            return streams[static_cast<std::size_t>(layer * s.kv_heads + head)];
        }
        const cache::group_stream& stream(const kv_cache_shape& s, std::int64_t layer, std::int64_t head) const {
            return streams[static_cast<std::size_t>(layer * s.kv_heads + head)];
        }

        // Encodes one group at `width` and appends it to `stream`.
        void append_group(cache::group_stream& stream, const float* values, float predicted_attention,
                          std::int64_t tokens, std::int64_t token, bool use_policy_width) {
            thread_local std::vector<float> scratch;
            thread_local std::vector<std::uint8_t> is_outlier, codes, parameters;
            thread_local std::vector<std::uint32_t> code_scratch;
            scratch.resize(static_cast<std::size_t>(group_size));
            is_outlier.resize(static_cast<std::size_t>(group_size));
            code_scratch.resize(static_cast<std::size_t>(group_size));
            codes.resize(static_cast<std::size_t>(packed_code_bytes(group_size, max_bits)));
            parameters.resize(static_cast<std::size_t>(quantizer.parameter_bytes()));
            const group_statistics stats = quantizer.analyze(values, group_size, is_outlier.data(), scratch.data());
            for (std::int64_t i = 0; i < group_size; ++i)
                if (is_outlier[static_cast<std::size_t>(i)]) quantizer.check_outlier_value(values[i]);
            const float range = quantizer.range(stats);
            const int width = use_policy_width ? quantizer.choose_bits(range, predicted_attention, tokens, token)
                                               : quantizer.bits_max();
            const codec_parameters params =
                quantizer.encode(values, is_outlier.data(), group_size, stats, width, code_scratch.data(), codes.data());
            quantizer.store_parameters(params, parameters.data());
            stream.append(pools, values, range, width, parameters.data(), codes.data(), is_outlier.data());
        }

        // One token of this role encoded at bits_max but not stored yet: what append_group
        // computes for each of its kv_heads x groups_per_head groups, in (head, group) order.
        struct staged_token {
            std::vector<float> ranges, scratch;
            std::vector<std::uint8_t> is_outlier, codes, parameters;
            std::vector<std::uint32_t> code_scratch;
        };
        staged_token staged;

        // Encodes a token [kv_heads][head_dim] into `staged`; throws what append_group would, storing nothing.
        void stage_token(const kv_cache_shape& s, const float* data) {
            const std::int64_t groups = s.kv_heads * groups_per_head;
            const std::int64_t code_stride = packed_code_bytes(group_size, max_bits);
            const std::int64_t parameter_stride = quantizer.parameter_bytes();
            staged.ranges.resize(static_cast<std::size_t>(groups));
            staged.scratch.resize(static_cast<std::size_t>(group_size));
            staged.code_scratch.resize(static_cast<std::size_t>(group_size));
            staged.is_outlier.resize(static_cast<std::size_t>(groups * group_size));
            staged.codes.resize(static_cast<std::size_t>(groups * code_stride));
            staged.parameters.resize(static_cast<std::size_t>(groups * parameter_stride));
            const int width = quantizer.bits_max();
            for (std::int64_t i = 0; i < groups; ++i) {  // group i = head i / groups_per_head, group i % groups_per_head
                const float* values = data + i * group_size;
                std::uint8_t* is_outlier = staged.is_outlier.data() + i * group_size;
                const group_statistics stats = quantizer.analyze(values, group_size, is_outlier, staged.scratch.data());
                for (std::int64_t k = 0; k < group_size; ++k)
                    if (is_outlier[k]) quantizer.check_outlier_value(values[k]);
                staged.ranges[static_cast<std::size_t>(i)] = quantizer.range(stats);
                const codec_parameters params = quantizer.encode(values, is_outlier, group_size, stats, width,
                                                                 staged.code_scratch.data(),
                                                                 staged.codes.data() + i * code_stride);
                quantizer.store_parameters(params, staged.parameters.data() + i * parameter_stride);
            }
        }

        // Stores the token stage_token encoded (`data` is the same token: its host copy and outliers).
        void commit_token(const kv_cache_shape& s, std::int64_t layer, const float* data) {
            const std::int64_t code_stride = packed_code_bytes(group_size, max_bits);
            const std::int64_t parameter_stride = quantizer.parameter_bytes();
            for (std::int64_t h = 0; h < s.kv_heads; ++h)
                for (std::int64_t g = 0; g < groups_per_head; ++g) {
                    const std::int64_t i = h * groups_per_head + g;
                    stream(s, layer, h).append(pools, data + i * group_size, staged.ranges[static_cast<std::size_t>(i)],
                                               quantizer.bits_max(), staged.parameters.data() + i * parameter_stride,
                                               staged.codes.data() + i * code_stride,
                                               staged.is_outlier.data() + i * group_size);
                }
        }

        void prefill(const kv_cache_shape& s, const kv_view<const float>& data,
                     const attention_view<const float>& attention) {
            const std::int64_t T = data.shape.tokens;
            std::vector<float> predicted;
            if (quantizer.needs_attention()) predicted = predicted_attention(attention, data.shape, quantizer.window());
            std::vector<float> values(static_cast<std::size_t>(group_size));
            for (std::int64_t l = 0; l < s.layers; ++l)
                for (std::int64_t h = 0; h < s.kv_heads; ++h)
                    for (std::int64_t t = 0; t < T; ++t) {
                        const float a = predicted.empty()
                                            ? 0.0f
                                            : predicted[static_cast<std::size_t>(predicted_attention_index(data.shape, 0, t, l, h))];
                        for (std::int64_t g = 0; g < groups_per_head; ++g) {
                            for (std::int64_t d = 0; d < group_size; ++d)
                                values[static_cast<std::size_t>(d)] = data(l, 0, h, t, g * group_size + d);
                            append_group(stream(s, l, h), values.data(), a, T, t, true);
                        }
                    }
        }

        void rebalance(const kv_cache_shape& s, std::int64_t T, const attention_window& window,
                       downgrade_source downgrade, rebalance_counters& counters) {
            std::vector<float> values(static_cast<std::size_t>(group_size)), scratch(static_cast<std::size_t>(group_size));
            std::vector<std::uint8_t> is_outlier(static_cast<std::size_t>(group_size));
            std::vector<std::uint8_t> codes(static_cast<std::size_t>(packed_code_bytes(group_size, max_bits)));
            std::vector<std::uint8_t> parameters(static_cast<std::size_t>(quantizer.parameter_bytes()));
            std::vector<std::uint32_t> code_scratch(static_cast<std::size_t>(group_size));
            for (std::int64_t l = 0; l < s.layers; ++l)
                for (std::int64_t h = 0; h < s.kv_heads; ++h) {
                    cache::group_stream& st = stream(s, l, h);
                    std::int64_t cursor = 0;
                    for (std::int64_t g = 0; g < st.group_count(); ++g) {
                        const std::int64_t t = g / groups_per_head;
                        const std::int64_t outliers = st.outlier_count(g);
                        const float a = quantizer.needs_attention() ? window.predicted(l, t, h) : 0.0f;
                        const int old_width = st.width(g);
                        const int width = quantizer.choose_bits(st.range(g), a, T, t);
                        if (width != old_width) {
                            group_statistics stats;
                            if (width > old_width || downgrade == downgrade_source::host_copy) {
                                std::copy(st.full_precision(g), st.full_precision(g) + group_size, values.begin());
                                stats = quantizer.analyze(values.data(), group_size, is_outlier.data(), scratch.data());
                                counters.host_bytes_read += group_size * static_cast<std::int64_t>(sizeof(float));
                            } else {
                                // From the current codes: decode, restore the exact outliers, re-fit.
                                quantizer.decode(st.codes(pools, g), group_size, old_width,
                                                 quantizer.load_parameters(st.parameters(g), old_width),
                                                 code_scratch.data(), values.data());
                                std::fill(is_outlier.begin(), is_outlier.end(), std::uint8_t{0});
                                for (std::int64_t k = 0; k < outliers; ++k) {
                                    const auto p = st.outlier_position(cursor + k);
                                    values[p] = st.outlier_value(cursor + k);
                                    is_outlier[p] = 1;
                                }
                                stats = quantizer.statistics(values.data(), is_outlier.data(), group_size, outliers);
                            }
                            const codec_parameters params = quantizer.encode(values.data(), is_outlier.data(), group_size,
                                                                             stats, width, code_scratch.data(), codes.data());
                            quantizer.store_parameters(params, parameters.data());
                            st.rewrite(pools, g, width, parameters.data(), codes.data());
                            if (width > old_width) ++counters.groups_up;
                            else ++counters.groups_down;
                        }
                        cursor += outliers;
                    }
                }
        }

        byte_report bytes() const noexcept {
            byte_report r;
            for (const auto& s : streams) r += s.metadata_bytes();
            r.codes = pools.used_bytes();
            r.slack += pools.allocated_bytes() - pools.used_bytes();
            return r;
        }
        std::int64_t host_copy_bytes() const noexcept {
            std::int64_t b = 0;
            for (const auto& s : streams) b += s.host_copy_bytes();
            return b;
        }
        std::int64_t host_metadata_bytes() const noexcept {
            std::int64_t b = 0;
            for (const auto& s : streams) b += s.host_metadata_bytes();
            return b;
        }
    };

    // Decodes the groups of one stream token after token, restoring outliers.
    template <class Quantizer>
    struct token_reader {
        const role_store<Quantizer>& store;
        const cache::group_stream& stream;
        float* row;
        std::uint32_t* scratch;
        std::int64_t cursor = 0;

        token_reader(const role_store<Quantizer>& s, const cache::group_stream& st, float* r, std::uint32_t* sc)
            : store(s), stream(st), row(r), scratch(sc) {}

        void read_token(std::int64_t t) { read_token(t, row); }
        void read_token(std::int64_t t, float* out) {
            const std::int64_t n = store.group_size;
            for (std::int64_t k = 0; k < store.groups_per_head; ++k) {
                const std::int64_t g = t * store.groups_per_head + k;
                const int width = stream.width(g);
                float* group_out = out + k * n;
                store.quantizer.decode(stream.codes(store.pools, g), n, width,
                                       store.quantizer.load_parameters(stream.parameters(g), width), scratch, group_out);
                const std::int64_t count = stream.outlier_count(g);
                for (std::int64_t i = 0; i < count; ++i, ++cursor)
                    group_out[stream.outlier_position(cursor)] = stream.outlier_value(cursor);
            }
        }
    };

    // Per-call scratch for attend, reused across calls on one thread (no allocation on the hot path
    // once sizes have been seen).
    struct attend_scratch {
        std::vector<float> plane_queries;       // [plane width slot][query][head_dim]
        std::vector<float> query_sums;          // [query][group in head]
        std::vector<float> plane_accumulators;  // [plane width slot][query][head_dim]
        std::vector<float> plain_accumulator;   // [query][head_dim]
        std::vector<float> offsets;             // [query][group in head]
        std::vector<float> row;
        std::vector<std::uint32_t> codes;
        // One block of tokens, sorted by plane width slot: [slot][block].
        std::vector<const std::uint8_t*> block_codes;
        std::vector<std::int64_t> block_tokens;
        std::vector<float> block_scales, block_offsets;
        std::vector<float> block_values;  // [slot][block][query]: dots (keys) or weights (values)
    };
    static attend_scratch& scratch_space() {
        thread_local attend_scratch s;
        return s;
    }
    static constexpr std::int64_t attend_block = 64;  // tokens classified per pass
    static constexpr int slots = backend::kernels::plane_slot_count;  // one per width with a kernel
    static constexpr int other_slot = slots;                            // groups without a kernel
    static void size_blocks(attend_scratch& w, std::int64_t query_count) {
        w.block_codes.resize(static_cast<std::size_t>((slots + 1) * attend_block));
        w.block_tokens.resize(static_cast<std::size_t>((slots + 1) * attend_block));
        w.block_scales.resize(static_cast<std::size_t>((slots + 1) * attend_block));
        w.block_offsets.resize(static_cast<std::size_t>((slots + 1) * attend_block));
        w.block_values.resize(static_cast<std::size_t>(slots * attend_block * query_count));
    }

    // One block of groups sorted by plane width slot.
    struct block_lists {
        std::int64_t count[slots + 1];
        bool whole[slots];  // the slot's list is the whole block, in token order (t0, t0 + 1, ...)
    };

    // Sorts the groups t * S + sub, t in [t0, t1), by plane width slot (lists of attend_block
    // entries: codes, token, scale, offset = centre - bias * scale); groups without a plane kernel
    // (other widths, codecs without an affine form) go to other_slot with their token only.
    // slot_of[width]: the plane slot of a width, or other_slot.
    template <class Store>
    static void classify_block(const Store& store, const cache::group_stream& stream, const int* slot_of,
                               std::int64_t sub, std::int64_t t0, std::int64_t t1, attend_scratch& w,
                               block_lists& b) {
        const std::int64_t S = store.groups_per_head, m = t1 - t0;
        for (int s = 0; s <= slots; ++s) b.count[s] = 0;
        for (int s = 0; s < slots; ++s) b.whole[s] = false;
        const std::int64_t first_group = t0 * S + sub;
        const int first = stream.width(first_group);
        const std::uint8_t* parameters = stream.parameters(first_group);
        // The common case: one plane width for the whole block (no per-group width dispatch).
        if (slot_of[first] != other_slot && stream.all_at_width(first_group, S, m, first)) {
            const int slot = slot_of[first];
            const std::size_t base = static_cast<std::size_t>(slot * attend_block);
            if (store.quantizer.affine_forms_at_width(parameters, S, first, m, &w.block_scales[base],
                                                      &w.block_offsets[base])) {
                stream.codes_at_width(store.pools, first, first_group, S, m, &w.block_codes[base]);
                b.count[slot] = m;
                b.whole[slot] = true;  // tokens t0, t0 + 1, ...: block_tokens is not read
                return;
            }
        }
        int widths[attend_block];
        for (std::int64_t i = 0; i < m; ++i) widths[i] = stream.width((t0 + i) * S + sub);
        float scales[attend_block], offsets[attend_block];
        const bool affine = store.quantizer.affine_forms(parameters, S, widths, m, scales, offsets);
        for (std::int64_t i = 0; i < m; ++i) {
            const int slot = affine ? slot_of[widths[i]] : other_slot;
            const std::size_t at = static_cast<std::size_t>(slot * attend_block + b.count[slot]++);
            w.block_tokens[at] = t0 + i;
            if (slot == other_slot) continue;
            w.block_codes[at] = stream.codes(store.pools, (t0 + i) * S + sub);
            w.block_scales[at] = scales[i];
            w.block_offsets[at] = offsets[i];
        }
    }

    // slot_of[width] for plane_group and classify_block.
    static void plane_slots(std::int64_t group_size, int* slot_of) noexcept {
        namespace k = backend::kernels;
        for (int b = 0; b <= max_bits; ++b) slot_of[b] = k::has_plane_kernel(b, group_size) ? k::plane_slot(b) : other_slot;
    }

    // scores[j][t] = q_j . k_t (unscaled) over the packed keys of one (layer, KV head).
    // Tokens go in blocks: each block is sorted by width, every width's groups then go through one
    // plane kernel call for all query heads (q . codes), and the affine form gives
    // q . k = scale (q . codes) + offset sum(q). Other widths and codecs decode the group to floats.
    // Exact outliers are a correction pass at the end.
    template <class Store>
    void attend_scores(const Store& store, const cache::group_stream& stream, const float* queries,
                       std::int64_t query_count, std::int64_t T, float* scores) const {
        namespace k = backend::kernels;
        const std::int64_t D = shape_.head_dim, n = store.group_size, S = store.groups_per_head;
        const std::int64_t Q = query_count;
        attend_scratch& w = scratch_space();
        w.plane_queries.resize(static_cast<std::size_t>(slots * Q * D));
        w.query_sums.resize(static_cast<std::size_t>(Q * S));
        w.row.resize(static_cast<std::size_t>(n));
        w.codes.resize(static_cast<std::size_t>(n));
        size_blocks(w, Q);
        int slot_of[max_bits + 1];
        plane_slots(n, slot_of);
        bool planes_ready[slots] = {};
        for (std::int64_t j = 0; j < Q; ++j)
            for (std::int64_t g = 0; g < S; ++g)
                w.query_sums[static_cast<std::size_t>(j * S + g)] =
                    Eigen::Map<const Eigen::ArrayXf>(queries + j * D + g * n, n).sum();
        std::fill(scores, scores + Q * T, 0.0f);
        for (std::int64_t sub = 0; sub < S; ++sub)
            for (std::int64_t t0 = 0; t0 < T; t0 += attend_block) {
                const std::int64_t t1 = std::min(T, t0 + attend_block);
                block_lists b;
                classify_block(store, stream, slot_of, sub, t0, t1, w, b);
                for (std::int64_t i = 0; i < b.count[other_slot]; ++i) {
                    const std::int64_t t = w.block_tokens[static_cast<std::size_t>(other_slot * attend_block + i)];
                    const std::int64_t group = t * S + sub;
                    const int width = stream.width(group);
                    store.quantizer.decode(stream.codes(store.pools, group), n, width,
                                           store.quantizer.load_parameters(stream.parameters(group), width),
                                           w.codes.data(), w.row.data());
                    const Eigen::Map<const Eigen::VectorXf> row(w.row.data(), n);
                    for (std::int64_t j = 0; j < Q; ++j)
                        scores[j * T + t] += Eigen::Map<const Eigen::VectorXf>(queries + j * D + sub * n, n).dot(row);
                }
                for (int slot = 0; slot < slots; ++slot) {
                    const std::int64_t c = b.count[slot];
                    if (c == 0) continue;
                    float* q_plane = &w.plane_queries[static_cast<std::size_t>(slot * Q * D)];
                    if (!planes_ready[slot]) {
                        for (std::int64_t j = 0; j < Q; ++j)
                            for (std::int64_t g = 0; g < S; ++g)
                                k::to_plane_order(queries + j * D + g * n, n, k::plane_widths[slot], q_plane + j * D + g * n);
                        planes_ready[slot] = true;
                    }
                    const std::size_t base = static_cast<std::size_t>(slot * attend_block);
                    float* dots = &w.block_values[base * static_cast<std::size_t>(Q)];
                    k::dot_groups(k::plane_widths[slot], &w.block_codes[base], c, q_plane + sub * n, Q, D, n, dots);
                    const float* scales = &w.block_scales[base];
                    const float* offsets = &w.block_offsets[base];
                    for (std::int64_t j = 0; j < Q; ++j) {
                        const float sum = w.query_sums[static_cast<std::size_t>(j * S + sub)];
                        if (b.whole[slot]) {
                            float* out = scores + j * T + t0;
                            for (std::int64_t i = 0; i < c; ++i) out[i] += scales[i] * dots[i * Q + j] + offsets[i] * sum;
                        } else {
                            for (std::int64_t i = 0; i < c; ++i)
                                scores[j * T + w.block_tokens[base + static_cast<std::size_t>(i)]] +=
                                    scales[i] * dots[i * Q + j] + offsets[i] * sum;
                        }
                    }
                }
            }
        if (stream.outlier_total() == 0) return;
        // Exact outliers: replace what the codes reconstruct at their positions.
        std::int64_t cursor = 0;
        for (std::int64_t group = 0; group < T * S; ++group) {
            const std::int64_t outliers = stream.outlier_count(group);
            if (outliers == 0) continue;
            const std::int64_t t = group / S, sub = group % S;
            const int width = stream.width(group);
            const codec_parameters params = store.quantizer.load_parameters(stream.parameters(group), width);
            const std::uint8_t* codes = stream.codes(store.pools, group);
            for (std::int64_t o = 0; o < outliers; ++o, ++cursor) {
                const std::uint32_t pos = stream.outlier_position(cursor);
                const float delta = stream.outlier_value(cursor) - store.quantizer.decode_element(codes, pos, width, params);
                for (std::int64_t j = 0; j < Q; ++j) scores[j * T + t] += queries[j * D + sub * n + pos] * delta;
            }
        }
    }

    // out[j] = sum_t p[j][t] v_t over the packed values of one (layer, KV head): per width, the
    // plane kernel accumulates sum_t (p_t scale_t) codes_t in plane order for all query heads,
    // sum_t p_t offset_t is added to every element at the end; other groups are decoded.
    template <class Store>
    void attend_values(const Store& store, const cache::group_stream& stream, const float* probabilities,
                       std::int64_t query_count, std::int64_t T, float* output) const {
        namespace k = backend::kernels;
        const std::int64_t D = shape_.head_dim, n = store.group_size, S = store.groups_per_head;
        const std::int64_t Q = query_count;
        attend_scratch& w = scratch_space();
        w.plane_accumulators.resize(static_cast<std::size_t>(slots * Q * D));
        w.plain_accumulator.assign(static_cast<std::size_t>(Q * D), 0.0f);
        w.offsets.assign(static_cast<std::size_t>(Q * S), 0.0f);
        w.row.resize(static_cast<std::size_t>(n));
        w.codes.resize(static_cast<std::size_t>(n));
        size_blocks(w, Q);
        int slot_of[max_bits + 1];
        plane_slots(n, slot_of);
        bool slot_used[slots] = {};
        for (std::int64_t sub = 0; sub < S; ++sub)
            for (std::int64_t t0 = 0; t0 < T; t0 += attend_block) {
                const std::int64_t t1 = std::min(T, t0 + attend_block);
                block_lists b;
                classify_block(store, stream, slot_of, sub, t0, t1, w, b);
                for (std::int64_t i = 0; i < b.count[other_slot]; ++i) {
                    const std::int64_t t = w.block_tokens[static_cast<std::size_t>(other_slot * attend_block + i)];
                    const std::int64_t group = t * S + sub;
                    const int width = stream.width(group);
                    store.quantizer.decode(stream.codes(store.pools, group), n, width,
                                           store.quantizer.load_parameters(stream.parameters(group), width),
                                           w.codes.data(), w.row.data());
                    const Eigen::Map<const Eigen::VectorXf> row(w.row.data(), n);
                    for (std::int64_t j = 0; j < Q; ++j)
                        Eigen::Map<Eigen::VectorXf>(&w.plain_accumulator[static_cast<std::size_t>(j * D + sub * n)], n) +=
                            probabilities[j * T + t] * row;
                }
                for (int slot = 0; slot < slots; ++slot) {
                    const std::int64_t c = b.count[slot];
                    if (c == 0) continue;
                    const std::size_t base = static_cast<std::size_t>(slot * attend_block);
                    const float* scales = &w.block_scales[base];
                    const float* offsets = &w.block_offsets[base];
                    float* weights = &w.block_values[base * static_cast<std::size_t>(Q)];
                    for (std::int64_t j = 0; j < Q; ++j) {
                        float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // sum_i p_i offset_i, vectorizable
                        if (b.whole[slot]) {
                            const float* p = probabilities + j * T + t0;
                            for (std::int64_t i = 0; i < c; ++i) weights[i * Q + j] = p[i] * scales[i];
                            std::int64_t i = 0;
                            for (; i + 8 <= c; i += 8)
                                for (int u = 0; u < 8; ++u) part[u] += p[i + u] * offsets[i + u];
                            for (; i < c; ++i) part[0] += p[i] * offsets[i];
                        } else {
                            for (std::int64_t i = 0; i < c; ++i) {
                                const float p = probabilities[j * T + w.block_tokens[base + static_cast<std::size_t>(i)]];
                                weights[i * Q + j] = p * scales[i];
                                part[0] += p * offsets[i];
                            }
                        }
                        w.offsets[static_cast<std::size_t>(j * S + sub)] +=
                            ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
                    }
                    float* acc = &w.plane_accumulators[static_cast<std::size_t>(slot * Q * D)];
                    if (!slot_used[slot]) {
                        std::fill(acc, acc + Q * D, 0.0f);
                        slot_used[slot] = true;
                    }
                    k::axpy_groups(k::plane_widths[slot], &w.block_codes[base], c, weights, Q, acc + sub * n, D, n);
                }
            }
        if (stream.outlier_total() > 0) {
            std::int64_t cursor = 0;
            for (std::int64_t group = 0; group < T * S; ++group) {
                const std::int64_t outliers = stream.outlier_count(group);
                if (outliers == 0) continue;
                const std::int64_t t = group / S, sub = group % S;
                const int width = stream.width(group);
                const codec_parameters params = store.quantizer.load_parameters(stream.parameters(group), width);
                const std::uint8_t* codes = stream.codes(store.pools, group);
                for (std::int64_t o = 0; o < outliers; ++o, ++cursor) {
                    const std::uint32_t pos = stream.outlier_position(cursor);
                    const float delta =
                        stream.outlier_value(cursor) - store.quantizer.decode_element(codes, pos, width, params);
                    for (std::int64_t j = 0; j < Q; ++j)
                        w.plain_accumulator[static_cast<std::size_t>(j * D + sub * n + pos)] += probabilities[j * T + t] * delta;
                }
            }
        }
        for (std::int64_t j = 0; j < Q; ++j) {
            float* out = output + j * D;
            std::copy(&w.plain_accumulator[static_cast<std::size_t>(j * D)],
                      &w.plain_accumulator[static_cast<std::size_t>(j * D)] + D, out);
            for (std::int64_t g = 0; g < S; ++g) {
                Eigen::Map<Eigen::ArrayXf>(out + g * n, n) += w.offsets[static_cast<std::size_t>(j * S + g)];
                for (int slot = 0; slot < slots; ++slot) {
                    if (!slot_used[slot]) continue;
                    const float* acc = &w.plane_accumulators[static_cast<std::size_t>((slot * Q + j) * D + g * n)];
                    k::add_from_plane_order(acc, n, k::plane_widths[slot], out + g * n);
                }
            }
        }
    }

    static void softmax(float* x, std::int64_t n) noexcept {
        Eigen::Map<Eigen::ArrayXf> a(x, n);
        a = (a - a.maxCoeff()).exp();
        a /= a.sum();
    }

    void check_layer(std::int64_t layer) const { steps_.check_layer(layer); }

    cache::step_tracker steps_;  // token counts and argument checks (shared with the CUDA cache)
    kv_cache_shape shape_;
    kv_cache_options options_;
    role_store<KeyQuantizer> keys_;
    role_store<ValueQuantizer> values_;
    attention_window window_;
    rebalance_counters counters_;
};

QAQ_NAMESPACE_END
