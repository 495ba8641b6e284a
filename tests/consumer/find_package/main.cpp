// Compiled against an installed qaq: the umbrella header, its version, and the
// README's first example (quantize a value cache with attention-aware bits).
#include <cstdio>
#include <cstring>
#include <vector>

#include <qaq/qaq.hpp>

int main() {
    std::printf("qaq %s (expected %s)\n", qaq::version_string, QAQ_EXPECTED_VERSION);
    if (std::strcmp(qaq::version_string, QAQ_EXPECTED_VERSION) != 0) return 1;

    const std::int64_t L = 2, B = 1, H = 2, T = 8, D = 16, Hq = 4, R = 8;
    std::vector<float> cache(static_cast<std::size_t>(L * B * H * T * D));
    for (std::size_t i = 0; i < cache.size(); ++i) cache[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
    std::vector<float> attention(static_cast<std::size_t>(L * B * Hq * R * T), 1.0f / T);

    qaq::quantizer_config config;
    config.role = qaq::cache_role::value;
    config.bits = qaq::bits_kind::value_attention;
    config.window = 5;
    config.target_error = 0.1;
    config.bits_min = 2, config.bits_max = 8;
    config.outlier_ratio = 0.01;
    qaq::any_quantizer quantizer(config);
    qaq::packed_tensor packed =
        quantizer.quantize(qaq::kv_view<const float>::contiguous(cache.data(), {L, B, H, T, D}),
                           qaq::attention_view<const float>::contiguous(attention.data(), {L, B, Hq, R, T}));
    std::printf("%lld bytes, %.2fx smaller than FP16\n", static_cast<long long>(packed.bytes().total()),
                packed.bytes().compression_ratio());
    return packed.bytes().total() > 0 ? 0 : 1;
}
