// Per-token element-wise and row ops of a transformer forward pass: norms, RoPE, softmax, activations,
// residual adds, single-query attention over an F16 KV cache, F16 row conversion.
//
// Every op has a scalar reference (namespace ref), AVX2 / AVX-512 versions on x86-64 and a NEON version on
// AArch64, chosen once per process from CPUID / HWCAP (capped by LL_CPU_MAX=scalar|avx2|avx512; on AArch64
// only `scalar` changes the row ops, as `neon` only drops dotprod, which they do not use). Each op is a pure
// function of its inputs: its reductions run in a fixed order that depends only on the sizes, never on
// threads or batch, so a row gives the same bits however the caller batches or splits work. Different ISA
// levels may differ in the last bits (FMA, lane order).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ll::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], n elements (out may alias x). The sum of squares is
// accumulated in double (like ggml), in a fixed order; computed as (x[i] * scale) * w[i].
void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps);

// RoPE on one token's heads in place: x is F32 [n_heads][head_dim]; rotates the first n_rot dims of each
// head (the rest are untouched) at position pos. theta_i = pos * freq_base^(-2i/n_rot), computed like ggml:
// theta starts at pos and is multiplied by powf(freq_base, -2.0f/n_rot) for each pair, cosf/sinf in float.
// neox=false: pairs (2i, 2i+1) (Llama); neox=true: pairs (i, i + n_rot/2) (Qwen2/NeoX).
// Requires n_rot even, 0 < n_rot <= head_dim (aborts otherwise: the model loader validates these).
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
          bool neox);

// In place: x = exp(x - max) / sum, the sum accumulated in double in a fixed order. n >= 1.
void softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i] (SwiGLU); silu(x) = x / (1 + exp(-x)). out may alias gate or up.
void swiglu(const float* gate, const float* up, float* out, int64_t n);
void silu(const float* x, float* out, int64_t n);  // out may alias x

void add(const float* a, const float* b, float* out, int64_t n);  // out[i] = a[i] + b[i]; out may alias a/b
void add_bias(float* x, const float* bias, int64_t n);            // x[i] += bias[i]

// Attention of ONE query token against a KV cache.
//   q        F32 [n_head][head_dim]
//   k_cache  F16 bits [n_kv_pos][n_head_kv][head_dim]: row (p, h) at (p*n_head_kv + h)*head_dim
//   v_cache  the same layout
//   out      F32 [n_head][head_dim]
//   scratch  F32 [n_head][n_kv_pos] (attention_scratch_floats); holds the attention weights afterwards
// Attends to positions 0..n_kv_pos-1 (n_kv_pos >= 1; causal masking is the caller's: it passes the visible
// prefix). GQA: query head i uses kv head i / (n_head / n_head_kv). scale is usually 1/sqrt(head_dim).
// Scores: q.k in F32 from exactly converted F16 k, each with a fixed summation tree that depends only on
// head_dim; softmax as above; out = sum_p w[p] * v[p] in F32 with p ascending.
size_t attention_scratch_floats(int64_t n_head, int64_t n_kv_pos);
void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out, float* scratch);
// The same, restricted to kv heads [kv_head_first, kv_head_last) and the query heads that use them; for
// splitting one token's attention over threads (heads are independent, so the bits do not depend on the
// split). Pointers and sizes are those of the whole token, as for attention().
void attention_kv_heads(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
                        int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out,
                        float* scratch, int64_t kv_head_first, int64_t kv_head_last);

// n floats to IEEE half bits (round to nearest even, as core/fp16.h) and back (exact).
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n);
void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n);

// One implementation of every op. attention here is the kv-head-range form.
struct OpsTable {
  const char* name;  // "scalar", "avx2", "avx512", "neon"
  void (*rms_norm)(const float* x, const float* w, float* out, int64_t n, float eps);
  void (*rope)(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
               bool neox);
  void (*softmax)(float* x, int64_t n);
  void (*swiglu)(const float* gate, const float* up, float* out, int64_t n);
  void (*silu)(const float* x, float* out, int64_t n);
  void (*add)(const float* a, const float* b, float* out, int64_t n);
  void (*add_bias)(float* x, const float* bias, int64_t n);
  void (*attention)(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
                    int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out,
                    float* scratch, int64_t kv_head_first, int64_t kv_head_last);
  void (*fp32_to_fp16_row)(const float* x, uint16_t* y, int64_t n);
  void (*fp16_to_fp32_row)(const uint16_t* x, float* y, int64_t n);
};

// The tables, for tests and benchmarks. ops_avx2()/ops_avx512()/ops_neon() return nullptr when not built for
// this architecture or when this CPU lacks the instructions (regardless of LL_CPU_MAX).
const OpsTable& ops_scalar();
const OpsTable* ops_avx2();
const OpsTable* ops_avx512();
const OpsTable* ops_neon();
// The table the free functions above use: the best the CPU has, capped by LL_CPU_MAX; chosen once.
const OpsTable& ops_active();

// Scalar reference implementations (what ops_scalar() holds).
namespace ref {
void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps);
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
          bool neox);
void softmax(float* x, int64_t n);
void swiglu(const float* gate, const float* up, float* out, int64_t n);
void silu(const float* x, float* out, int64_t n);
void add(const float* a, const float* b, float* out, int64_t n);
void add_bias(float* x, const float* bias, int64_t n);
void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out, float* scratch);
void attention_kv_heads(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv_pos,
                        int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale, float* out,
                        float* scratch, int64_t kv_head_first, int64_t kv_head_last);
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n);
void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n);
}  // namespace ref

namespace detail {
// Shared by every ISA so that all paths rotate by the same angles: cos/sin of theta_i, i < n_rot/2,
// computed the ggml way (see rope). cos_out and sin_out hold n_rot/2 floats.
void rope_cos_sin(int64_t n_rot, int64_t pos, float freq_base, float* cos_out, float* sin_out);
// Aborts on a violated precondition of rope / attention (bugs, not inputs).
void check_rope_args(int64_t head_dim, int64_t n_rot);
// Working memory of rope's tables, n floats: on the stack up to kRopeStackFloats, else on the heap.
inline constexpr int64_t kRopeStackFloats = 3 * 512;
class RopeBuffer {
 public:
  explicit RopeBuffer(int64_t n);
  ~RopeBuffer();
  RopeBuffer(const RopeBuffer&) = delete;
  RopeBuffer& operator=(const RopeBuffer&) = delete;
  float* data() { return heap_ != nullptr ? heap_ : stack_; }

 private:
  alignas(64) float stack_[kRopeStackFloats];
  float* heap_ = nullptr;
};
void check_attention_args(int64_t n_kv_pos, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                          int64_t kv_head_first, int64_t kv_head_last);
}  // namespace detail

// Per-ISA tables, defined in ops_avx2.cpp / ops_avx512.cpp (x86-64 only) and ops_neon.cpp (AArch64 only).
// Use ops_avx2()/ops_avx512()/ops_neon().
namespace avx2 {
extern const OpsTable kTable;
}
namespace avx512 {
extern const OpsTable kTable;
}
namespace neon {
extern const OpsTable kTable;
}

}  // namespace ll::kernels
