#pragma once
// A GGUF reader (versions 2 and 3, little-endian): header, metadata of every
// value type (arrays, nested arrays and strings included), the tensor table,
// the alignment (general.alignment, default 32) and the data section.
//
//   qaq::llama::gguf_file f = qaq::llama::gguf_file::open("model.gguf");  // memory-mapped
//   std::int64_t layers = f.get_int("llama.block_count");
//   const qaq::llama::gguf_tensor& t = f.tensor("token_embd.weight");    // t.data points into the mapping
//
// The file is parsed from a byte buffer with every offset and size checked
// before it is used: a truncated or corrupted file raises qaq::error naming
// the file and what is wrong (which entry, which offset, how many bytes were
// needed and how many remain); nothing is read outside the buffer and no
// count from the file is trusted with an allocation it cannot back with
// bytes. Tensor data is not copied: a tensor holds a pointer into the mapping,
// kept alive by the gguf_file (copies share it).
//
// Layout (ggml/docs/gguf.md): "GGUF", uint32 version, uint64 tensor_count,
// uint64 kv_count, kv_count x {string key, uint32 type, value}, tensor_count
// x {string name, uint32 n_dims, n_dims x uint64 ne, uint32 ggml_type,
// uint64 offset}, padding to the alignment, tensor data. A string is a uint64
// length and that many bytes (no terminator); an array is a uint32 element
// type, a uint64 count and the elements.
//
// Written by hand: there is no Debian package for GGUF (the reference
// readers are ggml's C code and the Python `gguf` package).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define QAQ_LLAMA_HAS_MMAP 1
#else
#include <fstream>
#define QAQ_LLAMA_HAS_MMAP 0
#endif
#include <cerrno>

#include "llama/ggml_types.hpp"
#include "qaq/error.hpp"

namespace qaq::llama {

/// GGUF metadata value types (gguf.md, enum gguf_metadata_value_type).
enum class gguf_value_type : std::uint32_t {
    uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, boolean = 7,
    string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

inline const char* to_string(gguf_value_type t) noexcept {
    switch (t) {
        case gguf_value_type::uint8: return "uint8";
        case gguf_value_type::int8: return "int8";
        case gguf_value_type::uint16: return "uint16";
        case gguf_value_type::int16: return "int16";
        case gguf_value_type::uint32: return "uint32";
        case gguf_value_type::int32: return "int32";
        case gguf_value_type::float32: return "float32";
        case gguf_value_type::boolean: return "bool";
        case gguf_value_type::string: return "string";
        case gguf_value_type::array: return "array";
        case gguf_value_type::uint64: return "uint64";
        case gguf_value_type::int64: return "int64";
        case gguf_value_type::float64: return "float64";
    }
    return "unknown";
}

/// One metadata value. Integers keep their exact value (unsigned ones in
/// `u`, signed ones in `i`), floats widen to double, arrays hold their
/// elements (of one element type, possibly arrays themselves).
struct gguf_value {
    gguf_value_type type = gguf_value_type::uint8;
    std::uint64_t u = 0;  ///< uint8..uint64, bool (0/1)
    std::int64_t i = 0;   ///< int8..int64
    double f = 0.0;       ///< float32, float64
    std::string s;        ///< string
    gguf_value_type element_type = gguf_value_type::uint8;  ///< array
    std::vector<gguf_value> array;                          ///< array

    bool is_unsigned() const noexcept {
        return type == gguf_value_type::uint8 || type == gguf_value_type::uint16 || type == gguf_value_type::uint32 ||
               type == gguf_value_type::uint64;
    }
    bool is_signed() const noexcept {
        return type == gguf_value_type::int8 || type == gguf_value_type::int16 || type == gguf_value_type::int32 ||
               type == gguf_value_type::int64;
    }
    bool is_integer() const noexcept { return is_unsigned() || is_signed(); }
    bool is_float() const noexcept { return type == gguf_value_type::float32 || type == gguf_value_type::float64; }

    /// "uint32", "array of string", ...
    std::string type_name() const {
        return type == gguf_value_type::array ? std::string("array of ") + to_string(element_type) : to_string(type);
    }

    /// The value as text for listings; long arrays and strings are cut to `limit` items/characters.
    std::string to_display(std::size_t limit = 8) const {
        switch (type) {
            case gguf_value_type::string:
                return s.size() <= limit * 8 ? "\"" + escape(s) + "\""
                                             : "\"" + escape(s.substr(0, limit * 8)) + "...\" (" +
                                                   std::to_string(s.size()) + " bytes)";
            case gguf_value_type::boolean: return u ? "true" : "false";
            case gguf_value_type::float32:
            case gguf_value_type::float64: return ::qaq::detail::concat(f);
            case gguf_value_type::array: {
                std::string out = "[";
                for (std::size_t k = 0; k < array.size() && k < limit; ++k)
                    out += (k ? ", " : "") + array[k].to_display(limit);
                if (array.size() > limit) out += ", ...";
                return out + "] (" + std::to_string(array.size()) + " items)";
            }
            default: return is_signed() ? std::to_string(i) : std::to_string(u);
        }
    }

private:
    static std::string escape(const std::string& in) {
        std::string out;
        for (char c : in) {
            if (c == '\n') out += "\\n";
            else if (c == '\t') out += "\\t";
            else if (c == '"') out += "\\\"";
            else if (c == '\\') out += "\\\\";
            else out += c;
        }
        return out;
    }
};

/// One entry of the tensor table.
struct gguf_tensor {
    std::string name;
    std::vector<std::int64_t> dims;  ///< ne[0] first: dims[0] is the row length (contiguous)
    ggml_type type = ggml_type::f32;
    std::uint64_t offset = 0;        ///< from the start of the data section
    std::uint64_t size = 0;          ///< bytes
    const std::uint8_t* data = nullptr;

    std::int64_t elements() const noexcept {
        std::int64_t n = 1;
        for (auto d : dims) n *= d;
        return n;
    }
    /// Elements of one row (ne[0]) and number of rows (the product of the other dims).
    std::int64_t row_length() const noexcept { return dims.empty() ? 1 : dims[0]; }
    std::int64_t rows() const noexcept { return row_length() == 0 ? 0 : elements() / row_length(); }
    std::string shape_string() const {
        std::string s = "[";
        for (std::size_t k = 0; k < dims.size(); ++k) s += (k ? ", " : "") + std::to_string(dims[k]);
        return s + "]";
    }
};

namespace detail {

/// Read-only bytes of a whole file: a private memory mapping where the
/// platform has one, otherwise a heap copy.
class file_bytes {
public:
    explicit file_bytes(std::vector<std::uint8_t> bytes) : owned_(std::move(bytes)) {
        data_ = owned_.data();
        size_ = owned_.size();
    }
    explicit file_bytes(const std::string& path) {
#if QAQ_LLAMA_HAS_MMAP
        const int fd = ::open(path.c_str(), O_RDONLY);
        QAQ_CHECK(fd >= 0, "cannot open GGUF file '", path, "': ", std::strerror(errno));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            QAQ_CHECK(false, "cannot stat GGUF file '", path, "': ", std::strerror(e));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            QAQ_CHECK(false, "GGUF path '", path, "' is not a regular file");
        }
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ == 0) {
            ::close(fd);
            data_ = owned_.data();
            return;
        }
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        const int e = errno;
        ::close(fd);
        QAQ_CHECK(p != MAP_FAILED, "cannot memory-map GGUF file '", path, "': ", std::strerror(e));
        mapped_ = p;
        data_ = static_cast<const std::uint8_t*>(p);
#else
        std::ifstream in(path, std::ios::binary);
        QAQ_CHECK(in.good(), "cannot open GGUF file '", path, "'");
        owned_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        data_ = owned_.data();
        size_ = owned_.size();
#endif
    }
    file_bytes(const file_bytes&) = delete;
    file_bytes& operator=(const file_bytes&) = delete;
    ~file_bytes() {
#if QAQ_LLAMA_HAS_MMAP
        if (mapped_) ::munmap(mapped_, size_);
#endif
    }
    const std::uint8_t* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }

private:
    std::vector<std::uint8_t> owned_;
    void* mapped_ = nullptr;
    const std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace detail

class gguf_file {
public:
    static constexpr std::uint32_t default_alignment = 32;
    static constexpr int max_dims = 4;          // GGML_MAX_DIMS
    static constexpr int max_array_depth = 16;  // nesting of arrays of arrays

    /// Memory-maps and parses a file.
    static gguf_file open(const std::string& path) {
        return gguf_file(std::make_shared<const detail::file_bytes>(path), path);
    }
    /// Parses bytes already in memory; `name` stands for the file in messages.
    static gguf_file parse(std::vector<std::uint8_t> bytes, std::string name = "<memory>") {
        return gguf_file(std::make_shared<const detail::file_bytes>(std::move(bytes)), std::move(name));
    }

    const std::string& name() const noexcept { return name_; }
    std::uint32_t version() const noexcept { return version_; }
    std::uint32_t alignment() const noexcept { return alignment_; }
    std::uint64_t data_offset() const noexcept { return data_offset_; }
    std::uint64_t file_size() const noexcept { return bytes_->size(); }

    /// Metadata in file order.
    const std::vector<std::pair<std::string, gguf_value>>& metadata() const noexcept { return metadata_; }
    const std::vector<gguf_tensor>& tensors() const noexcept { return tensors_; }

    const gguf_value* find(std::string_view key) const {
        const auto it = key_index_.find(std::string(key));
        return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
    }
    bool has(std::string_view key) const { return find(key) != nullptr; }
    const gguf_value& at(std::string_view key) const {
        const gguf_value* v = find(key);
        QAQ_CHECK(v != nullptr, "GGUF file '", name_, "' has no metadata key '", key, "'");
        return *v;
    }

    /// Any integer type whose value fits int64.
    std::optional<std::int64_t> find_int(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        return to_int(*v, key);
    }
    std::int64_t get_int(std::string_view key) const { return to_int(at(key), key); }
    /// float32, float64 or an integer.
    std::optional<double> find_float(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        return to_float(*v, key);
    }
    double get_float(std::string_view key) const { return to_float(at(key), key); }
    std::optional<bool> find_bool(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        expect_type(*v, key, gguf_value_type::boolean);
        return v->u != 0;
    }
    std::optional<std::string> find_string(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        expect_type(*v, key, gguf_value_type::string);
        return v->s;
    }
    std::string get_string(std::string_view key) const {
        const gguf_value& v = at(key);
        expect_type(v, key, gguf_value_type::string);
        return v.s;
    }
    /// An array of strings.
    std::vector<std::string> get_string_array(std::string_view key) const {
        const gguf_value& v = at(key);
        expect_array(v, key, "string", v.element_type == gguf_value_type::string);
        std::vector<std::string> out;
        out.reserve(v.array.size());
        for (const auto& e : v.array) out.push_back(e.s);
        return out;
    }
    /// An array of float32 or float64.
    std::vector<float> get_float_array(std::string_view key) const {
        const gguf_value& v = at(key);
        expect_array(v, key, "float", v.element_type == gguf_value_type::float32 ||
                                          v.element_type == gguf_value_type::float64);
        std::vector<float> out;
        out.reserve(v.array.size());
        for (const auto& e : v.array) out.push_back(static_cast<float>(e.f));
        return out;
    }
    /// An array of integers that each fit int32.
    std::vector<std::int32_t> get_int32_array(std::string_view key) const {
        const gguf_value& v = at(key);
        expect_array(v, key, "integer", is_integer_type(v.element_type));
        std::vector<std::int32_t> out;
        out.reserve(v.array.size());
        for (std::size_t k = 0; k < v.array.size(); ++k) {
            const std::int64_t x = to_int(v.array[k], key);
            QAQ_CHECK(x >= std::numeric_limits<std::int32_t>::min() && x <= std::numeric_limits<std::int32_t>::max(),
                      "GGUF file '", name_, "': metadata '", key, "' item ", k, " is ", x, ", outside int32");
            out.push_back(static_cast<std::int32_t>(x));
        }
        return out;
    }

    const gguf_tensor* find_tensor(std::string_view name) const {
        const auto it = tensor_index_.find(std::string(name));
        return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
    }
    const gguf_tensor& tensor(std::string_view name) const {
        const gguf_tensor* t = find_tensor(name);
        QAQ_CHECK(t != nullptr, "GGUF file '", name_, "' has no tensor '", name, "'");
        return *t;
    }

private:
    gguf_file(std::shared_ptr<const detail::file_bytes> bytes, std::string name)
        : bytes_(std::move(bytes)), name_(std::move(name)) {
        parse_all();
    }

    static std::string hex(std::uint64_t x) {
        static const char digits[] = "0123456789abcdef";
        std::string s;
        do {
            s.insert(s.begin(), digits[x & 15]);
            x >>= 4;
        } while (x);
        return s.size() % 2 ? "0" + s : s;
    }
    static bool is_integer_type(gguf_value_type t) noexcept {
        gguf_value v;
        v.type = t;
        return v.is_integer();
    }

    // ---- bounded reading ----------------------------------------------------

    template <class... Parts>
    [[noreturn]] void fail(const Parts&... parts) const {
        throw qaq::error(::qaq::detail::concat("GGUF file '", name_, "': ", parts...));
    }

    std::size_t remaining() const noexcept { return bytes_->size() - pos_; }

    void need(std::uint64_t n, const std::string& what) const {
        if (n > remaining())
            fail("truncated: ", what, " needs ", n, " bytes at offset ", pos_, " but only ", remaining(),
                 " remain (file size ", bytes_->size(), ")");
    }

    template <class T>
    T read(const std::string& what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, bytes_->data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(const std::string& what) {
        const auto n = read<std::uint64_t>(what + " (string length)");
        need(n, what + " (string of " + std::to_string(n) + " bytes)");
        std::string s(reinterpret_cast<const char*>(bytes_->data() + pos_), static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        return s;
    }

    static std::uint64_t scalar_size(gguf_value_type t) noexcept {
        switch (t) {
            case gguf_value_type::uint8:
            case gguf_value_type::int8:
            case gguf_value_type::boolean: return 1;
            case gguf_value_type::uint16:
            case gguf_value_type::int16: return 2;
            case gguf_value_type::uint32:
            case gguf_value_type::int32:
            case gguf_value_type::float32: return 4;
            case gguf_value_type::uint64:
            case gguf_value_type::int64:
            case gguf_value_type::float64:
            case gguf_value_type::string: return 8;  // a string: at least its length
            case gguf_value_type::array: return 12;  // at least element type + count
        }
        return 1;
    }

    gguf_value_type read_value_type(const std::string& what) {
        const auto raw = read<std::uint32_t>(what + " (value type)");
        if (raw > static_cast<std::uint32_t>(gguf_value_type::float64))
            fail("corrupted: ", what, " has unknown value type ", raw, " at offset ", pos_ - 4,
                 " (expected 0..12)");
        return static_cast<gguf_value_type>(raw);
    }

    gguf_value read_value(gguf_value_type type, const std::string& what, int depth) {
        gguf_value v;
        v.type = type;
        switch (type) {
            case gguf_value_type::uint8: v.u = read<std::uint8_t>(what); break;
            case gguf_value_type::int8: v.i = read<std::int8_t>(what); break;
            case gguf_value_type::uint16: v.u = read<std::uint16_t>(what); break;
            case gguf_value_type::int16: v.i = read<std::int16_t>(what); break;
            case gguf_value_type::uint32: v.u = read<std::uint32_t>(what); break;
            case gguf_value_type::int32: v.i = read<std::int32_t>(what); break;
            case gguf_value_type::uint64: v.u = read<std::uint64_t>(what); break;
            case gguf_value_type::int64: v.i = read<std::int64_t>(what); break;
            case gguf_value_type::float32: v.f = read<float>(what); break;
            case gguf_value_type::float64: v.f = read<double>(what); break;
            case gguf_value_type::boolean: {
                const auto b = read<std::uint8_t>(what);
                if (b > 1) fail("corrupted: ", what, " is a bool with byte value ", unsigned(b), " at offset ", pos_ - 1);
                v.u = b;
                break;
            }
            case gguf_value_type::string: v.s = read_string(what); break;
            case gguf_value_type::array: {
                if (depth >= max_array_depth)
                    fail("corrupted: ", what, " nests arrays deeper than ", max_array_depth, " levels");
                v.element_type = read_value_type(what + " (array element type)");
                const auto count = read<std::uint64_t>(what + " (array length)");
                const std::uint64_t min_size = scalar_size(v.element_type);
                if (count > remaining() / min_size)
                    fail(count > remaining() ? "truncated or corrupted: " : "truncated: ", what, " claims ", count,
                         " items of ", to_string(v.element_type), " (at least ", min_size,
                         " bytes each) but only ", remaining(), " bytes remain at offset ", pos_);
                v.array.reserve(static_cast<std::size_t>(count));
                for (std::uint64_t k = 0; k < count; ++k)
                    v.array.push_back(read_value(v.element_type, what + "[" + std::to_string(k) + "]", depth + 1));
                break;
            }
        }
        return v;
    }

    // ---- the file -----------------------------------------------------------

    void parse_all() {
        pos_ = 0;
        if (bytes_->size() == 0) fail("the file is empty (expected a GGUF header)");
        const auto magic = read<std::uint32_t>("the magic number");
        if (magic != 0x46554747u) {  // "GGUF" little-endian
            const std::uint8_t* m = bytes_->data();
            std::string shown;
            for (int k = 0; k < 4; ++k)
                shown += (m[k] >= 32 && m[k] < 127) ? std::string(1, static_cast<char>(m[k]))
                                                    : "\\x" + hex(m[k]);
            fail("not a GGUF file: it starts with \"", shown, "\", expected \"GGUF\"");
        }
        version_ = read<std::uint32_t>("the version");
        if (version_ == 1) fail("GGUF version 1 is not supported (expected version 2 or 3)");
        if ((version_ & 0xFFFFu) == 0 && version_ != 0)
            fail("version field 0x", hex(version_),
                 " looks byte-swapped: a big-endian GGUF file; only little-endian files are supported");
        if (version_ != 2 && version_ != 3)
            fail("unsupported GGUF version ", version_, " (expected 2 or 3)");
        const auto tensor_count = read<std::uint64_t>("the tensor count");
        const auto kv_count = read<std::uint64_t>("the metadata count");
        // A metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes,
        // a tensor entry at least 8 + 4 + 8 + 4 + 8.
        if (kv_count > remaining() / 13)
            fail("corrupted or truncated: the header claims ", kv_count, " metadata entries but only ", remaining(),
                 " bytes follow it");
        if (tensor_count > remaining() / 32)
            fail("corrupted or truncated: the header claims ", tensor_count, " tensors but only ", remaining(),
                 " bytes follow it");

        metadata_.reserve(static_cast<std::size_t>(kv_count));
        for (std::uint64_t k = 0; k < kv_count; ++k) {
            const std::string entry = "metadata entry " + std::to_string(k);
            std::string key = read_string(entry + " key");
            const std::string what = entry + " '" + key + "'";
            const gguf_value_type type = read_value_type(what);
            gguf_value value = read_value(type, what, 0);
            if (!key_index_.emplace(key, metadata_.size()).second) fail("corrupted: duplicate metadata key '", key, "'");
            metadata_.emplace_back(std::move(key), std::move(value));
        }

        alignment_ = default_alignment;
        if (const gguf_value* a = find("general.alignment")) {
            if (a->type != gguf_value_type::uint32)
                fail("general.alignment has type ", a->type_name(), ", expected uint32");
            if (a->u == 0 || (a->u & (a->u - 1)) != 0)
                fail("general.alignment is ", a->u, ", expected a power of two");
            alignment_ = static_cast<std::uint32_t>(a->u);
        }

        tensors_.reserve(static_cast<std::size_t>(tensor_count));
        for (std::uint64_t k = 0; k < tensor_count; ++k) {
            const std::string entry = "tensor info " + std::to_string(k);
            gguf_tensor t;
            t.name = read_string(entry + " name");
            const std::string what = entry + " ('" + t.name + "')";
            const auto n_dims = read<std::uint32_t>(what + " dimension count");
            if (n_dims < 1 || n_dims > static_cast<std::uint32_t>(max_dims))
                fail("corrupted: ", what, " has ", n_dims, " dimensions (expected 1..", max_dims, ")");
            std::int64_t elements = 1;
            for (std::uint32_t d = 0; d < n_dims; ++d) {
                const auto ne = read<std::uint64_t>(what + " dimension " + std::to_string(d));
                if (ne > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                    fail("corrupted: ", what, " dimension ", d, " is ", ne);
                t.dims.push_back(static_cast<std::int64_t>(ne));
                if (ne != 0 && elements > std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(ne))
                    fail("corrupted: ", what, " has shape ", t.shape_string(), "..., more elements than int64 holds");
                elements *= static_cast<std::int64_t>(ne);
            }
            const auto type_id = read<std::uint32_t>(what + " type");
            const ggml_type_traits* traits = find_ggml_type(type_id);
            if (!traits) fail("corrupted or unsupported: ", what, " has unknown GGML type id ", type_id);
            t.type = traits->type;
            t.offset = read<std::uint64_t>(what + " data offset");
            if (t.dims[0] % traits->block_size != 0)
                fail("corrupted: ", what, " has type ", traits->name, " with rows of ", t.dims[0],
                     " elements, not a multiple of its block size ", traits->block_size);
            const std::uint64_t blocks = static_cast<std::uint64_t>(elements / traits->block_size);
            if (blocks > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(traits->type_size))
                fail("corrupted: ", what, " is too large");
            t.size = blocks * static_cast<std::uint64_t>(traits->type_size);
            if (t.offset % alignment_ != 0)
                fail("corrupted: ", what, " data offset ", t.offset, " is not a multiple of the alignment ", alignment_);
            if (!tensor_index_.emplace(t.name, tensors_.size()).second)
                fail("corrupted: duplicate tensor name '", t.name, "'");
            tensors_.push_back(std::move(t));
        }

        const std::uint64_t end_of_infos = pos_;
        data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
        const std::uint64_t size = bytes_->size();
        for (auto& t : tensors_) {
            if (t.offset > size || data_offset_ > size - t.offset || t.size > size - data_offset_ - t.offset)
                fail("truncated: tensor '", t.name, "' (", ggml_type_name(t.type), " ", t.shape_string(), ", ", t.size,
                     " bytes) spans file offsets ", data_offset_ + t.offset, "..", data_offset_ + t.offset + t.size,
                     " but the file has ", size, " bytes");
            t.data = bytes_->data() + data_offset_ + t.offset;
        }
        // Overlapping tensors mean a corrupted table.
        std::vector<const gguf_tensor*> by_offset;
        for (const auto& t : tensors_) by_offset.push_back(&t);
        std::sort(by_offset.begin(), by_offset.end(),
                  [](const gguf_tensor* a, const gguf_tensor* b) { return a->offset < b->offset; });
        for (std::size_t k = 1; k < by_offset.size(); ++k)
            if (by_offset[k - 1]->size > 0 && by_offset[k - 1]->offset + by_offset[k - 1]->size > by_offset[k]->offset)
                fail("corrupted: tensors '", by_offset[k - 1]->name, "' and '", by_offset[k]->name,
                     "' overlap in the data section");
    }

    std::int64_t to_int(const gguf_value& v, std::string_view key) const {
        if (v.is_signed()) return v.i;
        if (v.is_unsigned()) {
            if (v.u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                fail("metadata '", key, "' is ", v.u, ", too large");
            return static_cast<std::int64_t>(v.u);
        }
        fail("metadata '", key, "' has type ", v.type_name(), ", expected an integer");
    }
    double to_float(const gguf_value& v, std::string_view key) const {
        if (v.is_float()) return v.f;
        if (v.is_integer()) return static_cast<double>(to_int(v, key));
        fail("metadata '", key, "' has type ", v.type_name(), ", expected a number");
    }
    void expect_type(const gguf_value& v, std::string_view key, gguf_value_type t) const {
        if (v.type != t) fail("metadata '", key, "' has type ", v.type_name(), ", expected ", to_string(t));
    }
    void expect_array(const gguf_value& v, std::string_view key, const char* what, bool element_ok) const {
        if (v.type != gguf_value_type::array || !element_ok)
            fail("metadata '", key, "' has type ", v.type_name(), ", expected an array of ", what);
    }

    std::shared_ptr<const detail::file_bytes> bytes_;
    std::string name_;
    std::size_t pos_ = 0;
    std::uint32_t version_ = 0;
    std::uint32_t alignment_ = default_alignment;
    std::uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, gguf_value>> metadata_;
    std::unordered_map<std::string, std::size_t> key_index_;
    std::vector<gguf_tensor> tensors_;
    std::unordered_map<std::string, std::size_t> tensor_index_;
};

}  // namespace qaq::llama
