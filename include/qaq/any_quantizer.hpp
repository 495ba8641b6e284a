#pragma once
// The one place where a runtime quantizer_config (from a command line or a
// config file) becomes a compiled policy combination. Everything that starts
// from runtime values goes through `visit_quantizer`.

#include <string>
#include <utility>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/packed_tensor.hpp"
#include "qaq/policy/bits/fixed.hpp"
#include "qaq/policy/bits/key_query_norm.hpp"
#include "qaq/policy/bits/value_attention.hpp"
#include "qaq/policy/outliers/none.hpp"
#include "qaq/policy/outliers/quantile.hpp"
#include "qaq/policy/storage/fp16_passthrough.hpp"
#include "qaq/policy/storage/normal_quantile.hpp"
#include "qaq/policy/storage/uniform_mean_centred.hpp"
#include "qaq/policy/storage/uniform_zero_point.hpp"
#include "qaq/quantizer.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/reference_accounting.hpp"

QAQ_NAMESPACE_BEGIN

namespace detail {
template <class Bits, class Outliers, class F>
decltype(auto) visit_with_storage(const quantizer_config& c, Bits bits, Outliers outliers, F&& f) {
    auto make = [&](auto storage) -> decltype(auto) {
        using storage_t = decltype(storage);
        if constexpr (Bits::adaptive && !storage_t::supports_adaptive_bits) {
            throw error(std::string("codec '") + storage_t::name +
                        "' has no error formula for attention-aware bits; use fixed bits or a uniform codec");
            // Unreachable; gives the lambda the same return type as the valid branch.
            return f(quantizer<bits::fixed, Outliers, storage::uniform_zero_point>(
                bits::fixed(0), outliers, storage::uniform_zero_point{}, c.level, c.group_dims));
        } else {
            return f(quantizer<Bits, Outliers, storage_t>(bits, outliers, storage, c.level, c.group_dims));
        }
    };
    switch (c.codec) {
        case codec_kind::uniform_mean_centred: return make(storage::uniform_mean_centred{c.symmetric, c.precision});
        case codec_kind::uniform_zero_point: return make(storage::uniform_zero_point{c.symmetric, c.precision});
        case codec_kind::normal: return make(storage::normal_quantile{c.symmetric, c.precision});
    }
    throw error("unknown codec_kind " + std::to_string(static_cast<int>(c.codec)) + "; add it to visit_quantizer");
}

template <class Bits, class F>
decltype(auto) visit_with_outliers(const quantizer_config& c, Bits bits, F&& f) {
    if (c.outlier_ratio > 0.0) return visit_with_storage(c, bits, outliers::quantile(c.outlier_ratio), f);
    return visit_with_storage(c, bits, outliers::none{}, f);
}
}  // namespace detail

/// Builds the compiled quantizer that `config` describes and calls `f(quantizer)`.
/// All combinations share f's return type. Throws qaq::error for an invalid config.
template <class F>
decltype(auto) visit_quantizer(const quantizer_config& c, F&& f) {
    c.validate();
    if (!c.enabled)  // "no-quantization": an FP16 cache, 16 bits per value
        return f(quantizer<bits::fixed, outliers::none, storage::fp16_passthrough>(bits::fixed(16), outliers::none{},
                                                                                   storage::fp16_passthrough{},
                                                                                   c.level, c.group_dims));
    switch (c.bits) {
        case bits_kind::fixed: return detail::visit_with_outliers(c, bits::fixed(c.fixed_bits), f);
        case bits_kind::value_attention:
            return detail::visit_with_outliers(
                c, bits::value_attention(c.window, c.target_error, c.bits_min, c.bits_max), f);
        case bits_kind::key_query_norm:
            return detail::visit_with_outliers(
                c, bits::key_query_norm(c.q_norm, c.target_error, c.bits_min, c.bits_max, c.window), f);
    }
    throw error("unknown bits_kind " + std::to_string(static_cast<int>(c.bits)) + "; add it to visit_quantizer");
}

/// A quantizer chosen at run time; each call dispatches once to the compiled combination.
class any_quantizer {
public:
    explicit any_quantizer(quantizer_config config) : config_(std::move(config)) {
        visit_quantizer(config_, [](const auto&) {});  // validate now, not on first use
    }

    const quantizer_config& config() const noexcept { return config_; }

    packed_tensor quantize(const kv_view<const float>& cache, const attention_view<const float>& attention = {}) const {
        return visit_quantizer(config_, [&](const auto& q) { return q.quantize(cache, attention); });
    }
    void dequantize(const packed_tensor& packed, const kv_view<float>& out) const {
        visit_quantizer(config_, [&](const auto& q) { q.dequantize(packed, out); });
    }
    reference_accounting accounting(const packed_tensor& packed) const {
        return reference_accounting::of(packed.widths, config_.enabled ? config_.outlier_ratio : 0.0,
                                        config_.reference_parameter_count(), packed.layout.group_size());
    }

private:
    quantizer_config config_;
};

QAQ_NAMESPACE_END
