#pragma once
// Errors: host code throws qaq::error; device-side code returns qaq::status.
//
// The library never prints, exits or aborts. A message always says what was
// wrong and what was expected.

#include <sstream>
#include <stdexcept>
#include <string>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

/// The exception every host-side failure of the library raises.
class error : public std::runtime_error {
public:
    explicit error(const std::string& what) : std::runtime_error("qaq: " + what) {}
};

/// Result code for paths that cannot throw (device kernels, C callbacks).
enum class status : int {
    success = 0,
    invalid_argument,
    out_of_memory,
    device_error,
    not_supported,
};

inline const char* to_string(status s) noexcept {
    switch (s) {
        case status::success: return "success";
        case status::invalid_argument: return "invalid argument";
        case status::out_of_memory: return "out of memory";
        case status::device_error: return "device error";
        case status::not_supported: return "not supported";
    }
    return "unknown status";
}

/// Turns a status into an exception at the host boundary.
inline void throw_if_failed(status s, const std::string& context) {
    if (s != status::success) throw error(context + ": " + to_string(s));
}

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
    std::ostringstream out;
    out.precision(9);
    (out << ... << parts);
    return out.str();
}
}  // namespace detail

QAQ_NAMESPACE_END

/// Throws qaq::error built from the message parts unless `condition` holds.
/// Parts may be strings or numbers: QAQ_CHECK(bits <= 16, "bits is ", bits, ", expected 0..16").
#define QAQ_CHECK(condition, ...)                                            \
    do {                                                                     \
        if (!(condition)) throw ::qaq::error(::qaq::detail::concat(__VA_ARGS__)); \
    } while (0)
