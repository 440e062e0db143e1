#include "runtime/sysinfo.h"

#include <gtest/gtest.h>
#include <sched.h>

#include "runtime/local_cluster.h"

namespace ll::runtime {
namespace {

TEST(SysInfo, CpuListsParseAndFormat) {
  EXPECT_EQ(*parse_cpu_list("0"), (std::vector<int>{0}));
  EXPECT_EQ(*parse_cpu_list("0,2-4,7"), (std::vector<int>{0, 2, 3, 4, 7}));
  EXPECT_EQ(format_cpu_list({0, 2, 3, 4, 7}), "0,2-4,7");
  EXPECT_EQ(format_cpu_list({5}), "5");
  for (const char* bad : {"", "a", "1-", "-1", "3-1", "1,,2", "99999"}) {
    EXPECT_FALSE(parse_cpu_list(bad).has_value()) << bad;
  }
}

TEST(SysInfo, ReportsThisProcess) {
  EXPECT_GT(current_rss_bytes(), 0u);
  EXPECT_GE(peak_rss_bytes(), current_rss_bytes() / 2);
  EXPECT_GT(available_memory_bytes(), 0u);
  const auto cpus = allowed_cpus();
  ASSERT_FALSE(cpus.empty());
  // Pinning to what we already have is allowed; a CPU that does not exist is refused.
  EXPECT_TRUE(pin_to_cpus(cpus).has_value());
  EXPECT_FALSE(pin_to_cpus({CPU_SETSIZE + 5}).has_value());
}

}  // namespace
}  // namespace ll::runtime

namespace ll::runtime {
namespace {

TEST(LocalCluster, OversubscribesCoresCountsTheOriginAndEveryWorkersThreads) {
  EXPECT_TRUE(oversubscribes_cores(2, 1, 1, 2));   // 3 threads on 2 cores
  EXPECT_FALSE(oversubscribes_cores(2, 1, 1, 3));
  EXPECT_TRUE(oversubscribes_cores(1, 4, 1, 4));
  EXPECT_FALSE(oversubscribes_cores(3, 2, 2, 8));
  EXPECT_TRUE(oversubscribes_cores(3, 2, 3, 8));
  EXPECT_FALSE(oversubscribes_cores(0, 1, 64, 2)) << "no local workers: nothing shares the origin's cores";
  EXPECT_TRUE(oversubscribes_cores(1, 0, 0, 0)) << "thread and core counts below one count as one";
}

}  // namespace
}  // namespace ll::runtime
