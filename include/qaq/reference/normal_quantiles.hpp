#pragma once
// The standard normal quantile function Phi^-1 and the float32 tables of the
// "normal" codec (docs/method.md, "Codecs", normal):
//
//   boundaries u_i = float32(Phi^-1((i + 1) / 2^B)),   i = 0 .. 2^B - 1  (u_last = +Inf)
//   centres    c_i = float32(Phi^-1((i + 0.5) / 2^B)), i = 0 .. 2^B - 1
//
// Phi^-1 is Wichura's algorithm AS 241 (PPND16), "The Percentage Points of the
// Normal Distribution", Applied Statistics 37 (1988) 477-484: a rational
// approximation accurate to about 1e-16 relative, in double precision.
// Standalone: the scalar reference and every backend build their tables here.

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace reference {

/// Phi^-1(p), the p-quantile of the standard normal distribution.
/// p = 0 gives -Inf, p = 1 gives +Inf; p outside [0, 1] or NaN gives NaN.
inline double inverse_normal_cdf(double p) noexcept {
    if (std::isnan(p) || p < 0.0 || p > 1.0) return std::numeric_limits<double>::quiet_NaN();
    if (p == 0.0) return -std::numeric_limits<double>::infinity();
    if (p == 1.0) return std::numeric_limits<double>::infinity();

    const double q = p - 0.5;
    if (std::fabs(q) <= 0.425) {
        // Central region: |p - 0.5| <= 0.425.
        const double r = 0.180625 - q * q;
        const double numerator =
            (((((((2.5090809287301226727e+3 * r + 3.3430575583588128105e+4) * r + 6.7265770927008700853e+4) * r +
                 4.5921953931549871457e+4) * r + 1.3731693765509461125e+4) * r + 1.9715909503065514427e+3) * r +
              1.3314166789178437745e+2) * r + 3.3871328727963666080e+0);
        const double denominator =
            (((((((5.2264952788528545610e+3 * r + 2.8729085735721942674e+4) * r + 3.9307895800092710610e+4) * r +
                 2.1213794301586595867e+4) * r + 5.3941960214247511077e+3) * r + 6.8718700749205790830e+2) * r +
              4.2313330701600911252e+1) * r + 1.0);
        return q * numerator / denominator;
    }

    // Tails: r = sqrt(-ln(min(p, 1 - p))).
    double r = std::sqrt(-std::log(q < 0.0 ? p : 1.0 - p));
    double value;
    if (r <= 5.0) {
        // Intermediate region: r <= 5, i.e. p >= about 1.4e-11.
        r -= 1.6;
        const double numerator =
            (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r + 2.41780725177450611770e-1) * r +
                 1.27045825245236838258e+0) * r + 3.64784832476320460504e+0) * r + 5.76949722146069140550e+0) * r +
              4.63033784615654529590e+0) * r + 1.42343711074968357734e+0);
        const double denominator =
            (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r + 1.51986665636164571966e-2) * r +
                 1.48103976427480074590e-1) * r + 6.89767334985100004550e-1) * r + 1.67638483018380384940e+0) * r +
              2.05319162663775882187e+0) * r + 1.0);
        value = numerator / denominator;
    } else {
        // Far tail: r > 5.
        r -= 5.0;
        const double numerator =
            (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r + 1.24266094738807843860e-3) * r +
                 2.65321895265761230930e-2) * r + 2.96560571828504891230e-1) * r + 1.78482653991729133580e+0) * r +
              5.46378491116411436990e+0) * r + 6.65790464350110377720e+0);
        const double denominator =
            (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r + 1.84631831751005468180e-5) * r +
                 7.86869131145613259100e-4) * r + 1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r +
              5.99832206555887937690e-1) * r + 1.0);
        value = numerator / denominator;
    }
    return q < 0.0 ? -value : value;
}

/// The 2^bits upper boundaries of the normal codec's bins, in float32:
/// u_i = float32(Phi^-1((i + 1) / 2^bits)); the last one is +Inf. A
/// normalised value z gets the code of the first boundary >= z.
inline std::vector<float> normal_boundaries(int bits) {
    QAQ_CHECK(bits >= 0 && bits <= max_bits, "normal codec bits is ", bits, ", expected 0..", max_bits);
    const std::int64_t codes = std::int64_t{1} << bits;
    std::vector<float> boundaries(static_cast<std::size_t>(codes));
    for (std::int64_t i = 0; i < codes; ++i)
        boundaries[static_cast<std::size_t>(i)] = static_cast<float>(
            inverse_normal_cdf(static_cast<double>(i + 1) / static_cast<double>(codes)));
    return boundaries;
}

/// The 2^bits reconstruction points of the normal codec, in float32:
/// c_i = float32(Phi^-1((i + 0.5) / 2^bits)), the median of bin i.
inline std::vector<float> normal_centres(int bits) {
    QAQ_CHECK(bits >= 0 && bits <= max_bits, "normal codec bits is ", bits, ", expected 0..", max_bits);
    const std::int64_t codes = std::int64_t{1} << bits;
    std::vector<float> centres(static_cast<std::size_t>(codes));
    for (std::int64_t i = 0; i < codes; ++i)
        centres[static_cast<std::size_t>(i)] = static_cast<float>(
            inverse_normal_cdf((static_cast<double>(i) + 0.5) / static_cast<double>(codes)));
    return centres;
}

}  // namespace reference
QAQ_NAMESPACE_END
