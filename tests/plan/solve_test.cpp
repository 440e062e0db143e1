#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "plan/plan.h"
#include "plan_test_util.h"

namespace ll::plan {
namespace {

using test::blank_profile;

SolveOptions opts(Objective obj, bool ring) {
  SolveOptions o;
  o.objective = obj;
  o.ring = ring;
  return o;
}

// Four units, three identical devices, 1 ms per hop, unit times 1 4 4 1.
Profile four_units() {
  Profile p = blank_profile(4, 3);
  for (auto& d : p.devices) d.unit_ms = {1, 4, 4, 1};
  for (int a = 0; a < 3; ++a) {
    for (int b = 0; b < 3; ++b) {
      if (a != b) p.latency_ms[a][b] = 1.0;
    }
  }
  return p;
}

TEST(Solve, HandInstanceLatencyKeepsEverythingOnTheOrigin) {
  const Profile p = four_units();
  for (bool ring : {false, true}) {
    auto r = solve(p, opts(Objective::latency, ring));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_DOUBLE_EQ(r->cost_ms, 10.0);
    EXPECT_TRUE(r->proven_optimal);
    ASSERT_EQ(r->stages.size(), 1u);
    EXPECT_EQ(r->stages[0], (Stage{0, 0, 3}));
  }
}

TEST(Solve, HandInstanceThroughput) {
  const Profile p = four_units();
  // Not ring: a stage holding unit 1 or 2 costs at least 4 + 1 (hop); both in one stage 9 + 1. The
  // best is 6, e.g. [0-1][2-3]: 1+4+1, 4+1+1.
  auto r = solve(p, opts(Objective::throughput, false));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_DOUBLE_EQ(r->cost_ms, 6.0);
  EXPECT_DOUBLE_EQ(*evaluate(p, r->stages, opts(Objective::throughput, false)), 6.0);
  // Ring: [dev0 0][dev1 1][dev2 2][dev0 3] costs 2, 5, 5, 1 -> 5.
  r = solve(p, opts(Objective::throughput, true));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_DOUBLE_EQ(r->cost_ms, 5.0);
  EXPECT_EQ(r->stages.back().device, 0);
}

TEST(Solve, HandInstanceSplitPaysOff) {
  // The origin is slow on units 1 and 2; dev1 is fast; each hop costs 1 ms + 1000 bytes at 1e6 B/s.
  Profile p = blank_profile(3, 2);
  p.units[0].out_bytes = 1000;
  p.units[1].out_bytes = 1000;
  p.units[2].out_bytes = 10;
  p.devices[0].unit_ms = {1, 10, 10};
  p.devices[1].unit_ms = {1, 2, 2};
  p.latency_ms = {{0, 1}, {1, 0}};
  // [dev0 0][dev1 1-2]: 1 + (1 + 1) = 3, then 4 + 1 (token_bytes 0) = 5: latency 8, throughput 5.
  for (Objective obj : {Objective::latency, Objective::throughput}) {
    auto r = solve(p, opts(obj, false));
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->stages.size(), 2u);
    EXPECT_EQ(r->stages[0], (Stage{0, 0, 0}));
    EXPECT_EQ(r->stages[1], (Stage{1, 1, 2}));
    EXPECT_DOUBLE_EQ(r->cost_ms, obj == Objective::latency ? 8.0 : 5.0);
    EXPECT_DOUBLE_EQ(r->latency_ms, 8.0);
    EXPECT_DOUBLE_EQ(r->max_stage_ms, 5.0);
    ASSERT_EQ(r->reports.size(), 2u);
    EXPECT_DOUBLE_EQ(r->reports[0].compute_ms, 1.0);
    EXPECT_DOUBLE_EQ(r->reports[0].transfer_ms, 2.0);
    EXPECT_DOUBLE_EQ(r->reports[1].compute_ms, 4.0);
    EXPECT_DOUBLE_EQ(r->reports[1].transfer_ms, 1.0);
  }
  // Ring: the head (unit 2) comes back to the origin: [dev0 0][dev1 1][dev0 2] = 3, 2 + 2, 10 = 17
  // vs all on the origin 21 vs [dev0 0-1][dev0 2]... -> 17 is the optimum for latency.
  auto r = solve(p, opts(Objective::latency, true));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_DOUBLE_EQ(r->cost_ms, 17.0);
  ASSERT_EQ(r->stages.size(), 3u);
  EXPECT_EQ(r->stages[1], (Stage{1, 1, 1}));
}

TEST(Solve, MemoryForcesASplit) {
  // Everything is fastest on the origin, but it holds only two of the four units.
  Profile p = blank_profile(4, 3);
  for (auto& u : p.units) u.memory_bytes = 100;
  p.devices[0].memory_bytes = 200;
  p.devices[1].memory_bytes = 250;
  p.devices[2].memory_bytes = 400;
  p.devices[0].unit_ms = {1, 1, 1, 1};
  p.devices[1].unit_ms = {2, 2, 2, 2};
  p.devices[2].unit_ms = {3, 3, 3, 3};
  p.latency_ms = {{0, 1, 1}, {1, 0, 1}, {1, 1, 0}};
  // Best: [dev0 0-1][dev1 2-3]: 2 + 1, 4 + 1 = 8.
  auto r = solve(p, opts(Objective::latency, false));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_DOUBLE_EQ(r->cost_ms, 8.0);
  EXPECT_EQ(r->stages, (std::vector<Stage>{{0, 0, 1}, {1, 2, 3}}));
  EXPECT_EQ(r->reports[0].device_memory_used_bytes, 200u);
  EXPECT_EQ(r->reports[1].device_memory_bytes, 250u);
  // Ring: the origin must keep room for unit 3: [dev0 0][dev1 1-2][dev0 3]: 1+1, 4+1, 1 = 8.
  r = solve(p, opts(Objective::latency, true));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_DOUBLE_EQ(r->cost_ms, 8.0);
  EXPECT_EQ(r->stages, (std::vector<Stage>{{0, 0, 0}, {1, 1, 2}, {0, 3, 3}}));
  EXPECT_EQ(r->reports[0].device_memory_used_bytes, 200u);
}

TEST(Solve, RingMayCutTheOriginInTwo) {
  // The cost model lets the origin host the first and the last stage back to back (hop = 0): under
  // throughput that halves a lone device's stage cost. Both solvers follow the model to the letter.
  Profile p = blank_profile(2, 1);
  p.devices[0].unit_ms = {3, 5};
  auto r = solve(p, opts(Objective::throughput, true));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_DOUBLE_EQ(r->cost_ms, 5.0);
  EXPECT_EQ(r->stages, (std::vector<Stage>{{0, 0, 0}, {0, 1, 1}}));
  auto e = solve_exact(p, opts(Objective::throughput, true));
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_DOUBLE_EQ(e->cost_ms, 5.0);
  // Not in ring mode, and not for latency (same cost as one stage).
  r = solve(p, opts(Objective::throughput, false));
  ASSERT_TRUE(r);
  EXPECT_DOUBLE_EQ(r->cost_ms, 8.0);
  r = solve(p, opts(Objective::latency, true));
  ASSERT_TRUE(r);
  EXPECT_DOUBLE_EQ(r->cost_ms, 8.0);
}

TEST(Solve, KeepOriginToEndsLeavesTheBlocksToTheOtherDevices) {
  // Six units (1 ms each, 10 bytes each), an origin twice as fast as two helpers (2 ms per unit):
  // the throughput optimum gives the origin blocks ([0-1][2-3][4-5]: 2+1, 4+1, 4).
  Profile p = blank_profile(6, 3);
  for (auto& u : p.units) u.memory_bytes = 10;
  p.devices[0].unit_ms.assign(6, 1.0);
  for (int d : {1, 2}) p.devices[static_cast<size_t>(d)].unit_ms.assign(6, 2.0);
  for (int a = 0; a < 3; ++a) {
    for (int b = 0; b < 3; ++b) {
      if (a != b) p.latency_ms[a][b] = 1.0;
    }
  }
  auto r = solve(p, opts(Objective::throughput, false));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_GT(r->stages.front().last_unit, 0);
  for (bool ring : {false, true}) {
    Profile kept = p;
    ASSERT_TRUE(keep_origin_to_ends(kept, ring));
    EXPECT_EQ(kept.devices[0].memory_bytes, ring ? 20u : 10u);
    EXPECT_EQ(kept.devices[1].memory_bytes, p.devices[1].memory_bytes);
    EXPECT_FALSE(keep_origin_to_ends(kept, ring)) << "already kept: nothing to lower";
    r = solve(kept, opts(Objective::throughput, ring));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->stages.front(), (Stage{0, 0, 0}));
    if (ring) {
      EXPECT_EQ(r->stages.back(), (Stage{0, 5, 5}));
    }
    for (size_t i = 1; i + (ring ? 1 : 0) < r->stages.size(); ++i) EXPECT_NE(r->stages[i].device, 0);
    // Units 1-4 (ring) or 1-5 over the two helpers, 2 ms each: the slower half 3 units + hop, or
    // 2 units + hop with ring (the origin then holds the head: 1 ms).
    EXPECT_DOUBLE_EQ(r->cost_ms, ring ? 5.0 : 7.0);
  }
  // An origin with less memory than its ends keeps what it has (the solver then says it is short).
  Profile tight = p;
  tight.devices[0].memory_bytes = 5;
  EXPECT_FALSE(keep_origin_to_ends(tight, false));
  EXPECT_EQ(tight.devices[0].memory_bytes, 5u);
}

TEST(Solve, OneUnitOneDevice) {
  Profile p = blank_profile(1, 1);
  p.devices[0].unit_ms = {2.5};
  for (Objective obj : {Objective::latency, Objective::throughput}) {
    for (bool ring : {false, true}) {
      auto r = solve(p, opts(obj, ring));
      ASSERT_TRUE(r) << r.error().message;
      EXPECT_DOUBLE_EQ(r->cost_ms, 2.5);
      EXPECT_EQ(r->stages, (std::vector<Stage>{{0, 0, 0}}));
      auto e = solve_exact(p, opts(obj, ring));
      ASSERT_TRUE(e) << e.error().message;
      EXPECT_DOUBLE_EQ(e->cost_ms, 2.5);
    }
  }
}

TEST(Solve, OriginNeedNotBeDeviceZero) {
  Profile p = four_units();
  p.origin = 2;
  auto r = solve(p, opts(Objective::throughput, true));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_DOUBLE_EQ(r->cost_ms, 5.0);
  EXPECT_EQ(r->stages.front().device, 2);
  EXPECT_EQ(r->stages.back().device, 2);
}

// ---- infeasible profiles and their messages ----

std::string solve_error(const Profile& p, const SolveOptions& o) {
  auto r = solve(p, o);
  EXPECT_FALSE(r);
  if (r) return "";
  EXPECT_EQ(r.error().code, ErrorCode::resource);
  auto e = solve_exact(p, o);
  EXPECT_FALSE(e);
  if (!e) {
    EXPECT_EQ(e.error().message, r.error().message);
  }
  return r.error().message;
}

TEST(SolveInfeasible, OriginCannotHoldUnitZero) {
  Profile p = blank_profile(3, 2);
  p.units[0].memory_bytes = 5000;
  p.devices[0].memory_bytes = 4000;
  const std::string m = solve_error(p, opts(Objective::latency, false));
  EXPECT_NE(m.find("the origin 'dev0' has 4000 bytes but unit 0 'u0' needs 5000 bytes"), std::string::npos)
      << m;
}

TEST(SolveInfeasible, RingOriginCannotHoldBothEnds) {
  Profile p = blank_profile(3, 2);
  p.units[0].memory_bytes = 3000;
  p.units[2].memory_bytes = 3000;
  p.devices[0].memory_bytes = 5000;
  const std::string m = solve_error(p, opts(Objective::throughput, true));
  EXPECT_NE(
      m.find("in ring mode the origin 'dev0' must hold unit 0 'u0' and unit 2 'u2', 6000 bytes together, "
             "but has 5000 bytes"),
      std::string::npos)
      << m;
  EXPECT_TRUE(solve(p, opts(Objective::throughput, false)));  // fine without ring
}

TEST(SolveInfeasible, UnitFitsNowhere) {
  Profile p = blank_profile(3, 3);
  p.units[1].memory_bytes = 2000000;
  const std::string m = solve_error(p, opts(Objective::latency, false));
  EXPECT_NE(m.find("unit 1 'u1' needs 1.9 MiB (2000000 bytes) but the largest device 'dev0' has 976.6 KiB "
                   "(1000000 bytes)"),
            std::string::npos)
      << m;
}

TEST(SolveInfeasible, TotalMemoryShort) {
  Profile p = blank_profile(4, 2);
  for (auto& u : p.units) u.memory_bytes = 1000;
  p.devices[0].memory_bytes = 1500;
  p.devices[1].memory_bytes = 2000;
  const std::string m = solve_error(p, opts(Objective::latency, false));
  EXPECT_NE(m.find("no plan fits: the model needs 4000 bytes but all 2 devices together have 3500 bytes, 500 "
                   "bytes short"),
            std::string::npos)
      << m;
}

TEST(SolveInfeasible, ContiguityDefeatsEnoughMemory) {
  // 180 bytes needed, 220 available, but no contiguous split fits: 60 | 60 | 60 over 100, 100, 20.
  Profile p = blank_profile(3, 3);
  for (auto& u : p.units) u.memory_bytes = 60;
  p.devices[0].memory_bytes = 100;
  p.devices[1].memory_bytes = 100;
  p.devices[2].memory_bytes = 20;
  const std::string m = solve_error(p, opts(Objective::latency, false));
  EXPECT_NE(m.find("each device holds one contiguous range of units"), std::string::npos) << m;
  solve_error(p, opts(Objective::throughput, false));
  p.devices[2].memory_bytes = 60;  // now [0][1][2] fits
  auto r = solve(p, opts(Objective::throughput, false));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->stages.size(), 3u);
}

TEST(Solve, RejectsBadOptions) {
  const Profile p = four_units();
  SolveOptions o;
  o.time_limit_s = 0;
  auto r = solve(p, o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  o.time_limit_s = std::nan("");
  EXPECT_FALSE(solve(p, o));
}

TEST(Solve, ExactSolverRefusesTooManyDevices) {
  const Profile p = blank_profile(3, kMaxExactDevices + 1);
  auto r = solve_exact(p, SolveOptions{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::unsupported);
}

TEST(Solve, TimeLimitReturnsAFeasiblePlan) {
  // A bigger instance under a tiny limit: whatever CBC got to, the plan must be valid and costed.
  std::mt19937_64 rng(7);
  test::RandomSpec spec;
  spec.n_units = 40;
  spec.n_devices = 8;
  spec.memory_slack = 3.0;
  Profile p = test::random_profile(rng, spec);
  for (auto& d : p.devices) d.memory_bytes = 100000;  // room for all: the baselines are feasible
  for (Objective obj : {Objective::latency, Objective::throughput}) {
    SolveOptions o = opts(obj, false);
    o.time_limit_s = 0.001;
    auto r = solve(p, o);
    ASSERT_TRUE(r) << r.error().message;
    auto c = evaluate(p, r->stages, o);
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(*c, r->cost_ms);
    auto even = plan_even(p, 0, o);
    ASSERT_TRUE(even);
    EXPECT_LE(r->cost_ms, *evaluate(p, *even, o));  // never worse than a baseline
  }
}

TEST(Solve, ConcurrentCallsGiveTheSameAnswers) {
  std::mt19937_64 rng(3);
  test::RandomSpec spec;
  spec.n_units = 10;
  spec.n_devices = 4;
  spec.memory_slack = 2.0;
  std::vector<Profile> profiles;
  std::vector<SolveOptions> options;
  std::vector<double> expected;
  for (int n = 0; n < 8; ++n) {
    profiles.push_back(test::random_profile(rng, spec));
    options.push_back(opts(n % 2 ? Objective::throughput : Objective::latency, n % 4 >= 2));
    auto r = solve(profiles.back(), options.back());
    expected.push_back(r ? r->cost_ms : -1.0);
  }
  std::vector<double> got(profiles.size(), -2.0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t n = t; n < profiles.size(); n += 4) {
        auto r = solve(profiles[n], options[n]);
        got[n] = r ? r->cost_ms : -1.0;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(got, expected);
}

TEST(Solve, EightDevicesFortyUnitsAgreesWithTheDp) {
  // The sizes of the brief. Not a timing assertion: prints how long each takes; checks the answer is
  // proven optimal and equals the exact DP's.
  std::mt19937_64 rng(11);
  test::RandomSpec spec;
  spec.n_units = 40;
  spec.n_devices = 8;
  spec.memory_slack = 1.5;
  for (int trial = 0; trial < 2; ++trial) {
    const Profile p = test::random_profile(rng, spec);
    for (Objective obj : {Objective::latency, Objective::throughput}) {
      for (bool ring : {false, true}) {
        SolveOptions o = opts(obj, ring);
        o.time_limit_s = 120;
        const auto t0 = std::chrono::steady_clock::now();
        auto r = solve(p, o);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        auto e = solve_exact(p, o);
        ASSERT_EQ(static_cast<bool>(r), static_cast<bool>(e));
        if (!r) continue;
        EXPECT_TRUE(r->proven_optimal);
        EXPECT_NEAR(r->cost_ms, e->cost_ms, 1e-6 * e->cost_ms);
        std::printf("  D=8 U=40 %-10s %-4s: MILP %5.0f ms, %zu stages, %.4f ms\n", objective_name(obj),
                    ring ? "ring" : "", ms, r->stages.size(), r->cost_ms);
      }
    }
  }
}

}  // namespace
}  // namespace ll::plan
