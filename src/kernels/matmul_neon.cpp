// AArch64 NEON kernels (Advanced SIMD is part of the ARMv8-A baseline: no extra flags). The layout
// and the canonical arithmetic are described in matmul_neon.h; matmul_neon_dotprod.cpp reuses the
// quantizers, the prepared layout and the float kernels of this file.
#include "kernels/matmul_neon.h"

#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "core/fp16.h"
#include "kernels/matmul_impl.h"
#include "quant/blocks.h"

namespace ll::kernels::detail::neon {
namespace {

using quant::BlockQ8_0;
using quant::BlockQ8_K;

// Without dotprod: products of 8 int8 pairs widened to int16 (|w*x| <= 128 * 128 fits), pairs of
// them added into int32 lanes. Exact.
struct DotNeon {
  static inline int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
  }
};

// ---------------------------------------------------------------------------------------------
// Activation quantizers, bit-identical to quant::quantize_row_q8_0 / _q8_k: the same float
// operations in the same order per element, and the rounding modes of the reference (roundf: to
// nearest, ties away = FCVTAS; nearest_int: ties to even = FCVTNS). The maxima are exact whatever
// the order of comparison.

void quantize_q8_0(const float* x, void* vy, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(vy);
  for (int64_t i = 0; i < n / 32; ++i) {
    const float* xb = x + 32 * i;
    float32x4_t v[8];
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int j = 0; j < 8; ++j) {
      v[j] = vld1q_f32(xb + 4 * j);
      m = vmaxq_f32(m, vabsq_f32(v[j]));
    }
    const float amax = vmaxvq_f32(m);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = fp32_to_fp16(d);
    std::memcpy(&y[i].d, &dh, 2);
    int16x8_t q16[4];
    for (int j = 0; j < 4; ++j) {
      const int32x4_t a = vcvtaq_s32_f32(vmulq_n_f32(v[2 * j], id));
      const int32x4_t b = vcvtaq_s32_f32(vmulq_n_f32(v[2 * j + 1], id));
      q16[j] = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    }
    vst1q_s8(y[i].qs, vcombine_s8(vqmovn_s16(q16[0]), vqmovn_s16(q16[1])));
    vst1q_s8(y[i].qs + 16, vcombine_s8(vqmovn_s16(q16[2]), vqmovn_s16(q16[3])));
  }
}

void quantize_q8_k(const float* x, void* vy, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(vy);
  for (int64_t i = 0; i < n / 256; ++i) {
    const float* xb = x + 256 * i;
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int j = 0; j < 64; ++j) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(xb + 4 * j)));
    const float amax = vmaxvq_f32(m);
    if (!(amax > 0.0f)) {
      std::memset(static_cast<void*>(&y[i]), 0, sizeof(BlockQ8_K));
      continue;
    }
    // The reference keeps the signed value of the first element of largest magnitude.
    float max = 0.0f;
    for (int j = 0; j < 64; ++j) {
      const uint32x4_t eq = vceqq_f32(vabsq_f32(vld1q_f32(xb + 4 * j)), vdupq_n_f32(amax));
      if (vmaxvq_u32(eq) != 0) {
        int l = 0;
        while (std::fabs(xb[4 * j + l]) != amax) ++l;
        max = xb[4 * j + l];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const int32x4_t v127 = vdupq_n_s32(127);
    for (int j = 0; j < 16; ++j) {  // 16 values: one bsum
      int32x4_t q[4];
      for (int k = 0; k < 4; ++k) {
        q[k] = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xb + 16 * j + 4 * k), iscale)), v127);
      }
      const int16x8_t a = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
      const int16x8_t b = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
      vst1q_s8(y[i].qs + 16 * j, vcombine_s8(vmovn_s16(a), vmovn_s16(b)));
      const int16_t bsum =
          static_cast<int16_t>(vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3]))));
      std::memcpy(&y[i].bsums[j], &bsum, 2);
    }
    y[i].d = 1 / iscale;
  }
}

// ---------------------------------------------------------------------------------------------
// F32 / F16 / BF16 weights against F32 activations.

template <DType WT>
inline float32x4_t load_w4(const uint8_t* p) {
  if constexpr (WT == DType::F32) {
    return vld1q_f32(reinterpret_cast<const float*>(p));
  } else if constexpr (WT == DType::F16) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
  } else {  // bfloat16: the high half of a float
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16));
  }
}

template <DType WT, int R, int T>
void tile_f(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
            float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  constexpr size_t esize = WT == DType::F32 ? 4 : 2;
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w + static_cast<size_t>(r0 + r) * w_row_bytes;
  const float* xs[T];
  for (int t = 0; t < T; ++t)
    xs[t] = reinterpret_cast<const float*>(prep + static_cast<size_t>(t0 + t) * prep_bytes);
  float32x4_t acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.0f);
  }
  const int64_t n_full = n_cols / 4 * 4;
  for (int64_t c = 0; c < n_full; c += 4) {
    float32x4_t wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      if (c * esize % 64 == 0) __builtin_prefetch(rows[r] + c * esize + 512);
      wv[r] = load_w4<WT>(rows[r] + c * esize);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const float32x4_t xv = vld1q_f32(xs[t] + c);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = vfmaq_f32(acc[r][t], wv[r], xv);
    }
  }
  if (n_full < n_cols) {  // tail: weights copied into a zero-filled buffer; activations are zero-padded
    float32x4_t wv[R];
    for (int r = 0; r < R; ++r) {
      alignas(16) uint8_t tmp[16] = {};
      std::memcpy(tmp, rows[r] + n_full * esize, static_cast<size_t>(n_cols - n_full) * esize);
      wv[r] = load_w4<WT>(tmp);
    }
    for (int t = 0; t < T; ++t) {
      const float32x4_t xv = vld1q_f32(xs[t] + n_full);
      for (int r = 0; r < R; ++r) acc[r][t] = vfmaq_f32(acc[r][t], wv[r], xv);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[(t0 + t) * n_rows_total + r0 + r] = vaddvq_f32(acc[r][t]);
  }
}

template <DType WT>
struct FloatKernels {
  template <int R, int T>
  struct K {
    static constexpr TileFn fn = tile_f<WT, R, T>;
  };
};

const IsaOps k_ops_neon = {quantize, prep_row_bytes, prepare, rows};

}  // namespace

void quantize(DType vt, const float* x, void* y, int64_t n) {
  if (vt == DType::Q8_0) {
    quantize_q8_0(x, y, n);
  } else {
    quantize_q8_k(x, y, n);
  }
}

size_t prep_row_bytes(DType wtype, int64_t n_cols) {
  switch (vec_dot_type(wtype)) {
    case DType::Q8_0:
      return round_up64(static_cast<size_t>(n_cols / 32) * k_q8_0_prep_bytes);
    case DType::Q8_K:
      return round_up64(static_cast<size_t>(n_cols / 256) * k_q8_k_prep_bytes);
    default:
      return round_up64(static_cast<size_t>(n_cols) * 4);
  }
}

void prepare(DType wtype, int64_t n_cols, const void* xq_row, uint8_t* out) {
  // Every byte is written once: the fields, each block's padding and the row's tail are zeroed, the
  // rest is copied (no memset of the whole row first: this runs for every token of every matmul).
  const size_t bytes = prep_row_bytes(wtype, n_cols);
  size_t written = 0;
  switch (vec_dot_type(wtype)) {
    case DType::Q8_0: {
      const auto* xb = static_cast<const uint8_t*>(xq_row);
      for (int64_t i = 0; i < n_cols / 32; ++i) {
        const uint8_t* b = xb + static_cast<size_t>(i) * sizeof(BlockQ8_0);
        uint8_t* o = out + static_cast<size_t>(i) * k_q8_0_prep_bytes;
        std::memcpy(o, b + offsetof(BlockQ8_0, qs), 32);
        const float d = half_to_float(b + offsetof(BlockQ8_0, d));
        std::memcpy(o + 32, &d, 4);
        std::memset(o + 36, 0, k_q8_0_prep_bytes - 36);
      }
      written = static_cast<size_t>(n_cols / 32) * k_q8_0_prep_bytes;
      break;
    }
    case DType::Q8_K: {
      const auto* xb = static_cast<const uint8_t*>(xq_row);
      for (int64_t i = 0; i < n_cols / 256; ++i) {
        const uint8_t* b = xb + static_cast<size_t>(i) * sizeof(BlockQ8_K);
        uint8_t* o = out + static_cast<size_t>(i) * k_q8_k_prep_bytes;
        std::memcpy(o, b + offsetof(BlockQ8_K, qs), 256);
        std::memcpy(o + k_q8_k_bsums_offset, b + offsetof(BlockQ8_K, bsums), 32);
        std::memcpy(o + k_q8_k_d_offset, b + offsetof(BlockQ8_K, d), 4);
        std::memset(o + k_q8_k_d_offset + 4, 0, k_q8_k_prep_bytes - k_q8_k_d_offset - 4);
      }
      written = static_cast<size_t>(n_cols / 256) * k_q8_k_prep_bytes;
      break;
    }
    default:
      written = static_cast<size_t>(n_cols) * 4;
      std::memcpy(out, xq_row, written);
      break;
  }
  std::memset(out + written, 0, bytes - written);
}

void rows(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
          int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  if (rows_int<DotNeon>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total, row_first, row_last))
    return;
  switch (wtype) {
    case DType::F32:
      return drive<FloatKernels<DType::F32>::K, k_row_tile>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y,
                                                            n_rows_total, row_first, row_last);
    case DType::F16:
      return drive<FloatKernels<DType::F16>::K, k_row_tile>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y,
                                                            n_rows_total, row_first, row_last);
    case DType::BF16:
      return drive<FloatKernels<DType::BF16>::K, k_row_tile>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y,
                                                             n_rows_total, row_first, row_last);
    default:
      break;
  }
}

}  // namespace ll::kernels::detail::neon

namespace ll::kernels::detail {

const IsaOps& isa_ops_neon() {
  return neon::k_ops_neon;
}

}  // namespace ll::kernels::detail
