// Scalar reference (de)quantization; see quant.h for the contract (bit-exact with GGML's reference).
//
// Floating-point expressions are written one rounding step per statement where GGML's order matters
// (e.g. Q4_K: (d * sc) * q - (dmin * m)), so that no compiler contraction into FMA can change a bit.
#include "quant/quant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/fp16.h"

namespace ll::quant {
namespace {

// Invariant checks that stay on in release builds: a wrong size here is a caller bug that would
// otherwise read or write out of bounds.
[[noreturn]] void fail(const char* what, long long a, long long b) {
  std::fprintf(stderr, "ll::quant: %s (%lld, %lld)\n", what, a, b);
  std::abort();
}

void check_multiple(int64_t n, int64_t block) {
  if (n < 0 || n % block != 0)
    fail("element count is not a non-negative multiple of the block size", n, block);
}

constexpr float k_group_max_eps = 1e-15f;  // GGML's GROUP_MAX_EPS: below this a group counts as all zero

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// ---------------------------------------------------------------------------------------------
// Dequantization of single blocks. y receives the block's elements.

void dequant_block(const BlockQ4_0& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int j = 0; j < k_qk4_0 / 2; ++j) {
    const int lo = (b.qs[j] & 0x0F) - 8;
    const int hi = (b.qs[j] >> 4) - 8;
    y[j] = static_cast<float>(lo) * d;
    y[j + k_qk4_0 / 2] = static_cast<float>(hi) * d;
  }
}

void dequant_block(const BlockQ8_0& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int j = 0; j < k_qk8_0; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

void dequant_block(const BlockQ4_K& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  const float dmin = fp16_to_fp32(b.dmin);
  const uint8_t* q = b.qs;
  // Each 64-element chunk: 32 bytes, low nibbles -> sub-block is, high nibbles -> sub-block is + 1.
  for (int is = 0; is < k_qk_k / 32; is += 2) {
    uint8_t sc = 0, m = 0;
    get_scale_min_k4(is, b.scales, sc, m);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = dmin * static_cast<float>(m);
    get_scale_min_k4(is + 1, b.scales, sc, m);
    const float d2 = d * static_cast<float>(sc);
    const float m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      const float p = d1 * static_cast<float>(q[l] & 0xF);
      y[l] = p - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const float p = d2 * static_cast<float>(q[l] >> 4);
      y[32 + l] = p - m2;
    }
    q += 32;
    y += 64;
  }
}

void dequant_block(const BlockQ6_K& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  // Each 128-element half: 64 bytes of ql, 32 bytes of qh, 8 scales (one per 16 elements).
  for (int half = 0; half < k_qk_k / 128; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

void dequant_block(const BlockQ8_K& b, float* y) {
  for (int j = 0; j < k_qk_k; ++j) y[j] = b.d * static_cast<float>(b.qs[j]);
}

// Dequantize from possibly unaligned bytes: each block is copied into an aligned local first.
template <class Block, int kElems>
void dequant_bytes(const void* src, float* dst, int64_t n) {
  check_multiple(n, kElems);
  const auto* p = static_cast<const uint8_t*>(src);
  const int64_t nb = n / kElems;
  Block b;
  for (int64_t i = 0; i < nb; ++i) {
    std::memcpy(&b, p + i * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
    dequant_block(b, dst + i * kElems);
  }
}

// ---------------------------------------------------------------------------------------------
// Quantization of single blocks (GGML's *_ref rules). x holds the block's elements.

void quant_block(const float* x, BlockQ4_0& b) {
  float amax = 0.0f;  // largest magnitude ...
  float max = 0.0f;   // ... and the value that has it, sign included
  for (int j = 0; j < k_qk4_0; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  for (int j = 0; j < k_qk4_0 / 2; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[j + k_qk4_0 / 2] * id;
    // Values lie in [-8, 8] * (1 + eps), so the biased value is in [0.5, 16.5]: truncation is safe.
    const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f)));
    const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f)));
    b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void quant_block(const float* x, BlockQ8_0& b) {
  float amax = 0.0f;
  for (int j = 0; j < k_qk8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / ((1 << 7) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  for (int j = 0; j < k_qk8_0; ++j) {
    const float v = x[j] * id;
    b.qs[j] = static_cast<int8_t>(std::roundf(v));
  }
}

void quant_block(const float* x, BlockQ8_K& b) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < k_qk_k; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  if (amax == 0.0f) {
    // GGML leaves bsums untouched here; we zero them (they are sums of zero quants).
    b.d = 0.0f;
    std::memset(b.qs, 0, sizeof(b.qs));
    std::memset(b.bsums, 0, sizeof(b.bsums));
    return;
  }
  const float iscale = -127.f / max;
  for (int j = 0; j < k_qk_k; ++j) {
    const int v = nearest_int(iscale * x[j]);
    b.qs[j] = static_cast<int8_t>(std::min(127, v));
  }
  for (int j = 0; j < k_qk_k / 16; ++j) {
    int sum = 0;
    for (int l = 0; l < 16; ++l) sum += b.qs[j * 16 + l];
    b.bsums[j] = static_cast<int16_t>(sum);
  }
  b.d = 1 / iscale;
}

// Fits x[i] ~ scale * L[i] - the_min with L in [0, nmax] (GGML's make_qkx2_quants): start from the
// min/max fit, then try nstep + 1 stretched grids and keep the weighted least-squares solution with
// the smallest weighted error. Returns the scale; *the_min is the (non-negative) offset.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * static_cast<float>(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    // As in GGML, `min` may have been replaced by a better fit in an earlier step.
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      const float fl = static_cast<float>(l);
      sum_l += w * fl;
      sum_l2 += w * fl * fl;
      sum_xl += w * fl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Fits x[i] ~ scale * (L[i] - nmax) with L in [0, 2 * nmax - 1], weights x^2 (GGML's make_qx_quants
// with rmse_type 1 and no importance weights): the max-magnitude grid, then 18 perturbed grids,
// keeping the least-squares optimum. Returns the scale (its sign follows the grid's orientation).
float make_qx_quants_rmse1(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < k_group_max_eps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float fnmax = static_cast<float>(nmax);
  float iscale = -fnmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    const float fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(fnmax + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      const float fl = static_cast<float>(l);
      sumlx += w * x[i] * fl;
      suml2 += w * fl * fl;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

void quant_block(const float* x, BlockQ4_K& b) {
  uint8_t L[k_qk_k];
  uint8_t Laux[32];
  float weights[32];
  float mins[k_qk_k / 32];
  float scales[k_qk_k / 32];

  float max_scale = 0;  // scales are non-negative because the min is subtracted
  float max_min = 0;
  for (int j = 0; j < k_qk_k / 32; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    scales[j] = make_qkx2_quants(32, 15, xs, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }

  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(b.scales, 0, sizeof(b.scales));
  for (int j = 0; j < k_qk_k / 32; ++j) {
    // 6-bit scale and min. Sub-blocks 0..3 use the low 6 bits of bytes 0..3 (scale) and 4..7 (min);
    // sub-blocks 4..7 keep their low 4 bits in bytes 8..11 and their top 2 bits in the free top bits
    // of bytes 0..3 (scale) and 4..7 (min).
    const int ls = std::min(63, static_cast<int>(static_cast<uint8_t>(nearest_int(inv_scale * scales[j]))));
    const int lm = std::min(63, static_cast<int>(static_cast<uint8_t>(nearest_int(inv_min * mins[j]))));
    if (j < 4) {
      b.scales[j] = static_cast<uint8_t>(ls);
      b.scales[j + 4] = static_cast<uint8_t>(lm);
    } else {
      b.scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      b.scales[j - 4] = static_cast<uint8_t>(b.scales[j - 4] | ((ls >> 4) << 6));
      b.scales[j] = static_cast<uint8_t>(b.scales[j] | ((lm >> 4) << 6));
    }
  }
  b.d = fp32_to_fp16(max_scale / 63.f);
  b.dmin = fp32_to_fp16(max_min / 63.f);

  // Requantize against the scales as they will be decoded.
  for (int j = 0; j < k_qk_k / 32; ++j) {
    uint8_t sc = 0, m = 0;
    get_scale_min_k4(j, b.scales, sc, m);
    const float d = fp16_to_fp32(b.d) * static_cast<float>(sc);
    if (d == 0.0f) continue;
    const float dm = fp16_to_fp32(b.dmin) * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      const int q = nearest_int((x[32 * j + l] + dm) / d);
      L[32 * j + l] = static_cast<uint8_t>(std::max(0, std::min(15, q)));
    }
  }

  uint8_t* q = b.qs;
  for (int j = 0; j < k_qk_k; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

void quant_block(const float* x, BlockQ6_K& b) {
  int8_t L[k_qk_k];
  float scales[k_qk_k / 16];

  float max_scale = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < k_qk_k / 16; ++ib) {
    const float scale = make_qx_quants_rmse1(16, 32, x + 16 * ib, L + 16 * ib);
    scales[ib] = scale;
    const float abs_scale = std::fabs(scale);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scale;
    }
  }

  if (max_abs_scale < k_group_max_eps) {
    std::memset(&b, 0, sizeof(b));
    b.d = fp32_to_fp16(0.f);
    return;
  }

  const float iscale = -128.f / max_scale;
  b.d = fp32_to_fp16(1 / iscale);
  for (int ib = 0; ib < k_qk_k / 16; ++ib) {
    b.scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  }

  for (int j = 0; j < k_qk_k / 16; ++j) {
    const float d = fp16_to_fp32(b.d) * static_cast<float>(b.scales[j]);
    if (d == 0.0f) continue;
    for (int l = 0; l < 16; ++l) {
      int q = nearest_int(x[16 * j + l] / d);
      q = std::max(-32, std::min(31, q));
      L[16 * j + l] = static_cast<int8_t>(q + 32);
    }
  }

  // Per 128 elements: ql[l] = low nibbles of elements l (bits 0..3) and l + 64 (bits 4..7),
  // ql[l + 32] = those of l + 32 and l + 96; qh[l] = the top 2 bits of l, l + 32, l + 64, l + 96.
  uint8_t* ql = b.ql;
  uint8_t* qh = b.qh;
  for (int j = 0; j < k_qk_k; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int v1 = L[j + l];
      const int v2 = L[j + l + 32];
      const int v3 = L[j + l + 64];
      const int v4 = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((v1 & 0xF) | ((v3 & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((v2 & 0xF) | ((v4 & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((v1 >> 4) | ((v2 >> 4) << 2) | ((v3 >> 4) << 4) | ((v4 >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

// Quantize into possibly unaligned bytes: each block is built locally, then copied out.
template <class Block, int kElems>
void quant_bytes(const float* src, void* dst, int64_t n) {
  check_multiple(n, kElems);
  auto* p = static_cast<uint8_t*>(dst);
  const int64_t nb = n / kElems;
  Block b;
  for (int64_t i = 0; i < nb; ++i) {
    quant_block(src + i * kElems, b);
    std::memcpy(p + i * static_cast<int64_t>(sizeof(Block)), &b, sizeof(Block));
  }
}

template <class Block, int kElems>
void dequant_typed(const Block* src, float* dst, int64_t n) {
  check_multiple(n, kElems);
  for (int64_t i = 0; i < n / kElems; ++i) dequant_block(src[i], dst + i * kElems);
}

template <class Block, int kElems>
void quant_typed(const float* src, Block* dst, int64_t n) {
  check_multiple(n, kElems);
  for (int64_t i = 0; i < n / kElems; ++i) quant_block(src + i * kElems, dst[i]);
}

}  // namespace

void get_scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = static_cast<uint8_t>(q[j] & 63);
    m = static_cast<uint8_t>(q[j + 4] & 63);
  } else {
    d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  if (n == 0) return;  // also keeps null pointers away from memcpy
  const auto* p = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:
      check_multiple(n, 1);
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
      check_multiple(n, 1);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(p + 2 * i));
      return;
    case DType::BF16:
      check_multiple(n, 1);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(p + 2 * i));
      return;
    case DType::Q4_0:
      dequant_bytes<BlockQ4_0, k_qk4_0>(src, dst, n);
      return;
    case DType::Q8_0:
      dequant_bytes<BlockQ8_0, k_qk8_0>(src, dst, n);
      return;
    case DType::Q4_K:
      dequant_bytes<BlockQ4_K, k_qk_k>(src, dst, n);
      return;
    case DType::Q6_K:
      dequant_bytes<BlockQ6_K, k_qk_k>(src, dst, n);
      return;
    case DType::Q8_K:
      dequant_bytes<BlockQ8_K, k_qk_k>(src, dst, n);
      return;
  }
  fail("dequantize_row: unknown dtype", static_cast<long long>(t), 0);
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  if (n == 0) return;
  auto* p = static_cast<uint8_t*>(dst);
  switch (t) {
    case DType::F32:
      check_multiple(n, 1);
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
      check_multiple(n, 1);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = fp32_to_fp16(src[i]);
        std::memcpy(p + 2 * i, &h, sizeof(h));
      }
      return;
    case DType::BF16:
      check_multiple(n, 1);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = fp32_to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h, sizeof(h));
      }
      return;
    case DType::Q4_0:
      quant_bytes<BlockQ4_0, k_qk4_0>(src, dst, n);
      return;
    case DType::Q8_0:
      quant_bytes<BlockQ8_0, k_qk8_0>(src, dst, n);
      return;
    case DType::Q4_K:
      quant_bytes<BlockQ4_K, k_qk_k>(src, dst, n);
      return;
    case DType::Q6_K:
      quant_bytes<BlockQ6_K, k_qk_k>(src, dst, n);
      return;
    case DType::Q8_K:
      quant_bytes<BlockQ8_K, k_qk_k>(src, dst, n);
      return;
  }
  fail("quantize_row: unknown dtype", static_cast<long long>(t), 0);
}

void dequantize_row_q4_0(const BlockQ4_0* src, float* dst, int64_t n) {
  dequant_typed<BlockQ4_0, k_qk4_0>(src, dst, n);
}
void dequantize_row_q8_0(const BlockQ8_0* src, float* dst, int64_t n) {
  dequant_typed<BlockQ8_0, k_qk8_0>(src, dst, n);
}
void dequantize_row_q4_k(const BlockQ4_K* src, float* dst, int64_t n) {
  dequant_typed<BlockQ4_K, k_qk_k>(src, dst, n);
}
void dequantize_row_q6_k(const BlockQ6_K* src, float* dst, int64_t n) {
  dequant_typed<BlockQ6_K, k_qk_k>(src, dst, n);
}
void dequantize_row_q8_k(const BlockQ8_K* src, float* dst, int64_t n) {
  dequant_typed<BlockQ8_K, k_qk_k>(src, dst, n);
}

void quantize_row_q4_0(const float* src, BlockQ4_0* dst, int64_t n) {
  quant_typed<BlockQ4_0, k_qk4_0>(src, dst, n);
}
void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n) {
  quant_typed<BlockQ8_0, k_qk8_0>(src, dst, n);
}
void quantize_row_q4_k(const float* src, BlockQ4_K* dst, int64_t n) {
  quant_typed<BlockQ4_K, k_qk_k>(src, dst, n);
}
void quantize_row_q6_k(const float* src, BlockQ6_K* dst, int64_t n) {
  quant_typed<BlockQ6_K, k_qk_k>(src, dst, n);
}
void quantize_row_q8_k(const float* src, BlockQ8_K* dst, int64_t n) {
  quant_typed<BlockQ8_K, k_qk_k>(src, dst, n);
}

}  // namespace ll::quant
