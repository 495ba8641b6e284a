#pragma once
// dynamic_quantizer: a quantizer chosen at run time that can stand wherever a
// compiled qaq::quantizer does — whole tensors, and the group-level building
// blocks the decode-time cache uses. One virtual call per group operation; the
// element loops inside stay compiled for the concrete policies.
//
// It lets a program hold, e.g., quantized_kv_cache<dynamic_quantizer,
// dynamic_quantizer> for any pair of configurations without instantiating
// every combination of key and value policies.

#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

#include "qaq/any_quantizer.hpp"
#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/packed_tensor.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/tensor_view.hpp"

QAQ_NAMESPACE_BEGIN

class dynamic_quantizer {
public:
    explicit dynamic_quantizer(quantizer_config config) : config_(std::move(config)) {
        visit_quantizer(config_, [&](const auto& q) {
            impl_ = std::make_shared<const model<std::decay_t<decltype(q)>>>(q);
        });
    }

    const quantizer_config& config() const noexcept { return config_; }

    bool needs_attention() const noexcept { return impl_->needs_attention(); }
    int window() const noexcept { return impl_->window(); }
    int bits_min() const noexcept { return impl_->bits_min(); }
    int bits_max() const noexcept { return impl_->bits_max(); }
    double outlier_ratio() const noexcept { return impl_->outlier_ratio(); }
    storage_precision precision() const noexcept { return impl_->precision(); }
    int stored_parameter_count() const noexcept { return impl_->stored_parameter_count(); }
    std::int64_t parameter_bytes() const noexcept { return impl_->parameter_bytes(); }
    group_level level() const noexcept { return config_.level; }
    int group_dims() const noexcept { return config_.group_dims; }

    group_statistics analyze(const float* values, std::int64_t n, std::uint8_t* is_outlier, float* scratch) const {
        return impl_->analyze(values, n, is_outlier, scratch);
    }
    group_statistics statistics(const float* values, const std::uint8_t* is_outlier, std::int64_t n,
                                std::int64_t outlier_count) const {
        return impl_->statistics(values, is_outlier, n, outlier_count);
    }
    float range(const group_statistics& stats) const { return impl_->range(stats); }
    int choose_bits(float group_range, float predicted_attention, std::int64_t tokens, std::int64_t token) const {
        return impl_->choose_bits(group_range, predicted_attention, tokens, token);
    }
    codec_parameters encode(const float* values, const std::uint8_t* is_outlier, std::int64_t n,
                            const group_statistics& stats, int width, std::uint32_t* scratch, std::uint8_t* out) const {
        return impl_->encode(values, is_outlier, n, stats, width, scratch, out);
    }
    void decode(const std::uint8_t* codes, std::int64_t n, int width, const codec_parameters& params,
                std::uint32_t* scratch, float* out) const {
        impl_->decode(codes, n, width, params, scratch, out);
    }
    bool affine(const codec_parameters& params, int width, affine_code& out) const noexcept {
        return impl_->affine(params, width, out);
    }
    bool affine_forms(const std::uint8_t* parameters, std::int64_t group_stride, const int* widths,
                      std::int64_t count, float* scales, float* offsets) const noexcept {
        return impl_->affine_forms(parameters, group_stride, widths, count, scales, offsets);
    }
    bool affine_forms_at_width(const std::uint8_t* parameters, std::int64_t group_stride, int width, std::int64_t count,
                               float* scales, float* offsets) const noexcept {
        return impl_->affine_forms_at_width(parameters, group_stride, width, count, scales, offsets);
    }
    float decode_element(const std::uint8_t* codes, std::int64_t i, int width, const codec_parameters& params) const {
        return impl_->decode_element(codes, i, width, params);
    }
    void store_parameters(const codec_parameters& params, std::uint8_t* out) const {
        impl_->store_parameters(params, out);
    }
    codec_parameters load_parameters(const std::uint8_t* in, int width) const {
        return impl_->load_parameters(in, width);
    }
    void check_outlier_value(float v) const { impl_->check_outlier_value(v); }

    packed_tensor quantize(const kv_view<const float>& cache, const attention_view<const float>& attention = {}) const {
        return impl_->quantize(cache, attention);
    }
    void dequantize(const packed_tensor& packed, const kv_view<float>& out) const { impl_->dequantize(packed, out); }

private:
    struct concept_type {
        virtual ~concept_type() = default;
        virtual bool needs_attention() const noexcept = 0;
        virtual int window() const noexcept = 0;
        virtual int bits_min() const noexcept = 0;
        virtual int bits_max() const noexcept = 0;
        virtual double outlier_ratio() const noexcept = 0;
        virtual storage_precision precision() const noexcept = 0;
        virtual int stored_parameter_count() const noexcept = 0;
        virtual std::int64_t parameter_bytes() const noexcept = 0;
        virtual group_statistics analyze(const float*, std::int64_t, std::uint8_t*, float*) const = 0;
        virtual group_statistics statistics(const float*, const std::uint8_t*, std::int64_t, std::int64_t) const = 0;
        virtual float range(const group_statistics&) const = 0;
        virtual int choose_bits(float, float, std::int64_t, std::int64_t) const = 0;
        virtual codec_parameters encode(const float*, const std::uint8_t*, std::int64_t, const group_statistics&, int,
                                        std::uint32_t*, std::uint8_t*) const = 0;
        virtual void decode(const std::uint8_t*, std::int64_t, int, const codec_parameters&, std::uint32_t*,
                            float*) const = 0;
        virtual bool affine(const codec_parameters&, int, affine_code&) const noexcept = 0;
        virtual bool affine_forms(const std::uint8_t*, std::int64_t, const int*, std::int64_t, float*,
                                  float*) const noexcept = 0;
        virtual bool affine_forms_at_width(const std::uint8_t*, std::int64_t, int, std::int64_t, float*,
                                           float*) const noexcept = 0;
        virtual float decode_element(const std::uint8_t*, std::int64_t, int, const codec_parameters&) const = 0;
        virtual void store_parameters(const codec_parameters&, std::uint8_t*) const = 0;
        virtual codec_parameters load_parameters(const std::uint8_t*, int) const = 0;
        virtual void check_outlier_value(float) const = 0;
        virtual packed_tensor quantize(const kv_view<const float>&, const attention_view<const float>&) const = 0;
        virtual void dequantize(const packed_tensor&, const kv_view<float>&) const = 0;
    };

    template <class Quantizer>
    struct model final : concept_type {
        Quantizer q;
        explicit model(Quantizer quantizer) : q(std::move(quantizer)) {}
        bool needs_attention() const noexcept override { return q.needs_attention(); }
        int window() const noexcept override { return q.window(); }
        int bits_min() const noexcept override { return q.bits_min(); }
        int bits_max() const noexcept override { return q.bits_max(); }
        double outlier_ratio() const noexcept override { return q.outlier_ratio(); }
        storage_precision precision() const noexcept override { return q.precision(); }
        int stored_parameter_count() const noexcept override { return q.stored_parameter_count(); }
        std::int64_t parameter_bytes() const noexcept override { return q.parameter_bytes(); }
        group_statistics analyze(const float* v, std::int64_t n, std::uint8_t* m, float* s) const override {
            return q.analyze(v, n, m, s);
        }
        group_statistics statistics(const float* v, const std::uint8_t* m, std::int64_t n,
                                    std::int64_t c) const override {
            return q.statistics(v, m, n, c);
        }
        float range(const group_statistics& s) const override { return q.range(s); }
        int choose_bits(float r, float a, std::int64_t tokens, std::int64_t token) const override {
            return q.choose_bits(r, a, tokens, token);
        }
        codec_parameters encode(const float* v, const std::uint8_t* m, std::int64_t n, const group_statistics& s, int w,
                                std::uint32_t* scratch, std::uint8_t* out) const override {
            return q.encode(v, m, n, s, w, scratch, out);
        }
        void decode(const std::uint8_t* c, std::int64_t n, int w, const codec_parameters& p, std::uint32_t* scratch,
                    float* out) const override {
            q.decode(c, n, w, p, scratch, out);
        }
        bool affine(const codec_parameters& p, int w, affine_code& out) const noexcept override {
            return q.affine(p, w, out);
        }
        bool affine_forms(const std::uint8_t* p, std::int64_t stride, const int* w, std::int64_t count, float* scales,
                          float* offsets) const noexcept override {
            return q.affine_forms(p, stride, w, count, scales, offsets);
        }
        bool affine_forms_at_width(const std::uint8_t* p, std::int64_t stride, int w, std::int64_t count, float* scales,
                                   float* offsets) const noexcept override {
            return q.affine_forms_at_width(p, stride, w, count, scales, offsets);
        }
        float decode_element(const std::uint8_t* c, std::int64_t i, int w, const codec_parameters& p) const override {
            return q.decode_element(c, i, w, p);
        }
        void store_parameters(const codec_parameters& p, std::uint8_t* out) const override {
            q.store_parameters(p, out);
        }
        codec_parameters load_parameters(const std::uint8_t* in, int w) const override {
            return q.load_parameters(in, w);
        }
        void check_outlier_value(float v) const override { q.check_outlier_value(v); }
        packed_tensor quantize(const kv_view<const float>& c, const attention_view<const float>& a) const override {
            return q.quantize(c, a);
        }
        void dequantize(const packed_tensor& p, const kv_view<float>& out) const override { q.dequantize(p, out); }
    };

    quantizer_config config_;
    std::shared_ptr<const concept_type> impl_;
};

QAQ_NAMESPACE_END
