#pragma once
// The attention-window tracker of the decode protocol (QAQ-METHOD section 8):
// per layer, the last `window` attention rows, each already reduced to one
// value per (token, KV head) — the maximum over the query heads that read the
// KV head. The predicted attention of a token is the maximum over those rows;
// a row observed before a token existed simply does not cover it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/error.hpp"

QAQ_NAMESPACE_BEGIN

class attention_window {
public:
    attention_window() = default;
    attention_window(std::int64_t layers, std::int64_t kv_heads, std::int64_t query_heads, int window)
        : kv_heads_(kv_heads), query_heads_(query_heads), window_(window),
          rows_(static_cast<std::size_t>(layers)) {
        QAQ_CHECK(layers >= 1 && kv_heads >= 1 && query_heads >= kv_heads && query_heads % kv_heads == 0,
                  "attention window needs layers >= 1 and query_heads a multiple of kv_heads; got layers ", layers,
                  ", kv_heads ", kv_heads, ", query_heads ", query_heads);
        QAQ_CHECK(window >= 1, "attention window is ", window, ", expected >= 1");
    }

    int window() const noexcept { return window_; }
    std::int64_t layers() const noexcept { return static_cast<std::int64_t>(rows_.size()); }

    /// Records one attention row of `layer`: probabilities [query_heads][tokens].
    void observe(std::int64_t layer, const float* probabilities, std::int64_t tokens) {
        check_layer(layer);
        const std::int64_t per_kv = query_heads_ / kv_heads_;
        std::vector<float> row(static_cast<std::size_t>(tokens * kv_heads_), 0.0f);
        for (std::int64_t q = 0; q < query_heads_; ++q) {
            const float* p = probabilities + q * tokens;
            const std::int64_t h = q / per_kv;
            for (std::int64_t t = 0; t < tokens; ++t) {
                QAQ_CHECK(std::isfinite(p[t]) && p[t] >= 0.0f, "attention probability ", p[t], " at query head ", q,
                          ", token ", t, "; expected a finite value >= 0");
                float& slot = row[static_cast<std::size_t>(t * kv_heads_ + h)];
                slot = std::max(slot, p[t]);
            }
        }
        auto& ring = rows_[static_cast<std::size_t>(layer)];
        ring.push_back(std::move(row));
        if (static_cast<int>(ring.size()) > window_) ring.pop_front();
    }

    /// Predicted attention of (token, kv_head) in `layer`: the window maximum (0 if never observed).
    float predicted(std::int64_t layer, std::int64_t token, std::int64_t kv_head) const noexcept {
        float a = 0.0f;
        const std::size_t at = static_cast<std::size_t>(token * kv_heads_ + kv_head);
        for (const auto& row : rows_[static_cast<std::size_t>(layer)])
            if (at < row.size()) a = std::max(a, row[at]);
        return a;
    }

    /// Bytes the stored rows hold.
    std::int64_t bytes() const noexcept {
        std::int64_t b = 0;
        for (const auto& ring : rows_)
            for (const auto& row : ring) b += static_cast<std::int64_t>(row.capacity() * sizeof(float));
        return b;
    }

    void clear() {
        for (auto& ring : rows_) ring.clear();
    }

private:
    void check_layer(std::int64_t layer) const {
        QAQ_CHECK(layer >= 0 && layer < layers(), "layer ", layer, " is out of range; the cache has ", layers(),
                  " layers");
    }

    std::int64_t kv_heads_ = 1;
    std::int64_t query_heads_ = 1;
    int window_ = 1;
    std::vector<std::deque<std::vector<float>>> rows_;
};

QAQ_NAMESPACE_END
