// Scalar reference (de)quantization of the GGUF/GGML tensor types we read and compute with.
//
// Every function here reproduces GGML's reference code bit for bit (dequantize_row_* and the
// quantize_row_*_ref family): same operation order in float32, same rounding rules. SIMD kernels in
// src/kernels are tested against these functions, so nothing here may be "optimised" in a way that
// changes a single bit of the output.
//
// Rounding rules used (they differ per type, as in GGML):
//   Q8_0: q = roundf(x / d)            -- ties away from zero
//   Q4_0: q = (int8_t)(x / d + 8.5f)   -- truncation of a biased value
//   Q8_K, Q4_K, Q6_K: nearest_int(v)   -- ties to even (the 1.5 * 2^23 trick)
// Blocks are stored little-endian with F16 scales as raw binary16 bits (see blocks.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "quant/blocks.h"

namespace ll::quant {

// Dequantize n elements (n a multiple of dtype_block_elems(t)) from src of type t into dst (F32).
// Supports F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K. src needs no alignment.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Quantize n floats (n a multiple of dtype_block_elems(t)) into dst of type t with GGML's reference
// rules. Supports F32, F16, BF16, Q8_0, Q4_0, Q8_K, Q4_K, Q6_K. dst must hold dtype_row_bytes(t, n)
// and needs no alignment. Inputs must be finite for the block types (as in GGML; F16/BF16 keep
// infinities and NaNs).
void quantize_row(DType t, const float* src, void* dst, int64_t n);

// Unpacks the 6-bit scale d and min m of sub-block j (0..7) from a Q4_K `scales` array (12 bytes):
//   j < 4 : d = q[j] & 63,                         m = q[j + 4] & 63
//   j >= 4: d = (q[j + 4] & 0xF) | (q[j - 4] >> 6) << 4,  m = (q[j + 4] >> 4) | (q[j] >> 6) << 4
void get_scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m);

// Round to nearest, ties to even, exactly like GGML's nearest_int (valid for |v| <= 4194303;
// larger magnitudes, which GGML treats as a bug, saturate to +-4194303 here).
inline int nearest_int(float v) {
  constexpr float k_limit = 4194303.f;
  if (!(v <= k_limit)) v = v != v ? 0.f : k_limit;  // also maps NaN to 0
  if (v < -k_limit) v = -k_limit;
  const float biased = v + 12582912.f;  // 1.5 * 2^23: the integer lands in the low mantissa bits
  int32_t bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  return (bits & 0x007fffff) - 0x00400000;
}

// Typed entry points (n elements; n a multiple of the block size). The DType dispatchers above call
// these; kernels may call them directly.
void dequantize_row_q4_0(const BlockQ4_0* src, float* dst, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* src, float* dst, int64_t n);
void dequantize_row_q4_k(const BlockQ4_K* src, float* dst, int64_t n);
void dequantize_row_q6_k(const BlockQ6_K* src, float* dst, int64_t n);
void dequantize_row_q8_k(const BlockQ8_K* src, float* dst, int64_t n);

void quantize_row_q4_0(const float* src, BlockQ4_0* dst, int64_t n);
void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n);
void quantize_row_q4_k(const float* src, BlockQ4_K* dst, int64_t n);
void quantize_row_q6_k(const float* src, BlockQ6_K* dst, int64_t n);
void quantize_row_q8_k(const float* src, BlockQ8_K* dst, int64_t n);

}  // namespace ll::quant
