#include "core/cpu_features.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace ll {

#if defined(__x86_64__)
static unsigned long long read_xcr0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned int a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  const bool avx = (c >> 28) & 1;
  unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;
  if (!(avx && os_avx)) {
    f.fma = f.f16c = false;
    return f;
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1;
    if (os_avx512) {
      f.avx512f = (b >> 16) & 1;
      f.avx512dq = (b >> 17) & 1;
      f.avx512bw = (b >> 30) & 1;
      f.avx512vl = (b >> 31) & 1;
      f.avx512vnni = (c >> 11) & 1;
    }
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.avxvnni = (a >> 4) & 1;
    if (os_avx512) f.avx512bf16 = (a >> 5) & 1;
  }
#elif defined(__aarch64__)
#if defined(__linux__)  // Android included
  // The kernel's view (HWCAP), not the compiler's: one binary serves cores with and without dotprod.
  // Bit numbers as in the kernel's uapi asm/hwcap.h, spelled out for old Android sysroots.
  const unsigned long hw = getauxval(AT_HWCAP);
  f.neon = (hw & (1UL << 1)) != 0;      // HWCAP_ASIMD
  f.dotprod = (hw & (1UL << 20)) != 0;  // HWCAP_ASIMDDP
#else
  f.neon = true;  // Advanced SIMD is mandatory in AArch64; no portable way to ask about dotprod
#endif
#endif
  return f;
}

std::string CpuFeatures::describe() const {
  std::string s;
  auto add = [&](bool on, const char* n) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += n;
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512vnni, "avx512vnni");
  add(avx512bf16, "avx512bf16");
  add(avxvnni, "avxvnni");
  add(neon, "neon");
  add(dotprod, "dotprod");
  return s.empty() ? "scalar" : s;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    return cap_cpu_features(detect_cpu_features(), std::getenv("LL_CPU_MAX"));
  }();
  return f;
}

CpuFeatures cap_cpu_features(CpuFeatures f, const char* cap) {
  if (cap == nullptr) return f;
  if (std::strcmp(cap, "scalar") == 0) {
    f = CpuFeatures{};
  } else if (std::strcmp(cap, "avx2") == 0) {
    f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512vnni = f.avx512bf16 = false;
  } else if (std::strcmp(cap, "neon") == 0) {
    f.dotprod = false;
  }
  return f;
}

}  // namespace ll
