// Matrix multiplication of weight rows (any supported DType) by F32 activations: the hot loop of
// every transformer block. Weights are used as stored in GGUF (no repacking), activations are
// quantized per call to vec_dot_type(wtype) and the dot products run on the best kernel level the
// CPU has (scalar / AVX2 / AVX-512 / AVX-512 VNNI on x86-64; scalar / NEON / NEON+dotprod on
// AArch64), picked once at first use.
//
// Determinism: each output element y[t][r] is computed by exactly the same sequence of
// floating-point operations whatever n_tokens, the thread count or the row split are, so a token's
// result is bit-identical alone or in any batch (on one kernel level; levels differ in rounding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"

namespace ll::kernels {

// The type activations are converted to for a weight type: Q8_0 for Q4_0/Q8_0, Q8_K for Q4_K/Q6_K,
// F32 for F32, F16 and BF16 (half-precision weights are widened to F32 in registers; activations
// stay F32, which costs nothing in a bandwidth-bound matvec and keeps them exact).
DType vec_dot_type(DType weight_type);

// Scratch memory for quantized activations, reused across calls (grows as needed, never shrinks).
struct MatmulScratch {
  std::vector<uint8_t> buf;
};

// y[t * n_rows + r] = dot(row r of W, x[t * n_cols ...]) for r < n_rows, t < n_tokens.
// W: n_rows rows of wtype, n_cols elements each, rows contiguous (row stride dtype_row_bytes(wtype,
// n_cols); n_cols a multiple of the block size). x: F32 [n_tokens][n_cols]; y: F32 [n_tokens][n_rows].
// Splits the rows over the pool's threads.
void matmul(ThreadPool& pool, DType wtype, const void* w, int64_t n_rows, int64_t n_cols, const float* x,
            int64_t n_tokens, float* y, MatmulScratch& scratch);

// Single-threaded on rows [row_first, row_last), with x already converted to vec_dot_type(wtype):
// xq is [n_tokens] rows of xq_row_bytes each. y[t * n_rows_total + r] for r in the range.
void matmul_rows(DType wtype, const void* w, int64_t n_cols, const void* xq, size_t xq_row_bytes,
                 int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last);

// Scalar reference (same semantics: activations quantized with the reference quantizer; single
// thread, no SIMD). For tests.
void matmul_reference(DType wtype, const void* w, int64_t n_rows, int64_t n_cols, const float* x,
                      int64_t n_tokens, float* y);

// The kernel level in use: "scalar", "avx2", "avx512", "avx512vnni", "neon" or "neon_dotprod".
const char* matmul_isa();

}  // namespace ll::kernels
