// AVX-512 (F/BW/VL/DQ + F16C/FMA) versions of the row ops; compiled with those flags only, used after a CPUID
// check (ops_avx512()). Tails use masked loads/stores, so every element goes through the same vector code.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_* helpers (GCC bug
// 105593, fixed in 13); the warning points into the header, so silencing it there is enough.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>

#include "kernels/ops.h"

namespace ll::kernels::avx512 {
namespace {

constexpr int64_t kLanes = 16;

inline __mmask16 tail_mask(int64_t n) {
  return n >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// e^x for 16 lanes, about 1 ulp: x = n*ln2 + r (Cody-Waite with FMA), e^r by a degree-7 Taylor polynomial
// (|r| <= ln2/2, truncation ~5e-9), times 2^n applied as two powers of two so that results down in the
// subnormal range and up to overflow come out right. Inputs are clamped to [-104, 89]: below, e^x rounds
// to 0; above, the product overflows to +inf, as expf does.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606820309417232e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i ni = _mm512_cvtps_epi32(n);
  const __m512i n1 = _mm512_srai_epi32(ni, 1);
  const __m512i n2 = _mm512_sub_epi32(ni, n1);
  const __m512i bias = _mm512_set1_epi32(127);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
  return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

inline __m512 silu16(__m512 x) {
  const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// Adds the 16 floats of v (as doubles) into two double accumulators.
inline void accumulate_pd(__m512 v, __m512d& acc_lo, __m512d& acc_hi) {
  acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  acc_hi = _mm512_add_pd(acc_hi,
                         _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

inline __m512 load_f16(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

void softmax_impl(float* x, int64_t n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + i));
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512d acc_lo = _mm512_setzero_pd(), acc_hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx)));
    _mm512_mask_storeu_ps(x + i, m, e);
    accumulate_pd(e, acc_lo, acc_hi);
  }
  const double sum = _mm512_reduce_add_pd(_mm512_add_pd(acc_lo, acc_hi));
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / sum));
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  __m512d acc_lo = _mm512_setzero_pd(), acc_hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
    accumulate_pd(_mm512_mul_ps(v, v), acc_lo, acc_hi);
  }
  const double sum = _mm512_reduce_add_pd(_mm512_add_pd(acc_lo, acc_hi));
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const __m512 scale = _mm512_set1_ps(1.0f / sqrtf(mean + eps));
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(out + i, m,
                          _mm512_mul_ps(_mm512_mul_ps(v, scale), _mm512_maskz_loadu_ps(m, w + i)));
  }
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
          bool neox) {
  detail::check_rope_args(head_dim, n_rot);
  const int64_t half = n_rot / 2;
  detail::RopeBuffer buf(3 * n_rot);  // cs, sn: n_rot/2 each; c2, s2: n_rot each
  float* cs = buf.data();
  float* sn = cs + half;
  float* c2 = sn + half;
  float* s2 = c2 + n_rot;
  detail::rope_cos_sin(n_rot, pos, freq_base, cs, sn);
  if (neox) {
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + h * head_dim;
      for (int64_t i = 0; i < half; i += kLanes) {
        const __mmask16 m = tail_mask(half - i);
        const __m512 x0 = _mm512_maskz_loadu_ps(m, xh + i), x1 = _mm512_maskz_loadu_ps(m, xh + i + half);
        const __m512 c = _mm512_maskz_loadu_ps(m, cs + i), s = _mm512_maskz_loadu_ps(m, sn + i);
        _mm512_mask_storeu_ps(xh + i, m, _mm512_sub_ps(_mm512_mul_ps(x0, c), _mm512_mul_ps(x1, s)));
        _mm512_mask_storeu_ps(xh + i + half, m, _mm512_add_ps(_mm512_mul_ps(x0, s), _mm512_mul_ps(x1, c)));
      }
    }
    return;
  }
  // Interleaved pairs: out = x * (c0 c0 c1 c1 ..) + swap_pairs(x) * (-s0 s0 -s1 s1 ..).
  for (int64_t i = 0; i < half; ++i) {
    c2[2 * i] = c2[2 * i + 1] = cs[i];
    s2[2 * i] = -sn[i];
    s2[2 * i + 1] = sn[i];
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i = 0; i < n_rot; i += kLanes) {
      const __mmask16 m = tail_mask(n_rot - i);  // n_rot is even: pairs never straddle the mask
      const __m512 v = _mm512_maskz_loadu_ps(m, xh + i);
      const __m512 sw = _mm512_permute_ps(v, 0xB1);
      const __m512 r = _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, c2 + i)),
                                     _mm512_mul_ps(sw, _mm512_maskz_loadu_ps(m, s2 + i)));
      _mm512_mask_storeu_ps(xh + i, m, r);
    }
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 g = silu16(_mm512_maskz_loadu_ps(m, gate + i));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

void silu(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, silu16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
  }
}

void add_bias(float* x, const float* bias, int64_t n) {
  add(x, bias, x, n);
}

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    const __m256i h =
        _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(y + i, m, h);
  }
}

void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, load_f16(x + i, m));
  }
}

// Horizontal sums by one fixed tree: 128-bit quarters (q0+q2) + (q1+q3), then elements (e0+e2) + (e1+e3).
// reduce16 computes hsum16 of 16 vectors at once by the very same tree, so a dot product has the same bits
// whichever way it was reduced (a score depends only on q, k and head_dim, not on n_kv_pos or tiling).
inline float hsum16(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// r[o] = hsum16(v[o]), o = 0..15.
inline __m512 reduce16(const __m512* v) {
  // a: [a.q0+a.q2, a.q1+a.q3, b.q0+b.q2, b.q1+b.q3]
  auto halves = [](__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  };
  // a, b from halves(): [a.first, a.second, b.first, b.second] 128-bit partial sums.
  auto quarters = [](__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  };
  __m512 u[4];
  for (int m = 0; m < 4; ++m) u[m] = quarters(halves(v[m], v[4 + m]), halves(v[8 + m], v[12 + m]));
  // Quarter L of u[m] holds the 4-lane partial of v[4L + m]; finish inside each quarter.
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(u[0], u[1]), _mm512_unpackhi_ps(u[0], u[1]));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(u[2], u[3]), _mm512_unpackhi_ps(u[2], u[3]));
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
}

// Scores of NJ consecutive query heads (sharing one kv head) at NP consecutive positions:
// w[j*n_kv_pos + i] = scale * (q_j . k_i). Each K row chunk is converted once for the NJ heads and each q
// chunk loaded once for the NP positions. Lanes accumulate over head_dim in order.
template <int NJ, int NP>
inline void attn_scores_tile(const float* q, const uint16_t* k, int64_t pos_stride, int64_t head_dim,
                             float scale, float* w, int64_t n_kv_pos) {
  __m512 acc[NJ * NP];
  for (int o = 0; o < NJ * NP; ++o) acc[o] = _mm512_setzero_ps();
  for (int64_t d = 0; d < head_dim; d += kLanes) {
    const __mmask16 m = tail_mask(head_dim - d);
    __m512 qj[NJ];
    for (int j = 0; j < NJ; ++j) qj[j] = _mm512_maskz_loadu_ps(m, q + j * head_dim + d);
    for (int i = 0; i < NP; ++i) {
      const __m512 kv = load_f16(k + i * pos_stride + d, m);
      for (int j = 0; j < NJ; ++j) acc[j * NP + i] = _mm512_fmadd_ps(qj[j], kv, acc[j * NP + i]);
    }
  }
  if constexpr (NJ * NP == 16) {
    alignas(64) float r[16];
    _mm512_store_ps(r, _mm512_mul_ps(reduce16(acc), _mm512_set1_ps(scale)));
    for (int j = 0; j < NJ; ++j)
      for (int i = 0; i < NP; ++i) w[j * n_kv_pos + i] = r[j * NP + i];
  } else {
    for (int j = 0; j < NJ; ++j)
      for (int i = 0; i < NP; ++i) w[j * n_kv_pos + i] = hsum16(acc[j * NP + i]) * scale;
  }
}

// Both passes walk the cache in blocks of positions, kv heads inside, so K and V stream through memory in
// address order however many kv heads there are, and a block's rows are reused from L1/L2 by every tile.
constexpr int64_t kScorePosBlock = 16;
constexpr int64_t kValuePosBlock = 64;

// Prefetches n_rows rows of head_dim halves, pos_stride apart (one kv head's rows of the next block).
inline void prefetch_rows(const uint16_t* row, int64_t n_rows, int64_t pos_stride, int64_t head_dim) {
  const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(uint16_t));
  for (int64_t i = 0; i < n_rows; ++i) {
    const char* r = reinterpret_cast<const char*>(row + i * pos_stride);
    for (int64_t b = 0; b < row_bytes; b += 64) _mm_prefetch(r + b, _MM_HINT_T0);
  }
}

// Scores of heads [h, h + NJ) (kv row pointer k at position p0) for positions [p0, p0 + pn), pn <= 16.
template <int NJ>
void attn_scores_block(const float* q, const uint16_t* k, int64_t pos_stride, int64_t head_dim, float scale,
                       float* w, int64_t n_kv_pos, int64_t pn, int64_t prefetch_pn) {
  constexpr int kNp = 16 / NJ;
  // The next block's rows of this kv head, fetched while this block computes.
  if (prefetch_pn > 0) prefetch_rows(k + kScorePosBlock * pos_stride, prefetch_pn, pos_stride, head_dim);
  int64_t i = 0;
  for (; i + kNp <= pn; i += kNp) {
    attn_scores_tile<NJ, kNp>(q, k + i * pos_stride, pos_stride, head_dim, scale, w + i, n_kv_pos);
  }
  for (; i < pn; ++i)
    attn_scores_tile<NJ, 1>(q, k + i * pos_stride, pos_stride, head_dim, scale, w + i, n_kv_pos);
}

// out_j[0, 16*CB) += sum over pn positions of w_j[p] * v_p (accumulators in registers, loaded from and stored
// back to out, so the sum runs over p ascending exactly as one long loop would). last_mask masks the last
// chunk.
template <int NJ, int CB>
inline void attn_values_tile(const float* w, int64_t n_kv_pos, const uint16_t* v, int64_t pos_stride,
                             int64_t pn, float* out, int64_t head_dim, __mmask16 last_mask) {
  __m512 acc[NJ][CB];
  for (int j = 0; j < NJ; ++j)
    for (int c = 0; c < CB; ++c)
      acc[j][c] = _mm512_maskz_loadu_ps(c == CB - 1 ? last_mask : 0xFFFF, out + j * head_dim + c * kLanes);
  for (int64_t p = 0; p < pn; ++p) {
    const uint16_t* vp = v + p * pos_stride;
    __m512 vv[CB];
    for (int c = 0; c < CB; ++c) vv[c] = load_f16(vp + c * kLanes, c == CB - 1 ? last_mask : 0xFFFF);
    for (int j = 0; j < NJ; ++j) {
      const __m512 wj = _mm512_set1_ps(w[j * n_kv_pos + p]);
      for (int c = 0; c < CB; ++c) acc[j][c] = _mm512_fmadd_ps(wj, vv[c], acc[j][c]);
    }
  }
  for (int j = 0; j < NJ; ++j)
    for (int c = 0; c < CB; ++c)
      _mm512_mask_storeu_ps(out + j * head_dim + c * kLanes, c == CB - 1 ? last_mask : 0xFFFF, acc[j][c]);
}

template <int NJ>
void attn_values_block(const float* w, int64_t n_kv_pos, const uint16_t* v, int64_t pos_stride, int64_t pn,
                       float* out, int64_t head_dim, int64_t prefetch_pn) {
  if (prefetch_pn > 0) prefetch_rows(v + kValuePosBlock * pos_stride, prefetch_pn, pos_stride, head_dim);
  constexpr int64_t kMaxCb = 4;  // NJ * 4 <= 16 accumulators
  for (int64_t d0 = 0; d0 < head_dim; d0 += kMaxCb * kLanes) {
    const int64_t left = head_dim - d0;
    const int64_t n_chunks = (left + kLanes - 1) / kLanes;
    const int64_t cb = n_chunks < kMaxCb ? n_chunks : kMaxCb;
    const __mmask16 last = tail_mask(left - (cb - 1) * kLanes);
    switch (cb) {
      case 4:
        attn_values_tile<NJ, 4>(w, n_kv_pos, v + d0, pos_stride, pn, out + d0, head_dim, last);
        break;
      case 3:
        attn_values_tile<NJ, 3>(w, n_kv_pos, v + d0, pos_stride, pn, out + d0, head_dim, last);
        break;
      case 2:
        attn_values_tile<NJ, 2>(w, n_kv_pos, v + d0, pos_stride, pn, out + d0, head_dim, last);
        break;
      default:
        attn_values_tile<NJ, 1>(w, n_kv_pos, v + d0, pos_stride, pn, out + d0, head_dim, last);
        break;
    }
  }
}

void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out, float* scratch,
               int64_t kv_head_first, int64_t kv_head_last) {
  detail::check_attention_args(n_kv_pos, n_head, n_head_kv, head_dim, kv_head_first, kv_head_last);
  const int64_t group = n_head / n_head_kv;
  const int64_t h_first = kv_head_first * group, h_last = kv_head_last * group;
  const int64_t pos_stride = n_head_kv * head_dim;
  for (int64_t p0 = 0; p0 < n_kv_pos; p0 += kScorePosBlock) {
    const int64_t pn = n_kv_pos - p0 < kScorePosBlock ? n_kv_pos - p0 : kScorePosBlock;
    const int64_t next = n_kv_pos - p0 - pn;
    const int64_t prefetch_pn = next < kScorePosBlock ? next : kScorePosBlock;
    for (int64_t g = kv_head_first; g < kv_head_last; ++g) {
      const uint16_t* k = k_cache + p0 * pos_stride + g * head_dim;
      for (int64_t j0 = 0; j0 < group;) {
        const int64_t h = g * group + j0, left = group - j0;
        const float* qh = q + h * head_dim;
        float* w = scratch + h * n_kv_pos + p0;
        if (left >= 4) {
          attn_scores_block<4>(qh, k, pos_stride, head_dim, scale, w, n_kv_pos, pn,
                               j0 == 0 ? prefetch_pn : 0),
              j0 += 4;
        } else if (left >= 2) {
          attn_scores_block<2>(qh, k, pos_stride, head_dim, scale, w, n_kv_pos, pn,
                               j0 == 0 ? prefetch_pn : 0),
              j0 += 2;
        } else {
          attn_scores_block<1>(qh, k, pos_stride, head_dim, scale, w, n_kv_pos, pn,
                               j0 == 0 ? prefetch_pn : 0),
              j0 += 1;
        }
      }
    }
  }
  for (int64_t h = h_first; h < h_last; ++h) softmax_impl(scratch + h * n_kv_pos, n_kv_pos);
  for (int64_t i = h_first * head_dim; i < h_last * head_dim; ++i) out[i] = 0.0f;
  for (int64_t p0 = 0; p0 < n_kv_pos; p0 += kValuePosBlock) {
    const int64_t pn = n_kv_pos - p0 < kValuePosBlock ? n_kv_pos - p0 : kValuePosBlock;
    const int64_t next = n_kv_pos - p0 - pn;
    const int64_t prefetch_pn = next < kValuePosBlock ? next : kValuePosBlock;
    for (int64_t g = kv_head_first; g < kv_head_last; ++g) {
      const uint16_t* v = v_cache + p0 * pos_stride + g * head_dim;
      for (int64_t j0 = 0; j0 < group;) {
        const int64_t h = g * group + j0, left = group - j0;
        const float* w = scratch + h * n_kv_pos + p0;
        float* oh = out + h * head_dim;
        if (left >= 4) {
          attn_values_block<4>(w, n_kv_pos, v, pos_stride, pn, oh, head_dim, j0 == 0 ? prefetch_pn : 0),
              j0 += 4;
        } else if (left >= 2) {
          attn_values_block<2>(w, n_kv_pos, v, pos_stride, pn, oh, head_dim, j0 == 0 ? prefetch_pn : 0),
              j0 += 2;
        } else {
          attn_values_block<1>(w, n_kv_pos, v, pos_stride, pn, oh, head_dim, j0 == 0 ? prefetch_pn : 0),
              j0 += 1;
        }
      }
    }
  }
}

}  // namespace

const OpsTable kTable = {
    .name = "avx512",
    .rms_norm = rms_norm,
    .rope = rope,
    .softmax = softmax_impl,
    .swiglu = swiglu,
    .silu = silu,
    .add = add,
    .add_bias = add_bias,
    .attention = attention,
    .fp32_to_fp16_row = fp32_to_fp16_row,
    .fp16_to_fp32_row = fp16_to_fp32_row,
};

}  // namespace ll::kernels::avx512
