// A worker lost mid-generation (its in-process listener closes, as a killed process's connection
// does): the coordinator re-plans over the survivors, rebuilds every live sequence's KV cache by
// replaying its tokens, and the greedy output is still exactly the single-process output. Without a
// way to re-plan, or when no plan fits the survivors, the run fails at once with a clear error.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "inproc_cluster.h"
#include "stories_fixture.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "runtime/coordinator.h"
#include "runtime/split.h"

namespace ll {
namespace {

using runtime::Stage;

using Fixture = test::StoriesFixture;
using test::load_stories;
using test::single_process;

// An even split over the surviving workers (as `lingua run --split even` re-plans).
Expected<std::vector<Stage>> even_over(int64_t n_units, bool ring, const std::vector<int>& alive) {
  if (alive.empty()) return make_error(ErrorCode::resource, "no worker left");
  LL_ASSIGN_OR_RETURN(auto stages, runtime::split_even(n_units, static_cast<int>(alive.size()), ring));
  for (auto& st : stages) {
    if (st.device != 0) st.device = alive[static_cast<size_t>(st.device - 1)];
  }
  return stages;
}

// Kills worker `victim` (0-based) once request 0 has streamed `after_pieces` pieces of text
// (0: before anything: the kill lands in the prefill), then checks the output.
void run_with_kill(const Fixture& f, bool ring, size_t victim, int after_pieces, int parallel) {
  model::GenerateOptions gen;
  gen.n_predict = 40;
  gen.sampling.temperature = 0;
  const int64_t n_ctx = 128;
  const auto want = single_process(f, gen, n_ctx);
  test::InprocCluster cluster(3);
  runtime::CoordinatorOptions co;
  co.ring = ring;
  co.n_ctx = n_ctx;
  co.n_ubatch = 3;  // several micro-batches per prompt, and per replay
  std::vector<std::string> logs;
  co.log = [&](const std::string& s) { logs.push_back(s); };
  const int64_t n_units = f.model->n_units();
  std::vector<std::vector<int>> asked;
  co.replan = [&](const std::vector<int>& alive) {
    asked.push_back(alive);
    return even_over(n_units, ring, alive);
  };
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  auto stages = runtime::split_even(n_units, 3, ring);
  ASSERT_TRUE(stages.has_value());
  ASSERT_TRUE((*coord)->load(*stages).has_value());
  int pieces = 0;
  bool killed = false;
  if (after_pieces == 0) {
    cluster.kill(victim);
    killed = true;
  }
  auto on_text = [&](size_t i, std::string_view) {
    if (i == 0 && ++pieces == after_pieces && !killed) {
      cluster.kill(victim);
      killed = true;
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto got = (*coord)->generate(*f.tok, f.requests, gen, parallel, on_text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_TRUE(killed);
  EXPECT_LT(s, 30.0);
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].tokens, (*got)[i].tokens) << "prompt " << i;
    EXPECT_EQ(want[i].text, (*got)[i].text) << "prompt " << i;
  }
  EXPECT_EQ((*coord)->last_run_stats().n_failovers, 1);
  ASSERT_EQ(asked.size(), 1u);
  std::vector<int> survivors;
  for (int w = 1; w <= 3; ++w) {
    if (static_cast<size_t>(w - 1) != victim) survivors.push_back(w);
  }
  EXPECT_EQ(asked[0], survivors);
  EXPECT_FALSE((*coord)->worker_alive(static_cast<int>(victim) + 1));
  for (const Stage& st : (*coord)->stages()) EXPECT_NE(st.device, static_cast<int>(victim) + 1);
  bool logged = false;
  for (const auto& l : logs) {
    if (l.find("failover 1: dropped w" + std::to_string(victim + 1)) != std::string::npos &&
        l.find("old plan: ") != std::string::npos && l.find("new plan: ") != std::string::npos) {
      logged = true;
    }
  }
  EXPECT_TRUE(logged) << "the failover is logged with its cause and both plans";
  // The run after the failover works as usual on the new plan (and reports skip the lost worker).
  auto again = (*coord)->generate(*f.tok, f.requests, gen, parallel);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(want[i].tokens, (*again)[i].tokens) << "prompt " << i;
  EXPECT_EQ((*coord)->last_run_stats().n_failovers, 0);
  auto devices = (*coord)->devices();
  ASSERT_TRUE(devices.has_value()) << devices.error().message;
}

TEST(Failover, WorkerLostMidDecodeGivesTheSingleProcessOutput) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  for (bool ring : {false, true}) {
    for (size_t victim : {0u, 1u, 2u}) {
      for (int parallel : {1, 3}) {
        SCOPED_TRACE(std::string(ring ? "ring" : "chain") + " victim w" + std::to_string(victim + 1) + " parallel " +
                     std::to_string(parallel));
        run_with_kill(f, ring, victim, /*after_pieces=*/7, parallel);
      }
    }
  }
}

TEST(Failover, WorkerLostBeforeTheFirstTokenGivesTheSingleProcessOutput) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  run_with_kill(f, false, 1, /*after_pieces=*/0, 3);
}

TEST(Failover, NoReplanOrNoFeasiblePlanFailsAtOnceWithAClearError) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  model::GenerateOptions gen;
  gen.n_predict = 40;
  gen.sampling.temperature = 0;
  for (bool with_replan : {false, true}) {
    test::InprocCluster cluster(2);
    runtime::CoordinatorOptions co;
    co.n_ctx = 128;
    int n_asked = 0;
    if (with_replan) {
      co.replan = [&](const std::vector<int>&) -> Expected<std::vector<Stage>> {
        ++n_asked;
        return make_error(ErrorCode::resource, "units 1-6 need 12.0 MiB but the survivors have 4.0 MiB");
      };
    }
    auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
    ASSERT_TRUE(coord.has_value()) << coord.error().message;
    auto stages = runtime::split_even(f.model->n_units(), 2, false);
    ASSERT_TRUE(stages.has_value());
    ASSERT_TRUE((*coord)->load(*stages).has_value());
    int pieces = 0;
    auto on_text = [&](size_t, std::string_view) {
      if (++pieces == 5) cluster.kill(1);
    };
    const auto t0 = std::chrono::steady_clock::now();
    auto got = (*coord)->generate(*f.tok, f.requests, gen, 3, on_text);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_FALSE(got.has_value());
    EXPECT_LT(s, 10.0) << "no waiting out the 120 s worker timeout";
    const std::string& msg = got.error().message;
    EXPECT_NE(msg.find("w2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("stopped answering"), std::string::npos) << msg;
    if (with_replan) {
      EXPECT_EQ(n_asked, 1);
      EXPECT_NE(msg.find("no plan fits the 1 surviving workers: units 1-6 need 12.0 MiB"), std::string::npos) << msg;
    } else {
      EXPECT_NE(msg.find("cannot be re-solved without w2"), std::string::npos) << msg;
    }
  }
}

TEST(Failover, AWorkerOutsideThePlanLostCostsNothing) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  model::GenerateOptions gen;
  gen.n_predict = 20;
  gen.sampling.temperature = 0;
  const auto want = single_process(f, gen, 128);
  test::InprocCluster cluster(3);
  runtime::CoordinatorOptions co;
  co.n_ctx = 128;
  int n_asked = 0;
  co.replan = [&](const std::vector<int>&) -> Expected<std::vector<Stage>> {
    ++n_asked;
    return make_error(ErrorCode::internal, "not expected");
  };
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  // Workers 1 and 3 only (an optimal plan may leave one idle).
  ASSERT_TRUE((*coord)->load({Stage{0, 0, 2}, Stage{1, 3, 4}, Stage{3, 5, 6}}).has_value());
  cluster.kill(1);
  auto got = (*coord)->generate(*f.tok, f.requests, gen, 3);
  ASSERT_TRUE(got.has_value()) << got.error().message;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(want[i].tokens, (*got)[i].tokens) << "prompt " << i;
  EXPECT_EQ((*coord)->last_run_stats().n_failovers, 0);
  EXPECT_EQ(n_asked, 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto devices = (*coord)->devices();  // asks the live workers only, without waiting for w2
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(devices.has_value()) << devices.error().message;
  EXPECT_LT(s, 5.0);
  EXPECT_FALSE((*coord)->worker_alive(2));
  EXPECT_TRUE((*coord)->worker_alive(1));
  EXPECT_GT((*devices)[1].rss_bytes, 0u);
  EXPECT_EQ((*devices)[2].rss_bytes, 0u);
}

TEST(Failover, AWorkerOfThePlanLostAfterTheRunLeavesTheDeviceReportQuick) {
  // The plan still names the lost worker (nothing is generating, so nothing re-plans): the report
  // must read the live workers' answers and drop the lost one, not wait out its 30 s.
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  model::GenerateOptions gen;
  gen.n_predict = 8;
  gen.sampling.temperature = 0;
  test::InprocCluster cluster(2);
  runtime::CoordinatorOptions co;
  co.n_ctx = 128;
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  ASSERT_TRUE((*coord)->load({Stage{0, 0, 2}, Stage{1, 3, 4}, Stage{2, 5, 6}}).has_value());
  ASSERT_TRUE((*coord)->generate(*f.tok, f.requests, gen, 3).has_value());
  cluster.kill(1);  // worker 2, the plan's last stage
  const auto t0 = std::chrono::steady_clock::now();
  auto devices = (*coord)->devices();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(devices.has_value()) << devices.error().message;
  EXPECT_LT(s, 5.0);
  EXPECT_FALSE((*coord)->worker_alive(2));
  EXPECT_GT((*devices)[1].rss_bytes, 0u);
}

}  // namespace
}  // namespace ll
