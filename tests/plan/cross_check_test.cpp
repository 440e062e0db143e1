// The MILP against the exact dynamic program (and, for tiny instances, against every plan there is)
// on seeded random profiles: both objectives, ring or not, memory from tight to ample.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "plan/plan.h"
#include "plan_test_util.h"

namespace ll::plan {
namespace {

bool close(double a, double b) {
  return std::fabs(a - b) <= 1e-6 * std::max({1.0, std::fabs(a), std::fabs(b)});
}

struct Tally {
  int instances = 0, solved = 0, infeasible = 0, brute_forced = 0;
};

void check_instance(const Profile& p, const SolveOptions& o, Tally& tally, const std::string& what) {
  ++tally.instances;
  auto milp = solve(p, o);
  auto dp = solve_exact(p, o);
  ASSERT_EQ(static_cast<bool>(milp), static_cast<bool>(dp))
      << what << ": milp " << (milp ? "found a plan" : milp.error().message) << ", dp "
      << (dp ? "found a plan" : dp.error().message);
  if (!milp) {
    EXPECT_EQ(milp.error().code, ErrorCode::resource) << what;
    EXPECT_EQ(milp.error().message, dp.error().message) << what;
    ++tally.infeasible;
  } else {
    ++tally.solved;
    EXPECT_TRUE(milp->proven_optimal) << what;
    EXPECT_TRUE(close(milp->cost_ms, dp->cost_ms))
        << what << ": milp " << milp->cost_ms << " dp " << dp->cost_ms;
    if (o.objective == Objective::latency) {
      // CBC's own objective (before the exact polish) must agree too: the formulation is right, not
      // just rescued by the polish.
      EXPECT_TRUE(close(milp->solver_objective_ms, dp->cost_ms))
          << what << ": milp objective " << milp->solver_objective_ms << " dp " << dp->cost_ms;
    } else if (!std::isnan(milp->solver_objective_ms)) {
      // The last plan a feasibility MILP returned: a real plan, so never below the optimum.
      EXPECT_GE(milp->solver_objective_ms, dp->cost_ms * (1 - 1e-9)) << what;
    }
    auto cm = evaluate(p, milp->stages, o);
    auto cd = evaluate(p, dp->stages, o);
    ASSERT_TRUE(cm) << what << ": " << cm.error().message;
    ASSERT_TRUE(cd) << what << ": " << cd.error().message;
    EXPECT_EQ(*cm, milp->cost_ms) << what;
    EXPECT_EQ(*cd, dp->cost_ms) << what;
  }
  if (p.n_units() <= 7 && p.n_devices() <= 3) {
    ++tally.brute_forced;
    double best = 0;
    const bool any = test::brute_force(p, o, best);
    EXPECT_EQ(any, static_cast<bool>(dp)) << what;
    if (any && dp) {
      EXPECT_TRUE(close(best, dp->cost_ms)) << what << ": brute " << best << " dp " << dp->cost_ms;
    }
  }
}

TEST(CrossCheck, MilpMatchesExactDpOnRandomInstances) {
  std::mt19937_64 rng(2024);
  Tally tally;
  const auto t0 = std::chrono::steady_clock::now();
  for (int n = 0; n < 200; ++n) {
    test::RandomSpec spec;
    spec.n_devices = 1 + static_cast<int>(rng() % 5);  // 1..5
    spec.n_units = 1 + static_cast<int>(rng() % 12);   // 1..12
    const double slacks[] = {1.0, 1.2, 1.5, 2.0, 3.0};
    spec.memory_slack = slacks[rng() % 5];
    spec.integer_costs = n % 7 == 3;  // ties
    const Profile p = test::random_profile(rng, spec);
    SolveOptions o;
    o.objective = n % 2 == 0 ? Objective::latency : Objective::throughput;
    o.ring = (n / 2) % 2 == 1;
    o.time_limit_s = 60;
    o.warm_start = n % 3 != 0;  // a third of the instances: the MILP alone, no heuristic incumbent
    check_instance(p, o, tally,
                   std::string("instance ") + std::to_string(n) + " (D=" + std::to_string(spec.n_devices) +
                       " U=" + std::to_string(spec.n_units) + " " + objective_name(o.objective) +
                       (o.ring ? " ring" : "") + (o.warm_start ? "" : " cold") + ")");
    if (HasFatalFailure()) return;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  %d instances: %d solved, %d infeasible (both agree), %d also brute-forced; %.2f s\n",
              tally.instances, tally.solved, tally.infeasible, tally.brute_forced, s);
  EXPECT_GT(tally.solved, 100);
  EXPECT_GT(tally.infeasible, 5);
}

TEST(CrossCheck, BlockModelMatchesExactDpOnRepeatedBlocks) {
  // Profiles of embedding + identical blocks + head, the shape `lingua profile` measures: solve()
  // takes the compact block model for them. It must agree with the DP, and with the interval MILPs.
  std::mt19937_64 rng(7);
  Tally tally;
  int by_blocks = 0;
  for (int n = 0; n < 160; ++n) {
    test::RandomSpec spec;
    spec.n_devices = 1 + static_cast<int>(rng() % 6);  // 1..6
    spec.n_units = 3 + static_cast<int>(rng() % 12);   // 3..14
    const double slacks[] = {1.0, 1.2, 1.5, 2.0, 3.0};
    spec.memory_slack = slacks[rng() % 5];
    spec.integer_costs = n % 5 == 2;  // ties
    const Profile p = test::block_profile(rng, spec);
    SolveOptions o;
    o.objective = n % 2 == 0 ? Objective::latency : Objective::throughput;
    o.ring = (n / 2) % 2 == 1;
    o.time_limit_s = 60;
    o.warm_start = n % 3 != 0;
    const std::string what = std::string("instance ") + std::to_string(n) + " (D=" +
                             std::to_string(spec.n_devices) + " U=" + std::to_string(spec.n_units) + " " +
                             objective_name(o.objective) + (o.ring ? " ring" : "") +
                             (o.warm_start ? "" : " cold") + ")";
    check_instance(p, o, tally, what);
    if (HasFatalFailure()) return;
    auto blocks = solve(p, o);
    SolveOptions intervals_only = o;
    intervals_only.use_block_model = false;
    auto intervals = solve(p, intervals_only);
    ASSERT_EQ(static_cast<bool>(blocks), static_cast<bool>(intervals)) << what;
    if (blocks) {
      EXPECT_STREQ(blocks->solver_model, "blocks") << what;
      EXPECT_STRNE(intervals->solver_model, "blocks") << what;
      EXPECT_TRUE(close(blocks->cost_ms, intervals->cost_ms)) << what;
      ++by_blocks;
    }
  }
  std::printf("  %d instances: %d solved, %d infeasible, %d brute-forced\n", tally.instances, tally.solved,
              tally.infeasible, tally.brute_forced);
  EXPECT_GT(by_blocks, 80);
  EXPECT_GT(tally.infeasible, 5);
}

TEST(CrossCheck, EachInstanceUnderAllFourModes) {
  // The same profile under every objective and mode, with a tighter look at mid-sized instances.
  std::mt19937_64 rng(99);
  Tally tally;
  for (int n = 0; n < 12; ++n) {
    test::RandomSpec spec;
    spec.n_devices = 3 + n % 4;  // 3..6
    spec.n_units = 8 + n;        // 8..19
    spec.memory_slack = n % 3 == 0 ? 1.1 : 1.8;
    const Profile p = test::random_profile(rng, spec);
    for (Objective obj : {Objective::latency, Objective::throughput}) {
      for (bool ring : {false, true}) {
        SolveOptions o;
        o.objective = obj;
        o.ring = ring;
        o.time_limit_s = 60;
        o.warm_start = n % 2 == 0;
        check_instance(
            p, o, tally,
            std::string("profile ") + std::to_string(n) + " " + objective_name(obj) + (ring ? " ring" : ""));
        if (HasFatalFailure()) return;
      }
    }
  }
  std::printf("  %d runs: %d solved, %d infeasible\n", tally.instances, tally.solved, tally.infeasible);
}

}  // namespace
}  // namespace ll::plan
