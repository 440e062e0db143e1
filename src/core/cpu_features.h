// What the CPU we run on can do, detected once at run time (CPUID / getauxval).
#pragma once

#include <string>

namespace ll {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  bool avxvnni = false;
  bool neon = false;
  bool dotprod = false;

  // The levels our kernels dispatch on.
  bool has_avx2() const { return avx2 && fma && f16c; }
  bool has_avx512() const { return avx512f && avx512bw && avx512vl && avx512dq && has_avx2(); }
  bool has_avx512vnni() const { return has_avx512() && avx512vnni; }
  std::string describe() const;  // e.g. "avx2 fma f16c avx512f ..."
};

// Detected features, possibly lowered by the environment variable LL_CPU_MAX=scalar|avx2|avx512
// (used by tests and benchmarks to exercise every path on one machine).
const CpuFeatures& cpu_features();

// Detected features, ignoring LL_CPU_MAX.
CpuFeatures detect_cpu_features();

}  // namespace ll
