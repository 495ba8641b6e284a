#pragma once
// Experiments from a JSON file, for qaq-eval users (qaq-eval run --config FILE):
//
// {
//   "name": "my-grid",                       required
//   "description": "...",
//   "datasets": ["piqa", "hellaswag"],       default ["piqa"]; --dataset overrides
//   "n": 200, "seed": 42,                    defaults 100 and 42; -n / --seed override
//   "x_axis": "compression_ratio",           or reference_compression_ratio, bits
//   "defaults": {"both": {...}, "key": {...}, "value": {...}},
//   "points": [
//     {"preset": "baselines"},                              every point of a preset
//     {"method": "fp16", "key": "fp16", "value": "fp16"},
//     {"method": "uniform", "both": {"fixed_bits": [2, 4, 8], "outlier_ratio": 0.01}},
//     {"method": "qaq", "key": {"bits": "attention", "target_error": [0.01, 0.1], "q_norm": 100},
//                       "value": {"bits": "attention", "target_error": [0.003, 0.03]}},
//     {"method": "spec", "kv": ["uniform:4", "k:uniform:8/v:qaq:eps=0.2"]}   qaq-llama --kv strings
//   ]
// }
//
// A quantizer is "fp16" or an object of quantizer_config fields (config_json.hpp).
// Layers are merged field by field in the order defaults.both, defaults.<role>,
// point.both, point.<role>; a string ("fp16") replaces everything before it.
// A field whose value is an array is an axis: the point expands to the cartesian
// product of its axes (an array under "both" is one axis shared by key and
// value). Labels are "K <key> / V <value>" unless "label" is given (then the
// axis values are appended). "approximation": true and "note" mark a point that
// only approximates its method. "kv" takes the example programs' KV spec
// strings (examples/common/kv_spec.hpp; one or an array) instead of key/value/
// both; "fp32" is refused (the evaluator's baseline is the FP16 cache).
// A key formula (bits "attention"/key_query_norm) whose object has no q_norm,
// or "q_norm": "auto", and a kv string with q_norm=auto, take the run's q_norm
// (--q-norm; by default calibrated on the model).

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/kv_spec.hpp"
#include "evaluator/config_json.hpp"
#include "evaluator/datasets/text_input.hpp"
#include "evaluator/experiment.hpp"
#include "evaluator/presets.hpp"

namespace qaq::eval {

class json_experiment final : public experiment {
public:
    json_experiment(const nlohmann::json& j, const std::string& place, const preset_parameters& presets = {}) {
        QAQ_CHECK(j.is_object(), place, ": expected a JSON object, got ", j.type_name());
        for (auto it = j.begin(); it != j.end(); ++it) {
            const std::string& k = it.key();
            const nlohmann::json& v = it.value();
            const std::string p = place + ": field \"" + k + "\"";
            if (k == "name") {
                QAQ_CHECK(v.is_string() && !v.get<std::string>().empty(), p, " must be a non-empty string");
                name_ = v.get<std::string>();
            } else if (k == "description") {
                QAQ_CHECK(v.is_string(), p, " must be a string");
                description_ = v.get<std::string>();
            } else if (k == "datasets") {
                settings_.datasets.clear();
                if (v.is_string()) settings_.datasets.push_back(v.get<std::string>());
                else {
                    QAQ_CHECK(v.is_array() && !v.empty(), p, " must be a dataset name or a non-empty array of names");
                    for (const auto& d : v) {
                        QAQ_CHECK(d.is_string(), p, " must hold strings, got ", d.type_name());
                        settings_.datasets.push_back(d.get<std::string>());
                    }
                }
            } else if (k == "n") {
                QAQ_CHECK(v.is_number_integer() && v.get<long long>() >= 0, p, " must be an integer >= 0 (0: all)");
                settings_.n = v.get<std::int64_t>();
            } else if (k == "seed") {
                QAQ_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<long long>() >= 0), p,
                          " must be a non-negative integer");
                settings_.seed = v.get<std::uint64_t>();
            } else if (k == "x_axis") {
                QAQ_CHECK(v.is_string() && (v == "compression_ratio" || v == "reference_compression_ratio" || v == "bits"),
                          p, " must be compression_ratio, reference_compression_ratio or bits");
                axis_ = v.get<std::string>();
            } else if (k == "defaults") {
                QAQ_CHECK(v.is_object(), p, " must be an object with both / key / value");
                for (auto d = v.begin(); d != v.end(); ++d)
                    QAQ_CHECK(d.key() == "both" || d.key() == "key" || d.key() == "value", place, ": defaults.", d.key(),
                              ": unknown field; expected both, key or value");
                defaults_ = v;
            } else if (k == "points") {
                QAQ_CHECK(v.is_array() && !v.empty(), p, " must be a non-empty array");
            } else {
                throw qaq::error(p + ": unknown field; expected name, description, datasets, n, seed, x_axis, defaults, points");
            }
        }
        QAQ_CHECK(!name_.empty(), place, ": missing field \"name\"");
        QAQ_CHECK(j.contains("points"), place, ": missing field \"points\"");
        const nlohmann::json& points = j["points"];
        for (std::size_t i = 0; i < points.size(); ++i)
            expand(points[i], place + ": points[" + std::to_string(i) + "]", presets);
    }

    static std::unique_ptr<json_experiment> from_file(const std::string& path, const preset_parameters& presets = {}) {
        const std::string text = datasets::read_text_file(path, "experiment config");
        return std::make_unique<json_experiment>(datasets::parse_json(text, path), path, presets);
    }

    std::string name() const override { return name_; }
    std::string description() const override { return description_; }
    std::string x_axis() const override { return axis_; }
    experiment_settings default_settings() const override { return settings_; }
    std::vector<grid_point> quantizer_list() const override { return grid_; }

    /// The JSON form of any experiment's grid (every point explicit), e.g. to
    /// start a config file from a preset.
    static nlohmann::json to_json(const experiment& e) {
        nlohmann::json points = nlohmann::json::array();
        for (const grid_point& p : e.quantizer_list()) {
            nlohmann::json j = {{"method", p.method}, {"label", p.label}};
            auto user = [](const qaq::quantizer_config& c) {
                nlohmann::json x = canonical_json(c);
                x.erase("role");
                if (!c.enabled) return nlohmann::json("fp16");
                x.erase("enabled");
                return x;
            };
            j["key"] = user(p.key);
            j["value"] = user(p.value);
            if (p.approximation) j["approximation"] = true;
            if (!p.note.empty()) j["note"] = p.note;
            points.push_back(j);
        }
        const experiment_settings s = e.default_settings();
        return {{"name", e.name()}, {"description", e.description()}, {"datasets", s.datasets},
                {"n", s.n},         {"seed", s.seed},                 {"x_axis", e.x_axis()},
                {"points", points}};
    }

private:
    static constexpr std::size_t max_points = 100000;  ///< in the whole grid, after expanding every axis

    struct layer_field {
        nlohmann::json value;
        int origin = 0;  // 0: role-specific layer, >0: id of the "both" layer that set it
    };
    struct role_spec {
        bool is_string = false;
        nlohmann::json text;  // when is_string
        std::map<std::string, layer_field> fields;
    };

    static void apply(role_spec& spec, const nlohmann::json& layer, int origin, const std::string& place) {
        if (layer.is_null()) return;
        if (layer.is_string()) {
            spec.is_string = true;
            spec.text = layer;
            spec.fields.clear();
            return;
        }
        QAQ_CHECK(layer.is_object(), place, ": expected a quantizer object or \"fp16\", got ", layer.type_name());
        if (spec.is_string) spec.is_string = false;
        for (auto it = layer.begin(); it != layer.end(); ++it) {
            QAQ_CHECK(!it.value().is_array() || !it.value().empty(), place, ".", it.key(), ": an axis needs at least one value");
            spec.fields[it.key()] = {it.value(), origin};
        }
    }

    void expand(const nlohmann::json& point, const std::string& place, const preset_parameters& presets) {
        QAQ_CHECK(point.is_object(), place, ": expected an object, got ", point.type_name());
        if (point.contains("preset")) {
            QAQ_CHECK(point.size() == 1 && point["preset"].is_string(), place,
                      ": a preset entry is {\"preset\": NAME} and nothing else");
            for (const grid_point& p : make_preset(point["preset"].get<std::string>(), presets)->quantizer_list())
                grid_.push_back(p);
            return;
        }
        std::string method, label, note;
        bool approximation = false;
        for (auto it = point.begin(); it != point.end(); ++it) {
            const std::string& k = it.key();
            const std::string p = place + "." + k;
            if (k == "method") {
                QAQ_CHECK(it.value().is_string() && !it.value().get<std::string>().empty(), p, ": expected a non-empty string");
                method = it.value().get<std::string>();
            } else if (k == "label") {
                QAQ_CHECK(it.value().is_string(), p, ": expected a string");
                label = it.value().get<std::string>();
            } else if (k == "note") {
                QAQ_CHECK(it.value().is_string(), p, ": expected a string");
                note = it.value().get<std::string>();
            } else if (k == "approximation") {
                QAQ_CHECK(it.value().is_boolean(), p, ": expected true or false");
                approximation = it.value().get<bool>();
            } else if (k != "key" && k != "value" && k != "both" && k != "kv") {
                throw qaq::error(p + ": unknown field; expected preset, method, label, note, approximation, key, value, "
                                 "both, kv");
            }
        }
        QAQ_CHECK(!method.empty(), place, ": missing field \"method\"");
        if (point.contains("kv")) {
            QAQ_CHECK(!point.contains("key") && !point.contains("value") && !point.contains("both"), place,
                      ": \"kv\" replaces key, value and both; give one or the other");
            const nlohmann::json& kv = point["kv"];
            std::vector<std::string> specs;
            if (kv.is_string()) specs.push_back(kv.get<std::string>());
            else {
                QAQ_CHECK(kv.is_array() && !kv.empty(), place, ".kv: expected a KV spec string or a non-empty array of them");
                for (const auto& k : kv) {
                    QAQ_CHECK(k.is_string(), place, ".kv: expected strings, got ", k.type_name());
                    specs.push_back(k.get<std::string>());
                }
            }
            for (const std::string& text : specs) {
                qaq::examples::kv_spec spec;
                try {
                    spec = qaq::examples::parse_kv_spec(text);
                } catch (const qaq::error& e) {
                    throw qaq::error(place + ".kv: " + std::string(e.what()).substr(5));
                }
                QAQ_CHECK(!spec.exact, place, ".kv: \"fp32\" is an exact float32 cache, not a quantizer pair; the "
                          "evaluator's unquantized baseline is \"fp16\"");
                if (spec.key_q_norm_auto) spec.keys.q_norm = presets.q_norm;
                grid_point g;
                g.method = method;
                g.key = spec.keys;
                g.value = spec.values;
                g.key.role = qaq::cache_role::key;
                g.value.role = qaq::cache_role::value;
                g.label = label.empty() ? text : label + " " + text;
                g.approximation = approximation;
                g.note = note;
                grid_.push_back(g);
            }
            return;
        }
        role_spec specs[2];
        const char* roles[2] = {"key", "value"};
        for (int r = 0; r < 2; ++r) {
            if (defaults_.contains("both")) apply(specs[r], defaults_["both"], 1, place + " (defaults.both)");
            if (defaults_.contains(roles[r])) apply(specs[r], defaults_[roles[r]], 0, place + " (defaults." + roles[r] + ")");
            if (point.contains("both")) apply(specs[r], point["both"], 2, place + ".both");
            if (point.contains(roles[r])) apply(specs[r], point[roles[r]], 0, place + "." + roles[r]);
        }
        // Axes: shared ("both") first, then key, then value.
        struct axis {
            std::string field;
            int role;  // -1: both
            nlohmann::json values;
        };
        std::vector<axis> axes;
        for (const auto& [field, f] : specs[0].fields)
            if (f.value.is_array() && f.origin > 0) {
                const auto other = specs[1].fields.find(field);
                if (other != specs[1].fields.end() && other->second.origin == f.origin) axes.push_back({field, -1, f.value});
            }
        for (int r = 0; r < 2; ++r)
            for (const auto& [field, f] : specs[r].fields) {
                if (!f.value.is_array()) continue;
                bool shared = false;
                for (const auto& a : axes) shared = shared || (a.role == -1 && a.field == field && f.origin > 0);
                if (!shared) axes.push_back({field, r, f.value});
            }
        // The cartesian product of the axes, refused beyond a size no evaluation grid needs
        // (a few short arrays in a small file could otherwise ask for billions of points).
        std::size_t points = 1;
        for (const auto& a : axes) {
            QAQ_CHECK(grid_.size() <= max_points && a.values.size() <= (max_points - grid_.size()) / points, place,
                      ": the axes expand the grid to more than ", max_points, " points");
            points *= a.values.size();
        }
        std::vector<std::size_t> index(axes.size(), 0);
        for (;;) {
            nlohmann::json objects[2];
            std::string varying;
            for (int r = 0; r < 2; ++r) {
                if (specs[r].is_string) {
                    objects[r] = specs[r].text;
                    continue;
                }
                objects[r] = nlohmann::json::object();
                for (const auto& [field, f] : specs[r].fields) objects[r][field] = f.value;
            }
            for (std::size_t a = 0; a < axes.size(); ++a) {
                const nlohmann::json& v = axes[a].values[index[a]];
                for (int r = 0; r < 2; ++r)
                    if ((axes[a].role == -1 || axes[a].role == r) && objects[r].is_object()) objects[r][axes[a].field] = v;
                varying += std::string(varying.empty() ? "" : " ") + (axes[a].role == 0 ? "K." : axes[a].role == 1 ? "V." : "") +
                           axes[a].field + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
            }
            // A key formula without q_norm (or with "auto") takes the run's (--q-norm).
            bool key_q_norm_auto = objects[0].is_object() && !objects[0].contains("q_norm");
            if (objects[0].is_object() && objects[0].contains("q_norm") && objects[0]["q_norm"] == "auto") {
                objects[0].erase("q_norm");
                key_q_norm_auto = true;
            }
            grid_point g;
            g.method = method;
            g.key = config_from_json(objects[0], qaq::cache_role::key, place + ".key");
            if (key_q_norm_auto && g.key.bits == qaq::bits_kind::key_query_norm) g.key.q_norm = presets.q_norm;
            g.value = config_from_json(objects[1], qaq::cache_role::value, place + ".value");
            g.label = label.empty() ? pair_label(g.key, g.value) : (varying.empty() ? label : label + " " + varying);
            g.approximation = approximation;
            g.note = note;
            grid_.push_back(g);
            std::size_t a = axes.size();
            while (a > 0) {
                --a;
                if (++index[a] < axes[a].values.size()) break;
                index[a] = 0;
                if (a == 0) return;
            }
            if (axes.empty()) return;
        }
    }

    std::string name_, description_, axis_ = "compression_ratio";
    experiment_settings settings_;
    nlohmann::json defaults_ = nlohmann::json::object();
    std::vector<grid_point> grid_;
};

}  // namespace qaq::eval
