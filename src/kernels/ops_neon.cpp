// AArch64 NEON versions of the row ops (Advanced SIMD is baseline ARMv8-A: no flags, but ops_neon() still
// checks HWCAP_ASIMD). Tails go through a zero-padded 4-lane buffer, so every element goes through the same
// vector code; the arithmetic mirrors the AVX2 file (same exp polynomial, same double accumulations).
#include <arm_neon.h>

#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/ops.h"

namespace ll::kernels::neon {
namespace {

constexpr int64_t kLanes = 4;

inline float32x4_t load(const float* p, int64_t n) {
  if (n >= kLanes) return vld1q_f32(p);
  float buf[kLanes] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(float));
  return vld1q_f32(buf);
}
// The tail's missing lanes read as fill.
inline float32x4_t load_fill(const float* p, int64_t n, float fill) {
  if (n >= kLanes) return vld1q_f32(p);
  float buf[kLanes] = {fill, fill, fill, fill};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(float));
  return vld1q_f32(buf);
}
inline void store(float* p, int64_t n, float32x4_t v) {
  if (n >= kLanes) {
    vst1q_f32(p, v);
  } else {
    float buf[kLanes];
    vst1q_f32(buf, v);
    std::memcpy(p, buf, static_cast<size_t>(n) * sizeof(float));
  }
}
inline float32x4_t load_f16(const uint16_t* p, int64_t n) {
  if (n >= kLanes) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
  uint16_t buf[kLanes] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(uint16_t));
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(buf)));
}

// e^x for 4 lanes: the algorithm of the AVX2/AVX-512 exp (clamp, n = round(x / ln 2), two-step reduction,
// degree-7 Taylor polynomial, scale by 2^n in two halves so that subnormal results are reached).
inline float32x4_t exp4(float32x4_t x) {
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0f)), vdupq_n_f32(89.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693145751953125f));
  r = vfmsq_f32(r, n, vdupq_n_f32(1.428606820309417232e-6f));
  float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  const int32x4_t ni = vcvtq_s32_f32(n);  // n is integral: truncation is exact
  const int32x4_t n1 = vshrq_n_s32(ni, 1);
  const int32x4_t n2 = vsubq_s32(ni, n1);
  const int32x4_t bias = vdupq_n_s32(127);
  const float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
  const float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
  return vmulq_f32(vmulq_f32(p, s1), s2);
}

inline float32x4_t silu4(float32x4_t x) {
  return vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0f), exp4(vnegq_f32(x))));
}

// Squares (or exps) summed in double, two lanes per accumulator, like the scalar reference's double sum.
inline void accumulate_pd(float32x4_t v, float64x2_t& acc_lo, float64x2_t& acc_hi) {
  acc_lo = vaddq_f64(acc_lo, vcvt_f64_f32(vget_low_f32(v)));
  acc_hi = vaddq_f64(acc_hi, vcvt_high_f64_f32(v));
}
inline double hsum_pd(float64x2_t lo, float64x2_t hi) {
  return vaddvq_f64(vaddq_f64(lo, hi));
}

void softmax_impl(float* x, int64_t n) {
  float32x4_t vmax = vdupq_n_f32(-INFINITY);
  for (int64_t i = 0; i < n; i += kLanes) vmax = vmaxq_f32(vmax, load_fill(x + i, n - i, -INFINITY));
  const float32x4_t mx = vdupq_n_f32(vmaxvq_f32(vmax));
  float64x2_t acc_lo = vdupq_n_f64(0.0), acc_hi = vdupq_n_f64(0.0);
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    float32x4_t e = exp4(vsubq_f32(load(x + i, left), mx));
    if (left < kLanes) {  // padding lanes must not add to the sum
      static const uint32_t kKeep[2 * kLanes] = {~0u, ~0u, ~0u, ~0u, 0, 0, 0, 0};
      e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), vld1q_u32(kKeep + kLanes - left)));
    }
    store(x + i, left, e);
    accumulate_pd(e, acc_lo, acc_hi);
  }
  const float32x4_t inv = vdupq_n_f32(static_cast<float>(1.0 / hsum_pd(acc_lo, acc_hi)));
  for (int64_t i = 0; i < n; i += kLanes) store(x + i, n - i, vmulq_f32(load(x + i, n - i), inv));
}

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  float64x2_t acc_lo = vdupq_n_f64(0.0), acc_hi = vdupq_n_f64(0.0);
  for (int64_t i = 0; i < n; i += kLanes) {
    const float32x4_t v = load(x + i, n - i);  // zero padding adds nothing
    accumulate_pd(vmulq_f32(v, v), acc_lo, acc_hi);
  }
  const float mean = static_cast<float>(hsum_pd(acc_lo, acc_hi) / static_cast<double>(n));
  const float32x4_t scale = vdupq_n_f32(1.0f / sqrtf(mean + eps));
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    store(out + i, left, vmulq_f32(vmulq_f32(load(x + i, left), scale), load(w + i, left)));
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
        const float32x4_t x0 = load(xh + i, left), x1 = load(xh + i + half, left);
        const float32x4_t c = load(cs + i, left), s = load(sn + i, left);
        // Products rounded separately (no FMA), as in the scalar reference.
        store(xh + i, left, vsubq_f32(vmulq_f32(x0, c), vmulq_f32(x1, s)));
        store(xh + i + half, left, vaddq_f32(vmulq_f32(x0, s), vmulq_f32(x1, c)));
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
      const int64_t left = n_rot - i;  // even: a pair never straddles the tail
      const float32x4_t v = load(xh + i, left);
      const float32x4_t sw = vrev64q_f32(v);  // (x1 x0 x3 x2)
      store(xh + i, left, vaddq_f32(vmulq_f32(v, load(c2 + i, left)), vmulq_f32(sw, load(s2 + i, left))));
    }
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    store(out + i, left, vmulq_f32(silu4(load(gate + i, left)), load(up + i, left)));
  }
}

void silu(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) store(out + i, n - i, silu4(load(x + i, n - i)));
}

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    store(out + i, left, vaddq_f32(load(a + i, left), load(b + i, left)));
  }
}

void add_bias(float* x, const float* bias, int64_t n) {
  add(x, bias, x, n);
}

// FCVTN / FCVTL: IEEE conversions, round to nearest even under the default FPCR (as core/fp16.h).
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t left = n - i;
    const uint16x4_t h = vreinterpret_u16_f16(vcvt_f16_f32(load(x + i, left)));
    if (left >= kLanes) {
      vst1_u16(y + i, h);
    } else {
      uint16_t buf[kLanes];
      vst1_u16(buf, h);
      std::memcpy(y + i, buf, static_cast<size_t>(left) * sizeof(uint16_t));
    }
  }
}

void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) store(y + i, n - i, load_f16(x + i, n - i));
}

// Attention. Scores: each position's q.k is one float32x4 accumulator over head_dim in steps of 4 (the
// tail zero-padded), reduced by vaddvq_f32 and then scaled; NP positions are done side by side for
// independent FMA chains, which does not change any position's operations. Values: out[d] = fma(w[p],
// v[p][d], out[d]) for p ascending, in register blocks of kValueChunks vectors of head dims.
template <int NP>
inline void attn_scores_tile(const float* q, const uint16_t* k, int64_t pos_stride, int64_t head_dim,
                             float scale, float* w) {
  float32x4_t acc[NP];
  for (int i = 0; i < NP; ++i) acc[i] = vdupq_n_f32(0.0f);
  for (int64_t d = 0; d < head_dim; d += kLanes) {
    const int64_t left = head_dim - d;
    const float32x4_t qv = load(q + d, left);
    for (int i = 0; i < NP; ++i) acc[i] = vfmaq_f32(acc[i], qv, load_f16(k + i * pos_stride + d, left));
  }
  for (int i = 0; i < NP; ++i) w[i] = vaddvq_f32(acc[i]) * scale;
}

constexpr int kValueChunks = 8;  // 32 head dims = 64 bytes of F16 per cache row

template <int CB>
inline void attn_values_tile(const float* w, const uint16_t* v, int64_t pos_stride, int64_t n_kv_pos,
                             float* out, int64_t last_n) {
  float32x4_t acc[CB];
  for (int c = 0; c < CB; ++c) acc[c] = vdupq_n_f32(0.0f);
  for (int64_t p = 0; p < n_kv_pos; ++p) {
    const uint16_t* vp = v + p * pos_stride;
    const float32x4_t wp = vdupq_n_f32(w[p]);
    for (int c = 0; c < CB; ++c) {
      acc[c] = vfmaq_f32(acc[c], wp, load_f16(vp + c * kLanes, c == CB - 1 ? last_n : kLanes));
    }
  }
  for (int c = 0; c < CB; ++c) store(out + c * kLanes, c == CB - 1 ? last_n : kLanes, acc[c]);
}

template <int... CB>
inline void attn_values_dispatch(int64_t cb, const float* w, const uint16_t* v, int64_t pos_stride,
                                 int64_t n_kv_pos, float* out, int64_t last_n,
                                 std::integer_sequence<int, CB...>) {
  ((cb == CB + 1 ? attn_values_tile<CB + 1>(w, v, pos_stride, n_kv_pos, out, last_n) : void()), ...);
}

void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out, float* scratch,
               int64_t kv_head_first, int64_t kv_head_last) {
  detail::check_attention_args(n_kv_pos, n_head, n_head_kv, head_dim, kv_head_first, kv_head_last);
  const int64_t group = n_head / n_head_kv;
  const int64_t pos_stride = n_head_kv * head_dim;
  for (int64_t h = kv_head_first * group; h < kv_head_last * group; ++h) {
    const int64_t g = h / group;
    const float* qh = q + h * head_dim;
    const uint16_t* k = k_cache + g * head_dim;
    float* w = scratch + h * n_kv_pos;
    int64_t p = 0;
    for (; p + 4 <= n_kv_pos; p += 4)
      attn_scores_tile<4>(qh, k + p * pos_stride, pos_stride, head_dim, scale, w + p);
    for (; p < n_kv_pos; ++p) attn_scores_tile<1>(qh, k + p * pos_stride, pos_stride, head_dim, scale, w + p);
    softmax_impl(w, n_kv_pos);
    const uint16_t* v = v_cache + g * head_dim;
    float* oh = out + h * head_dim;
    for (int64_t d0 = 0; d0 < head_dim; d0 += kValueChunks * kLanes) {
      const int64_t left = head_dim - d0;
      const int64_t n_chunks = (left + kLanes - 1) / kLanes;
      const int64_t cb = n_chunks < kValueChunks ? n_chunks : kValueChunks;
      const int64_t last_n = left - (cb - 1) * kLanes;
      attn_values_dispatch(cb, w, v + d0, pos_stride, n_kv_pos, oh + d0, last_n,
                           std::make_integer_sequence<int, kValueChunks>{});
    }
  }
}

}  // namespace

const OpsTable kTable = {
    .name = "neon",
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

}  // namespace ll::kernels::neon
