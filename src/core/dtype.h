// Tensor element types. Numeric values are GGML's type ids, as stored in GGUF files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ll {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q8_0 = 8,
  Q4_K = 12,
  Q6_K = 14,
  Q8_K = 15,  // activations only (K-quant dot products); never stored in model files we read
  BF16 = 30,
};

// Elements per block (1 for plain float types).
size_t dtype_block_elems(DType t);
// Bytes per block.
size_t dtype_block_bytes(DType t);
std::string_view dtype_name(DType t);
// Parse a GGML type id from a file; nullopt for ids we do not support.
std::optional<DType> dtype_from_id(uint32_t id);
// Parse a name such as "q8_0" or "Q4_K" (case-insensitive).
std::optional<DType> dtype_from_name(std::string_view name);
// Name of any GGML type id (also ones we do not support), for error messages.
std::string_view ggml_type_id_name(uint32_t id);

// Bytes of a row of n elements; nullopt if n is not a multiple of the block size or it overflows.
std::optional<size_t> dtype_row_bytes(DType t, uint64_t n);

}  // namespace ll
