// Read-bandwidth probe shared by the benchmarks: sums a buffer with wide loads on every thread of a
// pool; best of several passes. The engine benchmark runs it over the model's own mapped weights, so
// the bound it gives is for exactly the bytes a decode step reads.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "core/cpu_features.h"
#include "core/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ll::bench {

#if defined(__x86_64__)
__attribute__((target("avx2"))) inline uint64_t sum_bytes_avx2(const uint8_t* p, size_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  alignas(32) uint64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t s = v[0] + v[1] + v[2] + v[3];
  for (; i < bytes; ++i) s += p[i];
  return s;
}
#endif

inline uint64_t sum_bytes_scalar(const uint8_t* p, size_t bytes) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    uint64_t w[4];
    __builtin_memcpy(w, p + i, 32);
    s0 += w[0], s1 += w[1], s2 += w[2], s3 += w[3];
  }
  for (; i < bytes; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

// GB/s reading [p, p + bytes) split over the pool's threads; best of `reps` passes.
inline double read_bandwidth_gbs(ThreadPool& pool, const uint8_t* p, size_t bytes, int reps = 3) {
#if defined(__x86_64__)
  const bool avx2 = detect_cpu_features().has_avx2();
#endif
  std::vector<uint64_t> sink(static_cast<size_t>(pool.n_threads()) * 8);
  double best = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.run([&](int ith, int nth) {
      int64_t first, last;
      const int64_t n_pages = static_cast<int64_t>(bytes / 4096);
      split_range(n_pages, ith, nth, first, last);
      const size_t len = static_cast<size_t>(last - first) * 4096;
      const uint8_t* q = p + first * 4096;
#if defined(__x86_64__)
      sink[static_cast<size_t>(ith) * 8] += avx2 ? sum_bytes_avx2(q, len) : sum_bytes_scalar(q, len);
#else
      sink[static_cast<size_t>(ith) * 8] += sum_bytes_scalar(q, len);
#endif
    });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  volatile uint64_t keep = sink[0];
  (void)keep;
  return static_cast<double>(bytes / 4096 * 4096) / best / 1e9;
}

}  // namespace ll::bench
