// libFuzzer target: the packed quantizer (qaq::any_quantizer) against the
// scalar oracle (qaq::reference::quantize) on fuzz-chosen shapes, configs and
// data.
//
// The input bytes decode into a small cache shape, a quantizer_config (level,
// group_dims, codec, symmetric, precision, outlier ratio, bits kind and its
// parameters; now and then an invalid value), attention probabilities, and
// float data that mixes ordinary values with NaN, +-Inf, denormals, values at
// the fp16 limits and huge float32 values. Both paths run; a qaq::error from
// either is the documented way to refuse an input. When both succeed they
// must agree on every group's width, on which elements are outliers, and on
// the outliers' restored values (exact, or nearest fp16); the packed cache
// must also dequantize and account for its bytes consistently. Anything else
// (a crash, a sanitizer report, another exception type, a disagreement)
// aborts.
//
// Environment switches:
//   QAQ_FUZZ_TRACE=1       print each decoded case before running it (for
//                          replaying an input that a sanitizer stops);
//   QAQ_FUZZ_STRICT=1      also abort when exactly one of the two paths refuses
//                          an input (they may differ in what they refuse, see
//                          docs/reliability.md);
//   QAQ_FUZZ_SKIP_KNOWN=1  step around open bugs of regressions/quantizer/ (set by
//                          ctest's fuzz.quantizer); none is open at present.

#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "qaq/any_quantizer.hpp"
#include "qaq/bit_packing.hpp"
#include "qaq/error.hpp"
#include "qaq/group_layout.hpp"
#include "qaq/precision.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/reference/quantize.hpp"
#include "qaq/tensor_view.hpp"

namespace {

struct decoded_case;
void describe(const decoded_case& k);
const decoded_case* current_case = nullptr;  // printed with every failure

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_quantizer: %s\n", what.c_str());
    if (current_case != nullptr) describe(*current_case);
    std::abort();
}
#define FUZZ_REQUIRE(condition, ...)                                                           \
    do {                                                                                       \
        if (!(condition)) fail(std::string("invariant violated: " #condition " ") + __VA_ARGS__); \
    } while (0)

bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && v[0] == '1';
}
bool strict() {
    static const bool on = env_flag("QAQ_FUZZ_STRICT");
    return on;
}
// Same value, or both NaN.
bool same_value(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return a == b && std::signbit(a) == std::signbit(b);
}

template <class T, std::size_t N>
T pick(FuzzedDataProvider& in, const T (&table)[N]) {
    return table[in.ConsumeIntegralInRange<std::size_t>(0, N - 1)];
}

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan = std::numeric_limits<float>::quiet_NaN();

// Values that sit on the edges of what the codecs and fp16 storage handle.
constexpr float special_values[] = {
    0.0f,     -0.0f,     1.0f,       -1.0f,      nan,        inf,         -inf,
    1e-45f,   -1e-45f,   1.17549435e-38f,        5.96e-8f,   6.1e-5f,     65504.0f,
    -65504.0f, 65519.0f, 65520.0f,   -65520.0f,  1e5f,       -1e5f,       1e20f,
    -1e20f,   3.4028235e38f,         -3.4028235e38f,         1.7e38f,     -1.7e38f,
    0.5f,     -0.5f,     1e-8f,      1e-30f,
};

struct decoded_case {
    qaq::quantizer_config config;
    qaq::kv_shape shape;
    qaq::attention_shape attention_shape;
    std::vector<float> data;
    std::vector<float> attention;
};

void describe(const decoded_case& k) {
    const qaq::quantizer_config& c = k.config;
    std::fprintf(stderr,
                 "case: shape %s, enabled %d, role %s, level %s, group_dims %d, codec %s, symmetric %d, precision %s,\n"
                 "      outlier_ratio %.17g, bits %s, fixed_bits %d, window %d, target_error %.17g, bits_min %d,\n"
                 "      bits_max %d, q_norm %.17g, attention %s\n",
                 qaq::to_string(k.shape).c_str(), c.enabled, qaq::to_string(c.role), qaq::to_string(c.level),
                 c.group_dims, qaq::to_string(c.codec), c.symmetric,
                 c.precision == qaq::storage_precision::fp16 ? "fp16" : "fp32", c.outlier_ratio,
                 qaq::to_string(c.bits), c.fixed_bits, c.window, c.target_error, c.bits_min, c.bits_max, c.q_norm,
                 qaq::to_string(k.attention_shape).c_str());
    std::fprintf(stderr, "data:");
    for (std::size_t i = 0; i < k.data.size() && i < 64; ++i) std::fprintf(stderr, " %.9g", k.data[i]);
    std::fprintf(stderr, k.data.size() > 64 ? " ...\n" : "\n");
}

qaq::quantizer_config decode_config(FuzzedDataProvider& in, std::int64_t head_dim) {
    qaq::quantizer_config c;
    c.enabled = in.ConsumeIntegralInRange<int>(0, 31) != 31;  // rarely the FP16 pass-through
    c.level = static_cast<qaq::group_level>(in.ConsumeIntegralInRange<int>(0, 3));
    if (in.ConsumeIntegralInRange<int>(0, 7) != 0) {
        std::vector<int> divisors;
        for (int g = 1; g <= head_dim; ++g)
            if (head_dim % g == 0) divisors.push_back(g);
        c.group_dims = divisors[in.ConsumeIntegralInRange<std::size_t>(0, divisors.size() - 1)];
    } else {
        c.group_dims = in.ConsumeIntegralInRange<int>(-1, 40);
    }
    c.codec = static_cast<qaq::codec_kind>(in.ConsumeIntegralInRange<int>(0, 2));
    c.symmetric = in.ConsumeBool();
    c.precision = in.ConsumeBool() ? qaq::storage_precision::fp16 : qaq::storage_precision::fp32;

    static constexpr double ratios[] = {0.0, 0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9};
    static constexpr double odd_ratios[] = {1e-300, 0.9999999, 1.0, -0.01, std::numeric_limits<double>::quiet_NaN(),
                                            0.3333333333, 1e-3};
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0:
        case 1: c.outlier_ratio = pick(in, ratios); break;
        case 2: c.outlier_ratio = in.ConsumeProbability<double>() * 0.999; break;
        default: c.outlier_ratio = pick(in, odd_ratios); break;
    }

    c.bits = static_cast<qaq::bits_kind>(in.ConsumeIntegralInRange<int>(0, 2));
    switch (c.bits) {
        case qaq::bits_kind::fixed: c.role = in.ConsumeBool() ? qaq::cache_role::key : qaq::cache_role::value; break;
        case qaq::bits_kind::value_attention: c.role = qaq::cache_role::value; break;
        case qaq::bits_kind::key_query_norm: c.role = qaq::cache_role::key; break;
    }
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0)  // a role the bits kind does not serve
        c.role = c.role == qaq::cache_role::key ? qaq::cache_role::value : qaq::cache_role::key;
    c.fixed_bits = in.ConsumeIntegralInRange<int>(0, 31) == 0 ? in.ConsumeIntegralInRange<int>(-2, 20)
                                                               : in.ConsumeIntegralInRange<int>(0, 16);
    c.window = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? in.ConsumeIntegralInRange<int>(-1, 100)
                                                           : in.ConsumeIntegralInRange<int>(1, 6);
    static constexpr double errors[] = {0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0, 1e-30, 1e-300, 1e30, 1e300,
                                        4.9e-324, std::numeric_limits<double>::infinity(), 0.0, -0.1};
    c.target_error = in.ConsumeBool() ? std::pow(10.0, -4.0 + 5.0 * in.ConsumeProbability<double>())
                                      : pick(in, errors);
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {
        c.bits_min = in.ConsumeIntegralInRange<int>(-1, 17);
        c.bits_max = in.ConsumeIntegralInRange<int>(-1, 17);
    } else {
        c.bits_min = in.ConsumeIntegralInRange<int>(0, 16);
        c.bits_max = in.ConsumeIntegralInRange<int>(c.bits_min, 16);
    }
    static constexpr double norms[] = {1.0, 20.0, 100.0, 0.5, 1e-30, 1e30, 1e300, 4.9e-324, 0.0};
    c.q_norm = in.ConsumeBool() ? std::pow(10.0, -1.0 + 3.0 * in.ConsumeProbability<double>()) : pick(in, norms);
    return c;
}

float decode_value(FuzzedDataProvider& in, float scale, float previous) {
    switch (in.ConsumeIntegralInRange<int>(0, 15)) {
        case 0: return pick(in, special_values);
        case 1: {  // any float32 bit pattern: denormals, NaN payloads, huge values
            const std::uint32_t bits = in.ConsumeIntegral<std::uint32_t>();
            float x;
            std::memcpy(&x, &bits, sizeof x);
            return x;
        }
        case 2:
        case 3: return previous;  // runs of equal values (constant groups)
        case 4: {  // heavy tail: 1 / u
            const float u = in.ConsumeFloatingPointInRange<float>(-1.0f, 1.0f);
            return u == 0.0f ? scale : scale / u;
        }
        default: return scale * static_cast<float>(in.ConsumeIntegral<std::int16_t>()) / 4096.0f;
    }
}

decoded_case decode(FuzzedDataProvider& in) {
    decoded_case k;
    static constexpr std::int64_t dims[] = {1, 2, 3, 4, 5, 6, 8, 12, 16, 32};
    k.shape.layers = in.ConsumeIntegralInRange<std::int64_t>(1, 3);
    k.shape.batch = in.ConsumeIntegralInRange<std::int64_t>(1, 2);
    k.shape.heads = in.ConsumeIntegralInRange<std::int64_t>(1, 3);
    k.shape.tokens = in.ConsumeIntegralInRange<std::int64_t>(1, 8);
    k.shape.head_dim = pick(in, dims);
    k.config = decode_config(in, k.shape.head_dim);

    k.attention_shape = {k.shape.layers, k.shape.batch, k.shape.heads * in.ConsumeIntegralInRange<std::int64_t>(1, 2),
                         in.ConsumeIntegralInRange<std::int64_t>(1, 3), k.shape.tokens};
    if (in.ConsumeIntegralInRange<int>(0, 31) == 0) k.attention_shape.tokens += 1;  // a mis-shaped attention
    const auto& a = k.attention_shape;
    k.attention.resize(static_cast<std::size_t>(a.layers * a.batch * a.query_heads * a.rows * a.tokens));
    const bool odd_attention = in.ConsumeIntegralInRange<int>(0, 15) == 0;
    for (float& p : k.attention) {
        p = in.ConsumeProbability<float>();
        if (odd_attention && in.ConsumeIntegralInRange<int>(0, 7) == 0) p = pick(in, special_values);
    }

    static constexpr float scales[] = {1.0f, 1.0f, 0.01f, 100.0f, 1e-38f, 1e-6f, 6e4f, 1e20f, 3e38f};
    const float scale = pick(in, scales);
    k.data.resize(static_cast<std::size_t>(k.shape.element_count()));
    float previous = 0.0f;
    for (float& x : k.data) previous = x = decode_value(in, scale, previous);
    return k;
}

// Calls f(); returns the qaq::error message if it raised one, "" otherwise.
// Any other exception propagates (and libFuzzer reports it as a crash).
template <class F>
bool run(F&& f, std::string& message) {
    try {
        f();
        return true;
    } catch (const qaq::error& e) {
        message = e.what();
        return false;
    }
}

void compare(const decoded_case& k, const qaq::reference::result& ref, const qaq::packed_tensor& packed,
             const std::vector<float>& dequantized) {
    const qaq::group_layout& layout = packed.layout;
    const std::int64_t groups = layout.group_count(), n = layout.group_size();
    FUZZ_REQUIRE(layout.shape() == k.shape, "");
    FUZZ_REQUIRE(static_cast<std::int64_t>(ref.bits.size()) == groups,
                 "reference has " + std::to_string(ref.bits.size()) + " groups, packed " + std::to_string(groups));
    FUZZ_REQUIRE(ref.bits_shape == layout.bits_shape(), "");
    FUZZ_REQUIRE(static_cast<std::int64_t>(packed.widths.size()) == groups, "");

    // Element indices of each group, in group order.
    std::vector<float> index(k.data.size());
    for (std::size_t i = 0; i < index.size(); ++i) index[i] = static_cast<float>(i);
    const auto index_view = qaq::kv_view<const float>::contiguous(index.data(), k.shape);
    std::vector<float> members(static_cast<std::size_t>(n));

    const bool has_counts = !packed.outlier_counts.empty();
    std::int64_t cursor = 0, code_bytes = 0;
    for (std::int64_t g = 0; g < groups; ++g) {
        const int width = packed.widths[static_cast<std::size_t>(g)];
        FUZZ_REQUIRE(width == ref.bits[static_cast<std::size_t>(g)],
                     "group " + std::to_string(g) + ": packed width " + std::to_string(width) + ", reference " +
                         std::to_string(ref.bits[static_cast<std::size_t>(g)]));
        code_bytes += qaq::packed_code_bytes(n, width);
        layout.gather(index_view, g, members.data());

        std::int64_t expected = 0;
        for (const float m : members) expected += ref.outlier_mask[static_cast<std::size_t>(m)];
        const std::int64_t count = has_counts ? packed.outlier_counts[g] : 0;
        FUZZ_REQUIRE(count == expected, "group " + std::to_string(g) + ": packed outliers " + std::to_string(count) +
                                            ", reference " + std::to_string(expected));
        std::int64_t last = -1;
        for (std::int64_t j = 0; j < count; ++j, ++cursor) {
            const std::int64_t position = packed.outlier_positions[cursor];
            FUZZ_REQUIRE(position > last && position < n, "outlier positions must increase inside the group");
            last = position;
            const auto element = static_cast<std::size_t>(members[static_cast<std::size_t>(position)]);
            FUZZ_REQUIRE(ref.outlier_mask[element] == 1,
                         "group " + std::to_string(g) + ": packed outlier at " + std::to_string(position) +
                             " is not one in the reference");
            // Outliers come back as stored: exact (fp32) or the nearest fp16.
            const float stored = qaq::round_to(packed.precision, k.data[element]);
            FUZZ_REQUIRE(same_value(dequantized[element], stored),
                         "outlier " + std::to_string(element) + " restored as " + std::to_string(dequantized[element]) +
                             ", expected " + std::to_string(stored));
            FUZZ_REQUIRE(same_value(ref.dequantized[element], stored), "reference outlier value");
        }
    }
    FUZZ_REQUIRE(cursor == packed.outlier_count(), "");

    // Every byte accounted for.
    const qaq::byte_report bytes = packed.bytes();
    FUZZ_REQUIRE(bytes.codes == code_bytes, "codes " + std::to_string(bytes.codes) + " != sum of packed_code_bytes " +
                                                std::to_string(code_bytes));
    FUZZ_REQUIRE(bytes.widths == groups, "");
    FUZZ_REQUIRE(bytes.parameters == groups * packed.parameters_per_group *
                                         qaq::bytes_per_value(packed.precision), "");
    FUZZ_REQUIRE(bytes.outlier_values == cursor * qaq::bytes_per_value(packed.precision), "");
    FUZZ_REQUIRE(bytes.outlier_positions == cursor * packed.outlier_positions.width(), "");
    FUZZ_REQUIRE(bytes.outlier_counts == (cursor > 0 ? groups * packed.outlier_counts.width() : 0), "");
    FUZZ_REQUIRE(bytes.slack >= 0 && bytes.total() == bytes.used() + bytes.slack, "");
    FUZZ_REQUIRE(bytes.elements == k.shape.element_count(), "");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    FuzzedDataProvider in(bytes, size);
    const decoded_case k = decode(in);
    current_case = &k;
    // A sanitizer report ends the process without passing through fail(): describe the case first.
    // (libFuzzer owns the sanitizer death callback, which writes the crash input.)
    static const bool trace = env_flag("QAQ_FUZZ_TRACE");
    if (trace) describe(k);
    struct forget {
        ~forget() { current_case = nullptr; }
    } forget_case;
    const auto cache = qaq::kv_view<const float>::contiguous(k.data.data(), k.shape);
    const auto attention = qaq::attention_view<const float>::contiguous(k.attention.data(), k.attention_shape);

    qaq::reference::result ref;
    std::string ref_error;
    const bool ref_ok = run([&] { ref = qaq::reference::quantize(k.config, cache, attention); }, ref_error);

    qaq::packed_tensor packed;
    std::vector<float> dequantized(k.data.size(), -1.0f);
    std::string packed_error;
    const bool packed_ok = run(
        [&] {
            const qaq::any_quantizer quantizer(k.config);
            packed = quantizer.quantize(cache, attention);
            quantizer.dequantize(packed, qaq::kv_view<float>::contiguous(dequantized.data(), k.shape));
            (void)quantizer.accounting(packed);
        },
        packed_error);

    if (!k.config.enabled) return 0;  // the reference passes through, the packed path stores FP16: not comparable
    if (ref_ok && packed_ok) {
        compare(k, ref, packed, dequantized);
    } else if (ref_ok != packed_ok && strict()) {
        fail("only one path refused the input: reference " + (ref_ok ? std::string("succeeded") : ref_error) +
             "; packed " + (packed_ok ? std::string("succeeded") : packed_error));
    }
    return 0;
}
