// A persistent pool of worker threads. run(fn) calls fn(ith, nth) on every thread (the caller is
// ith = 0) and returns when all are done. Workers spin briefly, then sleep on a futex, so that the
// many short parallel sections of a decode step do not pay a wake-up each.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ll {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  template <class F>
  void run(F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run_raw([](void* ctx, int ith, int nth) { (*static_cast<Fn*>(ctx))(ith, nth); },
            const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using RawFn = void (*)(void*, int, int);
  void run_raw(RawFn fn, void* ctx);
  void worker_loop(int ith);

  int n_threads_;
  std::vector<std::thread> threads_;
  RawFn job_fn_ = nullptr;
  void* job_ctx_ = nullptr;
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  // Sleeping (after the spin phase) uses a mutex and condition variable: std::atomic::wait in
  // libstdc++ 12 lost wake-ups here.
  std::mutex sleep_mutex_;
  std::condition_variable sleep_cv_;
  std::atomic<int> n_sleeping_{0};
};

// Split [0, n) into nth nearly equal contiguous parts; returns part ith as [first, last).
inline void split_range(int64_t n, int ith, int nth, int64_t& first, int64_t& last) {
  const int64_t per = n / nth, rem = n % nth;
  first = ith * per + (ith < rem ? ith : rem);
  last = first + per + (ith < rem ? 1 : 0);
}

}  // namespace ll
