#include "plan/balance.h"

#include <gtest/gtest.h>

#include <cmath>

#include "plan_test_util.h"

namespace ll::plan {
namespace {

// embed, 6 blocks of 10 ms, head of 5 ms; three equal devices on free links. k_running is the
// throughput optimum for them (stages of 20.1, 20 and 25 ms).
Profile three_equal() {
  Profile p = test::blank_profile(8, 3);
  for (auto& d : p.devices) {
    d.unit_ms = {0.1, 10, 10, 10, 10, 10, 10, 5};
  }
  for (auto& u : p.units) u.memory_bytes = 1000;
  return p;
}

const std::vector<Stage> k_running = {{0, 0, 2}, {1, 3, 4}, {2, 5, 7}};

std::vector<double> measured_as_profiled(const Profile& p, const std::vector<Stage>& stages) {
  std::vector<double> m(static_cast<size_t>(p.n_units()), std::nan(""));
  for (const Stage& st : stages) {
    for (int u = st.first_unit; u <= st.last_unit; ++u) {
      m[static_cast<size_t>(u)] = p.devices[static_cast<size_t>(st.device)].unit_ms[static_cast<size_t>(u)];
    }
  }
  return m;
}

TEST(MedianOf, OddEvenAndEmpty) {
  EXPECT_EQ(median_of({}), 0.0);
  EXPECT_EQ(median_of({3}), 3.0);
  EXPECT_EQ(median_of({5, 1, 3}), 3.0);
  EXPECT_EQ(median_of({4, 1, 3, 2}), 2.5);
}

TEST(RefreshProfile, EveryUnitOfADeviceScalesWithWhatItsUnitsMeasured) {
  const Profile base = three_equal();
  auto m = measured_as_profiled(base, k_running);
  for (int u = 3; u <= 4; ++u) m[static_cast<size_t>(u)] = 40;  // device 1 became 4x slower
  const Profile r = refresh_profile(base, speed_factors(base, k_running, m));
  EXPECT_DOUBLE_EQ(r.devices[1].unit_ms[3], 40);
  EXPECT_DOUBLE_EQ(r.devices[1].unit_ms[1], 40);   // a block it does not hold, scaled by its own factor
  EXPECT_DOUBLE_EQ(r.devices[1].unit_ms[7], 20);   // the head too
  EXPECT_DOUBLE_EQ(r.devices[0].unit_ms[4], 10);   // the others are unchanged
  EXPECT_DOUBLE_EQ(r.devices[2].unit_ms[1], 10);
}

TEST(RefreshProfile, DevicesWithoutMeasurementsScaleByTheMedianFactor) {
  Profile base = three_equal();
  // Device 2 holds nothing; devices 0 and 1 run 20% faster than profiled (batched decode, say).
  const std::vector<Stage> two = {{0, 0, 3}, {1, 4, 7}};
  auto m = measured_as_profiled(base, two);
  for (double& v : m) v *= 0.8;
  const Profile r = refresh_profile(base, speed_factors(base, two, m));
  EXPECT_NEAR(r.devices[2].unit_ms[3], 8.0, 1e-12);
  EXPECT_NEAR(r.devices[0].unit_ms[5], 8.0, 1e-12);
}

TEST(RefreshProfile, AnEmbeddingAloneDoesNotSetItsDevicesFactor) {
  const Profile base = three_equal();
  const std::vector<Stage> plan = {{0, 0, 0}, {1, 1, 4}, {2, 5, 7}};
  auto m = measured_as_profiled(base, plan);
  m[0] = 1.0;  // the embedding took 10x its profiled 0.1 ms (noise on a tiny figure)
  const Profile r = refresh_profile(base, speed_factors(base, plan, m));
  EXPECT_DOUBLE_EQ(r.devices[0].unit_ms[0], 0.1);
  EXPECT_DOUBLE_EQ(r.devices[0].unit_ms[3], 10);  // blocks keep the median factor (1), not 10
  EXPECT_TRUE(std::isnan(speed_factors(base, plan, m)[0]));
}

TEST(RefreshProfile, ADeviceWhoseProfileCameOutTinyIsStillMeasured) {
  Profile base = three_equal();
  // Device 1 was profiled on a busy CPU: its blocks came out at 0.01 ms (a thousandth of the others').
  for (int u = 1; u <= 6; ++u) base.devices[1].unit_ms[static_cast<size_t>(u)] = 0.01;
  const std::vector<Stage> plan = {{0, 0, 0}, {1, 1, 6}, {2, 7, 7}};
  auto m = measured_as_profiled(base, plan);
  for (int u = 1; u <= 6; ++u) m[static_cast<size_t>(u)] = 50;  // what it really takes now
  const auto f = speed_factors(base, plan, m);
  ASSERT_FALSE(std::isnan(f[1])) << "six of eight units are not a negligible share";
  const Profile r = refresh_profile(base, f);
  EXPECT_NEAR(r.devices[1].unit_ms[3], 50, 1e-9);
}

TEST(RefreshProfile, AFactorSeenEarlierKeepsAnIdleDeviceAsSlowAsItWas) {
  const Profile base = three_equal();
  // Device 1 was measured 4x slow and left the plan; devices 0 and 2 run as profiled.
  const std::vector<Stage> now = {{0, 0, 3}, {2, 4, 7}};
  const auto m = measured_as_profiled(base, now);
  auto f = speed_factors(base, now, m);
  EXPECT_TRUE(std::isnan(f[1]));
  f[1] = 4.0;  // what the caller remembers
  const Profile r = refresh_profile(base, f);
  EXPECT_DOUBLE_EQ(r.devices[1].unit_ms[2], 40);
  EXPECT_DOUBLE_EQ(r.devices[2].unit_ms[5], 10);
}

TEST(IdleFactors, AReMeasuredBlockTimeAgainstTheMedianProfiledBlock) {
  Profile p = three_equal();
  p.devices[2].unit_ms = {0.1, 4, 4, 40, 4, 4, 4, 5};  // blocks mostly 4 ms (one odd figure)
  const std::vector<double> f = idle_factors(p, {std::nan(""), 30.0, 2.0});
  ASSERT_EQ(f.size(), 3u);
  EXPECT_TRUE(std::isnan(f[0]));   // not measured
  EXPECT_DOUBLE_EQ(f[1], 3.0);     // 30 ms against 10: three times slower than profiled
  EXPECT_DOUBLE_EQ(f[2], 0.5);     // 2 ms against the median 4 (not the odd 40)
  // Missing entries, zero or negative or infinite times: not measured.
  const std::vector<double> g = idle_factors(p, {0.0, -1.0});
  EXPECT_TRUE(std::isnan(g[0]) && std::isnan(g[1]) && std::isnan(g[2]));
  EXPECT_TRUE(std::isnan(idle_factors(p, {1.0, INFINITY, 1.0})[1]));
  // Filling the running plan's factors: only devices it did not measure take the idle figure.
  std::vector<double> running = {0.9, std::nan(""), 1.2};
  const std::vector<bool> filled = fill_idle_factors(p, {5.0, 30.0, 2.0}, running);
  EXPECT_EQ(filled, (std::vector<bool>{false, true, false}));
  EXPECT_DOUBLE_EQ(running[0], 0.9);
  EXPECT_DOUBLE_EQ(running[1], 3.0);
  EXPECT_DOUBLE_EQ(running[2], 1.2);
  // A profile without blocks (embedding and head only) has nothing to compare with.
  Profile tiny = test::blank_profile(2, 1);
  EXPECT_TRUE(std::isnan(idle_factors(tiny, {1.0})[0]));
}

TEST(SpeedTracker, TakesTheMedianOfTheLastThreeAndFillsUnmeasuredDevicesWithTheFirstOnes) {
  SpeedTracker t;
  const double nan = std::nan("");
  // Window 1: devices 0 and 1 measured at 0.5 (batched decode), 2 never.
  auto a = t.update({0.5, 0.5, nan});
  EXPECT_DOUBLE_EQ(a[0], 0.5);
  EXPECT_DOUBLE_EQ(a[2], 0.5);
  // Windows 2 and 3: device 1 alone, now 5x slower; device 0 left the plan.
  auto b = t.update({nan, 2.5, nan});
  EXPECT_DOUBLE_EQ(b[0], 0.5);        // its last
  EXPECT_DOUBLE_EQ(b[1], 1.5);        // the median of 0.5 and 2.5: one window is not enough
  EXPECT_DOUBLE_EQ(b[2], 0.5);        // as the others first ran, not as the slowed one runs now
  auto b2 = t.update({nan, 2.5, nan});
  EXPECT_DOUBLE_EQ(b2[1], 2.5);       // the second window shows the change
  // One outlier (a window of replayed batches) does not move it.
  auto b3 = t.update({nan, 0.01, nan});
  EXPECT_DOUBLE_EQ(b3[1], 2.5);
  auto b4 = t.update({nan, nan, nan});  // nothing new: as it stands
  EXPECT_EQ(b4, b3);
  // A device slow from the first window on does not make the unmeasured ones look slow.
  SpeedTracker slow_at_once;
  auto c = slow_at_once.update({nan, 8.0, nan});
  EXPECT_DOUBLE_EQ(c[1], 8.0);
  EXPECT_DOUBLE_EQ(c[2], 1.0);
  // Nothing measured yet: NaN (refresh_profile then keeps the profile).
  SpeedTracker empty;
  EXPECT_TRUE(std::isnan(empty.update({nan, nan})[1]));
}

TEST(BalancePolicy, ProposesTheRefreshedOptimumOnlyAfterTheOverloadLastsTheSustainWindow) {
  const Profile base = three_equal();
  SolveOptions so;
  so.objective = Objective::throughput;
  ASSERT_TRUE(evaluate(base, k_running, so).has_value());
  auto m = measured_as_profiled(base, k_running);
  for (int u = 3; u <= 4; ++u) m[static_cast<size_t>(u)] = 40;
  const Profile r = refresh_profile(base, speed_factors(base, k_running, m));
  BalancePolicy policy(BalanceOptions{0.15, 1000, 3000});
  MoveCost cost{100, {}};
  auto a = policy.observe(0, r, k_running, so, 1000, cost);
  ASSERT_TRUE(a.has_value());
  EXPECT_FALSE(a->has_value()) << "the overload has just begun";
  EXPECT_NE(policy.verdict().find("over the margin for 0.00 ms of 1000.00 ms"), std::string::npos) << policy.verdict();
  auto b = policy.observe(500, r, k_running, so, 1000, cost);
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->has_value());
  auto c = policy.observe(1000, r, k_running, so, 1000, cost);
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE(c->has_value());
  const Proposal& p = **c;
  auto best = solve(r, so);
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(p.stages, best->stages);
  EXPECT_NEAR(p.current_cost_ms, 80.0, 1e-9);  // two 40 ms blocks on device 1
  EXPECT_NE(policy.verdict().find("running plan 80.00 ms"), std::string::npos) << policy.verdict();
  EXPECT_NE(policy.verdict().find(": switch"), std::string::npos) << policy.verdict();
  EXPECT_NEAR(p.best_cost_ms, best->cost_ms, 1e-9);
  EXPECT_LT(p.best_cost_ms, p.current_cost_ms / 1.15);
  EXPECT_NEAR(p.gain_ms, (p.current_cost_ms - p.best_cost_ms) * 1000, 1e-6);
  EXPECT_NEAR(p.move_ms, 100 * p.best_cost_ms / p.current_cost_ms, 1e-9);  // replayed on the faster plan
  EXPECT_NE(p.reason.find("dev1 80.00 ms"), std::string::npos) << p.reason;
  // Device 1 holds fewer units in the proposal.
  int held = 0;
  for (const Stage& st : p.stages) {
    if (st.device == 1) held += st.last_unit - st.first_unit + 1;
  }
  EXPECT_LT(held, 2);
}

TEST(BalancePolicy, AnInterruptedOverloadStartsTheWindowAgain) {
  const Profile base = three_equal();
  SolveOptions so;
  so.objective = Objective::throughput;
  auto m = measured_as_profiled(base, k_running);
  const Profile calm = refresh_profile(base, speed_factors(base, k_running, m));
  for (int u = 3; u <= 4; ++u) m[static_cast<size_t>(u)] = 40;
  const Profile slow = refresh_profile(base, speed_factors(base, k_running, m));
  BalancePolicy policy(BalanceOptions{0.15, 1000, 0});
  MoveCost cost{};
  EXPECT_FALSE(policy.observe(0, slow, k_running, so, 1000, cost)->has_value());
  EXPECT_FALSE(policy.observe(600, calm, k_running, so, 1000, cost)->has_value());
  EXPECT_FALSE(policy.observe(1200, slow, k_running, so, 1000, cost)->has_value());
  EXPECT_TRUE(policy.observe(2200, slow, k_running, so, 1000, cost)->has_value());
}

TEST(BalancePolicy, WithinTheMarginNothingMoves) {
  const Profile base = three_equal();
  SolveOptions so;
  so.objective = Objective::throughput;
  auto m = measured_as_profiled(base, k_running);
  for (int u = 3; u <= 4; ++u) m[static_cast<size_t>(u)] = 12;  // 20% slower, but not the slowest stage
  const Profile r = refresh_profile(base, speed_factors(base, k_running, m));
  BalancePolicy policy(BalanceOptions{0.15, 0, 0});
  for (double t : {0.0, 1000.0, 5000.0}) {
    auto d = policy.observe(t, r, k_running, so, 1e6, MoveCost{});
    ASSERT_TRUE(d.has_value());
    EXPECT_FALSE(d->has_value());
    EXPECT_TRUE(policy.verdict().find("within the margin") != std::string::npos ||
                policy.verdict().find("is the optimum") != std::string::npos)
        << policy.verdict();
  }
}

TEST(BalancePolicy, AMoveThatCostsMoreThanItSavesIsNotProposed) {
  const Profile base = three_equal();
  SolveOptions so;
  so.objective = Objective::throughput;
  auto m = measured_as_profiled(base, k_running);
  for (int u = 3; u <= 4; ++u) m[static_cast<size_t>(u)] = 40;
  const Profile r = refresh_profile(base, speed_factors(base, k_running, m));
  BalancePolicy policy(BalanceOptions{0.15, 0, 0});
  // 3 tokens left save at most 3 x 80 ms; replaying costs 10 s.
  auto d = policy.observe(0, r, k_running, so, 3, MoveCost{10000, {}});
  ASSERT_TRUE(d.has_value());
  EXPECT_FALSE(d->has_value());
  EXPECT_NE(policy.verdict().find("over the 3 tokens to come"), std::string::npos) << policy.verdict();
  // Weight streaming counts as well: the optimum (0-3 here, 4-7 on device 2: 35 ms) saves 20 x 45 ms
  // but moves 1000-byte units at 1 ms per byte.
  auto e = policy.observe(1, r, k_running, so, 20, MoveCost{0, {1.0, 1.0, 1.0}});
  ASSERT_TRUE(e.has_value());
  EXPECT_FALSE(e->has_value());
  auto f = policy.observe(2, r, k_running, so, 1000, MoveCost{0, {0.0, 0.0, 0.0}});
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->has_value());
}

TEST(BalancePolicy, CooldownAfterASwitch) {
  const Profile base = three_equal();
  SolveOptions so;
  so.objective = Objective::throughput;
  auto m = measured_as_profiled(base, k_running);
  for (int u = 3; u <= 4; ++u) m[static_cast<size_t>(u)] = 40;
  const Profile r = refresh_profile(base, speed_factors(base, k_running, m));
  BalancePolicy policy(BalanceOptions{0.15, 0, 2000});
  policy.switched(0);
  EXPECT_TRUE(policy.settling(1000));
  EXPECT_FALSE(policy.settling(2000));
  EXPECT_FALSE(policy.observe(1000, r, k_running, so, 1000, MoveCost{})->has_value());
  EXPECT_NE(policy.verdict().find("settling after a switch"), std::string::npos) << policy.verdict();
  EXPECT_TRUE(policy.observe(2500, r, k_running, so, 1000, MoveCost{})->has_value());
}

TEST(MoveCost, CountsOnlyUnitsNewToADeviceAndTheSlowestDevice) {
  Profile p = three_equal();
  const std::vector<Stage> to = {{0, 0, 3}, {1, 4, 4}, {2, 5, 7}};
  // Device 0 gains unit 3 (1000 bytes); devices 1 and 2 keep units they held.
  EXPECT_DOUBLE_EQ(move_cost_ms(p, k_running, to, MoveCost{5, {0.01, 1.0, 1.0}}), 5 + 10);
  const std::vector<Stage> far = {{0, 0, 0}, {2, 1, 4}, {1, 5, 7}};
  // Device 2 gains 1-4 (4000 bytes at 0.5 ms/byte), device 1 gains 5-7 (3000 at 1 ms/byte).
  EXPECT_DOUBLE_EQ(move_cost_ms(p, k_running, far, MoveCost{0, {0, 1.0, 0.5}}), 3000);
  // Moving KV caches adds their transfer, as given.
  EXPECT_DOUBLE_EQ(move_cost_ms(p, k_running, far, MoveCost{0, {0, 1.0, 0.5}, 250}), 3250);
  // Units a device holds as spares cost nothing to move to it: device 2 has 1-2 next to its stage,
  // so only 3-4 travel (2000 bytes at 0.5 ms/byte); device 1's spare 7 leaves 5-6 (2000 at 1 ms/byte).
  MoveCost spares{0, {0, 1.0, 0.5}};
  spares.preloaded = {{}, {7}, {1, 2}};
  EXPECT_DOUBLE_EQ(move_cost_ms(p, k_running, far, spares), 2000);
  spares.preloaded = {{}, {5, 6, 7}, {1, 2, 3, 4}};
  EXPECT_DOUBLE_EQ(move_cost_ms(p, k_running, far, spares), 0);
}

TEST(BalancePolicy, AnInvalidRunningPlanIsAnError) {
  const Profile base = three_equal();
  BalancePolicy policy;
  auto d = policy.observe(0, base, {{1, 0, 7}}, SolveOptions{}, 10, MoveCost{});
  EXPECT_FALSE(d.has_value());
}

}  // namespace
}  // namespace ll::plan
