// A fixed pool of worker threads for data-parallel loops. The calling thread takes part as
// worker 0, so a pool of n threads starts n-1 workers. Workers spin briefly before sleeping:
// one decode step dispatches a few hundred small jobs and a condition-variable wake-up per job
// would cost more than the job.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bitnet {

class thread_pool {
  public:
    explicit thread_pool(int n_threads);
    ~thread_pool();
    thread_pool(const thread_pool &) = delete;
    thread_pool &operator=(const thread_pool &) = delete;

    int size() const { return n_threads_; }

    // Calls fn(thread_index, n_threads) once on every thread (thread 0 is the caller) and
    // returns when all have finished. Not reentrant.
    void run(const std::function<void(int, int)> &fn);

    // Splits [0, n) into chunks of whole `grain`s (the last may be shorter), large first and
    // shrinking towards the end, taken in order by whichever thread is free next; fn(begin, end)
    // per chunk. With one thread, or n <= grain, a single call fn(0, n).
    void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn);

  private:
    void worker_loop(int index);

    int n_threads_;
    std::vector<std::thread> workers_;
    const std::function<void(int, int)> *job_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;
};

}  // namespace bitnet
