// expect-error: quantizer's second parameter must be an outlier policy
// An outlier type that forgets `static constexpr bool is_outlier_policy = true`
// is refused by quantizer<> with a message naming the role and what it needs,
// even though its mark() is exactly what an outlier policy provides.
#include <cstdint>

#include <qaq/policy/bits/fixed.hpp>
#include <qaq/policy/storage/uniform_zero_point.hpp>
#include <qaq/quantizer.hpp>

struct unmarked_outliers {
    // No is_outlier_policy mark.
    std::int64_t mark(const float*, std::int64_t n, std::uint8_t* is_outlier, float*) const {
        for (std::int64_t i = 0; i < n; ++i) is_outlier[i] = 0;
        return 0;
    }
};

int main() {
    qaq::quantizer<qaq::bits::fixed, unmarked_outliers, qaq::storage::uniform_zero_point> q(
        qaq::bits::fixed(4), unmarked_outliers{}, qaq::storage::uniform_zero_point{}, qaq::group_level::head);
    return q.group_dims();
}
