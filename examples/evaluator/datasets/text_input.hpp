#pragma once
// Line-oriented input with error messages that name the file, the line and
// the field, and say what was expected. Shared by every dataset reader.

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "qaq/error.hpp"

namespace qaq::eval::datasets {

/// Reads a whole text file; qaq::error naming the path when it is missing or unreadable.
inline std::string read_text_file(const std::string& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    QAQ_CHECK(in.good(), "cannot open ", what, " ", path, ": ", std::strerror(errno));
    std::ostringstream out;
    out << in.rdbuf();
    QAQ_CHECK(!in.bad(), "read error in ", what, " ", path);
    return out.str();
}

/// Calls f(line_number, line) for each line of `text` (1-based; "\r\n" accepted;
/// a final line without newline is still a line; blank lines are skipped).
inline void for_each_line(const std::string& text, const std::function<void(std::size_t, const std::string&)>& f) {
    std::size_t start = 0, number = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        ++number;
        std::string line = text.substr(start, end - start);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") != std::string::npos) f(number, line);
        start = end + 1;
    }
}

/// "file:line" or "file" for messages.
inline std::string where(const std::string& file, std::size_t line) {
    return line > 0 ? file + ":" + std::to_string(line) : file;
}

/// Parses one JSON document; the error names the place and the parser's complaint.
/// Every exception of the JSON library becomes a qaq::error: parse_error, and also
/// out_of_range (406: a number beyond double, e.g. 1e999) that the parser raises too.
template <class Json = nlohmann::json>
Json parse_json(const std::string& text, const std::string& place) {
    try {
        return Json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw qaq::error(place + ": not valid JSON (" + e.what() + ")");
    }
}

inline const char* json_type(const nlohmann::json& j) { return j.type_name(); }

/// Field access that names place and field in its error.
template <class Json>
const Json& field(const Json& object, const char* name, const std::string& place) {
    QAQ_CHECK(object.is_object(), place, ": expected a JSON object, got ", object.type_name());
    auto it = object.find(name);
    QAQ_CHECK(it != object.end(), place, ": missing field \"", name, "\"");
    return *it;
}

template <class Json>
std::string string_field(const Json& object, const char* name, const std::string& place) {
    const Json& v = field(object, name, place);
    QAQ_CHECK(v.is_string(), place, ": field \"", name, "\" must be a string, got ", v.type_name());
    return v.template get<std::string>();
}

/// An integer that may also be written as a string of digits ("3"), as some
/// dataset exports do.
template <class Json>
long long integer_field(const Json& object, const char* name, const std::string& place) {
    const Json& v = field(object, name, place);
    if (v.is_number_integer()) return v.template get<long long>();
    if (v.is_string()) {
        const std::string s = v.template get<std::string>();
        char* end = nullptr;
        errno = 0;
        const long long x = std::strtoll(s.c_str(), &end, 10);
        if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return x;
    }
    throw qaq::error(place + ": field \"" + name + "\" must be an integer (or a string of digits), got " +
                     (v.is_string() ? "\"" + v.template get<std::string>() + "\"" : std::string(v.type_name())));
}

template <class Json>
std::vector<std::string> string_array_field(const Json& object, const char* name, const std::string& place) {
    const Json& v = field(object, name, place);
    QAQ_CHECK(v.is_array(), place, ": field \"", name, "\" must be an array of strings, got ", v.type_name());
    std::vector<std::string> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
        QAQ_CHECK(v[i].is_string(), place, ": field \"", name, "\"[", i, "] must be a string, got ", v[i].type_name());
        out.push_back(v[i].template get<std::string>());
    }
    return out;
}

}  // namespace qaq::eval::datasets
