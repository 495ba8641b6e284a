// "Write your own policy", as tests: docs/policies.md quotes the two policies
// below, and this file is their source of truth.
//
//   recency_bits   a bit-allocation policy: the newest tokens get more bits
//   top_magnitude  an outlier policy: the k largest |x| of each group stay exact
//
// Each is composed with the library's own policies in qaq::quantizer<...>, and
// every expectation (widths, outlier positions, parameters, error bounds, byte
// counts) is computed here by hand, independently of the library.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "qaq/qaq.hpp"

namespace {

// ---------------------------------------------------------------------------
// (a) A bit-allocation policy: a window of recent tokens at high precision.
//
// StreamingLLM and KIVI keep the newest tokens at high precision because the
// next queries attend to them most. recency_bits gives the last `recent`
// tokens `high` bits and every older token `low` bits. It reads only the
// group's token position, never its values or any attention.
// ---------------------------------------------------------------------------
struct recency_bits {
    int recent = 32;  // how many of the newest tokens get `high`
    int low = 2;
    int high = 8;

    static constexpr bool is_bits_policy = true;    // the mark quantizer<> checks for
    static constexpr bool needs_attention = false;  // quantize() needs no attention tensor
    static constexpr bool adaptive = false;         // widths do not come from the range/error
                                                    // formula, so every codec accepts it
    static constexpr const char* name = "recency";

    recency_bits(int recent_tokens, int low_bits, int high_bits)
        : recent(recent_tokens), low(low_bits), high(high_bits) {
        QAQ_CHECK(recent_tokens >= 0, "recent is ", recent_tokens, ", expected >= 0");
        QAQ_CHECK(low_bits >= 0 && low_bits <= high_bits && high_bits <= qaq::max_bits, "bits ", low_bits,
                  "..", high_bits, " are not an interval inside 0..", qaq::max_bits);
    }
    int bits_min() const noexcept { return low; }
    int bits_max() const noexcept { return high; }  // quantize() sizes its code buffer with it
    int window() const noexcept { return 1; }       // attention rows to look back over

    // Called once per group; c.tokens is T, c.token the group's token index.
    int operator()(const qaq::bits::context& c) const noexcept {
        return c.token >= c.tokens - recent ? high : low;
    }
};

// ---------------------------------------------------------------------------
// (b) An outlier policy: the k largest magnitudes of each group stay exact.
//
// Where outliers::quantile cuts both tails at a ratio, top_magnitude keeps a
// fixed number of values per group. Every outlier policy must also mark the
// non-finite values (NaN, +-Inf): they would poison the group's statistics.
// ---------------------------------------------------------------------------
struct top_magnitude {
    int k = 1;

    static constexpr bool is_outlier_policy = true;  // the mark quantizer<> checks for
    static constexpr const char* name = "top_magnitude";

    explicit top_magnitude(int count) : k(count) { QAQ_CHECK(count >= 0, "k is ", count, ", expected >= 0"); }

    // The fraction `a` the original's reference accounting charges at 16 bits.
    // A fixed count has no fixed fraction: 0 keeps it out of that estimate; the
    // packed byte_report counts every outlier byte regardless.
    double ratio() const noexcept { return 0.0; }

    // Sets is_outlier[i] to 1 for each outlier of the n values and 0 otherwise;
    // returns how many it marked. `scratch` is the caller's room for n floats.
    std::int64_t mark(const float* group, std::int64_t n, std::uint8_t* is_outlier, float* scratch) const {
        // 1. The magnitudes of the finite values; the keep-th largest is the threshold.
        std::int64_t finite = 0;
        for (std::int64_t i = 0; i < n; ++i)
            if (std::isfinite(group[i])) scratch[finite++] = std::fabs(group[i]);
        const std::int64_t keep = std::min<std::int64_t>(k, finite);
        float threshold = std::numeric_limits<float>::infinity();
        if (keep > 0) {
            std::nth_element(scratch, scratch + (keep - 1), scratch + finite, std::greater<float>());
            threshold = scratch[keep - 1];
        }
        // 2. Every non-finite value and every magnitude above the threshold.
        std::int64_t count = 0, finite_marked = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            const bool finite_value = std::isfinite(group[i]);
            const bool out = !finite_value || std::fabs(group[i]) > threshold;
            is_outlier[i] = out;
            count += out;
            finite_marked += out && finite_value;
        }
        // 3. Ties at the threshold, lowest position first, until exactly `keep` finite ones.
        for (std::int64_t i = 0; i < n && finite_marked < keep; ++i) {
            if (is_outlier[i] || std::fabs(group[i]) != threshold) continue;
            is_outlier[i] = 1;
            ++count;
            ++finite_marked;
        }
        return count;
    }
};

// ---------------------------------------------------------------------------
// Test helpers: independent expectations.
// ---------------------------------------------------------------------------

constexpr auto fp16 = qaq::storage_precision::fp16;

std::vector<float> normal_data(std::int64_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = dist(rng);
    return x;
}

qaq::kv_view<const float> view(const std::vector<float>& x, const qaq::kv_shape& s) {
    return qaq::kv_view<const float>::contiguous(x.data(), s);
}

/// The recency schedule by hand, in the group order of docs/method.md:
/// (b, t) outermost, then `groups_per_token` groups of that token.
std::vector<std::uint8_t> recency_schedule(const qaq::kv_shape& s, std::int64_t groups_per_token, int recent,
                                           int low, int high) {
    std::vector<std::uint8_t> widths;
    for (std::int64_t b = 0; b < s.batch; ++b)
        for (std::int64_t t = 0; t < s.tokens; ++t)
            for (std::int64_t g = 0; g < groups_per_token; ++g)
                widths.push_back(static_cast<std::uint8_t>(t >= s.tokens - recent ? high : low));
    return widths;
}

/// The outlier positions top_magnitude(k) should mark, by a plain sort: every
/// non-finite position, plus the k finite positions of largest |x| (ties: lowest
/// position first); ascending.
std::vector<std::uint32_t> expected_outliers(const float* group, std::int64_t n, int k) {
    std::vector<std::pair<float, std::uint32_t>> finite;  // (-|x|, position): ascending = largest first
    std::vector<std::uint32_t> out;
    for (std::int64_t i = 0; i < n; ++i) {
        if (std::isfinite(group[i]))
            finite.emplace_back(-std::fabs(group[i]), static_cast<std::uint32_t>(i));
        else
            out.push_back(static_cast<std::uint32_t>(i));
    }
    std::sort(finite.begin(), finite.end());
    for (std::size_t j = 0; j < finite.size() && j < static_cast<std::size_t>(k); ++j) out.push_back(finite[j].second);
    std::sort(out.begin(), out.end());
    return out;
}

/// The outlier positions the packed store holds for each group.
std::vector<std::vector<std::uint32_t>> stored_outliers(const qaq::packed_tensor& p) {
    std::vector<std::vector<std::uint32_t>> per_group(static_cast<std::size_t>(p.group_count()));
    if (p.outlier_counts.empty()) return per_group;
    std::int64_t cursor = 0;
    for (std::int64_t g = 0; g < p.group_count(); ++g)
        for (std::uint32_t j = 0; j < p.outlier_counts[g]; ++j)
            per_group[static_cast<std::size_t>(g)].push_back(p.outlier_positions[cursor++]);
    return per_group;
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

// ---------------------------------------------------------------------------
// recency_bits
// ---------------------------------------------------------------------------

TEST_CASE("recency_bits: the widths array is the recent-window schedule at every level", "[custom_policy][bits]") {
    const qaq::kv_shape shape{2, 2, 3, 7, 16};
    const auto x = normal_data(shape.element_count(), 11);
    const recency_bits schedule(3, 2, 6);

    struct level_case {
        qaq::group_level level;
        int group_dims;
        std::int64_t groups_per_token;  // by hand: L*H*D / group size
    };
    for (const level_case c : {level_case{qaq::group_level::token, 0, 1}, level_case{qaq::group_level::layer, 0, 2},
                               level_case{qaq::group_level::head, 0, 6}, level_case{qaq::group_level::sub_head, 4, 24}}) {
        INFO("level " << qaq::to_string(c.level));
        qaq::quantizer<recency_bits, qaq::outliers::none, qaq::storage::uniform_zero_point> q(
            schedule, {}, {false, fp16}, c.level, c.group_dims);
        const auto packed = q.quantize(view(x, shape));
        CHECK(packed.widths == recency_schedule(shape, c.groups_per_token, 3, 2, 6));
    }
}

TEST_CASE("recency_bits: window edges and the choose_bits building block", "[custom_policy][bits]") {
    const qaq::kv_shape shape{1, 1, 2, 5, 8};
    const auto x = normal_data(shape.element_count(), 12);
    for (int recent : {0, 1, 5, 9}) {
        INFO("recent " << recent);
        qaq::quantizer<recency_bits, qaq::outliers::none, qaq::storage::uniform_mean_centred> q(
            recency_bits(recent, 1, 7), {}, {}, qaq::group_level::head);
        CHECK(q.quantize(view(x, shape)).widths == recency_schedule(shape, 2, recent, 1, 7));
        // The group-level building block asks the policy directly; range and attention are ignored.
        for (std::int64_t t = 0; t < 5; ++t) CHECK(q.choose_bits(123.0f, 0.5f, 5, t) == (t >= 5 - recent ? 7 : 1));
    }
    CHECK_THROWS_WITH(recency_bits(-1, 2, 4), Catch::Contains("expected >= 0"));
    CHECK_THROWS_WITH(recency_bits(4, 5, 4), Catch::Contains("not an interval"));
    CHECK_THROWS_AS(recency_bits(4, 2, 17), qaq::error);
}

TEST_CASE("recency_bits composes with quantile outliers and the normal codec", "[custom_policy][bits]") {
    // adaptive = false: the normal codec, which has no error formula for
    // range-driven widths, accepts a schedule that never reads the range.
    static_assert(!recency_bits::adaptive && !qaq::storage::normal_quantile::supports_adaptive_bits, "");
    const qaq::kv_shape shape{1, 1, 2, 6, 64};
    const auto x = normal_data(shape.element_count(), 13);
    qaq::quantizer<recency_bits, qaq::outliers::quantile, qaq::storage::normal_quantile> q(
        recency_bits(2, 3, 5), qaq::outliers::quantile(0.05), {}, qaq::group_level::head);
    const auto packed = q.quantize(view(x, shape));
    const auto widths = recency_schedule(shape, 2, 2, 3, 5);
    CHECK(packed.widths == widths);
    std::int64_t code_bytes = 0;
    for (auto w : widths) code_bytes += ceil_div(64 * w, 8);
    CHECK(packed.bytes().codes == code_bytes);  // 4 old tokens x 2 heads x 24 bytes + 2 recent x 2 x 40
    // quantile(0.05) at N = 64: k_lo = ceil(1.6) = 2, k_hi = floor(62.4) = 62, so 2 + 2 per group.
    CHECK(packed.outlier_count() == 4 * 12);
}

// ---------------------------------------------------------------------------
// top_magnitude
// ---------------------------------------------------------------------------

TEST_CASE("top_magnitude: the outliers of a group are its k largest magnitudes", "[custom_policy][outliers]") {
    const qaq::kv_shape shape{2, 1, 2, 5, 32};
    const auto x = normal_data(shape.element_count(), 21);
    for (int k : {0, 1, 3, 8}) {
        INFO("k " << k);
        qaq::quantizer<qaq::bits::fixed, top_magnitude, qaq::storage::uniform_zero_point> q(
            qaq::bits::fixed(4), top_magnitude(k), {false, fp16}, qaq::group_level::head);
        const auto packed = q.quantize(view(x, shape));
        const auto stored = stored_outliers(packed);
        std::vector<float> group(32), scratch(32);
        std::vector<std::uint8_t> mask(32);
        for (std::int64_t g = 0; g < packed.group_count(); ++g) {
            packed.layout.gather(view(x, shape), g, group.data());
            const auto expected = expected_outliers(group.data(), 32, k);
            CHECK(stored[static_cast<std::size_t>(g)] == expected);
            // The analyze building block marks the same positions and counts the rest.
            const qaq::group_statistics stats = q.analyze(group.data(), 32, mask.data(), scratch.data());
            std::vector<std::uint32_t> marked;
            for (std::uint32_t i = 0; i < 32; ++i)
                if (mask[i]) marked.push_back(i);
            CHECK(marked == expected);
            CHECK(stats.count == 32 - k);
        }
        CHECK(packed.outlier_count() == k * packed.group_count());
    }
}

TEST_CASE("top_magnitude: non-finite values always, exactly k finite ones, ties to the lowest position",
          "[custom_policy][outliers]") {
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    // One head of 8 dims: magnitudes 2 tie four ways; NaN and +-Inf on top of k = 3.
    const std::vector<float> x = {0.5f, -2.0f, nan, 2.0f, inf, -2.0f, 2.0f, -inf};
    qaq::quantizer<qaq::bits::fixed, top_magnitude, qaq::storage::uniform_zero_point> q(
        qaq::bits::fixed(2), top_magnitude(3), {false, fp16}, qaq::group_level::head);
    const auto packed = q.quantize(view(x, {1, 1, 1, 1, 8}));
    CHECK(stored_outliers(packed)[0] == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 7});
    std::vector<float> y(8);
    q.dequantize(packed, qaq::kv_view<float>::contiguous(y.data(), {1, 1, 1, 1, 8}));
    CHECK(std::isnan(y[2]));
    CHECK(y[4] == inf);
    CHECK(y[7] == -inf);
    CHECK(y[1] == -2.0f);
    CHECK(y[3] == 2.0f);
    CHECK(y[5] == -2.0f);
    // The quantized part is {0.5, 2.0}: min 0.5, max 2, so both are grid points at 2 bits.
    CHECK(y[0] == 0.5f);
    CHECK(y[6] == 2.0f);

    // k at least the group size: everything is exact, nothing is quantized.
    qaq::quantizer<qaq::bits::fixed, top_magnitude, qaq::storage::uniform_zero_point> all(
        qaq::bits::fixed(2), top_magnitude(100), {false, qaq::storage_precision::fp32}, qaq::group_level::head);
    const std::vector<float> z = {0.1f, -0.2f, 0.3f, 7.0f};
    std::vector<float> w(4);
    all.dequantize(all.quantize(view(z, {1, 1, 1, 1, 4})), qaq::kv_view<float>::contiguous(w.data(), {1, 1, 1, 1, 4}));
    CHECK(w == z);
    CHECK_THROWS_AS(top_magnitude(-1), qaq::error);
}

// Every finite fp16 value, ascending: directed rounding by search, independent of the library.
const std::vector<float>& fp16_values() {
    static const std::vector<float> values = [] {
        std::vector<float> v;
        for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) {
            const float x = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(bits)));
            if (std::isfinite(x)) v.push_back(x);
        }
        std::sort(v.begin(), v.end());
        return v;
    }();
    return values;
}
float fp16_at_or_below(float x) {  // the largest fp16 <= x
    const auto& v = fp16_values();
    return *(std::upper_bound(v.begin(), v.end(), x) - 1);
}
float fp16_at_or_above(float x) {  // the smallest fp16 >= x
    const auto& v = fp16_values();
    return *std::lower_bound(v.begin(), v.end(), x);
}

TEST_CASE("top_magnitude + zero-point codec: parameters, s/2 error bound, outliers as the nearest fp16",
          "[custom_policy][outliers][error_budget]") {
    const qaq::kv_shape shape{2, 1, 3, 4, 48};
    const auto x = normal_data(shape.element_count(), 22);
    const int k = 2;
    for (int bits : {1, 3, 4, 7}) {
        INFO("bits " << bits);
        qaq::quantizer<qaq::bits::fixed, top_magnitude, qaq::storage::uniform_zero_point> q(
            qaq::bits::fixed(bits), top_magnitude(k), {false, fp16}, qaq::group_level::head);
        const auto packed = q.quantize(view(x, shape));
        std::vector<float> y(x.size());
        q.dequantize(packed, qaq::kv_view<float>::contiguous(y.data(), shape));
        const float top = static_cast<float>((1u << bits) - 1u);

        std::vector<float> in(48), out(48);
        for (std::int64_t g = 0; g < packed.group_count(); ++g) {
            INFO("group " << g);
            packed.layout.gather(view(x, shape), g, in.data());
            packed.layout.gather(qaq::kv_view<const float>::contiguous(y.data(), shape), g, out.data());
            const auto outliers = expected_outliers(in.data(), 48, k);
            std::vector<std::uint8_t> is_outlier(48, 0);
            for (auto i : outliers) is_outlier[i] = 1;

            // The codec's parameters by hand: z = min rounded down to fp16, s = (max - z) / (2^B - 1)
            // rounded up to fp16 and raised an fp16 step at a time until z + (2^B - 1) s >= max.
            float lo = std::numeric_limits<float>::infinity(), hi = -lo;
            for (int i = 0; i < 48; ++i)
                if (!is_outlier[i]) lo = std::min(lo, in[i]), hi = std::max(hi, in[i]);
            const float z16 = fp16_at_or_below(lo);
            float s16 = fp16_at_or_above((hi - z16) / top);
            while (static_cast<double>(z16) + static_cast<double>(top) * s16 < hi) s16 = fp16_at_or_above(std::nextafter(s16, 1e9f));
            const std::uint8_t* stored = &packed.parameters[static_cast<std::size_t>(g * 4)];
            CHECK(qaq::load_value(fp16, stored) == z16);
            CHECK(qaq::load_value(fp16, stored + 2) == s16);

            // The grid covers [min, max], so every non-outlier is within s/2 of the stored grid.
            for (int i = 0; i < 48; ++i) {
                INFO("position " << i << " x " << in[i] << " x' " << out[i]);
                if (is_outlier[i])
                    CHECK(out[i] == qaq::round_to(fp16, in[i]));
                else
                    CHECK(std::fabs(out[i] - in[i]) <= s16 / 2 + 1e-6f * (1.0f + std::fabs(in[i])));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Both custom policies together: every byte accounted for.
// ---------------------------------------------------------------------------

TEST_CASE("recency_bits + top_magnitude: the byte report is the arithmetic", "[custom_policy][bytes]") {
    struct size_case {
        qaq::kv_shape shape;
        qaq::group_level level;
        std::int64_t n;                 // group size
        std::int64_t groups_per_token;  // groups of one (batch, token)
        int k;
        std::int64_t count_bytes, position_bytes;  // narrowest width holding n and n - 1
    };
    const size_case cases[] = {
        {{2, 1, 2, 6, 100}, qaq::group_level::head, 100, 4, 2, 1, 1},     // 100 codes: ceil(n*B/8) rounds up
        {{2, 1, 3, 6, 100}, qaq::group_level::layer, 300, 2, 3, 2, 2},    // n = 300 > 255: 2-byte index
        {{2, 1, 2, 6, 128}, qaq::group_level::head, 128, 4, 0, 0, 0},     // k = 0: no outlier index held
        {{1, 2, 1, 5, 256}, qaq::group_level::head, 256, 1, 1, 2, 1},     // count 256 needs 2, position 255 fits 1
    };
    for (const auto& c : cases) {
        INFO(recency_bits::name << " + " << top_magnitude::name << ", group size " << c.n << ", k " << c.k);
        const auto x = normal_data(c.shape.element_count(), 31);
        qaq::quantizer<recency_bits, top_magnitude, qaq::storage::uniform_zero_point> q(
            recency_bits(2, 3, 5), top_magnitude(c.k), {false, fp16}, c.level);
        const auto packed = q.quantize(view(x, c.shape));
        const auto widths = recency_schedule(c.shape, c.groups_per_token, 2, 3, 5);
        REQUIRE(packed.widths == widths);

        const auto groups = static_cast<std::int64_t>(widths.size());
        std::int64_t codes = 0;
        for (auto w : widths) codes += ceil_div(c.n * w, 8);
        const auto b = packed.bytes();
        CHECK(b.codes == codes);
        CHECK(b.parameters == groups * 2 * 2);  // asymmetric zero-point: min and scale, fp16
        CHECK(b.widths == groups);              // one width byte per group
        CHECK(b.outlier_counts == groups * c.count_bytes);
        CHECK(b.outlier_positions == groups * c.k * c.position_bytes);
        CHECK(b.outlier_values == groups * c.k * 2);  // fp16
        CHECK(b.elements == c.shape.element_count());
        const std::int64_t total =
            codes + groups * (4 + 1 + c.count_bytes + c.k * c.position_bytes + c.k * 2);
        CHECK(b.total() == total);
        CHECK(b.compression_ratio() == Approx(2.0 * static_cast<double>(c.shape.element_count()) / total));
    }
}
