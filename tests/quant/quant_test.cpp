// Reference (de)quantization: layouts checked against hand-built blocks, GGML's rounding rules on
// hand-picked values, and round trips held to error bounds derived from each format.
#include "quant/quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/fp16.h"

namespace ll::quant {
namespace {

std::vector<float> gaussian(size_t n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<uint8_t> quantize(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(*dtype_row_bytes(t, x.size()));
  quantize_row(t, x.data(), out.data(), static_cast<int64_t>(x.size()));
  return out;
}

std::vector<float> dequantize(DType t, const std::vector<uint8_t>& q, size_t n) {
  std::vector<float> out(n);
  dequantize_row(t, q.data(), out.data(), static_cast<int64_t>(n));
  return out;
}

template <class Block>
Block block_at(const std::vector<uint8_t>& bytes, size_t i) {
  Block b;
  std::memcpy(&b, bytes.data() + i * sizeof(Block), sizeof(Block));
  return b;
}

// Relative half-ulp of binary16 in its normal range: the most fp32_to_fp16 changes a scale.
constexpr float k_fp16_rel_round = 1.0f / 2048.0f;
// Slack for the float32 arithmetic of quantizer and dequantizer (a few ulps of the block's range).
constexpr float k_f32_slack = 8 * std::numeric_limits<float>::epsilon();

// Largest change fp32_to_fp16 can make to a value that rounds to h: half an ulp of binary16,
// relative in the normal range, absolute (2^-25) among subnormals.
float fp16_rounding(uint16_t h) {
  return std::max(std::fabs(fp16_to_fp32(h)) * k_fp16_rel_round, 0x1p-25f);
}

float abs_max(const float* x, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// ------------------------------------------------------------------------------------------------
// nearest_int and fp16/bf16

TEST(NearestInt, RoundsHalfToEven) {
  EXPECT_EQ(nearest_int(0.5f), 0);
  EXPECT_EQ(nearest_int(1.5f), 2);
  EXPECT_EQ(nearest_int(2.5f), 2);
  EXPECT_EQ(nearest_int(-0.5f), 0);
  EXPECT_EQ(nearest_int(-1.5f), -2);
  EXPECT_EQ(nearest_int(-2.5f), -2);
  EXPECT_EQ(nearest_int(2.4999998f), 2);
  EXPECT_EQ(nearest_int(127.f), 127);
  EXPECT_EQ(nearest_int(-4194303.f), -4194303);
}

TEST(NearestInt, SaturatesOutOfRangeAndNan) {
  EXPECT_EQ(nearest_int(1e30f), 4194303);
  EXPECT_EQ(nearest_int(-1e30f), -4194303);
  EXPECT_EQ(nearest_int(std::numeric_limits<float>::infinity()), 4194303);
  EXPECT_EQ(nearest_int(std::numeric_limits<float>::quiet_NaN()), 0);
}

TEST(Fp16, RoundTripAndRoundingRules) {
  const std::vector<float> x = {0.f,
                                -0.f,
                                1.f,
                                -2.5f,
                                65504.f,
                                6.103515625e-05f /* min normal */,
                                5.9604644775390625e-08f /* min subnormal */};
  const auto y = dequantize(DType::F16, quantize(DType::F16, x), x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], x[i]) << i;
  EXPECT_TRUE(std::signbit(y[1]));

  // Ties go to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(fp32_to_fp16(1.f + 0x1p-11f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(1.f + 3 * 0x1p-11f), 0x3C02);
  // Overflow to infinity past the largest finite half (65504; halfway to 65536 is 65520).
  EXPECT_EQ(fp32_to_fp16(65519.f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-1e10f), 0xFC00);
  // Below half the smallest subnormal flushes to zero.
  EXPECT_EQ(fp32_to_fp16(2e-8f), 0x0000);
}

TEST(Bf16, RoundTripAndRoundingRules) {
  const std::vector<float> x = {0.f, 1.f, -3.f, 1.5f, 3.0e38f};
  const auto q = quantize(DType::BF16, x);
  const auto y = dequantize(DType::BF16, q, x.size());
  EXPECT_EQ(y[0], 0.f);
  EXPECT_EQ(y[1], 1.f);
  EXPECT_EQ(y[2], -3.f);
  EXPECT_EQ(y[3], 1.5f);
  EXPECT_NEAR(y[4], 3.0e38f, 3.0e38f / 128);
  EXPECT_EQ(fp32_to_bf16(1.f + 0x1p-8f), 0x3F80);      // tie -> even (down)
  EXPECT_EQ(fp32_to_bf16(1.f + 3 * 0x1p-8f), 0x3F82);  // tie -> even (up)
  const auto g = gaussian(1024, 1.f, 7);
  const auto gy = dequantize(DType::BF16, quantize(DType::BF16, g), g.size());
  for (size_t i = 0; i < g.size(); ++i) EXPECT_LE(std::fabs(gy[i] - g[i]), std::fabs(g[i]) * 0x1p-8f) << i;
}

TEST(F32, IsACopy) {
  const auto x = gaussian(64, 3.f, 1);
  const auto y = dequantize(DType::F32, quantize(DType::F32, x), x.size());
  EXPECT_EQ(x, y);
}

// ------------------------------------------------------------------------------------------------
// Q8_0

TEST(Q8_0, RoundsTiesAwayFromZero) {
  // amax 127 -> d = 1, id = 1: the quants are roundf(x).
  std::vector<float> x(32, 0.f);
  x[0] = 127.f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.5f;
  x[4] = -0.49f;
  x[5] = 3.5f;
  const auto b = block_at<BlockQ8_0>(quantize(DType::Q8_0, x), 0);
  EXPECT_EQ(b.d, fp32_to_fp16(1.f));
  EXPECT_EQ(b.qs[0], 127);
  EXPECT_EQ(b.qs[1], 3);  // nearest-even would give 2
  EXPECT_EQ(b.qs[2], -3);
  EXPECT_EQ(b.qs[3], 1);
  EXPECT_EQ(b.qs[4], 0);
  EXPECT_EQ(b.qs[5], 4);
}

TEST(Q8_0, DequantizeLayout) {
  BlockQ8_0 b{};
  b.d = fp32_to_fp16(0.25f);
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j * 8 - 128);
  std::vector<uint8_t> bytes(sizeof(b));
  std::memcpy(bytes.data(), &b, sizeof(b));
  const auto y = dequantize(DType::Q8_0, bytes, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.25f * static_cast<float>(j * 8 - 128)) << j;
}

TEST(Q8_0, ScaleIsFp16OfAmaxOver127) {
  const auto x = gaussian(32 * 64, 0.7f, 2);
  const auto q = quantize(DType::Q8_0, x);
  const auto y = dequantize(DType::Q8_0, q, x.size());
  for (size_t i = 0; i < x.size() / 32; ++i) {
    const auto b = block_at<BlockQ8_0>(q, i);
    const float amax = abs_max(x.data() + 32 * i, 32);
    EXPECT_EQ(b.d, fp32_to_fp16(amax / 127)) << i;
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[32 * i + j], static_cast<float>(b.qs[j]) * d);
  }
}

// |x - q d'| <= |x - q d| + |q| |d - d'| <= d / 2 + 127 |d - d'| (+ float slack),
// with d = amax / 127 the exact scale and d' its fp16 rounding.
TEST(Q8_0, RoundTripWithinHalfStepPlusScaleRounding) {
  for (float sigma : {1e-3f, 0.05f, 1.f, 300.f}) {
    const auto x = gaussian(32 * 128, sigma, 3);
    const auto q = quantize(DType::Q8_0, x);
    const auto y = dequantize(DType::Q8_0, q, x.size());
    for (size_t i = 0; i < x.size() / 32; ++i) {
      const float amax = abs_max(x.data() + 32 * i, 32);
      const float d = amax / 127;
      const float d16 = fp16_to_fp32(block_at<BlockQ8_0>(q, i).d);
      const float bound = 0.5f * d + 127 * std::fabs(d16 - d) + k_f32_slack * amax;
      for (int j = 0; j < 32; ++j) {
        ASSERT_LE(std::fabs(y[32 * i + j] - x[32 * i + j]), bound) << "sigma " << sigma << " block " << i;
      }
    }
  }
}

TEST(Q8_0, ZeroBlock) {
  const std::vector<float> x(64, 0.f);
  const auto q = quantize(DType::Q8_0, x);
  EXPECT_EQ(block_at<BlockQ8_0>(q, 0).d, 0);
  for (float v : dequantize(DType::Q8_0, q, x.size())) EXPECT_EQ(v, 0.f);
}

TEST(Q8_0, ExtremeValues) {
  // Largest magnitude whose scale still fits binary16 (65504 * 127 ~ 8.3e6), next to tiny values.
  std::vector<float> x(32, 1e-6f);
  x[7] = -8.0e6f;
  x[8] = 4.0e6f;
  const auto y = dequantize(DType::Q8_0, quantize(DType::Q8_0, x), 32);
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(y[7], -8.0e6f, 8.0e6f / 254 + 127 * 8.0e6f / 127 * k_fp16_rel_round);
  EXPECT_NEAR(y[8], 4.0e6f, 8.0e6f / 254 + 127 * 8.0e6f / 127 * k_fp16_rel_round);
  EXPECT_EQ(y[0], 0.f);  // 1e-6 is far below half a step

  // A block so small that its scale underflows binary16 decodes to zeros: error <= amax.
  std::vector<float> tiny(32, 3e-10f);
  tiny[3] = -5e-10f;
  const auto ty = dequantize(DType::Q8_0, quantize(DType::Q8_0, tiny), 32);
  for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(ty[j] - tiny[j]), 5e-10f);
}

// ------------------------------------------------------------------------------------------------
// Q4_0

TEST(Q4_0, NibbleLayoutAndRounding) {
  // max (by magnitude, with sign) = -8 -> d = 1, id = 1; q = min(15, trunc(x + 8.5)).
  std::vector<float> x(32, 0.f);
  x[0] = -8.f;    // -> 0
  x[1] = 7.f;     // -> 15
  x[2] = 0.5f;    // 9.0 -> 9 (halves round up)
  x[3] = -0.5f;   // 8.0 -> 8
  x[4] = 0.4f;    // 8.9 -> 8
  x[16] = 7.6f;   // 16.1 -> clipped to 15
  x[17] = -7.5f;  // 1.0 -> 1
  const auto b = block_at<BlockQ4_0>(quantize(DType::Q4_0, x), 0);
  EXPECT_EQ(b.d, fp32_to_fp16(1.f));
  // Low nibble of byte j is element j, high nibble element j + 16.
  EXPECT_EQ(b.qs[0], 0x00 | (15 << 4));
  EXPECT_EQ(b.qs[1], 15 | (1 << 4));
  EXPECT_EQ(b.qs[2], 9 | (8 << 4));
  EXPECT_EQ(b.qs[3], 8 | (8 << 4));
  EXPECT_EQ(b.qs[4], 8 | (8 << 4));

  const auto y = dequantize(DType::Q4_0, quantize(DType::Q4_0, x), 32);
  EXPECT_EQ(y[0], -8.f);
  EXPECT_EQ(y[1], 7.f);
  EXPECT_EQ(y[2], 1.f);
  EXPECT_EQ(y[16], 7.f);
  EXPECT_EQ(y[17], -7.f);
}

TEST(Q4_0, PositiveMaxGivesNegativeScale) {
  std::vector<float> x(32, 0.f);
  x[5] = 8.f;
  x[6] = -8.f;  // same magnitude: the first one found keeps the sign
  const auto q = quantize(DType::Q4_0, x);
  EXPECT_EQ(block_at<BlockQ4_0>(q, 0).d, fp32_to_fp16(-1.f));
  const auto y = dequantize(DType::Q4_0, q, 32);
  EXPECT_EQ(y[5], 8.f);
  EXPECT_EQ(y[6], -7.f);  // the opposite extreme is clipped to 7 |d|
}

// With d = max / -8: x / d in [-8, 8]; q = floor(x / d + 8.5) rounds to the nearest step
// (error <= |d| / 2) except where x / d >= 7.5 is clipped to 7 (error <= |d|). The fp16 scale adds
// at most 8 |d - d'|.
TEST(Q4_0, RoundTripWithinDerivedBound) {
  for (float sigma : {1e-2f, 1.f, 1000.f}) {
    const auto x = gaussian(32 * 256, sigma, 4);
    const auto q = quantize(DType::Q4_0, x);
    const auto y = dequantize(DType::Q4_0, q, x.size());
    for (size_t i = 0; i < x.size() / 32; ++i) {
      float amax = 0, max = 0;
      for (int j = 0; j < 32; ++j) {
        if (amax < std::fabs(x[32 * i + j])) {
          amax = std::fabs(x[32 * i + j]);
          max = x[32 * i + j];
        }
      }
      const float d = max / -8;
      const float d16 = fp16_to_fp32(block_at<BlockQ4_0>(q, i).d);
      for (int j = 0; j < 32; ++j) {
        const float v = x[32 * i + j];
        const bool clipped = v / d >= 7.5f;
        const float bound =
            (clipped ? 1.f : 0.5f) * std::fabs(d) + 8 * std::fabs(d16 - d) + k_f32_slack * amax;
        ASSERT_LE(std::fabs(y[32 * i + j] - v), bound) << "sigma " << sigma << " block " << i << " j " << j;
      }
    }
  }
}

TEST(Q4_0, ZeroBlock) {
  const std::vector<float> x(32, 0.f);
  const auto q = quantize(DType::Q4_0, x);
  const auto b = block_at<BlockQ4_0>(q, 0);
  EXPECT_EQ(fp16_to_fp32(b.d), 0.f);          // 0 / -8 is -0, as in GGML
  for (uint8_t v : b.qs) EXPECT_EQ(v, 0x88);  // 8 | 8 << 4: the zero point
  for (float v : dequantize(DType::Q4_0, q, 32)) EXPECT_EQ(v, 0.f);
}

// ------------------------------------------------------------------------------------------------
// Q8_K

TEST(Q8_K, RoundsHalfToEvenAndMapsMaxToMinus127) {
  std::vector<float> x(256, 0.f);
  x[0] = -127.f;  // max by magnitude -> iscale = -127 / max = 1
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -2.5f;
  x[4] = 126.6f;
  const auto b = block_at<BlockQ8_K>(quantize(DType::Q8_K, x), 0);
  EXPECT_EQ(b.d, 1.f);
  EXPECT_EQ(b.qs[0], -127);
  EXPECT_EQ(b.qs[1], 2);
  EXPECT_EQ(b.qs[2], 4);
  EXPECT_EQ(b.qs[3], -2);
  EXPECT_EQ(b.qs[4], 127);
  EXPECT_EQ(b.bsums[0], -127 + 2 + 4 - 2 + 127);
  for (int j = 1; j < 16; ++j) EXPECT_EQ(b.bsums[j], 0);

  // A positive max flips the sign of the quants (d < 0).
  std::vector<float> p(256, 0.f);
  p[9] = 10.f;
  p[10] = -5.f;
  const auto pb = block_at<BlockQ8_K>(quantize(DType::Q8_K, p), 0);
  EXPECT_EQ(pb.qs[9], -127);
  EXPECT_EQ(pb.qs[10], nearest_int(-127.f / 10.f * -5.f));
  EXPECT_EQ(pb.d, 1 / (-127.f / 10.f));
}

TEST(Q8_K, BsumsAndRoundTrip) {
  const auto x = gaussian(256 * 16, 2.f, 5);
  const auto q = quantize(DType::Q8_K, x);
  const auto y = dequantize(DType::Q8_K, q, x.size());
  for (size_t i = 0; i < x.size() / 256; ++i) {
    const auto b = block_at<BlockQ8_K>(q, i);
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b.qs[16 * g + l];
      EXPECT_EQ(b.bsums[g], sum);
    }
    // The scale is stored in float32, so the error is half a step plus float slack.
    const float amax = abs_max(x.data() + 256 * i, 256);
    const float step = std::fabs(b.d);
    EXPECT_NEAR(step, amax / 127, amax / 127 * k_f32_slack);
    for (int j = 0; j < 256; ++j) {
      EXPECT_EQ(y[256 * i + j], b.d * static_cast<float>(b.qs[j]));
      ASSERT_LE(std::fabs(y[256 * i + j] - x[256 * i + j]), 0.5f * step + k_f32_slack * amax);
    }
  }
}

TEST(Q8_K, ZeroBlock) {
  const std::vector<float> x(256, 0.f);
  const auto q = quantize(DType::Q8_K, x);
  const auto b = block_at<BlockQ8_K>(q, 0);
  EXPECT_EQ(b.d, 0.f);
  for (auto v : b.qs) EXPECT_EQ(v, 0);
  for (auto v : b.bsums) EXPECT_EQ(v, 0);
  for (float v : dequantize(DType::Q8_K, q, x.size())) EXPECT_EQ(v, 0.f);
}

// ------------------------------------------------------------------------------------------------
// Q4_K

// Packs eight (scale, min) 6-bit pairs exactly as described in the Q4_K layout.
void pack_scales_k4(const int* sc, const int* m, uint8_t* q) {
  std::memset(q, 0, k_k_scale_size);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] = static_cast<uint8_t>(sc[j] & 63);
      q[j + 4] = static_cast<uint8_t>(m[j] & 63);
    } else {
      q[j + 4] = static_cast<uint8_t>((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
      q[j - 4] = static_cast<uint8_t>(q[j - 4] | ((sc[j] >> 4) << 6));
      q[j] = static_cast<uint8_t>(q[j] | ((m[j] >> 4) << 6));
    }
  }
}

TEST(Q4_K, ScaleMinPackingRoundTrips) {
  std::mt19937 rng(6);
  std::uniform_int_distribution<int> six_bits(0, 63);
  for (int trial = 0; trial < 2000; ++trial) {
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = six_bits(rng);
      m[j] = six_bits(rng);
    }
    if (trial == 0) std::fill(sc, sc + 8, 63), std::fill(m, m + 8, 63);
    uint8_t q[k_k_scale_size];
    pack_scales_k4(sc, m, q);
    for (int j = 0; j < 8; ++j) {
      uint8_t d = 0, mm = 0;
      get_scale_min_k4(j, q, d, mm);
      ASSERT_EQ(d, sc[j]) << trial << " " << j;
      ASSERT_EQ(mm, m[j]) << trial << " " << j;
    }
  }
}

TEST(Q4_K, DequantizeLayout) {
  // Element e: 64-chunk c = e / 64, sub-block e / 32; byte c * 32 + e % 32, low nibble for the
  // first 32 elements of the chunk and high nibble for the second 32.
  const int sc[8] = {1, 63, 17, 32, 5, 40, 0, 21};
  const int m[8] = {0, 7, 63, 12, 33, 1, 50, 16};
  BlockQ4_K b{};
  b.d = fp32_to_fp16(0.5f);
  b.dmin = fp32_to_fp16(0.25f);
  pack_scales_k4(sc, m, b.scales);
  auto nibble = [](int e) { return (e * 7 + e / 16) & 0xF; };
  for (int e = 0; e < 256; ++e) {
    const int byte = (e / 64) * 32 + e % 32;
    const int shift = (e % 64) < 32 ? 0 : 4;
    b.qs[byte] = static_cast<uint8_t>(b.qs[byte] | (nibble(e) << shift));
  }
  std::vector<uint8_t> bytes(sizeof(b));
  std::memcpy(bytes.data(), &b, sizeof(b));
  const auto y = dequantize(DType::Q4_K, bytes, 256);
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;
    const float expect =
        0.5f * static_cast<float>(sc[s]) * static_cast<float>(nibble(e)) - 0.25f * static_cast<float>(m[s]);
    ASSERT_EQ(y[e], expect) << e;
  }
}

// The quantizer rounds every value to the nearest of the 16 levels of its sub-block,
// -dm + k * ds (k = 0..15, ds = d * scale, dm = dmin * min), as decoded: error <= ds / 2 inside
// [-dm, 15 ds - dm], plus the distance to that interval outside it. The fitted interval must cover
// the data up to one step (the grid search stretches the grid by at most 1 level of 15) plus what
// rounding the super-block scales d and dmin to binary16 moves its ends (15 sc + m times that
// rounding; it matters when d is subnormal, as for sigma 1e-3). The whole must be a decent 4-bit
// fit: RMS error well below a step of a plain min/max grid.
TEST(Q4_K, RoundTripWithinDerivedBound) {
  for (float sigma : {1e-3f, 1.f, 100.f}) {
    const auto x = gaussian(256 * 64, sigma, 8);
    const auto q = quantize(DType::Q4_K, x);
    const auto y = dequantize(DType::Q4_K, q, x.size());
    double err2 = 0, plain_step2 = 0;
    for (size_t i = 0; i < x.size() / 256; ++i) {
      const auto b = block_at<BlockQ4_K>(q, i);
      for (int s = 0; s < 8; ++s) {
        uint8_t sc = 0, mn = 0;
        get_scale_min_k4(s, b.scales, sc, mn);
        const float ds = fp16_to_fp32(b.d) * sc;
        const float dm = fp16_to_fp32(b.dmin) * mn;
        const float* xs = x.data() + 256 * i + 32 * s;
        const float* ys = y.data() + 256 * i + 32 * s;
        const float lo = -dm, hi = 15 * ds - dm;
        const float amax = abs_max(xs, 32);
        const float ends_moved =
            15.f * sc * fp16_rounding(b.d) + static_cast<float>(mn) * fp16_rounding(b.dmin);
        float xmin = xs[0], xmax = xs[0];
        for (int l = 0; l < 32; ++l) xmin = std::min(xmin, xs[l]), xmax = std::max(xmax, xs[l]);
        plain_step2 += 32.0 * std::pow((xmax - std::min(xmin, 0.f)) / 15.0, 2);
        for (int l = 0; l < 32; ++l) {
          const float outside = std::max({0.f, lo - xs[l], xs[l] - hi});
          ASSERT_LE(outside, ds + ends_moved + amax * k_f32_slack)
              << "sigma " << sigma << " block " << i << " sub " << s;
          ASSERT_LE(std::fabs(ys[l] - xs[l]), 0.5f * ds + outside + 4 * amax * k_f32_slack)
              << "sigma " << sigma << " block " << i << " sub " << s << " l " << l;
          err2 += std::pow(static_cast<double>(ys[l]) - xs[l], 2);
        }
      }
    }
    // A uniform rounding error has RMS step / sqrt(12) ~ 0.29 step.
    EXPECT_LT(std::sqrt(err2 / plain_step2), 0.35) << "sigma " << sigma;
  }
}

TEST(Q4_K, ZeroAndConstantBlocks) {
  std::vector<float> x(512, 0.f);
  for (int j = 256; j < 512; ++j) x[j] = -0.75f;  // constant negative block: all min, no scale
  const auto y = dequantize(DType::Q4_K, quantize(DType::Q4_K, x), x.size());
  for (int j = 0; j < 256; ++j) EXPECT_EQ(y[j], 0.f);
  for (int j = 256; j < 512; ++j) EXPECT_NEAR(y[j], -0.75f, 0.75f * k_fp16_rel_round * 2);
}

TEST(Q4_K, ExtremeValues) {
  auto x = gaussian(256, 1.f, 9);
  x[17] = 3000.f;  // one outlier stretches its sub-block and the super-block scale
  x[200] = -2000.f;
  const auto y = dequantize(DType::Q4_K, quantize(DType::Q4_K, x), x.size());
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(y[17], 3000.f, 3000.f / 15);
  EXPECT_NEAR(y[200], -2000.f, 2000.f / 15);
}

// ------------------------------------------------------------------------------------------------
// Q6_K

TEST(Q6_K, DequantizeLayout) {
  // Within each 128-half: element l (0..31) -> ql[l] low, l + 32 -> ql[l + 32] low, l + 64 ->
  // ql[l] high, l + 96 -> ql[l + 32] high; their top two bits are qh[l] bits 0-1, 2-3, 4-5, 6-7.
  BlockQ6_K b{};
  b.d = fp32_to_fp16(0.125f);
  for (int i = 0; i < 16; ++i) b.scales[i] = static_cast<int8_t>(i * 17 - 128);
  auto value = [](int e) { return (e * 37 + 11) % 64; };  // 6-bit quant of element e
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, r = e % 128, l = r % 32, quarter = r / 32;
    uint8_t* ql = b.ql + 64 * half;
    uint8_t* qh = b.qh + 32 * half;
    const int v = value(e);
    const int ql_index = l + (quarter % 2) * 32;
    const int ql_shift = quarter < 2 ? 0 : 4;
    ql[ql_index] = static_cast<uint8_t>(ql[ql_index] | ((v & 0xF) << ql_shift));
    qh[l] = static_cast<uint8_t>(qh[l] | ((v >> 4) << (2 * quarter)));
  }
  std::vector<uint8_t> bytes(sizeof(b));
  std::memcpy(bytes.data(), &b, sizeof(b));
  const auto y = dequantize(DType::Q6_K, bytes, 256);
  for (int e = 0; e < 256; ++e) {
    const float expect = 0.125f * static_cast<float>(b.scales[e / 16]) * static_cast<float>(value(e) - 32);
    ASSERT_EQ(y[e], expect) << e;
  }
}

// Each value is rounded to the nearest level k * ds (k = -32..31, ds = d * scale of its 16-group):
// error <= |ds| / 2 inside the grid, plus the distance outside it. The grid may leave part of the
// group outside: the scale search stretches the grid by up to 0.9 step (nmax + 0.1 * is, is <= 9),
// the levels are asymmetric (+31 vs -32: one more step for values of the other sign than the max)
// and the 8-bit scale rounds; so at most two steps, plus 32 |scale| times the binary16 rounding of
// d (large when d is subnormal, as for sigma 1e-3). The RMS error must be that of a 6-bit quantizer.
TEST(Q6_K, RoundTripWithinDerivedBound) {
  for (float sigma : {1e-3f, 0.3f, 1.f, 100.f}) {
    const auto x = gaussian(256 * 64, sigma, 10);
    const auto q = quantize(DType::Q6_K, x);
    const auto y = dequantize(DType::Q6_K, q, x.size());
    double err2 = 0, plain_step2 = 0;
    for (size_t i = 0; i < x.size() / 256; ++i) {
      const auto b = block_at<BlockQ6_K>(q, i);
      for (int g = 0; g < 16; ++g) {
        const float ds = fp16_to_fp32(b.d) * static_cast<float>(b.scales[g]);
        const float* xs = x.data() + 256 * i + 16 * g;
        const float* ys = y.data() + 256 * i + 16 * g;
        const float amax = abs_max(xs, 16);
        const float lo = std::min(-32 * ds, 31 * ds), hi = std::max(-32 * ds, 31 * ds);
        const float ends_moved = 32.f * std::fabs(static_cast<float>(b.scales[g])) * fp16_rounding(b.d);
        plain_step2 += 16.0 * std::pow(amax / 32.0, 2);
        for (int l = 0; l < 16; ++l) {
          const float outside = std::max({0.f, lo - xs[l], xs[l] - hi});
          ASSERT_LE(outside, 2 * std::fabs(ds) + ends_moved + amax * k_f32_slack)
              << "sigma " << sigma << " block " << i << " g " << g;
          ASSERT_LE(std::fabs(ys[l] - xs[l]), 0.5f * std::fabs(ds) + outside + 4 * amax * k_f32_slack)
              << "sigma " << sigma << " block " << i << " g " << g << " l " << l;
          err2 += std::pow(static_cast<double>(ys[l]) - xs[l], 2);
        }
      }
    }
    EXPECT_LT(std::sqrt(err2 / plain_step2), 0.35) << "sigma " << sigma;
  }
}

TEST(Q6_K, ZeroBlock) {
  const std::vector<float> x(256, 0.f);
  const auto q = quantize(DType::Q6_K, x);
  for (uint8_t v : q) EXPECT_EQ(v, 0);
  for (float v : dequantize(DType::Q6_K, q, x.size())) EXPECT_EQ(v, 0.f);
}

TEST(Q6_K, ExtremeValues) {
  auto x = gaussian(256, 1e-4f, 11);
  x[100] = 1e5f;  // d = max_scale / 128 must stay inside binary16
  const auto y = dequantize(DType::Q6_K, quantize(DType::Q6_K, x), x.size());
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(y[100], 1e5f, 1e5f / 32);
}

// ------------------------------------------------------------------------------------------------
// Entry points

TEST(Dispatch, TypedFunctionsMatchDTypeEntryPoints) {
  const auto x = gaussian(512, 1.f, 12);
  const int64_t n = 512;
  {
    std::vector<BlockQ4_0> b(n / 32);
    quantize_row_q4_0(x.data(), b.data(), n);
    const auto bytes = quantize(DType::Q4_0, x);
    EXPECT_EQ(std::memcmp(b.data(), bytes.data(), bytes.size()), 0);
    std::vector<float> y(n);
    dequantize_row_q4_0(b.data(), y.data(), n);
    EXPECT_EQ(y, dequantize(DType::Q4_0, bytes, n));
  }
  {
    std::vector<BlockQ8_0> b(n / 32);
    quantize_row_q8_0(x.data(), b.data(), n);
    const auto bytes = quantize(DType::Q8_0, x);
    EXPECT_EQ(std::memcmp(b.data(), bytes.data(), bytes.size()), 0);
    std::vector<float> y(n);
    dequantize_row_q8_0(b.data(), y.data(), n);
    EXPECT_EQ(y, dequantize(DType::Q8_0, bytes, n));
  }
  {
    std::vector<BlockQ4_K> b(n / 256);
    quantize_row_q4_k(x.data(), b.data(), n);
    const auto bytes = quantize(DType::Q4_K, x);
    EXPECT_EQ(std::memcmp(b.data(), bytes.data(), bytes.size()), 0);
    std::vector<float> y(n);
    dequantize_row_q4_k(b.data(), y.data(), n);
    EXPECT_EQ(y, dequantize(DType::Q4_K, bytes, n));
  }
  {
    std::vector<BlockQ6_K> b(n / 256);
    quantize_row_q6_k(x.data(), b.data(), n);
    const auto bytes = quantize(DType::Q6_K, x);
    EXPECT_EQ(std::memcmp(b.data(), bytes.data(), bytes.size()), 0);
    std::vector<float> y(n);
    dequantize_row_q6_k(b.data(), y.data(), n);
    EXPECT_EQ(y, dequantize(DType::Q6_K, bytes, n));
  }
  {
    std::vector<BlockQ8_K> b(n / 256);
    quantize_row_q8_k(x.data(), b.data(), n);
    const auto bytes = quantize(DType::Q8_K, x);
    EXPECT_EQ(std::memcmp(b.data(), bytes.data(), bytes.size()), 0);
    std::vector<float> y(n);
    dequantize_row_q8_k(b.data(), y.data(), n);
    EXPECT_EQ(y, dequantize(DType::Q8_K, bytes, n));
  }
}

// Tensor data in a file or message need not be aligned for the block struct.
TEST(Dispatch, UnalignedBuffers) {
  const auto x = gaussian(512, 1.f, 13);
  for (DType t : {DType::F16, DType::BF16, DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::Q8_K}) {
    const auto aligned = quantize(t, x);
    std::vector<uint8_t> shifted(aligned.size() + 1);
    quantize_row(t, x.data(), shifted.data() + 1, 512);
    EXPECT_EQ(std::memcmp(shifted.data() + 1, aligned.data(), aligned.size()), 0) << dtype_name(t);
    std::vector<float> out(513);
    dequantize_row(t, shifted.data() + 1, out.data() + 1, 512);
    const auto ref = dequantize(t, aligned, 512);
    EXPECT_TRUE(std::equal(ref.begin(), ref.end(), out.begin() + 1)) << dtype_name(t);
  }
}

TEST(Dispatch, EmptyRowIsANoOp) {
  float out = 42.f;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K,
                  DType::Q8_K}) {
    dequantize_row(t, nullptr, &out, 0);
    quantize_row(t, &out, nullptr, 0);
  }
  EXPECT_EQ(out, 42.f);
}

TEST(DispatchDeathTest, RejectsPartialBlocks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<uint8_t> buf(1024);
  std::vector<float> out(256);
  EXPECT_DEATH(dequantize_row(DType::Q8_0, buf.data(), out.data(), 31), "multiple of the block size");
  EXPECT_DEATH(quantize_row(DType::Q4_K, out.data(), buf.data(), 128), "multiple of the block size");
}

}  // namespace
}  // namespace ll::quant
