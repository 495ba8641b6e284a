// The packed CPU backend against the scalar reference (docs/method.md), over
// random configurations of every policy: same widths, same outliers, and
// reconstructions equal up to float rounding.

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "qaq/qaq.hpp"
#include "qaq/reference/quantize.hpp"

namespace {

struct random_case {
    qaq::quantizer_config config;
    qaq::kv_shape shape;
    std::int64_t query_heads = 1, rows = 1;
};

random_case draw(std::mt19937& rng) {
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    random_case c;
    const std::int64_t dims[] = {1, 4, 8, 16, 64};
    c.shape = {pick(1, 3), pick(1, 2), pick(1, 3), pick(1, 12), dims[pick(0, 4)]};
    c.query_heads = c.shape.heads * pick(1, 3);
    c.rows = pick(1, static_cast<int>(c.shape.tokens));
    qaq::quantizer_config& q = c.config;
    q.level = static_cast<qaq::group_level>(pick(0, 3));
    if (q.level == qaq::group_level::sub_head) {
        q.group_dims = static_cast<int>(c.shape.head_dim);
        while (q.group_dims > 1 && pick(0, 1)) q.group_dims /= 2;  // a power of two dividing head_dim
        if (c.shape.head_dim % q.group_dims != 0) q.group_dims = 1;
    }
    q.symmetric = pick(0, 1);
    q.codec = static_cast<qaq::codec_kind>(pick(0, 2));
    q.precision = pick(0, 1) ? qaq::storage_precision::fp16 : qaq::storage_precision::fp32;
    const double ratios[] = {0.0, 0.01, 0.1, 0.3};
    q.outlier_ratio = ratios[pick(0, 3)];
    q.role = pick(0, 1) ? qaq::cache_role::key : qaq::cache_role::value;
    const bool adaptive = q.codec != qaq::codec_kind::normal && pick(0, 2) > 0;
    if (adaptive) {
        q.bits = q.role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention;
        q.window = pick(1, 4);
        q.target_error = std::pow(10.0, std::uniform_real_distribution<double>(-3, 0)(rng));
        q.bits_min = pick(0, 4);
        q.bits_max = pick(q.bits_min, 12);
        q.q_norm = std::pow(10.0, std::uniform_real_distribution<double>(-1, 2)(rng));
    } else {
        q.bits = qaq::bits_kind::fixed;
        q.fixed_bits = pick(0, 10);
    }
    return c;
}

std::vector<float> draw_data(std::mt19937& rng, std::int64_t n) {
    std::student_t_distribution<float> heavy(3.0f);
    std::normal_distribution<float> normal(0.5f, 2.0f);
    const int kind = std::uniform_int_distribution<int>(0, 2)(rng);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = kind == 0 ? normal(rng) : (kind == 1 ? heavy(rng) : std::exp(normal(rng) * 0.5f));
    // Some exact duplicates, a constant stretch, and a rare non-finite value.
    for (std::size_t i = 0; i + 1 < x.size(); i += 7) x[i + 1] = x[i];
    if (x.size() > 40 && kind == 2) std::fill(x.begin(), x.begin() + 20, 1.25f);
    if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) x[x.size() / 2] = std::numeric_limits<float>::quiet_NaN();
    return x;
}

std::vector<float> draw_attention(std::mt19937& rng, const random_case& c) {
    const std::int64_t T = c.shape.tokens;
    std::vector<float> a(static_cast<std::size_t>(c.shape.layers * c.shape.batch * c.query_heads * c.rows * T), 0.0f);
    std::normal_distribution<float> logit(0.0f, 2.0f);
    for (std::size_t row = 0; row < a.size() / static_cast<std::size_t>(T); ++row) {
        const std::int64_t r = static_cast<std::int64_t>(row) % c.rows, visible = T - c.rows + r + 1;
        double sum = 0;
        for (std::int64_t t = 0; t < visible; ++t) sum += (a[row * T + t] = std::exp(logit(rng)));
        for (std::int64_t t = 0; t < visible; ++t) a[row * T + t] = static_cast<float>(a[row * T + t] / sum);
    }
    return a;
}

}  // namespace

TEST_CASE("packed backend equals the scalar reference on random configurations", "[reference][backend]") {
    std::mt19937 rng(20260);
    int cases = 0;
    for (int iteration = 0; iteration < 600; ++iteration) {
        const random_case c = draw(rng);
        const auto data = draw_data(rng, c.shape.element_count());
        const auto attention = draw_attention(rng, c);
        const auto cache = qaq::kv_view<const float>::contiguous(data.data(), c.shape);
        const auto att = qaq::attention_view<const float>::contiguous(
            attention.data(), {c.shape.layers, c.shape.batch, c.query_heads, c.rows, c.shape.tokens});
        INFO("iteration " << iteration << " level " << qaq::to_string(c.config.level) << " codec "
                          << qaq::to_string(c.config.codec) << " bits " << qaq::to_string(c.config.bits) << " shape "
                          << qaq::to_string(c.shape));

        qaq::reference::result expected;
        try {
            expected = qaq::reference::quantize(c.config, cache, att);
        } catch (const qaq::error&) {
            // Values beyond fp16 parameters: the backend must refuse them too.
            CHECK_THROWS_AS(qaq::any_quantizer(c.config).quantize(cache, att), qaq::error);
            continue;
        }
        const qaq::any_quantizer quantizer(c.config);
        const auto packed = quantizer.quantize(cache, att);
        std::vector<float> got(data.size());
        quantizer.dequantize(packed, qaq::kv_view<float>::contiguous(got.data(), c.shape));

        REQUIRE(packed.layout.bits_shape() == expected.bits_shape);
        REQUIRE(std::vector<int>(packed.widths.begin(), packed.widths.end()) == expected.bits);
        // Outliers: the positions in the packed store are the reference mask.
        std::int64_t outliers = 0;
        for (auto m : expected.outlier_mask) outliers += m;
        REQUIRE(packed.outlier_count() == outliers);
        for (std::size_t i = 0; i < got.size(); ++i) {
            if (std::isnan(expected.dequantized[i])) {
                REQUIRE(std::isnan(got[i]));
                continue;
            }
            const float tolerance = 4 * std::numeric_limits<float>::epsilon() * (std::fabs(expected.dequantized[i]) + 1.0f);
            REQUIRE(std::fabs(got[i] - expected.dequantized[i]) <= tolerance);
        }
        const auto accounting = quantizer.accounting(packed);
        CHECK(accounting.average_bits == Approx(expected.average_bits_reference));
        CHECK(accounting.compression_ratio == Approx(expected.compression_ratio_reference));
        ++cases;
    }
    CHECK(cases > 500);
}
