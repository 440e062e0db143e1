// Combining profiling rounds (runtime/probe.h): one spoiled round does not move the profile, and an
// absurd block/head split is replaced by the full step split as the origin's is.
#include "runtime/probe.h"

#include <gtest/gtest.h>

namespace ll::runtime {
namespace {

TEST(ProbeRounds, OneSpoiledRoundDoesNotMoveTheProfile) {
  // Rounds 1 and 3 agree; in round 2 the host stalled (everything 2x slower, a worse link).
  std::vector<WorkerProbe> rounds = {
      {10.0, 4.0, 14.0, 3.0, 1e7}, {20.0, 8.0, 28.0, 9.0, 2e6}, {11.0, 4.0, 15.0, 2.5, 1.2e7}};
  const WorkerProbe p = combine_probe_rounds(rounds);
  EXPECT_DOUBLE_EQ(p.block_ms, 11.0);
  EXPECT_DOUBLE_EQ(p.full_ms, 15.0);
  EXPECT_DOUBLE_EQ(p.head_ms, 4.0);  // the median full step beyond the median block
  EXPECT_DOUBLE_EQ(p.link_ms, 2.5);  // the best round's latency
  EXPECT_DOUBLE_EQ(p.link_bw, 1e7);  // the median rate
  // The mean of the three would have been 13.67 ms per block: the median is what rounds 1 and 3 say.
  // One round alone is taken as it is; none gives an empty probe.
  EXPECT_DOUBLE_EQ(combine_probe_rounds({rounds[1]}).block_ms, 20.0);
  EXPECT_DOUBLE_EQ(combine_probe_rounds({}).block_ms, 0.0);
  // A full step that comes out below the block gives a head of 0, not a negative one.
  EXPECT_DOUBLE_EQ(combine_probe_rounds({{10.0, 0.0, 9.0, 1.0, 1e12}}).head_ms, 0.0);
}

TEST(ProbeRounds, AnAbsurdSplitTakesTheOriginsRatio) {
  WorkerProbe ok{10.0, 5.0, 15.0, 1.0, 1e12};
  EXPECT_FALSE(fix_odd_split(ok, 0.5));
  EXPECT_DOUBLE_EQ(ok.block_ms, 10.0);
  WorkerProbe odd{14.9, 0.1, 15.0, 1.0, 1e12};  // a head that costs nothing
  ASSERT_TRUE(fix_odd_split(odd, 0.5));
  EXPECT_DOUBLE_EQ(odd.block_ms, 10.0);
  EXPECT_DOUBLE_EQ(odd.head_ms, 5.0);
  WorkerProbe no_ratio{14.9, 0.1, 15.0, 1.0, 1e12};
  EXPECT_FALSE(fix_odd_split(no_ratio, 0.0));  // the origin's own split unknown: left as it is
}

TEST(ProbeRounds, ABlockCountsThePausesBetweenStepsUnlessTheLinkBoundsThem) {
  // Under a 60 % quota: the timers saw 4.7 ms per step, the steps came back 6.5 ms apart; a stage
  // in a run comes between the two.
  EXPECT_DOUBLE_EQ(stage_block_ms(4.7, 6.5, 0.7), 5.6);
  // A free CPU: the steps came back as fast as the timers ran (or faster, within the noise).
  EXPECT_DOUBLE_EQ(stage_block_ms(4.7, 4.5, 0.7), 4.7);
  // A slow link: each step's hidden state took 5.5 of the 6.5 ms, so the wall time is the link's.
  EXPECT_DOUBLE_EQ(stage_block_ms(4.7, 6.5, 5.5), 4.7);
  // No bandwidth known (0): the wall time counts.
  EXPECT_DOUBLE_EQ(stage_block_ms(4.7, 6.5, 0.0), 5.6);
  // Round figures of the kind combine_probe_rounds takes keep their order and meaning.
  WorkerProbe p{6.4, 13.0, 19.4, 3.0, 1e12, 4.7, 6.4};
  EXPECT_DOUBLE_EQ(combine_probe_rounds({p}).head_ms, 13.0);
}

}  // namespace
}  // namespace ll::runtime
