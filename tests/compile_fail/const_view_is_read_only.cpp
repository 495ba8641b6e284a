// expect-error: read-only location|cannot assign to return value
// A kv_view over const memory, or the read-only view of a mutable one, must
// not let a caller write into the cache.
#include <qaq/tensor_view.hpp>

int main() {
    float storage[8] = {};
    const auto writable = qaq::kv_view<float>::contiguous(storage, qaq::kv_shape{1, 1, 1, 2, 4});
    const qaq::kv_view<const float> read_only = writable;
    float sum = read_only(0, 0, 0, 1, 3);
#ifdef QAQ_COMPILE_FAIL
    read_only(0, 0, 0, 1, 3) = 1.0f;
#endif
    return static_cast<int>(sum);
}
