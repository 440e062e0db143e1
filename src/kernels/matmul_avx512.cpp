// AVX-512 (F, BW, VL, DQ) kernels, with and without VNNI. Compiled with -mavx512* flags; only
// called after CPUID says so (matmul.cpp). Nothing here may run on a CPU without AVX-512.
//
// Canonical arithmetic (what makes results independent of batch size and row split): every
// (row, token) pair owns one __m512 float accumulator, updated once per step in a fixed way, and
// reduced by hsum16 at the end. Tiles of R rows x T tokens only interleave independent pairs.
//   Q8_0/Q4_0 (activations Q8_0), one step = four blocks: 16 int32 lanes, 4 per block, lane = exact
//     sum of w*x over 8 values (VNNI: vpdpbusd on unsigned w + 128 or nibble w + 8, with a per-lane
//     bias -128*sum(x) or -8*sum(x) from the prepared activations; without VNNI: maddubs+madd,
//     which yields the same integers), then acc = fma(float(lanes), dw*dx, acc).
//   Q4_K/Q6_K (activations Q8_K), one step = one super-block: int32 lanes summed over the 4
//     groups of 64 with the sub-block scales applied in integers, then fma with d*dx (and for Q4_K a
//     second fma of the mins term with -(dmin*dx)).
//   F32/F16/BF16: acc = fma(w, x, acc) per 16 values (tail zero-masked).

// GCC 12 reports its own AVX-512 intrinsics (whose pass-through operand is _mm512_undefined_*) as
// reading uninitialized values once inlined; the warning is a false positive there.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "core/fp16.h"
#include "kernels/matmul_impl.h"
#include "quant/blocks.h"

namespace ll::kernels::detail {
namespace {

using quant::BlockQ4_0;
using quant::BlockQ4_K;
using quant::BlockQ6_K;
using quant::BlockQ8_0;
using quant::BlockQ8_K;

constexpr size_t k_super_bytes = 320;  // prepared Q8_K block: 256 quants, 16 int16 bsums, float d, pad

inline float hsum16(__m512 v) {
  __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

// Software prefetch of the weight streams (one per row of a tile) this far ahead. On the (shared,
// noisy) development VM it made the bandwidth-bound matvec faster in most runs; it costs a load slot.
constexpr size_t k_prefetch_bytes = 512;
inline void prefetch_ahead(const uint8_t* p, size_t step_bytes) {
  for (size_t off = 0; off < step_bytes; off += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + k_prefetch_bytes + off), _MM_HINT_T0);
  }
}

inline uint16_t load_u16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers (bit-identical to quant::quantize_row_q8_0 / _q8_k).

// roundf: round half away from zero, exactly: t = trunc(v); v - t is exact; add sign(v) if |v-t| >= .5
inline __m512 round_half_away(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
  const __mmask16 up = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(_mm512_set1_ps(1.0f)),
      _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(static_cast<int>(0x80000000u)))));
  return _mm512_mask_add_ps(t, up, t, one);
}

void quantize_q8_0(const float* x, void* vy, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(vy);
  for (int64_t i = 0; i < n / 32; ++i) {
    const __m512 a = _mm512_loadu_ps(x + 32 * i);
    const __m512 b = _mm512_loadu_ps(x + 32 * i + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i qa = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(a, vid)));
    const __m512i qb = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(b, vid)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs + 16), _mm512_cvtsepi32_epi8(qb));
  }
}

void quantize_q8_k(const float* x, void* vy, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(vy);
  for (int64_t i = 0; i < n / 256; ++i) {
    const float* xb = x + 256 * i;
    __m512 vmax = _mm512_setzero_ps();
    for (int j = 0; j < 16; ++j) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(xb + 16 * j)));
    const float amax = _mm512_reduce_max_ps(vmax);
    if (!(amax > 0.0f)) {  // all zero (the reference takes this branch only for amax == 0)
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    // The reference keeps the first value of largest magnitude (with its sign).
    float max = 0.0f;
    const __m512 vamax = _mm512_set1_ps(amax);
    for (int j = 0; j < 16; ++j) {
      const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(xb + 16 * j)), vamax, _CMP_EQ_OQ);
      if (m != 0) {
        max = xb[16 * j + __builtin_ctz(m)];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m512 vis = _mm512_set1_ps(iscale);
    int16_t bsums[16];
    for (int j = 0; j < 16; ++j) {
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * j), vis));  // ties to even
      q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs + 16 * j), _mm512_cvtsepi32_epi8(q));
      bsums[j] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
    std::memcpy(y[i].bsums, bsums, sizeof(bsums));
    y[i].d = 1 / iscale;
  }
}

void quantize(DType vt, const float* x, void* y, int64_t n) {
  if (vt == DType::Q8_0) {
    quantize_q8_0(x, y, n);
  } else {
    quantize_q8_k(x, y, n);
  }
}

// ---------------------------------------------------------------------------------------------
// Prepared activations. Q8_0/Q4_0 weights: per 4 blocks a..d [x values 0-15 of a,b,c,d][values
// 16-31 of a,b,c,d][16 x int32 bias][16 x float dx], so that the low and high nibbles of 4 Q4_0
// blocks (loaded as one vector) or the two halves of 4 Q8_0 blocks line up with them; lane l then
// covers 8 values of one block. Q8_K: per super-block [256 quants][16 x int16 bsums][float d]
// (Q4_K weights: quants in 32-value chunks 0,2,1,3,4,6,5,7, to match nibble unpacking of 64 bytes).

constexpr size_t k_quad_bytes = 256;

size_t prep_row_bytes(DType wtype, int64_t n_cols) {
  switch (wtype) {
    case DType::Q8_0:
      return static_cast<size_t>((n_cols / 32 + 3) / 4) * k_quad_bytes;
    case DType::Q4_0:
      return static_cast<size_t>((n_cols / 32 + 3) / 4) * k_quad_bytes;
    case DType::Q4_K:
    case DType::Q6_K:
      return static_cast<size_t>(n_cols / 256) * k_super_bytes;
    default:
      return round_up64(static_cast<size_t>(n_cols) * 4);
  }
}

inline __m512i sum4_epi8(__m512i q) {  // int32 lane l = sum of signed bytes 4l..4l+3
  return _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_set1_epi8(1), q), _mm512_set1_epi16(1));
}

template <bool VNNI>
void prepare(DType wtype, int64_t n_cols, const void* xq_row, uint8_t* out) {
  if (wtype == DType::Q8_0 || wtype == DType::Q4_0) {
    const auto* xb = static_cast<const BlockQ8_0*>(xq_row);
    const int64_t nb = n_cols / 32;
    for (int64_t k = 0; k < (nb + 3) / 4; ++k) {
      alignas(64) int8_t lo[64] = {}, hi[64] = {};
      alignas(64) float dx[16] = {};
      for (int j = 0; j < 4 && 4 * k + j < nb; ++j) {
        const BlockQ8_0& b = xb[4 * k + j];
        std::memcpy(lo + 16 * j, b.qs, 16);
        std::memcpy(hi + 16 * j, b.qs + 16, 16);
        const float d = _cvtsh_ss(b.d);
        for (int l = 0; l < 4; ++l) dx[4 * j + l] = d;
      }
      uint8_t* o = out + k * k_quad_bytes;
      const __m512i ql = _mm512_load_si512(lo), qh = _mm512_load_si512(hi);
      _mm512_store_si512(o, ql);
      _mm512_store_si512(o + 64, qh);
      // The unsigned operand is w + 8 (Q4_0 nibbles) or, with VNNI, w + 128 (Q8_0): the bias
      // -8 * sum(x) or -128 * sum(x) over the lane's 8 values undoes it. Non-VNNI Q8_0 multiplies
      // signed values directly and needs none.
      const int shift = wtype == DType::Q4_0 ? 3 : (VNNI ? 7 : -1);
      __m512i bias = _mm512_setzero_si512();
      if (shift >= 0) {
        const __m512i s = _mm512_add_epi32(sum4_epi8(ql), sum4_epi8(qh));
        bias = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_sll_epi32(s, _mm_cvtsi32_si128(shift)));
      }
      _mm512_store_si512(o + 128, bias);
      _mm512_store_ps(o + 192, _mm512_load_ps(dx));
    }
  } else if (wtype == DType::Q4_K || wtype == DType::Q6_K) {
    const auto* xb = static_cast<const BlockQ8_K*>(xq_row);
    static constexpr int k_order_q4_k[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int64_t i = 0; i < n_cols / 256; ++i) {
      uint8_t* o = out + i * k_super_bytes;
      for (int c = 0; c < 8; ++c) {
        const int src = wtype == DType::Q4_K ? k_order_q4_k[c] : c;
        _mm256_store_si256(reinterpret_cast<__m256i*>(o + 32 * c),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb[i].qs + 32 * src)));
      }
      std::memset(o + 256, 0, 64);
      std::memcpy(o + 256, xb[i].bsums, 32);
      std::memcpy(o + 288, &xb[i].d, 4);
    }
  } else {
    const size_t bytes = static_cast<size_t>(n_cols) * 4;
    std::memcpy(out, xq_row, bytes);
    std::memset(out + bytes, 0, round_up64(bytes) - bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// Q8_0 / Q4_0 weights. A step is 2 blocks (Q8_0) or 4 blocks (Q4_0).

template <DType WT>
struct StepInfo;
template <>
struct StepInfo<DType::Q8_0> {
  using Block = BlockQ8_0;
  static constexpr int blocks = 4;
  static constexpr size_t prep_bytes = k_quad_bytes;
  static constexpr size_t bias_off = 128, dx_off = 192;
};
template <>
struct StepInfo<DType::Q4_0> {
  using Block = BlockQ4_0;
  static constexpr int blocks = 4;
  static constexpr size_t prep_bytes = k_quad_bytes;
  static constexpr size_t bias_off = 128, dx_off = 192;
};

struct WStep {
  __m512i q0;            // values 0-15 of 4 blocks: Q8_0 w + 128 (VNNI) or |w|; Q4_0 low nibbles
  __m512i q1;            // values 16-31: Q8_0 as q0; Q4_0 high nibbles
  __mmask64 neg0, neg1;  // non-VNNI Q8_0: bytes where w < 0
  __m512 dw;             // block scales in lane layout
};

template <DType WT, bool VNNI>
inline WStep load_step(const uint8_t* blocks) {
  using Block = typename StepInfo<WT>::Block;
  const auto* b = reinterpret_cast<const Block*>(blocks);
  WStep w;
  w.neg0 = w.neg1 = 0;
  if constexpr (WT == DType::Q8_0) {
    // [a, b] and [c, d] (32 bytes each) -> values 0-15 of a..d and values 16-31 of a..d
    const __m512i ab = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)), 1);
    const __m512i cd = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[2].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[3].qs)), 1);
    const __m512i q0 = _mm512_permutex2var_epi64(ab, _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0), cd);
    const __m512i q1 = _mm512_permutex2var_epi64(ab, _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2), cd);
    if constexpr (VNNI) {
      const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
      w.q0 = _mm512_xor_si512(q0, k80);
      w.q1 = _mm512_xor_si512(q1, k80);
    } else {
      w.q0 = _mm512_abs_epi8(q0);
      w.q1 = _mm512_abs_epi8(q1);
      w.neg0 = _mm512_movepi8_mask(q0);
      w.neg1 = _mm512_movepi8_mask(q1);
    }
  } else {
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs)));
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[2].qs)), 2);
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[3].qs)), 3);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    w.q0 = _mm512_and_si512(z, m4);
    w.q1 = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
  }
  const uint64_t dd = load_u16(&b[0].d) | (static_cast<uint64_t>(load_u16(&b[1].d)) << 16) |
                      (static_cast<uint64_t>(load_u16(&b[2].d)) << 32) |
                      (static_cast<uint64_t>(load_u16(&b[3].d)) << 48);
  const __m128 d4 = _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(dd)));
  w.dw = _mm512_permutexvar_ps(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                               _mm512_castps128_ps512(d4));
  return w;
}

template <DType WT, bool VNNI>
inline __m512 step_dot(const WStep& w, const uint8_t* px, __m512 acc) {
  using SI = StepInfo<WT>;
  const __m512i bias = _mm512_load_si512(px + SI::bias_off);
  const __m512i xl = _mm512_load_si512(px), xh = _mm512_load_si512(px + 64);
  const __m512i ones16 = _mm512_set1_epi16(1);
  __m512i lanes;
  if constexpr (VNNI) {
    lanes = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(bias, w.q0, xl), w.q1, xh);
  } else if constexpr (WT == DType::Q8_0) {  // int16 pair sums up to 2 * 128 * 127: add as int32
    const __m512i sl = _mm512_mask_sub_epi8(xl, w.neg0, _mm512_setzero_si512(), xl);
    const __m512i sh = _mm512_mask_sub_epi8(xh, w.neg1, _mm512_setzero_si512(), xh);
    lanes = _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(w.q0, sl), ones16),
                             _mm512_madd_epi16(_mm512_maddubs_epi16(w.q1, sh), ones16));
  } else {  // int16 pair sums <= 2 * 2 * 15 * 128: no saturation
    const __m512i p = _mm512_add_epi16(_mm512_maddubs_epi16(w.q0, xl), _mm512_maddubs_epi16(w.q1, xh));
    lanes = _mm512_add_epi32(_mm512_madd_epi16(p, ones16), bias);
  }
  const __m512 s = _mm512_mul_ps(w.dw, _mm512_load_ps(px + SI::dx_off));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), s, acc);
}

template <DType WT, bool VNNI, int R, int T>
void tile_q8(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
             float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  using SI = StepInfo<WT>;
  using Block = typename SI::Block;
  constexpr int S = SI::blocks;
  const int64_t nb = n_cols / 32;
  const int64_t n_full = nb / S;
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w + static_cast<size_t>(r0 + r) * w_row_bytes;
  const uint8_t* px = prep + static_cast<size_t>(t0) * prep_bytes;
  __m512 acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < n_full; ++k) {
    WStep ws[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) prefetch_ahead(rows[r] + k * S * sizeof(Block), S * sizeof(Block));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) ws[r] = load_step<WT, VNNI>(rows[r] + k * S * sizeof(Block));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const uint8_t* pt = px + t * prep_bytes + k * SI::prep_bytes;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = step_dot<WT, VNNI>(ws[r], pt, acc[r][t]);
    }
  }
  if (n_full * S < nb) {  // last step: the missing blocks read as zeros (scale 0)
    WStep ws[R];
    for (int r = 0; r < R; ++r) {
      Block tmp[S];
      std::memset(static_cast<void*>(tmp), 0, sizeof(tmp));
      std::memcpy(static_cast<void*>(tmp), rows[r] + n_full * S * sizeof(Block),
                  static_cast<size_t>(nb - n_full * S) * sizeof(Block));
      ws[r] = load_step<WT, VNNI>(reinterpret_cast<const uint8_t*>(tmp));
    }
    for (int t = 0; t < T; ++t) {
      const uint8_t* pt = px + t * prep_bytes + n_full * SI::prep_bytes;
      for (int r = 0; r < R; ++r) acc[r][t] = step_dot<WT, VNNI>(ws[r], pt, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[(t0 + t) * n_rows_total + r0 + r] = hsum16(acc[r][t]);
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q6_K weights.

struct WSuper {
  __m512i q[4];   // unsigned quants of the 4 groups of 64 values
  __m512i sc[4];  // per-lane sub-block scale: VNNI int16 in the low half of each int32, else in both
  __m256i m16;    // Q4_K: mins per 16 values (int16, each min twice); Q6_K: -32 * scale per 16 values
  float d;
  float dmin;
};

template <bool VNNI>
inline __m512i scale_layout(__m512i sc32) {  // sc32: zero-extended int16 in int32 lanes
  if constexpr (VNNI) {
    return sc32;
  } else {
    return _mm512_or_si512(sc32, _mm512_slli_epi32(sc32, 16));
  }
}

template <bool VNNI>
inline void load_q4_k(const BlockQ4_K* b, WSuper& w) {
  // 64 bytes of quants = groups g, g+1: low nibbles are sub-blocks 2g, 2g+2 and high ones 2g+1, 2g+3
  // (the prepared activations are ordered to match).
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int h = 0; h < 2; ++h) {
    const __m512i v = _mm512_loadu_si512(b->qs + 64 * h);
    w.q[2 * h] = _mm512_and_si512(v, m4);
    w.q[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
  }
  uint32_t u[3];
  std::memcpy(u, b->scales, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
  const uint32_t mn_lo = u[1] & 0x3f3f3f3fu;
  const uint32_t mn_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
  const __m128i scv = _mm_cvtsi64_si128(static_cast<long long>(sc_lo | (static_cast<uint64_t>(sc_hi) << 32)));
  const __m512i sc32 = scale_layout<VNNI>(_mm512_cvtepu8_epi32(scv));
  for (int g = 0; g < 4; ++g) {
    const int a = (g / 2) * 4 + g % 2, c = a + 2;
    const __m512i idx = _mm512_set_epi32(c, c, c, c, c, c, c, c, a, a, a, a, a, a, a, a);
    w.sc[g] = _mm512_permutexvar_epi32(idx, sc32);
  }
  const __m128i mnv = _mm_cvtsi64_si128(static_cast<long long>(mn_lo | (static_cast<uint64_t>(mn_hi) << 32)));
  w.m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mnv, mnv));
  w.d = _cvtsh_ss(load_u16(&b->d));
  w.dmin = _cvtsh_ss(load_u16(&b->dmin));
}

template <bool VNNI>
inline void load_q6_k(const BlockQ6_K* b, WSuper& w) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i m30 = _mm512_set1_epi8(0x30);
  const __m512i shifts = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                          0x0002000200020002, 0, 0, 0, 0);
  for (int h = 0; h < 2; ++h) {
    const __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh + 32 * h));
    // [qh, qh >> 2]: bits 0-1 feed values 0..63 of this half, bits 4-5 values 64..127
    const __m512i qhs = _mm512_srlv_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1), shifts);
    const __m512i hi_a = _mm512_and_si512(_mm512_slli_epi16(qhs, 4), m30);
    const __m512i hi_b = _mm512_and_si512(qhs, m30);
    w.q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), hi_a);
    w.q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), hi_b);
  }
  const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales)));
  const __m512i sc32 = scale_layout<VNNI>(_mm512_cvtepu16_epi32(sc16));
  for (int g = 0; g < 4; ++g) {
    const int a = 4 * g;
    const __m512i idx = _mm512_set_epi32(a + 3, a + 3, a + 3, a + 3, a + 2, a + 2, a + 2, a + 2, a + 1, a + 1,
                                         a + 1, a + 1, a, a, a, a);
    w.sc[g] = _mm512_permutexvar_epi32(idx, sc32);
  }
  w.m16 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5));
  w.d = _cvtsh_ss(load_u16(&b->d));
  w.dmin = 0.0f;
}

template <DType WT, bool VNNI>
inline __m512 super_step(const WSuper& w, const uint8_t* px, __m512 acc) {
  __m512i isum = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int g = 0; g < 4; ++g) {
    const __m512i x = _mm512_load_si512(px + 64 * g);
    if constexpr (VNNI) {
      isum = _mm512_dpwssd_epi32(isum, _mm512_dpbusd_epi32(_mm512_setzero_si512(), w.q[g], x), w.sc[g]);
    } else {
      isum = _mm512_add_epi32(isum, _mm512_madd_epi16(_mm512_maddubs_epi16(w.q[g], x), w.sc[g]));
    }
  }
  const __m256i bsums = _mm256_load_si256(reinterpret_cast<const __m256i*>(px + 256));
  float dx;
  std::memcpy(&dx, px + 288, 4);
  const __m256i m8 = _mm256_madd_epi16(w.m16, bsums);
  if constexpr (WT == DType::Q4_K) {
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(w.d * dx), acc);
    const float mscale = -(w.dmin * dx);
    return _mm512_fmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(m8)), _mm512_set1_ps(mscale), acc);
  } else {
    isum = _mm512_add_epi32(isum, _mm512_zextsi256_si512(m8));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(w.d * dx), acc);
  }
}

template <DType WT, bool VNNI, int R, int T>
void tile_k(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
            float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  const int64_t nb = n_cols / 256;
  const uint8_t* px = prep + static_cast<size_t>(t0) * prep_bytes;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < nb; ++i) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = w + static_cast<size_t>(r0 + r) * w_row_bytes;
      WSuper ws;
      if constexpr (WT == DType::Q4_K) {
        prefetch_ahead(row + i * sizeof(BlockQ4_K), sizeof(BlockQ4_K));
        load_q4_k<VNNI>(reinterpret_cast<const BlockQ4_K*>(row) + i, ws);
      } else {
        prefetch_ahead(row + i * sizeof(BlockQ6_K), sizeof(BlockQ6_K));
        load_q6_k<VNNI>(reinterpret_cast<const BlockQ6_K*>(row) + i, ws);
      }
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        acc[r][t] = super_step<WT, VNNI>(ws, px + t * prep_bytes + i * k_super_bytes, acc[r][t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[(t0 + t) * n_rows_total + r0 + r] = hsum16(acc[r][t]);
  }
}

// ---------------------------------------------------------------------------------------------
// F32 / F16 / BF16 weights.

template <DType WT>
inline __m512 load_w16(const uint8_t* row, int64_t c) {
  if constexpr (WT == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (WT == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * c)));
  } else {
    const __m512i v =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * c)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
}

template <DType WT>
inline __m512 load_w16_masked(const uint8_t* row, int64_t c, __mmask16 m) {
  if constexpr (WT == DType::F32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + c);
  } else if constexpr (WT == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * c));
  } else {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + 2 * c));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
}

template <DType WT, int R, int T>
void tile_f(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
            float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w + static_cast<size_t>(r0 + r) * w_row_bytes;
  const float* xs[T];
  for (int t = 0; t < T; ++t)
    xs[t] = reinterpret_cast<const float*>(prep + static_cast<size_t>(t0 + t) * prep_bytes);
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  const int64_t n_full = n_cols / 16 * 16;
  for (int64_t c = 0; c < n_full; c += 16) {
    __m512 wv[R];
    constexpr size_t esize = WT == DType::F32 ? 4 : 2;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (WT == DType::F32 || c % 32 == 0) prefetch_ahead(rows[r] + c * esize, 1);
      wv[r] = load_w16<WT>(rows[r], c);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_load_ps(xs[t] + c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (n_full < n_cols) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n_cols - n_full)) - 1);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load_w16_masked<WT>(rows[r], n_full, m);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_load_ps(xs[t] + n_full);  // zero-padded
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[(t0 + t) * n_rows_total + r0 + r] = hsum16(acc[r][t]);
  }
}

// ---------------------------------------------------------------------------------------------
// Tiling: rows in blocks that stay in L2 while all token tiles pass over them.

using TileFn = void (*)(const uint8_t*, size_t, int64_t, const uint8_t*, size_t, float*, int64_t, int64_t,
                        int64_t);

// Batch tile shapes (rows x tokens), 16 accumulators each: quantized weights favour more tokens
// per unpacked weight step; float weights fewer activation loads per weight vector.
template <DType WT, bool VNNI, int R, int T>
struct TileQ8 {
  static constexpr TileFn fn = tile_q8<WT, VNNI, R, T>;
  static constexpr int rows = 2, tokens = 8;
};
template <DType WT, bool VNNI, int R, int T>
struct TileK {
  static constexpr TileFn fn = tile_k<WT, VNNI, R, T>;
  static constexpr int rows = 2, tokens = 8;
};
template <DType WT, bool VNNI, int R, int T>
struct TileF {
  static constexpr TileFn fn = tile_f<WT, R, T>;
  static constexpr int rows = 4, tokens = 4;
};

template <template <DType, bool, int, int> class K, DType WT, bool VNNI, int R, int... Ts>
constexpr std::array<TileFn, sizeof...(Ts) + 1> tile_table(std::integer_sequence<int, Ts...>) {
  return {nullptr, K<WT, VNNI, R, Ts + 1>::fn...};
}

template <template <DType, bool, int, int> class K, DType WT, bool VNNI>
void drive(const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes, int64_t n_tokens, float* y,
           int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  // Decode (one token): 8 rows at a time (8 weight streams in flight: measured better than 4 or 16).
  // Batches: tiles of k_rt rows x k_tt tokens.
  static constexpr int k_rd = 8, k_rt = K<WT, VNNI, 1, 1>::rows, k_tt = K<WT, VNNI, 1, 1>::tokens;
  static constexpr auto full = tile_table<K, WT, VNNI, k_rt>(std::make_integer_sequence<int, k_tt>{});
  static constexpr auto single = tile_table<K, WT, VNNI, 1>(std::make_integer_sequence<int, k_tt>{});
  const auto* wb = static_cast<const uint8_t*>(w);
  const size_t w_row_bytes = *dtype_row_bytes(WT, static_cast<uint64_t>(n_cols));
  if (n_tokens == 1) {
    int64_t r = row_first;
    for (; r + k_rd <= row_last; r += k_rd) {
      K<WT, VNNI, k_rd, 1>::fn(wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, 0);
    }
    for (; r < row_last; ++r) single[1](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, 0);
    return;
  }
  // Keep a row block's weights (<= ~256 KiB) in L2 while every token tile uses them.
  int64_t block_rows = static_cast<int64_t>((256 * 1024) / (w_row_bytes + 1));
  block_rows = std::max<int64_t>(k_rt, block_rows / k_rt * k_rt);
  if (n_tokens <= k_tt) block_rows = row_last - row_first;
  for (int64_t rb = row_first; rb < row_last; rb += block_rows) {
    const int64_t rb_end = std::min(row_last, rb + block_rows);
    for (int64_t t = 0; t < n_tokens; t += k_tt) {
      const int nt = static_cast<int>(std::min<int64_t>(k_tt, n_tokens - t));
      int64_t r = rb;
      for (; r + k_rt <= rb_end; r += k_rt)
        full[nt](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, t);
      for (; r < rb_end; ++r) single[nt](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, t);
    }
  }
}

template <bool VNNI>
void rows(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
          int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  switch (wtype) {
    case DType::Q8_0:
      return drive<TileQ8, DType::Q8_0, VNNI>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                              row_first, row_last);
    case DType::Q4_0:
      return drive<TileQ8, DType::Q4_0, VNNI>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                              row_first, row_last);
    case DType::Q4_K:
      return drive<TileK, DType::Q4_K, VNNI>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                             row_first, row_last);
    case DType::Q6_K:
      return drive<TileK, DType::Q6_K, VNNI>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                             row_first, row_last);
    case DType::F32:
      return drive<TileF, DType::F32, false>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                             row_first, row_last);
    case DType::F16:
      return drive<TileF, DType::F16, false>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                             row_first, row_last);
    case DType::BF16:
      return drive<TileF, DType::BF16, false>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                              row_first, row_last);
    case DType::Q8_K:
      break;
  }
}

const IsaOps k_ops_avx512 = {quantize, prep_row_bytes, prepare<false>, rows<false>};
const IsaOps k_ops_avx512vnni = {quantize, prep_row_bytes, prepare<true>, rows<true>};

}  // namespace

const IsaOps& isa_ops_avx512() {
  return k_ops_avx512;
}
const IsaOps& isa_ops_avx512vnni() {
  return k_ops_avx512vnni;
}

}  // namespace ll::kernels::detail
