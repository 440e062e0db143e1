// Matmul kernels: every kernel level (scalar, AVX2, AVX-512, AVX-512 VNNI, NEON, NEON+dotprod —
// each a parameter of the MatmulLevel tests, skipped with a message where this CPU lacks it)
// against the scalar reference, activation quantizers bit-exact against the quant library, and
// batch-/thread-invariance (a token's output is bit-identical alone, in any batch, on any threads).
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/fp16.h"
#include "kernels/matmul_impl.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace ll::kernels {
namespace {

using detail::Isa;

// Tolerances, relative to sum |w * x| of the dot product. With the same quantized inputs the
// integer parts are exact, so fast paths differ from the reference only in float summation order.
constexpr double k_tol_same_inputs = 2e-6;
// The reference's dot vs a double-precision sum over dequantized weights and activations.
constexpr double k_tol_reference_vs_dequant = 2e-6;
// Fast (F32 activations) vs exact float dot for F32/F16/BF16 weights.
constexpr double k_tol_float = 2e-6;

const DType k_weight_types[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0,
                                DType::Q8_0, DType::Q4_K, DType::Q6_K};

const Isa k_all_levels[] = {Isa::scalar,     Isa::avx2, Isa::avx512,
                            Isa::avx512vnni, Isa::neon, Isa::neon_dotprod};
static_assert(std::size(k_all_levels) == detail::k_n_isa, "a new kernel level needs its tests");

size_t row_bytes(DType t, int64_t n) {
  return *dtype_row_bytes(t, static_cast<uint64_t>(n));
}

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& f : v) f = nd(rng);
  return v;
}

// Weights: quantized from random floats, or (raw = true) random bytes with sane scales, which
// reaches the extremes (Q8_0 -128, 6-bit scales 63, Q6_K scales -128).
std::vector<uint8_t> make_weights(std::mt19937& rng, DType t, int64_t n_rows, int64_t n_cols, bool raw) {
  const size_t rb = row_bytes(t, n_cols);
  std::vector<uint8_t> w(rb * static_cast<size_t>(n_rows));
  if (!raw || t == DType::F32 || t == DType::F16 || t == DType::BF16) {
    const std::vector<float> f = random_floats(rng, static_cast<size_t>(n_rows * n_cols), 0.05f);
    for (int64_t r = 0; r < n_rows; ++r)
      quant::quantize_row(t, f.data() + r * n_cols, w.data() + r * rb, n_cols);
    return w;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : w) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> ud(0.001f, 0.02f);
  auto put_half = [&](uint8_t* p) {
    const uint16_t h = fp32_to_fp16(ud(rng));
    std::memcpy(p, &h, 2);
  };
  const size_t bb = dtype_block_bytes(t);
  for (size_t off = 0; off < w.size(); off += bb) {
    switch (t) {
      case DType::Q4_0:
      case DType::Q8_0:
        put_half(&w[off]);
        break;
      case DType::Q4_K:
        put_half(&w[off]);
        put_half(&w[off + 2]);
        break;
      case DType::Q6_K:
        put_half(&w[off + offsetof(quant::BlockQ6_K, d)]);
        break;
      default:
        break;
    }
  }
  return w;
}

// Activations: a mix of magnitudes, a zero block, and values that quantize to exact ties.
std::vector<float> make_activations(std::mt19937& rng, int64_t n_tokens, int64_t n_cols) {
  std::vector<float> x = random_floats(rng, static_cast<size_t>(n_tokens * n_cols));
  for (int64_t t = 0; t < n_tokens; ++t) {
    float* xt = x.data() + t * n_cols;
    const float scale = std::ldexp(1.0f, static_cast<int>(t % 7) - 3);
    for (int64_t i = 0; i < n_cols; ++i) xt[i] *= scale;
    if (t % 3 == 1) {
      for (int64_t i = 0; i < std::min<int64_t>(32, n_cols); ++i) xt[i] = 0.0f;
    }
    if (t % 4 == 2 && n_cols >= 64) {  // ties: amax 127 makes d = 1 exactly
      xt[32] = 127.0f;
      for (int i = 33; i < 64; ++i) xt[i] = static_cast<float>(i - 48) + 0.5f;
    }
  }
  return x;
}

struct XQ {
  std::vector<uint8_t> data;
  size_t row_bytes;
};

XQ quantize_ref(DType wtype, const std::vector<float>& x, int64_t n_tokens, int64_t n_cols) {
  const DType vt = vec_dot_type(wtype);
  XQ q;
  q.row_bytes = vt == DType::F32 ? static_cast<size_t>(n_cols) * 4 : row_bytes(vt, n_cols);
  q.data.resize(q.row_bytes * static_cast<size_t>(n_tokens));
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (vt == DType::F32) {
      std::memcpy(q.data.data() + t * q.row_bytes, x.data() + t * n_cols, q.row_bytes);
    } else {
      quant::quantize_row(vt, x.data() + t * n_cols, q.data.data() + t * q.row_bytes, n_cols);
    }
  }
  return q;
}

// sum |w * x| per (token, row), on dequantized weights and (quantized) activations, and the
// double-precision dot.
void exact_dots(DType wtype, const std::vector<uint8_t>& w, int64_t n_rows, int64_t n_cols, const XQ& xq,
                int64_t n_tokens, std::vector<double>& dot, std::vector<double>& mag) {
  const DType vt = vec_dot_type(wtype);
  std::vector<float> wf(static_cast<size_t>(n_cols)), xf(static_cast<size_t>(n_cols));
  dot.assign(static_cast<size_t>(n_rows * n_tokens), 0.0);
  mag.assign(dot.size(), 0.0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    quant::dequantize_row(vt, xq.data.data() + t * xq.row_bytes, xf.data(), n_cols);
    for (int64_t r = 0; r < n_rows; ++r) {
      quant::dequantize_row(wtype, w.data() + r * row_bytes(wtype, n_cols), wf.data(), n_cols);
      double s = 0, m = 0;
      for (int64_t i = 0; i < n_cols; ++i) {
        const double p = static_cast<double>(wf[i]) * static_cast<double>(xf[i]);
        s += p;
        m += std::fabs(p);
      }
      dot[t * n_rows + r] = s;
      mag[t * n_rows + r] = m;
    }
  }
}

std::string label(DType t, Isa isa) {
  return std::string(dtype_name(t)) + "/" + detail::isa_name(isa);
}

int64_t cols_for(DType t, bool small) {
  if (t == DType::Q4_K || t == DType::Q6_K) return small ? 256 : 768;
  if (t == DType::Q4_0 || t == DType::Q8_0) return small ? 96 : 544;  // odd block counts: tail paths
  return small ? 37 : 203;                                            // not a multiple of 8 or 16
}

TEST(Matmul, VecDotTypes) {
  EXPECT_EQ(vec_dot_type(DType::Q4_0), DType::Q8_0);
  EXPECT_EQ(vec_dot_type(DType::Q8_0), DType::Q8_0);
  EXPECT_EQ(vec_dot_type(DType::Q4_K), DType::Q8_K);
  EXPECT_EQ(vec_dot_type(DType::Q6_K), DType::Q8_K);
  EXPECT_EQ(vec_dot_type(DType::F32), DType::F32);
  EXPECT_EQ(vec_dot_type(DType::F16), DType::F32);
  EXPECT_EQ(vec_dot_type(DType::BF16), DType::F32);
  const std::string isa = matmul_isa();
  EXPECT_TRUE(isa == "scalar" || isa == "avx2" || isa == "avx512" || isa == "avx512vnni" || isa == "neon" ||
              isa == "neon_dotprod")
      << isa;
}

// The level matmul() uses is the best one the (LL_CPU_MAX-capped) features allow, and it runs here.
TEST(Matmul, BestLevelFollowsCpuFeatures) {
  const CpuFeatures& f = cpu_features();
  Isa want = Isa::scalar;
#if defined(__x86_64__)
  if (f.has_avx512vnni()) {
    want = Isa::avx512vnni;
  } else if (f.has_avx512()) {
    want = Isa::avx512;
  } else if (f.has_avx2()) {
    want = Isa::avx2;
  }
#elif defined(__aarch64__)
  if (f.has_dotprod()) {
    want = Isa::neon_dotprod;
  } else if (f.has_neon()) {
    want = Isa::neon;
  }
#endif
  EXPECT_EQ(detail::best_isa(), want) << "features: " << f.describe();
  EXPECT_STREQ(matmul_isa(), detail::isa_name(want));
  EXPECT_TRUE(detail::isa_supported(detail::best_isa()));
  // Levels of the other architecture never are.
#if defined(__x86_64__)
  EXPECT_FALSE(detail::isa_supported(Isa::neon));
  EXPECT_FALSE(detail::isa_supported(Isa::neon_dotprod));
#elif defined(__aarch64__)
  EXPECT_FALSE(detail::isa_supported(Isa::avx2));
  EXPECT_FALSE(detail::isa_supported(Isa::avx512vnni));
#endif
  std::printf("matmul level: %s (cpu: %s)\n", matmul_isa(), f.describe().c_str());
}

// Each kernel level is a parameter; a level this CPU (or this build's architecture) lacks is skipped,
// visibly.
class MatmulLevel : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    isa_ = GetParam();
    if (!detail::isa_supported(isa_)) {
      GTEST_SKIP() << detail::isa_name(isa_)
                   << " kernels: not built for this architecture or not supported by "
                   << "this CPU (" << detect_cpu_features().describe() << ")";
    }
  }
  Isa isa_ = Isa::scalar;
};

INSTANTIATE_TEST_SUITE_P(Isa, MatmulLevel, ::testing::ValuesIn(k_all_levels),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return detail::isa_name(info.param);
                         });

// The levels held against the scalar reference (scalar itself is that reference: comparing it with
// itself could not fail).
class MatmulFastLevel : public MatmulLevel {};
const Isa k_fast_levels[] = {Isa::avx2, Isa::avx512, Isa::avx512vnni, Isa::neon, Isa::neon_dotprod};
static_assert(std::size(k_fast_levels) + 1 == detail::k_n_isa, "a new kernel level needs its tests");
INSTANTIATE_TEST_SUITE_P(Isa, MatmulFastLevel, ::testing::ValuesIn(k_fast_levels),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return detail::isa_name(info.param);
                         });

TEST_P(MatmulFastLevel, QuantizersMatchReferenceBitForBit) {
  std::mt19937 rng(1);
  for (Isa isa : {isa_}) {
    for (DType vt : {DType::Q8_0, DType::Q8_K}) {
      for (int rep = 0; rep < 20; ++rep) {
        const int64_t n = 1024;
        std::vector<float> x = make_activations(rng, 1, n);
        if (rep % 5 == 3) {  // negative and positive maxima of equal magnitude: the first wins
          x[5] = -3.0f;
          x[200] = 3.0f;
          x[300] = -3.0f;
        }
        if (rep % 5 == 4) {  // tiny and huge values
          for (int64_t i = 0; i < n; ++i) x[i] *= (i % 2 ? 1e-30f : 1e20f);
        }
        std::vector<uint8_t> want(row_bytes(vt, n)), got(row_bytes(vt, n), 0xAA);
        quant::quantize_row(vt, x.data(), want.data(), n);
        detail::quantize_row_isa(isa, vt, x.data(), got.data(), n);
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size()))
            << dtype_name(vt) << " " << detail::isa_name(isa) << " rep " << rep;
      }
    }
  }
}

TEST(Matmul, ReferenceMatchesDequantizedDot) {
  std::mt19937 rng(2);
  for (DType t : k_weight_types) {
    for (bool raw : {false, true}) {
      const int64_t n_rows = 9, n_tokens = 5, n_cols = cols_for(t, false);
      const auto w = make_weights(rng, t, n_rows, n_cols, raw);
      const auto x = make_activations(rng, n_tokens, n_cols);
      const XQ xq = quantize_ref(t, x, n_tokens, n_cols);
      std::vector<double> dot, mag;
      exact_dots(t, w, n_rows, n_cols, xq, n_tokens, dot, mag);
      std::vector<float> y(static_cast<size_t>(n_rows * n_tokens));
      matmul_reference(t, w.data(), n_rows, n_cols, x.data(), n_tokens, y.data());
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i], dot[i], k_tol_reference_vs_dequant * mag[i] + 1e-30)
            << dtype_name(t) << " raw " << raw << " i " << i;
      }
    }
  }
}

TEST_P(MatmulFastLevel, MatchesReference) {
  std::mt19937 rng(3);
  for (Isa isa : {isa_}) {
    for (DType t : k_weight_types) {
      for (bool raw : {false, true}) {
        for (bool small : {true, false}) {
          const int64_t n_rows = 13, n_tokens = 6, n_cols = cols_for(t, small);
          const auto w = make_weights(rng, t, n_rows, n_cols, raw);
          const auto x = make_activations(rng, n_tokens, n_cols);
          const XQ xq = quantize_ref(t, x, n_tokens, n_cols);
          std::vector<double> dot, mag;
          exact_dots(t, w, n_rows, n_cols, xq, n_tokens, dot, mag);
          std::vector<float> want(static_cast<size_t>(n_rows * n_tokens)), got(want.size(), -1.0f);
          matmul_reference(t, w.data(), n_rows, n_cols, x.data(), n_tokens, want.data());
          detail::matmul_rows_isa(isa, t, w.data(), n_cols, xq.data.data(), xq.row_bytes, n_tokens,
                                  got.data(), n_rows, 0, n_rows);
          const double tol =
              (t == DType::F32 || t == DType::F16 || t == DType::BF16) ? k_tol_float : k_tol_same_inputs;
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_NEAR(got[i], want[i], tol * mag[i] + 1e-30)
                << label(t, isa) << " raw " << raw << " i " << i;
          }
        }
      }
    }
  }
}

// Every level (scalar included): a token alone vs the same token inside batches, on 1..4 threads,
// through the threaded matmul (SIMD quantizer + prepare + row split) and through matmul_rows.
TEST_P(MatmulLevel, BatchAndThreadInvariant) {
  std::mt19937 rng(4);
  const int64_t batch_sizes[] = {2, 3, 7, 16, 33};
  const int64_t n_max = 33;
  std::vector<ThreadPool*> pools;
  for (int n : {1, 2, 3, 4}) pools.push_back(new ThreadPool(n));
  for (Isa isa : {isa_}) {
    for (DType t : k_weight_types) {
      const int64_t n_rows = 45, n_cols = cols_for(t, false);
      const auto w = make_weights(rng, t, n_rows, n_cols, true);
      const auto x = make_activations(rng, n_max, n_cols);
      MatmulScratch scratch;
      std::vector<float> alone(static_cast<size_t>(n_rows * n_max));
      for (int64_t tok = 0; tok < n_max; ++tok) {
        detail::matmul_isa(isa, *pools[0], t, w.data(), n_rows, n_cols, x.data() + tok * n_cols, 1,
                           alone.data() + tok * n_rows, scratch);
      }
      for (ThreadPool* pool : pools) {
        for (int64_t b : batch_sizes) {
          for (int64_t first : {int64_t{0}, n_max - b}) {
            std::vector<float> y(static_cast<size_t>(n_rows * b), -7.0f);
            detail::matmul_isa(isa, *pool, t, w.data(), n_rows, n_cols, x.data() + first * n_cols, b,
                               y.data(), scratch);
            ASSERT_EQ(0, std::memcmp(y.data(), alone.data() + first * n_rows, y.size() * 4))
                << label(t, isa) << " batch " << b << " first " << first << " threads " << pool->n_threads();
          }
        }
      }
      // matmul_rows on odd row ranges, tokens 0..6 at once
      const int64_t nb = 7;
      const XQ xq = quantize_ref(t, x, nb, n_cols);
      std::vector<float> y(static_cast<size_t>(n_rows * nb), -7.0f);
      const int64_t ranges[][2] = {{0, 17}, {5, 24}, {6, 23}, {23, 45}, {44, 45}};
      for (const auto& rr : ranges) {
        const int64_t r0 = rr[0], r1 = rr[1];
        detail::matmul_rows_isa(isa, t, w.data(), n_cols, xq.data.data(), xq.row_bytes, nb, y.data(), n_rows,
                                r0, r1);
      }
      std::vector<float> y1(static_cast<size_t>(n_rows), -7.0f);
      for (int64_t tok = 0; tok < nb; ++tok) {
        detail::matmul_rows_isa(isa, t, w.data(), n_cols, xq.data.data() + tok * xq.row_bytes, xq.row_bytes,
                                1, y1.data(), n_rows, 0, n_rows);
        ASSERT_EQ(0, std::memcmp(y1.data(), y.data() + tok * n_rows, y1.size() * 4))
            << label(t, isa) << " rows tok " << tok;
      }
    }
  }
  for (ThreadPool* p : pools) delete p;
}

TEST(Matmul, PublicApiUsesBestLevel) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  MatmulScratch scratch;
  for (DType t : k_weight_types) {
    const int64_t n_rows = 40, n_tokens = 5, n_cols = cols_for(t, false);
    const auto w = make_weights(rng, t, n_rows, n_cols, false);
    const auto x = make_activations(rng, n_tokens, n_cols);
    std::vector<float> a(static_cast<size_t>(n_rows * n_tokens)), b(a.size()), ref(a.size());
    matmul(pool, t, w.data(), n_rows, n_cols, x.data(), n_tokens, a.data(), scratch);
    detail::matmul_isa(detail::best_isa(), pool, t, w.data(), n_rows, n_cols, x.data(), n_tokens, b.data(),
                       scratch);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << dtype_name(t);
    // matmul_rows with activations quantized by the reference quantizer gives the same bits
    const XQ xq = quantize_ref(t, x, n_tokens, n_cols);
    matmul_rows(t, w.data(), n_cols, xq.data.data(), xq.row_bytes, n_tokens, b.data(), n_rows, 0, n_rows);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << dtype_name(t);
    matmul_reference(t, w.data(), n_rows, n_cols, x.data(), n_tokens, ref.data());
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_NEAR(a[i], ref[i], 1e-3 * (std::fabs(ref[i]) + 1.0f)) << dtype_name(t);
  }
}

}  // namespace
}  // namespace ll::kernels
