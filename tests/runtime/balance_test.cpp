// Runtime load balancing: a worker slows down mid-generation (a hook inside its units' timed work
// sleeps, as a device under a CPU quota does); monitoring sees it, the policy proposes a plan
// without it, the coordinator switches between two decode steps and rebuilds the KV caches, and the
// greedy output is still exactly the single-process output. Without a slowdown nothing moves.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "common/shared_files.h"
#include "inproc_cluster.h"
#include "stories_fixture.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "plan/balance.h"
#include "runtime/coordinator.h"
#include "runtime/split.h"

namespace ll {
namespace {

using runtime::Stage;

using Fixture = test::StoriesFixture;
using test::expect_same;
using test::load_stories;
using test::single_process;

// What the planner was told at the start: the origin and three workers equally fast (1 ms per block
// or head, the embedding nearly free), free links, plenty of memory on the workers.
plan::Profile equal_profile(int n_units) {
  plan::Profile p;
  for (int u = 0; u < n_units; ++u) p.units.push_back(plan::UnitProfile{std::string("u").append(std::to_string(u)), 1000, 1024});
  for (const char* name : {"origin", "w1", "w2", "w3"}) {
    plan::DeviceProfile d{name, 1u << 30, std::vector<double>(static_cast<size_t>(n_units), 1.0)};
    d.unit_ms[0] = 0.001;
    p.devices.push_back(std::move(d));
  }
  // The origin holds the embedding only: its blocks would run without the workers' sleeps, far faster
  // than anything here, and the plans would all move to it.
  p.devices[0].memory_bytes = 1000;
  p.latency_ms.assign(4, std::vector<double>(4, 0.0));
  p.bandwidth_bytes_per_s.assign(4, std::vector<double>(4, 1e12));
  p.origin = 0;
  p.token_bytes = 4;
  return p;
}

struct Outcome {
  std::vector<model::GenerateResult> results;
  runtime::RunStats stats;
  std::vector<Stage> final_stages;
  std::vector<std::string> log;
};

// Three workers whose units each sleep `base_sleep_us` per token (so timings are steady), worker 2
// `slow_sleep_us` instead once request 0 has streamed `slow_after` pieces (never when negative).
model::GenerateOptions greedy() {
  model::GenerateOptions gen;
  gen.n_predict = 90;
  gen.sampling.temperature = 0;
  return gen;
}
constexpr int64_t k_n_ctx = 128;

// kv_moves: false makes the workers answer KV_REQUEST / KV_DATA as ones that predate them.
// `recover_after`: w2 runs at base_sleep_us again once request 0 has streamed that many pieces.
Outcome run(const Fixture& f, int slow_after, int base_sleep_us, int slow_sleep_us, bool kv_moves = true,
            int recover_after = -1) {
  const model::GenerateOptions gen = greedy();
  const int64_t n_ctx = k_n_ctx;
  std::atomic<bool> slow{false};
  auto customize = [&](size_t i, runtime::WorkerOptions& o) {
    o.kv_moves = kv_moves;
    o.unit_hook = [&slow, i, base_sleep_us, slow_sleep_us](int64_t, int64_t n_tokens) {
      const int us = (i == 1 && slow.load()) ? slow_sleep_us : base_sleep_us;
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(us) * n_tokens));
    };
  };
  test::InprocCluster cluster(3, {}, "inproc://w", customize);
  const int n_units = static_cast<int>(f.model->n_units());
  const plan::Profile profile = equal_profile(n_units);
  plan::SolveOptions so;
  so.objective = plan::Objective::throughput;
  plan::BalancePolicy policy(plan::BalanceOptions{0.15, 150, 300});
  plan::SpeedTracker speeds;
  std::array<bool, 4> had_spares{};
  Outcome out;
  runtime::CoordinatorOptions co;
  co.n_ctx = n_ctx;
  co.n_ubatch = 4;
  co.monitor_interval = net::Millis(50);
  co.idle_probe_interval = net::Millis(100);
  co.log = [&out](const std::string& s) { out.log.push_back(s); };
  co.rebalance = [&](const runtime::MonitorSample& m) -> Expected<runtime::BalanceDecision> {
    EXPECT_EQ(m.unit_ms.size(), static_cast<size_t>(n_units));
    EXPECT_EQ(m.alive_workers, (std::vector<int>{1, 2, 3}));
    // Each worker keeps the units next to its stage (two on each side by default): a balancer may
    // move those to it for free. (While a switch's segments load, a worker's may read empty: the
    // balancer then only overestimates a move; checked over the run below.)
    EXPECT_EQ(m.spare_units.size(), 4u);
    if (m.spare_units.size() == 4) {
      EXPECT_TRUE(m.spare_units[0].empty());
      for (int w = 1; w <= 3; ++w) had_spares[static_cast<size_t>(w)] |= !m.spare_units[static_cast<size_t>(w)].empty();
    }
    // Devices out of the plan count by their idle re-measurements (as the app's Resplitter does).
    std::vector<double> now = plan::speed_factors(profile, m.stages, m.unit_ms);
    plan::fill_idle_factors(profile, m.idle_block_ms, now);
    const auto factors = speeds.update(now);
    const plan::Profile fresh = plan::refresh_profile(profile, factors);
    // (KV caches move over free in-process links: switching costs next to nothing.)
    plan::MoveCost cost{0, {}, 0};
    LL_ASSIGN_OR_RETURN(auto p, policy.observe(m.elapsed_ms, fresh, m.stages, so, m.remaining_tokens, cost));
    if (!p) return runtime::BalanceDecision{std::nullopt, policy.verdict()};
    policy.switched(m.elapsed_ms);
    return runtime::BalanceDecision{runtime::Rebalance{p->stages, p->reason}, policy.verdict()};
  };
  auto c = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  EXPECT_TRUE(c.has_value()) << c.error().message;
  if (!c) return out;
  auto even = runtime::split_even(n_units, 3, false);
  EXPECT_TRUE(even.has_value());
  EXPECT_TRUE((*c)->load(*even).has_value());
  int pieces = 0;
  auto on_text = [&](size_t i, std::string_view) {
    if (i != 0) return;
    ++pieces;
    if (pieces == slow_after) slow = true;
    if (pieces == recover_after) slow = false;
  };
  auto res = (*c)->generate(*f.tok, f.requests, gen, 3, on_text);
  EXPECT_TRUE(res.has_value()) << res.error().message;
  if (!res) return out;
  for (int w = 1; w <= 3; ++w) EXPECT_TRUE(had_spares[static_cast<size_t>(w)]) << "worker " << w << " never held spares";
  out.results = std::move(*res);
  out.stats = (*c)->last_run_stats();
  out.final_stages = (*c)->stages();
  return out;
}

TEST(Balancing, AWorkerThatSlowsDownLosesItsUnitsAndTheOutputStaysTheSame) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  const auto want = single_process(f, greedy(), k_n_ctx);
  const Outcome o = run(f, 5, 300, 3000);  // w2 becomes 10x slower after 5 pieces of text
  expect_same(o.results, want);
  EXPECT_GE(o.stats.n_rebalances, 1);
  EXPECT_EQ(o.stats.n_failovers, 0);
  const int w2_units = test::units_on(o.final_stages, 2);
  EXPECT_LT(w2_units, 2) << "w2 held 2 units of the even split";
  bool logged = false;
  for (const auto& line : o.log) logged = logged || line.rfind("rebalance 1: the running plan costs", 0) == 0;
  EXPECT_TRUE(logged) << "no rebalance line in the log";
  // The live sequences' KV caches moved to their new holders (KV_REQUEST / KV_DATA), not replayed.
  bool moved = false;
  for (const auto& line : o.log) moved = moved || line.find("moved the KV caches of") != std::string::npos;
  EXPECT_TRUE(moved) << "no KV move in the log";
  // Monitoring kept an estimate for the devices of the final plan.
  ASSERT_EQ(o.stats.device_ms_per_token.size(), 4u);
  for (const Stage& st : o.final_stages) {
    EXPECT_FALSE(std::isnan(o.stats.device_ms_per_token[static_cast<size_t>(st.device)])) << "device " << st.device;
  }
}

// A worker the plan left because it was slow is re-measured on its own while out of the plan; once
// it runs at its old speed again, it gets units back.
TEST(Balancing, AWorkerThatRecoversIsReMeasuredOutOfThePlanAndTakenBack) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  const auto want = single_process(f, greedy(), k_n_ctx);
  const Outcome o = run(f, 5, 1500, 15000, true, 30);  // w2 10x slower from piece 5 to piece 30
  expect_same(o.results, want);
  if (std::getenv("LL_TEST_SHOW_LOG") != nullptr) {
    for (const auto& line : o.log) std::fprintf(stderr, "  %s\n", line.c_str());
  }
  EXPECT_GE(o.stats.n_rebalances, 2);
  bool remeasured = false;
  for (const auto& line : o.log) remeasured = remeasured || line.rfind("re-measured w2 (out of the plan)", 0) == 0;
  EXPECT_TRUE(remeasured) << "w2 was never re-measured out of the plan";
  const int w2_units = test::units_on(o.final_stages, 2);
  EXPECT_GE(w2_units, 1) << "w2 recovered but got nothing back";
}

TEST(Balancing, WorkersThatCannotMoveKvCachesGetThemRebuiltByReplay) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  const auto want = single_process(f, greedy(), k_n_ctx);
  const Outcome o = run(f, 5, 300, 3000, false);
  expect_same(o.results, want);
  EXPECT_GE(o.stats.n_rebalances, 1);
  bool fell_back = false, replayed = false;
  for (const auto& line : o.log) {
    fell_back = fell_back || line.find("the KV caches cannot be moved") != std::string::npos;
    replayed = replayed || line.find("KV caches rebuilt by replay") != std::string::npos;
  }
  EXPECT_TRUE(fell_back) << "no fallback in the log";
  EXPECT_TRUE(replayed) << "no replay in the log";
}

TEST(Balancing, EqualDevicesKeepTheirPlan) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  const auto want = single_process(f, greedy(), k_n_ctx);
  const Outcome o = run(f, -1, 300, 300);
  expect_same(o.results, want);
  EXPECT_EQ(o.stats.n_rebalances, 0);
  const auto even = runtime::split_even(f.model->n_units(), 3, false);
  ASSERT_TRUE(even.has_value());
  EXPECT_EQ(o.final_stages, *even);
}

}  // namespace
}  // namespace ll

namespace ll {
namespace {

TEST(Balancing, APlanAWorkerRefusesIsDroppedAndTheRunGoesOnWithTheOldOne) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  const auto want = single_process(f, greedy(), k_n_ctx);
  // w1 cannot hold anything (a limit far below what this process already uses).
  auto customize = [](size_t i, runtime::WorkerOptions& o) {
    if (i == 0) o.memory_limit_bytes = 1u << 20;
  };
  test::InprocCluster cluster(3, {}, "inproc://refuse", customize);
  std::vector<std::string> log;
  bool proposed = false;
  runtime::CoordinatorOptions co;
  co.n_ctx = k_n_ctx;
  co.n_ubatch = 4;
  co.monitor_interval = net::Millis(1);
  co.log = [&log](const std::string& s) { log.push_back(s); };
  co.rebalance = [&](const runtime::MonitorSample&) -> Expected<runtime::BalanceDecision> {
    if (proposed) return runtime::BalanceDecision{};
    proposed = true;
    return runtime::BalanceDecision{runtime::Rebalance{{{0, 0, 0}, {1, 1, 6}}, "test"}, ""};
  };
  auto c = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  const std::vector<Stage> start = {{0, 0, 0}, {2, 1, 3}, {3, 4, 6}};
  ASSERT_TRUE((*c)->load(start).has_value());
  auto res = (*c)->generate(*f.tok, f.requests, greedy(), 3);
  ASSERT_TRUE(res.has_value()) << res.error().message;
  expect_same(*res, want);
  EXPECT_TRUE(proposed);
  EXPECT_EQ((*c)->last_run_stats().n_rebalances, 0);
  EXPECT_EQ((*c)->stages(), start);
  bool refused = false;
  for (const auto& line : log) refused = refused || line.rfind("rebalance refused: ", 0) == 0;
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace ll

namespace ll {
namespace {

// Every worker's units sleep `us` per token (steady timings).
std::function<void(size_t, runtime::WorkerOptions&)> sleeping_units(int us) {
  return [us](size_t, runtime::WorkerOptions& o) {
    o.unit_hook = [us](int64_t, int64_t n_tokens) {
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(us) * n_tokens));
    };
  };
}

// `lingua serve` calls generate() once per batch, and batches can be shorter than one monitoring
// window: windows span the calls, so short batches are monitored too.
TEST(Balancing, GenerateCallsShorterThanAWindowAreStillMonitored) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  model::GenerateOptions gen = greedy();
  gen.n_predict = 3;
  const auto want = single_process(f, gen, k_n_ctx);
  test::InprocCluster cluster(2, {}, "inproc://short", sleeping_units(200));
  int n_windows = 0, n_measured = 0;
  runtime::CoordinatorOptions co;
  co.n_ctx = k_n_ctx;
  co.monitor_interval = net::Millis(30);
  co.rebalance = [&](const runtime::MonitorSample& m) -> Expected<runtime::BalanceDecision> {
    ++n_windows;
    for (double ms : m.window_unit_ms) {
      if (!std::isnan(ms)) {
        ++n_measured;
        break;
      }
    }
    return runtime::BalanceDecision{};
  };
  auto c = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  auto even = runtime::split_even(f.model->n_units(), 2, false);
  ASSERT_TRUE(even.has_value());
  ASSERT_TRUE((*c)->load(*even).has_value());
  const auto t0 = std::chrono::steady_clock::now();
  int n_calls = 0;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(400) || n_calls < 10) {
    const size_t i = static_cast<size_t>(n_calls++) % f.requests.size();
    auto res = (*c)->generate(*f.tok, {f.requests[i]}, gen, 1);
    ASSERT_TRUE(res.has_value()) << res.error().message;
    ASSERT_EQ(res->size(), 1u);
    EXPECT_EQ((*res)[0].tokens, want[i].tokens) << "call " << n_calls;
  }
  EXPECT_GE(n_windows, 2) << n_calls << " calls";
  EXPECT_GE(n_measured, 1) << "no window measured a unit";
}

// Prompt micro-batches cost far less per token than decode steps: a window mostly of them is no
// measure of decode speed, and MonitorSample says how much of a window they were.
TEST(Balancing, WindowsSayWhatShareOfTheirTokensWerePrompt) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  model::GenerateOptions gen = greedy();
  gen.n_predict = 24;
  const auto want = single_process(f, gen, k_n_ctx);
  test::InprocCluster cluster(2, {}, "inproc://prompt-share", sleeping_units(300));
  std::vector<double> shares;
  runtime::CoordinatorOptions co;
  co.n_ctx = k_n_ctx;
  co.n_ubatch = 2;
  co.monitor_interval = net::Millis(2);
  co.rebalance = [&](const runtime::MonitorSample& m) -> Expected<runtime::BalanceDecision> {
    shares.push_back(m.window_prompt_share);
    return runtime::BalanceDecision{};
  };
  auto c = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  auto even = runtime::split_even(f.model->n_units(), 2, false);
  ASSERT_TRUE(even.has_value());
  ASSERT_TRUE((*c)->load(*even).has_value());
  auto res = (*c)->generate(*f.tok, {f.requests[0]}, gen, 1);
  ASSERT_TRUE(res.has_value()) << res.error().message;
  EXPECT_EQ((*res)[0].tokens, want[0].tokens);
  ASSERT_GE(shares.size(), 3u);
  EXPECT_GT(shares.front(), 0.5) << "the first window holds the prompt's batches";
  for (double s : shares) {
    EXPECT_GE(s, 0.0);
    EXPECT_LE(s, 1.0);
  }
  EXPECT_EQ(shares.back(), 0.0) << "the last windows decode only";
}

}  // namespace
}  // namespace ll
