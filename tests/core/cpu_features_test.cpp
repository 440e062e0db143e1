// CPU feature detection and the LL_CPU_MAX caps (the function cpu_features() applies to the environment).
#include "core/cpu_features.h"

#include <gtest/gtest.h>

namespace ll {
namespace {

CpuFeatures everything() {
  CpuFeatures f;
  f.avx2 = f.fma = f.f16c = true;
  f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512vnni = f.avx512bf16 = f.avxvnni = true;
  f.neon = f.dotprod = true;
  return f;
}

TEST(CpuFeatures, DetectionMatchesTheBuildArchitecture) {
  const CpuFeatures f = detect_cpu_features();
#if defined(__aarch64__)
  EXPECT_TRUE(f.has_neon()) << "every AArch64 Linux CPU has Advanced SIMD";
  EXPECT_FALSE(f.avx2);
#elif defined(__x86_64__)
  EXPECT_FALSE(f.neon);
  EXPECT_FALSE(f.dotprod);
#endif
  EXPECT_FALSE(f.describe().empty());
}

TEST(CpuFeatures, CapScalarClearsEverything) {
  const CpuFeatures f = cap_cpu_features(everything(), "scalar");
  EXPECT_FALSE(f.has_avx2());
  EXPECT_FALSE(f.has_neon());
  EXPECT_FALSE(f.has_dotprod());
  EXPECT_EQ(f.describe(), "scalar");
}

TEST(CpuFeatures, CapAvx2DropsAvx512Only) {
  const CpuFeatures f = cap_cpu_features(everything(), "avx2");
  EXPECT_TRUE(f.has_avx2());
  EXPECT_FALSE(f.has_avx512());
  EXPECT_FALSE(f.has_avx512vnni());
  EXPECT_TRUE(f.has_dotprod());  // another architecture's features are not this cap's business
}

TEST(CpuFeatures, CapNeonDropsDotprodOnly) {
  const CpuFeatures f = cap_cpu_features(everything(), "neon");
  EXPECT_TRUE(f.has_neon());
  EXPECT_FALSE(f.has_dotprod());
  EXPECT_TRUE(f.has_avx512vnni());
}

TEST(CpuFeatures, NoOrUnknownCapChangesNothing) {
  for (const char* cap : {static_cast<const char*>(nullptr), "", "avx512", "dotprod", "bogus"}) {
    const CpuFeatures f = cap_cpu_features(everything(), cap);
    EXPECT_EQ(f.describe(), everything().describe()) << (cap ? cap : "(null)");
  }
}

TEST(CpuFeatures, DotprodNeedsNeon) {
  CpuFeatures f;
  f.dotprod = true;
  EXPECT_FALSE(f.has_dotprod());
}

}  // namespace
}  // namespace ll
