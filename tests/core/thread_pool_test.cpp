#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "core/dtype.h"
#include "core/fp16.h"

namespace ll {

TEST(ThreadPool, RunsEveryThreadOncePerCall) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.run([&](int ith, int nth) {
        EXPECT_EQ(nth, n);
        hits[ith].fetch_add(1);
      });
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "thread " << i << " rep " << rep;
    }
  }
}

TEST(ThreadPool, SplitRangeCoversExactlyOnce) {
  for (int64_t n : {0, 1, 7, 64, 1000}) {
    for (int nth : {1, 2, 3, 8}) {
      int64_t expect_first = 0;
      for (int i = 0; i < nth; ++i) {
        int64_t f, l;
        split_range(n, i, nth, f, l);
        EXPECT_EQ(f, expect_first);
        EXPECT_LE(f, l);
        expect_first = l;
      }
      EXPECT_EQ(expect_first, n);
    }
  }
}

TEST(Fp16, RoundTripsAllHalfValues) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (f != f) continue;  // NaN payloads need not round-trip
    EXPECT_EQ(fp32_to_fp16(f), h) << h;
  }
  EXPECT_EQ(fp16_to_fp32(0x3c00), 1.0f);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);  // rounds to infinity
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(fp32_to_bf16(1.00390625f), 0x3f80);  // tie rounds to even
}

TEST(DType, RowBytesChecksBlocksAndOverflow) {
  EXPECT_EQ(dtype_row_bytes(DType::Q8_0, 64).value(), 68u);
  EXPECT_EQ(dtype_row_bytes(DType::Q4_K, 512).value(), 288u);
  EXPECT_FALSE(dtype_row_bytes(DType::Q4_0, 33).has_value());
  EXPECT_FALSE(dtype_row_bytes(DType::F32, UINT64_MAX / 2).has_value());
  EXPECT_FALSE(dtype_from_id(3).has_value());
  EXPECT_EQ(dtype_from_name("q6_k").value(), DType::Q6_K);
}

}  // namespace ll
