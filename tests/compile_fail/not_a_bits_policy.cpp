// expect-error: qaq: quantizer's first parameter must be a bit-allocation policy
// A type that does not declare itself a bit policy is rejected with a message
// that says what the role requires.
#include "qaq/qaq.hpp"

struct my_bits {
    int operator()(const qaq::bits::context&) const { return 4; }
};

int main() {
    qaq::quantizer<my_bits, qaq::outliers::none, qaq::storage::uniform_zero_point> q(
        my_bits{}, qaq::outliers::none{}, qaq::storage::uniform_zero_point{}, qaq::group_level::head);
    (void)q;
}
