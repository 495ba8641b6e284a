#pragma once
// A key/value-cache specification string (`--kv SPEC` of the example
// programs) parsed into a pair of qaq::quantizer_config (keys, values).
//
// Grammar (whitespace is not allowed; names are case-sensitive):
//
//   spec    := "fp32"                      exact float32 cache (no qaq cache)
//            | cache                       the same kind for keys and values
//            | "k:" cache "/" "v:" cache   one kind per role (either order)
//   cache   := kind [ ":" option { "," option } ]
//   kind    := "fp16"      no quantization: qaq's FP16 pass-through (16 bits)
//            | "uniform"   fixed bits for every group
//            | "qaq"       attention-aware bits: values from the attention
//                          window, keys from the query norm (QAQ)
//   option  := name "=" value | flag | bits
//
// Options (uniform and qaq):
//   bits=B          uniform: the width of every group, 0..16 (also just "uniform:4")
//   bits=MIN-MAX    qaq: the clamp of the bit formula, 0..16 (default 2-8)
//   eps=E           qaq: target error of the bit formulas (default: keys 0.001,
//                   values 0.1; the key bound grows with log(eps), so keys need
//                   a much smaller eps: on SmolLM2 eps=0.1 leaves keys at 2 bits)
//   window=N        qaq: attention window, last N rows (default 5)
//   q_norm=Q|auto   qaq keys: squared query norm of the key formula; "auto"
//                   (the default) asks the program to calibrate it (qaq-llama:
//                   the 90th percentile of |q|^2 / head_dim over a prefill)
//   outliers=A      fraction kept exact, in [0, 1) (default: uniform 0, qaq 0.01)
//   codec=zero-point|mean-centred|normal
//                   zero-point (default): min-based zero point, 2^B - 1 steps;
//                   mean-centred: the reference codec of the original QAQ code;
//                   normal: normal quantiles (fixed bits only)
//   group=G         sub-head groups of G dims (G divides head_dim); default:
//                   one group per head
//   symmetric       symmetric range (centre 0); default asymmetric
//   precision=fp16|fp32   stored parameters and outliers (default fp16)
//
// In the shared form (no "k:"/"v:") an option applies to both roles, and an
// option prefixed "key_" or "value_" applies to one: e.g.
//   qaq:key_eps=0.1,value_eps=0.2,bits=2-8,window=5,outliers=0.01
//   uniform:key_bits=8,value_bits=4
// Per role:   k:uniform:8/v:qaq:eps=0.2     k:fp16/v:uniform:2
//
// Errors are qaq::error naming the bad token and listing what is accepted.

#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "qaq/error.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/types.hpp"

namespace qaq::examples {

struct kv_spec {
    /// The exact float32 baseline: no qaq cache at all ("fp32").
    bool exact = false;
    qaq::quantizer_config keys, values;
    /// The key formula's q_norm is to be calibrated by the program (q_norm=auto).
    bool key_q_norm_auto = false;
    /// The text it was parsed from.
    std::string text;
};

namespace detail {

inline std::vector<std::string> split(std::string_view s, char sep) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = s.find(sep, start);
        out.emplace_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    return out;
}

inline const char* accepted_kinds() { return "fp32 (whole cache only), fp16, uniform, qaq"; }
inline const char* accepted_options() {
    return "bits=B (uniform) or bits=MIN-MAX (qaq), eps=E, window=N, q_norm=Q|auto, outliers=A, "
           "codec=zero-point|mean-centred|normal, group=G, symmetric, precision=fp16|fp32; in the shared form also "
           "key_<option> and value_<option>";
}

template <class... Parts>
[[noreturn]] void fail(std::string_view spec, const Parts&... parts) {
    throw qaq::error(qaq::detail::concat("--kv '", spec, "': ", parts...));
}

inline double parse_number(std::string_view spec, const std::string& token, const std::string& text) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
        fail(spec, "bad token '", token, "': '", text, "' is not a number");
    return v;
}

inline int parse_int(std::string_view spec, const std::string& token, const std::string& text) {
    const double v = parse_number(spec, token, text);
    if (v != std::floor(v) || v < -1e9 || v > 1e9) fail(spec, "bad token '", token, "': '", text, "' is not an integer");
    return static_cast<int>(v);
}

enum class kind { fp16, uniform, qaq };

struct role_state {
    qaq::quantizer_config config;
    bool q_norm_auto = false;
    bool bits_set = false;
};

inline void apply_option(std::string_view spec, kind k, role_state& s, const std::string& token,
                         const std::string& name, const std::optional<std::string>& value) {
    qaq::quantizer_config& c = s.config;
    const bool key = c.role == qaq::cache_role::key;
    const auto need_value = [&]() -> const std::string& {
        if (!value || value->empty()) fail(spec, "bad token '", token, "': option '", name, "' needs a value (", name, "=...)");
        return *value;
    };
    if (name == "bits") {
        const std::string& v = need_value();
        if (k == kind::uniform) {
            c.fixed_bits = parse_int(spec, token, v);
            if (c.fixed_bits < 0 || c.fixed_bits > qaq::max_bits)
                fail(spec, "bad token '", token, "': bits must be 0..", qaq::max_bits);
        } else {
            const std::size_t dash = v.find('-');
            if (dash == std::string::npos)
                fail(spec, "bad token '", token, "': qaq takes a bit range bits=MIN-MAX (e.g. bits=2-8)");
            c.bits_min = parse_int(spec, token, v.substr(0, dash));
            c.bits_max = parse_int(spec, token, v.substr(dash + 1));
            if (c.bits_min < 0 || c.bits_max > qaq::max_bits || c.bits_min > c.bits_max)
                fail(spec, "bad token '", token, "': expected 0 <= MIN <= MAX <= ", qaq::max_bits);
        }
        s.bits_set = true;
    } else if (name == "eps" && k == kind::qaq) {
        c.target_error = parse_number(spec, token, need_value());
        if (!(c.target_error > 0.0)) fail(spec, "bad token '", token, "': eps must be positive");
    } else if (name == "window" && k == kind::qaq) {
        c.window = parse_int(spec, token, need_value());
        if (c.window < 1) fail(spec, "bad token '", token, "': window must be >= 1");
    } else if (name == "q_norm" && k == kind::qaq) {
        if (!key) fail(spec, "bad token '", token, "': q_norm belongs to the key cache (use it in k:... or as key_q_norm)");
        const std::string& v = need_value();
        if (v == "auto") {
            s.q_norm_auto = true;
        } else {
            c.q_norm = parse_number(spec, token, v);
            s.q_norm_auto = false;
            if (!(c.q_norm > 0.0)) fail(spec, "bad token '", token, "': q_norm must be positive");
        }
    } else if (name == "outliers") {
        c.outlier_ratio = parse_number(spec, token, need_value());
        if (c.outlier_ratio < 0.0 || c.outlier_ratio >= 1.0)
            fail(spec, "bad token '", token, "': outliers must be in [0, 1)");
    } else if (name == "codec") {
        const std::string& v = need_value();
        if (v == "zero-point") c.codec = qaq::codec_kind::uniform_zero_point;
        else if (v == "mean-centred" || v == "mean-centered") c.codec = qaq::codec_kind::uniform_mean_centred;
        else if (v == "normal" && k == kind::uniform) c.codec = qaq::codec_kind::normal;
        else
            fail(spec, "bad token '", token, "': codec '", v, "'; accepted: zero-point, mean-centred",
                 k == kind::uniform ? ", normal" : " (normal needs fixed bits: uniform)");
    } else if (name == "group") {
        c.group_dims = parse_int(spec, token, need_value());
        if (c.group_dims < 1) fail(spec, "bad token '", token, "': group must be >= 1");
        c.level = qaq::group_level::sub_head;
    } else if (name == "symmetric") {
        if (value && *value != "true" && *value != "false")
            fail(spec, "bad token '", token, "': symmetric takes no value (or true/false)");
        c.symmetric = !value || *value == "true";
    } else if (name == "precision") {
        const std::string& v = need_value();
        if (v == "fp16") c.precision = qaq::storage_precision::fp16;
        else if (v == "fp32") c.precision = qaq::storage_precision::fp32;
        else fail(spec, "bad token '", token, "': precision '", v, "'; accepted: fp16, fp32");
    } else {
        fail(spec, "bad token '", token, "': unknown option '", name, "' for ",
             k == kind::uniform ? "uniform" : "qaq", "; accepted: ", accepted_options());
    }
}

inline kind parse_kind(std::string_view spec, const std::string& text) {
    if (text == "fp16") return kind::fp16;
    if (text == "uniform") return kind::uniform;
    if (text == "qaq") return kind::qaq;
    if (text == "fp32") fail(spec, "bad token 'fp32': fp32 is the whole-cache float32 baseline (--kv fp32); per role use fp16 or uniform:16");
    fail(spec, "bad token '", text, "': unknown cache kind; accepted: ", accepted_kinds());
}

inline role_state initial_state(kind k, qaq::cache_role role) {
    role_state s;
    qaq::quantizer_config& c = s.config;
    c.role = role;
    c.enabled = k != kind::fp16;
    c.level = qaq::group_level::head;
    c.codec = qaq::codec_kind::uniform_zero_point;
    c.precision = qaq::storage_precision::fp16;
    if (k == kind::qaq) {
        c.bits = role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention;
        c.bits_min = 2;
        c.bits_max = 8;
        c.window = 5;
        c.target_error = role == qaq::cache_role::key ? 0.001 : 0.1;
        c.outlier_ratio = 0.01;
        s.q_norm_auto = role == qaq::cache_role::key;
    } else {
        c.bits = qaq::bits_kind::fixed;
    }
    return s;
}

// Parses "kind[:options]" for one role (shared = false) or both (shared = true).
inline void parse_cache(std::string_view spec, const std::string& text, bool shared, role_state* key, role_state* value) {
    const std::size_t colon = text.find(':');
    const std::string kind_text = text.substr(0, colon);
    const kind k = parse_kind(spec, kind_text);
    if (key) *key = initial_state(k, qaq::cache_role::key);
    if (value) *value = initial_state(k, qaq::cache_role::value);
    if (colon == std::string::npos) {
        if (k == kind::uniform) fail(spec, "bad token 'uniform': uniform needs a bit width, e.g. uniform:4 or uniform:bits=4");
        return;
    }
    if (k == kind::fp16) fail(spec, "bad token '", text, "': fp16 takes no options");
    const std::vector<std::string> options = split(std::string_view(text).substr(colon + 1), ',');
    for (std::size_t i = 0; i < options.size(); ++i) {
        const std::string& token = options[i];
        if (token.empty()) fail(spec, "empty option in '", text, "'; accepted: ", accepted_options());
        const std::size_t eq = token.find('=');
        std::string name = token.substr(0, eq);
        std::optional<std::string> value_text;
        if (eq != std::string::npos) value_text = token.substr(eq + 1);
        // "uniform:4": a bare bit width.
        if (!value_text && k == kind::uniform && name.find_first_not_of("0123456789") == std::string::npos) {
            value_text = name;
            name = "bits";
        }
        role_state* targets[2] = {key, value};
        if (shared && name.rfind("key_", 0) == 0) {
            name = name.substr(4);
            targets[1] = nullptr;
        } else if (shared && name.rfind("value_", 0) == 0) {
            name = name.substr(6);
            targets[0] = nullptr;
        } else if (!shared && (name.rfind("key_", 0) == 0 || name.rfind("value_", 0) == 0)) {
            fail(spec, "bad token '", token, "': key_/value_ prefixes belong to the shared form; inside k:/v: write the plain option");
        }
        if (shared && name == "q_norm") targets[1] = nullptr;  // the key formula's parameter
        for (role_state* t : targets)
            if (t) apply_option(spec, k, *t, token, name, value_text);
    }
}

inline void finish(std::string_view spec, role_state& s) {
    if (s.config.enabled && s.config.bits == qaq::bits_kind::fixed && !s.bits_set)
        fail(spec, "the ", qaq::to_string(s.config.role), " cache is uniform but has no bits; e.g. uniform:4");
    try {
        s.config.validate();
    } catch (const qaq::error& e) {
        fail(spec, "the ", qaq::to_string(s.config.role), " cache: ", e.what());
    }
}

}  // namespace detail

/// Parses a --kv specification (grammar above).
inline kv_spec parse_kv_spec(std::string_view text) {
    kv_spec out;
    out.text = std::string(text);
    if (text.empty()) detail::fail(text, "empty specification; accepted kinds: ", detail::accepted_kinds());
    if (text == "fp32") {
        out.exact = true;
        out.keys.role = qaq::cache_role::key;
        out.keys.enabled = out.values.enabled = false;
        return out;
    }
    detail::role_state key, value;
    if (text.find('/') != std::string_view::npos) {
        const std::vector<std::string> parts = detail::split(text, '/');
        if (parts.size() != 2)
            detail::fail(text, "expected exactly two role specifications 'k:...' and 'v:...' separated by one '/'");
        bool have_key = false, have_value = false;
        for (const std::string& part : parts) {
            if (part.rfind("k:", 0) == 0 && !have_key) {
                detail::parse_cache(text, part.substr(2), false, &key, nullptr);
                have_key = true;
            } else if (part.rfind("v:", 0) == 0 && !have_value) {
                detail::parse_cache(text, part.substr(2), false, nullptr, &value);
                have_value = true;
            } else {
                detail::fail(text, "bad token '", part, "': expected 'k:<cache>' and 'v:<cache>' (one each)");
            }
        }
    } else {
        if (text.rfind("k:", 0) == 0 || text.rfind("v:", 0) == 0)
            detail::fail(text, "a per-role specification needs both roles: 'k:<cache>/v:<cache>'");
        detail::parse_cache(text, std::string(text), true, &key, &value);
    }
    detail::finish(text, key);
    detail::finish(text, value);
    out.keys = key.config;
    out.values = value.config;
    out.key_q_norm_auto = key.config.enabled && key.config.bits == qaq::bits_kind::key_query_norm && key.q_norm_auto;
    return out;
}

/// A readable, complete description of one role's configuration.
inline std::string describe(const qaq::quantizer_config& c) {
    if (!c.enabled) return "fp16";
    std::ostringstream s;
    s.precision(6);
    if (c.bits == qaq::bits_kind::fixed) s << "uniform bits=" << c.fixed_bits;
    else s << "qaq bits=" << c.bits_min << "-" << c.bits_max << " eps=" << c.target_error << " window=" << c.window;
    if (c.bits == qaq::bits_kind::key_query_norm) s << " q_norm=" << c.q_norm;
    s << " outliers=" << c.outlier_ratio << " codec="
      << (c.codec == qaq::codec_kind::uniform_zero_point   ? "zero-point"
          : c.codec == qaq::codec_kind::uniform_mean_centred ? "mean-centred"
                                                             : "normal");
    if (c.level == qaq::group_level::sub_head) s << " group=" << c.group_dims;
    if (c.symmetric) s << " symmetric";
    s << " precision=" << (c.precision == qaq::storage_precision::fp16 ? "fp16" : "fp32");
    return s.str();
}

inline std::string describe(const kv_spec& spec) {
    if (spec.exact) return "fp32 (exact float32 cache)";
    return "keys: " + describe(spec.keys) + (spec.key_q_norm_auto ? " (q_norm=auto)" : "") +
           "; values: " + describe(spec.values);
}

/// The grammar in a few lines, for --help.
inline const char* kv_spec_help() {
    return "KV cache: fp32 | fp16 | uniform:B[,opts] | qaq[:opts] | k:<cache>/v:<cache>.\n"
           "  qaq options: eps=E bits=MIN-MAX window=N q_norm=Q|auto outliers=A; all: codec=zero-point|mean-centred"
           "|normal group=G symmetric precision=fp16|fp32;\n"
           "  key_/value_ prefixes set one role, e.g. qaq:key_eps=0.001,value_eps=0.1 or uniform:key_bits=8,value_bits=4";
}

}  // namespace qaq::examples
