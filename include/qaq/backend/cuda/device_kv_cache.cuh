#pragma once
// qaq::cuda::device_kv_cache: the decode-time cache of qaq::quantized_kv_cache
// (kv_cache.hpp) on one CUDA device — the same protocol, the same widths and
// bytes, with keys, values, queries, outputs and probabilities in device memory:
//
//   qaq::cuda::device_kv_cache cache({layers, kv_heads, query_heads, head_dim, max_tokens},
//                                    key_config, value_config, {}, stream);
//   for (each generated token) {
//       for (int l = 0; l < layers; ++l) {
//           cache.append(l, k, H * D, v, H * D);                 // device [kv_heads][head_dim]
//           cache.attend(l, q, Hq * D, out, Hq * D, p, Hq * T);  // device, straight over the codes
//           cache.observe(l, p, Hq * T);                         // the attention window, on the device
//       }
//       cache.rebalance();  // new widths; changed groups re-quantized from the host copy
//   }
//
// Every call is asynchronous on the cache's stream except rebalance(),
// prefill(), synchronize() and the inspection calls (bytes, widths,
// dequantize), which wait for it. What the host cache refuses at once and the
// device can only count (non-finite keys or values, invalid probabilities, a
// parameter or outlier beyond fp16) is checked when the cache next waits:
// rebalance() or synchronize() throw qaq::error, and from then on the cache
// refuses every call, as tokens since the last check may be corrupt. A
// refused prefill leaves the cache empty and usable.
//
// Supported: the uniform codecs, outliers none or quantile, head or sub_head
// groups, downgrade_source::host_copy (the up and down paths both re-quantize
// from the full-precision host copy, gathered from page-locked memory and
// copied asynchronously).

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cub/device/device_select.cuh>
#include <string>
#include <vector>

#include "qaq/backend/cuda/cache_kernels.cuh"
#include "qaq/backend/cuda/device_api.cuh"
#include "qaq/backend/cuda/device_cache_role.cuh"
#include "qaq/backend/cuda/device_memory.cuh"
#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/cache/step_tracker.hpp"
#include "qaq/kv_cache.hpp"
#include "qaq/predicted_attention.hpp"
#include "qaq/reference_accounting.hpp"
#include "qaq/tensor_view.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

class device_kv_cache {
public:
    device_kv_cache(const kv_cache_shape& shape, quantizer_config keys, quantizer_config values,
                    kv_cache_options options = {}, cudaStream_t stream = nullptr)
        : steps_(shape), shape_(shape), options_(options), stream_(stream) {
        QAQ_CHECK(shape.query_heads / shape.kv_heads <= detail::attend_max_queries_per_kv &&
                      shape.head_dim <= detail::attend_max_head_dim,
                  "the CUDA attention supports up to ", detail::attend_max_queries_per_kv,
                  " query heads per KV head and head_dim <= ", detail::attend_max_head_dim, "; got ",
                  shape.query_heads / shape.kv_heads, " and ", shape.head_dim);
        QAQ_CHECK(options.downgrade == downgrade_source::host_copy,
                  "the CUDA cache re-quantizes from the host copy only (downgrade_source::host_copy); "
                  "downgrade_source::codes runs on the CPU cache");
        keys.role = cache_role::key;
        values.role = cache_role::value;
        keys_ = detail::device_cache_role("key", std::move(keys), shape, stream_);
        values_ = detail::device_cache_role("value", std::move(values), shape, stream_);
        window_ = std::max(keys_.window, values_.window);
        const auto slots = static_cast<std::size_t>(shape.layers * window_);
        window_rows_ =
            device_buffer(sizeof(float) * slots * static_cast<std::size_t>(shape.max_tokens * shape.kv_heads));
        window_lengths_ = device_buffer(sizeof(std::int64_t) * slots);
        QAQ_CUDA_CHECK(cudaMemsetAsync(window_lengths_.data(), 0, window_lengths_.bytes(), stream_));
        diagnostics_ = device_buffer(sizeof(cache_diagnostics));
        QAQ_CUDA_CHECK(cudaMemsetAsync(diagnostics_.data(), 0, diagnostics_.bytes(), stream_));
        readback_ = pinned_buffer(sizeof(readback));
        readback_device_ = device_buffer(sizeof(std::uint64_t) * static_cast<std::size_t>(2 + 2 * shape.layers));
        observed_.assign(static_cast<std::size_t>(shape.layers), 0);
        outliers_.assign(2, std::vector<std::int64_t>(static_cast<std::size_t>(shape.layers), 0));
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }

    device_kv_cache(const device_kv_cache&) = delete;
    device_kv_cache& operator=(const device_kv_cache&) = delete;

    const kv_cache_shape& shape() const noexcept { return shape_; }
    cudaStream_t stream() const noexcept { return stream_; }
    std::int64_t tokens(std::int64_t layer = 0) const { return steps_.tokens(layer); }
    const rebalance_counters& counters() const noexcept { return counters_; }
    const quantizer_config& key_config() const noexcept { return keys_.config; }
    const quantizer_config& value_config() const noexcept { return values_.config; }

    /// Appends the next token of `layer`: keys and values [kv_heads][head_dim] in device memory.
    void append(std::int64_t layer, const float* keys, std::int64_t key_count, const float* values,
                std::int64_t value_count) {
        check_usable();
        const std::int64_t t = steps_.check_append(layer, key_count, value_count);
        QAQ_CHECK(keys != nullptr && values != nullptr, "append got a null keys or values pointer");
        guarded([&] {
            append_role(keys_, layer, t, keys);
            append_role(values_, layer, t, values);
        });
        steps_.appended(layer);
    }

    /// Attention of one query token over every cached token of `layer`, straight over
    /// the packed codes and exact outliers (all device memory): queries and output
    /// [query_heads][head_dim], probabilities [query_heads][tokens(layer)].
    void attend(std::int64_t layer, const float* queries, std::int64_t query_count, float* output,
                std::int64_t output_count, float* probabilities, std::int64_t probability_count) {
        check_usable();
        const std::int64_t T = steps_.check_attend(layer, query_count, output_count, probability_count);
        const std::int64_t D = shape_.head_dim, Hq = shape_.query_heads;
        QAQ_CHECK(queries != nullptr && output != nullptr && probabilities != nullptr,
                  "attend got a null queries, output or probabilities pointer");
        const attend_shape shape{T, shape_.kv_heads, Hq, D};
        const packed_layer_view keys = keys_.layer_view(layer), values = values_.layer_view(layer);
        std::size_t bytes = 0;
        ::qaq::throw_if_failed(cuda::attend(nullptr, bytes, keys_.codec, keys, values_.codec, values, shape, queries,
                                            output, probabilities, stream_),
                               "attend (workspace size)");
        detail::reserve_scratch(attend_workspace_, std::max<std::size_t>(bytes, 1), stream_);
        bytes = attend_workspace_.bytes();
        ::qaq::throw_if_failed(cuda::attend(attend_workspace_.data(), bytes, keys_.codec, keys, values_.codec, values,
                                            shape, queries, output, probabilities, stream_),
                               "attend");
    }

    /// Records an attention row of `layer` (device [query_heads][tokens(layer)]) in the window.
    void observe(std::int64_t layer, const float* probabilities, std::int64_t probability_count) {
        check_usable();
        const std::int64_t T = steps_.check_observe(layer, probability_count);
        QAQ_CHECK(probabilities != nullptr, "observe got a null probabilities pointer");
        guarded([&] { observe_row(layer, probabilities, T); });
    }

    /// Recomputes every group's width and re-quantizes the groups whose width
    /// changed, from the full-precision host copy. Waits for the stream.
    rebalance_counters rebalance() {
        check_usable();
        const std::int64_t T = steps_.step_tokens();
        const rebalance_counters before = counters_;
        if (T > 0) guarded([&] { rebalance_roles(T); });
        ++counters_.rebalances;
        return counters_.since(before);
    }

    /// Quantizes a whole prefilled cache (host keys and values [layers, 1, kv_heads,
    /// tokens, head_dim], attention [layers, 1, query_heads, rows, tokens]) exactly
    /// as quantized_kv_cache::prefill; the last rows seed the window. Waits.
    void prefill(const kv_view<const float>& keys, const kv_view<const float>& values,
                 const attention_view<const float>& attention = {}) {
        check_usable();
        const kv_shape expected =
            steps_.check_prefill(keys, values, attention, keys_.needs_attention || values_.needs_attention);
        try {
            prefill_role(keys_, keys, attention);
            prefill_role(values_, values, attention);
            steps_.set_all(expected.tokens);
            if (!attention.empty()) seed_window(attention, expected.tokens);
            synchronize();
        } catch (...) {
            reset();
            throw;
        }
    }

    /// Waits for the stream and checks what the device counted (see the top of this file).
    void synchronize() {
        check_usable();
        guarded([&] {
            QAQ_CUDA_CHECK(cudaMemcpyAsync(&readback_.as<readback>()->diagnostics, diagnostics_.data(),
                                           sizeof(cache_diagnostics), cudaMemcpyDeviceToHost, stream_));
            QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
            check_diagnostics(readback_.as<readback>()->diagnostics);
        });
    }

    /// Reconstructs one layer and role into host [kv_heads][tokens][head_dim] (tests, evaluation).
    std::vector<float> dequantize(std::int64_t layer, cache_role role) {
        synchronize();
        const detail::device_cache_role& r = role == cache_role::key ? keys_ : values_;
        const std::int64_t T = steps_.tokens(layer);
        const std::int64_t H = shape_.kv_heads, D = shape_.head_dim, groups = T * r.groups_per_token;
        std::vector<float> out(static_cast<std::size_t>(H * T * D));
        if (T == 0) return out;
        const device_buffer rows(sizeof(float) * static_cast<std::size_t>(groups * r.group_size));
        const packed_layer_view view = r.layer_view(layer);
        std::size_t bytes = 0;
        ::qaq::throw_if_failed(
            dequantize_groups(nullptr, bytes, r.codec, view.groups, groups, rows.as<float>(), stream_),
            "dequantize_groups (workspace size)");
        const device_buffer workspace(std::max<std::size_t>(bytes, 1));
        bytes = workspace.bytes();
        ::qaq::throw_if_failed(
            dequantize_groups(workspace.data(), bytes, r.codec, view.groups, groups, rows.as<float>(), stream_),
            "dequantize_groups");
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
        const std::vector<float> token_major = rows.to_host<float>(static_cast<std::size_t>(groups * r.group_size));
        for (std::int64_t t = 0; t < T; ++t)  // [T][H][D] -> [H][T][D]
            for (std::int64_t h = 0; h < H; ++h)
                std::copy_n(token_major.begin() + (t * H + h) * D, D, out.begin() + (h * T + t) * D);
        return out;
    }

    /// The width of every group of one layer and role as the device holds it,
    /// [kv_heads][tokens][groups per head] (the order of quantized_kv_cache::widths).
    std::vector<int> widths(std::int64_t layer, cache_role role) {
        synchronize();
        const std::int64_t T = steps_.tokens(layer);
        const detail::device_cache_role& r = role == cache_role::key ? keys_ : values_;
        std::vector<std::uint8_t> token_major(static_cast<std::size_t>(T * r.groups_per_token));
        if (T > 0)
            QAQ_CUDA_CHECK(cudaMemcpy(token_major.data(), r.widths.as<std::uint8_t>() + layer * r.layer_groups,
                                      token_major.size(), cudaMemcpyDeviceToHost));
        std::vector<int> out;
        out.reserve(token_major.size());
        for (std::int64_t h = 0; h < shape_.kv_heads; ++h)
            for (std::int64_t t = 0; t < T; ++t)
                for (std::int64_t s = 0; s < r.groups_per_head; ++s)
                    out.push_back(
                        token_major[static_cast<std::size_t>(t * r.groups_per_token + h * r.groups_per_head + s)]);
        return out;
    }

    /// The original implementation's accounting of one role (as quantized_kv_cache::accounting).
    reference_accounting accounting(cache_role role) {
        synchronize();
        const detail::device_cache_role& r = role == cache_role::key ? keys_ : values_;
        std::vector<std::uint8_t> all;
        for (std::int64_t l = 0; l < shape_.layers; ++l) {
            const std::size_t count =
                static_cast<std::size_t>(steps_.tokens(l) * r.groups_per_token);
            const std::size_t at = all.size();
            all.resize(at + count);
            if (count > 0)
                QAQ_CUDA_CHECK(cudaMemcpy(all.data() + at, r.widths.as<std::uint8_t>() + l * r.layer_groups, count,
                                          cudaMemcpyDeviceToHost));
        }
        return reference_accounting::of(all, r.ratio, r.codec.parameter_count(), r.group_size);
    }

    /// Every byte the cache holds. keys/values: device memory (codes in their
    /// arena slots, parameters, width tags, 8-byte code offsets, CSR outlier row
    /// pointers, positions and values; slack: arena free slots and unused
    /// capacity). host_copy: the page-locked full-precision copy. host_metadata:
    /// what rebalancing reads besides it (device ranges, host mirrors and slot
    /// plan). attention_window: the device window rows. Waits for the stream.
    kv_cache_byte_report bytes() {
        refresh_outlier_totals();
        kv_cache_byte_report r;
        r.keys = keys_.bytes(steps_.all_tokens(), outliers_[0]);
        r.values = values_.bytes(steps_.all_tokens(), outliers_[1]);
        r.host_copy = keys_.host_copy_bytes() + values_.host_copy_bytes();
        r.host_metadata = keys_.rebalance_metadata_bytes() + values_.rebalance_metadata_bytes();
        r.attention_window = static_cast<std::int64_t>(window_rows_.bytes() + window_lengths_.bytes());
        return r;
    }

private:
    static constexpr std::int64_t max_readback_layers = 1024;
    // What the host reads back when it waits (page-locked, so the copies are asynchronous).
    struct readback {
        cache_diagnostics diagnostics;
        quantize_diagnostics rebalance_quantize[2];
        std::uint64_t selected[2];
        std::uint64_t totals[2][max_readback_layers];
    };

    void check_usable() const {
        QAQ_CHECK(failed_.empty(), "the CUDA cache cannot be used after an earlier failure: ", failed_);
    }
    // Runs a step that changes the cache; a failure part-way leaves it unusable.
    template <class Step>
    void guarded(Step&& step) {
        try {
            step();
        } catch (const std::exception& e) {
            if (failed_.empty()) failed_ = e.what();
            throw;
        }
    }

    cache_diagnostics* device_diagnostics() const noexcept { return diagnostics_.as<cache_diagnostics>(); }

    void check_diagnostics(const cache_diagnostics& d) const {
        QAQ_CHECK(d.non_finite_inputs == 0, d.non_finite_inputs,
                  " non-finite key or value element(s) were appended; the cache accepts finite values only");
        QAQ_CHECK(d.invalid_probabilities == 0, d.invalid_probabilities,
                  " observed attention probabilities were not finite or negative; expected finite values >= 0");
        check_quantize_diagnostics(d.quantize);
        QAQ_CHECK(d.quantize.outliers_dropped == 0, d.quantize.outliers_dropped,
                  " outliers did not fit their buffer (internal error)");
    }

    void append_role(detail::device_cache_role& r, std::int64_t l, std::int64_t t, const float* data) {
        const std::int64_t HD = shape_.kv_heads * shape_.head_dim, G = r.groups_per_token;
        QAQ_CUDA_CHECK(cudaMemcpyAsync(r.host_token(l, t), data, sizeof(float) * static_cast<std::size_t>(HD),
                                       cudaMemcpyDeviceToHost, stream_));
        detail::count_non_finite_kernel<256><<<detail::grid_for((HD + 255) / 256), 256, 0, stream_>>>(
            data, HD, &device_diagnostics()->non_finite_inputs);
        QAQ_CUDA_CHECK(cudaGetLastError());

        // A new token has no attention history: bits_max, as the host cache.
        const device_bits at_bits_max = to_device_bits(bits::fixed(r.bits_max), 1);
        r.token_scratch.quantize(at_bits_max, false, r.ratio, r.codec, data, G, r.group_size, group_tokens{1, 1},
                                 nullptr, r.token_scratch.out(&device_diagnostics()->quantize, true), stream_,
                                 "quantizing an appended token");

        // Slots, planned on the host; the staging row of this layer is free once its last copy ran.
        r.slot_staging_free[static_cast<std::size_t>(l)].wait();
        std::uint64_t* slots = r.slot_staging.as<std::uint64_t>() + l * G;
        for (std::int64_t i = 0; i < G; ++i) slots[i] = r.place_slot(r.group_index(l, t, i), r.bits_max);
        r.fit_arena(stream_);
        r.fit_outliers(l, r.outlier_bound[static_cast<std::size_t>(l)] + HD, stream_);
        std::uint64_t* device_slots = r.token_slots.as<std::uint64_t>() + l * G;
        QAQ_CUDA_CHECK(cudaMemcpyAsync(device_slots, slots, sizeof(std::uint64_t) * static_cast<std::size_t>(G),
                                       cudaMemcpyHostToDevice, stream_));
        r.slot_staging_free[static_cast<std::size_t>(l)].record(stream_);

        detail::commit_plan plan;
        plan.count = G;
        plan.first_group = r.group_index(l, t, 0);
        plan.slot_offsets = device_slots;
        plan.group_size = r.group_size;
        plan.parameter_bytes = r.parameter_bytes;
        plan.value_bytes = r.value_bytes;
        plan.outliers = r.layer_outliers(l);
        plan.first_outlier_row = t * G;
        detail::commit_groups_kernel<128>
            <<<detail::grid_for(G), 128, 0, stream_>>>(r.token_scratch.staged(true), plan, r.arrays());
        QAQ_CUDA_CHECK(cudaGetLastError());
        r.outlier_bound[static_cast<std::size_t>(l)] += HD;
    }

    void observe_row(std::int64_t l, const float* probabilities, std::int64_t T) {
        const std::int64_t slot = l * window_ + observed_[static_cast<std::size_t>(l)] % window_;
        const std::int64_t entries = T * shape_.kv_heads;
        detail::observe_kernel<256><<<detail::grid_for((entries + 255) / 256), 256, 0, stream_>>>(
            probabilities, shape_.query_heads, shape_.kv_heads, T,
            window_rows_.as<float>() + slot * shape_.max_tokens * shape_.kv_heads,
            window_lengths_.as<std::int64_t>() + slot, &device_diagnostics()->invalid_probabilities);
        QAQ_CUDA_CHECK(cudaGetLastError());
        ++observed_[static_cast<std::size_t>(l)];
    }

    // Per role: new widths for every group (device), the changed ones selected
    // (cub::DeviceSelect), re-planned on the host, re-quantized from the host copy.
    void rebalance_roles(std::int64_t T) {
        QAQ_CHECK(shape_.layers <= max_readback_layers, "the CUDA cache supports up to ", max_readback_layers,
                  " layers");
        detail::device_cache_role* roles[2] = {&keys_, &values_};
        auto* counts = readback_device_.as<std::uint64_t>();  // [2] selected, then [2][layers] outlier totals
        for (int i = 0; i < 2; ++i) select_changed(*roles[i], T, scans_[i], counts + i);
        for (int i = 0; i < 2; ++i)
            detail::outlier_totals_kernel<128><<<detail::grid_for((shape_.layers + 127) / 128), 128, 0, stream_>>>(
                roles[i]->outlier_offsets.as<const std::uint64_t>(), shape_.layers, roles[i]->layer_groups + 1,
                T * roles[i]->groups_per_token, counts + 2 + i * shape_.layers);
        QAQ_CUDA_CHECK(cudaGetLastError());
        readback& back = *readback_.as<readback>();
        QAQ_CUDA_CHECK(cudaMemcpyAsync(&back.diagnostics, diagnostics_.data(), sizeof(cache_diagnostics),
                                       cudaMemcpyDeviceToHost, stream_));
        QAQ_CUDA_CHECK(
            cudaMemcpyAsync(back.selected, counts, sizeof(std::uint64_t) * 2, cudaMemcpyDeviceToHost, stream_));
        for (int i = 0; i < 2; ++i)
            QAQ_CUDA_CHECK(cudaMemcpyAsync(back.totals[i], counts + 2 + i * shape_.layers,
                                           sizeof(std::uint64_t) * static_cast<std::size_t>(shape_.layers),
                                           cudaMemcpyDeviceToHost, stream_));
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
        check_diagnostics(back.diagnostics);
        for (int i = 0; i < 2; ++i)
            for (std::int64_t l = 0; l < shape_.layers; ++l) {
                const auto total = static_cast<std::int64_t>(back.totals[i][l]);
                roles[i]->outlier_bound[static_cast<std::size_t>(l)] = total;
                outliers_[static_cast<std::size_t>(i)][static_cast<std::size_t>(l)] = total;
            }

        std::int64_t selected[2];
        for (int i = 0; i < 2; ++i) {
            selected[i] = static_cast<std::int64_t>(back.selected[i]);
            changed_items_[i].reserve(sizeof(std::uint64_t) *
                                      static_cast<std::size_t>(std::max<std::int64_t>(selected[i], 1)));
            if (selected[i] > 0)
                QAQ_CUDA_CHECK(cudaMemcpyAsync(changed_items_[i].data(), scans_[i].selected.data(),
                                               sizeof(std::uint64_t) * static_cast<std::size_t>(selected[i]),
                                               cudaMemcpyDeviceToHost, stream_));
        }
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
        QAQ_CUDA_CHECK(cudaMemsetAsync(rebalance_diagnostics_device(), 0, 2 * sizeof(quantize_diagnostics), stream_));
        for (int i = 0; i < 2; ++i)
            if (selected[i] > 0) requantize(*roles[i], i, selected[i]);
        QAQ_CUDA_CHECK(cudaMemcpyAsync(back.rebalance_quantize, rebalance_diagnostics_device(),
                                       2 * sizeof(quantize_diagnostics), cudaMemcpyDeviceToHost, stream_));
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (int i = 0; i < 2; ++i) check_quantize_diagnostics(back.rebalance_quantize[i]);
    }

    struct width_scan_buffers {
        device_buffer items, changed, selected, temp;
    };

    void select_changed(const detail::device_cache_role& r, std::int64_t T, width_scan_buffers& b,
                        std::uint64_t* count) {
        const std::int64_t J = shape_.layers * T * r.groups_per_token;
        detail::reserve_scratch(b.items, sizeof(std::uint64_t) * static_cast<std::size_t>(J), stream_);
        detail::reserve_scratch(b.changed, static_cast<std::size_t>(J), stream_);
        detail::reserve_scratch(b.selected, sizeof(std::uint64_t) * static_cast<std::size_t>(J), stream_);
        detail::width_scan scan;
        scan.widths = r.widths.as<const std::uint8_t>();
        scan.ranges = r.ranges.as<const float>();
        scan.layers = shape_.layers;
        scan.tokens = T;
        scan.kv_heads = shape_.kv_heads;
        scan.groups_per_head = r.groups_per_head;
        scan.layer_groups = r.layer_groups;
        if (r.needs_attention) {
            scan.window_rows = window_rows_.as<const float>();
            scan.row_lengths = window_lengths_.as<const std::int64_t>();
        }
        scan.window = window_;
        scan.max_tokens = shape_.max_tokens;
        const device_bits bits = make_device_policies(r.config, T).bits;
        detail::choose_widths_kernel<256, device_bits><<<detail::grid_for((J + 255) / 256), 256, 0, stream_>>>(
            bits, scan, b.items.as<std::uint64_t>(), b.changed.as<std::uint8_t>());
        QAQ_CUDA_CHECK(cudaGetLastError());
        std::size_t temp = 0;
        QAQ_CUDA_CHECK(cub::DeviceSelect::Flagged(nullptr, temp, b.items.as<const std::uint64_t>(),
                                                  b.changed.as<const std::uint8_t>(), b.selected.as<std::uint64_t>(),
                                                  count, J, stream_));
        detail::reserve_scratch(b.temp, std::max<std::size_t>(temp, 1), stream_);
        temp = b.temp.bytes();
        QAQ_CUDA_CHECK(cub::DeviceSelect::Flagged(b.temp.data(), temp, b.items.as<const std::uint64_t>(),
                                                  b.changed.as<const std::uint8_t>(), b.selected.as<std::uint64_t>(),
                                                  count, J, stream_));
    }

    quantize_diagnostics* rebalance_diagnostics_device() noexcept {
        detail::reserve_scratch(rebalance_diagnostics_, 2 * sizeof(quantize_diagnostics), stream_);
        return rebalance_diagnostics_.as<quantize_diagnostics>();
    }

    // Re-quantizes the `count` groups selected for role `i` (items in changed_items_[i]).
    void requantize(detail::device_cache_role& r, int i, std::int64_t count) {
        const std::int64_t n = r.group_size, G = r.groups_per_token;
        pinned_buffer& staging = requantize_staging_[i];
        device_buffer& on_device = requantize_device_[i];
        staging.reserve(static_cast<std::size_t>(count) * (sizeof(float) * static_cast<std::size_t>(n) +
                                                           sizeof(std::int64_t) + sizeof(std::uint64_t) + 1));
        // One staging block, each array aligned: targets, slots, rows, widths.
        auto* targets = staging.as<std::int64_t>();
        auto* slots = reinterpret_cast<std::uint64_t*>(targets + count);
        auto* rows = reinterpret_cast<float*>(slots + count);
        auto* widths = reinterpret_cast<std::uint8_t*>(rows + count * n);
        const auto* items = changed_items_[i].as<const std::uint64_t>();
        for (std::int64_t k = 0; k < count; ++k) {
            const auto g = static_cast<std::int64_t>(items[k] >> 8);
            const int width = static_cast<int>(items[k] & 0xFF);
            const int old_width = r.host_widths[static_cast<std::size_t>(g)];
            targets[k] = g;
            widths[k] = static_cast<std::uint8_t>(width);
            slots[k] = r.move_slot(g, width);
            const std::int64_t l = g / r.layer_groups, within = g % r.layer_groups;
            std::memcpy(rows + k * n, r.host_token(l, within / G) + (within % G) * n,
                        sizeof(float) * static_cast<std::size_t>(n));
            if (width > old_width)
                ++counters_.groups_up;
            else
                ++counters_.groups_down;
            counters_.host_bytes_read += n * static_cast<std::int64_t>(sizeof(float));
        }
        r.fit_arena(stream_);
        detail::reserve_scratch(on_device, staging.bytes(), stream_);
        const std::size_t staged =
            static_cast<std::size_t>(reinterpret_cast<unsigned char*>(widths + count) - staging.as<unsigned char>());
        QAQ_CUDA_CHECK(cudaMemcpyAsync(on_device.data(), staging.data(), staged, cudaMemcpyHostToDevice, stream_));
        const auto* device_targets = on_device.as<const std::int64_t>();
        const auto* device_slots = reinterpret_cast<const std::uint64_t*>(device_targets + count);
        const auto* device_rows = reinterpret_cast<const float*>(device_slots + count);
        const auto* device_widths = reinterpret_cast<const std::uint8_t*>(device_rows + count * n);

        // The same data gives the same outliers and statistics: only width, parameters and codes change.
        rebalance_scratch_.reserve(count, n, max_bits, r.parameter_bytes, r.value_bytes, 0, stream_);
        rebalance_scratch_.quantize(detail::listed_widths{device_widths}, false, r.ratio, r.codec, device_rows, count,
                                    n, group_tokens{count, 1}, nullptr,
                                    rebalance_scratch_.out(rebalance_diagnostics_device() + i, false), stream_,
                                    "re-quantizing changed groups");
        detail::commit_plan plan;
        plan.count = count;
        plan.targets = device_targets;
        plan.slot_offsets = device_slots;
        plan.group_size = n;
        plan.parameter_bytes = r.parameter_bytes;
        plan.value_bytes = r.value_bytes;
        detail::commit_groups_kernel<128>
            <<<detail::grid_for(count), 128, 0, stream_>>>(rebalance_scratch_.staged(false), plan, r.arrays());
        QAQ_CUDA_CHECK(cudaGetLastError());
    }

    void prefill_role(detail::device_cache_role& r, const kv_view<const float>& data,
                      const attention_view<const float>& attention) {
        const std::int64_t T = data.shape.tokens, H = shape_.kv_heads, D = shape_.head_dim;
        const std::int64_t G = r.groups_per_token, S = r.groups_per_head, count = T * G, n = r.group_size;
        std::vector<float> predicted;
        if (r.needs_attention) predicted = predicted_attention(attention, data.shape, r.window);
        std::vector<float> rows(static_cast<std::size_t>(T * H * D)), per_group;
        if (r.needs_attention) per_group.resize(static_cast<std::size_t>(count));
        const device_policies policies = make_device_policies(r.config, T);
        device_buffer device_rows(sizeof(float) * rows.size()), device_predicted, device_slots;
        for (std::int64_t l = 0; l < shape_.layers; ++l) {
            for (std::int64_t t = 0; t < T; ++t) {
                for (std::int64_t h = 0; h < H; ++h) {
                    for (std::int64_t d = 0; d < D; ++d)
                        rows[static_cast<std::size_t>((t * H + h) * D + d)] = data(l, 0, h, t, d);
                    if (r.needs_attention)
                        std::fill_n(
                            per_group.begin() + t * G + h * S, S,
                            predicted[static_cast<std::size_t>(predicted_attention_index(data.shape, 0, t, l, h))]);
                }
                std::memcpy(r.host_token(l, t), rows.data() + t * H * D,
                            sizeof(float) * static_cast<std::size_t>(H * D));
            }
            QAQ_CUDA_CHECK(cudaMemcpy(device_rows.data(), rows.data(), device_rows.bytes(), cudaMemcpyHostToDevice));
            if (r.needs_attention) device_predicted = device_buffer::from_host(per_group.data(), per_group.size());
            rebalance_scratch_.reserve(count, n, r.bits_max, r.parameter_bytes, r.value_bytes, count * n, stream_);
            rebalance_scratch_.quantize(
                policies.bits, policies.needs_attention, r.ratio, r.codec, device_rows.as<const float>(), count, n,
                group_tokens{T, G}, device_predicted.as<const float>(),
                rebalance_scratch_.out(&device_diagnostics()->quantize, true), stream_, "quantizing a prefill");
            std::vector<std::uint8_t> widths(static_cast<std::size_t>(count));
            std::uint64_t outliers = 0;
            QAQ_CUDA_CHECK(cudaMemcpyAsync(widths.data(), rebalance_scratch_.widths.data(), widths.size(),
                                           cudaMemcpyDeviceToHost, stream_));
            QAQ_CUDA_CHECK(cudaMemcpyAsync(&outliers, rebalance_scratch_.outlier_offsets.as<std::uint64_t>() + count,
                                           sizeof(outliers), cudaMemcpyDeviceToHost, stream_));
            QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
            std::vector<std::uint64_t> slots(static_cast<std::size_t>(count));
            for (std::int64_t j = 0; j < count; ++j)
                slots[static_cast<std::size_t>(j)] =
                    r.place_slot(l * r.layer_groups + j, widths[static_cast<std::size_t>(j)]);
            r.fit_arena(stream_);
            r.fit_outliers(l, static_cast<std::int64_t>(outliers), stream_);
            device_slots = device_buffer::from_host(slots.data(), slots.size());

            detail::commit_plan plan;
            plan.count = count;
            plan.first_group = l * r.layer_groups;
            plan.slot_offsets = device_slots.as<const std::uint64_t>();
            plan.group_size = n;
            plan.parameter_bytes = r.parameter_bytes;
            plan.value_bytes = r.value_bytes;
            plan.outliers = r.layer_outliers(l);
            plan.first_outlier_row = 0;
            detail::commit_groups_kernel<128>
                <<<detail::grid_for(count), 128, 0, stream_>>>(rebalance_scratch_.staged(true), plan, r.arrays());
            QAQ_CUDA_CHECK(cudaGetLastError());
            QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffers above are reused next layer
            r.outlier_bound[static_cast<std::size_t>(l)] = static_cast<std::int64_t>(outliers);
        }
    }

    // The last `window` prefill rows of every layer, through the observe kernel.
    void seed_window(const attention_view<const float>& attention, std::int64_t T) {
        const std::int64_t Hq = shape_.query_heads, R = attention.shape.rows;
        std::vector<float> row(static_cast<std::size_t>(Hq * T));
        device_buffer device_row(sizeof(float) * row.size());
        for (std::int64_t l = 0; l < shape_.layers; ++l)
            for (std::int64_t r = std::max<std::int64_t>(0, R - window_); r < R; ++r) {
                for (std::int64_t q = 0; q < Hq; ++q)
                    for (std::int64_t t = 0; t < T; ++t)
                        row[static_cast<std::size_t>(q * T + t)] = attention(l, 0, q, r, t);
                QAQ_CUDA_CHECK(cudaMemcpy(device_row.data(), row.data(), device_row.bytes(), cudaMemcpyHostToDevice));
                observe_row(l, device_row.as<const float>(), T);
                QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
            }
    }

    void refresh_outlier_totals() {
        synchronize();
        detail::device_cache_role* roles[2] = {&keys_, &values_};
        for (int i = 0; i < 2; ++i) {
            std::vector<std::uint64_t> totals(static_cast<std::size_t>(shape_.layers));
            for (std::int64_t l = 0; l < shape_.layers; ++l)
                QAQ_CUDA_CHECK(cudaMemcpy(&totals[static_cast<std::size_t>(l)],
                                          roles[i]->outlier_offsets.as<std::uint64_t>() +
                                              l * (roles[i]->layer_groups + 1) +
                                              steps_.tokens(l) * roles[i]->groups_per_token,
                                          sizeof(std::uint64_t), cudaMemcpyDeviceToHost));
            for (std::int64_t l = 0; l < shape_.layers; ++l)
                outliers_[static_cast<std::size_t>(i)][static_cast<std::size_t>(l)] =
                    static_cast<std::int64_t>(totals[static_cast<std::size_t>(l)]);
        }
    }

    // Back to empty after a refused prefill.
    void reset() {
        (void)cudaStreamSynchronize(stream_);
        steps_.set_all(0);
        std::fill(observed_.begin(), observed_.end(), 0);
        keys_.clear(stream_);
        values_.clear(stream_);
        QAQ_CUDA_CHECK(cudaMemsetAsync(window_lengths_.data(), 0, window_lengths_.bytes(), stream_));
        QAQ_CUDA_CHECK(cudaMemsetAsync(diagnostics_.data(), 0, diagnostics_.bytes(), stream_));
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
        failed_.clear();
    }

    cache::step_tracker steps_;  // token counts and argument checks (shared with the host cache)
    kv_cache_shape shape_;
    kv_cache_options options_;
    cudaStream_t stream_ = nullptr;
    detail::device_cache_role keys_, values_;
    int window_ = 1;
    device_buffer window_rows_, window_lengths_, diagnostics_, readback_device_, attend_workspace_,
        rebalance_diagnostics_, requantize_device_[2];
    pinned_buffer readback_, requantize_staging_[2], changed_items_[2];  // [role]
    width_scan_buffers scans_[2];
    detail::group_scratch rebalance_scratch_;
    std::vector<std::int64_t> observed_;
    std::vector<std::vector<std::int64_t>> outliers_;  // [role][layer], as of the last check
    rebalance_counters counters_;
    std::string failed_;
};

}  // namespace cuda
QAQ_NAMESPACE_END
