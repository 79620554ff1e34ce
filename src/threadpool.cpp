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
    if (n <= grain || n_threads_ == 1) {
        fn(0, n);
        return;
    }
    // Guided self-scheduling: each chunk is a share of what is left (1 / (2 * threads) of it,
    // whole grains, at least one), taken from a shared counter. Large chunks first keep the
    // number of hand-offs (and of prefetch ramp-ups in the GEMVs) small; small chunks at the
    // end let the threads finish together, where equal chunks of n / (4 * threads) left one
    // thread idle for half a chunk at the end of every matrix (up to ~10 us per layer in
    // decode). A thread that loses its core on a shared machine leaves the rest to the others.
    const int64_t share = 2 * static_cast<int64_t>(n_threads_);
    std::atomic<int64_t> next{0};
    run([&](int, int) {
        int64_t begin = next.load(std::memory_order_relaxed);
        while (begin < n) {
            const int64_t left = n - begin;
            const int64_t size = std::min(left, std::max<int64_t>(1, left / share / grain) * grain);
            if (next.compare_exchange_weak(begin, begin + size, std::memory_order_relaxed)) {
                fn(begin, begin + size);
                begin = next.load(std::memory_order_relaxed);
            }
        }
    });
}

}  // namespace bitnet
