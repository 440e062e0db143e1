// AArch64 NEON + ARMv8.2 dot product (SDOT) kernels for the integer weight types; compiled with
// -march=armv8.2-a+dotprod and only called when getauxval reports HWCAP_ASIMDDP (matmul.cpp).
// Quantizers, prepared layouts and the F32/F16/BF16 kernels are matmul_neon.cpp's (no SDOT there to
// gain), so this file holds as little code as possible that a core without dotprod must not run.
#include <arm_neon.h>

#include "kernels/matmul_impl.h"
#include "kernels/matmul_neon.h"

namespace ll::kernels::detail::neon {
namespace {

// SDOT: lane l += the 4 products of bytes 4l..4l+3. Exact (|sum| <= 4 * 128 * 128 per instruction).
struct DotProd {
  static inline int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }
};

void rows_dotprod(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep, size_t prep_bytes,
                  int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  if (rows_int<DotProd>(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total, row_first, row_last)) {
    return;
  }
  rows(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total, row_first, row_last);
}

const IsaOps k_ops_neon_dotprod = {quantize, prep_row_bytes, prepare, rows_dotprod};

}  // namespace
}  // namespace ll::kernels::detail::neon

namespace ll::kernels::detail {

const IsaOps& isa_ops_neon_dotprod() {
  return neon::k_ops_neon_dotprod;
}

}  // namespace ll::kernels::detail
