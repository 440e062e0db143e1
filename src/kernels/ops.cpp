// Scalar reference ops, shared RoPE angles, and run-time choice of the ISA table.
#include "kernels/ops.h"

#include <cmath>
#include <cstdlib>

#include "core/cpu_features.h"
#include "core/fp16.h"

namespace ll::kernels {

namespace detail {

void rope_cos_sin(int64_t n_rot, int64_t pos, float freq_base, float* cos_out, float* sin_out) {
  // As ggml's rope cache: theta starts at the position and is scaled by theta_scale per pair, in float.
  const float theta_scale = powf(freq_base, -2.0f / static_cast<float>(n_rot));
  float theta = static_cast<float>(pos);
  for (int64_t i = 0; i < n_rot / 2; ++i) {
    cos_out[i] = cosf(theta);
    sin_out[i] = sinf(theta);
    theta *= theta_scale;
  }
}

void check_rope_args(int64_t head_dim, int64_t n_rot) {
  if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim) std::abort();
}

RopeBuffer::RopeBuffer(int64_t n) {
  if (n > kRopeStackFloats) heap_ = new float[static_cast<size_t>(n)];
}
RopeBuffer::~RopeBuffer() {
  delete[] heap_;
}

void check_attention_args(int64_t n_kv_pos, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                          int64_t kv_head_first, int64_t kv_head_last) {
  if (n_kv_pos < 1 || n_head < 1 || n_head_kv < 1 || head_dim < 1 || n_head % n_head_kv != 0) std::abort();
  if (kv_head_first < 0 || kv_head_first > kv_head_last || kv_head_last > n_head_kv) std::abort();
}

}  // namespace detail

namespace ref {

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / sqrtf(mean + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * w[i];
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
          bool neox) {
  detail::check_rope_args(head_dim, n_rot);
  const int64_t half = n_rot / 2;
  detail::RopeBuffer buf(n_rot);
  float* cs = buf.data();
  float* sn = cs + half;
  detail::rope_cos_sin(n_rot, pos, freq_base, cs, sn);
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      float* a = neox ? xh + i : xh + 2 * i;
      float* b = neox ? xh + i + half : xh + 2 * i + 1;
      const float x0 = *a, x1 = *b;
      *a = x0 * cs[i] - x1 * sn[i];
      *b = x0 * sn[i] + x1 * cs[i];
    }
  }
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = expf(x[i] - mx);
    sum += static_cast<double>(x[i]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

static inline float silu1(float v) {
  return v / (1.0f + expf(-v));
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = silu1(gate[i]) * up[i];
}

void silu(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = silu1(x[i]);
}

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void add_bias(float* x, const float* bias, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += bias[i];
}

void attention_kv_heads(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
                        int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out,
                        float* scratch, int64_t kv_head_first, int64_t kv_head_last) {
  detail::check_attention_args(n_kv_pos, n_head, n_head_kv, head_dim, kv_head_first, kv_head_last);
  const int64_t group = n_head / n_head_kv;
  const int64_t row_stride = n_head_kv * head_dim;  // elements between positions in the cache
  for (int64_t h = kv_head_first * group; h < kv_head_last * group; ++h) {
    const int64_t g = h / group;
    const float* qh = q + h * head_dim;
    float* w = scratch + h * n_kv_pos;
    for (int64_t p = 0; p < n_kv_pos; ++p) {
      const uint16_t* k = k_cache + p * row_stride + g * head_dim;
      float dot = 0.0f;
      for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * fp16_to_fp32(k[d]);
      w[p] = dot * scale;
    }
    softmax(w, n_kv_pos);
    float* oh = out + h * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) oh[d] = 0.0f;
    for (int64_t p = 0; p < n_kv_pos; ++p) {
      const uint16_t* v = v_cache + p * row_stride + g * head_dim;
      const float wp = w[p];
      for (int64_t d = 0; d < head_dim; ++d) oh[d] += wp * fp16_to_fp32(v[d]);
    }
  }
}

void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out, float* scratch) {
  attention_kv_heads(q, k_cache, v_cache, n_kv_pos, n_head, n_head_kv, head_dim, scale, out, scratch, 0,
                     n_head_kv);
}

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}

}  // namespace ref

const OpsTable& ops_scalar() {
  static const OpsTable table = {
      .name = "scalar",
      .rms_norm = ref::rms_norm,
      .rope = ref::rope,
      .softmax = ref::softmax,
      .swiglu = ref::swiglu,
      .silu = ref::silu,
      .add = ref::add,
      .add_bias = ref::add_bias,
      .attention = ref::attention_kv_heads,
      .fp32_to_fp16_row = ref::fp32_to_fp16_row,
      .fp16_to_fp32_row = ref::fp16_to_fp32_row,
  };
  return table;
}

const OpsTable* ops_avx2() {
#if defined(__x86_64__)
  static const bool ok = detect_cpu_features().has_avx2();
  return ok ? &avx2::kTable : nullptr;
#else
  return nullptr;
#endif
}

const OpsTable* ops_avx512() {
#if defined(__x86_64__)
  static const bool ok = detect_cpu_features().has_avx512();
  return ok ? &avx512::kTable : nullptr;
#else
  return nullptr;
#endif
}

const OpsTable* ops_neon() {
#if defined(__aarch64__)
  static const bool ok = detect_cpu_features().has_neon();
  return ok ? &neon::kTable : nullptr;
#else
  return nullptr;
#endif
}

const OpsTable& ops_active() {
  static const OpsTable* const table = [] {
    const CpuFeatures& f = cpu_features();  // honours LL_CPU_MAX
    if (f.has_avx512() && ops_avx512() != nullptr) return ops_avx512();
    if (f.has_avx2() && ops_avx2() != nullptr) return ops_avx2();
    if (f.has_neon() && ops_neon() != nullptr) return ops_neon();
    return &ops_scalar();
  }();
  return *table;
}

size_t attention_scratch_floats(int64_t n_head, int64_t n_kv_pos) {
  return static_cast<size_t>(n_head) * static_cast<size_t>(n_kv_pos);
}

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  ops_active().rms_norm(x, w, out, n, eps);
}
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
          bool neox) {
  ops_active().rope(x, n_heads, head_dim, n_rot, pos, freq_base, neox);
}
void softmax(float* x, int64_t n) {
  ops_active().softmax(x, n);
}
void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  ops_active().swiglu(gate, up, out, n);
}
void silu(const float* x, float* out, int64_t n) {
  ops_active().silu(x, out, n);
}
void add(const float* a, const float* b, float* out, int64_t n) {
  ops_active().add(a, b, out, n);
}
void add_bias(float* x, const float* bias, int64_t n) {
  ops_active().add_bias(x, bias, n);
}
void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out, float* scratch) {
  ops_active().attention(q, k_cache, v_cache, n_kv_pos, n_head, n_head_kv, head_dim, scale, out, scratch, 0,
                         n_head_kv);
}
void attention_kv_heads(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
                        int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out,
                        float* scratch, int64_t kv_head_first, int64_t kv_head_last) {
  ops_active().attention(q, k_cache, v_cache, n_kv_pos, n_head, n_head_kv, head_dim, scale, out, scratch,
                         kv_head_first, kv_head_last);
}
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
  ops_active().fp32_to_fp16_row(x, y, n);
}
void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n) {
  ops_active().fp16_to_fp32_row(x, y, n);
}

}  // namespace ll::kernels
