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
  bool has_neon() const { return neon; }                // AArch64 Advanced SIMD
  bool has_dotprod() const { return neon && dotprod; }  // + ARMv8.2 SDOT/UDOT (vdotq_s32)
  std::string describe() const;                         // e.g. "avx2 fma f16c avx512f ..."
};

// Detected features, possibly lowered by the environment variable LL_CPU_MAX (used by tests and
// benchmarks to exercise every path on one machine): scalar (no SIMD at all), avx2 (no AVX-512),
// avx512 (no cap on x86), neon (no dotprod). A cap names a level; values for another architecture,
// and unknown values, change nothing.
const CpuFeatures& cpu_features();

// f lowered by the LL_CPU_MAX value cap (nullptr: unchanged). What cpu_features() applies.
CpuFeatures cap_cpu_features(CpuFeatures f, const char* cap);

// Detected features, ignoring LL_CPU_MAX.
CpuFeatures detect_cpu_features();

}  // namespace ll
