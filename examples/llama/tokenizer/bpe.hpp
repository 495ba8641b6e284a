#pragma once
// The merge loops of the two BPE flavours and the flat hash tables they use.
//
//   byte-level BPE (GGUF model "gpt2"): a word starts as one symbol per byte;
//     the adjacent pair with the lowest merge rank (ties: leftmost) merges
//     until no pair of the merge list is left. This is HF tokenizers' and
//     llama.cpp's algorithm.
//   SentencePiece BPE (GGUF model "llama"): a word starts as one symbol per
//     UTF-8 character; the adjacent pair whose concatenation is a token with
//     the highest score (ties: leftmost) merges; symbols left that are not
//     tokens become their bytes' <0xNN> tokens. This is llama.cpp's
//     llm_tokenizer_spm.
//
// The tables hold token ids only (never pointers into strings), so a
// tokenizer can be copied and moved freely.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace qaq::llama::detail {

inline std::size_t table_capacity(std::size_t n) {
    std::size_t capacity = 16;
    while (capacity < 2 * n + 1) capacity *= 2;
    return capacity;
}

/// Text -> token id, open addressing over ids; the texts live in the
/// caller's token vector. The first id of a duplicated text wins.
class token_index {
public:
    void build(const std::vector<std::string>& tokens) {
        slots_.assign(table_capacity(tokens.size()), -1);
        mask_ = slots_.size() - 1;
        for (std::size_t id = 0; id < tokens.size(); ++id) {
            std::size_t slot = hash(tokens[id]) & mask_;
            while (slots_[slot] >= 0 && tokens[static_cast<std::size_t>(slots_[slot])] != tokens[id]) {
                slot = (slot + 1) & mask_;
            }
            if (slots_[slot] < 0) slots_[slot] = static_cast<std::int32_t>(id);
        }
    }

    /// The id of `text`, or -1.
    std::int32_t find(std::string_view text, const std::vector<std::string>& tokens) const {
        if (slots_.empty()) return -1;
        std::size_t slot = hash(text) & mask_;
        while (true) {
            const std::int32_t id = slots_[slot];
            if (id < 0) return -1;
            if (tokens[static_cast<std::size_t>(id)] == text) return id;
            slot = (slot + 1) & mask_;
        }
    }

private:
    static std::size_t hash(std::string_view text) { return std::hash<std::string_view>{}(text); }

    std::vector<std::int32_t> slots_;
    std::size_t mask_ = 0;
};

/// (left id, right id) -> (rank, merged id) for byte-level BPE.
class merge_table {
public:
    struct entry {
        std::uint64_t key = empty_key;
        std::int32_t rank = 0;
        std::int32_t merged = 0;
    };

    void reserve(std::size_t n) {
        slots_.assign(table_capacity(n), entry{});
        shift_ = 64;
        for (std::size_t c = slots_.size(); c > 1; c /= 2) --shift_;
        size_ = 0;
    }

    /// Adds a merge; a pair already present keeps its first (lower) rank.
    void insert(std::int32_t left, std::int32_t right, std::int32_t rank, std::int32_t merged) {
        const std::uint64_t key = pack(left, right);
        std::size_t slot = index(key);
        while (slots_[slot].key != empty_key) {
            if (slots_[slot].key == key) return;
            slot = (slot + 1) & (slots_.size() - 1);
        }
        slots_[slot] = entry{key, rank, merged};
        ++size_;
    }

    /// The merge of the pair, or nullptr.
    const entry* find(std::int32_t left, std::int32_t right) const {
        if (slots_.empty()) return nullptr;
        const std::uint64_t key = pack(left, right);
        std::size_t slot = index(key);
        while (true) {
            const entry& e = slots_[slot];
            if (e.key == key) return &e;
            if (e.key == empty_key) return nullptr;
            slot = (slot + 1) & (slots_.size() - 1);
        }
    }

    std::size_t size() const { return size_; }

private:
    static constexpr std::uint64_t empty_key = ~std::uint64_t{0};
    static std::uint64_t pack(std::int32_t left, std::int32_t right) {
        return (std::uint64_t(std::uint32_t(left)) << 32) | std::uint32_t(right);
    }
    std::size_t index(std::uint64_t key) const {
        return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
    }

    std::vector<entry> slots_;
    unsigned shift_ = 64;
    std::size_t size_ = 0;
};

/// Reusable storage of the merge loops.
struct bpe_workspace {
    struct symbol {
        std::int32_t id;    // token id; -1 once merged into its left neighbour
        std::int32_t prev;  // index of the previous live symbol, -1 at the start
        std::int32_t next;  // index of the next live symbol, -1 at the end
        std::uint32_t begin, length;  // bytes (SentencePiece only)
    };
    struct candidate {
        float priority;  // rank (byte-level; lower first) or -score (SentencePiece; lower first)
        std::int32_t left, right;
        std::int32_t left_id, right_id;  // byte-level: the ids the pair had when queued
        std::int32_t merged;
        std::uint32_t length;  // SentencePiece: the bytes the pair had when queued
    };
    // std::push_heap keeps the greatest on top: "greater" is lower priority
    // value, then the leftmost.
    struct after {
        bool operator()(const candidate& a, const candidate& b) const {
            return a.priority > b.priority || (a.priority == b.priority && a.left > b.left);
        }
    };

    std::vector<symbol> symbols;
    std::vector<candidate> queue;

    void push(const candidate& c) {
        queue.push_back(c);
        std::push_heap(queue.begin(), queue.end(), after{});
    }
    candidate pop() {
        std::pop_heap(queue.begin(), queue.end(), after{});
        candidate c = queue.back();
        queue.pop_back();
        return c;
    }
};

/// Byte-level BPE of one word whose initial symbols (one per byte) are in
/// ws.symbols[i].id; appends the resulting ids to `out`.
inline void merge_byte_level(bpe_workspace& ws, const merge_table& merges, std::vector<std::int32_t>& out) {
    auto& sym = ws.symbols;
    const auto n = static_cast<std::int32_t>(sym.size());
    if (n == 0) return;
    for (std::int32_t i = 0; i < n; ++i) {
        sym[static_cast<std::size_t>(i)].prev = i - 1;
        sym[static_cast<std::size_t>(i)].next = i + 1 < n ? i + 1 : -1;
    }
    ws.queue.clear();
    const auto try_pair = [&](std::int32_t left, std::int32_t right) {
        if (left < 0 || right < 0) return;
        const std::int32_t a = sym[static_cast<std::size_t>(left)].id;
        const std::int32_t b = sym[static_cast<std::size_t>(right)].id;
        if (const merge_table::entry* e = merges.find(a, b)) {
            ws.push({static_cast<float>(e->rank), left, right, a, b, e->merged, 0});
        }
    };
    for (std::int32_t i = 0; i + 1 < n; ++i) try_pair(i, i + 1);
    while (!ws.queue.empty()) {
        const bpe_workspace::candidate c = ws.pop();
        auto& l = sym[static_cast<std::size_t>(c.left)];
        auto& r = sym[static_cast<std::size_t>(c.right)];
        if (l.id != c.left_id || r.id != c.right_id || l.next != c.right) continue;  // stale
        l.id = c.merged;
        r.id = -1;
        l.next = r.next;
        if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = c.left;
        try_pair(l.prev, c.left);
        try_pair(c.left, l.next);
    }
    for (std::int32_t i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
        out.push_back(sym[static_cast<std::size_t>(i)].id);
    }
}

/// SentencePiece BPE of one word: ws.symbols hold one symbol per UTF-8
/// character of `text` (begin, length; id = token of that character or -1).
/// `lookup(begin, length)` gives the token id of a byte range or -1;
/// `score(id)` its score; `emit_bytes(begin, length)` appends byte tokens.
template <class Lookup, class Score, class EmitBytes>
void merge_sentencepiece(bpe_workspace& ws, Lookup lookup, Score score, EmitBytes emit_bytes,
                         std::vector<std::int32_t>& out) {
    auto& sym = ws.symbols;
    const auto n = static_cast<std::int32_t>(sym.size());
    if (n == 0) return;
    for (std::int32_t i = 0; i < n; ++i) {
        sym[static_cast<std::size_t>(i)].prev = i - 1;
        sym[static_cast<std::size_t>(i)].next = i + 1 < n ? i + 1 : -1;
    }
    ws.queue.clear();
    const auto try_pair = [&](std::int32_t left, std::int32_t right) {
        if (left < 0 || right < 0) return;
        const auto& l = sym[static_cast<std::size_t>(left)];
        const auto& r = sym[static_cast<std::size_t>(right)];
        const std::uint32_t length = l.length + r.length;
        const std::int32_t id = lookup(l.begin, length);
        if (id < 0) return;
        ws.push({-score(id), left, right, 0, 0, id, length});
    };
    for (std::int32_t i = 0; i + 1 < n; ++i) try_pair(i, i + 1);
    while (!ws.queue.empty()) {
        const bpe_workspace::candidate c = ws.pop();
        auto& l = sym[static_cast<std::size_t>(c.left)];
        auto& r = sym[static_cast<std::size_t>(c.right)];
        if (l.length == 0 || r.length == 0 || l.length + r.length != c.length) continue;  // stale
        l.length += r.length;
        l.id = c.merged;
        r.length = 0;
        r.id = -1;
        l.next = r.next;
        if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = c.left;
        try_pair(l.prev, c.left);
        try_pair(c.left, l.next);
    }
    for (std::int32_t i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
        const auto& s = sym[static_cast<std::size_t>(i)];
        if (s.id >= 0) {
            out.push_back(s.id);
        } else {
            emit_bytes(s.begin, s.length);
        }
    }
}

}  // namespace qaq::llama::detail
