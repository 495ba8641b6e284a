#pragma once
// One role (keys or values) of device_kv_cache: its device arrays, its code
// arena and the host side that plans it (slot plan, width and offset mirrors,
// the full-precision copy in page-locked memory). The protocol that drives it
// is device_kv_cache.cuh; the layout is cache_kernels.cuh's.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qaq/backend/cuda/cache_kernels.cuh"
#include "qaq/backend/cuda/code_arena.hpp"
#include "qaq/backend/cuda/device_api.cuh"
#include "qaq/backend/cuda/device_memory.cuh"
#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/kv_cache.hpp"
#include "qaq/packed_tensor.hpp"
#include "qaq/quantizer_config.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

/// Device scratch for one quantize_groups call and what it writes.
struct group_scratch {
    device_buffer widths, parameters, code_offsets, codes, ranges, outlier_offsets, outlier_positions, outlier_values,
        workspace;
    std::int64_t outlier_capacity = 0;

    /// Room for `groups` groups of `n` values at most `bits_max` bits and `outliers` outliers.
    void reserve(std::int64_t groups, std::int64_t n, int bits_max, int parameter_bytes, int value_bytes,
                 std::int64_t outliers, cudaStream_t stream) {
        const auto g = static_cast<std::size_t>(std::max<std::int64_t>(groups, 1));
        reserve_scratch(widths, g, stream);
        reserve_scratch(parameters, g * static_cast<std::size_t>(parameter_bytes), stream);
        reserve_scratch(code_offsets, sizeof(std::uint64_t) * (g + 1), stream);
        reserve_scratch(codes, static_cast<std::size_t>(std::max<std::int64_t>(max_code_bytes(groups, n, bits_max), 1)),
                        stream);
        reserve_scratch(ranges, sizeof(float) * g, stream);
        reserve_scratch(outlier_offsets, sizeof(std::uint64_t) * (g + 1), stream);
        const auto o = static_cast<std::size_t>(std::max<std::int64_t>(outliers, 1));
        reserve_scratch(outlier_positions, sizeof(std::uint16_t) * o, stream);
        reserve_scratch(outlier_values, static_cast<std::size_t>(value_bytes) * o, stream);
        outlier_capacity = static_cast<std::int64_t>(
            std::min(outlier_positions.bytes() / sizeof(std::uint16_t), outlier_values.bytes() / value_bytes));
    }

    packed_groups_out out(quantize_diagnostics* diagnostics, bool keep_outliers) const noexcept {
        packed_groups_out o;
        o.widths = widths.as<std::uint8_t>();
        o.parameters = parameters.data();
        o.code_offsets = code_offsets.as<std::uint64_t>();
        o.codes = codes.as<std::uint8_t>();
        o.outlier_offsets = outlier_offsets.as<std::uint64_t>();
        o.outlier_positions = outlier_positions.as<std::uint16_t>();
        o.outlier_values = outlier_values.data();
        o.outlier_capacity = keep_outliers ? outlier_capacity : 0;
        o.diagnostics = diagnostics;
        o.ranges = ranges.as<float>();
        return o;
    }

    staged_groups staged(bool with_ranges) const noexcept {
        staged_groups s;
        s.widths = widths.as<const std::uint8_t>();
        s.parameters = parameters.as<const std::uint8_t>();
        s.code_offsets = code_offsets.as<const std::uint64_t>();
        s.codes = codes.as<const std::uint8_t>();
        s.ranges = with_ranges ? ranges.as<const float>() : nullptr;
        s.outlier_offsets = outlier_offsets.as<const std::uint64_t>();
        s.outlier_positions = outlier_positions.as<const std::uint16_t>();
        s.outlier_values = outlier_values.as<const std::uint8_t>();
        return s;
    }

    /// Runs quantize_groups into this scratch (workspace grown as needed).
    template <class DeviceBits>
    void quantize(const DeviceBits& bits, bool needs_attention, double ratio, const device_codec& codec,
                  const float* values, std::int64_t groups, std::int64_t n, group_tokens tokens, const float* predicted,
                  const packed_groups_out& target, cudaStream_t stream, const char* what) {
        std::size_t bytes = 0;
        ::qaq::throw_if_failed(quantize_groups_impl(nullptr, bytes, bits, needs_attention, ratio, codec, values, groups,
                                                    n, tokens, predicted, target, stream),
                               std::string(what) + " (workspace size)");
        reserve_scratch(workspace, std::max<std::size_t>(bytes, 1), stream);
        bytes = workspace.bytes();
        ::qaq::throw_if_failed(quantize_groups_impl(workspace.data(), bytes, bits, needs_attention, ratio, codec,
                                                    values, groups, n, tokens, predicted, target, stream),
                               what);
    }
};

/// One role of the cache. Group (layer l, token t, kv head h, sub-group s) is
/// l * layer_groups + t * groups_per_token + h * groups_per_head + s.
struct device_cache_role {
    static constexpr std::int64_t host_chunk_tokens = 256;

    std::string name;  // "key" / "value", for messages
    quantizer_config config;
    device_codec codec;
    double ratio = 0.0;
    int bits_max = 0;
    bool needs_attention = false;
    int window = 1;
    std::int64_t layers = 0, kv_heads = 0, head_dim = 0, max_tokens = 0;
    std::int64_t group_size = 0, groups_per_head = 0, groups_per_token = 0, layer_groups = 0;
    int value_bytes = 0, parameter_bytes = 0;

    // Device: per-group arrays of every layer, the CSR rows of each layer, the arena.
    device_buffer widths, parameters, code_offsets, ranges, outlier_offsets;
    std::vector<device_buffer> outlier_positions, outlier_values;
    device_buffer arena;
    // Host: the plan of the arena, mirrors of widths and code offsets, outlier bounds.
    code_arena_plan plan;
    std::vector<std::uint8_t> host_widths;
    std::vector<std::uint64_t> host_offsets;
    std::vector<std::int64_t> outlier_capacity;         // entries per layer
    std::vector<std::int64_t> outlier_bound;            // >= the layer's outlier count (exact after a check)
    std::vector<std::vector<pinned_buffer>> host_copy;  // [layer][chunk of host_chunk_tokens tokens]

    // Append: scratch for one token, slot offsets staged per layer.
    group_scratch token_scratch;
    pinned_buffer slot_staging;  // [layers][groups_per_token]
    std::vector<cuda_event> slot_staging_free;
    device_buffer token_slots;  // [layers][groups_per_token]

    device_cache_role() = default;
    device_cache_role(std::string role_name, quantizer_config c, const kv_cache_shape& s, cudaStream_t stream)
        : name(std::move(role_name)), config(std::move(c)) {
        const device_policies policies = make_device_policies(config, 1);  // validates; throws for what cannot run
        QAQ_CHECK(config.level == group_level::head || config.level == group_level::sub_head, "the ", name,
                  " cache needs head or sub_head groups; ", to_string(config.level),
                  "-level groups span what a decode step produces separately");
        codec = policies.codec;
        ratio = policies.outlier_ratio;
        bits_max = policies.bits_max;
        needs_attention = policies.needs_attention;
        window = config.bits == bits_kind::fixed ? 1 : config.window;
        layers = s.layers, kv_heads = s.kv_heads, head_dim = s.head_dim, max_tokens = s.max_tokens;
        group_size = config.level == group_level::head ? s.head_dim : config.group_dims;
        QAQ_CHECK(s.head_dim % group_size == 0, "the ", name, " groups of ", group_size,
                  " dims do not divide head_dim ", s.head_dim);
        QAQ_CHECK(group_size <= max_group_size, "the ", name, " groups of ", group_size,
                  " values exceed the CUDA backend's largest group, ", max_group_size);
        groups_per_head = s.head_dim / group_size;
        groups_per_token = s.kv_heads * groups_per_head;
        layer_groups = s.max_tokens * groups_per_token;
        value_bytes = config.precision == storage_precision::fp16 ? 2 : 4;
        parameter_bytes = codec.parameter_count() * value_bytes;

        const auto all = static_cast<std::size_t>(layers * layer_groups);
        widths = device_buffer(all);
        parameters = device_buffer(all * static_cast<std::size_t>(parameter_bytes));
        code_offsets = device_buffer(all * sizeof(std::uint64_t));
        ranges = device_buffer(all * sizeof(float));
        outlier_offsets = device_buffer(static_cast<std::size_t>(layers * (layer_groups + 1)) * sizeof(std::uint64_t));
        QAQ_CUDA_CHECK(cudaMemsetAsync(outlier_offsets.data(), 0, outlier_offsets.bytes(), stream));
        const std::int64_t first_capacity = 4 * s.kv_heads * s.head_dim;
        for (std::int64_t l = 0; l < layers; ++l) {
            outlier_positions.emplace_back(sizeof(std::uint16_t) * static_cast<std::size_t>(first_capacity));
            outlier_values.emplace_back(static_cast<std::size_t>(value_bytes * first_capacity));
        }
        outlier_capacity.assign(static_cast<std::size_t>(layers), first_capacity);
        outlier_bound.assign(static_cast<std::size_t>(layers), 0);
        plan = code_arena_plan(group_size);
        host_widths.assign(all, 0);
        host_offsets.assign(all, 0);
        host_copy.resize(static_cast<std::size_t>(layers));

        token_scratch.reserve(groups_per_token, group_size, bits_max, parameter_bytes, value_bytes,
                              groups_per_token * group_size, stream);
        slot_staging = pinned_buffer(sizeof(std::uint64_t) * static_cast<std::size_t>(layers * groups_per_token));
        slot_staging_free.resize(static_cast<std::size_t>(layers));
        for (auto& e : slot_staging_free) e.record(stream);
        token_slots = device_buffer(sizeof(std::uint64_t) * static_cast<std::size_t>(layers * groups_per_token));
    }

    std::int64_t group_index(std::int64_t layer, std::int64_t token, std::int64_t within_token) const noexcept {
        return layer * layer_groups + token * groups_per_token + within_token;
    }

    cache_role_arrays arrays() const noexcept {
        cache_role_arrays a;
        a.widths = widths.as<std::uint8_t>();
        a.parameters = parameters.as<std::uint8_t>();
        a.code_offsets = code_offsets.as<std::uint64_t>();
        a.ranges = ranges.as<float>();
        a.codes = arena.as<std::uint8_t>();
        return a;
    }

    cache_layer_outliers layer_outliers(std::int64_t l) const noexcept {
        cache_layer_outliers o;
        o.offsets = outlier_offsets.as<std::uint64_t>() + l * (layer_groups + 1);
        o.positions = outlier_positions[static_cast<std::size_t>(l)].as<std::uint16_t>();
        o.values = outlier_values[static_cast<std::size_t>(l)].as<std::uint8_t>();
        return o;
    }

    /// Layer l's groups as attend and dequantize_groups read them.
    packed_layer_view layer_view(std::int64_t l) const noexcept {
        packed_layer_view v;
        const std::int64_t first = l * layer_groups;
        v.groups.widths = widths.as<const std::uint8_t>() + first;
        v.groups.parameters = parameters.as<const std::uint8_t>() + first * parameter_bytes;
        v.groups.code_offsets = code_offsets.as<const std::uint64_t>() + first;
        v.groups.codes = arena.as<const std::uint8_t>();
        if (ratio > 0.0) {
            const cache_layer_outliers o = layer_outliers(l);
            v.groups.outlier_offsets = o.offsets;
            v.groups.outlier_positions = o.positions;
            v.groups.outlier_values = o.values;
        }
        v.groups.group_size = group_size;
        v.head_stride = groups_per_head;
        v.token_stride = groups_per_token;
        return v;
    }

    /// The full-precision copy of token t of layer l: [kv_heads * head_dim] floats (page-locked).
    float* host_token(std::int64_t l, std::int64_t t) {
        auto& chunks = host_copy[static_cast<std::size_t>(l)];
        const auto chunk = static_cast<std::size_t>(t / host_chunk_tokens);
        while (chunks.size() <= chunk)
            chunks.emplace_back(sizeof(float) * static_cast<std::size_t>(host_chunk_tokens * kv_heads * head_dim));
        return chunks[chunk].as<float>() + (t % host_chunk_tokens) * kv_heads * head_dim;
    }

    /// Arena bytes for every slot planned so far (at least one: a view needs a codes pointer
    /// even when every group is 0 bits wide).
    void fit_arena(cudaStream_t stream) {
        grow_keeping(arena, std::max<std::size_t>(plan.end(), 1), arena.bytes(), stream);
    }

    /// Room for `needed` outliers in layer l.
    void fit_outliers(std::int64_t l, std::int64_t needed, cudaStream_t stream) {
        auto& capacity = outlier_capacity[static_cast<std::size_t>(l)];
        if (needed <= capacity) return;
        const std::int64_t target = std::max(needed, capacity + capacity / 2);
        grow_keeping(outlier_positions[static_cast<std::size_t>(l)],
                     sizeof(std::uint16_t) * static_cast<std::size_t>(target),
                     outlier_positions[static_cast<std::size_t>(l)].bytes(), stream);
        grow_keeping(outlier_values[static_cast<std::size_t>(l)], static_cast<std::size_t>(value_bytes * target),
                     outlier_values[static_cast<std::size_t>(l)].bytes(), stream);
        capacity = target;
    }

    /// Moves group g's slot to `width`; returns the new offset.
    std::uint64_t move_slot(std::int64_t g, int width) {
        const auto i = static_cast<std::size_t>(g);
        plan.release(host_widths[i], host_offsets[i]);
        const std::uint64_t offset = plan.allocate(width);
        host_widths[i] = static_cast<std::uint8_t>(width);
        host_offsets[i] = offset;
        return offset;
    }
    /// A new group g of `width` bits.
    std::uint64_t place_slot(std::int64_t g, int width) {
        const std::uint64_t offset = plan.allocate(width);
        host_widths[static_cast<std::size_t>(g)] = static_cast<std::uint8_t>(width);
        host_offsets[static_cast<std::size_t>(g)] = offset;
        return offset;
    }

    /// Forgets every token (the device arrays are rewritten before they are read again).
    void clear(cudaStream_t stream) {
        plan.clear();
        std::fill(outlier_bound.begin(), outlier_bound.end(), 0);
        QAQ_CUDA_CHECK(cudaMemsetAsync(outlier_offsets.data(), 0, outlier_offsets.bytes(), stream));
    }

    /// Device bytes of `tokens[l]` tokens in layer l with `outliers[l]` outliers.
    byte_report bytes(const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& outliers) const {
        byte_report r;
        std::int64_t all_tokens = 0;
        for (auto t : tokens) all_tokens += t;
        const std::int64_t held = all_tokens * groups_per_token;
        const std::int64_t allocated = layers * layer_groups;
        r.codes = plan.used_bytes();
        r.parameters = held * parameter_bytes;
        r.widths = held;
        r.slot_indices = held * static_cast<std::int64_t>(sizeof(std::uint64_t));
        std::int64_t outlier_entries = 0, outlier_room = 0;
        for (std::int64_t l = 0; l < layers; ++l) {
            outlier_entries += outliers[static_cast<std::size_t>(l)];
            outlier_room += outlier_capacity[static_cast<std::size_t>(l)];
        }
        const std::int64_t row_pointers = (held + layers) * 8;
        r.outlier_counts = ratio > 0.0 ? row_pointers : 0;
        r.outlier_positions = outlier_entries * 2;
        r.outlier_values = outlier_entries * value_bytes;
        const std::int64_t metadata_room = (allocated - held) * (1 + parameter_bytes + 8);
        r.slack = static_cast<std::int64_t>(arena.bytes()) - plan.used_bytes() + metadata_room +
                  (layers * (layer_groups + 1) * 8 - r.outlier_counts) +
                  (outlier_room - outlier_entries) * (2 + value_bytes);
        r.elements = held * group_size;
        return r;
    }

    std::int64_t host_copy_bytes() const noexcept {
        std::int64_t b = 0;
        for (const auto& chunks : host_copy)
            for (const auto& c : chunks) b += static_cast<std::int64_t>(c.bytes());
        return b;
    }
    /// What rebalancing reads besides the codes: the ranges (device) and the host mirrors and plan.
    std::int64_t rebalance_metadata_bytes() const noexcept {
        return static_cast<std::int64_t>(ranges.bytes()) +
               static_cast<std::int64_t>(host_widths.size() + host_offsets.size() * sizeof(std::uint64_t)) +
               plan.bookkeeping_bytes() + static_cast<std::int64_t>(slot_staging.bytes());
    }
};

}  // namespace detail
}  // namespace cuda
QAQ_NAMESPACE_END
