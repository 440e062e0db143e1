// Internal interface between the matmul dispatcher (matmul.cpp) and its per-ISA kernels
// (matmul_avx2.cpp, matmul_avx512.cpp; on AArch64 matmul_neon.cpp, matmul_neon_dotprod.cpp). Not part of the
// public API; tests use it to run every kernel level on one machine.
//
// A call goes: F32 activations --quantize--> vec_dot_type rows (standard GGML blocks, "xq")
// --prepare--> an ISA-specific, 64-byte aligned per-token layout ("prep", e.g. quants plus per-lane
// correction terms and pre-broadcast scales) --rows--> dot products for a row range.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"

namespace ll::kernels::detail {

// x86-64 levels and AArch64 levels share one numbering; a level of the other architecture is never
// supported. neon_dotprod: NEON plus the ARMv8.2 dot-product instructions (SDOT), which only the
// integer (Q4_0, Q8_0, Q4_K, Q6_K) kernels use; its F32/F16/BF16 kernels are neon's.
enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, avx512vnni = 3, neon = 4, neon_dotprod = 5 };
constexpr int k_n_isa = 6;

const char* isa_name(Isa isa);
// Whether this machine (ignoring LL_CPU_MAX) can run the kernels of a level.
bool isa_supported(Isa isa);
// The level matmul() uses: the best supported one, lowered by LL_CPU_MAX.
Isa best_isa();

struct IsaOps {
  // F32 -> vec_dot_type rows (vt is Q8_0 or Q8_K); bit-identical to the scalar reference quantizer.
  void (*quantize)(DType vt, const float* x, void* y, int64_t n);
  // Bytes of one token's prepared activations (a multiple of 64).
  size_t (*prep_row_bytes)(DType wtype, int64_t n_cols);
  // One token: xq row (vec_dot_type(wtype) blocks, or F32) -> prepared row (64-byte aligned).
  void (*prepare)(DType wtype, int64_t n_cols, const void* xq_row, uint8_t* prep_row);
  // y[t * n_rows_total + r] for r in [row_first, row_last), t < n_tokens.
  void (*rows)(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_row_bytes,
               int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last);
};

const IsaOps& isa_ops(Isa isa);  // isa must be supported

// Rows handed to a thread are a multiple of this (the largest row tile of any kernel).
constexpr int64_t k_row_chunk = 16;

// Public operations on an explicit kernel level (tests, benchmarks).
void quantize_row_isa(Isa isa, DType vt, const float* x, void* y, int64_t n);
void matmul_rows_isa(Isa isa, DType wtype, const void* w, int64_t n_cols, const void* xq, size_t xq_row_bytes,
                     int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last);
void matmul_isa(Isa isa, ThreadPool& pool, DType wtype, const void* w, int64_t n_rows, int64_t n_cols,
                const float* x, int64_t n_tokens, float* y, MatmulScratch& scratch);

// Scalar reference pieces (matmul.cpp).
void quantize_row_q8_0_scalar(const float* x, void* y, int64_t n);
void quantize_row_q8_k_scalar(const float* x, void* y, int64_t n);

#if defined(__x86_64__) || defined(_M_X64)
const IsaOps& isa_ops_avx2();
const IsaOps& isa_ops_avx512();
const IsaOps& isa_ops_avx512vnni();
#endif
#if defined(__aarch64__)
const IsaOps& isa_ops_neon();
const IsaOps& isa_ops_neon_dotprod();
#endif

inline uint8_t* align64(uint8_t* p) {
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~static_cast<uintptr_t>(63));
}
inline size_t round_up64(size_t n) {
  return (n + 63) & ~static_cast<size_t>(63);
}

}  // namespace ll::kernels::detail
