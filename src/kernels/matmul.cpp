// Scalar reference kernels, the activation quantizers' reference, and run-time dispatch.
#include "kernels/matmul.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/cpu_features.h"
#include "core/fp16.h"
#include "kernels/matmul_impl.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace ll::kernels {

using quant::BlockQ4_0;
using quant::BlockQ4_K;
using quant::BlockQ6_K;
using quant::BlockQ8_0;
using quant::BlockQ8_K;

DType vec_dot_type(DType weight_type) {
  switch (weight_type) {
    case DType::Q4_0:
    case DType::Q8_0:
      return DType::Q8_0;
    case DType::Q4_K:
    case DType::Q6_K:
      return DType::Q8_K;
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      return DType::F32;
    case DType::Q8_K:
      break;
  }
  std::abort();  // Q8_K is an activation type, never a weight type
}

namespace detail {

// ---- reference quantizers: the quant library's (GGML's quantize_row_q8_0_ref / _q8_K_ref) ----

void quantize_row_q8_0_scalar(const float* x, void* y, int64_t n) {
  quant::quantize_row_q8_0(x, static_cast<BlockQ8_0*>(y), n);
}

void quantize_row_q8_k_scalar(const float* x, void* y, int64_t n) {
  quant::quantize_row_q8_k(x, static_cast<BlockQ8_K*>(y), n);
}

// ---- scalar dot products: one weight row against one prepared (= standard layout) token ----

static float dot_q8_0(const void* vw, const void* vx, int64_t n) {
  const auto* w = static_cast<const BlockQ8_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / quant::k_qk8_0; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < quant::k_qk8_0; ++j) isum += w[i].qs[j] * x[i].qs[j];
    sum += static_cast<float>(isum) * (fp16_to_fp32(w[i].d) * fp16_to_fp32(x[i].d));
  }
  return sum;
}

static float dot_q4_0(const void* vw, const void* vx, int64_t n) {
  const auto* w = static_cast<const BlockQ4_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / quant::k_qk4_0; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < quant::k_qk4_0 / 2; ++j) {
      isum += ((w[i].qs[j] & 0xF) - 8) * x[i].qs[j];
      isum += ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + 16];
    }
    sum += static_cast<float>(isum) * (fp16_to_fp32(w[i].d) * fp16_to_fp32(x[i].d));
  }
  return sum;
}

static float dot_q4_k(const void* vw, const void* vx, int64_t n) {
  const auto* w = static_cast<const BlockQ4_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / quant::k_qk_k; ++i) {
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) quant::get_scale_min_k4(j, w[i].scales, sc[j], mn[j]);
    int32_t isum = 0, imin = 0;
    for (int g = 0; g < 4; ++g) {  // 64 elements: low nibbles then high nibbles of 32 bytes
      const uint8_t* q = w[i].qs + 32 * g;
      const int8_t* xs = x[i].qs + 64 * g;
      int32_t lo = 0, hi = 0;
      for (int j = 0; j < 32; ++j) {
        lo += (q[j] & 0xF) * xs[j];
        hi += (q[j] >> 4) * xs[j + 32];
      }
      isum += sc[2 * g] * lo + sc[2 * g + 1] * hi;
    }
    for (int s = 0; s < 8; ++s) imin += mn[s] * (x[i].bsums[2 * s] + x[i].bsums[2 * s + 1]);
    const float dx = x[i].d;
    sum += (fp16_to_fp32(w[i].d) * dx) * static_cast<float>(isum);
    sum -= (fp16_to_fp32(w[i].dmin) * dx) * static_cast<float>(imin);
  }
  return sum;
}

static float dot_q6_k(const void* vw, const void* vx, int64_t n) {
  const auto* w = static_cast<const BlockQ6_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / quant::k_qk_k; ++i) {
    int32_t isum = 0;
    for (int h = 0; h < 2; ++h) {  // halves of 128: ql 64 bytes, qh 32 bytes, scales 8
      const uint8_t* ql = w[i].ql + 64 * h;
      const uint8_t* qh = w[i].qh + 32 * h;
      const int8_t* sc = w[i].scales + 8 * h;
      const int8_t* xs = x[i].qs + 128 * h;
      int32_t sub[8] = {};
      for (int l = 0; l < 32; ++l) {
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        sub[l / 16 + 0] += q1 * xs[l];
        sub[l / 16 + 2] += q2 * xs[l + 32];
        sub[l / 16 + 4] += q3 * xs[l + 64];
        sub[l / 16 + 6] += q4 * xs[l + 96];
      }
      for (int s = 0; s < 8; ++s) isum += sc[s] * sub[s];
    }
    sum += (fp16_to_fp32(w[i].d) * x[i].d) * static_cast<float>(isum);
  }
  return sum;
}

template <class Cvt>
static float dot_float(const Cvt& cvt, const float* x, int64_t n) {
  double sum = 0.0;  // the reference: accumulate exactly enough to judge the fast paths
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(cvt(i)) * static_cast<double>(x[i]);
  return static_cast<float>(sum);
}

static float dot_scalar(DType wtype, const uint8_t* wrow, const void* xrow, int64_t n) {
  switch (wtype) {
    case DType::Q8_0:
      return dot_q8_0(wrow, xrow, n);
    case DType::Q4_0:
      return dot_q4_0(wrow, xrow, n);
    case DType::Q4_K:
      return dot_q4_k(wrow, xrow, n);
    case DType::Q6_K:
      return dot_q6_k(wrow, xrow, n);
    case DType::F32:
      return dot_float(
          [&](int64_t i) {
            float v;
            std::memcpy(&v, wrow + 4 * i, 4);
            return v;
          },
          static_cast<const float*>(xrow), n);
    case DType::F16:
      return dot_float(
          [&](int64_t i) {
            uint16_t h;
            std::memcpy(&h, wrow + 2 * i, 2);
            return fp16_to_fp32(h);
          },
          static_cast<const float*>(xrow), n);
    case DType::BF16:
      return dot_float(
          [&](int64_t i) {
            uint16_t h;
            std::memcpy(&h, wrow + 2 * i, 2);
            return bf16_to_fp32(h);
          },
          static_cast<const float*>(xrow), n);
    case DType::Q8_K:
      break;
  }
  std::abort();
}

static void check_cols(DType wtype, int64_t n_cols) {
  // A caller bug, not a data error: weight rows are whole blocks (checked when a model is loaded).
  if (n_cols < 0 || n_cols % static_cast<int64_t>(dtype_block_elems(wtype)) != 0) std::abort();
}

static size_t xq_row_bytes_of(DType wtype, int64_t n_cols) {
  check_cols(wtype, n_cols);
  const DType vt = vec_dot_type(wtype);
  if (vt == DType::F32) return static_cast<size_t>(n_cols) * 4;
  return *dtype_row_bytes(vt, static_cast<uint64_t>(n_cols));
}

static void quantize_scalar(DType vt, const float* x, void* y, int64_t n) {
  if (vt == DType::Q8_0) {
    quantize_row_q8_0_scalar(x, y, n);
  } else {
    quantize_row_q8_k_scalar(x, y, n);
  }
}

static size_t prep_row_bytes_scalar(DType wtype, int64_t n_cols) {
  return round_up64(xq_row_bytes_of(wtype, n_cols));
}

static void prepare_scalar(DType wtype, int64_t n_cols, const void* xq_row, uint8_t* prep_row) {
  std::memcpy(prep_row, xq_row, xq_row_bytes_of(wtype, n_cols));
}

static void rows_scalar(DType wtype, const void* w, int64_t n_cols, const uint8_t* prep,
                        size_t prep_row_bytes, int64_t n_tokens, float* y, int64_t n_rows_total,
                        int64_t row_first, int64_t row_last) {
  const size_t w_row_bytes = *dtype_row_bytes(wtype, static_cast<uint64_t>(n_cols));
  for (int64_t r = row_first; r < row_last; ++r) {
    const uint8_t* wrow = static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * w_row_bytes;
    for (int64_t t = 0; t < n_tokens; ++t) {
      y[t * n_rows_total + r] =
          dot_scalar(wtype, wrow, prep + static_cast<size_t>(t) * prep_row_bytes, n_cols);
    }
  }
}

static const IsaOps k_scalar_ops = {quantize_scalar, prep_row_bytes_scalar, prepare_scalar, rows_scalar};

// ---- dispatch ----

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return "scalar";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    case Isa::avx512vnni:
      return "avx512vnni";
    case Isa::neon:
      return "neon";
    case Isa::neon_dotprod:
      return "neon_dotprod";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  static const CpuFeatures f = detect_cpu_features();
  switch (isa) {
    case Isa::scalar:
      return true;
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::avx2:
      return f.has_avx2();
    case Isa::avx512:
      return f.has_avx512();
    case Isa::avx512vnni:
      return f.has_avx512vnni();
#elif defined(__aarch64__)
    case Isa::neon:
      return f.has_neon();
    case Isa::neon_dotprod:
      return f.has_dotprod();
#endif
    default:
      return false;
  }
}

Isa best_isa() {
  static const Isa best = [] {
    const CpuFeatures& f = cpu_features();  // honours LL_CPU_MAX
#if defined(__x86_64__) || defined(_M_X64)
    if (f.has_avx512vnni()) return Isa::avx512vnni;
    if (f.has_avx512()) return Isa::avx512;
    if (f.has_avx2()) return Isa::avx2;
#elif defined(__aarch64__)
    if (f.has_dotprod()) return Isa::neon_dotprod;
    if (f.has_neon()) return Isa::neon;
#else
    (void)f;
#endif
    return Isa::scalar;
  }();
  return best;
}

const IsaOps& isa_ops(Isa isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::avx2:
      return isa_ops_avx2();
    case Isa::avx512:
      return isa_ops_avx512();
    case Isa::avx512vnni:
      return isa_ops_avx512vnni();
#elif defined(__aarch64__)
    case Isa::neon:
      return isa_ops_neon();
    case Isa::neon_dotprod:
      return isa_ops_neon_dotprod();
#endif
    default:
      return k_scalar_ops;
  }
}

void quantize_row_isa(Isa isa, DType vt, const float* x, void* y, int64_t n) {
  isa_ops(isa).quantize(vt, x, y, n);
}

void matmul_rows_isa(Isa isa, DType wtype, const void* w, int64_t n_cols, const void* xq, size_t xq_row_bytes,
                     int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  check_cols(wtype, n_cols);
  if (row_first >= row_last || n_tokens <= 0) return;
  const IsaOps& ops = isa_ops(isa);
  const size_t prep_bytes = ops.prep_row_bytes(wtype, n_cols);
  thread_local std::vector<uint8_t> buf;
  const size_t need = prep_bytes * static_cast<size_t>(n_tokens) + 64;
  if (buf.size() < need) buf.resize(need);
  uint8_t* prep = align64(buf.data());
  for (int64_t t = 0; t < n_tokens; ++t) {
    ops.prepare(wtype, n_cols, static_cast<const uint8_t*>(xq) + static_cast<size_t>(t) * xq_row_bytes,
                prep + static_cast<size_t>(t) * prep_bytes);
  }
  ops.rows(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows_total, row_first, row_last);
}

void matmul_isa(Isa isa, ThreadPool& pool, DType wtype, const void* w, int64_t n_rows, int64_t n_cols,
                const float* x, int64_t n_tokens, float* y, MatmulScratch& scratch) {
  if (n_rows <= 0 || n_tokens <= 0) return;
  const IsaOps& ops = isa_ops(isa);
  const DType vt = vec_dot_type(wtype);
  const size_t xq_bytes = xq_row_bytes_of(wtype, n_cols);
  const size_t prep_bytes = ops.prep_row_bytes(wtype, n_cols);
  const size_t xq_total = vt == DType::F32 ? 0 : round_up64(xq_bytes * static_cast<size_t>(n_tokens));
  const size_t need = xq_total + prep_bytes * static_cast<size_t>(n_tokens) + 64;
  if (scratch.buf.size() < need) scratch.buf.resize(need);
  uint8_t* base = align64(scratch.buf.data());
  uint8_t* xq = base;
  uint8_t* prep = base + xq_total;

  auto convert = [&](int64_t t_first, int64_t t_last) {
    for (int64_t t = t_first; t < t_last; ++t) {
      const float* xt = x + t * n_cols;
      const void* src = xt;
      if (vt != DType::F32) {
        uint8_t* dst = xq + static_cast<size_t>(t) * xq_bytes;
        ops.quantize(vt, xt, dst, n_cols);
        src = dst;
      }
      ops.prepare(wtype, n_cols, src, prep + static_cast<size_t>(t) * prep_bytes);
    }
  };
  const int nth = pool.n_threads();
  if (nth == 1 || n_tokens * n_cols < (int64_t{1} << 15)) {
    convert(0, n_tokens);
  } else {
    pool.run([&](int ith, int n) {
      int64_t first, last;
      split_range(n_tokens, ith, n, first, last);
      convert(first, last);
    });
  }

  // Rows are handed out in chunks (a multiple of every row tile) from a shared counter, so that a
  // thread slowed by another process does not hold up the others. Which thread computes a row does
  // not change its bits.
  const int64_t n_units = (n_rows + k_row_chunk - 1) / k_row_chunk;
  int64_t units_per_chunk = std::max<int64_t>(1, n_units / (static_cast<int64_t>(nth) * 8));
  if (nth == 1) units_per_chunk = n_units;
  const int64_t chunk_rows = units_per_chunk * k_row_chunk;
  const int64_t n_chunks = (n_rows + chunk_rows - 1) / chunk_rows;
  std::atomic<int64_t> next_chunk{0};
  pool.run([&](int, int) {
    for (int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
         c = next_chunk.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t r_first = c * chunk_rows;
      const int64_t r_last = std::min(n_rows, r_first + chunk_rows);
      ops.rows(wtype, w, n_cols, prep, prep_bytes, n_tokens, y, n_rows, r_first, r_last);
    }
  });
}

}  // namespace detail

void matmul(ThreadPool& pool, DType wtype, const void* w, int64_t n_rows, int64_t n_cols, const float* x,
            int64_t n_tokens, float* y, MatmulScratch& scratch) {
  detail::matmul_isa(detail::best_isa(), pool, wtype, w, n_rows, n_cols, x, n_tokens, y, scratch);
}

void matmul_rows(DType wtype, const void* w, int64_t n_cols, const void* xq, size_t xq_row_bytes,
                 int64_t n_tokens, float* y, int64_t n_rows_total, int64_t row_first, int64_t row_last) {
  detail::matmul_rows_isa(detail::best_isa(), wtype, w, n_cols, xq, xq_row_bytes, n_tokens, y, n_rows_total,
                          row_first, row_last);
}

void matmul_reference(DType wtype, const void* w, int64_t n_rows, int64_t n_cols, const float* x,
                      int64_t n_tokens, float* y) {
  const DType vt = vec_dot_type(wtype);
  const size_t xq_bytes = detail::xq_row_bytes_of(wtype, n_cols);
  std::vector<uint8_t> xq(xq_bytes * static_cast<size_t>(n_tokens) + 1);
  for (int64_t t = 0; t < n_tokens; ++t) {
    uint8_t* dst = xq.data() + static_cast<size_t>(t) * xq_bytes;
    if (vt == DType::F32) {
      std::memcpy(dst, x + t * n_cols, xq_bytes);
    } else {
      detail::quantize_scalar(vt, x + t * n_cols, dst, n_cols);
    }
  }
  // Q8_K blocks hold a float: copy rows to 4-byte aligned storage (xq_bytes is a multiple of 4).
  detail::rows_scalar(wtype, w, n_cols, xq.data(), xq_bytes, n_tokens, y, n_rows, 0, n_rows);
}

const char* matmul_isa() {
  return detail::isa_name(detail::best_isa());
}

}  // namespace ll::kernels
