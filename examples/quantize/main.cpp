// qaq-quantize: quantize one key or value cache stored as .npy and write the
// reconstruction, the per-group bit widths, the outlier mask and a summary.
//
// Inputs (NumPy .npy, float32 or float16):
//   --input      cache      [layers, batch, heads, tokens, head_dim]
//   --attention  attention  [layers, batch, query_heads, rows, tokens]
// Outputs in --output DIR: dequantized.npy, bits.npy, outliers.npy, summary.json.
// With --reference the mean-centred codec and fp32 parameters reproduce the
// original QAQ implementation; without it `--method uniform` uses the
// zero-point codec and fp16 parameters (what a deployed cache stores).

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qaq/any_quantizer.hpp"
#include "qaq/io/npy.hpp"
#include "qaq/qaq.hpp"

namespace {

struct options {
    std::string input, attention, output, cache = "value", level = "head", method = "uniform", codec, precision;
    bool symmetric = false, attention_aware = false, reference = false;
    double outliers_ratio = 0.0, target_error = 0.1, q_norm = 1.0;
    int bits = 4, last_n = 1, bits_min = 0, bits_max = 8, group_dims = 0;
};

qaq::quantizer_config to_config(const options& o) {
    qaq::quantizer_config c;
    c.role = o.cache == "key" ? qaq::cache_role::key : qaq::cache_role::value;
    c.level = o.level == "token"   ? qaq::group_level::token
              : o.level == "layer" ? qaq::group_level::layer
              : o.level == "head"  ? qaq::group_level::head
                                   : qaq::group_level::sub_head;
    c.group_dims = o.group_dims;
    c.symmetric = o.symmetric;
    if (!o.codec.empty()) {
        c.codec = o.codec == "mean-centred"  ? qaq::codec_kind::uniform_mean_centred
                  : o.codec == "zero-point" ? qaq::codec_kind::uniform_zero_point
                                            : qaq::codec_kind::normal;
    } else if (o.method == "normal") {
        c.codec = qaq::codec_kind::normal;
    } else {
        c.codec = o.reference ? qaq::codec_kind::uniform_mean_centred : qaq::codec_kind::uniform_zero_point;
    }
    c.precision = o.reference ? qaq::storage_precision::fp32 : qaq::storage_precision::fp16;
    if (!o.precision.empty())
        c.precision = o.precision == "fp32" ? qaq::storage_precision::fp32 : qaq::storage_precision::fp16;
    c.outlier_ratio = o.outliers_ratio;
    if (o.attention_aware) {
        c.bits = c.role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention;
        c.window = o.last_n;
        c.target_error = o.target_error;
        c.bits_min = o.bits_min;
        c.bits_max = o.bits_max;
        c.q_norm = o.q_norm;
    } else {
        c.bits = qaq::bits_kind::fixed;
        c.fixed_bits = o.bits;
    }
    return c;
}

qaq::io::npy_array read_float_array(const std::string& path, const char* what) {
    qaq::io::npy_array a = qaq::io::read_npy(path);
    QAQ_CHECK(a.dtype == qaq::io::npy_dtype::float32 || a.dtype == qaq::io::npy_dtype::float16, what, " ", path,
              " has dtype ", qaq::io::to_string(a.dtype), "; expected float32 or float16");
    QAQ_CHECK(a.shape.size() == 5, what, " ", path, " has ", a.shape.size(),
              " dimensions; expected 5 (see qaq-quantize --help)");
    return a;
}

nlohmann::json bytes_json(const qaq::byte_report& b) {
    return {{"codes", b.codes},
            {"parameters", b.parameters},
            {"widths", b.widths},
            {"outlier_counts", b.outlier_counts},
            {"outlier_positions", b.outlier_positions},
            {"outlier_values", b.outlier_values},
            {"total", b.total()},
            {"elements", b.elements},
            {"fp16_bytes", 2 * b.elements}};
}

int run(const options& o) {
    const qaq::quantizer_config config = to_config(o);
    const qaq::any_quantizer quantizer(config);

    const qaq::io::npy_array input = read_float_array(o.input, "cache");
    const qaq::kv_shape shape{input.shape[0], input.shape[1], input.shape[2], input.shape[3], input.shape[4]};
    const std::vector<float> cache = input.to_float32();

    std::vector<float> attention_values;
    qaq::attention_view<const float> attention;
    if (!o.attention.empty()) {
        const qaq::io::npy_array a = read_float_array(o.attention, "attention");
        attention_values = a.to_float32();
        attention = qaq::attention_view<const float>::contiguous(
            attention_values.data(), {a.shape[0], a.shape[1], a.shape[2], a.shape[3], a.shape[4]});
    }
    QAQ_CHECK(config.bits != qaq::bits_kind::value_attention || !attention.empty(),
              "--attention-aware on the value cache needs --attention FILE");

    const qaq::packed_tensor packed = quantizer.quantize(qaq::kv_view<const float>::contiguous(cache.data(), shape), attention);
    std::vector<float> dequantized(cache.size());
    quantizer.dequantize(packed, qaq::kv_view<float>::contiguous(dequantized.data(), shape));

    // The outlier mask, rebuilt from the packed store's positions.
    const qaq::group_layout& layout = packed.layout;
    std::vector<std::uint8_t> mask(cache.size(), 0);
    {
        std::vector<float> group_mask(static_cast<std::size_t>(layout.group_size()));
        std::int64_t cursor = 0;
        const auto mask_view = qaq::kv_view<std::uint8_t>::contiguous(mask.data(), shape);
        for (std::int64_t g = 0; g < layout.group_count() && !packed.outlier_counts.empty(); ++g) {
            const std::int64_t count = packed.outlier_counts[g];
            if (count == 0) continue;
            std::fill(group_mask.begin(), group_mask.end(), 0.0f);
            for (std::int64_t k = 0; k < count; ++k) group_mask[packed.outlier_positions[cursor++]] = 1.0f;
            layout.scatter(group_mask.data(), g, mask_view);
        }
    }
    std::vector<std::int64_t> bits(packed.widths.begin(), packed.widths.end());

    std::filesystem::create_directories(o.output);
    const std::filesystem::path dir(o.output);
    if (input.dtype == qaq::io::npy_dtype::float16)
        qaq::io::write_npy_float16((dir / "dequantized.npy").string(), input.shape, dequantized);
    else
        qaq::io::write_npy((dir / "dequantized.npy").string(), input.shape, dequantized);
    qaq::io::write_npy((dir / "bits.npy").string(), layout.bits_shape(), bits);
    qaq::io::write_npy_bool((dir / "outliers.npy").string(), input.shape, mask);

    const qaq::reference_accounting ref = quantizer.accounting(packed);
    const qaq::byte_report bytes = packed.bytes();
    const nlohmann::json summary = {
        {"qaq_version", qaq::version_string},
        {"cache", config.role == qaq::cache_role::key ? "key" : "value"},
        {"level", qaq::to_string(config.level)},
        {"codec", qaq::to_string(config.codec)},
        {"precision", config.precision == qaq::storage_precision::fp16 ? "fp16" : "fp32"},
        {"bits_policy", qaq::to_string(config.bits)},
        {"shape", input.shape},
        {"groups", layout.group_count()},
        {"group_size", layout.group_size()},
        {"outliers", packed.outlier_count()},
        {"average_bits_reference", ref.average_bits},
        {"bits_per_element_reference", ref.bits_per_element},
        {"compression_ratio_reference", ref.compression_ratio},
        {"packed_bytes", bytes_json(bytes)},
        {"bits_per_element_packed", bytes.bits_per_element()},
        {"compression_ratio_packed", bytes.compression_ratio()},
    };
    const std::string summary_path = (dir / "summary.json").string();
    {
        std::ofstream f(summary_path + ".tmp");
        f << summary.dump(2) << "\n";
        QAQ_CHECK(f.good(), "cannot write ", summary_path);
    }
    std::filesystem::rename(summary_path + ".tmp", summary_path);
    std::cout << "groups " << layout.group_count() << ", average bits (reference) " << ref.average_bits
              << ", packed " << bytes.total() << " bytes, compression " << bytes.compression_ratio()
              << "x (reference " << ref.compression_ratio << "x)\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Quantize a key or value cache (.npy) with QAQ and write the reconstruction, bits and outliers"};
    options o;
    app.add_option("--input", o.input, "cache .npy, [layers, batch, heads, tokens, head_dim], float32/float16")
        ->required()
        ->check(CLI::ExistingFile);
    app.add_option("--attention", o.attention,
                   "attention .npy, [layers, batch, query_heads, rows, tokens] (needed for attention-aware values)")
        ->check(CLI::ExistingFile);
    app.add_option("--output", o.output, "output directory")->required();
    app.add_option("--cache", o.cache, "which cache the input is")->check(CLI::IsMember({"key", "value"}));
    app.add_option("--level", o.level, "quantization group")
        ->check(CLI::IsMember({"token", "layer", "head", "sub-head"}));
    app.add_option("--group-dims", o.group_dims, "dims per group at --level sub-head");
    app.add_flag("--symmetric", o.symmetric, "centre at zero, range 2*max|x|");
    app.add_option("--method", o.method, "uniform or normal codec")->check(CLI::IsMember({"uniform", "normal"}));
    app.add_option("--codec", o.codec, "override the codec")
        ->check(CLI::IsMember({"mean-centred", "zero-point", "normal"}));
    app.add_option("--precision", o.precision, "stored parameter/outlier precision")
        ->check(CLI::IsMember({"fp16", "fp32"}));
    app.add_option("--outliers-ratio", o.outliers_ratio, "fraction kept exact, both tails together, [0, 1)");
    app.add_flag("--attention-aware", o.attention_aware, "adaptive bits (values: attention; keys: query norm)");
    app.add_option("--bits", o.bits, "fixed bits, 0..16");
    app.add_option("--last-n", o.last_n, "attention window n");
    app.add_option("--target-error", o.target_error, "target error eps");
    app.add_option("--bits-min", o.bits_min, "minimum adaptive bits");
    app.add_option("--bits-max", o.bits_max, "maximum adaptive bits");
    app.add_option("--q-norm", o.q_norm, "squared query norm (keys)");
    app.add_flag("--reference", o.reference,
                 "reproduce the original implementation: mean-centred codec, fp32 parameters");
    CLI11_PARSE(app, argc, argv);
    if (o.level == "sub-head") o.level = "sub_head";
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::cerr << "qaq-quantize: " << e.what() << "\n";
        return 1;
    }
}
