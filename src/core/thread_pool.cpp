#include "core/thread_pool.h"

#include <cassert>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ll {

static inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  threads_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  sleep_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::run_raw(RawFn fn, void* ctx) {
  if (n_threads_ == 1) {
    fn(ctx, 0, 1);
    return;
  }
  job_fn_ = fn;
  job_ctx_ = ctx;
  pending_.store(n_threads_ - 1, std::memory_order_release);
  // Publish the job, then look for sleepers (the worker does the reverse: counts itself as a
  // sleeper, then checks the generation), so that one of the two always sees the other.
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (n_sleeping_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(sleep_mutex_); }
    sleep_cv_.notify_all();
  }
  fn(ctx, 0, n_threads_);
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < (1 << 14)) {
      cpu_relax();
    } else {
      std::this_thread::yield();  // more threads than free cores: let the workers run
    }
  }
}

void ThreadPool::worker_loop(int ith) {
  uint32_t seen = 0;  // the generation before any job; a job may be posted before we get here
  for (;;) {
    // Spin for a short while (a decode step issues many short jobs), then sleep.
    int spins = 0;
    uint32_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < (1 << 16)) {
        cpu_relax();
      } else {
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        n_sleeping_.fetch_add(1, std::memory_order_seq_cst);
        sleep_cv_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
        n_sleeping_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    job_fn_(job_ctx_, ith, n_threads_);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace ll
