#pragma once
// Streaming gzip reader over zlib, line by line. Needs zlib (find_package(ZLIB),
// Debian zlib1g-dev); nothing else in the evaluator does.
//
// Errors are qaq::error naming the file: missing, not gzip data (the reader
// refuses zlib's transparent plain-text mode), truncated or corrupt streams.

#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "qaq/error.hpp"

namespace qaq::eval::datasets {

class gzip_line_reader {
public:
    explicit gzip_line_reader(std::string path) : path_(std::move(path)) {
        std::FILE* probe = std::fopen(path_.c_str(), "rb");
        QAQ_CHECK(probe != nullptr, "cannot open ", path_, ": ", std::strerror(errno));
        unsigned char magic[2] = {0, 0};
        const std::size_t got = std::fread(magic, 1, 2, probe);
        std::fclose(probe);
        QAQ_CHECK(got == 2 && magic[0] == 0x1f && magic[1] == 0x8b, path_,
                  " is not gzip data (expected the gzip magic bytes 1f 8b at offset 0)");
        file_ = gzopen(path_.c_str(), "rb");
        QAQ_CHECK(file_ != nullptr, "zlib cannot open ", path_);
        gzbuffer(file_, 1 << 17);
    }
    gzip_line_reader(const gzip_line_reader&) = delete;
    gzip_line_reader& operator=(const gzip_line_reader&) = delete;
    ~gzip_line_reader() {
        if (file_ != nullptr) gzclose(file_);
    }

    const std::string& path() const noexcept { return path_; }
    /// 1-based number of the line last returned.
    std::size_t line_number() const noexcept { return line_number_; }

    /// Next line without its '\n' (a final line without newline counts); false at the end.
    bool next(std::string& line) {
        line.clear();
        for (;;) {
            if (pos_ < fill_) {
                const char* start = buffer_ + pos_;
                const void* nl = std::memchr(start, '\n', fill_ - pos_);
                if (nl != nullptr) {
                    const std::size_t n = static_cast<const char*>(nl) - start;
                    line.append(start, n);
                    pos_ += n + 1;
                    ++line_number_;
                    if (!line.empty() && line.back() == '\r') line.pop_back();
                    return true;
                }
                line.append(start, fill_ - pos_);
                pos_ = fill_;
            }
            if (eof_) {
                if (line.empty()) return false;
                ++line_number_;
                return true;
            }
            refill();
        }
    }

private:
    void refill() {
        const int got = gzread(file_, buffer_, sizeof buffer_);
        if (got < 0) {
            int code = Z_OK;
            const char* message = gzerror(file_, &code);
            throw qaq::error(path_ + ": corrupt gzip stream (zlib: " + (message ? message : "unknown error") + ")");
        }
        pos_ = 0;
        fill_ = static_cast<std::size_t>(got);
        if (got == 0) {
            int code = Z_OK;
            const char* message = gzerror(file_, &code);
            QAQ_CHECK(code == Z_OK || code == Z_STREAM_END, path_, ": truncated or corrupt gzip stream (zlib: ",
                      message ? message : "unknown error", ")");
            eof_ = true;
        }
    }

    std::string path_;
    gzFile file_ = nullptr;
    char buffer_[1 << 16];
    std::size_t pos_ = 0, fill_ = 0, line_number_ = 0;
    bool eof_ = false;
};

}  // namespace qaq::eval::datasets
