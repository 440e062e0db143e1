// evaluate() on hand-made plans, and the baselines.
#include <gtest/gtest.h>

#include "plan/plan.h"
#include "plan_test_util.h"

namespace ll::plan {
namespace {

using test::blank_profile;

// Three devices with distinct speeds and links, four units.
Profile three_devices() {
  Profile p = blank_profile(4, 3);
  p.units[0].out_bytes = 1000;
  p.units[1].out_bytes = 2000;
  p.units[2].out_bytes = 4000;
  p.units[3].out_bytes = 8;
  p.devices[0].unit_ms = {1, 2, 3, 4};
  p.devices[1].unit_ms = {0.5, 1, 1.5, 2};
  p.devices[2].unit_ms = {2, 4, 6, 8};
  p.latency_ms = {{0, 1, 2}, {3, 0, 4}, {5, 6, 0}};
  p.bandwidth_bytes_per_s = {{0, 1e6, 2e6}, {4e6, 0, 1e6}, {1e6, 2e6, 0}};
  p.token_bytes = 16;
  return p;
}

SolveOptions opts(Objective obj, bool ring = false) {
  SolveOptions o;
  o.objective = obj;
  o.ring = ring;
  return o;
}

TEST(Evaluate, CostsAPlanByTheFormula) {
  const Profile p = three_devices();
  const std::vector<Stage> plan{{0, 0, 0}, {2, 1, 2}, {1, 3, 3}};
  // stage 0 on dev0: 1 + hop(0, 2, 1000) = 1 + 2 + 1000*1000/2e6 = 3.5
  // stage 1 on dev2: 4 + 6 + hop(2, 1, 4000) = 10 + 6 + 1000*4000/2e6 = 18
  // stage 2 on dev1: 2 + hop(1, 0, 16) = 2 + 3 + 1000*16/4e6 = 5.004
  EXPECT_DOUBLE_EQ(*evaluate(p, plan, opts(Objective::latency)), 3.5 + 18 + 5.004);
  EXPECT_DOUBLE_EQ(*evaluate(p, plan, opts(Objective::throughput)), 18.0);
  auto d = describe(p, plan, opts(Objective::throughput));
  ASSERT_TRUE(d);
  EXPECT_DOUBLE_EQ(d->reports[1].compute_ms, 10.0);
  EXPECT_DOUBLE_EQ(d->reports[1].transfer_ms, 8.0);
  EXPECT_DOUBLE_EQ(d->reports[2].transfer_ms, 3.004);
  EXPECT_DOUBLE_EQ(d->latency_ms, 26.504);
  EXPECT_DOUBLE_EQ(d->max_stage_ms, 18.0);
  EXPECT_EQ(d->reports[1].memory_bytes, 2u);
  EXPECT_FALSE(d->proven_optimal);
}

TEST(Evaluate, BatchedDecodeCostsARoundOverItsTokens) {
  const Profile p = three_devices();
  const std::vector<Stage> plan{{0, 0, 0}, {2, 1, 2}, {1, 3, 3}};
  const SolveOptions o = opts(Objective::throughput);
  // One batch of one token: the latency cost (its trip); one token in each of three batches: the
  // busiest stage, dev2's 18 ms, as the throughput cost has it.
  EXPECT_DOUBLE_EQ(*batched_ms_per_token(p, plan, o, {1}, {}), 26.504);
  EXPECT_DOUBLE_EQ(*batched_ms_per_token(p, plan, o, {1, 1, 1}, {}), 18.0);
  // Four sequences in batches of 2, 1, 1, a step of two tokens taking 1.2x one: the batch of two
  // costs dev2 10 * 1.2 + 6 + 2 * 2 = 22 (latency once, bytes twice), so a round is 22 + 18 + 18
  // = 58 ms for 4 tokens.
  EXPECT_DOUBLE_EQ(*batched_ms_per_token(p, plan, o, {2, 1, 1}, {1.0, 1.2}), 14.5);
  // One batch of three: its trip is the round (5.3 + 30 + 6.612 ms: factor 1.2 * 3 / 2 = 1.8 past
  // the measured sizes).
  EXPECT_DOUBLE_EQ(*batched_ms_per_token(p, plan, o, {3}, {1.0, 1.2}), (5.3 + 30 + 6.612) / 3);
  // No factors: a batch of b costs b single steps' compute.
  EXPECT_DOUBLE_EQ(*batched_ms_per_token(p, plan, o, {2}, {}), ((2 + 2 + 1) + (20 + 6 + 4) + (4 + 3 + 0.008)) / 2);
  // With ring the origin's two stages share its time: 3 + 4 ms per batch, three batches 21 ms, while
  // dev1 is busy 6.5 ms per batch.
  const std::vector<Stage> ring{{0, 0, 0}, {1, 1, 2}, {0, 3, 3}};
  EXPECT_DOUBLE_EQ(*batched_ms_per_token(p, ring, opts(Objective::throughput, true), {1, 1, 1}, {}), 7.0);
  // Refused: no batch, an empty batch, a factor that is not positive, a plan that is not one.
  EXPECT_FALSE(batched_ms_per_token(p, plan, o, {}, {}));
  EXPECT_FALSE(batched_ms_per_token(p, plan, o, {1, 0}, {}));
  EXPECT_FALSE(batched_ms_per_token(p, plan, o, {2}, {1.0, -1.0}));
  EXPECT_FALSE(batched_ms_per_token(p, {{1, 0, 3}}, o, {1}, {}));
}

TEST(Evaluate, SingleStageOnTheOriginPaysNoHop) {
  const Profile p = three_devices();
  EXPECT_DOUBLE_EQ(*evaluate(p, {{0, 0, 3}}, opts(Objective::latency)), 10.0);
  EXPECT_DOUBLE_EQ(*evaluate(p, {{0, 0, 3}}, opts(Objective::throughput, true)), 10.0);
}

TEST(Evaluate, RingBringsTheLastStageHome) {
  const Profile p = three_devices();
  // dev0 0-1 (3 + hop(0,1,2000) = 3 + 1 + 2 = 6), dev1 2 (1.5 + hop(1,0,4000) = 1.5 + 3 + 1 = 5.5),
  // dev0 3 (4 + 0).
  const std::vector<Stage> plan{{0, 0, 1}, {1, 2, 2}, {0, 3, 3}};
  EXPECT_DOUBLE_EQ(*evaluate(p, plan, opts(Objective::latency, true)), 15.5);
  EXPECT_DOUBLE_EQ(*evaluate(p, plan, opts(Objective::throughput, true)), 6.0);
  // Not a plan without ring: the origin hosts two stages.
  auto r = evaluate(p, plan, opts(Objective::latency, false));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("device 'dev0' hosts 2 stages (at most one)"), std::string::npos);
}

TEST(Evaluate, RejectsMalformedPlans) {
  const Profile p = three_devices();
  struct Case {
    std::vector<Stage> plan;
    bool ring;
    const char* message;
  };
  const Case cases[] = {
      {{}, false, "the plan has no stages"},
      {{{1, 0, 3}}, false, "the first stage must be on the origin 'dev0', not 'dev1'"},
      {{{0, 0, 1}, {1, 3, 3}}, false, "stage 1 starts at unit 3, expected 2"},
      {{{0, 0, 1}, {1, 2, 1}, {2, 2, 3}}, false, "stage 1 is empty"},
      {{{0, 0, 1}, {1, 2, 2}}, false, "the plan covers units 0..2 of 4"},
      {{{0, 0, 1}, {1, 2, 4}}, false, "stage 1 ends at unit 4 but the model has 4 units (0..3)"},
      {{{0, 0, 1}, {3, 2, 3}}, false, "stage 1: no device 3"},
      {{{0, 0, 1}, {-1, 2, 3}}, false, "stage 1: no device -1"},
      {{{0, 0, 0}, {1, 1, 1}, {1, 2, 3}}, false, "device 'dev1' hosts 2 stages (at most one)"},
      {{{0, 0, 0}, {1, 1, 3}}, true, "in ring mode the last stage must be on the origin 'dev0', not 'dev1'"},
      {{{0, 0, 0}, {0, 1, 1}, {1, 2, 2}, {0, 3, 3}},
       true,
       "device 'dev0' hosts 3 stages (the origin may host only the first and the last)"},
  };
  for (const Case& c : cases) {
    auto r = evaluate(p, c.plan, opts(Objective::latency, c.ring));
    ASSERT_FALSE(r) << c.message;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << c.message;
    EXPECT_NE(r.error().message.find(c.message), std::string::npos) << r.error().message;
  }
}

TEST(Evaluate, ChecksMemoryPerDevice) {
  Profile p = three_devices();
  for (auto& u : p.units) u.memory_bytes = 100;
  p.devices[1].memory_bytes = 150;
  auto r = evaluate(p, {{0, 0, 0}, {1, 1, 2}, {2, 3, 3}}, opts(Objective::latency));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::resource);
  EXPECT_EQ(r.error().message, "device 'dev1' would hold 200 bytes (units 1..2) but has 150 bytes");
  EXPECT_TRUE(evaluate(p, {{0, 0, 1}, {1, 2, 2}, {2, 3, 3}}, opts(Objective::latency)));
  // Ring: the origin's two stages count together.
  p.devices[0].memory_bytes = 250;
  r = evaluate(p, {{0, 0, 1}, {1, 2, 2}, {0, 3, 3}}, opts(Objective::latency, true));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "device 'dev0' would hold 300 bytes (units 0..1 and 3..3) but has 250 bytes");
  p.devices[0].memory_bytes = 300;  // exactly full is fine
  EXPECT_TRUE(evaluate(p, {{0, 0, 1}, {1, 2, 2}, {0, 3, 3}}, opts(Objective::latency, true)));
}

TEST(Evaluate, SaturatesHugeMemorySums) {
  Profile p = blank_profile(3, 1);
  for (auto& u : p.units) u.memory_bytes = kMaxMemoryBytes;
  p.devices[0].memory_bytes = kMaxMemoryBytes;
  auto r = evaluate(p, {{0, 0, 2}}, opts(Objective::latency));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::resource);
}

TEST(Baselines, EvenSpreadsUnitsOverDevicesFromTheOrigin) {
  Profile p = blank_profile(10, 4);
  p.origin = 2;
  auto e = plan_even(p, 0, opts(Objective::latency));
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, (std::vector<Stage>{{2, 0, 2}, {0, 3, 5}, {1, 6, 7}, {3, 8, 9}}));
  e = plan_even(p, 2, opts(Objective::latency));
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, (std::vector<Stage>{{2, 0, 4}, {0, 5, 9}}));
  // Ring: the head alone on the origin at the end.
  e = plan_even(p, 0, opts(Objective::latency, true));
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, (std::vector<Stage>{{2, 0, 2}, {0, 3, 4}, {1, 5, 6}, {3, 7, 8}, {2, 9, 9}}));
  e = plan_even(p, 1, opts(Objective::latency, true));
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, (std::vector<Stage>{{2, 0, 9}}));
  // More devices than units: one unit each.
  Profile q = blank_profile(2, 4);
  e = plan_even(q, 0, opts(Objective::latency));
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, (std::vector<Stage>{{0, 0, 0}, {1, 1, 1}}));
  EXPECT_FALSE(plan_even(q, 5, opts(Objective::latency)));
  for (const auto& plan :
       {*plan_even(p, 0, opts(Objective::latency)), *plan_even(p, 3, opts(Objective::latency))}) {
    EXPECT_TRUE(evaluate(p, plan, opts(Objective::latency)));
  }
}

TEST(Baselines, MemorySplitsInProportionToMemory) {
  Profile p = blank_profile(12, 3);
  p.devices[0].memory_bytes = 100;
  p.devices[1].memory_bytes = 300;
  p.devices[2].memory_bytes = 200;
  // Cumulative shares 1/6, 4/6, 6/6 of 12 units: cuts at 2 and 8.
  auto m = plan_memory(p, opts(Objective::latency));
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, (std::vector<Stage>{{0, 0, 1}, {1, 2, 7}, {2, 8, 11}}));
  // A device with (almost) no memory gets nothing; the origin always holds unit 0.
  p.devices[0].memory_bytes = 1;
  m = plan_memory(p, opts(Objective::latency));
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, (std::vector<Stage>{{0, 0, 0}, {1, 1, 6}, {2, 7, 11}}));  // cuts at round(0.02), round(7.2)
  p.devices[2].memory_bytes = 0;
  m = plan_memory(p, opts(Objective::latency));
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, (std::vector<Stage>{{0, 0, 0}, {1, 1, 11}}));
  // Ring: units 0..10 by memory (cuts at round(1.83), round(7.33)), the head on the origin.
  p.devices[2].memory_bytes = 200;
  p.devices[0].memory_bytes = 100;
  m = plan_memory(p, opts(Objective::latency, true));
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, (std::vector<Stage>{{0, 0, 1}, {1, 2, 6}, {2, 7, 10}, {0, 11, 11}}));
}

TEST(Baselines, MayNotFitAndEvaluateSaysSo) {
  Profile p = blank_profile(4, 2);
  for (auto& u : p.units) u.memory_bytes = 100;
  p.devices[0].memory_bytes = 100;  // only one unit fits on the origin
  p.devices[1].memory_bytes = 1000;
  auto e = plan_even(p, 0, opts(Objective::latency));
  ASSERT_TRUE(e);
  auto c = evaluate(p, *e, opts(Objective::latency));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::resource);
  EXPECT_NE(c.error().message.find("device 'dev0' would hold 200 bytes"), std::string::npos);
}

TEST(Objective, ParsesNames) {
  EXPECT_EQ(*parse_objective("latency"), Objective::latency);
  EXPECT_EQ(*parse_objective("throughput"), Objective::throughput);
  EXPECT_FALSE(parse_objective("speed"));
  EXPECT_STREQ(objective_name(Objective::throughput), "throughput");
}

}  // namespace
}  // namespace ll::plan
