// AVX2 + FMA + F16C versions of the row ops; compiled with those flags only, used after a CPUID check
// (ops_avx2()). F32 tails use vmaskmov loads/stores; F16 tails go through a zero-padded 8-element buffer, so
// every element goes through the same vector code.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/ops.h"

namespace ll::kernels::avx2 {
namespace {

constexpr int64_t kLanes = 8;

alignas(32) constexpr int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Lanes [0, min(n, 8)) set.
inline __m256i tail_mask(int64_t n) {
  const int64_t k = n >= kLanes ? kLanes : n;
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + kLanes - k));
}
inline __m256 load(const float* p, int64_t n) {
  return n >= kLanes ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask(n));
}
inline void store(float* p, int64_t n, __m256 v) {
  if (n >= kLanes) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, tail_mask(n), v);
  }
}
inline __m256 load_f16(const uint16_t* p, int64_t n) {
  if (n >= kLanes) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  alignas(16) uint16_t buf[kLanes] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(uint16_t));
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(buf)));
}

// Fixed-order horizontal sums.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline double hsum_pd(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// e^x for 8 lanes; the same algorithm as the AVX-512 exp16 (see there).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606820309417232e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

inline __m256 silu8(__m256 x) {
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

inline void accumulate_pd(__m256 v, __m256d& acc_lo, __m256d& acc_hi) {
  acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

void softmax_impl(float* x, int64_t n) {
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  __m256 vmax = neg_inf;
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    const __m256 v = left >= kLanes
                         ? _mm256_loadu_ps(x + i)
                         : _mm256_blendv_ps(neg_inf, load(x + i, left), _mm256_castsi256_ps(tail_mask(left)));
    vmax = _mm256_max_ps(vmax, v);
  }
  const __m256 mx = _mm256_set1_ps(hmax(vmax));
  __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    __m256 e = exp8(_mm256_sub_ps(load(x + i, left), mx));
    if (left < kLanes) e = _mm256_and_ps(e, _mm256_castsi256_ps(tail_mask(left)));
    store(x + i, left, e);
    accumulate_pd(e, acc_lo, acc_hi);
  }
  const double sum = hsum_pd(_mm256_add_pd(acc_lo, acc_hi));
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
  for (int64_t i = 0; i < n; i += kLanes) store(x + i, n - i, _mm256_mul_ps(load(x + i, n - i), inv));
}

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __m256 v = load(x + i, n - i);
    accumulate_pd(_mm256_mul_ps(v, v), acc_lo, acc_hi);
  }
  const double sum = hsum_pd(_mm256_add_pd(acc_lo, acc_hi));
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const __m256 scale = _mm256_set1_ps(1.0f / sqrtf(mean + eps));
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    store(out + i, left, _mm256_mul_ps(_mm256_mul_ps(load(x + i, left), scale), load(w + i, left)));
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
        const int64_t left = half - i;
        const __m256 x0 = load(xh + i, left), x1 = load(xh + i + half, left);
        const __m256 c = load(cs + i, left), s = load(sn + i, left);
        store(xh + i, left, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
        store(xh + i + half, left, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
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
      const int64_t left = n_rot - i;  // even: pairs never straddle the mask
      const __m256 v = load(xh + i, left);
      const __m256 sw = _mm256_permute_ps(v, 0xB1);
      store(xh + i, left,
            _mm256_add_ps(_mm256_mul_ps(v, load(c2 + i, left)), _mm256_mul_ps(sw, load(s2 + i, left))));
    }
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    store(out + i, left, _mm256_mul_ps(silu8(load(gate + i, left)), load(up + i, left)));
  }
}

void silu(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) store(out + i, n - i, silu8(load(x + i, n - i)));
}

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    store(out + i, left, _mm256_add_ps(load(a + i, left), load(b + i, left)));
  }
}

void add_bias(float* x, const float* bias, int64_t n) {
  add(x, bias, x, n);
}

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    const __m128i h = _mm256_cvtps_ph(load(x + i, left), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (left >= kLanes) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
    } else {
      alignas(16) uint16_t buf[kLanes];
      _mm_store_si128(reinterpret_cast<__m128i*>(buf), h);
      std::memcpy(y + i, buf, static_cast<size_t>(left) * sizeof(uint16_t));
    }
  }
}

void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) store(y + i, n - i, load_f16(x + i, n - i));
}

// r[o] = hsum(v[o]), o = 0..7, by hsum's tree: halves (lo + hi), then elements (e0+e2) + (e1+e3); so a
// dot product has the same bits whichever way it is reduced.
inline __m256 reduce8(const __m256* v) {
  // [a.lo + a.hi, b.lo + b.hi]
  auto halves = [](__m256 a, __m256 b) {
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  };
  __m256 u[4];
  for (int m = 0; m < 4; ++m) u[m] = halves(v[m], v[4 + m]);
  // Half L of u[m] holds the 4-lane partial of v[4L + m]; finish inside each half.
  const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(u[0], u[1]), _mm256_unpackhi_ps(u[0], u[1]));
  const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(u[2], u[3]), _mm256_unpackhi_ps(u[2], u[3]));
  return _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
}

// The attention follows the AVX-512 version (see there for the layout of the passes), with 8 lanes:
// score tiles of NJ heads x NP positions with NJ * NP = 8, value tiles of NJ <= 4 heads x 2 chunks.
template <int NJ, int NP>
inline void attn_scores_tile(const float* q, const uint16_t* k, int64_t pos_stride, int64_t head_dim,
                             float scale, float* w, int64_t n_kv_pos) {
  __m256 acc[NJ * NP];
  for (int o = 0; o < NJ * NP; ++o) acc[o] = _mm256_setzero_ps();
  for (int64_t d = 0; d < head_dim; d += kLanes) {
    const int64_t left = head_dim - d;
    __m256 qj[NJ];
    for (int j = 0; j < NJ; ++j) qj[j] = load(q + j * head_dim + d, left);
    for (int i = 0; i < NP; ++i) {
      const __m256 kv = load_f16(k + i * pos_stride + d, left);
      for (int j = 0; j < NJ; ++j) acc[j * NP + i] = _mm256_fmadd_ps(qj[j], kv, acc[j * NP + i]);
    }
  }
  if constexpr (NJ * NP == 8) {
    alignas(32) float r[8];
    _mm256_store_ps(r, _mm256_mul_ps(reduce8(acc), _mm256_set1_ps(scale)));
    for (int j = 0; j < NJ; ++j)
      for (int i = 0; i < NP; ++i) w[j * n_kv_pos + i] = r[j * NP + i];
  } else {
    for (int j = 0; j < NJ; ++j)
      for (int i = 0; i < NP; ++i) w[j * n_kv_pos + i] = hsum(acc[j * NP + i]) * scale;
  }
}

constexpr int64_t kScorePosBlock = 16;
constexpr int64_t kValuePosBlock = 64;

inline void prefetch_rows(const uint16_t* row, int64_t n_rows, int64_t pos_stride, int64_t head_dim) {
  const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(uint16_t));
  for (int64_t i = 0; i < n_rows; ++i) {
    const char* r = reinterpret_cast<const char*>(row + i * pos_stride);
    for (int64_t b = 0; b < row_bytes; b += 64) _mm_prefetch(r + b, _MM_HINT_T0);
  }
}

template <int NJ>
void attn_scores_block(const float* q, const uint16_t* k, int64_t pos_stride, int64_t head_dim, float scale,
                       float* w, int64_t n_kv_pos, int64_t pn, int64_t prefetch_pn) {
  constexpr int kNp = 8 / NJ;
  if (prefetch_pn > 0) prefetch_rows(k + kScorePosBlock * pos_stride, prefetch_pn, pos_stride, head_dim);
  int64_t i = 0;
  for (; i + kNp <= pn; i += kNp) {
    attn_scores_tile<NJ, kNp>(q, k + i * pos_stride, pos_stride, head_dim, scale, w + i, n_kv_pos);
  }
  for (; i < pn; ++i)
    attn_scores_tile<NJ, 1>(q, k + i * pos_stride, pos_stride, head_dim, scale, w + i, n_kv_pos);
}

template <int NJ, int CB>
inline void attn_values_tile(const float* w, int64_t n_kv_pos, const uint16_t* v, int64_t pos_stride,
                             int64_t pn, float* out, int64_t head_dim, int64_t last_n) {
  __m256 acc[NJ][CB];
  for (int j = 0; j < NJ; ++j)
    for (int c = 0; c < CB; ++c)
      acc[j][c] = load(out + j * head_dim + c * kLanes, c == CB - 1 ? last_n : kLanes);
  for (int64_t p = 0; p < pn; ++p) {
    const uint16_t* vp = v + p * pos_stride;
    __m256 vv[CB];
    for (int c = 0; c < CB; ++c) vv[c] = load_f16(vp + c * kLanes, c == CB - 1 ? last_n : kLanes);
    for (int j = 0; j < NJ; ++j) {
      const __m256 wj = _mm256_broadcast_ss(w + j * n_kv_pos + p);
      for (int c = 0; c < CB; ++c) acc[j][c] = _mm256_fmadd_ps(wj, vv[c], acc[j][c]);
    }
  }
  for (int j = 0; j < NJ; ++j)
    for (int c = 0; c < CB; ++c)
      store(out + j * head_dim + c * kLanes, c == CB - 1 ? last_n : kLanes, acc[j][c]);
}

template <int NJ>
void attn_values_block(const float* w, int64_t n_kv_pos, const uint16_t* v, int64_t pos_stride, int64_t pn,
                       float* out, int64_t head_dim, int64_t prefetch_pn) {
  constexpr int64_t kMaxCb = 2;  // NJ * 2 <= 8 accumulators of the 16 registers
  if (prefetch_pn > 0) prefetch_rows(v + kValuePosBlock * pos_stride, prefetch_pn, pos_stride, head_dim);
  for (int64_t d0 = 0; d0 < head_dim; d0 += kMaxCb * kLanes) {
    const int64_t left = head_dim - d0;
    const int64_t n_chunks = (left + kLanes - 1) / kLanes;
    const int64_t cb = n_chunks < kMaxCb ? n_chunks : kMaxCb;
    const int64_t last_n = left - (cb - 1) * kLanes;
    if (cb == 2) {
      attn_values_tile<NJ, 2>(w, n_kv_pos, v + d0, pos_stride, pn, out + d0, head_dim, last_n);
    } else {
      attn_values_tile<NJ, 1>(w, n_kv_pos, v + d0, pos_stride, pn, out + d0, head_dim, last_n);
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
        const int64_t pf = j0 == 0 ? prefetch_pn : 0;
        if (left >= 4) {
          attn_scores_block<4>(qh, k, pos_stride, head_dim, scale, w, n_kv_pos, pn, pf), j0 += 4;
        } else if (left >= 2) {
          attn_scores_block<2>(qh, k, pos_stride, head_dim, scale, w, n_kv_pos, pn, pf), j0 += 2;
        } else {
          attn_scores_block<1>(qh, k, pos_stride, head_dim, scale, w, n_kv_pos, pn, pf), j0 += 1;
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
        const int64_t pf = j0 == 0 ? prefetch_pn : 0;
        if (left >= 4) {
          attn_values_block<4>(w, n_kv_pos, v, pos_stride, pn, oh, head_dim, pf), j0 += 4;
        } else if (left >= 2) {
          attn_values_block<2>(w, n_kv_pos, v, pos_stride, pn, oh, head_dim, pf), j0 += 2;
        } else {
          attn_values_block<1>(w, n_kv_pos, v, pos_stride, pn, oh, head_dim, pf), j0 += 1;
        }
      }
    }
  }
}

}  // namespace

const OpsTable kTable = {
    .name = "avx2",
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

}  // namespace ll::kernels::avx2
