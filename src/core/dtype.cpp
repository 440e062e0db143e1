#include "core/dtype.h"

#include <cctype>
#include <limits>
#include <string>

namespace ll {

size_t dtype_block_elems(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: return 1;
    case DType::Q4_0: case DType::Q8_0: return 32;
    case DType::Q4_K: case DType::Q6_K: case DType::Q8_K: return 256;
  }
  return 1;
}

size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::Q4_0: return 18;
    case DType::Q8_0: return 34;
    case DType::Q4_K: return 144;
    case DType::Q6_K: return 210;
    case DType::Q8_K: return 292;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q4_0: return "Q4_0";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_K: return "Q4_K";
    case DType::Q6_K: return "Q6_K";
    case DType::Q8_K: return "Q8_K";
  }
  return "?";
}

std::optional<DType> dtype_from_id(uint32_t id) {
  switch (id) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 2: return DType::Q4_0;
    case 8: return DType::Q8_0;
    case 12: return DType::Q4_K;
    case 14: return DType::Q6_K;
    case 30: return DType::BF16;
    default: return std::nullopt;  // Q8_K is never a stored type for us
  }
}

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string s(name);
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    if (dtype_name(t) == s) return t;
  }
  return std::nullopt;
}

std::string_view ggml_type_id_name(uint32_t id) {
  static constexpr std::string_view names[] = {
      "F32",  "F16",  "Q4_0", "Q4_1", "Q4_2(removed)", "Q4_3(removed)", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
      "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
      "BF16", "Q4_0_4_4(removed)", "Q4_0_4_8(removed)", "Q4_0_8_8(removed)", "TQ1_0", "TQ2_0"};
  if (id < sizeof(names) / sizeof(names[0])) return names[id];
  return "unknown";
}

std::optional<size_t> dtype_row_bytes(DType t, uint64_t n) {
  const uint64_t be = dtype_block_elems(t);
  if (n % be != 0) return std::nullopt;
  const uint64_t blocks = n / be;
  const uint64_t bb = dtype_block_bytes(t);
  if (blocks > std::numeric_limits<uint64_t>::max() / bb) return std::nullopt;
  const uint64_t bytes = blocks * bb;
  if (bytes > std::numeric_limits<size_t>::max()) return std::nullopt;
  return static_cast<size_t>(bytes);
}

}  // namespace ll
