// Matmul throughput on TinyLlama-1.1B shapes (22 layers of wq 2048x2048, wk/wv 256x2048,
// wo 2048x2048, w1/w3 5632x2048, w2 2048x5632, plus the 32000x2048 output head), random weights.
//
// usage: bench_matmul [DTYPE] [--tokens 1,64] [--threads 1,2] [--reps N] [--isa LEVEL] [--no-probe]
//                     [--layers N] [--no-head]
//   DTYPE  q8_0 (default), q4_0, q4_k, q6_k, f16, bf16, f32
//   LEVEL  scalar | avx2 | avx512 | avx512vnni | neon | neon_dotprod (default: the best this CPU has,
//          or LL_CPU_MAX)
//   --layers N, --no-head: fewer layers (default 22) and no output head, for a quick run (e.g. under
//          an emulator); the figures are then per pass over those matrices only.
// For each (n_tokens, threads) it runs every layer's matmuls once per rep and reports the best rep:
// GB/s of weights streamed and the tok/s that all layers' matmuls alone would allow. A read-bandwidth
// probe (AVX2 sum over the weight buffer on 1 and 2 threads) runs in the same process, for scale.
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "kernels/matmul_impl.h"
#include "quant/blocks.h"

namespace {

using namespace ll;
using Clock = std::chrono::steady_clock;

struct Matrix {
  const char* name;
  int64_t n_rows, n_cols;
  size_t offset;  // into the weight buffer
};

constexpr int k_n_layer = 22;
constexpr int64_t k_embd = 2048, k_ff = 5632, k_kv = 256, k_vocab = 32000;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

uint8_t* alloc_huge(size_t bytes) {
  const size_t align = size_t{2} << 20;
  const size_t len = (bytes + align - 1) / align * align;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  madvise(p, len, MADV_HUGEPAGE);
  return static_cast<uint8_t*>(p);  // page-aligned, so 64-byte aligned
}

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
inline uint64_t next_u64() {  // xorshift64*
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 2685821657736338717ull;
}

// Random bytes with every float/scale field forced into a sane range (no NaN, Inf or subnormals).
void fill_weights(DType t, uint8_t* p, size_t bytes) {
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    const uint64_t v = next_u64();
    std::memcpy(p + i, &v, 8);
  }
  auto half = [](uint8_t* q) {
    const uint16_t h = static_cast<uint16_t>(0x2000 | (next_u64() & 0x03FF));  // ~2^-7
    std::memcpy(q, &h, 2);
  };
  switch (t) {
    case DType::F16:
      for (size_t i = 0; i + 2 <= bytes; i += 2) {
        uint16_t h;
        std::memcpy(&h, p + i, 2);
        h = static_cast<uint16_t>((h & 0x83FF) | 0x2C00);
        std::memcpy(p + i, &h, 2);
      }
      break;
    case DType::BF16:
      for (size_t i = 0; i + 2 <= bytes; i += 2) {
        uint16_t h;
        std::memcpy(&h, p + i, 2);
        h = static_cast<uint16_t>((h & 0x807F) | 0x3D00);
        std::memcpy(p + i, &h, 2);
      }
      break;
    case DType::F32:
      for (size_t i = 0; i + 4 <= bytes; i += 4) {
        uint32_t u;
        std::memcpy(&u, p + i, 4);
        u = (u & 0x807FFFFFu) | 0x3D000000u;
        std::memcpy(p + i, &u, 4);
      }
      break;
    case DType::Q4_0:
      for (size_t i = 0; i < bytes; i += sizeof(quant::BlockQ4_0)) half(p + i);
      break;
    case DType::Q8_0:
      for (size_t i = 0; i < bytes; i += sizeof(quant::BlockQ8_0)) half(p + i);
      break;
    case DType::Q4_K:
      for (size_t i = 0; i < bytes; i += sizeof(quant::BlockQ4_K)) {
        half(p + i);
        half(p + i + 2);
      }
      break;
    case DType::Q6_K:
      for (size_t i = 0; i < bytes; i += sizeof(quant::BlockQ6_K))
        half(p + i + offsetof(quant::BlockQ6_K, d));
      break;
    case DType::Q8_K:
      break;
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) double sum_avx2(const uint8_t* p, size_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) int64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), s);
  return static_cast<double>(v[0] + v[1] + v[2] + v[3]);
}
#endif

double process_cpu_seconds();

// Read bandwidth (GB/s) summing `bytes` of buf on the pool's threads; best of reps. *cpu_share: the
// share of the threads' wall time they were on a CPU during the best rep.
double probe_bandwidth(ThreadPool& pool, const uint8_t* buf, size_t bytes, int reps, double* cpu_share) {
  *cpu_share = 0.0;
#if defined(__x86_64__)
  if (!detect_cpu_features().has_avx2()) return 0.0;
  double best = 1e30;
  std::vector<double> sink(static_cast<size_t>(pool.n_threads()));
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
    const double c0 = process_cpu_seconds();
    pool.run([&](int ith, int nth) {
      int64_t first, last;
      const int64_t n_lines = static_cast<int64_t>(bytes / 4096);
      split_range(n_lines, ith, nth, first, last);
      sink[ith] += sum_avx2(buf + first * 4096, static_cast<size_t>(last - first) * 4096);
    });
    const double wall = seconds_since(t0);
    if (wall < best) {
      best = wall;
      *cpu_share = (process_cpu_seconds() - c0) / (wall * pool.n_threads());
    }
  }
  volatile double keep = sink[0];
  (void)keep;
  return static_cast<double>(bytes) / best / 1e9;
#else
  (void)pool, (void)buf, (void)bytes, (void)reps;
  return 0.0;
#endif
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  DType wtype = DType::Q8_0;
  std::vector<int> tokens_list = {1, 64}, threads_list = {1, 2};
  int reps = 5;
  bool probe = true;
  int n_layers = k_n_layer;
  bool head = true;
  kernels::detail::Isa isa = kernels::detail::best_isa();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokens") {
      tokens_list = parse_list(next());
    } else if (a == "--threads") {
      threads_list = parse_list(next());
    } else if (a == "--reps") {
      reps = std::max(1, std::atoi(next()));
    } else if (a == "--no-probe") {
      probe = false;
    } else if (a == "--layers") {
      n_layers = std::max(0, std::atoi(next()));
    } else if (a == "--no-head") {
      head = false;
    } else if (a == "--isa") {
      const std::string n = next();
      bool found = false;
      for (int k = 0; k < kernels::detail::k_n_isa; ++k) {
        const auto cand = static_cast<kernels::detail::Isa>(k);
        if (n == kernels::detail::isa_name(cand) && kernels::detail::isa_supported(cand)) {
          isa = cand;
          found = true;
        }
      }
      if (!found) {
        std::fprintf(stderr, "unknown or unsupported level %s\n", n.c_str());
        return 2;
      }
    } else if (auto t = dtype_from_name(a); t && *t != DType::Q8_K) {
      wtype = *t;
    } else {
      std::fprintf(stderr,
                   "usage: %s [DTYPE] [--tokens 1,64] [--threads 1,2] [--reps N] [--isa LEVEL] [--no-probe] "
                   "[--layers N] [--no-head]\n",
                   argv[0]);
      return 2;
    }
  }

  // Layout: every layer's matrices, then the output head; each matrix 64-byte aligned.
  std::vector<Matrix> mats;
  size_t total = 0;
  auto add = [&](const char* name, int64_t rows, int64_t cols) {
    mats.push_back({name, rows, cols, total});
    total +=
        (*dtype_row_bytes(wtype, static_cast<uint64_t>(cols)) * static_cast<size_t>(rows) + 63) / 64 * 64;
  };
  for (int l = 0; l < n_layers; ++l) {
    add("wq", k_embd, k_embd);
    add("wk", k_kv, k_embd);
    add("wv", k_kv, k_embd);
    add("wo", k_embd, k_embd);
    add("w1", k_ff, k_embd);
    add("w3", k_ff, k_embd);
    add("w2", k_embd, k_ff);
  }
  if (head) add("output", k_vocab, k_embd);
  if (mats.empty()) {
    std::fprintf(stderr, "nothing to run: --layers 0 and --no-head\n");
    return 2;
  }
  uint8_t* weights = alloc_huge(total);
  const auto tf = Clock::now();
  fill_weights(wtype, weights, total);
  std::printf("bench_matmul: %s, kernels %s, %d layer(s)%s, weights %.3f GB (filled in %.1f s), cpu: %s\n",
              std::string(dtype_name(wtype)).c_str(), kernels::detail::isa_name(isa), n_layers,
              head ? " + output head" : "", total / 1e9, seconds_since(tf),
              cpu_features().describe().c_str());

  const int max_tokens = *std::max_element(tokens_list.begin(), tokens_list.end());
  std::vector<float> x(static_cast<size_t>(max_tokens) * k_ff), y(static_cast<size_t>(max_tokens) * k_vocab);
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(next_u64() % 2001) - 1000) * 1e-3f;
  kernels::MatmulScratch scratch;

  for (int n_threads : threads_list) {
    ThreadPool pool(n_threads);
#if !defined(__x86_64__)
    probe = false;  // the probe is an AVX2 loop
#endif
    if (probe) {
      double share = 0;
      const double gbs = probe_bandwidth(pool, weights, total, 3, &share);
      std::printf("  read-bandwidth probe, %d thread(s): %.1f GB/s (AVX2 sum over %.2f GB), cpu %3.0f%%\n",
                  n_threads, gbs, total / 1e9, 100.0 * share);
    }
    for (int n_tokens : tokens_list) {
      double best = 1e30, best_cpu = 0;
      const int n_reps = n_tokens > 8 ? std::max(2, reps / 2) : reps;
      for (int rep = 0; rep < n_reps; ++rep) {
        const auto t0 = Clock::now();
        const double c0 = process_cpu_seconds();
        for (size_t m = 0; m < mats.size(); ++m) {
          kernels::detail::matmul_isa(isa, pool, wtype, weights + mats[m].offset, mats[m].n_rows,
                                      mats[m].n_cols, x.data(), n_tokens, y.data(), scratch);
        }
        const double wall = seconds_since(t0);
        if (wall < best) {
          best = wall;
          best_cpu = process_cpu_seconds() - c0;
        }
      }
      // cpu: the share of the threads' wall time that they were on a CPU (others share the machine;
      // pool threads spin while waiting, so this is an upper bound).
      std::printf(
          "  n_tokens %2d, threads %d: %7.1f ms per pass, %6.1f GB/s of weights, %7.1f tok/s (all layers' "
          "matmuls), cpu %3.0f%%\n",
          n_tokens, n_threads, best * 1e3, total / best / 1e9, n_tokens / best,
          100.0 * best_cpu / (best * n_threads));
      std::fflush(stdout);
    }
  }
  return 0;
}
