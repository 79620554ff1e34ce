#include "threadpool.h"

#include <algorithm>

namespace bitnet {

namespace {
// About 50-100 microseconds of polling before a worker goes to sleep.
constexpr int kSpinIterations = 20000;
// Every this many polls a waiting thread yields its core. On a machine with more runnable
// threads than cores (a shared 2-core box, or several contexts' pools) the thread being waited
// for may be the one without a core: spinning through a whole time slice would only delay it.
constexpr int kPollsPerYield = 64;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// One poll of a wait loop: a pause, and now and then the core handed to another thread.
inline void wait_a_little(int poll) {
    if (poll % kPollsPerYield == kPollsPerYield - 1) std::this_thread::yield();
    else cpu_relax();
}
}  // namespace

thread_pool::thread_pool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

thread_pool::~thread_pool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
    }
    wake_.notify_all();
    for (auto &t : workers_) t.join();
}

void thread_pool::worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen = generation_.load(std::memory_order_acquire);
        for (int spin = 0; gen == seen && spin < kSpinIterations && !stop_.load(); ++spin) {
            wait_a_little(spin);
            gen = generation_.load(std::memory_order_acquire);
        }
        if (gen == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
            gen = generation_.load(std::memory_order_acquire);
        }
        if (stop_.load()) return;
        seen = gen;
        (*job_)(index, n_threads_);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void thread_pool::run(const std::function<void(int, int)> &fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    job_ = &fn;
    pending_.store(n_threads_ - 1, std::memory_order_release);
    {
        // Taking the lock orders the generation bump against a worker about to sleep.
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    wake_.notify_all();
    fn(0, n_threads_);
    for (int poll = 0; pending_.load(std::memory_order_acquire) != 0; ++poll) wait_a_little(poll);
    job_ = nullptr;
}

void thread_pool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    const int64_t n_chunks = (n + grain - 1) / grain;
    if (n_chunks == 1 || n_threads_ == 1) {
        for (int64_t c = 0; c < n_chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
        return;
    }
    // Chunks are taken from a shared counter, not dealt out in advance: on a shared machine a
    // thread that loses its core for a while leaves its remaining chunks to the others instead
    // of making them all wait at the end of the loop.
    std::atomic<int64_t> next{0};
    run([&](int, int) {
        for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
             c = next.fetch_add(1, std::memory_order_relaxed))
            fn(c * grain, std::min(n, (c + 1) * grain));
    });
}

}  // namespace bitnet
