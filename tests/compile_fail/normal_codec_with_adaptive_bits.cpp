// expect-error: qaq: this codec has no error formula for adaptive bit widths
// The reference normal codec has no range formula, so pairing it with
// attention-aware bits must not compile.
#include "qaq/qaq.hpp"

int main() {
    qaq::quantizer<qaq::bits::value_attention, qaq::outliers::none, qaq::storage::normal_quantile> q(
        qaq::bits::value_attention(5, 0.1, 2, 8), qaq::outliers::none{}, qaq::storage::normal_quantile{},
        qaq::group_level::head);
    (void)q;
}
