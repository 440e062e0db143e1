// Every fast path of the row ops (AVX2, AVX-512, NEON: each a parameter of the OpsFast tests, skipped with a
// message where this CPU lacks it) against its scalar twin (named tolerances), plus the scalar references
// against straightforward double-precision formulas.
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/fp16.h"

namespace ll::kernels {
namespace {

// Tolerances of a fast path against the scalar reference (relative ones are relative to |reference|,
// with a small absolute floor for values near zero).
constexpr float kRmsNormRelTol = 1e-6f;
constexpr float kRopeAbsTol = 1e-6f;     // inputs in [-1, 1]; FMA contraction may change the last bit
constexpr float kSoftmaxRelTol = 1e-6f;  // vector exp is within ~2 ulp of expf
constexpr float kSoftmaxAbsTol = 1e-12f;
constexpr float kSiluRelTol = 1e-6f;
constexpr float kSiluAbsTol = 1e-30f;
constexpr float kAttentionAbsTol = 1e-5f;        // outputs are convex combinations of |v| <= 1
constexpr float kAttentionWeightAbsTol = 1e-6f;  // attention weights left in scratch
// The scalar references against double-precision formulas.
constexpr double kRopeGgmlAnglesAbsTol = 1e-6;   // same float angles as ggml, rotation in double
constexpr double kRopeExactAbsTolPerPos = 2e-7;  // exact angles: float theta error grows with pos and n_rot
constexpr double kRopeExactAbsTolBase = 1e-6;
constexpr double kSoftmaxSumTol = 1e-5;
constexpr double kAttentionVsDoubleAbsTol = 2e-5;

struct FastLevel {
  const char* name;
  const OpsTable* (*table)();  // nullptr where not built or not supported
};
const FastLevel kFastLevels[] = {{"avx2", ops_avx2}, {"avx512", ops_avx512}, {"neon", ops_neon}};

std::vector<const OpsTable*> fast_tables() {
  std::vector<const OpsTable*> t;
  for (const FastLevel& l : kFastLevels) {
    if (l.table() != nullptr) t.push_back(l.table());
  }
  return t;
}

// One fast table per test instance; a level this CPU (or this build's architecture) lacks is skipped,
// visibly.
class OpsFast : public ::testing::TestWithParam<FastLevel> {
 protected:
  void SetUp() override {
    table_ = GetParam().table();
    if (table_ == nullptr) {
      GTEST_SKIP() << GetParam().name
                   << " ops: not built for this architecture or not supported by this CPU ("
                   << detect_cpu_features().describe() << ")";
    }
  }
  const OpsTable* table_ = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Isa, OpsFast, ::testing::ValuesIn(kFastLevels),
                         [](const ::testing::TestParamInfo<FastLevel>& info) {
                           return std::string(info.param.name);
                         });

// The fast-path tests run their body once, on this instance's table.
#define LL_FOR_EACH_FAST_TABLE(t) for (const OpsTable* t : {table_})

std::vector<float> random_floats(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<uint16_t> random_halves(int64_t n, float lo, float hi, uint32_t seed) {
  const auto f = random_floats(n, lo, hi, seed);
  std::vector<uint16_t> h(f.size());
  for (size_t i = 0; i < f.size(); ++i) h[i] = fp32_to_fp16(f[i]);
  return h;
}

void expect_rel_near(const std::vector<float>& got, const std::vector<float>& want, float rel, float abs,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const float tol = rel * std::fabs(want[i]) + abs;
    ASSERT_NEAR(got[i], want[i], tol) << what << " at " << i;
  }
}

const std::vector<int64_t> kOddSizes = {1,  2,  3,  7,  8,   9,   15,  16,  17,  31,
                                        33, 63, 64, 65, 100, 127, 129, 896, 4097};

TEST(OpsDispatch, ActiveTableMatchesCpuAndCap) {
  const OpsTable& active = ops_active();
  const CpuFeatures& f = cpu_features();
  std::string want = "scalar";
  if (f.has_avx512() && ops_avx512() != nullptr) {
    want = "avx512";
  } else if (f.has_avx2() && ops_avx2() != nullptr) {
    want = "avx2";
  } else if (f.has_neon() && ops_neon() != nullptr) {
    want = "neon";
  }
  EXPECT_EQ(std::string(active.name), want);
  EXPECT_EQ(std::string(ops_scalar().name), "scalar");
  if (ops_avx2() != nullptr) {
    EXPECT_EQ(std::string(ops_avx2()->name), "avx2");
  }
  if (ops_avx512() != nullptr) {
    EXPECT_EQ(std::string(ops_avx512()->name), "avx512");
  }
  if (ops_neon() != nullptr) {
    EXPECT_EQ(std::string(ops_neon()->name), "neon");
  }
#if defined(__aarch64__)
  EXPECT_EQ(ops_avx2(), nullptr);
  EXPECT_EQ(ops_avx512(), nullptr);
#else
  EXPECT_EQ(ops_neon(), nullptr);
#endif
}

TEST_P(OpsFast, RmsNormMatchesScalar) {
  LL_FOR_EACH_FAST_TABLE(t) {
    for (int64_t n : kOddSizes) {
      const auto x = random_floats(n, -3.0f, 3.0f, static_cast<uint32_t>(n));
      const auto w = random_floats(n, 0.5f, 1.5f, static_cast<uint32_t>(n + 1000));
      std::vector<float> want(x.size()), got(x.size());
      ref::rms_norm(x.data(), w.data(), want.data(), n, 1e-6f);
      t->rms_norm(x.data(), w.data(), got.data(), n, 1e-6f);
      expect_rel_near(got, want, kRmsNormRelTol, 1e-30f, std::string(t->name) + " n=" + std::to_string(n));
      // In place (out aliases x) gives the same bits.
      std::vector<float> inplace = x;
      t->rms_norm(inplace.data(), w.data(), inplace.data(), n, 1e-6f);
      EXPECT_EQ(inplace, got) << t->name << " n=" << n;
    }
  }
}

TEST(OpsRmsNorm, ScalarMatchesDoubleFormula) {
  for (int64_t n : kOddSizes) {
    const auto x = random_floats(n, -3.0f, 3.0f, static_cast<uint32_t>(n));
    const auto w = random_floats(n, 0.5f, 1.5f, static_cast<uint32_t>(n + 7));
    std::vector<float> got(x.size());
    ref::rms_norm(x.data(), w.data(), got.data(), n, 1e-5f);
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(n) + 1e-5);
    for (int64_t i = 0; i < n; ++i) {
      const double want = x[i] * scale * w[i];
      ASSERT_NEAR(got[i], want, 1e-6 * std::fabs(want) + 1e-30) << "n=" << n << " i=" << i;
    }
  }
}

// x is [n_heads][head_dim]; rotate with angles theta_i (double), pairs per mode.
void rope_double(std::vector<double>& x, int64_t n_heads, int64_t head_dim, int64_t n_rot,
                 const std::vector<double>& theta, bool neox) {
  const int64_t half = n_rot / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      const int64_t a = h * head_dim + (neox ? i : 2 * i);
      const int64_t b = h * head_dim + (neox ? i + half : 2 * i + 1);
      const double x0 = x[a], x1 = x[b];
      x[a] = x0 * std::cos(theta[i]) - x1 * std::sin(theta[i]);
      x[b] = x0 * std::sin(theta[i]) + x1 * std::cos(theta[i]);
    }
  }
}

struct RopeCase {
  int64_t n_heads, head_dim, n_rot;
};
// The last two need more table space than rope keeps on the stack.
const std::vector<RopeCase> kRopeCases = {
    {1, 8, 8},   {3, 64, 64},   {2, 128, 128}, {2, 128, 64}, {4, 80, 32},     {2, 64, 34},
    {1, 96, 96}, {2, 256, 256}, {1, 16, 2},    {2, 10, 6},   {1, 2048, 2048}, {2, 1100, 1030},
};
const std::vector<int64_t> kRopePositions = {0, 1, 2, 7, 100, 1000, 4095};

TEST_P(OpsFast, RopeMatchesScalar) {
  LL_FOR_EACH_FAST_TABLE(t) {
    for (const auto& c : kRopeCases) {
      for (int64_t pos : kRopePositions) {
        for (bool neox : {false, true}) {
          const auto x =
              random_floats(c.n_heads * c.head_dim, -1.0f, 1.0f, static_cast<uint32_t>(pos + c.n_rot));
          auto want = x, got = x;
          ref::rope(want.data(), c.n_heads, c.head_dim, c.n_rot, pos, 10000.0f, neox);
          t->rope(got.data(), c.n_heads, c.head_dim, c.n_rot, pos, 10000.0f, neox);
          for (size_t i = 0; i < x.size(); ++i) {
            ASSERT_NEAR(got[i], want[i], kRopeAbsTol)
                << t->name << " head_dim=" << c.head_dim << " n_rot=" << c.n_rot << " pos=" << pos
                << " neox=" << neox << " i=" << i;
            // Dims past n_rot are untouched, bit for bit.
            if (static_cast<int64_t>(i) % c.head_dim >= c.n_rot) {
              ASSERT_EQ(got[i], x[i]);
            }
          }
        }
      }
    }
  }
}

TEST(OpsRope, ScalarMatchesDoubleFormulas) {
  for (const auto& c : kRopeCases) {
    for (int64_t pos : kRopePositions) {
      for (bool neox : {false, true}) {
        for (float base : {10000.0f, 1000000.0f}) {
          const auto x =
              random_floats(c.n_heads * c.head_dim, -1.0f, 1.0f, static_cast<uint32_t>(pos * 3 + c.n_rot));
          auto got = x;
          ref::rope(got.data(), c.n_heads, c.head_dim, c.n_rot, pos, base, neox);
          const int64_t half = c.n_rot / 2;
          // ggml's angles (theta *= powf(base, -2/n_rot) in float), rotated in double: a tight check.
          std::vector<double> theta_ggml(static_cast<size_t>(half)), theta_exact(static_cast<size_t>(half));
          float th = static_cast<float>(pos);
          const float th_scale = powf(base, -2.0f / static_cast<float>(c.n_rot));
          for (int64_t i = 0; i < half; ++i) {
            theta_ggml[i] = th;
            th *= th_scale;
            theta_exact[i] = static_cast<double>(pos) *
                             std::pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / c.n_rot);
          }
          std::vector<double> want_ggml(x.begin(), x.end()), want_exact(x.begin(), x.end());
          rope_double(want_ggml, c.n_heads, c.head_dim, c.n_rot, theta_ggml, neox);
          rope_double(want_exact, c.n_heads, c.head_dim, c.n_rot, theta_exact, neox);
          const double exact_tol = kRopeExactAbsTolBase +
                                   kRopeExactAbsTolPerPos * static_cast<double>(pos) * (c.n_rot / 64.0 + 1.0);
          for (size_t i = 0; i < x.size(); ++i) {
            ASSERT_NEAR(got[i], want_ggml[i], kRopeGgmlAnglesAbsTol)
                << "ggml angles head_dim=" << c.head_dim << " n_rot=" << c.n_rot << " pos=" << pos
                << " neox=" << neox;
            ASSERT_NEAR(got[i], want_exact[i], exact_tol)
                << "exact angles head_dim=" << c.head_dim << " n_rot=" << c.n_rot << " pos=" << pos
                << " neox=" << neox;
          }
        }
      }
    }
  }
}

TEST(OpsRope, NormalAndNeoxPairDifferentDims) {
  // One head of 8 dims with only x[1] = 1: normal mode rotates it with x[0]; neox with x[5].
  std::vector<float> normal(8, 0.0f), neox(8, 0.0f);
  normal[1] = neox[1] = 1.0f;
  ref::rope(normal.data(), 1, 8, 8, 1, 10000.0f, false);
  ref::rope(neox.data(), 1, 8, 8, 1, 10000.0f, true);
  EXPECT_NEAR(normal[0], -std::sin(1.0), 1e-6);  // pair (0, 1), theta_0 = pos = 1
  EXPECT_NEAR(normal[1], std::cos(1.0), 1e-6);
  const double theta1 = std::pow(10000.0, -2.0 / 8.0);  // pair (1, 5), i = 1
  EXPECT_NEAR(neox[1], std::cos(theta1), 1e-6);
  EXPECT_NEAR(neox[5], std::sin(theta1), 1e-6);
  EXPECT_EQ(neox[0], 0.0f);
}

TEST_P(OpsFast, SoftmaxMatchesScalar) {
  LL_FOR_EACH_FAST_TABLE(t) {
    for (int64_t n : kOddSizes) {
      for (float spread : {1.0f, 30.0f, 200.0f}) {
        auto x = random_floats(n, -spread, spread, static_cast<uint32_t>(n * 7 + static_cast<int>(spread)));
        if (n > 3) x[1] = -INFINITY;  // a masked entry
        auto want = x, got = x;
        ref::softmax(want.data(), n);
        t->softmax(got.data(), n);
        expect_rel_near(
            got, want, kSoftmaxRelTol, kSoftmaxAbsTol,
            std::string(t->name) + " n=" + std::to_string(n) + " spread=" + std::to_string(spread));
        if (n > 3) {
          EXPECT_EQ(got[1], 0.0f);
        }
      }
    }
  }
}

TEST(OpsSoftmax, SumsToOneAndMatchesDouble) {
  std::vector<const OpsTable*> all = {&ops_scalar()};
  for (const OpsTable* t : fast_tables()) all.push_back(t);
  for (const OpsTable* t : all) {
    for (int64_t n : kOddSizes) {
      const auto orig = random_floats(n, -20.0f, 20.0f, static_cast<uint32_t>(n));
      double mx = -INFINITY, den = 0;
      for (float v : orig) mx = std::max(mx, static_cast<double>(v));
      for (float v : orig) den += std::exp(v - mx);
      auto x = orig;
      t->softmax(x.data(), n);
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        sum += x[i];
        const double want = std::exp(orig[i] - mx) / den;
        ASSERT_NEAR(x[i], want, kSoftmaxRelTol * want + kSoftmaxAbsTol)
            << t->name << " n=" << n << " i=" << i;
      }
      EXPECT_NEAR(sum, 1.0, kSoftmaxSumTol) << t->name << " n=" << n;
    }
  }
}

TEST_P(OpsFast, SiluAndSwigluMatchScalar) {
  LL_FOR_EACH_FAST_TABLE(t) {
    for (int64_t n : kOddSizes) {
      auto x = random_floats(n, -20.0f, 20.0f, static_cast<uint32_t>(n));
      const auto up = random_floats(n, -2.0f, 2.0f, static_cast<uint32_t>(n + 3));
      // Extremes: exp(-x) under- and overflows.
      const float extremes[] = {0.0f, -0.0f, 88.0f, -88.0f, 90.0f, -90.0f, 120.0f, -120.0f, 1e-20f, -1e-20f};
      for (size_t i = 0; i < x.size() && i < std::size(extremes); ++i) x[i] = extremes[i];
      std::vector<float> want(x.size()), got(x.size());
      ref::silu(x.data(), want.data(), n);
      t->silu(x.data(), got.data(), n);
      expect_rel_near(got, want, kSiluRelTol, kSiluAbsTol,
                      std::string(t->name) + " silu n=" + std::to_string(n));
      ref::swiglu(x.data(), up.data(), want.data(), n);
      t->swiglu(x.data(), up.data(), got.data(), n);
      expect_rel_near(got, want, kSiluRelTol, kSiluAbsTol,
                      std::string(t->name) + " swiglu n=" + std::to_string(n));
      // In place on gate.
      auto inplace = x;
      t->swiglu(inplace.data(), up.data(), inplace.data(), n);
      EXPECT_EQ(inplace, got);
    }
  }
}

TEST_P(OpsFast, ExpIsAccurateOverTheWholeRange) {
  // The vector exp, seen through silu and a two-element softmax, against double over a dense sweep, down
  // into the subnormal range of exp and up to its overflow.
  std::vector<float> x;
  for (float v = -110.0f; v <= 110.0f; v += 0.01171875f) x.push_back(v);
  const int64_t n = static_cast<int64_t>(x.size());
  LL_FOR_EACH_FAST_TABLE(t) {
    std::vector<float> got(x.size());
    t->silu(x.data(), got.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double e = std::exp(-static_cast<double>(x[i]));
      // Where exp(-x) overflows float, silu in float is x / inf = -0 (so it is for expf, too).
      const double want = e > std::numeric_limits<float>::max() ? 0.0 : x[i] / (1.0 + e);
      ASSERT_NEAR(got[i], want, 4e-7 * std::fabs(want) + 1e-45) << t->name << " silu x=" << x[i];
    }
    for (float a = 0.0f; a <= 110.0f; a += 0.0390625f) {
      float pair[2] = {0.0f, -a};
      t->softmax(pair, 2);
      const double e = std::exp(-static_cast<double>(a));
      const double want = e / (1.0 + e);
      ASSERT_NEAR(pair[1], want, 4e-7 * want + 1.5e-45) << t->name << " softmax exp(-" << a << ")";
    }
  }
}

TEST_P(OpsFast, AddIsExact) {
  LL_FOR_EACH_FAST_TABLE(t) {
    for (int64_t n : kOddSizes) {
      const auto a = random_floats(n, -5.0f, 5.0f, static_cast<uint32_t>(n));
      const auto b = random_floats(n, -5.0f, 5.0f, static_cast<uint32_t>(n + 1));
      std::vector<float> want(a.size()), got(a.size());
      ref::add(a.data(), b.data(), want.data(), n);
      t->add(a.data(), b.data(), got.data(), n);
      EXPECT_EQ(got, want) << t->name << " n=" << n;
      auto x = a;
      t->add_bias(x.data(), b.data(), n);
      EXPECT_EQ(x, want) << t->name << " n=" << n;
      auto y = a;
      t->add(y.data(), b.data(), y.data(), n);
      EXPECT_EQ(y, want) << t->name << " n=" << n;
    }
  }
}

TEST(OpsFp16, RowsAreBitExactWithCoreFp16) {
  std::vector<const OpsTable*> all = {&ops_scalar()};
  for (const OpsTable* t : fast_tables()) all.push_back(t);
  // Every half value, F16 -> F32.
  std::vector<uint16_t> halves(65536);
  for (uint32_t i = 0; i < 65536; ++i) halves[i] = static_cast<uint16_t>(i);
  // F32 -> F16 on random bit patterns plus edge cases (ties, subnormals, overflow, infinities).
  std::mt19937 rng(42);
  std::vector<float> floats;
  for (int i = 0; i < 200000; ++i) {
    const float f = fp32_from_bits(static_cast<uint32_t>(rng()));
    if (!std::isnan(f)) floats.push_back(f);
  }
  for (float f :
       {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 1e6f, -1e6f, 6.1035156e-05f, 5.96e-08f, 2.98e-08f,
        2.9802322e-08f, 1.0f + 1.0f / 2048.0f, 1.0f + 3.0f / 2048.0f, std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min()}) {
    floats.push_back(f);
  }
  for (const OpsTable* t : all) {
    for (int64_t n : {int64_t{65536}, int64_t{65535}, int64_t{13}, int64_t{1}}) {
      std::vector<float> got(static_cast<size_t>(n));
      t->fp16_to_fp32_row(halves.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const float want = fp16_to_fp32(halves[i]);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(got[i])) << t->name << " half=" << i;
        } else {
          ASSERT_EQ(fp32_to_bits(got[i]), fp32_to_bits(want)) << t->name << " half=" << i;
        }
      }
    }
    for (int64_t n : {static_cast<int64_t>(floats.size()), int64_t{17}, int64_t{5}}) {
      std::vector<uint16_t> got(static_cast<size_t>(n) + 1, 0xABCD);
      t->fp32_to_fp16_row(floats.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(got[i], fp32_to_fp16(floats[i])) << t->name << " f=" << floats[i];
      EXPECT_EQ(got[static_cast<size_t>(n)], 0xABCD) << "wrote past the end";
    }
  }
}

struct AttnCase {
  int64_t n_head, n_head_kv, head_dim, n_kv_pos;
};

struct AttnData {
  std::vector<float> q;
  std::vector<uint16_t> k, v;
};

AttnData make_attn_data(const AttnCase& c, float q_range, uint32_t seed) {
  AttnData d;
  d.q = random_floats(c.n_head * c.head_dim, -q_range, q_range, seed);
  d.k = random_halves(c.n_kv_pos * c.n_head_kv * c.head_dim, -1.0f, 1.0f, seed + 1);
  d.v = random_halves(c.n_kv_pos * c.n_head_kv * c.head_dim, -1.0f, 1.0f, seed + 2);
  return d;
}

std::vector<AttnCase> attention_cases() {
  std::vector<AttnCase> cases;
  for (int64_t head_dim : {8, 64, 128, 5, 17, 80, 200}) {
    for (int64_t ratio : {1, 2, 4, 8}) {
      for (int64_t n_kv_pos : {1, 2, 7, 16, 33, 300}) {
        const int64_t n_head_kv = ratio == 8 ? 1 : 2;
        cases.push_back({n_head_kv * ratio, n_head_kv, head_dim, n_kv_pos});
      }
    }
  }
  cases.push_back({12, 4, 64, 129});  // ratio 3: tiles 2+1
  cases.push_back({14, 2, 32, 50});   // ratio 7: tiles 4+2+1 (values), 4+2+1 (scores)
  cases.push_back({32, 2, 64, 40});   // ratio 16: two tiles of 8
  return cases;
}

TEST_P(OpsFast, AttentionMatchesScalar) {
  LL_FOR_EACH_FAST_TABLE(t) {
    uint32_t seed = 1;
    for (const auto& c : attention_cases()) {
      for (float q_range : {1.0f, 8.0f}) {
        const AttnData d = make_attn_data(c, q_range, seed++);
        const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
        const size_t n_scratch = attention_scratch_floats(c.n_head, c.n_kv_pos);
        std::vector<float> want(static_cast<size_t>(c.n_head * c.head_dim)), got(want.size());
        std::vector<float> want_w(n_scratch), got_w(n_scratch);
        ref::attention(d.q.data(), d.k.data(), d.v.data(), c.n_kv_pos, c.n_head, c.n_head_kv, c.head_dim,
                       scale, want.data(), want_w.data());
        t->attention(d.q.data(), d.k.data(), d.v.data(), c.n_kv_pos, c.n_head, c.n_head_kv, c.head_dim, scale,
                     got.data(), got_w.data(), 0, c.n_head_kv);
        const std::string what = std::string(t->name) + " n_head=" + std::to_string(c.n_head) +
                                 " n_head_kv=" + std::to_string(c.n_head_kv) +
                                 " head_dim=" + std::to_string(c.head_dim) +
                                 " n_kv_pos=" + std::to_string(c.n_kv_pos);
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_NEAR(got[i], want[i], kAttentionAbsTol) << what << " i=" << i;
        for (size_t i = 0; i < want_w.size(); ++i)
          ASSERT_NEAR(got_w[i], want_w[i], kAttentionWeightAbsTol) << what << " weight " << i;
      }
    }
  }
}

TEST(OpsAttention, ScalarMatchesDoubleFormula) {
  uint32_t seed = 100;
  for (const auto& c : attention_cases()) {
    const AttnData d = make_attn_data(c, 4.0f, seed++);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    std::vector<float> got(static_cast<size_t>(c.n_head * c.head_dim));
    std::vector<float> scratch(attention_scratch_floats(c.n_head, c.n_kv_pos));
    ref::attention(d.q.data(), d.k.data(), d.v.data(), c.n_kv_pos, c.n_head, c.n_head_kv, c.head_dim, scale,
                   got.data(), scratch.data());
    const int64_t group = c.n_head / c.n_head_kv;
    for (int64_t h = 0; h < c.n_head; ++h) {
      const int64_t g = h / group;
      std::vector<double> s(static_cast<size_t>(c.n_kv_pos));
      double mx = -INFINITY;
      for (int64_t p = 0; p < c.n_kv_pos; ++p) {
        double dot = 0;
        for (int64_t e = 0; e < c.head_dim; ++e)
          dot += static_cast<double>(d.q[h * c.head_dim + e]) *
                 fp16_to_fp32(d.k[(p * c.n_head_kv + g) * c.head_dim + e]);
        s[p] = dot * scale;
        mx = std::max(mx, s[p]);
      }
      double den = 0;
      for (auto& x : s) den += (x = std::exp(x - mx));
      for (int64_t e = 0; e < c.head_dim; ++e) {
        double o = 0;
        for (int64_t p = 0; p < c.n_kv_pos; ++p)
          o += s[p] / den * fp16_to_fp32(d.v[(p * c.n_head_kv + g) * c.head_dim + e]);
        ASSERT_NEAR(got[h * c.head_dim + e], o, kAttentionVsDoubleAbsTol)
            << "n_head=" << c.n_head << " n_head_kv=" << c.n_head_kv << " head_dim=" << c.head_dim
            << " n_kv_pos=" << c.n_kv_pos << " h=" << h << " e=" << e;
      }
    }
  }
}

TEST(OpsAttention, SplitOverKvHeadsGivesTheSameBits) {
  std::vector<const OpsTable*> all = {&ops_scalar()};
  for (const OpsTable* t : fast_tables()) all.push_back(t);
  const AttnCase c{16, 4, 64, 77};
  const AttnData d = make_attn_data(c, 2.0f, 9);
  const float scale = 0.125f;
  for (const OpsTable* t : all) {
    std::vector<float> whole(static_cast<size_t>(c.n_head * c.head_dim)), split(whole.size());
    std::vector<float> s1(attention_scratch_floats(c.n_head, c.n_kv_pos)), s2(s1.size());
    t->attention(d.q.data(), d.k.data(), d.v.data(), c.n_kv_pos, c.n_head, c.n_head_kv, c.head_dim, scale,
                 whole.data(), s1.data(), 0, c.n_head_kv);
    for (int64_t g : {3, 0, 2, 1})  // any order, one kv head at a time
      t->attention(d.q.data(), d.k.data(), d.v.data(), c.n_kv_pos, c.n_head, c.n_head_kv, c.head_dim, scale,
                   split.data(), s2.data(), g, g + 1);
    EXPECT_EQ(whole, split) << t->name;
    EXPECT_EQ(s1, s2) << t->name;
  }
}

TEST(OpsAttention, ScoresDoNotDependOnTilingOrLength) {
  // Positions past n0 get keys pointing away from every query, so their weights underflow to exactly 0:
  // attending to n1 > n0 positions must then give the same bits as attending to n0, although the first n0
  // positions fall into different score tiles (full tiles vs per-position tails).
  std::vector<const OpsTable*> all = {&ops_scalar()};
  for (const OpsTable* t : fast_tables()) all.push_back(t);
  for (int64_t ratio : {1, 2, 4}) {
    const int64_t n_head_kv = 2, n_head = n_head_kv * ratio, head_dim = 64;
    for (int64_t n0 : {1, 5, 20, 37}) {
      const int64_t n1 = n0 + 29;
      AttnData d =
          make_attn_data({n_head, n_head_kv, head_dim, n1}, 1.0f, static_cast<uint32_t>(n0 * 10 + ratio));
      for (auto& x : d.q) x = x >= 0 ? x + 0.1f : x - 0.1f;  // no zero components
      for (int64_t p = n0; p < n1; ++p)
        for (int64_t g = 0; g < n_head_kv; ++g)
          for (int64_t e = 0; e < head_dim; ++e) {
            // Against the sign of every query head of this kv head (they share signs by construction below).
            d.k[(p * n_head_kv + g) * head_dim + e] =
                fp32_to_fp16(d.q[g * ratio * head_dim + e] > 0 ? -60000.0f : 60000.0f);
          }
      for (int64_t h = 0; h < n_head; ++h)  // make every head of a group share the first head's signs
        for (int64_t e = 0; e < head_dim; ++e) {
          const float lead = d.q[(h / ratio) * ratio * head_dim + e];
          d.q[h * head_dim + e] = std::copysign(d.q[h * head_dim + e], lead);
        }
      for (const OpsTable* t : all) {
        std::vector<float> a(static_cast<size_t>(n_head * head_dim)), b(a.size());
        std::vector<float> sa(attention_scratch_floats(n_head, n0)), sb(attention_scratch_floats(n_head, n1));
        t->attention(d.q.data(), d.k.data(), d.v.data(), n0, n_head, n_head_kv, head_dim, 0.125f, a.data(),
                     sa.data(), 0, n_head_kv);
        t->attention(d.q.data(), d.k.data(), d.v.data(), n1, n_head, n_head_kv, head_dim, 0.125f, b.data(),
                     sb.data(), 0, n_head_kv);
        EXPECT_EQ(a, b) << t->name << " ratio=" << ratio << " n0=" << n0;
        for (int64_t h = 0; h < n_head; ++h)
          for (int64_t p = 0; p < n1; ++p)
            ASSERT_EQ(sb[h * n1 + p], p < n0 ? sa[h * n0 + p] : 0.0f) << t->name << " h=" << h << " p=" << p;
      }
    }
  }
}

TEST(OpsAttention, PublicEntryPointsUseTheActiveTable) {
  const AttnCase c{8, 2, 64, 40};
  const AttnData d = make_attn_data(c, 2.0f, 5);
  std::vector<float> a(static_cast<size_t>(c.n_head * c.head_dim)), b(a.size());
  std::vector<float> s(attention_scratch_floats(c.n_head, c.n_kv_pos));
  attention(d.q.data(), d.k.data(), d.v.data(), c.n_kv_pos, c.n_head, c.n_head_kv, c.head_dim, 0.125f,
            a.data(), s.data());
  ops_active().attention(d.q.data(), d.k.data(), d.v.data(), c.n_kv_pos, c.n_head, c.n_head_kv, c.head_dim,
                         0.125f, b.data(), s.data(), 0, c.n_head_kv);
  EXPECT_EQ(a, b);
  // The weights left in scratch are a distribution per head.
  for (int64_t h = 0; h < c.n_head; ++h) {
    double sum = 0;
    for (int64_t p = 0; p < c.n_kv_pos; ++p) sum += s[h * c.n_kv_pos + p];
    EXPECT_NEAR(sum, 1.0, kSoftmaxSumTol);
  }
}

TEST(OpsAttention, SinglePositionCopiesV) {
  std::vector<const OpsTable*> all = {&ops_scalar()};
  for (const OpsTable* t : fast_tables()) all.push_back(t);
  const AttnCase c{4, 2, 17, 1};
  const AttnData d = make_attn_data(c, 3.0f, 11);
  for (const OpsTable* t : all) {
    std::vector<float> out(static_cast<size_t>(c.n_head * c.head_dim));
    std::vector<float> s(attention_scratch_floats(c.n_head, c.n_kv_pos));
    t->attention(d.q.data(), d.k.data(), d.v.data(), 1, c.n_head, c.n_head_kv, c.head_dim, 0.3f, out.data(),
                 s.data(), 0, c.n_head_kv);
    for (int64_t h = 0; h < c.n_head; ++h)
      for (int64_t e = 0; e < c.head_dim; ++e)
        EXPECT_EQ(out[h * c.head_dim + e], fp16_to_fp32(d.v[(h / 2) * c.head_dim + e])) << t->name;
  }
}

}  // namespace
}  // namespace ll::kernels
