// Coordinator::measure_profile on a live (in-process) cluster gives a valid profile the planner
// can solve, with one entry per unit and device, and leaves the workers ready for a real split.
#include <gtest/gtest.h>

#include "common/shared_files.h"
#include "inproc_cluster.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "plan/plan.h"
#include "runtime/coordinator.h"

namespace ll {
namespace {

TEST(MeasureProfile, LiveDevicesGiveASolvableProfile) {
  const std::string path = test::shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(path);
  auto m = model::Model::load(path);
  ASSERT_TRUE(m.has_value());
  runtime::WorkerOptions wo;
  wo.memory_limit_bytes = 512u << 20;
  test::InprocCluster cluster(3, wo);
  runtime::CoordinatorOptions co;
  co.n_ctx = 64;
  auto coord = runtime::Coordinator::connect(**m, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  EXPECT_FALSE((*coord)->measure_profile(0).has_value());
  EXPECT_EQ((*coord)->batch_factors(), std::vector<double>{1.0});  // not measured
  auto p = (*coord)->measure_profile(4);
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ((*coord)->batch_factors(), std::vector<double>{1.0});  // profile_batch_tokens = 1: not asked for
  ASSERT_EQ(p->n_units(), (*m)->n_units());
  ASSERT_EQ(p->n_devices(), 4);
  EXPECT_EQ(p->devices[0].name, "origin");
  EXPECT_EQ(p->devices[1].name, "w1");
  for (const auto& d : p->devices) {
    for (int u = 1; u < p->n_units(); ++u) EXPECT_GT(d.unit_ms[static_cast<size_t>(u)], 0.0) << d.name << " unit " << u;
  }
  // Workers report their --memory-limit, less the runtime reserve.
  EXPECT_EQ(p->devices[1].memory_bytes, (512u << 20) - (128u << 20));
  for (int a = 0; a < 4; ++a) {
    for (int b = 0; b < 4; ++b) {
      if (a == b) continue;
      EXPECT_GE(p->latency_ms[a][b], 0.0);
      EXPECT_LT(p->latency_ms[a][b], 1000.0);
      EXPECT_GT(p->bandwidth_bytes_per_s[a][b], 0.0);
    }
  }
  EXPECT_EQ(p->units[0].name, "embed");
  EXPECT_EQ(p->units.back().name, "head");
  EXPECT_GT(p->units[1].memory_bytes, (*m)->unit_weight_bytes(1));  // weights + KV cache
  // The planner takes it, and the profile round-trips through its JSON.
  plan::SolveOptions so;
  so.time_limit_s = 5;
  auto plan = plan::solve(*p, so);
  ASSERT_TRUE(plan.has_value()) << plan.error().message;
  auto again = plan::parse_profile(plan::profile_to_json(*p));
  ASSERT_TRUE(again.has_value()) << again.error().message;
  // Generation needs a split again, and then works as before.
  auto tok = model::Tokenizer::from_gguf((*m)->file());
  model::GenerateOptions gen;
  gen.n_predict = 8;
  gen.sampling.temperature = 0;
  EXPECT_FALSE((*coord)->generate(*tok, {runtime::Request{tok->encode("Hi", true)}}, gen, 1).has_value());
  // The planner's own plan runs and gives one process's tokens.
  so.objective = plan::Objective::throughput;
  auto tp = plan::solve(*p, so);
  ASSERT_TRUE(tp.has_value()) << tp.error().message;
  const auto stages = tp->stages;  // whatever it chose, the origin alone included
  ASSERT_TRUE((*coord)->load(stages).has_value()) << runtime::format_split(stages);
  const auto prompt = tok->encode("Once upon a time", true);
  auto r = (*coord)->generate(*tok, {runtime::Request{prompt}}, gen, 1);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  ThreadPool pool(1);
  auto runner = model::UnitRunner::create(**m, 0, (*m)->n_units() - 1, pool, 64);
  auto want = model::generate(**runner, *tok, prompt, gen);
  ASSERT_TRUE(want.has_value());
  EXPECT_EQ((*r)[0].tokens, want->tokens) << runtime::format_split(stages);
}

TEST(MeasureProfile, DecodeBatchFactorsAreTimedWhenAskedFor) {
  const std::string path = test::shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(path);
  auto m = model::Model::load(path);
  ASSERT_TRUE(m.has_value());
  test::InprocCluster cluster(1);
  runtime::CoordinatorOptions co;
  co.n_ctx = 64;
  co.profile_batch_tokens = 3;
  co.profile_rounds = 1;
  auto coord = runtime::Coordinator::connect(**m, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  auto p = (*coord)->measure_profile(4);
  ASSERT_TRUE(p.has_value()) << p.error().message;
  const std::vector<double> f = (*coord)->batch_factors();
  ASSERT_EQ(f.size(), 3u);  // 1, 2 and 3 tokens per step
  EXPECT_EQ(f[0], 1.0);
  for (size_t b = 2; b <= f.size(); ++b) {
    EXPECT_GE(f[b - 1], 1.0) << b;  // a step of b tokens takes at least one token's time,
    EXPECT_LE(f[b - 1], static_cast<double>(b)) << b;  // at most b of them (the ratio is clamped to that)
  }
  // The planner predicts a batched run with them: two batches of one token each over one stage
  // that holds everything cost the same per token as one batch of one token.
  const std::vector<runtime::Stage> alone{{0, 0, p->n_units() - 1}};
  plan::SolveOptions so;
  auto one = plan::batched_ms_per_token(*p, alone, so, {1}, f);
  auto two = plan::batched_ms_per_token(*p, alone, so, {1, 1}, f);
  auto pair = plan::batched_ms_per_token(*p, alone, so, {2}, f);
  ASSERT_TRUE(one && two && pair);
  EXPECT_DOUBLE_EQ(*one, *two);
  EXPECT_DOUBLE_EQ(*pair, *one * f[1] / 2);
}

}  // namespace
}  // namespace ll
