// bitnet-bench: prompt-processing (pp) and generation (tg) speed of the engine, llama-bench style,
// with a memory-bandwidth probe run in the same process so that tg can be read as a fraction of
// what the machine can stream at that moment.
//
//   pp<P>: one batch of P tokens into an empty context (the whole prompt as one batch; the engine
//          splits prompts longer than kMaxBatch), logits for the last token.
//   tg<N>: N single-token decode steps after a short prompt, logits every step.
//   b<B>:  batched steps of B tokens with logits for all B rows, what verifying a lookup draft of
//          B-1 tokens costs (each step keeps one token, as a fully rejected draft would); shown as
//          B * steps/s, with each step's time relative to one tg token of the same run below.
//   Each test: one warm-up run, then -r timed runs; mean +- sample std of tokens/s.
//
// Decode is bound by memory bandwidth: every generated token streams all ternary weights plus
// the output head (the tied embedding when there is no output.weight). bytes_per_token counts
// those bytes as the file stores them; achieved GB/s = bytes_per_token * tg t/s, and
// bandwidth_fraction = achieved / probe. The probe stream-reads a buffer far larger than the L3
// cache with the same thread pool as the engine. On a shared machine the bandwidth moves from
// second to second, so in tg runs every token is followed by a probe pass over --bw-token-mib
// (not timed as generation): each token is compared with the bandwidth of its own moment, and
// the fraction shown is the median of those per-token ratios.
//
// Uses the engine's internal C++ API (linked statically), not the C API.
#include <sys/resource.h>

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bitnet.h"
#include "forward.h"
#include "head_act.h"
#include "kernels/ternary.h"
#include "kernels/tuning.h"
#include "model.h"
#include "preset_search.h"
#include "quant_types.h"
#include "threadpool.h"

namespace {

using namespace bitnet;
using clock_type = std::chrono::steady_clock;

constexpr int64_t kTgPromptTokens = 8;  // the short prompt before a tg test (not timed)
constexpr int64_t kBatchSteps = 32;     // steps per timed run of a b<B> test

struct options {
    std::string model_path;
    std::vector<int64_t> n_prompt = {512};
    std::vector<int64_t> n_gen = {128};
    std::vector<int64_t> n_batch;  // b<B> tests (none by default)
    std::vector<int64_t> n_threads;
    std::vector<std::string> isas;  // empty: the active set
    std::vector<std::string> head_acts = {"exact"};  // per thread count, in turns (head_act.h)
    int64_t repetitions = 5;
    int64_t bw_mib = 1024;
    int64_t bw_passes = 5;
    int64_t bw_token_mib = 256;  // the probe pass after each tg token
    bool json = false;
    bool bandwidth = true;
    std::string preset = "auto";  // a file, "none" (built-in defaults), or auto: as the Python package finds it
};

const char *kUsage =
    "usage: bitnet-bench -m MODEL.gguf [-p 512[,128..]] [-n 128[,64..]] [-b 2,3,5] [-t 1,2] [-r 5] [--json]\n"
    "                    [--no-bandwidth] [--bw-mib 1024] [--bw-passes 5] [--bw-token-mib 256]\n"
    "                    [--isa avx2[,avx512..]] [--head-act exact[,int8]] [--preset FILE|none]\n"
    "  -p/-n/-b take comma lists (0 skips the test); -t defaults to the number of hardware threads.\n"
    "  -b B: batched decode steps of B tokens with all B rows of logits (a lookup draft's verification),\n"
    "        each step's time also given relative to one tg token.\n"
    "  --head-act: the output head's activations, in turns per thread count: exact (default), int8\n"
    "        (Q8_0 / Q6_K heads: int8 per block, integer dot products; rows marked +int8head).\n";

[[noreturn]] void usage_error(const std::string &what) {
    std::fprintf(stderr, "error: %s (bitnet-bench --help for usage)\n", what.c_str());
    std::exit(2);
}

[[noreturn]] void failure(const std::string &what) {
    std::fprintf(stderr, "error: %s\n", what.c_str());
    std::exit(1);
}

std::vector<std::string> split_commas(const std::string &s) {
    std::vector<std::string> out;
    size_t start = 0;
    for (;;) {
        const size_t comma = s.find(',', start);
        out.push_back(s.substr(start, comma - start));
        if (comma == std::string::npos) return out;
        start = comma + 1;
    }
}

// Comma list of integers, each >= lo; usage error naming the flag otherwise.
std::vector<int64_t> parse_int_list(const std::string &flag, const std::string &text, int64_t lo) {
    std::vector<int64_t> out;
    for (const std::string &item : split_commas(text)) {
        char *end = nullptr;
        errno = 0;
        const long long v = std::strtoll(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || errno != 0 || v < lo || v > (1LL << 30))
            usage_error(flag + " expects comma-separated integers >= " + std::to_string(lo) + ", got '" +
                        text + "'");
        out.push_back(v);
    }
    return out;
}

int64_t parse_int(const std::string &flag, const std::string &text, int64_t lo) {
    const std::vector<int64_t> v = parse_int_list(flag, text, lo);
    if (v.size() != 1) usage_error(flag + " expects one integer, got '" + text + "'");
    return v[0];
}

// The command line as data: spellings, whether a value follows, and what it sets.
struct flag_spec {
    const char *names[2];
    bool takes_value;
    void (*apply)(options &o, const std::string &flag, const std::string &value);
};

using S = const std::string &;
const flag_spec kFlags[] = {
    {{"-m", "--model"}, true, [](options &o, S, S v) { o.model_path = v; }},
    {{"-p", "--n-prompt"}, true, [](options &o, S f, S v) { o.n_prompt = parse_int_list(f, v, 0); }},
    {{"-n", "--n-gen"}, true, [](options &o, S f, S v) { o.n_gen = parse_int_list(f, v, 0); }},
    {{"-b", "--batch-step"}, true, [](options &o, S f, S v) { o.n_batch = parse_int_list(f, v, 0); }},
    {{"-t", "--threads"}, true, [](options &o, S f, S v) { o.n_threads = parse_int_list(f, v, 1); }},
    {{"-r", "--repetitions"}, true, [](options &o, S f, S v) { o.repetitions = parse_int(f, v, 1); }},
    {{"--bw-mib", nullptr}, true, [](options &o, S f, S v) { o.bw_mib = parse_int(f, v, 1); }},
    {{"--bw-passes", nullptr}, true, [](options &o, S f, S v) { o.bw_passes = parse_int(f, v, 1); }},
    {{"--bw-token-mib", nullptr}, true, [](options &o, S f, S v) { o.bw_token_mib = parse_int(f, v, 1); }},
    {{"--isa", nullptr}, true, [](options &o, S, S v) { o.isas = split_commas(v); }},
    {{"--head-act", nullptr}, true, [](options &o, S, S v) { o.head_acts = split_commas(v); }},
    {{"--json", nullptr}, false, [](options &o, S, S) { o.json = true; }},
    {{"--no-bandwidth", nullptr}, false, [](options &o, S, S) { o.bandwidth = false; }},
    {{"--preset", nullptr}, true, [](options &o, S, S v) { o.preset = v; }},
};

const flag_spec *find_flag(const std::string &arg) {
    for (const flag_spec &f : kFlags)
        for (const char *name : f.names)
            if (name != nullptr && arg == name) return &f;
    return nullptr;
}

options parse_args(int argc, char **argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            std::exit(0);
        }
        const flag_spec *f = find_flag(a);
        if (f == nullptr) usage_error("unknown flag '" + a + "'");
        if (f->takes_value && i + 1 >= argc) usage_error("flag " + a + " needs a value");
        f->apply(o, a, f->takes_value ? argv[++i] : "");
    }
    if (o.model_path.empty()) usage_error("no model given: pass -m MODEL.gguf");
    if (o.n_threads.empty()) o.n_threads = {std::max<int64_t>(1, std::thread::hardware_concurrency())};
    for (int64_t t : o.n_threads)
        if (t > 512) usage_error("-t " + std::to_string(t) + " is more threads than this tool allows (512)");
    return o;
}

// ---- statistics and output helpers -------------------------------------------------------------

struct summary {
    double mean = 0, std = 0;
};

summary summarize(const std::vector<double> &v) {
    summary s;
    if (v.empty()) return s;
    for (double x : v) s.mean += x;
    s.mean /= static_cast<double>(v.size());
    if (v.size() > 1) {
        double ss = 0;
        for (double x : v) ss += (x - s.mean) * (x - s.mean);
        s.std = std::sqrt(ss / static_cast<double>(v.size() - 1));
    }
    return s;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string json_string(const std::string &s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

std::string json_number(double v, bool present = true) {
    if (!present || !std::isfinite(v)) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

double peak_rss_mb() {
    struct rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// ---- memory-bandwidth probe ---------------------------------------------------------------------

volatile uint64_t g_sink = 0;

// A buffer far larger than the last-level cache, read front to back by every thread of the pool
// (thread i reads slice i), several words in flight per thread; the sum keeps the reads alive.
class bandwidth_probe {
  public:
    // In huge pages where the kernel allows, like the engine's weights (weight_arena.h), so that
    // the probe and the model are read the same way.
    explicit bandwidth_probe(int64_t n_mib) : n_words_(static_cast<size_t>(n_mib) << 17) {
        void *p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) failure("cannot allocate " + std::to_string(n_mib) + " MiB for the bandwidth probe");
#ifdef MADV_HUGEPAGE
        madvise(p, bytes(), MADV_HUGEPAGE);
#endif
        buffer_ = static_cast<uint64_t *>(p);
    }
    ~bandwidth_probe() { munmap(buffer_, bytes()); }
    bandwidth_probe(const bandwidth_probe &) = delete;
    bandwidth_probe &operator=(const bandwidth_probe &) = delete;

    // Writes the buffer from the pool's threads (so each slice's pages belong to its reader).
    void fill(thread_pool &pool) {
        pool.run([&](int t, int nt) {
            const auto [begin, end] = slice(n_words_, t, nt);
            for (size_t i = begin; i < end; ++i) buffer_[i] = i * 0x9E3779B97F4A7C15ull;
        });
    }

    // One timed pass over the buffer's first n_mib MiB (all of it when 0); GB/s (1e9 bytes).
    double pass(thread_pool &pool, int64_t n_mib = 0) {
        const size_t n_words = n_mib > 0 ? std::min(n_words_, static_cast<size_t>(n_mib) << 17) : n_words_;
        std::vector<uint64_t> sums(static_cast<size_t>(pool.size()) * 8);  // a cache line each
        const auto t0 = clock_type::now();
        pool.run([&](int t, int nt) {
            const auto [begin, end] = slice(n_words, t, nt);
            uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
            for (size_t i = begin; i + 8 <= end; i += 8) {
                // The same prefetch the kernels issue (kernels/ternary_impl.h: 8 KiB ahead, into L2).
                __builtin_prefetch(buffer_ + i + 1024, 0, 2);
                a0 += buffer_[i], a1 += buffer_[i + 1], a2 += buffer_[i + 2], a3 += buffer_[i + 3];
                a4 += buffer_[i + 4], a5 += buffer_[i + 5], a6 += buffer_[i + 6], a7 += buffer_[i + 7];
            }
            sums[static_cast<size_t>(t) * 8] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
        });
        const double s = seconds_since(t0);
        for (uint64_t v : sums) g_sink = g_sink ^ v;  // keeps the loads alive
        return static_cast<double>(n_words * sizeof(uint64_t)) / s / 1e9;
    }

  private:
    size_t bytes() const { return n_words_ * sizeof(uint64_t); }

    // Slices of whole cache lines (8 words) of the first n_words.
    static std::pair<size_t, size_t> slice(size_t n_words, int t, int nt) {
        const size_t lines = n_words / 8, per = (lines + nt - 1) / nt;
        const size_t b = std::min(lines, per * t), e = std::min(lines, per * (t + 1));
        return {b * 8, e * 8};
    }

    size_t n_words_;
    uint64_t *buffer_ = nullptr;
};

// ---- the model's bytes per generated token ----------------------------------------------------

struct token_bytes {
    uint64_t head = 0;   // the lm_head matrix (the tied embedding when there is no output.weight)
    uint64_t other = 0;  // ternary weights and norm vectors
    uint64_t total() const { return head + other; }
};

// Everything the file holds is read once per token, except an untied embedding, of which only
// one row is read.
token_bytes bytes_per_token(const model &m) {
    const gguf_file &f = *m.file;
    const gguf_tensor *embd = f.tensor("token_embd.weight");
    const gguf_tensor *out = f.tensor("output.weight");
    const gguf_tensor *head = out != nullptr ? out : embd;
    token_bytes b;
    for (const gguf_tensor &t : f.tensors()) {
        if (&t == head)
            b.head += t.n_bytes;
        else if (&t == embd)
            b.other += t.n_bytes / static_cast<uint64_t>(std::max<int64_t>(1, t.ne[1]));
        else
            b.other += t.n_bytes;
    }
    return b;
}

// ---- the tests ---------------------------------------------------------------------------------

struct result {
    std::string isa, test;
    int n_threads = 0;
    int64_t n_tokens = 0;
    std::vector<double> tokens_per_s;
    bool has_bandwidth = false;
    double bandwidth_gb_s = 0, bandwidth_gb_s_max = 0;
    double bandwidth_fraction = 0;  // median over tokens of achieved / probe
};

struct bench {
    const options &opt;
    const model &m;
    token_bytes bytes;
    std::vector<int32_t> tokens;  // random ids, enough for the longest test
    std::vector<float> logits;

    void decode(context &ctx, const int32_t *ids, int64_t n, bool all_logits = false) {
        std::string error;
        if (forward_decode(ctx, ids, n, logits.data(), all_logits, &error) != 0)
            failure("decode failed: " + error);
    }

    // Seconds for one pp run: the whole prompt in one call into an emptied context.
    double run_pp(context &ctx, int64_t n_prompt) {
        ctx.n_past = 0;
        const auto t0 = clock_type::now();
        decode(ctx, tokens.data(), n_prompt);
        return seconds_since(t0);
    }

    // Seconds for n_gen single-token steps after the short prompt. With a probe, a probe pass
    // follows every token (not counted), and each token's fraction of that pass's bandwidth is
    // appended to *fractions and the pass's GB/s to *bw.
    double run_tg(context &ctx, int64_t n_gen, bandwidth_probe *probe = nullptr, std::vector<double> *bw = nullptr,
                  std::vector<double> *fractions = nullptr) {
        ctx.n_past = 0;
        decode(ctx, tokens.data(), kTgPromptTokens);
        double total = 0;
        for (int64_t i = 0; i < n_gen; ++i) {
            const auto t0 = clock_type::now();
            decode(ctx, tokens.data() + kTgPromptTokens + i, 1);
            const double s = seconds_since(t0);
            total += s;
            if (probe == nullptr) continue;
            const double gb_s = probe->pass(*ctx.pool, opt.bw_token_mib);
            bw->push_back(gb_s);
            fractions->push_back(static_cast<double>(bytes.total()) / s / 1e9 / gb_s);
        }
        return total;
    }

    // Seconds for n_steps batched steps of `batch` tokens (all logits) after the short prompt;
    // each step keeps its first token and drops the rest from the cache.
    double run_batch_steps(context &ctx, int64_t batch, int64_t n_steps) {
        ctx.n_past = 0;
        decode(ctx, tokens.data(), kTgPromptTokens);
        const auto t0 = clock_type::now();
        for (int64_t i = 0; i < n_steps; ++i) {
            decode(ctx, tokens.data() + kTgPromptTokens + i, batch, true);
            ctx.n_past -= batch - 1;
        }
        return seconds_since(t0);
    }
};

// "1.18 GB" / "213.4 kB": bytes in decimal units.
std::string format_bytes(uint64_t n) {
    const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1000 && u < 4) v /= 1000, ++u;
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.3g %s", v, units[u]);
    return buf;
}

void print_table_header(const options &opt, const model &m, const token_bytes &b, const char *isa,
                        const std::string &preset) {
    std::printf("model: %s\n%s\n", opt.model_path.c_str(), m.desc.c_str());
    std::printf("file %s; bytes read per generated token %s (head %s + ternary weights and norms %s)\n",
                format_bytes(m.file->file_size()).c_str(), format_bytes(b.total()).c_str(),
                format_bytes(b.head).c_str(), format_bytes(b.other).c_str());
    std::printf("kernels %s (available: %s); %lld timed runs after one warm-up; bandwidth probe %s\n", isa,
                ternary_kernels_available(), static_cast<long long>(opt.repetitions),
                opt.bandwidth ? (std::to_string(opt.bw_mib) + " MiB").c_str() : "off");
    std::printf("kernel preset: %s\n\n", preset.empty() ? "none (built-in defaults)" : preset.c_str());
    std::printf("| %10s | %7s | %-7s | %19s | %8s | %10s | %7s |\n", "isa", "threads", "test", "tokens/s",
                "GB/s", "probe GB/s", "% of bw");
    std::printf(
        "|-----------:|--------:|:--------|--------------------:|---------:|-----------:|--------:|\n");
}

void print_result(const options &opt, const bench &b, const result &r) {
    const summary s = summarize(r.tokens_per_s);
    const bool tg = r.test.rfind("tg", 0) == 0;
    const double achieved = s.mean * static_cast<double>(b.bytes.total()) / 1e9;
    const bool frac = tg && r.has_bandwidth && r.bandwidth_fraction > 0;
    if (opt.json) {
        std::string samples;
        for (double v : r.tokens_per_s) samples += (samples.empty() ? "" : ",") + json_number(v);
        std::printf(
            "{\"model\":%s,\"model_desc\":%s,\"isa\":%s,\"n_threads\":%d,\"test\":%s,\"n_tokens\":%lld,"
            "\"tokens_per_s_mean\":%s,\"tokens_per_s_std\":%s,\"tokens_per_s_samples\":[%s],\"reps\":%zu,"
            "\"bandwidth_gb_s\":%s,\"bandwidth_gb_s_max\":%s,\"bytes_per_token\":%llu,\"achieved_gb_s\":%s,"
            "\"bandwidth_fraction\":%s,\"model_size_bytes\":%llu,\"peak_rss_mb\":%s}\n",
            json_string(opt.model_path).c_str(), json_string(b.m.desc).c_str(), json_string(r.isa).c_str(),
            r.n_threads, json_string(r.test).c_str(), static_cast<long long>(r.n_tokens),
            json_number(s.mean).c_str(), json_number(s.std).c_str(), samples.c_str(), r.tokens_per_s.size(),
            json_number(r.bandwidth_gb_s, r.has_bandwidth).c_str(),
            json_number(r.bandwidth_gb_s_max, r.has_bandwidth).c_str(),
            static_cast<unsigned long long>(b.bytes.total()), json_number(achieved, tg).c_str(),
            json_number(r.bandwidth_fraction, frac).c_str(),
            static_cast<unsigned long long>(b.m.n_weight_bytes), json_number(peak_rss_mb()).c_str());
    } else {
        char ts[40], gbs[16] = "", probe[16] = "", pct[16] = "";
        std::snprintf(ts, sizeof ts, "%.2f ± %.2f", s.mean, s.std);
        if (tg) std::snprintf(gbs, sizeof gbs, "%.2f", achieved);
        if (r.has_bandwidth) std::snprintf(probe, sizeof probe, "%.2f", r.bandwidth_gb_s);
        if (frac) std::snprintf(pct, sizeof pct, "%.1f%%", 100.0 * r.bandwidth_fraction);
        // "±" is two bytes wide in UTF-8 but one column: its field is one byte wider.
        std::printf("| %10s | %7d | %-7s | %20s | %8s | %10s | %7s |\n", r.isa.c_str(), r.n_threads,
                    r.test.c_str(), ts, gbs, probe, pct);
    }
    std::fflush(stdout);
}

int head_act_mode(const std::string &name) { return name == "int8" ? BITNET_HEAD_ACT_INT8 : BITNET_HEAD_ACT_EXACT; }

// All tests at one thread count with the active kernel set and one head activation mode.
void bench_threads(bench &b, int n_threads, const std::string &head_act, bandwidth_probe *probe) {
    const options &opt = b.opt;
    int64_t n_ctx = kTgPromptTokens;
    for (int64_t p : opt.n_prompt) n_ctx = std::max(n_ctx, p);
    for (int64_t n : opt.n_gen) n_ctx = std::max(n_ctx, kTgPromptTokens + n);
    for (int64_t n : opt.n_batch) n_ctx = std::max(n_ctx, kTgPromptTokens + kBatchSteps + n);
    std::string error;
    std::unique_ptr<context> ctx = context_new(b.m, n_ctx, n_threads, &error);
    if (!ctx) failure(error);
    if (!context_set_head_act(*ctx, head_act_mode(head_act))) failure("out of memory for the int8 head");
    const std::string isa = std::string(ctx->tk->name) + (head_act == "int8" ? "+int8head" : "");

    for (int64_t p : opt.n_prompt) {
        if (p == 0) continue;
        result r{isa, "pp" + std::to_string(p), n_threads, p, {}, false, 0, 0};
        b.run_pp(*ctx, p);  // warm-up: also faults in the mapped weights
        for (int64_t i = 0; i < opt.repetitions; ++i) r.tokens_per_s.push_back(p / b.run_pp(*ctx, p));
        print_result(opt, b, r);
    }
    std::vector<double> bw;
    double tg_per_s = 0;  // the first tg test's tokens/s: the unit of the b<B> step costs
    if (probe != nullptr) {
        probe->fill(*ctx->pool);
        probe->pass(*ctx->pool);  // warm-up
        for (int64_t i = 0; i < opt.bw_passes; ++i) bw.push_back(probe->pass(*ctx->pool));
    }
    for (int64_t n : opt.n_gen) {
        if (n == 0) continue;
        result r{isa, "tg" + std::to_string(n), n_threads, n, {}, false, 0, 0};
        b.run_tg(*ctx, std::min<int64_t>(n, 16));  // warm-up
        std::vector<double> fractions;
        for (int64_t i = 0; i < opt.repetitions; ++i)
            r.tokens_per_s.push_back(n / b.run_tg(*ctx, n, probe, &bw, &fractions));
        r.has_bandwidth = probe != nullptr;
        r.bandwidth_fraction = median(fractions);
        r.bandwidth_gb_s = median(bw);
        r.bandwidth_gb_s_max = bw.empty() ? 0 : *std::max_element(bw.begin(), bw.end());
        print_result(opt, b, r);
        if (tg_per_s == 0) tg_per_s = summarize(r.tokens_per_s).mean;
    }
    std::string step_costs;
    for (int64_t n : opt.n_batch) {
        if (n == 0) continue;
        result r{isa, "b" + std::to_string(n), n_threads, n, {}, false, 0, 0};
        b.run_batch_steps(*ctx, n, 4);  // warm-up
        for (int64_t i = 0; i < opt.repetitions; ++i)
            r.tokens_per_s.push_back(static_cast<double>(n * kBatchSteps) / b.run_batch_steps(*ctx, n, kBatchSteps));
        print_result(opt, b, r);
        if (tg_per_s > 0) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%s b%lld %.2fx", step_costs.empty() ? "" : ",", static_cast<long long>(n),
                          tg_per_s / (summarize(r.tokens_per_s).mean / static_cast<double>(n)));
            step_costs += buf;
        }
    }
    if (!step_costs.empty() && !opt.json)
        std::printf("| %10s | %7d | time of one batched step / one tg token:%s\n", isa.c_str(), n_threads,
                    step_costs.c_str());
    if (opt.n_gen.empty() ||
        std::all_of(opt.n_gen.begin(), opt.n_gen.end(), [](int64_t n) { return n == 0; })) {
        if (!bw.empty() && !opt.json)
            std::printf("| %10s | %7d | %-7s | %19s | %8s | %10.2f | %7s |\n", isa.c_str(), n_threads,
                        "probe", "", "", median(bw), "");
    }
}

}  // namespace

int main(int argc, char **argv) {
    const options opt = parse_args(argc, argv);
    for (const std::string &isa : opt.isas)
        if (ternary_kernels_by_name(isa.c_str()) == nullptr)
            usage_error("--isa: '" + isa + "' is unknown or not supported by this CPU (available: " +
                        ternary_kernels_available() + ")");

    std::string error;
    std::string preset = opt.preset == "auto" ? find_preset(cpu_signature()) : opt.preset == "none" ? "" : opt.preset;
    if (!preset.empty() && !tuning_load_preset(preset, &error)) {
        if (opt.preset != "auto") failure("--preset: " + error);
        std::fprintf(stderr, "warning: kernel preset skipped: %s\n", error.c_str());  // as the Python package does
        preset.clear();
    }
    std::unique_ptr<model> m = model_load(opt.model_path, &error);
    if (!m) failure(error);

    for (const std::string &head_act : opt.head_acts) {
        if (head_act != "exact" && head_act != "int8")
            usage_error("--head-act: '" + head_act + "' is not exact or int8");
        if (std::string why = head_act_problem(*m, head_act_mode(head_act)); !why.empty()) failure(why);
    }
    bench b{opt, *m, bytes_per_token(*m), {}, {}};
    int64_t n_tokens = kTgPromptTokens;
    for (int64_t p : opt.n_prompt) n_tokens = std::max(n_tokens, p);
    for (int64_t n : opt.n_gen) n_tokens = std::max(n_tokens, kTgPromptTokens + n);
    int64_t widest_batch = 1;
    for (int64_t n : opt.n_batch) {
        n_tokens = std::max(n_tokens, kTgPromptTokens + kBatchSteps + n);
        widest_batch = std::max(widest_batch, n);
    }
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(m->hp.n_vocab - 1));
    for (int64_t i = 0; i < n_tokens; ++i) b.tokens.push_back(pick(rng));
    b.logits.resize(static_cast<size_t>(m->hp.n_vocab * widest_batch));

    std::unique_ptr<bandwidth_probe> probe;
    if (opt.bandwidth) probe = std::make_unique<bandwidth_probe>(opt.bw_mib);

    const char *isa_error = nullptr;
    const ternary_kernel_set *active = ternary_kernels_active(&isa_error);
    if (active == nullptr) failure(isa_error ? isa_error : "no ternary kernels for this CPU");
    if (!opt.json) print_table_header(opt, *m, b.bytes, active->name, preset);

    const std::vector<std::string> isas = opt.isas.empty() ? std::vector<std::string>{""} : opt.isas;
    for (const std::string &isa : isas) {
        if (!isa.empty() && !ternary_kernels_force(isa.c_str()))
            failure("cannot switch to kernel set " + isa);
        for (int64_t t : opt.n_threads)
            for (const std::string &head_act : opt.head_acts) bench_threads(b, static_cast<int>(t), head_act, probe.get());
    }
    if (!opt.json) std::printf("\npeak RSS %.0f MB\n", peak_rss_mb());
    return 0;
}
