#pragma once
// The CUDA backend's entry points, CUB style: every function is two-phase.
//
//   std::size_t bytes = 0;
//   quantize_groups(nullptr, bytes, ...);          // 1. ask the workspace size (no work, no checks of pointers)
//   cudaMalloc(&workspace, bytes);                  //    the caller's memory
//   quantize_groups(workspace, bytes, ..., stream); // 2. run asynchronously on `stream`
//
// They never throw, print or synchronize: they return qaq::status
// (invalid_argument for bad shapes or pointers, not_supported for a group
// larger than 2048, more than 8 query heads per KV head or head_dim > 256,
// device_error / out_of_memory from the CUDA runtime). Data-dependent
// conditions that the CPU path raises (a parameter or outlier beyond fp16, a
// float32 range overflow) are counted in the optional quantize_diagnostics.
// The workspace size depends only on the sizes passed (attend: and on the
// current device's SM count), never on data.
//
// device_quantizer at the end is the thin host wrapper: it allocates, copies,
// runs, synchronizes and throws qaq::error.
//
// Supported: codecs uniform_mean_centred and uniform_zero_point (symmetric or
// not, fp16 or fp32 storage), outliers none and quantile, bits fixed,
// value_attention (predicted attention per group passed in) and
// key_query_norm, widths 0..16, groups of 1..2048 elements.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cub/device/device_scan.cuh>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qaq/backend/cuda/attend.cuh"
#include "qaq/backend/cuda/cuda_check.cuh"
#include "qaq/backend/cuda/device_layout.cuh"
#include "qaq/backend/cuda/group_kernels.cuh"
#include "qaq/backend/cuda/scalar_core.cuh"
#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/policy/bits/fixed.hpp"
#include "qaq/policy/bits/key_query_norm.hpp"
#include "qaq/policy/bits/value_attention.hpp"
#include "qaq/policy/outliers/none.hpp"
#include "qaq/policy/outliers/quantile.hpp"
#include "qaq/policy/storage/uniform_mean_centred.hpp"
#include "qaq/policy/storage/uniform_zero_point.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

/// The largest group quantize_groups handles.
inline constexpr std::int64_t max_group_size = detail::max_group_size;

/// Upper bound of the code bytes of `groups` groups of `n` elements at most `bits_max` bits.
inline std::int64_t max_code_bytes(std::int64_t groups, std::int64_t n, int bits_max) noexcept {
    return groups * packed_code_bytes(n, bits_max);
}

/// A quantizer_config in the form the kernels take (see make_device_policies).
struct device_policies {
    device_bits bits;
    double outlier_ratio = 0.0;
    device_codec codec;
    bool needs_attention = false;  ///< predicted attention per group is read (value_attention)
    int bits_max = 0;              ///< the widest group: sizes the code buffer
};

/// The device form of `config` for caches of `tokens` tokens; throws qaq::error
/// for a config the CUDA backend does not run (normal codec, disabled quantizer).
inline device_policies make_device_policies(const quantizer_config& config, std::int64_t tokens) {
    config.validate();
    QAQ_CHECK(config.enabled, "a disabled (no-quantization) config has no quantizer; pass the cache through instead");
    QAQ_CHECK(tokens >= 1, "token count is ", tokens, ", expected >= 1");
    device_policies p;
    switch (config.codec) {
        case codec_kind::uniform_mean_centred:
            p.codec = device_codec::of(storage::uniform_mean_centred{config.symmetric, config.precision});
            break;
        case codec_kind::uniform_zero_point:
            p.codec = device_codec::of(storage::uniform_zero_point{config.symmetric, config.precision});
            break;
        default:
            throw error(std::string("codec '") + to_string(config.codec) +
                        "' is not supported by the CUDA backend; use uniform_mean_centred or uniform_zero_point");
    }
    switch (config.bits) {
        case bits_kind::fixed: p.bits = to_device_bits(bits::fixed(config.fixed_bits), tokens); break;
        case bits_kind::value_attention:
            p.bits = to_device_bits(
                bits::value_attention(config.window, config.target_error, config.bits_min, config.bits_max), tokens);
            p.needs_attention = true;
            break;
        case bits_kind::key_query_norm:
            p.bits = to_device_bits(bits::key_query_norm(config.q_norm, config.target_error, config.bits_min,
                                                         config.bits_max, config.window),
                                    tokens);
            break;
    }
    p.bits_max = p.bits.bits_max;
    p.outlier_ratio = config.outlier_ratio;
    return p;
}

namespace detail {

inline std::size_t align_workspace(std::size_t bytes) noexcept { return (bytes + 255) & ~std::size_t{255}; }

template <class Codec>
device_codec to_device_codec(const Codec& codec) {
    static_assert(std::is_same<Codec, storage::uniform_mean_centred>::value ||
                      std::is_same<Codec, storage::uniform_zero_point>::value,
                  "qaq: the CUDA backend runs the uniform codecs (qaq::storage::uniform_mean_centred, "
                  "uniform_zero_point); other codecs have no affine form");
    return device_codec::of(codec);
}

template <class Outliers>
double device_outlier_ratio(const Outliers& outliers) {
    static_assert(std::is_same<Outliers, outliers::none>::value || std::is_same<Outliers, outliers::quantile>::value,
                  "qaq: the CUDA backend runs the outlier policies qaq::outliers::none and qaq::outliers::quantile");
    return outliers.ratio();
}

inline unsigned int grid_for(std::int64_t blocks) noexcept {
    constexpr std::int64_t limit = std::int64_t{1} << 20;  // the kernels loop over the rest
    return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > limit ? limit : blocks));
}

template <int BlockThreads, class DeviceBits>
status launch_quantize(const DeviceBits& bits, double ratio, const device_codec& codec, const float* values,
                       std::int64_t groups, std::int64_t n, const group_tokens& tokens, const float* predicted,
                       const analyze_outputs& analysis, const packed_groups_out& out, void* scan_workspace,
                       std::size_t scan_bytes, cudaStream_t stream) {
    const unsigned int grid = grid_for(groups);
    if (ratio > 0.0)
        analyze_groups_kernel<BlockThreads, true><<<grid, BlockThreads, 0, stream>>>(
            values, groups, n, bits, ratio, codec, tokens, predicted, analysis);
    else
        analyze_groups_kernel<BlockThreads, false><<<grid, BlockThreads, 0, stream>>>(
            values, groups, n, bits, ratio, codec, tokens, predicted, analysis);
    QAQ_CUDA_TRY(cudaGetLastError());
    // The same iterator types as the size query, so the same temporary storage suffices.
    QAQ_CUDA_TRY(cub::DeviceScan::ExclusiveSum(scan_workspace, scan_bytes,
                                               static_cast<const std::uint64_t*>(analysis.code_bytes),
                                               out.code_offsets, groups + 1, stream));
    QAQ_CUDA_TRY(cub::DeviceScan::ExclusiveSum(scan_workspace, scan_bytes,
                                               static_cast<const std::uint64_t*>(analysis.outlier_counts),
                                               out.outlier_offsets, groups + 1, stream));
    encode_groups_kernel<BlockThreads><<<grid, BlockThreads, 0, stream>>>(values, groups, n, codec,
                                                                          analysis.thresholds, out);
    QAQ_CUDA_TRY(cudaGetLastError());
    return status::success;
}

template <class DeviceBits>
status quantize_groups_impl(void* workspace, std::size_t& workspace_bytes, const DeviceBits& bits,
                            bool needs_attention, double ratio, const device_codec& codec, const float* values,
                            std::int64_t groups, std::int64_t n, const group_tokens& tokens, const float* predicted,
                            const packed_groups_out& out, cudaStream_t stream) {
    if (groups < 0 || n < 1 || tokens.tokens < 1 || tokens.token_stride < 1 || !(ratio >= 0.0 && ratio < 1.0))
        return status::invalid_argument;
    if (n > max_group_size) return status::not_supported;

    std::size_t scan_bytes = 0;
    QAQ_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, static_cast<const std::uint64_t*>(nullptr),
                                               static_cast<std::uint64_t*>(nullptr), groups + 1, stream));
    const std::size_t counts_bytes = align_workspace(sizeof(std::uint64_t) * static_cast<std::size_t>(groups + 1));
    const std::size_t thresholds_bytes = align_workspace(sizeof(float2) * static_cast<std::size_t>(groups + 1));
    const std::size_t needed = 2 * counts_bytes + thresholds_bytes + align_workspace(scan_bytes);
    if (workspace == nullptr) {
        workspace_bytes = needed;
        return status::success;
    }
    if (workspace_bytes < needed) return status::invalid_argument;
    if (out.widths == nullptr || out.parameters == nullptr || out.code_offsets == nullptr || out.codes == nullptr ||
        out.outlier_offsets == nullptr || out.outlier_capacity < 0 ||
        (out.outlier_capacity > 0 && (out.outlier_positions == nullptr || out.outlier_values == nullptr)))
        return status::invalid_argument;
    if (groups > 0 && (values == nullptr || (needs_attention && predicted == nullptr))) return status::invalid_argument;

    auto* base = static_cast<unsigned char*>(workspace);
    analyze_outputs analysis;
    analysis.widths = out.widths;
    analysis.parameters = out.parameters;
    analysis.code_bytes = reinterpret_cast<std::uint64_t*>(base);
    analysis.outlier_counts = reinterpret_cast<std::uint64_t*>(base + counts_bytes);
    analysis.thresholds = reinterpret_cast<float2*>(base + 2 * counts_bytes);
    analysis.diagnostics = out.diagnostics;
    analysis.ranges = out.ranges;
    void* scan_workspace = base + 2 * counts_bytes + thresholds_bytes;

    if (groups == 0) {
        QAQ_CUDA_TRY(cudaMemsetAsync(out.code_offsets, 0, sizeof(std::uint64_t), stream));
        QAQ_CUDA_TRY(cudaMemsetAsync(out.outlier_offsets, 0, sizeof(std::uint64_t), stream));
        return status::success;
    }
    if (n <= 32 * group_items_per_thread)
        return launch_quantize<32>(bits, ratio, codec, values, groups, n, tokens, predicted, analysis, out,
                                   scan_workspace, scan_bytes, stream);
    return launch_quantize<256>(bits, ratio, codec, values, groups, n, tokens, predicted, analysis, out,
                                scan_workspace, scan_bytes, stream);
}

}  // namespace detail

// ---------------------------------------------------------------------------
// quantize_groups
// ---------------------------------------------------------------------------

/// Quantizes `groups` groups of `n` floats (row g of `values` [groups, n], device
/// memory) into `out` (layout: device_layout.cuh). `predicted_attention` holds
/// one value per group (device memory) when the bits policy reads attention,
/// else it may be null. Bits: a library policy (converted with to_device_bits)
/// or any policy whose operator() is QAQ_HOST_DEVICE.
template <class Bits, class Outliers, class Codec>
status quantize_groups(void* workspace, std::size_t& workspace_bytes, const Bits& bits, const Outliers& outliers,
                       const Codec& codec, const float* values, std::int64_t groups, std::int64_t n,
                       group_tokens tokens, const float* predicted_attention, const packed_groups_out& out,
                       cudaStream_t stream = nullptr) {
    const device_codec codec_form = detail::to_device_codec(codec);
    const double ratio = detail::device_outlier_ratio(outliers);
    if (tokens.tokens < 1) return status::invalid_argument;
    const auto bits_form = to_device_bits(bits, tokens.tokens);
    return detail::quantize_groups_impl(workspace, workspace_bytes, bits_form, bool(Bits::needs_attention), ratio,
                                        codec_form, values, groups, n, tokens, predicted_attention, out, stream);
}

/// The same from the runtime form of a quantizer_config (make_device_policies).
inline status quantize_groups(void* workspace, std::size_t& workspace_bytes, const device_policies& policies,
                              const float* values, std::int64_t groups, std::int64_t n, group_tokens tokens,
                              const float* predicted_attention, const packed_groups_out& out,
                              cudaStream_t stream = nullptr) {
    return detail::quantize_groups_impl(workspace, workspace_bytes, policies.bits, policies.needs_attention,
                                        policies.outlier_ratio, policies.codec, values, groups, n, tokens,
                                        predicted_attention, out, stream);
}

// ---------------------------------------------------------------------------
// dequantize_groups
// ---------------------------------------------------------------------------

/// Reconstructs `groups` packed groups into `out` [groups, group_size] (device
/// memory), outliers restored. Needs no workspace (the size query answers 1).
inline status dequantize_groups(void* workspace, std::size_t& workspace_bytes, const device_codec& codec,
                                const packed_groups_view& in, std::int64_t groups, float* out,
                                cudaStream_t stream = nullptr) {
    if (workspace == nullptr) {
        workspace_bytes = 1;
        return status::success;
    }
    if (groups < 0 || in.group_size < 1) return status::invalid_argument;
    if (groups == 0) return status::success;
    if (out == nullptr || in.widths == nullptr || in.parameters == nullptr || in.code_offsets == nullptr ||
        in.codes == nullptr || (in.outlier_offsets != nullptr && (in.outlier_positions == nullptr || in.outlier_values == nullptr)))
        return status::invalid_argument;
    const std::int64_t runs = groups * ((in.group_size + detail::group_items_per_thread - 1) /
                                        detail::group_items_per_thread);
    constexpr int threads = 256;
    detail::decode_groups_kernel<<<detail::grid_for((runs + threads - 1) / threads), threads, 0, stream>>>(
        codec, in, groups, out);
    QAQ_CUDA_TRY(cudaGetLastError());
    return status::success;
}

template <class Codec>
status dequantize_groups(void* workspace, std::size_t& workspace_bytes, const Codec& codec,
                         const packed_groups_view& in, std::int64_t groups, float* out, cudaStream_t stream = nullptr) {
    return dequantize_groups(workspace, workspace_bytes, detail::to_device_codec(codec), in, groups, out, stream);
}

// ---------------------------------------------------------------------------
// attend
// ---------------------------------------------------------------------------

namespace detail {

inline status check_attend_shape(const attend_shape& shape) noexcept {
    if (shape.tokens < 1 || shape.kv_heads < 1 || shape.head_dim < 1 || shape.query_heads < shape.kv_heads ||
        shape.query_heads % shape.kv_heads != 0)
        return status::invalid_argument;
    if (shape.query_heads / shape.kv_heads > attend_max_queries_per_kv || shape.head_dim > attend_max_head_dim)
        return status::not_supported;
    return status::success;
}

inline status current_sm_count(int& sm_count) noexcept {
    int device = 0;
    QAQ_CUDA_TRY(cudaGetDevice(&device));
    QAQ_CUDA_TRY(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
    return status::success;
}

inline bool valid_layer(const packed_layer_view& layer, std::int64_t head_dim) noexcept {
    const packed_groups_view& g = layer.groups;
    return g.group_size >= 1 && head_dim % g.group_size == 0 && g.widths != nullptr && g.parameters != nullptr &&
           g.code_offsets != nullptr && g.codes != nullptr && layer.head_stride >= 0 && layer.token_stride >= 0 &&
           (g.outlier_offsets == nullptr || (g.outlier_positions != nullptr && g.outlier_values != nullptr));
}

/// Size query, checks and the per-head_dim dispatch shared by attend and attend_dense.
template <class MakeReaders>
status run_attend(void* workspace, std::size_t& workspace_bytes, const attend_shape& shape, const float* queries,
                  float* output, bool inputs_valid, MakeReaders&& make_readers) {
    const status shape_status = check_attend_shape(shape);
    if (shape_status != status::success) return shape_status;
    int sm_count = 0;
    const status device_status = current_sm_count(sm_count);
    if (device_status != status::success) return device_status;
    const attend_plan plan = plan_attend(shape, sm_count);
    if (workspace == nullptr) {
        workspace_bytes = plan.workspace_bytes;
        return status::success;
    }
    if (workspace_bytes < plan.workspace_bytes) return status::invalid_argument;
    if (!inputs_valid || queries == nullptr || output == nullptr) return status::invalid_argument;
    switch (plan.elems) {
        case 2: return make_readers(std::integral_constant<int, 2>{}, plan, workspace);
        case 4: return make_readers(std::integral_constant<int, 4>{}, plan, workspace);
        default: return make_readers(std::integral_constant<int, 8>{}, plan, workspace);
    }
}

}  // namespace detail

/// Attention of one query token over one layer of packed keys and values:
/// queries [query_heads, head_dim] -> output [query_heads, head_dim] and, when
/// `probabilities` is not null, probabilities [query_heads, tokens] (all device
/// memory). Keys and values may use different codecs and group sizes.
inline status attend(void* workspace, std::size_t& workspace_bytes, const device_codec& key_codec,
                     const packed_layer_view& keys, const device_codec& value_codec, const packed_layer_view& values,
                     const attend_shape& shape, const float* queries, float* output, float* probabilities,
                     cudaStream_t stream = nullptr) {
    const bool valid = detail::valid_layer(keys, shape.head_dim) && detail::valid_layer(values, shape.head_dim);
    return detail::run_attend(
        workspace, workspace_bytes, shape, queries, output, valid,
        [&](auto elems, const detail::attend_plan& plan, void* scratch) {
            constexpr int E = decltype(elems)::value;
            const detail::packed_token_reader<E> key_reader{key_codec, keys, shape.head_dim};
            const detail::packed_token_reader<E> value_reader{value_codec, values, shape.head_dim};
            return detail::launch_attend<E>(plan, key_reader, value_reader, shape, queries, output, probabilities,
                                            scratch, stream);
        });
}

template <class KeyCodec, class ValueCodec>
status attend(void* workspace, std::size_t& workspace_bytes, const KeyCodec& key_codec, const packed_layer_view& keys,
              const ValueCodec& value_codec, const packed_layer_view& values, const attend_shape& shape,
              const float* queries, float* output, float* probabilities, cudaStream_t stream = nullptr) {
    return attend(workspace, workspace_bytes, detail::to_device_codec(key_codec), keys,
                  detail::to_device_codec(value_codec), values, shape, queries, output, probabilities, stream);
}

/// The same attention over a dense cache: keys and values [kv_heads, tokens,
/// head_dim] of T = __half or float (the baseline packed attention is measured against).
template <class T>
status attend_dense(void* workspace, std::size_t& workspace_bytes, const T* keys, const T* values,
                    const attend_shape& shape, const float* queries, float* output, float* probabilities,
                    cudaStream_t stream = nullptr) {
    static_assert(std::is_same<T, __half>::value || std::is_same<T, float>::value,
                  "qaq: attend_dense reads __half or float caches");
    return detail::run_attend(
        workspace, workspace_bytes, shape, queries, output, keys != nullptr && values != nullptr,
        [&](auto elems, const detail::attend_plan& plan, void* scratch) {
            constexpr int E = decltype(elems)::value;
            const detail::dense_token_reader<T, E> key_reader{keys, shape.tokens, shape.head_dim};
            const detail::dense_token_reader<T, E> value_reader{values, shape.tokens, shape.head_dim};
            return detail::launch_attend<E>(plan, key_reader, value_reader, shape, queries, output, probabilities,
                                            scratch, stream);
        });
}

// ---------------------------------------------------------------------------
// Host wrapper
// ---------------------------------------------------------------------------

/// Throws qaq::error for what the CPU path raises and quantize_groups counted
/// instead (outliers_dropped is not checked: a capacity the caller sized).
inline void check_quantize_diagnostics(const quantize_diagnostics& found) {
    QAQ_CHECK(found.range_overflow == 0, found.range_overflow,
              " group(s) have a range that overflows float32; values must be below 1.7e38 in magnitude");
    QAQ_CHECK(found.invalid_width == 0, "the bits policy returned a width outside 0..", max_bits, " for ",
              found.invalid_width, " group(s)");
    QAQ_CHECK(found.parameter_overflow == 0, found.parameter_overflow,
              " group(s) have a parameter that does not fit the fp16 parameter storage (|x| <= 65504); "
              "use storage_precision::fp32");
    QAQ_CHECK(found.outlier_value_overflow == 0, found.outlier_value_overflow,
              " outlier value(s) do not fit fp16 storage; use storage_precision::fp32");
}

/// Device memory owned by the host (cudaMalloc / cudaFree); move-only.
class device_buffer {
public:
    device_buffer() = default;
    explicit device_buffer(std::size_t bytes) : bytes_(bytes) {
        if (bytes > 0) QAQ_CUDA_CHECK(cudaMalloc(&data_, bytes));
    }
    device_buffer(const device_buffer&) = delete;
    device_buffer& operator=(const device_buffer&) = delete;
    device_buffer(device_buffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
    device_buffer& operator=(device_buffer&& other) noexcept {
        if (this != &other) {
            release();
            data_ = std::exchange(other.data_, nullptr);
            bytes_ = std::exchange(other.bytes_, 0);
        }
        return *this;
    }
    ~device_buffer() { release(); }

    void* data() const noexcept { return data_; }
    template <class T>
    T* as() const noexcept {
        return static_cast<T*>(data_);
    }
    std::size_t bytes() const noexcept { return bytes_; }

    /// A buffer holding a copy of `count` host values.
    template <class T>
    static device_buffer from_host(const T* host, std::size_t count) {
        device_buffer b(sizeof(T) * count);
        if (count > 0) QAQ_CUDA_CHECK(cudaMemcpy(b.data_, host, sizeof(T) * count, cudaMemcpyHostToDevice));
        return b;
    }
    /// The first `count` values, copied to the host.
    template <class T>
    std::vector<T> to_host(std::size_t count) const {
        QAQ_CHECK(sizeof(T) * count <= bytes_, "reading ", sizeof(T) * count, " bytes from a device buffer of ",
                  bytes_);
        std::vector<T> host(count);
        if (count > 0) QAQ_CUDA_CHECK(cudaMemcpy(host.data(), data_, sizeof(T) * count, cudaMemcpyDeviceToHost));
        return host;
    }

private:
    void release() noexcept {
        if (data_ != nullptr) (void)cudaFree(data_);
        data_ = nullptr;
        bytes_ = 0;
    }
    void* data_ = nullptr;
    std::size_t bytes_ = 0;
};

/// Host copies of a set of packed groups (for inspection and tests).
struct host_packed_groups {
    std::vector<std::uint8_t> widths;
    std::vector<std::uint8_t> parameters;  ///< P values per group, raw bytes in the codec's precision
    std::vector<std::uint64_t> code_offsets;
    std::vector<std::uint8_t> codes;
    std::vector<std::uint64_t> outlier_offsets;
    std::vector<std::uint16_t> outlier_positions;
    std::vector<std::uint8_t> outlier_values;  ///< raw bytes in the codec's precision
};

/// A set of packed groups in device memory, as quantize_groups writes it.
struct device_packed_groups {
    std::int64_t groups = 0;
    std::int64_t group_size = 0;
    device_codec codec;
    std::int64_t outlier_count = 0;
    std::int64_t code_bytes = 0;
    device_buffer widths, parameters, code_offsets, codes, outlier_offsets, outlier_positions, outlier_values;

    packed_groups_view view() const noexcept {
        packed_groups_view v;
        v.widths = widths.as<const std::uint8_t>();
        v.parameters = parameters.data();
        v.code_offsets = code_offsets.as<const std::uint64_t>();
        v.codes = codes.as<const std::uint8_t>();
        if (outlier_count > 0) {
            v.outlier_offsets = outlier_offsets.as<const std::uint64_t>();
            v.outlier_positions = outlier_positions.as<const std::uint16_t>();
            v.outlier_values = outlier_values.data();
        }
        v.group_size = group_size;
        return v;
    }
    /// The layer view of groups quantized from a contiguous [kv_heads, tokens, head_dim] buffer.
    packed_layer_view layer(const attend_shape& shape) const noexcept {
        packed_layer_view l;
        l.groups = view();
        l.token_stride = shape.head_dim / group_size;
        l.head_stride = shape.tokens * l.token_stride;
        return l;
    }
    host_packed_groups to_host() const {
        host_packed_groups h;
        const auto value_bytes = static_cast<std::size_t>(codec.precision == storage_precision::fp16 ? 2 : 4);
        const auto n = static_cast<std::size_t>(groups);
        h.widths = widths.to_host<std::uint8_t>(n);
        h.parameters = parameters.to_host<std::uint8_t>(n * static_cast<std::size_t>(codec.parameter_count()) * value_bytes);
        h.code_offsets = code_offsets.to_host<std::uint64_t>(n + 1);
        h.codes = codes.to_host<std::uint8_t>(static_cast<std::size_t>(code_bytes));
        h.outlier_offsets = outlier_offsets.to_host<std::uint64_t>(n + 1);
        h.outlier_positions = outlier_positions.to_host<std::uint16_t>(static_cast<std::size_t>(outlier_count));
        h.outlier_values = outlier_values.to_host<std::uint8_t>(static_cast<std::size_t>(outlier_count) * value_bytes);
        return h;
    }
};

/// The CUDA backend driven from a runtime quantizer_config, with host data in
/// and out: allocates, copies, runs the two-phase entry points, synchronizes
/// and throws qaq::error on any failure (the same conditions as the CPU path).
class device_quantizer {
public:
    explicit device_quantizer(quantizer_config config, cudaStream_t stream = nullptr)
        : config_(std::move(config)), stream_(stream) {
        (void)make_device_policies(config_, 1);  // validate now, not on first use
    }

    const quantizer_config& config() const noexcept { return config_; }

    /// Quantizes `groups` rows of `n` host floats. `predicted_attention` (host,
    /// one finite value >= 0 per group) is required by value_attention bits.
    device_packed_groups quantize(const float* values, std::int64_t groups, std::int64_t n, group_tokens tokens,
                                  const float* predicted_attention = nullptr) const {
        QAQ_CHECK(groups >= 0 && n >= 1 && n <= max_group_size, "quantize of ", groups, " groups of ", n,
                  " elements; expected groups >= 0 and 1 <= n <= ", max_group_size);
        const device_policies policies = make_device_policies(config_, tokens.tokens);
        QAQ_CHECK(!policies.needs_attention || predicted_attention != nullptr || groups == 0,
                  "value_attention bits need the predicted attention of every group; none was given");
        const device_buffer input = device_buffer::from_host(values, static_cast<std::size_t>(groups * n));
        device_buffer predicted;
        if (policies.needs_attention) {
            for (std::int64_t g = 0; g < groups; ++g)
                QAQ_CHECK(std::isfinite(predicted_attention[g]) && predicted_attention[g] >= 0.0f,
                          "predicted attention of group ", g, " is ", predicted_attention[g],
                          "; expected a finite value >= 0");
            predicted = device_buffer::from_host(predicted_attention, static_cast<std::size_t>(groups));
        }
        return quantize_device(input.as<const float>(), groups, n, tokens, predicted.as<const float>());
    }

    /// The same with device-resident inputs.
    device_packed_groups quantize_device(const float* values, std::int64_t groups, std::int64_t n,
                                         group_tokens tokens, const float* predicted_attention = nullptr) const {
        const device_policies policies = make_device_policies(config_, tokens.tokens);
        // First guess of the outlier count: both quantile tails plus a margin;
        // ties and non-finite values can need more, then the call runs again.
        const double ratio = policies.outlier_ratio;
        std::int64_t capacity =
            groups * (ratio > 0.0 ? 2 * static_cast<std::int64_t>(std::ceil(ratio / 2.0 * static_cast<double>(n))) + 2 : 0) +
            1024;
        for (int attempt = 0;; ++attempt) {
            device_packed_groups packed = allocate(policies, groups, n, capacity);
            device_buffer diagnostics = device_buffer::from_host(&zero_diagnostics_, 1);
            packed_groups_out out = outputs(packed);
            out.diagnostics = diagnostics.as<quantize_diagnostics>();
            std::size_t bytes = 0;
            ::qaq::throw_if_failed(quantize_groups(nullptr, bytes, policies, values, groups, n, tokens,
                                                   predicted_attention, out, stream_),
                                   "quantize_groups (workspace size)");
            const device_buffer workspace(bytes);
            ::qaq::throw_if_failed(quantize_groups(workspace.data(), bytes, policies, values, groups, n, tokens,
                                                   predicted_attention, out, stream_),
                                   "quantize_groups");
            QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
            const quantize_diagnostics found = diagnostics.to_host<quantize_diagnostics>(1)[0];
            check_quantize_diagnostics(found);
            const std::uint64_t code_total = packed.code_offsets.to_host<std::uint64_t>(static_cast<std::size_t>(groups + 1)).back();
            const std::uint64_t outlier_total =
                packed.outlier_offsets.to_host<std::uint64_t>(static_cast<std::size_t>(groups + 1)).back();
            packed.code_bytes = static_cast<std::int64_t>(code_total);
            packed.outlier_count = static_cast<std::int64_t>(outlier_total);
            if (found.outliers_dropped == 0) return packed;
            QAQ_CHECK(attempt == 0, "outlier capacity still exceeded after resizing (internal error)");
            capacity = static_cast<std::int64_t>(outlier_total);
        }
    }

    /// Reconstructs packed groups into [groups, group_size] host floats.
    std::vector<float> dequantize(const device_packed_groups& packed) const {
        const device_buffer out(sizeof(float) * static_cast<std::size_t>(packed.groups * packed.group_size));
        std::size_t bytes = 0;
        ::qaq::throw_if_failed(dequantize_groups(nullptr, bytes, packed.codec, packed.view(), packed.groups,
                                                 out.as<float>(), stream_),
                               "dequantize_groups (workspace size)");
        const device_buffer workspace(bytes);
        ::qaq::throw_if_failed(dequantize_groups(workspace.data(), bytes, packed.codec, packed.view(), packed.groups,
                                                 out.as<float>(), stream_),
                               "dequantize_groups");
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
        return out.to_host<float>(static_cast<std::size_t>(packed.groups * packed.group_size));
    }

private:
    static device_packed_groups allocate(const device_policies& p, std::int64_t groups, std::int64_t n,
                                         std::int64_t outlier_capacity) {
        device_packed_groups packed;
        packed.groups = groups;
        packed.group_size = n;
        packed.codec = p.codec;
        const auto g = static_cast<std::size_t>(groups);
        const std::size_t value_bytes = p.codec.precision == storage_precision::fp16 ? 2 : 4;
        packed.widths = device_buffer(g);
        packed.parameters = device_buffer(g * static_cast<std::size_t>(p.codec.parameter_count()) * value_bytes + 4);
        packed.code_offsets = device_buffer(sizeof(std::uint64_t) * (g + 1));
        packed.codes = device_buffer(static_cast<std::size_t>(max_code_bytes(groups, n, p.bits_max)) + 1);
        packed.outlier_offsets = device_buffer(sizeof(std::uint64_t) * (g + 1));
        packed.outlier_positions = device_buffer(sizeof(std::uint16_t) * static_cast<std::size_t>(outlier_capacity) + 2);
        packed.outlier_values = device_buffer(value_bytes * static_cast<std::size_t>(outlier_capacity) + 4);
        packed.outlier_count = outlier_capacity;  // the capacity until the real count is known
        return packed;
    }
    static packed_groups_out outputs(const device_packed_groups& packed) {
        packed_groups_out out;
        out.widths = packed.widths.as<std::uint8_t>();
        out.parameters = packed.parameters.data();
        out.code_offsets = packed.code_offsets.as<std::uint64_t>();
        out.codes = packed.codes.as<std::uint8_t>();
        out.outlier_offsets = packed.outlier_offsets.as<std::uint64_t>();
        out.outlier_positions = packed.outlier_positions.as<std::uint16_t>();
        out.outlier_values = packed.outlier_values.data();
        out.outlier_capacity = packed.outlier_count;
        return out;
    }

    static constexpr quantize_diagnostics zero_diagnostics_{};
    quantizer_config config_;
    cudaStream_t stream_ = nullptr;
};

/// Attention of host queries [query_heads, head_dim] over one layer whose keys
/// and values were quantized (device_quantizer::quantize) from contiguous
/// [kv_heads, tokens, head_dim] buffers. Writes output [query_heads, head_dim]
/// and, when not null, probabilities [query_heads, tokens] (host memory).
inline void attend_layer(const device_packed_groups& keys, const device_packed_groups& values,
                         const attend_shape& shape, const float* queries, float* output,
                         float* probabilities = nullptr, cudaStream_t stream = nullptr) {
    const std::int64_t expected_elements = shape.kv_heads * shape.tokens * shape.head_dim;
    QAQ_CHECK(keys.groups * keys.group_size == expected_elements &&
                  values.groups * values.group_size == expected_elements,
              "attend_layer: packed keys hold ", keys.groups * keys.group_size, " and values ",
              values.groups * values.group_size, " elements; expected kv_heads x tokens x head_dim = ",
              expected_elements);
    const device_buffer q = device_buffer::from_host(queries, static_cast<std::size_t>(shape.query_heads * shape.head_dim));
    const device_buffer out(sizeof(float) * static_cast<std::size_t>(shape.query_heads * shape.head_dim));
    const device_buffer p(probabilities != nullptr ? sizeof(float) * static_cast<std::size_t>(shape.query_heads * shape.tokens) : 0);
    std::size_t bytes = 0;
    ::qaq::throw_if_failed(attend(nullptr, bytes, keys.codec, keys.layer(shape), values.codec, values.layer(shape),
                                  shape, q.as<const float>(), out.as<float>(), p.as<float>(), stream),
                           "attend (workspace size)");
    const device_buffer workspace(bytes);
    ::qaq::throw_if_failed(attend(workspace.data(), bytes, keys.codec, keys.layer(shape), values.codec,
                                  values.layer(shape), shape, q.as<const float>(), out.as<float>(), p.as<float>(),
                                  stream),
                           "attend");
    QAQ_CUDA_CHECK(cudaStreamSynchronize(stream));
    const auto host_out = out.to_host<float>(static_cast<std::size_t>(shape.query_heads * shape.head_dim));
    std::copy(host_out.begin(), host_out.end(), output);
    if (probabilities != nullptr) {
        const auto host_p = p.to_host<float>(static_cast<std::size_t>(shape.query_heads * shape.tokens));
        std::copy(host_p.begin(), host_p.end(), probabilities);
    }
}

}  // namespace cuda
QAQ_NAMESPACE_END
