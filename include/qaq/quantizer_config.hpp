#pragma once
// The runtime description of one quantizer: what a command line or a config
// file sets. `any_quantizer` maps it to a compiled policy combination; the
// scalar `reference::quantize` reads it directly.

#include <cmath>
#include <string>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN

struct quantizer_config {
    cache_role role = cache_role::value;
    /// false: no quantization, the cache is stored as FP16 ("no-quantization", 16 bits).
    bool enabled = true;
    group_level level = group_level::head;
    /// Dims per group at sub_head level; must divide head_dim.
    int group_dims = 0;
    /// Symmetric: centre fixed at zero, range 2*max|x|. Asymmetric: centre and range from data.
    bool symmetric = false;
    codec_kind codec = codec_kind::uniform_mean_centred;
    /// Fraction of each group kept exact (both tails together), in [0, 1).
    double outlier_ratio = 0.0;

    bits_kind bits = bits_kind::fixed;
    /// Width of every group with bits_kind::fixed.
    int fixed_bits = 4;
    /// Attention window n (last_n_attentions): rows whose maximum predicts importance,
    /// and the number of trailing tokens (n - 1) that keep bits_max for lack of history.
    int window = 1;
    /// Target error eps of the attention-aware formulas.
    double target_error = 0.1;
    int bits_min = 0;
    int bits_max = 8;
    /// Squared query norm hyper-parameter of the key formula.
    double q_norm = 1.0;

    storage_precision precision = storage_precision::fp16;

    bool attention_aware() const noexcept { return bits != bits_kind::fixed; }

    /// Throws qaq::error naming the first parameter out of range.
    void validate() const {
        if (!enabled) return;
        QAQ_CHECK(outlier_ratio >= 0.0 && outlier_ratio < 1.0, "outlier ratio is ", outlier_ratio,
                  ", expected a value in [0, 1)");
        if (level == group_level::sub_head)
            QAQ_CHECK(group_dims >= 1, "sub_head level needs group_dims >= 1, got ", group_dims);
        switch (bits) {
            case bits_kind::fixed:
                QAQ_CHECK(fixed_bits >= 0 && fixed_bits <= max_bits, "bits is ", fixed_bits,
                          ", expected 0..", max_bits);
                break;
            case bits_kind::key_query_norm:
                QAQ_CHECK(std::isfinite(q_norm) && q_norm > 0.0, "q_norm is ", q_norm,
                          ", expected a positive finite number");
                [[fallthrough]];
            case bits_kind::value_attention:
                QAQ_CHECK(window >= 1, "attention window (last_n) is ", window, ", expected >= 1");
                QAQ_CHECK(std::isfinite(target_error) && target_error > 0.0, "target error is ",
                          target_error, ", expected a positive finite number");
                QAQ_CHECK(bits_min >= 0 && bits_min <= max_bits, "bits_min is ", bits_min, ", expected 0..",
                          max_bits);
                QAQ_CHECK(bits_max >= bits_min && bits_max <= max_bits, "bits_max is ", bits_max,
                          ", expected bits_min (", bits_min, ")..", max_bits);
                break;
        }
        if (bits == bits_kind::value_attention)
            QAQ_CHECK(role == cache_role::value,
                      "value_attention bits serve the value cache; keys use key_query_norm");
        if (bits == bits_kind::key_query_norm)
            QAQ_CHECK(role == cache_role::key,
                      "key_query_norm bits serve the key cache; values use value_attention");
    }

    /// Number of stored 16-bit parameters per group in the reference accounting
    /// (none for a disabled quantizer: an FP16 cache).
    int reference_parameter_count() const noexcept { return !enabled ? 0 : (symmetric ? 1 : 2); }
};

QAQ_NAMESPACE_END
