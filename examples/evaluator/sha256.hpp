#pragma once
// SHA-256 (FIPS 180-4) of a byte string or a file, as lowercase hex. Used to
// pin dataset files and model files in result-cache keys; no dependency.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "qaq/error.hpp"

namespace qaq::eval {

class sha256 {
public:
    sha256() { reset(); }

    void reset() {
        state_ = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                  0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
        length_ = 0;
        buffered_ = 0;
    }

    sha256& update(const void* data, std::size_t size) {
        const auto* p = static_cast<const unsigned char*>(data);
        length_ += static_cast<std::uint64_t>(size);
        if (buffered_ > 0) {
            const std::size_t take = std::min<std::size_t>(64 - buffered_, size);
            std::memcpy(buffer_.data() + buffered_, p, take);
            buffered_ += take, p += take, size -= take;
            if (buffered_ < 64) return *this;
            block(buffer_.data());
            buffered_ = 0;
        }
        for (; size >= 64; p += 64, size -= 64) block(p);
        std::memcpy(buffer_.data(), p, size);
        buffered_ = size;
        return *this;
    }
    sha256& update(std::string_view s) { return update(s.data(), s.size()); }

    /// The digest as 64 lowercase hex digits; the object is reset afterwards.
    std::string hex() {
        const std::uint64_t bits = length_ * 8;
        const unsigned char one = 0x80, zero = 0;
        update(&one, 1);
        while (buffered_ != 56) update(&zero, 1);
        unsigned char tail[8];
        for (int i = 0; i < 8; ++i) tail[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
        update(tail, 8);
        static const char* digits = "0123456789abcdef";
        std::string out;
        for (std::uint32_t w : state_)
            for (int i = 28; i >= 0; i -= 4) out.push_back(digits[(w >> i) & 0xfu]);
        reset();
        return out;
    }

private:
    static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

    void block(const unsigned char* p) {
        static constexpr std::uint32_t k[64] = {
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
            0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
            0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
            0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
            0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
            0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
            0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
        std::uint32_t w[64];
        for (int i = 0; i < 16; ++i)
            w[i] = (std::uint32_t(p[4 * i]) << 24) | (std::uint32_t(p[4 * i + 1]) << 16) |
                   (std::uint32_t(p[4 * i + 2]) << 8) | std::uint32_t(p[4 * i + 3]);
        for (int i = 16; i < 64; ++i) {
            const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3], e = state_[4], f = state_[5],
                      g = state_[6], h = state_[7];
        for (int i = 0; i < 64; ++i) {
            const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
        }
        state_[0] += a, state_[1] += b, state_[2] += c, state_[3] += d;
        state_[4] += e, state_[5] += f, state_[6] += g, state_[7] += h;
    }

    std::array<std::uint32_t, 8> state_{};
    std::array<unsigned char, 64> buffer_{};
    std::uint64_t length_ = 0;
    std::size_t buffered_ = 0;
};

inline std::string sha256_hex(std::string_view data) { return sha256().update(data).hex(); }

/// SHA-256 of a file's bytes; qaq::error when it cannot be read.
inline std::string file_sha256(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    QAQ_CHECK(f != nullptr, "cannot open ", path, " to hash it: ", std::strerror(errno));
    sha256 h;
    char buffer[1 << 16];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, f)) > 0) h.update(buffer, got);
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    QAQ_CHECK(!failed, "read error while hashing ", path);
    return h.hex();
}

}  // namespace qaq::eval
