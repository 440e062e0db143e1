// Internal to the AArch64 matmul kernels: what matmul_neon_dotprod.cpp borrows from matmul_neon.cpp
// (quantizers, prepared layouts, the float kernels), and the integer kernels both files instantiate
// with their own int8 dot-product primitive.
//
// Prepared activations (64-byte aligned rows, zero padding to a multiple of 64 bytes):
//   Q8_0 row: per block 48 bytes = 32 int8 quants, float scale, 12 bytes zero.
//   Q8_K row: per block 304 bytes = 256 int8 quants, 16 int16 bsums, float scale, 12 bytes zero.
//   F32 row : the floats, zero-padded (the float kernels read whole 4-float vectors past n_cols).
//
// Canonical arithmetic (both levels; they differ only in which products share an int32 lane):
//   Q8_0/Q4_0: per block and (row, token) an int32x4 of exact partial sums of w*x over 32 values,
//     then acc = fma(float(lanes), dw*dx, acc) on a float32x4 accumulator.
//   Q4_K/Q6_K: per super-block an int32x4 of sub-block sums times their integer scales (exact),
//     then one fma with d*dx (Q4_K: plus an fma of the int32 mins term with -(dmin*dx)).
//   F32/F16/BF16: acc = fma(w, x, acc) per 4 values, the tail zero-filled.
// The result is vaddvq_f32(acc). Each (row, token) pair owns its accumulator, so row and token
// tiling never change a result's bits.
#pragma once

#include <arm_neon.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"
#include "kernels/matmul_impl.h"
#include "quant/blocks.h"

namespace ll::kernels::detail::neon {

constexpr size_t k_q8_0_prep_bytes = 48;
constexpr size_t k_q8_k_prep_bytes = 304;
constexpr size_t k_q8_k_bsums_offset = 256;
constexpr size_t k_q8_k_d_offset = 288;

// Defined in matmul_neon.cpp (plain NEON, no extension needed).
void quantize(DType vt, const float* x, void* y, int64_t n);
size_t prep_row_bytes(DType wtype, int64_t n_cols);
void prepare(DType wtype, int64_t n_cols, const void* xq_row, uint8_t* prep_row);
void rows(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
          int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last);

// Everything below has internal linkage on purpose: matmul_neon_dotprod.cpp is compiled with
// -march=armv8.2-a+dotprod, and a shared (COMDAT) copy of an inline function from that file must
// never be what the plain-NEON path calls on a core without dotprod. (For the same reason this
// header avoids std algorithms; the only library template it instantiates is std::optional's
// operator*, a plain load.)
namespace {

inline float half_to_float(const void* p) {
  __fp16 h;
  std::memcpy(&h, p, 2);
  return static_cast<float>(h);  // exact
}

inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- Q8_0 / Q4_0 weights against prepared Q8_0 activations ----

template <DType WT>
inline void load_q8_block(const uint8_t* b, int8x16_t& w0, int8x16_t& w1) {
  if constexpr (WT == DType::Q8_0) {
    w0 = vld1q_s8(reinterpret_cast<const int8_t*>(b + offsetof(quant::BlockQ8_0, qs)));
    w1 = vld1q_s8(reinterpret_cast<const int8_t*>(b + offsetof(quant::BlockQ8_0, qs) + 16));
  } else {  // nibble j holds element j (low) and j + 16 (high), stored as w + 8
    const uint8x16_t v = vld1q_u8(b + offsetof(quant::BlockQ4_0, qs));
    const int8x16_t eight = vdupq_n_s8(8);
    w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), eight);
    w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
  }
}

template <class Dot, DType WT, int R, int T>
void tile_q8(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
             float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  constexpr size_t bsize = WT == DType::Q8_0 ? sizeof(quant::BlockQ8_0) : sizeof(quant::BlockQ4_0);
  const int64_t nb = n_cols / 32;
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w + static_cast<size_t>(r0 + r) * w_row_bytes;
  const uint8_t* px = prep + static_cast<size_t>(t0) * prep_bytes;
  float32x4_t acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.0f);
  }
  for (int64_t i = 0; i < nb; ++i) {
    int8x16_t w0[R], w1[R];
    float dw[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* b = rows[r] + static_cast<size_t>(i) * bsize;
      __builtin_prefetch(b + 512);
      load_q8_block<WT>(b, w0[r], w1[r]);
      dw[r] = half_to_float(b);  // d is the first field of both block types
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const uint8_t* pt =
          px + static_cast<size_t>(t) * prep_bytes + static_cast<size_t>(i) * k_q8_0_prep_bytes;
      const int8x16_t x0 = vld1q_s8(reinterpret_cast<const int8_t*>(pt));
      const int8x16_t x1 = vld1q_s8(reinterpret_cast<const int8_t*>(pt + 16));
      const float dx = load_f32(pt + 32);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const int32x4_t s = Dot::dot(Dot::dot(vdupq_n_s32(0), w0[r], x0), w1[r], x1);
        acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(s), dw[r] * dx);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[(t0 + t) * n_rows_total + r0 + r] = vaddvq_f32(acc[r][t]);
  }
}

// ---- Q4_K / Q6_K weights against prepared Q8_K activations: one row, up to 4 tokens sharing the
// unpacked super-block ----

template <class Dot, DType WT, int R, int T>
void tile_k(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
            float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  static_assert(R == 1, "K-quant NEON tiles are one row high");
  const int64_t nb = n_cols / 256;
  const uint8_t* row = w + static_cast<size_t>(r0) * w_row_bytes;
  const uint8_t* px = prep + static_cast<size_t>(t0) * prep_bytes;
  const uint8x16_t m4 = vdupq_n_u8(0x0F);
  float32x4_t acc[T];
  for (int t = 0; t < T; ++t) acc[t] = vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < nb; ++i) {
    int32x4_t isum[T];
    for (int t = 0; t < T; ++t) isum[t] = vdupq_n_s32(0);
    if constexpr (WT == DType::Q4_K) {
      const auto* b = reinterpret_cast<const quant::BlockQ4_K*>(row) + i;
      __builtin_prefetch(reinterpret_cast<const uint8_t*>(b) + 512);
      // The 12 bytes of 6-bit scales and mins, unpacked four at a time (GGML's get_scale_min_k4).
      uint32_t u[3];
      std::memcpy(u, b->scales, 12);
      const uint32_t packed[4] = {
          u[0] & 0x3f3f3f3fu, (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4), u[1] & 0x3f3f3f3fu,
          ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4)};
      uint8_t sm[16];  // scales 0..7, mins 0..7
      std::memcpy(sm, packed, 16);
      const float d = half_to_float(&b->d);
      const float dmin = half_to_float(&b->dmin);
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {  // 64 values: low nibbles of 32 bytes, then high nibbles
        const uint8x16_t v0 = vld1q_u8(b->qs + 32 * g);
        const uint8x16_t v1 = vld1q_u8(b->qs + 32 * g + 16);
        const int8x16_t lo0 = vreinterpretq_s8_u8(vandq_u8(v0, m4));
        const int8x16_t lo1 = vreinterpretq_s8_u8(vandq_u8(v1, m4));
        const int8x16_t hi0 = vreinterpretq_s8_u8(vshrq_n_u8(v0, 4));
        const int8x16_t hi1 = vreinterpretq_s8_u8(vshrq_n_u8(v1, 4));
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const int8_t* pt = reinterpret_cast<const int8_t*>(
              px + static_cast<size_t>(t) * prep_bytes + static_cast<size_t>(i) * k_q8_k_prep_bytes + 64 * g);
          const int32x4_t slo = Dot::dot(Dot::dot(vdupq_n_s32(0), lo0, vld1q_s8(pt)), lo1, vld1q_s8(pt + 16));
          const int32x4_t shi =
              Dot::dot(Dot::dot(vdupq_n_s32(0), hi0, vld1q_s8(pt + 32)), hi1, vld1q_s8(pt + 48));
          isum[t] = vmlaq_n_s32(isum[t], slo, sm[2 * g]);
          isum[t] = vmlaq_n_s32(isum[t], shi, sm[2 * g + 1]);
        }
      }
      const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm + 8)));
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const uint8_t* pt =
            px + static_cast<size_t>(t) * prep_bytes + static_cast<size_t>(i) * k_q8_k_prep_bytes;
        const int16_t* bs = reinterpret_cast<const int16_t*>(pt + k_q8_k_bsums_offset);
        const int16x8_t pairs = vpaddq_s16(vld1q_s16(bs), vld1q_s16(bs + 8));  // sums of 32 quants
        const int32x4_t imin =
            vmlal_high_s16(vmull_s16(vget_low_s16(mins), vget_low_s16(pairs)), mins, pairs);
        const float dx = load_f32(pt + k_q8_k_d_offset);
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(isum[t]), d * dx);
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(imin), -(dmin * dx));
      }
    } else {
      const auto* b = reinterpret_cast<const quant::BlockQ6_K*>(row) + i;
      __builtin_prefetch(reinterpret_cast<const uint8_t*>(b) + 512);
      const float d = half_to_float(&b->d);
      const uint8x16_t m3 = vdupq_n_u8(0x03), m30 = vdupq_n_u8(0x30);
      const int8x16_t off = vdupq_n_s8(32);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {  // 128 values: 64 bytes of low 4 bits, 32 bytes of high 2 bits
        const uint8_t* ql = b->ql + 64 * h;
        const uint8_t* qhp = b->qh + 32 * h;
        const uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 16), l2 = vld1q_u8(ql + 32),
                         l3 = vld1q_u8(ql + 48);
        const uint8x16_t h0 = vld1q_u8(qhp), h1 = vld1q_u8(qhp + 16);
        // q[s]: the 16 quants of sub-block 8h + s (values 16s..16s+15 of this half), minus 32
        uint8x16_t u[8];
        u[0] = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(h0, m3), 4));
        u[1] = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(h1, m3), 4));
        u[2] = vorrq_u8(vandq_u8(l2, m4), vandq_u8(vshlq_n_u8(h0, 2), m30));
        u[3] = vorrq_u8(vandq_u8(l3, m4), vandq_u8(vshlq_n_u8(h1, 2), m30));
        u[4] = vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(h0, m30));
        u[5] = vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(h1, m30));
        u[6] = vorrq_u8(vshrq_n_u8(l2, 4), vandq_u8(vshrq_n_u8(h0, 2), m30));
        u[7] = vorrq_u8(vshrq_n_u8(l3, 4), vandq_u8(vshrq_n_u8(h1, 2), m30));
        int8x16_t q[8];
        for (int s = 0; s < 8; ++s) q[s] = vsubq_s8(vreinterpretq_s8_u8(u[s]), off);
        const int8_t* sc = b->scales + 8 * h;
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const int8_t* pt =
              reinterpret_cast<const int8_t*>(px + static_cast<size_t>(t) * prep_bytes +
                                              static_cast<size_t>(i) * k_q8_k_prep_bytes + 128 * h);
#pragma GCC unroll 8
          for (int s = 0; s < 8; ++s) {
            isum[t] = vmlaq_n_s32(isum[t], Dot::dot(vdupq_n_s32(0), q[s], vld1q_s8(pt + 16 * s)), sc[s]);
          }
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const uint8_t* pt =
            px + static_cast<size_t>(t) * prep_bytes + static_cast<size_t>(i) * k_q8_k_prep_bytes;
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(isum[t]), d * load_f32(pt + k_q8_k_d_offset));
      }
    }
  }
  for (int t = 0; t < T; ++t) y[(t0 + t) * n_rows_total + r0] = vaddvq_f32(acc[t]);
}

// ---- tiling ----

using TileFn = void (*)(const uint8_t*, size_t, int64_t, const uint8_t*, size_t, float*, int64_t, int64_t,
                        int64_t);

// Rows in tiles of RT (then single rows), tokens in tiles of up to 4; for batches of more than 4
// tokens the rows go in blocks of ~256 KiB of weights so that they stay in cache across token tiles.
template <template <int, int> class K, int RT>
void drive(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
           int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  static constexpr TileFn full[5] = {nullptr, K<RT, 1>::fn, K<RT, 2>::fn, K<RT, 3>::fn, K<RT, 4>::fn};
  static constexpr TileFn single[5] = {nullptr, K<1, 1>::fn, K<1, 2>::fn, K<1, 3>::fn, K<1, 4>::fn};
  const auto* wb = static_cast<const uint8_t*>(w);
  const size_t w_row_bytes = *dtype_row_bytes(wtype, static_cast<uint64_t>(n_cols));
  int64_t block_rows = static_cast<int64_t>((256 * 1024) / (w_row_bytes + 1));
  block_rows = block_rows < RT ? RT : block_rows / RT * RT;
  if (n_tokens <= 4) block_rows = row_last - row_first;
  for (int64_t rb = row_first; rb < row_last; rb += block_rows) {
    const int64_t rb_end = rb + block_rows < row_last ? rb + block_rows : row_last;
    for (int64_t t = 0; t < n_tokens; t += 4) {
      const int nt = static_cast<int>(n_tokens - t < 4 ? n_tokens - t : 4);
      int64_t r = rb;
      for (; r + RT <= rb_end; r += RT)
        full[nt](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, t);
      for (; r < rb_end; ++r) single[nt](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, t);
    }
  }
}

template <class Dot>
struct IntKernels {
  template <int R, int T>
  struct Q8_0 {
    static constexpr TileFn fn = tile_q8<Dot, DType::Q8_0, R, T>;
  };
  template <int R, int T>
  struct Q4_0 {
    static constexpr TileFn fn = tile_q8<Dot, DType::Q4_0, R, T>;
  };
  template <int R, int T>
  struct Q4_K {
    static constexpr TileFn fn = tile_k<Dot, DType::Q4_K, 1, T>;
  };
  template <int R, int T>
  struct Q6_K {
    static constexpr TileFn fn = tile_k<Dot, DType::Q6_K, 1, T>;
  };
};

// 4 rows per tile: 4 weight streams in flight for one token, 16 accumulators for 4 tokens (of 32
// vector registers).
constexpr int k_row_tile = 4;

// The integer weight types; returns false for the others.
template <class Dot>
bool rows_int(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
              int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  using K = IntKernels<Dot>;
  switch (wtype) {
    case DType::Q8_0:
      drive<K::template Q8_0, k_row_tile>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                          row_first, row_last);
      return true;
    case DType::Q4_0:
      drive<K::template Q4_0, k_row_tile>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                          row_first, row_last);
      return true;
    case DType::Q4_K:
      drive<K::template Q4_K, 1>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total, row_first,
                                 row_last);
      return true;
    case DType::Q6_K:
      drive<K::template Q6_K, 1>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total, row_first,
                                 row_last);
      return true;
    default:
      return false;
  }
}

}  // namespace
}  // namespace ll::kernels::detail::neon
