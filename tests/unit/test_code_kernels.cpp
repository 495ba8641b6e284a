// The CPU kernels over packed codes: every SIMD path against its scalar path
// and against plain unpack-and-multiply (random widths, group sizes that are
// not multiples of the vector width, several query heads), fp16 conversion,
// and the cache's attention with the SIMD kernels on and off.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qaq/backend/cpu/code_kernels.hpp"
#include "qaq/backend/cpu/simd.hpp"
#include "qaq/qaq.hpp"

namespace {

namespace k = qaq::backend::kernels;
namespace simd = qaq::backend::simd;

std::vector<std::uint8_t> random_bytes(std::mt19937& rng, std::size_t n) {
    std::vector<std::uint8_t> b(n);
    for (auto& x : b) x = static_cast<std::uint8_t>(rng());
    return b;
}

std::vector<float> random_floats(std::mt19937& rng, std::size_t n, float sigma = 1.0f) {
    std::normal_distribution<float> d(0.0f, sigma);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Both settings of the SIMD switch (the AVX2 one only where the processor has AVX2).
std::vector<bool> simd_settings() {
    std::vector<bool> s{false};
    if (simd::avx2_supported()) s.push_back(true);
    return s;
}

}  // namespace

TEST_CASE("which widths and group sizes have a kernel", "[kernels]") {
    for (int width : {1, 2, 4, 8}) {
        CHECK(k::has_plane_kernel(width, k::codes_per_word(width)));
        CHECK_FALSE(k::has_plane_kernel(width, k::codes_per_word(width) + 4));  // a partial word
    }
    for (int width : {3, 5, 6, 7}) {
        CHECK(k::has_plane_kernel(width, 64));             // 24..56 bytes
        CHECK_FALSE(k::has_plane_kernel(width, 60));       // not whole blocks of eight
        CHECK(k::plane_position(13, width) == 13);         // natural order
    }
    CHECK_FALSE(k::has_plane_kernel(3, 40));  // 15 bytes: shorter than one 16-byte window
    CHECK(k::has_plane_kernel(3, 48));        // 18 bytes
    for (int width : {0, 9, 12, 16}) CHECK_FALSE(k::has_plane_kernel(width, 64));
}

TEST_CASE("plane positions: compile-time and run-time widths agree and are permutations", "[kernels]") {
    for (int width : {1, 2, 4, 8}) {
        const std::int64_t n = 3 * k::codes_per_word(width);
        std::vector<int> seen(static_cast<std::size_t>(n), 0);
        std::vector<float> in(static_cast<std::size_t>(n)), plane(in.size()), back(in.size(), 0.0f);
        for (std::int64_t i = 0; i < n; ++i) {
            in[static_cast<std::size_t>(i)] = static_cast<float>(i);
            ++seen[static_cast<std::size_t>(k::plane_position(i, width))];
        }
        for (int s : seen) REQUIRE(s == 1);
        k::to_plane_order(in.data(), n, width, plane.data());
        for (std::int64_t i = 0; i < n; ++i)
            REQUIRE(plane[static_cast<std::size_t>(k::plane_position(i, width))] == in[static_cast<std::size_t>(i)]);
        k::from_plane_order(plane.data(), n, width, back.data());
        REQUIRE(back == in);
        k::add_from_plane_order(plane.data(), n, width, back.data());
        for (std::int64_t i = 0; i < n; ++i) REQUIRE(back[static_cast<std::size_t>(i)] == 2.0f * in[static_cast<std::size_t>(i)]);
    }
}

TEST_CASE("dot_groups and axpy_groups equal unpacked codes times queries, SIMD and scalar", "[kernels]") {
    std::mt19937 rng(7);
    // Enough trials that every width meets one query head (the eight-group kernel) with group
    // counts on both sides of eight, and every head step with odd and even word counts.
    // Widths that do not divide a byte run in natural order over n = 8 m codes (at least 16 bytes).
    for (int trial = 0; trial < 480; ++trial) {
        const int width = k::plane_widths[trial % k::plane_slot_count];
        const std::int64_t n = k::divides_byte(width)
                                   ? k::codes_per_word(width) * (1 + static_cast<std::int64_t>(rng() % 5))  // 1..5 words
                                   : 8 * ((128 / width + 7) / 8 + static_cast<std::int64_t>(rng() % 12));
        REQUIRE(k::has_plane_kernel(width, n));
        const std::int64_t count = 1 + static_cast<std::int64_t>(rng() % 19);
        const std::int64_t Q = 1 + static_cast<std::int64_t>(rng() % 6);
        const std::int64_t stride = n + 3;  // heads not adjacent
        std::vector<std::vector<std::uint8_t>> groups;
        std::vector<const std::uint8_t*> pointers;
        for (std::int64_t i = 0; i < count; ++i) groups.push_back(random_bytes(rng, static_cast<std::size_t>(n * width / 8)));
        for (auto& g : groups) pointers.push_back(g.data());
        const auto q = random_floats(rng, static_cast<std::size_t>(Q * stride));
        const auto weights = random_floats(rng, static_cast<std::size_t>(count * Q));
        std::vector<float> q_plane(q.size(), 0.0f);
        for (std::int64_t j = 0; j < Q; ++j) k::to_plane_order(&q[static_cast<std::size_t>(j * stride)], n, width, &q_plane[static_cast<std::size_t>(j * stride)]);

        // Expected, in double from the unpacked codes in natural order.
        std::vector<double> dots(static_cast<std::size_t>(count * Q), 0.0), acc(static_cast<std::size_t>(Q * n), 0.0);
        std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < count; ++i) {
            qaq::unpack_codes(pointers[static_cast<std::size_t>(i)], n, width, codes.data());
            for (std::int64_t j = 0; j < Q; ++j)
                for (std::int64_t e = 0; e < n; ++e) {
                    dots[static_cast<std::size_t>(i * Q + j)] += double(q[static_cast<std::size_t>(j * stride + e)]) * codes[static_cast<std::size_t>(e)];
                    acc[static_cast<std::size_t>(j * n + e)] += double(weights[static_cast<std::size_t>(i * Q + j)]) * codes[static_cast<std::size_t>(e)];
                }
        }
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            std::vector<float> got(static_cast<std::size_t>(count * Q), -1.0f);
            k::dot_groups(width, pointers.data(), count, q_plane.data(), Q, stride, n, got.data());
            for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == Approx(dots[i]).margin(1e-3).epsilon(1e-5));
            std::vector<float> plane_acc(static_cast<std::size_t>(Q * stride), 1.0f), natural(static_cast<std::size_t>(n));
            k::axpy_groups(width, pointers.data(), count, weights.data(), Q, plane_acc.data(), stride, n);
            for (std::int64_t j = 0; j < Q; ++j) {
                k::from_plane_order(&plane_acc[static_cast<std::size_t>(j * stride)], n, width, natural.data());
                for (std::int64_t e = 0; e < n; ++e)
                    REQUIRE(natural[static_cast<std::size_t>(e)] - 1.0f ==
                            Approx(acc[static_cast<std::size_t>(j * n + e)]).margin(1e-3).epsilon(1e-5));
                // Nothing outside the n accumulators of a head is touched.
                for (std::int64_t e = n; e < stride; ++e) REQUIRE(plane_acc[static_cast<std::size_t>(j * stride + e)] == 1.0f);
            }
        }
    }
}

TEST_CASE("fp16 to float: every bit pattern, scalar and vector", "[kernels]") {
    std::vector<std::uint8_t> bytes(2 * 65536);
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const std::uint16_t v = static_cast<std::uint16_t>(h);
        std::memcpy(&bytes[2 * h], &v, 2);
    }
    for (bool on : simd_settings()) {
        const simd::scoped_simd setting(on);
        std::vector<float> out(65536 + 3, 0.0f);
        simd::halves_to_floats(bytes.data(), 65536 - 5, out.data());  // a length that is not a multiple of 8
        simd::halves_to_floats(bytes.data() + 2 * (65536 - 5), 5, out.data() + (65536 - 5));
        for (std::uint32_t h = 0; h < 65536; ++h) {
            const float expected = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(h)));
            const float scalar = simd::half_to_float(static_cast<std::uint16_t>(h));
            if (std::isnan(expected)) {
                REQUIRE(std::isnan(scalar));
                REQUIRE(std::isnan(out[h]));
            } else {
                REQUIRE(std::memcmp(&scalar, &expected, 4) == 0);
                REQUIRE(std::memcmp(&out[h], &expected, 4) == 0);
            }
        }
    }
}

TEST_CASE("affine_forms equals load_parameters + affine group by group", "[kernels]") {
    std::mt19937 rng(9);
    using zp = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
    using mc = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_mean_centred>;
    using nq = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::normal_quantile>;
    auto check = [&](const auto& q, bool expect_affine) {
        const std::int64_t groups = 150, stride = 1 + static_cast<std::int64_t>(rng() % 3);
        std::vector<std::uint8_t> parameters(static_cast<std::size_t>(groups * stride * q.parameter_bytes()));
        std::vector<int> widths(static_cast<std::size_t>(groups));
        for (std::int64_t g = 0; g < groups; ++g) {
            qaq::codec_parameters p{std::normal_distribution<float>(0.0f, 3.0f)(rng), std::uniform_real_distribution<float>(0.0f, 2.0f)(rng)};
            widths[static_cast<std::size_t>(g)] = static_cast<int>(rng() % 10);
            q.store_parameters(p, parameters.data() + g * stride * q.parameter_bytes());
        }
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            std::vector<float> scales(static_cast<std::size_t>(groups), -7.0f), offsets(scales);
            REQUIRE(q.affine_forms(parameters.data(), stride, widths.data(), groups, scales.data(), offsets.data()) == expect_affine);
            if (!expect_affine) continue;
            for (std::int64_t g = 0; g < groups; ++g) {
                const int w = widths[static_cast<std::size_t>(g)];
                qaq::affine_code a;
                if (!q.affine(q.load_parameters(parameters.data() + g * stride * q.parameter_bytes(), w), w, a)) {
                    REQUIRE(w == 0);
                    continue;
                }
                REQUIRE(scales[static_cast<std::size_t>(g)] == a.scale);
                REQUIRE(offsets[static_cast<std::size_t>(g)] == a.centre - a.bias * a.scale);
            }
            // One width for every group (the codec's batch form where it has one), bit for bit.
            for (int w = 0; w <= 9; ++w) {
                std::vector<float> s1(static_cast<std::size_t>(groups), -7.0f), o1(s1);
                REQUIRE(q.affine_forms_at_width(parameters.data(), stride, w, groups, s1.data(), o1.data()));
                for (std::int64_t g = 0; g < groups; ++g) {
                    qaq::affine_code a{};
                    if (w == 0) {
                        REQUIRE(s1[static_cast<std::size_t>(g)] == 0.0f);
                        REQUIRE(o1[static_cast<std::size_t>(g)] == 0.0f);
                        continue;
                    }
                    REQUIRE(q.affine(q.load_parameters(parameters.data() + g * stride * q.parameter_bytes(), w), w, a));
                    const float offset = a.centre - a.bias * a.scale;
                    REQUIRE(std::memcmp(&s1[static_cast<std::size_t>(g)], &a.scale, 4) == 0);
                    REQUIRE(std::memcmp(&o1[static_cast<std::size_t>(g)], &offset, 4) == 0);
                }
            }
        }
    };
    for (auto precision : {qaq::storage_precision::fp16, qaq::storage_precision::fp32})
        for (bool symmetric : {false, true}) {
            check(zp(qaq::bits::fixed(4), {}, {symmetric, precision}, qaq::group_level::head), true);
            check(mc(qaq::bits::fixed(4), {}, {symmetric, precision}, qaq::group_level::head), true);
        }
    check(nq(qaq::bits::fixed(4), {}, {}, qaq::group_level::head), false);
}

TEST_CASE("attend over packed codes: SIMD kernels equal the scalar path", "[kernels][kv_cache]") {
    // Fixed and adaptive widths (2..8 mixes plane and non-plane widths in one block), outliers,
    // head and sub_head groups, GQA; the cache is filled by decode steps and rebalanced.
    using keys_q = qaq::quantizer<qaq::bits::key_query_norm, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
    using values_q = qaq::quantizer<qaq::bits::value_attention, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
    std::mt19937 rng(5);
    for (auto level : {qaq::group_level::head, qaq::group_level::sub_head}) {
        const int dims = level == qaq::group_level::sub_head ? 32 : 0;
        const qaq::kv_cache_shape shape{1, 2, 8, 64, 200};
        qaq::quantized_kv_cache<keys_q, values_q> cache(
            shape, keys_q(qaq::bits::key_query_norm(20.0, 0.05, 2, 8, 3), qaq::outliers::quantile(0.03), {}, level, dims),
            values_q(qaq::bits::value_attention(3, 0.02, 2, 8), qaq::outliers::quantile(0.03), {}, level, dims));
        for (int step = 0; step < 150; ++step) {
            const auto kv = random_floats(rng, static_cast<std::size_t>(shape.kv_heads * shape.head_dim));
            const auto v = random_floats(rng, kv.size());
            cache.append(0, kv.data(), static_cast<std::int64_t>(kv.size()), v.data(), static_cast<std::int64_t>(v.size()));
            const auto q = random_floats(rng, static_cast<std::size_t>(shape.query_heads * shape.head_dim), 2.0f);
            std::vector<float> out(q.size()), p(static_cast<std::size_t>(shape.query_heads * cache.tokens(0)));
            cache.attend(0, q.data(), static_cast<std::int64_t>(q.size()), out.data(), static_cast<std::int64_t>(out.size()), p.data(),
                         static_cast<std::int64_t>(p.size()));
            cache.observe(0, p.data(), static_cast<std::int64_t>(p.size()));
            cache.rebalance();
        }
        const auto q = random_floats(rng, static_cast<std::size_t>(shape.query_heads * shape.head_dim), 2.0f);
        std::vector<std::vector<float>> outs, ps;
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            std::vector<float> out(q.size()), p(static_cast<std::size_t>(shape.query_heads * cache.tokens(0)));
            cache.attend(0, q.data(), static_cast<std::int64_t>(q.size()), out.data(), static_cast<std::int64_t>(out.size()), p.data(),
                         static_cast<std::int64_t>(p.size()));
            outs.push_back(out);
            ps.push_back(p);
        }
        for (std::size_t r = 1; r < outs.size(); ++r) {
            for (std::size_t i = 0; i < ps[0].size(); ++i) REQUIRE(ps[r][i] == Approx(ps[0][i]).margin(1e-7).epsilon(1e-5));
            for (std::size_t i = 0; i < outs[0].size(); ++i) REQUIRE(outs[r][i] == Approx(outs[0][i]).margin(1e-6).epsilon(1e-5));
        }
    }
}

namespace {

// Values whose quotients (x - centre) / scale sit on or next to rounding ties, plus ordinary ones.
std::vector<float> tie_values(std::mt19937& rng, std::int64_t n, const qaq::affine_code& a) {
    std::uniform_real_distribution<float> u(a.lowest - 2.0f, a.highest + 2.0f);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) {
        const int kind = static_cast<int>(rng() % 4);
        const float q = kind == 0 ? u(rng) : std::floor(u(rng)) + 0.5f;
        v = a.centre + q * a.scale;
        if (kind == 2) v = std::nextafter(v, HUGE_VALF);
        if (kind == 3) v = std::nextafter(v, -HUGE_VALF);
    }
    return x;
}

}  // namespace

TEST_CASE("affine encode + pack: SIMD codes equal the scalar definition at every width", "[kernels]") {
    namespace affine = qaq::backend::affine;
    std::mt19937 rng(17);
    for (int trial = 0; trial < 400; ++trial) {
        const int width = 1 + trial % 16;
        const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 200);  // not a multiple of 8 or 32 in general
        qaq::affine_code a;
        const bool mean_centred = rng() % 2;
        const float half = static_cast<float>(1u << (width - 1));
        a.centre = std::normal_distribution<float>(0.0f, 3.0f)(rng);
        a.scale = std::exp(std::uniform_real_distribution<float>(-8.0f, 2.0f)(rng));
        if (trial % 50 == 7) a.scale = 1e-40f;  // subnormal: 1/scale overflows
        a.lowest = mean_centred ? -half : 0.0f;
        a.highest = mean_centred ? half - 1.0f : static_cast<float>((1u << width) - 1u);
        a.bias = mean_centred ? half : 0.0f;
        auto x = tie_values(rng, n, a);
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(n), 0);
        const bool outliers = rng() % 3 == 0;
        if (outliers)
            for (std::int64_t i = 0; i < n; i += 1 + static_cast<std::int64_t>(rng() % 9)) {
                mask[static_cast<std::size_t>(i)] = 1;
                if (rng() % 2) x[static_cast<std::size_t>(i)] = std::numeric_limits<float>::quiet_NaN();
            }
        std::vector<std::uint32_t> expected(static_cast<std::size_t>(n)), scratch(static_cast<std::size_t>(n));
        affine::affine_codes_scalar(x.data(), outliers ? mask.data() : nullptr, n, a, expected.data());
        const std::int64_t bytes = qaq::packed_code_bytes(n, width);
        std::vector<std::uint8_t> packed_expected(static_cast<std::size_t>(bytes) + 8, 0xAB);
        qaq::pack_codes(expected.data(), n, width, packed_expected.data());
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            std::vector<std::uint8_t> packed(static_cast<std::size_t>(bytes) + 8, 0xAB);
            if (!affine::encode(x.data(), outliers ? mask.data() : nullptr, n, width, a, scratch.data(), packed.data())) {
                REQUIRE((!on || !std::isfinite(1.0f / a.scale)));  // no SIMD path ran: the caller encodes
                continue;
            }
            REQUIRE(packed == packed_expected);  // the same codes, and no byte written past the group
            std::vector<float> decoded(static_cast<std::size_t>(n) + 1, -7.0f), reference(static_cast<std::size_t>(n));
            REQUIRE(affine::decode(packed.data(), n, width, a, decoded.data()));
            REQUIRE(decoded[static_cast<std::size_t>(n)] == -7.0f);
            for (std::int64_t i = 0; i < n; ++i) {
                const float step = (static_cast<float>(static_cast<std::int32_t>(expected[static_cast<std::size_t>(i)])) - a.bias) * a.scale;
                const float r = step + a.centre;
                REQUIRE(decoded[static_cast<std::size_t>(i)] == r);  // two roundings on both paths
            }
        }
    }
}

TEST_CASE("backend encode/decode and statistics: SIMD and scalar paths agree", "[kernels]") {
    std::mt19937 rng(23);
    const qaq::storage::uniform_zero_point zp{false, qaq::storage_precision::fp16};
    const qaq::storage::uniform_mean_centred mc{false, qaq::storage_precision::fp32};
    for (int trial = 0; trial < 200; ++trial) {
        const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 150);
        auto x = random_floats(rng, static_cast<std::size_t>(n), 2.0f);
        if (trial % 5 == 0) x[0] = -0.0f, x[static_cast<std::size_t>(n - 1)] = 0.0f;  // signed zeros at the ends
        std::vector<std::uint8_t> none(static_cast<std::size_t>(n), 0);
        std::vector<qaq::group_statistics> stats;
        std::vector<std::vector<std::uint8_t>> packed;
        std::vector<std::vector<float>> decoded;
        const int width = 1 + trial % 16;
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            const qaq::group_statistics s = qaq::backend::cpu::statistics(x.data(), none.data(), n, 0, false);
            stats.push_back(s);
            for (int codec = 0; codec < 2; ++codec) {
                const qaq::codec_parameters p = codec == 0 ? zp.fit(s, width) : mc.fit(s, width);
                std::vector<std::uint32_t> scratch(static_cast<std::size_t>(n));
                std::vector<std::uint8_t> out(static_cast<std::size_t>(qaq::packed_code_bytes(n, width)));
                std::vector<float> back(static_cast<std::size_t>(n));
                if (codec == 0) {
                    qaq::backend::cpu::encode(zp, p, width, x.data(), none.data(), n, scratch.data(), out.data());
                    qaq::backend::cpu::decode(zp, p, width, out.data(), n, scratch.data(), back.data());
                } else {
                    qaq::backend::cpu::encode(mc, p, width, x.data(), nullptr, n, scratch.data(), out.data());
                    qaq::backend::cpu::decode(mc, p, width, out.data(), n, scratch.data(), back.data());
                }
                packed.push_back(out);
                decoded.push_back(back);
            }
        }
        for (std::size_t r = 1; r < stats.size(); ++r) {
            REQUIRE(std::memcmp(&stats[r].min, &stats[0].min, 4) == 0);
            REQUIRE(std::memcmp(&stats[r].max, &stats[0].max, 4) == 0);
            REQUIRE(stats[r].mean == stats[0].mean);
            REQUIRE(packed[2 * r] == packed[0]);
            REQUIRE(packed[2 * r + 1] == packed[1]);
            for (std::size_t i = 0; i < decoded[0].size(); ++i) {
                REQUIRE(decoded[2 * r][i] == decoded[0][i]);
                REQUIRE(decoded[2 * r + 1][i] == decoded[1][i]);
            }
        }
        if (stats[0].min == 0.0f) REQUIRE_FALSE(std::signbit(stats[0].min));  // a zero min is +0
    }
    // A non-finite value is found by the dense pass (the general path then handles it).
    for (bool on : simd_settings()) {
        const simd::scoped_simd setting(on);
        for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()})
            for (std::int64_t n : {1, 7, 8, 9, 33, 128}) {
                for (std::int64_t at = 0; at < n; at += 5) {
                    std::vector<float> x(static_cast<std::size_t>(n), 1.0f);
                    x[static_cast<std::size_t>(at)] = bad;
                    float mn, mx;
                    double sum;
                    REQUIRE_FALSE(qaq::backend::affine::dense_statistics(x.data(), n, false, mn, mx, sum));
                    REQUIRE_FALSE(qaq::backend::affine::dense_statistics(x.data(), n, true, mn, mx, sum));
                }
            }
    }
}

TEST_CASE("whole-tensor quantize and dequantize: SIMD and scalar give the same packed bytes", "[kernels]") {
    std::mt19937 rng(29);
    const qaq::kv_shape shape{2, 1, 3, 37, 64};
    auto data = random_floats(rng, static_cast<std::size_t>(shape.element_count()), 1.5f);
    data[100] = std::numeric_limits<float>::quiet_NaN();  // an exact outlier even without an outlier policy
    data[777] = std::numeric_limits<float>::infinity();
    const auto view = qaq::kv_view<const float>::contiguous(data.data(), shape);
    auto run = [&](const auto& q) {
        std::vector<qaq::packed_tensor> packed;
        std::vector<std::vector<float>> back;
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            packed.push_back(q.quantize(view));
            std::vector<float> out(data.size());
            q.dequantize(packed.back(), qaq::kv_view<float>::contiguous(out.data(), shape));
            back.push_back(out);
        }
        for (std::size_t r = 1; r < packed.size(); ++r) {
            REQUIRE(packed[r].widths == packed[0].widths);
            REQUIRE(packed[r].parameters == packed[0].parameters);
            REQUIRE(packed[r].codes == packed[0].codes);
            REQUIRE(packed[r].outlier_values == packed[0].outlier_values);
            REQUIRE(packed[r].bytes().used() == packed[0].bytes().used());
            for (std::size_t i = 0; i < data.size(); ++i) {
                if (std::isnan(back[0][i])) {
                    REQUIRE(std::isnan(back[r][i]));
                    continue;
                }
                REQUIRE(back[r][i] == back[0][i]);
            }
        }
        REQUIRE(std::isnan(back[0][100]));
        REQUIRE(back[0][777] == std::numeric_limits<float>::infinity());
    };
    using plain = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
    using quantile = qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_mean_centred>;
    for (int bits : {1, 2, 3, 4, 5, 8, 11, 16}) {
        run(plain(qaq::bits::fixed(bits), {}, {false, qaq::storage_precision::fp32}, qaq::group_level::head));
        run(plain(qaq::bits::fixed(bits), {}, {true, qaq::storage_precision::fp32}, qaq::group_level::sub_head, 16));
        run(quantile(qaq::bits::fixed(bits), qaq::outliers::quantile(0.05), {false, qaq::storage_precision::fp32},
                     qaq::group_level::head));
    }
}
