// AVX2 + FMA + F16C kernels. Compiled with -mavx2 -mfma -mf16c -mbmi2; only called after CPUID
// says so (matmul.cpp).
//
// Canonical arithmetic: every (row, token) pair owns one __m256 float accumulator.
//   Q8_0/Q4_0, per two blocks: 8 int32 lanes, 4 per block, lane = exact sum of w*x over 8 values
//     (Q8_0: maddubs(|w|, sign(x, w)); Q4_0: maddubs(nibble, x) plus a per-lane bias -8*sum(x)),
//     then acc = fma(float(lanes), dw*dx, acc).
//   Q4_K/Q6_K, per super-block: int32 lanes with the sub-block scales applied in integers, then
//     fma with d*dx (Q4_K: plus an fma of the mins term with -(dmin*dx)).
//   F32/F16/BF16: acc = fma(w, x, acc) per 8 values (tail zero-filled).
// The result is hsum8(acc).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

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

// prepared pair of Q8_0 blocks a, b: [values 0-15 of a, b][values 16-31 of a, b][8 int32 bias]
// [8 float scales], matching the nibbles of two Q4_0 blocks loaded as one vector, or the two halves
// of two Q8_0 blocks
constexpr size_t k_pair_bytes = 128;
constexpr size_t k_super_bytes = 320;  // prepared Q8_K block: 256 quants, 16 int16 bsums, float d, pad

inline float hsum8(__m256 v) {
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int32_t hsum8_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Software prefetch of the weight streams (one per row of a tile), as in the AVX-512 kernels.
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

inline __m256 abs_ps(__m256 v) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers (bit-identical to quant::quantize_row_q8_0 / _q8_k).

inline __m256 round_half_away(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 up = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
  return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

void quantize_q8_0(const float* x, void* vy, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(vy);
  for (int64_t i = 0; i < n / 32; ++i) {
    __m256 v[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm256_loadu_ps(x + 32 * i + 8 * j);
    const __m256 m =
        _mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])), _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])));
    const float amax = hmax8(m);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int j = 0; j < 4; ++j) q[j] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[j], vid)));
    const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
    const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i b = _mm256_packs_epi16(p01, p23);
    const __m256i r = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs), r);
  }
}

void quantize_q8_k(const float* x, void* vy, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(vy);
  for (int64_t i = 0; i < n / 256; ++i) {
    const float* xb = x + 256 * i;
    __m256 vmax = _mm256_setzero_ps();
    for (int j = 0; j < 32; ++j) vmax = _mm256_max_ps(vmax, abs_ps(_mm256_loadu_ps(xb + 8 * j)));
    const float amax = hmax8(vmax);
    if (!(amax > 0.0f)) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    float max = 0.0f;
    const __m256 vamax = _mm256_set1_ps(amax);
    for (int j = 0; j < 32; ++j) {
      const int m = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(xb + 8 * j)), vamax, _CMP_EQ_OQ));
      if (m != 0) {
        max = xb[8 * j + __builtin_ctz(static_cast<unsigned>(m))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 vis = _mm256_set1_ps(iscale);
    const __m256i v127 = _mm256_set1_epi32(127);
    int16_t bsums[16];
    for (int j = 0; j < 16; ++j) {
      const __m256i a =
          _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 16 * j), vis)), v127);
      const __m256i b =
          _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 16 * j + 8), vis)), v127);
      bsums[j] = static_cast<int16_t>(hsum8_epi32(_mm256_add_epi32(a, b)));
      const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
      const __m128i q = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs + 16 * j), q);
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
// Prepared activations.

size_t prep_row_bytes(DType wtype, int64_t n_cols) {
  switch (vec_dot_type(wtype)) {
    case DType::Q8_0:
      return round_up64(static_cast<size_t>((n_cols / 32 + 1) / 2) * k_pair_bytes);
    case DType::Q8_K:
      return static_cast<size_t>(n_cols / 256) * k_super_bytes;
    default:
      return round_up64(static_cast<size_t>(n_cols) * 4);
  }
}

void prepare(DType wtype, int64_t n_cols, const void* xq_row, uint8_t* out) {
  const DType vt = vec_dot_type(wtype);
  if (wtype == DType::Q4_0 || wtype == DType::Q8_0) {
    const auto* xb = static_cast<const BlockQ8_0*>(xq_row);
    const int64_t nb = n_cols / 32;
    const __m256i ones8 = _mm256_set1_epi8(1);
    const __m256i ones16 = _mm256_set1_epi16(1);
    for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
      alignas(32) int8_t lo[32] = {}, hi[32] = {};
      alignas(32) float dx[8] = {};
      for (int j = 0; j < 2 && 2 * p + j < nb; ++j) {
        const BlockQ8_0& b = xb[2 * p + j];
        std::memcpy(lo + 16 * j, b.qs, 16);
        std::memcpy(hi + 16 * j, b.qs + 16, 16);
        const float d = _cvtsh_ss(b.d);
        for (int l = 0; l < 4; ++l) dx[4 * j + l] = d;
      }
      uint8_t* o = out + p * k_pair_bytes;
      const __m256i ql = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
      const __m256i qh = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
      _mm256_store_si256(reinterpret_cast<__m256i*>(o), ql);
      _mm256_store_si256(reinterpret_cast<__m256i*>(o + 32), qh);
      __m256i bias = _mm256_setzero_si256();  // Q8_0 multiplies signed values: no bias
      if (wtype == DType::Q4_0) {             // nibbles are w + 8: -8 * sum(x) over the lane's 8 values
        const __m256i sum = _mm256_madd_epi16(
            _mm256_add_epi16(_mm256_maddubs_epi16(ones8, ql), _mm256_maddubs_epi16(ones8, qh)), ones16);
        bias = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 3));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(o + 64), bias);
      _mm256_store_ps(reinterpret_cast<float*>(o + 96), _mm256_load_ps(dx));
    }
  } else if (vt == DType::Q8_K) {
    const auto* xb = static_cast<const BlockQ8_K*>(xq_row);
    for (int64_t i = 0; i < n_cols / 256; ++i) {
      uint8_t* o = out + i * k_super_bytes;
      std::memcpy(o, xb[i].qs, 256);
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
// Q8_0 / Q4_0 in steps of two blocks a, b: values 0-15 of a and b in one vector, values 16-31 in
// another; lane l = exact sum over 8 values of one block.
struct WPair {
  __m256i lo, hi;    // Q4_0: nibbles (w + 8); Q8_0: |w|
  __m256i slo, shi;  // Q8_0: w (for the signs)
  __m256 dw;         // [d(a) x 4, d(b) x 4]
};

template <DType WT>
inline WPair load_pair(const uint8_t* blocks) {
  using Block = std::conditional_t<WT == DType::Q8_0, BlockQ8_0, BlockQ4_0>;
  const auto* b = reinterpret_cast<const Block*>(blocks);
  WPair w;
  if constexpr (WT == DType::Q8_0) {
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
    const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs));
    w.slo = _mm256_permute2x128_si256(a0, a1, 0x20);
    w.shi = _mm256_permute2x128_si256(a0, a1, 0x31);
    w.lo = _mm256_abs_epi8(w.slo);
    w.hi = _mm256_abs_epi8(w.shi);
  } else {
    const __m256i z = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs)), 1);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    w.lo = _mm256_and_si256(z, m4);
    w.hi = _mm256_and_si256(_mm256_srli_epi16(z, 4), m4);
    w.slo = w.shi = w.lo;
  }
  const uint32_t dd = load_u16(&b[0].d) | (static_cast<uint32_t>(load_u16(&b[1].d)) << 16);
  const __m128 d2 = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dd)));
  w.dw = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d2), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  return w;
}

template <DType WT>
inline __m256 pair_step(const WPair& w, const uint8_t* px, __m256 acc) {
  const __m256i xl = _mm256_load_si256(reinterpret_cast<const __m256i*>(px));
  const __m256i xh = _mm256_load_si256(reinterpret_cast<const __m256i*>(px + 32));
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i lanes;
  if constexpr (WT == DType::Q8_0) {  // int16 pair sums up to 2 * 128 * 127: add as int32
    lanes =
        _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w.lo, _mm256_sign_epi8(xl, w.slo)), ones16),
                         _mm256_madd_epi16(_mm256_maddubs_epi16(w.hi, _mm256_sign_epi8(xh, w.shi)), ones16));
  } else {  // int16 pair sums <= 2 * 2 * 15 * 128: no saturation
    const __m256i bias = _mm256_load_si256(reinterpret_cast<const __m256i*>(px + 64));
    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(w.lo, xl), _mm256_maddubs_epi16(w.hi, xh));
    lanes = _mm256_add_epi32(_mm256_madd_epi16(p, ones16), bias);
  }
  const __m256 s = _mm256_mul_ps(w.dw, _mm256_load_ps(reinterpret_cast<const float*>(px + 96)));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), s, acc);
}

template <DType WT, int R, int T>
void tile_q8(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
             float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  using Block = std::conditional_t<WT == DType::Q8_0, BlockQ8_0, BlockQ4_0>;
  const int64_t nb = n_cols / 32;
  const int64_t n_full = nb / 2;
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w + static_cast<size_t>(r0 + r) * w_row_bytes;
  const uint8_t* px = prep + static_cast<size_t>(t0) * prep_bytes;
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < n_full; ++k) {
    WPair wp[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      prefetch_ahead(rows[r] + k * 2 * sizeof(Block), 2 * sizeof(Block));
      wp[r] = load_pair<WT>(rows[r] + k * 2 * sizeof(Block));
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const uint8_t* pt = px + t * prep_bytes + k * k_pair_bytes;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = pair_step<WT>(wp[r], pt, acc[r][t]);
    }
  }
  if (nb & 1) {  // the missing second block reads as zeros (scale 0)
    WPair wp[R];
    for (int r = 0; r < R; ++r) {
      Block tmp[2];
      std::memset(static_cast<void*>(tmp), 0, sizeof(tmp));
      std::memcpy(static_cast<void*>(tmp), rows[r] + n_full * 2 * sizeof(Block), sizeof(Block));
      wp[r] = load_pair<WT>(reinterpret_cast<const uint8_t*>(tmp));
    }
    for (int t = 0; t < T; ++t) {
      const uint8_t* pt = px + t * prep_bytes + n_full * k_pair_bytes;
      for (int r = 0; r < R; ++r) acc[r][t] = pair_step<WT>(wp[r], pt, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[(t0 + t) * n_rows_total + r0 + r] = hsum8(acc[r][t]);
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q6_K weights: one row at a time (the unpacked super-block does not fit 16 registers
// twice), up to 4 tokens sharing the unpacking.

template <DType WT, int R, int T>
void tile_k(const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
            float* y, int64_t n_rows_total, int64_t r0, int64_t t0) {
  static_assert(R == 1, "K-quant AVX2 tiles are one row high");
  const int64_t nb = n_cols / 256;
  const uint8_t* row = w + static_cast<size_t>(r0) * w_row_bytes;
  const uint8_t* px = prep + static_cast<size_t>(t0) * prep_bytes;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
    __m256i m16;  // Q4_K: mins (each twice, per 16 values); Q6_K: -32 * scale per 16 values
    float d, dmin = 0.0f;
    if constexpr (WT == DType::Q4_K) {
      const auto* b = reinterpret_cast<const BlockQ4_K*>(row) + i;
      prefetch_ahead(reinterpret_cast<const uint8_t*>(b), sizeof(BlockQ4_K));
      uint32_t u[3];
      std::memcpy(u, b->scales, 12);
      const uint32_t sc_lo = u[0] & 0x3f3f3f3fu;
      const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
      const uint32_t mn_lo = u[1] & 0x3f3f3f3fu;
      const uint32_t mn_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
      const __m128i scv =
          _mm_cvtsi64_si128(static_cast<long long>(sc_lo | (static_cast<uint64_t>(sc_hi) << 32)));
      __m256i sc32 = _mm256_cvtepu8_epi32(scv);
      sc32 = _mm256_or_si256(sc32, _mm256_slli_epi32(sc32, 16));  // int16 scale twice per lane
      const __m128i mnv =
          _mm_cvtsi64_si128(static_cast<long long>(mn_lo | (static_cast<uint64_t>(mn_hi) << 32)));
      m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mnv, mnv));
      d = _cvtsh_ss(load_u16(&b->d));
      dmin = _cvtsh_ss(load_u16(&b->dmin));
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs + 32 * g));
        const __m256i lo = _mm256_and_si256(v, m4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        const __m256i sl = _mm256_permutevar8x32_epi32(sc32, _mm256_set1_epi32(2 * g));
        const __m256i sh = _mm256_permutevar8x32_epi32(sc32, _mm256_set1_epi32(2 * g + 1));
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const uint8_t* pt = px + t * prep_bytes + i * k_super_bytes + 64 * g;
          const __m256i xl = _mm256_load_si256(reinterpret_cast<const __m256i*>(pt));
          const __m256i xh = _mm256_load_si256(reinterpret_cast<const __m256i*>(pt + 32));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), sl));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), sh));
        }
      }
    } else {
      const auto* b = reinterpret_cast<const BlockQ6_K*>(row) + i;
      prefetch_ahead(reinterpret_cast<const uint8_t*>(b), sizeof(BlockQ6_K));
      const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales)));
      m16 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5));
      // int16 scale twice per int32 lane: sub-blocks 0..7 and 8..15
      const __m256i s_lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(sc16));
      const __m256i s_hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(sc16, 1));
      const __m256i sd[2] = {_mm256_or_si256(s_lo, _mm256_slli_epi32(s_lo, 16)),
                             _mm256_or_si256(s_hi, _mm256_slli_epi32(s_hi, 16))};
      d = _cvtsh_ss(load_u16(&b->d));
      const __m256i m3 = _mm256_set1_epi8(0x03);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh + 32 * h));
        __m256i q[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
        q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                               _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), _mm256_set1_epi8(0x30)));
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {  // 32 values: sub-blocks 8h + 2c and 8h + 2c + 1
          const __m256i sidx =
              _mm256_setr_epi32(2 * c, 2 * c, 2 * c, 2 * c, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1);
          const __m256i sc = _mm256_permutevar8x32_epi32(sd[h], sidx);
#pragma GCC unroll 4
          for (int t = 0; t < T; ++t) {
            const uint8_t* pt = px + t * prep_bytes + i * k_super_bytes + 128 * h + 32 * c;
            const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(pt));
            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q[c], x), sc));
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const uint8_t* pt = px + t * prep_bytes + i * k_super_bytes;
      const __m256i bsums = _mm256_load_si256(reinterpret_cast<const __m256i*>(pt + 256));
      float dx;
      std::memcpy(&dx, pt + 288, 4);
      const __m256i m8 = _mm256_madd_epi16(m16, bsums);
      if constexpr (WT == DType::Q4_K) {
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[t]);
        const float mscale = -(dmin * dx);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m8), _mm256_set1_ps(mscale), acc[t]);
      } else {
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(isum[t], m8)), _mm256_set1_ps(d * dx),
                                 acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) y[(t0 + t) * n_rows_total + r0] = hsum8(acc[t]);
}

// ---------------------------------------------------------------------------------------------
// F32 / F16 / BF16 weights.

template <DType WT>
inline __m256 load_w8(const uint8_t* p) {
  if constexpr (WT == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else if constexpr (WT == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
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
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const int64_t n_full = n_cols / 8 * 8;
  for (int64_t c = 0; c < n_full; c += 8) {
    __m256 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      if (c * esize % 64 == 0) prefetch_ahead(rows[r] + c * esize, 1);
      wv[r] = load_w8<WT>(rows[r] + c * esize);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_load_ps(xs[t] + c);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (n_full < n_cols) {  // tail: weights copied into a zero-filled buffer, activations zero-padded
    __m256 wv[R];
    for (int r = 0; r < R; ++r) {
      alignas(32) uint8_t tmp[32] = {};
      std::memcpy(tmp, rows[r] + n_full * esize, static_cast<size_t>(n_cols - n_full) * esize);
      wv[r] = load_w8<WT>(tmp);
    }
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_load_ps(xs[t] + n_full);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[(t0 + t) * n_rows_total + r0 + r] = hsum8(acc[r][t]);
  }
}

// ---------------------------------------------------------------------------------------------
// Tiling.

using TileFn = void (*)(const uint8_t*, size_t, int64_t, const uint8_t*, size_t, float*, int64_t, int64_t,
                        int64_t);

template <DType WT, int R, int T>
struct TileQ8 {
  static constexpr TileFn fn = tile_q8<WT, R, T>;
};
template <DType WT, int R, int T>
struct TileK {
  static constexpr TileFn fn = tile_k<WT, 1, T>;
};
template <DType WT, int R, int T>
struct TileF {
  static constexpr TileFn fn = tile_f<WT, R, T>;
};

// RT: row tile of batches; RD: row tile of one-token calls (more weight streams in flight).
constexpr int k_decode_rows = 4;  // measured: better than 2 or 8 here
template <template <DType, int, int> class K, DType WT, int RT, int RD>
void drive(const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes, int64_t n_tokens, float* y,
           int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  static constexpr TileFn full[5] = {nullptr, K<WT, RT, 1>::fn, K<WT, RT, 2>::fn, K<WT, RT, 3>::fn,
                                     K<WT, RT, 4>::fn};
  static constexpr TileFn single[5] = {nullptr, K<WT, 1, 1>::fn, K<WT, 1, 2>::fn, K<WT, 1, 3>::fn,
                                       K<WT, 1, 4>::fn};
  const auto* wb = static_cast<const uint8_t*>(w);
  const size_t w_row_bytes = *dtype_row_bytes(WT, static_cast<uint64_t>(n_cols));
  if (n_tokens == 1) {
    int64_t r = row_first;
    for (; r + RD <= row_last; r += RD)
      K<WT, RD, 1>::fn(wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, 0);
    for (; r < row_last; ++r) single[1](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, 0);
    return;
  }
  int64_t block_rows = static_cast<int64_t>((256 * 1024) / (w_row_bytes + 1));
  block_rows = std::max<int64_t>(RT, block_rows / RT * RT);
  if (n_tokens <= 4) block_rows = row_last - row_first;
  for (int64_t rb = row_first; rb < row_last; rb += block_rows) {
    const int64_t rb_end = std::min(row_last, rb + block_rows);
    for (int64_t t = 0; t < n_tokens; t += 4) {
      const int nt = static_cast<int>(std::min<int64_t>(4, n_tokens - t));
      int64_t r = rb;
      for (; r + RT <= rb_end; r += RT)
        full[nt](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, t);
      for (; r < rb_end; ++r) single[nt](wb, w_row_bytes, n_cols, prep, prep_bytes, y, n_rows_total, r, t);
    }
  }
}

void rows(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
          int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  switch (wtype) {
    case DType::Q8_0:
      return drive<TileQ8, DType::Q8_0, 2, k_decode_rows>(w, n_cols, prep, prep_bytes, n_tokens, y,
                                                          n_rows_total, row_first, row_last);
    case DType::Q4_0:
      return drive<TileQ8, DType::Q4_0, 2, k_decode_rows>(w, n_cols, prep, prep_bytes, n_tokens, y,
                                                          n_rows_total, row_first, row_last);
    case DType::Q4_K:
      return drive<TileK, DType::Q4_K, 1, 1>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                             row_first, row_last);
    case DType::Q6_K:
      return drive<TileK, DType::Q6_K, 1, 1>(w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total,
                                             row_first, row_last);
    case DType::F32:
      return drive<TileF, DType::F32, 2, k_decode_rows>(w, n_cols, prep, prep_bytes, n_tokens, y,
                                                        n_rows_total, row_first, row_last);
    case DType::F16:
      return drive<TileF, DType::F16, 2, k_decode_rows>(w, n_cols, prep, prep_bytes, n_tokens, y,
                                                        n_rows_total, row_first, row_last);
    case DType::BF16:
      return drive<TileF, DType::BF16, 2, k_decode_rows>(w, n_cols, prep, prep_bytes, n_tokens, y,
                                                         n_rows_total, row_first, row_last);
    case DType::Q8_K:
      break;
  }
}

const IsaOps k_ops_avx2 = {quantize, prep_row_bytes, prepare, rows};

}  // namespace

const IsaOps& isa_ops_avx2() {
  return k_ops_avx2;
}

}  // namespace ll::kernels::detail
