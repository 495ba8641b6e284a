#pragma once
// An append-only array of fixed-size records in fixed-size chunks: growing to
// 32k tokens never moves what is already stored (no quadratic copying).

#include <cstdint>
#include <memory>
#include <vector>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace cache {

template <class T>
class chunked_store {
public:
    chunked_store() = default;
    chunked_store(std::int64_t record_size, std::int64_t records_per_chunk)
        : record_size_(record_size), records_per_chunk_(records_per_chunk) {}

    std::int64_t size() const noexcept { return size_; }

    /// Appends one record and returns where to write its record_size values.
    T* append() {
        if (size_ == static_cast<std::int64_t>(chunks_.size()) * records_per_chunk_)
            chunks_.emplace_back(new T[static_cast<std::size_t>(record_size_ * records_per_chunk_)]());
        return record(size_++);
    }
    T* record(std::int64_t i) noexcept {
        return chunks_[i / records_per_chunk_].get() + (i % records_per_chunk_) * record_size_;
    }
    const T* record(std::int64_t i) const noexcept {
        return chunks_[i / records_per_chunk_].get() + (i % records_per_chunk_) * record_size_;
    }
    std::int64_t used_bytes() const noexcept { return size_ * record_size_ * static_cast<std::int64_t>(sizeof(T)); }
    std::int64_t allocated_bytes() const noexcept {
        return static_cast<std::int64_t>(chunks_.size()) * records_per_chunk_ * record_size_ *
               static_cast<std::int64_t>(sizeof(T));
    }

private:
    std::int64_t record_size_ = 1;
    std::int64_t records_per_chunk_ = 256;
    std::int64_t size_ = 0;
    std::vector<std::unique_ptr<T[]>> chunks_;
};

}  // namespace cache
QAQ_NAMESPACE_END
