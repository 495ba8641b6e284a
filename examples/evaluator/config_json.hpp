#pragma once
// quantizer_config <-> JSON.
//
// canonical_json(c): the form used in result-cache keys. Only the fields the
// configuration actually uses are present, so two configs that quantize
// identically get the same key:
//   always             enabled, role
//   enabled            level, symmetric, codec, outlier_ratio, bits, precision
//   level sub_head     group_dims
//   bits fixed         fixed_bits
//   bits attention     window, target_error, bits_min, bits_max (+ q_norm for keys)
// A disabled quantizer (an FP16 cache) is {"enabled": false, "role": ...}.
// nlohmann::json keeps object keys sorted, so dump() is canonical.
//
// from_json(j, role): the user form in config files. Either a string
// ("fp16" / "none": no quantization) or an object with any of the fields
// above (role comes from the position: key or value). Shorthands:
// "bits": <integer> means fixed bits; "bits": "attention" (or "qaq") picks the
// role's attention-aware formula (key_query_norm / value_attention).
// Unknown fields and wrong types are errors that name the field.

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "qaq/error.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/types.hpp"

namespace qaq::eval {

inline nlohmann::json canonical_json(const qaq::quantizer_config& c) {
    nlohmann::json j;
    j["enabled"] = c.enabled;
    j["role"] = qaq::to_string(c.role);
    if (!c.enabled) return j;
    j["level"] = qaq::to_string(c.level);
    if (c.level == qaq::group_level::sub_head) j["group_dims"] = c.group_dims;
    j["symmetric"] = c.symmetric;
    j["codec"] = qaq::to_string(c.codec);
    j["outlier_ratio"] = c.outlier_ratio;
    j["bits"] = qaq::to_string(c.bits);
    if (c.bits == qaq::bits_kind::fixed) {
        j["fixed_bits"] = c.fixed_bits;
    } else {
        j["window"] = c.window;
        j["target_error"] = c.target_error;
        j["bits_min"] = c.bits_min;
        j["bits_max"] = c.bits_max;
        if (c.bits == qaq::bits_kind::key_query_norm) j["q_norm"] = c.q_norm;
    }
    j["precision"] = c.precision == qaq::storage_precision::fp16 ? "fp16" : "fp32";
    return j;
}

namespace detail {

inline std::string json_place(const std::string& place, const char* field) { return place + "." + field; }

inline bool get_bool(const nlohmann::json& v, const std::string& place) {
    QAQ_CHECK(v.is_boolean(), place, ": expected true or false, got ", v.type_name(), " ", v.dump());
    return v.get<bool>();
}
inline int get_int(const nlohmann::json& v, const std::string& place) {
    QAQ_CHECK(v.is_number_integer(), place, ": expected an integer, got ", v.type_name(), " ", v.dump());
    // get<int> would wrap a larger integer (4294967300 -> 4) silently.
    QAQ_CHECK(v.is_number_unsigned() ? v.get<std::uint64_t>() <= 2147483647u
                                     : v.get<std::int64_t>() >= -2147483647 - 1 && v.get<std::int64_t>() <= 2147483647,
              place, ": ", v.dump(), " is out of range (expected a 32-bit integer)");
    return v.get<int>();
}
inline double get_number(const nlohmann::json& v, const std::string& place) {
    QAQ_CHECK(v.is_number(), place, ": expected a number, got ", v.type_name(), " ", v.dump());
    return v.get<double>();
}
inline std::string get_string(const nlohmann::json& v, const std::string& place) {
    QAQ_CHECK(v.is_string(), place, ": expected a string, got ", v.type_name(), " ", v.dump());
    return v.get<std::string>();
}

}  // namespace detail

inline qaq::group_level parse_level(const std::string& s, const std::string& place) {
    if (s == "token") return qaq::group_level::token;
    if (s == "layer") return qaq::group_level::layer;
    if (s == "head") return qaq::group_level::head;
    if (s == "sub_head") return qaq::group_level::sub_head;
    throw qaq::error(place + ": level \"" + s + "\"; expected token, layer, head or sub_head");
}

inline qaq::codec_kind parse_codec(const std::string& s, const std::string& place) {
    if (s == "uniform_mean_centred" || s == "mean-centred") return qaq::codec_kind::uniform_mean_centred;
    if (s == "uniform_zero_point" || s == "zero-point") return qaq::codec_kind::uniform_zero_point;
    if (s == "normal") return qaq::codec_kind::normal;
    throw qaq::error(place + ": codec \"" + s + "\"; expected uniform_mean_centred, uniform_zero_point or normal");
}

inline const char* config_fields_help() {
    return "enabled, level, group_dims, symmetric, codec, outlier_ratio, bits, fixed_bits, window, target_error, "
           "bits_min, bits_max, q_norm, precision";
}

/// Reads the user form (see the header comment). `place` names it in errors.
inline qaq::quantizer_config config_from_json(const nlohmann::json& j, qaq::cache_role role, const std::string& place) {
    qaq::quantizer_config c;
    c.role = role;
    if (j.is_string()) {
        const std::string s = j.get<std::string>();
        QAQ_CHECK(s == "fp16" || s == "none", place, ": \"", s, "\"; expected \"fp16\" (no quantization) or an object with ",
                  config_fields_help());
        c.enabled = false;
        return c;
    }
    QAQ_CHECK(j.is_object(), place, ": expected a quantizer object or \"fp16\", got ", j.type_name());
    using namespace detail;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& k = it.key();
        const nlohmann::json& v = it.value();
        const std::string p = place + "." + k;
        if (k == "enabled") c.enabled = get_bool(v, p);
        else if (k == "role") {
            const std::string r = get_string(v, p);
            QAQ_CHECK(r == qaq::to_string(role), p, ": \"", r, "\" in the ", qaq::to_string(role), " position");
        } else if (k == "level") c.level = parse_level(get_string(v, p), p);
        else if (k == "group_dims") c.group_dims = get_int(v, p);
        else if (k == "symmetric") c.symmetric = get_bool(v, p);
        else if (k == "codec") c.codec = parse_codec(get_string(v, p), p);
        else if (k == "outlier_ratio") c.outlier_ratio = get_number(v, p);
        else if (k == "bits") {
            if (v.is_number_integer()) {
                c.bits = qaq::bits_kind::fixed;
                c.fixed_bits = get_int(v, p);
            } else {
                const std::string b = get_string(v, p);
                if (b == "fixed") c.bits = qaq::bits_kind::fixed;
                else if (b == "value_attention") c.bits = qaq::bits_kind::value_attention;
                else if (b == "key_query_norm") c.bits = qaq::bits_kind::key_query_norm;
                else if (b == "attention" || b == "qaq")
                    c.bits = role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention;
                else
                    throw qaq::error(p + ": \"" + b + "\"; expected an integer (fixed bits), fixed, attention, "
                                     "value_attention or key_query_norm");
            }
        } else if (k == "fixed_bits") c.fixed_bits = get_int(v, p);
        else if (k == "window") c.window = get_int(v, p);
        else if (k == "target_error") c.target_error = get_number(v, p);
        else if (k == "bits_min") c.bits_min = get_int(v, p);
        else if (k == "bits_max") c.bits_max = get_int(v, p);
        else if (k == "q_norm") c.q_norm = get_number(v, p);
        else if (k == "precision") {
            const std::string s = get_string(v, p);
            QAQ_CHECK(s == "fp16" || s == "fp32", p, ": \"", s, "\"; expected fp16 or fp32");
            c.precision = s == "fp16" ? qaq::storage_precision::fp16 : qaq::storage_precision::fp32;
        } else {
            throw qaq::error(p + ": unknown field; expected one of " + config_fields_help());
        }
    }
    try {
        c.validate();
    } catch (const qaq::error& e) {
        throw qaq::error(place + ": " + std::string(e.what()).substr(5));
    }
    return c;
}

inline std::string format_number(double x) {
    std::ostringstream s;
    s.precision(6);
    s << x;
    return s.str();
}

/// A short human label: "fp16", "4b", "4b sym g32", "e=0.1 w5 o1%", "e=0.3 w5 b2-4
/// zp o1%" (codec shown unless mean-centred, bit range unless 0-8).
inline std::string short_label(const qaq::quantizer_config& c) {
    if (!c.enabled) return "fp16";
    std::string s;
    if (c.bits == qaq::bits_kind::fixed) s = std::to_string(c.fixed_bits) + "b";
    else {
        s = "e=" + format_number(c.target_error) + " w" + std::to_string(c.window);
        // The presets' range (0..8) is left implicit.
        if (c.bits_min != 0 || c.bits_max != 8) s += " b" + std::to_string(c.bits_min) + "-" + std::to_string(c.bits_max);
    }
    if (c.level == qaq::group_level::sub_head) s += " g" + std::to_string(c.group_dims);
    else if (c.level != qaq::group_level::head) s += std::string(" ") + qaq::to_string(c.level);
    if (c.symmetric) s += " sym";
    if (c.codec == qaq::codec_kind::uniform_zero_point) s += " zp";
    else if (c.codec == qaq::codec_kind::normal) s += " nq";
    if (c.outlier_ratio > 0) s += " o" + format_number(c.outlier_ratio * 100) + "%";
    return s;
}

}  // namespace qaq::eval
