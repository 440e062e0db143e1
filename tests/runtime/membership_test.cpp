// Membership: workers that were not there when the run started. A worker listed for the cluster but
// not answering at connect() is tried in the background; once it answers it is profiled on its own
// link (the running pipeline goes on), becomes a worker of the cluster (Coordinator::joined), and a
// balancer that adds it to its profile (plan::add_device) gives it units at the next re-plan. The
// greedy output stays exactly the single-process output throughout.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/shared_files.h"
#include "inproc_cluster.h"
#include "model/generate.h"
#include "plan/balance.h"
#include "plan/profile.h"
#include "runtime/coordinator.h"
#include "runtime/split.h"
#include "runtime/worker.h"
#include "stories_fixture.h"

namespace ll {
namespace {

using runtime::Stage;
using Fixture = test::StoriesFixture;

constexpr int64_t k_n_ctx = 128;
constexpr int k_sleep_us = 300;  // per unit and token, on every worker: steady timings

model::GenerateOptions greedy() {
  model::GenerateOptions gen;
  gen.n_predict = 90;
  gen.sampling.temperature = 0;
  return gen;
}

void slow_units(runtime::WorkerOptions& o) {
  o.unit_hook = [](int64_t, int64_t n_tokens) {
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(k_sleep_us) * n_tokens));
  };
}

// A worker started later, on the cluster's in-process network, serving on its own thread.
class LateWorker {
 public:
  LateWorker(net::Network& net, runtime::WorkerOptions o) {
    auto w = runtime::Worker::create(o, net);
    if (!w) {
      ADD_FAILURE() << w.error().message;
      return;
    }
    worker_ = std::move(*w);
    thread_ = std::thread([this] { (void)worker_->serve([this] { return stop_.load(); }); });
  }
  ~LateWorker() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::unique_ptr<runtime::Worker> worker_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

struct Outcome {
  std::vector<model::GenerateResult> results;
  runtime::RunStats stats;
  std::vector<Stage> final_stages;
  std::vector<runtime::JoinedDevice> joined;
  int n_workers = 0;
  std::vector<std::string> log;
};

// Two workers up (w1, w2) and a third endpoint nobody listens on yet. The origin may hold only the
// embedding, so the workers hold every block and the head; with throughput as the objective the
// plan over two workers has a stage of three units, over three of two: a third worker that joins
// is worth a switch. `late_options` customizes the third worker, started once request 0 streamed
// `start_after` pieces of text.
Outcome run(const Fixture& f, int start_after, const std::function<void(runtime::WorkerOptions&)>& late_options = {}) {
  test::InprocCluster cluster(2, {}, "inproc://member", [](size_t, runtime::WorkerOptions& o) { slow_units(o); });
  std::vector<std::string> endpoints = cluster.endpoints();
  endpoints.push_back("inproc://member-late");
  Outcome out;
  runtime::Coordinator* coordinator = nullptr;
  plan::Profile profile;
  plan::SolveOptions so;
  so.objective = plan::Objective::throughput;
  plan::BalancePolicy policy(plan::BalanceOptions{0.15, 150, 300});
  plan::SpeedTracker speeds;
  runtime::CoordinatorOptions co;
  co.n_ctx = k_n_ctx;
  co.n_ubatch = 4;
  co.late_workers = true;
  co.connect_timeout = net::Millis(300);
  co.origin_memory_bytes = f.model->unit_weight_bytes(0) + 1;
  co.monitor_interval = net::Millis(50);
  co.log = [&out](const std::string& s) { out.log.push_back(s); };
  co.rebalance = [&](const runtime::MonitorSample& m) -> Expected<runtime::BalanceDecision> {
    // As the app's Resplitter does: devices that joined go into the profile, then the policy.
    for (const auto& j : coordinator->joined()) {
      if (j.device == profile.n_devices()) {
        LL_TRY(plan::add_device(profile, j.profile, j.link_latency_ms, j.link_bandwidth_bytes_per_s));
      }
    }
    EXPECT_EQ(static_cast<int>(m.alive_workers.size()) + 1, profile.n_devices());
    const auto factors = speeds.update(plan::speed_factors(profile, m.stages, m.window_unit_ms));
    const plan::Profile fresh = plan::refresh_profile(profile, factors);
    plan::MoveCost cost{0, {}, 0};
    LL_ASSIGN_OR_RETURN(auto p, policy.observe(m.elapsed_ms, fresh, m.stages, so, m.remaining_tokens, cost));
    if (!p) return runtime::BalanceDecision{std::nullopt, policy.verdict()};
    policy.switched(m.elapsed_ms);
    return runtime::BalanceDecision{runtime::Rebalance{p->stages, p->reason}, policy.verdict()};
  };
  auto c = runtime::Coordinator::connect(*f.model, cluster.net(), endpoints, co);
  EXPECT_TRUE(c.has_value()) << c.error().message;
  if (!c) return out;
  coordinator = c->get();
  EXPECT_EQ((*c)->n_workers(), 2);
  EXPECT_EQ((*c)->joining(), std::vector<std::string>{"inproc://member-late"});
  auto measured = (*c)->measure_profile(4);
  EXPECT_TRUE(measured.has_value()) << measured.error().message;
  if (!measured) return out;
  profile = *measured;
  auto first = plan::solve(profile, so);
  EXPECT_TRUE(first.has_value()) << first.error().message;
  if (!first) return out;
  EXPECT_TRUE((*c)->load(first->stages).has_value());
  std::unique_ptr<LateWorker> late;
  int pieces = 0;
  auto on_text = [&](size_t i, std::string_view) {
    if (i != 0 || ++pieces != start_after) return;
    runtime::WorkerOptions o;
    o.listen = "inproc://member-late";
    o.name = "late";
    slow_units(o);
    if (late_options) late_options(o);
    late = std::make_unique<LateWorker>(cluster.net(), o);
  };
  auto res = (*c)->generate(*f.tok, f.requests, greedy(), 3, on_text);
  EXPECT_TRUE(res.has_value()) << res.error().message;
  if (!res) return out;
  out.results = std::move(*res);
  out.stats = (*c)->last_run_stats();
  out.final_stages = (*c)->stages();
  out.joined = (*c)->joined();
  out.n_workers = (*c)->n_workers();
  c->reset();  // (before the late worker goes)
  if (std::getenv("LL_TEST_SHOW_LOG") != nullptr) {
    for (const auto& line : out.log) std::fprintf(stderr, "  %s\n", line.c_str());
  }
  return out;
}

void expect_same(const std::vector<model::GenerateResult>& got, const std::vector<model::GenerateResult>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
    EXPECT_EQ(got[i].text, want[i].text) << "request " << i;
  }
}

bool logged(const std::vector<std::string>& log, const std::string& what) {
  for (const auto& line : log) {
    if (line.find(what) != std::string::npos) return true;
  }
  return false;
}

TEST(Membership, AWorkerThatStartsLateJoinsIsProfiledAndGetsUnits) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = test::load_stories();
  const auto want = test::single_process(f, greedy(), k_n_ctx);
  const Outcome o = run(f, 3);
  expect_same(o.results, want);
  EXPECT_TRUE(logged(o.log, "inproc://member-late did not answer")) << "no line about the late worker";
  EXPECT_TRUE(logged(o.log, "late (inproc://member-late) joined as worker 3"));
  EXPECT_EQ(o.n_workers, 3);
  ASSERT_EQ(o.joined.size(), 1u);
  EXPECT_EQ(o.joined[0].device, 3);
  EXPECT_EQ(o.joined[0].profile.name, "late");
  ASSERT_EQ(o.joined[0].profile.unit_ms.size(), static_cast<size_t>(f.model->n_units()));
  // Its probe ran its units (each sleeps k_sleep_us per token): at least that, per block.
  EXPECT_GE(o.joined[0].profile.unit_ms[1], k_sleep_us / 1000.0);
  EXPECT_GE(o.stats.n_rebalances, 1);
  int late_units = 0;
  for (const Stage& st : o.final_stages) {
    if (st.device == 3) late_units += static_cast<int>(st.last_unit - st.first_unit + 1);
  }
  EXPECT_GE(late_units, 1) << "the worker that joined holds nothing";
}

TEST(Membership, AWorkerThatCannotBeProfiledIsLeftOutAndTheRunGoesOn) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = test::load_stories();
  const auto want = test::single_process(f, greedy(), k_n_ctx);
  // Too little memory for the probe (the last block and the head).
  const Outcome o = run(f, 3, [](runtime::WorkerOptions& w) { w.memory_limit_bytes = 1u << 20; });
  expect_same(o.results, want);
  EXPECT_EQ(o.n_workers, 2);
  EXPECT_TRUE(o.joined.empty());
  EXPECT_TRUE(logged(o.log, "worker at inproc://member-late cannot join: it answered, but profiling it failed"));
  for (const Stage& st : o.final_stages) EXPECT_LE(st.device, 2);
}

TEST(Membership, ConnectStillFailsWhenNoWorkerAnswers) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = test::load_stories();
  auto net = net::make_inproc_network();
  runtime::CoordinatorOptions co;
  co.late_workers = true;
  co.connect_timeout = net::Millis(100);
  auto c = runtime::Coordinator::connect(*f.model, *net, {"inproc://nobody-1", "inproc://nobody-2"}, co);
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message.find("inproc://nobody-1"), std::string::npos) << c.error().message;
}

TEST(Membership, WithoutLateWorkersAMissingOneFailsTheConnect) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = test::load_stories();
  test::InprocCluster cluster(1, {}, "inproc://strict");
  std::vector<std::string> endpoints = cluster.endpoints();
  endpoints.push_back("inproc://strict-missing");
  runtime::CoordinatorOptions co;
  co.connect_timeout = net::Millis(100);
  auto c = runtime::Coordinator::connect(*f.model, cluster.net(), endpoints, co);
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message.find("inproc://strict-missing"), std::string::npos) << c.error().message;
}

}  // namespace
}  // namespace ll
