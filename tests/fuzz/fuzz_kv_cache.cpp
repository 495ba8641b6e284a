// libFuzzer target: a random sequence of decode-time operations on a small
// qaq::quantized_kv_cache.
//
// The input bytes choose the cache shape, a key and a value quantizer_config
// (held as qaq::dynamic_quantizer, so every policy combination is reachable),
// the downgrade source, and then up to 64 operations: append (usually to the
// layer whose turn it is, sometimes to another, sometimes with a wrong count
// or non-finite data), attend, observe (with the probabilities attend
// returned, or fuzz-chosen ones), rebalance, prefill, and dequantize, with
// fuzz-chosen sizes and data. A qaq::error is the documented refusal; after
// every operation, refused or not, the cache must still be consistent:
//
//   * each layer holds tokens(0) or tokens(0) - 1 tokens (layers in order);
//   * every layer and role has kv_heads x tokens x groups-per-head widths,
//     each within [bits_min, bits_max] of its quantizer;
//   * the byte report adds up: codes == sum of packed_code_bytes over the
//     widths, one width byte, one slot index and the parameters per group,
//     outlier values match outlier positions, slack >= 0,
//     total == used + slack, elements == groups x group size;
//   * dequantize gives no NaN unless a prefill stored one (append refuses
//     non-finite values; prefill, like the whole-tensor quantizer, keeps
//     them exactly as outliers);
//   * a refused append or prefill leaves the cache exactly as it was: token
//     counts, widths, byte report and every dequantized value (strong
//     exception guarantee; regressions/kv_cache/partial-*).
//
// Anything else — a crash, a sanitizer report, another exception type, a
// broken invariant — aborts.
//
// Environment switches:
//   QAQ_FUZZ_TRACE=1       print the case and every operation as it runs (for
//                          replaying a failing input);
//   QAQ_FUZZ_SKIP_KNOWN=1  step around open bugs of regressions/kv_cache/ (set by
//                          ctest's fuzz.kv_cache); none is open at present.

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "qaq/bit_packing.hpp"
#include "qaq/dynamic_quantizer.hpp"
#include "qaq/error.hpp"
#include "qaq/kv_cache.hpp"
#include "qaq/precision.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/tensor_view.hpp"

namespace {

using cache_type = qaq::quantized_kv_cache<qaq::dynamic_quantizer, qaq::dynamic_quantizer>;

// QAQ_FUZZ_TRACE=1: print the case and every operation as it runs (off while
// fuzzing: formatting every operation would halve the speed).
bool tracing() {
    static const bool on = [] {
        const char* v = std::getenv("QAQ_FUZZ_TRACE");
        return v != nullptr && v[0] == '1';
    }();
    return on;
}

std::string last_operation = "construction";

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_kv_cache: invariant violated after %s: %s\n%s", last_operation.c_str(), what.c_str(),
                 tracing() ? "" : "(run the input again with QAQ_FUZZ_TRACE=1 for the case and its operations)\n");
    std::abort();
}

std::string describe(const qaq::quantizer_config& c) {
    char text[512];
    std::snprintf(text, sizeof text,
                  "{enabled %d, level %s, group_dims %d, codec %s, symmetric %d, precision %s, outlier_ratio %g, "
                  "bits %s, fixed_bits %d, window %d, target_error %g, bits_min %d, bits_max %d, q_norm %g}",
                  c.enabled, qaq::to_string(c.level), c.group_dims, qaq::to_string(c.codec), c.symmetric,
                  c.precision == qaq::storage_precision::fp16 ? "fp16" : "fp32", c.outlier_ratio,
                  qaq::to_string(c.bits), c.fixed_bits, c.window, c.target_error, c.bits_min, c.bits_max, c.q_norm);
    return text;
}

std::string describe(const float* x, std::size_t n) {
    std::string out = "[";
    char number[32];
    for (std::size_t i = 0; i < n; ++i) {
        std::snprintf(number, sizeof number, i ? ", %.9g" : "%.9g", x[i]);
        out += number;
    }
    return out + "]";
}
#define FUZZ_REQUIRE(condition, ...)                                       \
    do {                                                                   \
        if (!(condition)) fail(std::string(#condition " ") + __VA_ARGS__); \
    } while (0)

template <class T, std::size_t N>
T pick(FuzzedDataProvider& in, const T (&table)[N]) {
    return table[in.ConsumeIntegralInRange<std::size_t>(0, N - 1)];
}

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan = std::numeric_limits<float>::quiet_NaN();
constexpr float special_values[] = {0.0f,     -0.0f,    1.0f,     -1.0f,          nan,          inf,
                                    -inf,     1e-45f,   1.17549435e-38f,          65504.0f,     65520.0f,
                                    -65520.0f, 1e5f,    1e20f,    3.4028235e38f,  -3.4028235e38f, 1e-30f};

float decode_value(FuzzedDataProvider& in, float scale, bool allow_odd) {
    const int kind = in.ConsumeIntegralInRange<int>(0, 31);
    if (allow_odd && kind == 0) return pick(in, special_values);
    if (allow_odd && kind == 1) {
        const std::uint32_t bits = in.ConsumeIntegral<std::uint32_t>();
        float x;
        std::memcpy(&x, &bits, sizeof x);
        return x;
    }
    if (kind == 2) return 0.0f;
    return scale * static_cast<float>(in.ConsumeIntegral<std::int16_t>()) / 4096.0f;
}

std::vector<float> decode_values(FuzzedDataProvider& in, std::int64_t n, float scale) {
    const bool allow_odd = in.ConsumeIntegralInRange<int>(0, 7) == 0;
    std::vector<float> v(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
    for (float& x : v) x = decode_value(in, scale, allow_odd);
    return v;
}

// A count that is usually right and now and then off by a little.
std::int64_t decode_count(FuzzedDataProvider& in, std::int64_t right) {
    if (in.ConsumeIntegralInRange<int>(0, 31) != 0) return right;
    return std::max<std::int64_t>(0, right + in.ConsumeIntegralInRange<int>(-2, 2));
}

qaq::quantizer_config decode_config(FuzzedDataProvider& in, qaq::cache_role role, std::int64_t head_dim) {
    qaq::quantizer_config c;
    c.role = role;
    c.enabled = in.ConsumeIntegralInRange<int>(0, 15) != 15;
    const int level = in.ConsumeIntegralInRange<int>(0, 15);
    c.level = level == 0 ? qaq::group_level::token : (level < 8 ? qaq::group_level::head : qaq::group_level::sub_head);
    std::vector<int> divisors;
    for (int g = 1; g <= head_dim; ++g)
        if (head_dim % g == 0) divisors.push_back(g);
    c.group_dims = divisors[in.ConsumeIntegralInRange<std::size_t>(0, divisors.size() - 1)];
    c.codec = static_cast<qaq::codec_kind>(in.ConsumeIntegralInRange<int>(0, 2));
    c.symmetric = in.ConsumeBool();
    c.precision = in.ConsumeBool() ? qaq::storage_precision::fp16 : qaq::storage_precision::fp32;
    static constexpr double ratios[] = {0.0, 0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9};
    c.outlier_ratio = pick(in, ratios);
    const bool adaptive = in.ConsumeIntegralInRange<int>(0, 3) != 0;
    c.bits = !adaptive ? qaq::bits_kind::fixed
                       : (role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention);
    c.fixed_bits = in.ConsumeIntegralInRange<int>(0, 16);
    c.window = in.ConsumeIntegralInRange<int>(1, 5);
    static constexpr double errors[] = {0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 1e-30, 1e30};
    c.target_error = pick(in, errors);
    c.bits_min = in.ConsumeIntegralInRange<int>(0, 16);
    c.bits_max = in.ConsumeIntegralInRange<int>(c.bits_min, 16);
    static constexpr double norms[] = {1.0, 20.0, 100.0, 0.5, 1e-30, 1e30};
    c.q_norm = pick(in, norms);
    return c;
}

struct role_info {
    int bits_min, bits_max;
    std::int64_t group_size, parameter_bytes, value_bytes;
};

role_info info_of(const qaq::dynamic_quantizer& q, const qaq::kv_cache_shape& s) {
    const std::int64_t group_size = q.level() == qaq::group_level::sub_head ? q.group_dims() : s.head_dim;
    return {q.bits_min(), q.bits_max(), group_size, q.parameter_bytes(), qaq::bytes_per_value(q.precision())};
}

void check_role(const cache_type& cache, qaq::cache_role role, const role_info& info, const qaq::byte_report& bytes) {
    const auto& s = cache.shape();
    const std::int64_t per_head = s.head_dim / info.group_size;
    std::int64_t groups = 0, code_bytes = 0;
    for (std::int64_t l = 0; l < s.layers; ++l) {
        const std::vector<int> widths = cache.widths(l, role);
        FUZZ_REQUIRE(static_cast<std::int64_t>(widths.size()) == s.kv_heads * cache.tokens(l) * per_head,
                     std::string(qaq::to_string(role)) + " layer " + std::to_string(l) + " has " +
                         std::to_string(widths.size()) + " groups for " + std::to_string(cache.tokens(l)) +
                         " tokens (" + std::to_string(s.kv_heads) + " kv heads x " + std::to_string(per_head) +
                         " groups per head)");
        for (const int w : widths) {
            FUZZ_REQUIRE(w >= info.bits_min && w <= info.bits_max,
                         std::string(qaq::to_string(role)) + " width " + std::to_string(w) + " outside [" +
                             std::to_string(info.bits_min) + ", " + std::to_string(info.bits_max) + "]");
            code_bytes += qaq::packed_code_bytes(info.group_size, w);
        }
        groups += static_cast<std::int64_t>(widths.size());
    }
    const std::string r = qaq::to_string(role);
    FUZZ_REQUIRE(bytes.codes == code_bytes, r + " codes " + std::to_string(bytes.codes) + " != " + std::to_string(code_bytes));
    FUZZ_REQUIRE(bytes.widths == groups, r);
    FUZZ_REQUIRE(bytes.parameters == groups * info.parameter_bytes, r);
    FUZZ_REQUIRE(bytes.slot_indices == groups * static_cast<std::int64_t>(sizeof(std::uint32_t)), r);
    FUZZ_REQUIRE(bytes.elements == groups * info.group_size, r);
    FUZZ_REQUIRE(bytes.slack >= 0, r);
    FUZZ_REQUIRE(bytes.total() == bytes.used() + bytes.slack, r);
    FUZZ_REQUIRE(bytes.outlier_values % info.value_bytes == 0, r);
    const std::int64_t outliers = bytes.outlier_values / info.value_bytes;
    FUZZ_REQUIRE(outliers <= bytes.elements, r);
    // Positions: one per outlier at 1, 2 or 4 bytes; counts: one per group at 1, 2 or 4 bytes.
    FUZZ_REQUIRE(bytes.outlier_positions == 0 ? outliers == 0
                                              : bytes.outlier_positions % outliers == 0 &&
                                                    bytes.outlier_positions / outliers <= 4,
                 r + " outlier positions " + std::to_string(bytes.outlier_positions) + " for " +
                     std::to_string(outliers) + " outliers");
    FUZZ_REQUIRE(bytes.outlier_counts == 0 || (groups > 0 && bytes.outlier_counts % groups == 0 &&
                                               bytes.outlier_counts / groups <= 4),
                 r + " outlier counts " + std::to_string(bytes.outlier_counts) + " for " + std::to_string(groups) +
                     " groups");
}

void check_invariants(const cache_type& cache, const role_info& keys, const role_info& values) {
    const auto& s = cache.shape();
    const std::int64_t first = cache.tokens(0);
    FUZZ_REQUIRE(first >= 0 && first <= s.max_tokens, "");
    for (std::int64_t l = 1; l < s.layers; ++l) {
        const std::int64_t t = cache.tokens(l), previous = cache.tokens(l - 1);
        FUZZ_REQUIRE(t <= previous && t >= first - 1, "layer token counts out of order");
    }
    const qaq::kv_cache_byte_report report = cache.bytes();
    check_role(cache, qaq::cache_role::key, keys, report.keys);
    check_role(cache, qaq::cache_role::value, values, report.values);
    FUZZ_REQUIRE(report.host_copy >= (report.keys.elements + report.values.elements) *
                                         static_cast<std::int64_t>(sizeof(float)),
                 "host copy smaller than the cached elements");
    FUZZ_REQUIRE(report.total() == report.quantized().total() + report.host_copy + report.host_metadata +
                                       report.attention_window,
                 "");
}

// The layer whose turn it is to take the next token.
std::int64_t next_layer(const cache_type& cache) {
    for (std::int64_t l = 1; l < cache.shape().layers; ++l)
        if (cache.tokens(l) < cache.tokens(l - 1)) return l;
    return 0;
}

// Everything a caller can observe of the cache: token counts, widths, the byte
// report and the bit patterns of every dequantized value, layer by layer.
std::vector<std::uint32_t> observable_state(const cache_type& cache) {
    const auto& s = cache.shape();
    std::vector<std::uint32_t> state;
    const qaq::kv_cache_byte_report b = cache.bytes();
    for (const qaq::byte_report* r : {&b.keys, &b.values})
        for (const std::int64_t v : {r->codes, r->parameters, r->widths, r->slot_indices, r->outlier_counts,
                                     r->outlier_positions, r->outlier_values, r->slack, r->elements})
            state.push_back(static_cast<std::uint32_t>(v));
    for (const std::int64_t v : {b.host_copy, b.host_metadata, b.attention_window})
        state.push_back(static_cast<std::uint32_t>(v));
    for (std::int64_t l = 0; l < s.layers; ++l) {
        state.push_back(static_cast<std::uint32_t>(cache.tokens(l)));
        for (const qaq::cache_role role : {qaq::cache_role::key, qaq::cache_role::value}) {
            for (const int w : cache.widths(l, role)) state.push_back(static_cast<std::uint32_t>(w));
            std::vector<float> out(static_cast<std::size_t>(s.kv_heads * s.head_dim * cache.tokens(l)));
            cache.dequantize(l, role, out.data(), static_cast<std::int64_t>(out.size()));
            for (const float x : out) {
                std::uint32_t u;
                std::memcpy(&u, &x, sizeof u);
                state.push_back(u);
            }
        }
    }
    return state;
}

// Runs one operation; `name` (a callable giving its description) is only formatted when tracing.
// Returns false when the operation raised qaq::error.
template <class Name, class F>
bool attempt(const char* kind, Name&& name, F&& f) {
    last_operation = kind;
    // Printed as it happens, so a sanitizer report (which ends the process) follows its operation.
    if (tracing()) std::fprintf(stderr, "  %s", name().c_str());
    try {
        f();
        if (tracing()) std::fprintf(stderr, " -> ok\n");
        return true;
    } catch (const qaq::error& e) {
        // refused the documented way; the invariants are checked next
        if (tracing()) std::fprintf(stderr, " -> qaq::error: %s\n", e.what());
        return false;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    FuzzedDataProvider in(bytes, size);
    last_operation = "construction";
    static constexpr std::int64_t dims[] = {1, 2, 3, 4, 8, 16};
    qaq::kv_cache_shape shape;
    shape.layers = in.ConsumeIntegralInRange<std::int64_t>(1, 3);
    shape.kv_heads = in.ConsumeIntegralInRange<std::int64_t>(1, 2);
    shape.query_heads = shape.kv_heads * in.ConsumeIntegralInRange<std::int64_t>(1, 2);
    shape.head_dim = pick(in, dims);
    shape.max_tokens = in.ConsumeIntegralInRange<std::int64_t>(1, 12);
    const qaq::quantizer_config key_config = decode_config(in, qaq::cache_role::key, shape.head_dim);
    const qaq::quantizer_config value_config = decode_config(in, qaq::cache_role::value, shape.head_dim);
    qaq::kv_cache_options options;
    options.downgrade = in.ConsumeBool() ? qaq::downgrade_source::codes : qaq::downgrade_source::host_copy;
    static constexpr float scales[] = {1.0f, 1.0f, 0.01f, 100.0f, 1e-30f, 6e4f, 1e20f};
    const float scale = pick(in, scales);

    if (tracing())
        std::fprintf(stderr, "%s\n", ("shape {layers " + std::to_string(shape.layers) + ", kv_heads " + std::to_string(shape.kv_heads) +
            ", query_heads " + std::to_string(shape.query_heads) + ", head_dim " + std::to_string(shape.head_dim) +
            ", max_tokens " + std::to_string(shape.max_tokens) + "}\nkeys " + describe(key_config) + "\nvalues " +
            describe(value_config) + "\ndowngrade from " +
            (options.downgrade == qaq::downgrade_source::codes ? "codes" : "host copy") + "\noperations:")
                                       .c_str());
    std::unique_ptr<cache_type> cache;
    try {
        cache = std::make_unique<cache_type>(shape, qaq::dynamic_quantizer(key_config),
                                             qaq::dynamic_quantizer(value_config), options);
    } catch (const qaq::error&) {
        return 0;
    }
    const role_info key_info = info_of(cache->key_quantizer(), shape);
    const role_info value_info = info_of(cache->value_quantizer(), shape);
    check_invariants(*cache, key_info, value_info);

    const std::int64_t kv = shape.kv_heads * shape.head_dim, q = shape.query_heads * shape.head_dim;
    std::vector<float> probabilities;  // the last attend's output
    std::int64_t probability_layer = -1;
    bool non_finite_cached = false;  // a prefill stored NaN or Inf
    for (int step = 0; step < 64 && in.remaining_bytes() > 0; ++step) {
        switch (in.ConsumeIntegralInRange<int>(0, 9)) {
            case 0:
            case 1:
            case 2: {  // append, usually in turn
                const std::int64_t layer = in.ConsumeIntegralInRange<int>(0, 7) != 0
                                               ? next_layer(*cache)
                                               : in.ConsumeIntegralInRange<std::int64_t>(-1, shape.layers);
                const std::vector<float> k = decode_values(in, kv, scale), v = decode_values(in, kv, scale);
                const std::int64_t kn = decode_count(in, kv), vn = decode_count(in, kv);
                const std::vector<std::uint32_t> before = observable_state(*cache);
                const bool appended = attempt(
                    "append",
                    [&] {
                        return "append(layer " + std::to_string(layer) + ", keys " + describe(k.data(), k.size()) +
                               " count " + std::to_string(kn) + ", values " + describe(v.data(), v.size()) + " count " +
                               std::to_string(vn) + ")";
                    },
                    [&] {
                        if (kn > kv || vn > kv) return;  // a count beyond the buffer would be the caller's overflow
                        cache->append(layer, k.data(), kn, v.data(), vn);
                    });
                // regressions/kv_cache/partial-append-keys-kept: a refused append leaves no trace.
                if (!appended)
                    FUZZ_REQUIRE(observable_state(*cache) == before, "a refused append changed the cache");
                break;
            }
            case 3:
            case 4: {  // attend
                const std::int64_t layer = in.ConsumeIntegralInRange<std::int64_t>(0, shape.layers - 1);
                const std::vector<float> queries = decode_values(in, q, 1.0f);
                const std::int64_t T = cache->tokens(layer);
                std::vector<float> output(static_cast<std::size_t>(q));
                std::vector<float> p(static_cast<std::size_t>(shape.query_heads * T));
                attempt("attend", [&] { return "attend(layer " + std::to_string(layer) + ")"; }, [&] {
                    cache->attend(layer, queries.data(), q, output.data(), q, p.data(),
                                  static_cast<std::int64_t>(p.size()));
                    for (const float x : p) FUZZ_REQUIRE(std::isnan(x) || (x >= 0.0f && x <= 1.0f), "probability");
                    probabilities = p;
                    probability_layer = layer;
                });
                break;
            }
            case 5: {  // observe: the last attend's row, or fuzz-chosen probabilities
                std::int64_t layer = in.ConsumeIntegralInRange<std::int64_t>(0, shape.layers - 1);
                std::vector<float> p;
                if (probability_layer >= 0 && in.ConsumeBool()) {
                    layer = probability_layer;
                    p = probabilities;
                } else {
                    const std::int64_t n = decode_count(in, shape.query_heads * cache->tokens(layer));
                    p.resize(static_cast<std::size_t>(n));
                    for (float& x : p)
                        x = in.ConsumeIntegralInRange<int>(0, 31) == 0 ? pick(in, special_values)
                                                                       : in.ConsumeProbability<float>();
                }
                attempt(
                    "observe",
                    [&] { return "observe(layer " + std::to_string(layer) + ", " + describe(p.data(), p.size()) + ")"; },
                    [&] {
                    // A count beyond the buffer would be the caller's overflow, not the cache's.
                    if (static_cast<std::int64_t>(p.size()) != shape.query_heads * cache->tokens(layer)) return;
                    cache->observe(layer, p.data(), static_cast<std::int64_t>(p.size()));
                });
                break;
            }
            case 6:
            case 7:  // rebalance
                attempt("rebalance", [] { return std::string("rebalance()"); }, [&] { cache->rebalance(); });
                break;
            case 8: {  // prefill of T tokens (only an empty cache accepts it)
                const std::int64_t T = in.ConsumeIntegralInRange<std::int64_t>(1, shape.max_tokens);
                const qaq::kv_shape ks{shape.layers, 1, shape.kv_heads, T, shape.head_dim};
                const std::vector<float> k = decode_values(in, ks.element_count(), scale);
                const std::vector<float> v = decode_values(in, ks.element_count(), scale);
                const qaq::attention_shape as{shape.layers, 1, shape.query_heads,
                                              in.ConsumeIntegralInRange<std::int64_t>(1, 3), T};
                std::vector<float> a(static_cast<std::size_t>(as.layers * as.query_heads * as.rows * as.tokens));
                for (float& x : a) x = in.ConsumeProbability<float>();
                const bool with_attention = in.ConsumeIntegralInRange<int>(0, 3) != 0;
                const std::vector<std::uint32_t> before = observable_state(*cache);
                const bool prefilled = attempt(
                    "prefill",
                    [&] {
                        return "prefill(" + std::to_string(T) + " tokens, keys " + describe(k.data(), k.size()) +
                               ", values " + describe(v.data(), v.size()) +
                               (with_attention ? ", with attention)" : ", no attention)");
                    },
                    [&] {
                        cache->prefill(qaq::kv_view<const float>::contiguous(k.data(), ks),
                                       qaq::kv_view<const float>::contiguous(v.data(), ks),
                                       with_attention ? qaq::attention_view<const float>::contiguous(a.data(), as)
                                                      : qaq::attention_view<const float>{});
                        // Unlike append, prefill takes non-finite values (as the whole-tensor quantizer
                        // does: stored exactly as outliers), so NaN may come back from now on.
                        for (const float x : k) non_finite_cached = non_finite_cached || !std::isfinite(x);
                        for (const float x : v) non_finite_cached = non_finite_cached || !std::isfinite(x);
                    });
                // regressions/kv_cache/partial-prefill-keys-kept: a refused prefill leaves no trace.
                if (!prefilled)
                    FUZZ_REQUIRE(observable_state(*cache) == before, "a refused prefill changed the cache");
                break;
            }
            default: {  // dequantize one layer and role
                const std::int64_t layer = in.ConsumeIntegralInRange<std::int64_t>(0, shape.layers - 1);
                const qaq::cache_role role = in.ConsumeBool() ? qaq::cache_role::key : qaq::cache_role::value;
                std::vector<float> out(static_cast<std::size_t>(kv * cache->tokens(layer)));
                attempt(
                    "dequantize",
                    [&] {
                        return "dequantize(layer " + std::to_string(layer) + ", " + qaq::to_string(role) + ")";
                    },
                    [&] {
                    cache->dequantize(layer, role, out.data(), static_cast<std::int64_t>(out.size()));
                    if (!non_finite_cached)
                            for (const float x : out) FUZZ_REQUIRE(!std::isnan(x), "dequantized NaN from finite data");
                });
                break;
            }
        }
        check_invariants(*cache, key_info, value_info);
    }
    return 0;
}
