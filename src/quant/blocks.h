// Quantized block layouts, exactly as GGUF/GGML store them (little-endian, no padding).
// Half-precision fields are raw IEEE binary16 bits (see core/fp16.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ll::quant {

constexpr int k_qk4_0 = 32;
constexpr int k_qk8_0 = 32;
constexpr int k_qk_k = 256;       // super-block size of the K-quants
constexpr int k_k_scale_size = 12;

// Q4_0: x[j] = (nibble - 8) * d; qs[j] low nibble is element j, high nibble element j + 16.
struct BlockQ4_0 {
  uint16_t d;                  // F16 scale
  uint8_t qs[k_qk4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes");

// Q8_0: x[j] = qs[j] * d.
struct BlockQ8_0 {
  uint16_t d;                  // F16 scale
  int8_t qs[k_qk8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");

// Q4_K: 8 sub-blocks of 32; per sub-block a 6-bit scale and 6-bit min packed in `scales`;
// x = d * scale * nibble - dmin * min.
struct BlockQ4_K {
  uint16_t d;                  // F16 super-block scale for the scales
  uint16_t dmin;               // F16 super-block scale for the mins
  uint8_t scales[k_k_scale_size];
  uint8_t qs[k_qk_k / 2];      // 4-bit quants
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block is 144 bytes");

// Q6_K: 16 sub-blocks of 16; x = d * scales[i] * (q6 - 32), q6 = 4 low bits in ql, 2 high in qh.
struct BlockQ6_K {
  uint8_t ql[k_qk_k / 2];      // lower 4 bits
  uint8_t qh[k_qk_k / 4];      // upper 2 bits
  int8_t scales[k_qk_k / 16];  // 8-bit sub-block scales
  uint16_t d;                  // F16 super-block scale
};
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block is 210 bytes");

// Q8_K: activations for K-quant dot products; bsums are sums of each group of 16 quants.
struct BlockQ8_K {
  float d;
  int8_t qs[k_qk_k];
  int16_t bsums[k_qk_k / 16];
};
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block is 292 bytes");

}  // namespace ll::quant
