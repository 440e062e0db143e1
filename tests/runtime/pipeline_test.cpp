// The distributed pipeline gives exactly the single-process output: every contiguous split of
// stories260K over 1 to 4 workers, with and without ring, greedy and sampled, one and several
// sequences in flight.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "inproc_cluster.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "runtime/coordinator.h"
#include "runtime/split.h"

namespace ll {
namespace {

using runtime::Stage;

struct Fixture {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::Tokenizer> tok;
  std::vector<std::vector<int32_t>> prompts;
};

Fixture load_stories() {
  Fixture f;
  auto m = model::Model::load(test::shared_path("models/stories260K.gguf"));
  EXPECT_TRUE(m.has_value());
  if (!m) return f;
  f.model = std::move(*m);
  auto t = model::Tokenizer::from_gguf(f.model->file());
  EXPECT_TRUE(t.has_value());
  f.tok = std::make_unique<model::Tokenizer>(std::move(*t));
  for (const char* p : {"Once upon a time", "The cat sat", "Lily and Ben went to the park. They saw a big"}) {
    f.prompts.push_back(f.tok->encode(p, true));
  }
  return f;
}

// Reference: one process, every unit, each prompt on its own (seed + i as the CLI does).
std::vector<model::GenerateResult> single_process(const Fixture& f, const model::GenerateOptions& gen, int64_t n_ctx) {
  ThreadPool pool(1);
  std::vector<model::GenerateResult> out;
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    auto runner = model::UnitRunner::create(*f.model, 0, f.model->n_units() - 1, pool, n_ctx);
    EXPECT_TRUE(runner.has_value());
    model::GenerateOptions g = gen;
    g.sampling.seed = gen.sampling.seed + i;
    auto r = model::generate(**runner, *f.tok, f.prompts[i], g);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    out.push_back(std::move(*r));
  }
  return out;
}

// Every way to cut units [first, last] into k non-empty contiguous ranges.
void compositions(int first, int last, int k, std::vector<std::pair<int, int>>& cur,
                  const std::function<void(const std::vector<std::pair<int, int>>&)>& fn) {
  if (k == 0) {
    if (first > last) fn(cur);
    return;
  }
  for (int end = first; end <= last - (k - 1); ++end) {
    cur.emplace_back(first, end);
    compositions(end + 1, last, k - 1, cur, fn);
    cur.pop_back();
  }
}

// Every valid split of a model with n_units units over n_workers workers.
std::vector<std::vector<Stage>> all_splits(int n_units, int n_workers, bool ring) {
  std::vector<std::vector<Stage>> out;
  const int last = n_units - 1;
  auto emit = [&](int a, int mid_last, int b) {
    std::vector<std::pair<int, int>> cur;
    compositions(a + 1, mid_last, n_workers, cur, [&](const auto& parts) {
      std::vector<Stage> st{{0, 0, a}};
      int dev = 1;
      for (auto [x, y] : parts) st.push_back(Stage{dev++, x, y});
      if (ring) st.push_back(Stage{0, b, last});
      out.push_back(st);
    });
  };
  for (int a = 0; a < last; ++a) {  // the origin holds 0..a
    if (!ring) {
      emit(a, last, -1);
    } else {
      for (int b = a + 2; b <= last; ++b) emit(a, b - 1, b);  // and b..last
    }
  }
  return out;
}

void expect_same(const std::vector<model::GenerateResult>& want, const std::vector<model::GenerateResult>& got,
                 const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].tokens, got[i].tokens) << what << " prompt " << i;
    EXPECT_EQ(want[i].text, got[i].text) << what << " prompt " << i;
    EXPECT_EQ(model::stop_reason_name(want[i].stop_reason), model::stop_reason_name(got[i].stop_reason))
        << what << " prompt " << i;
  }
}

std::vector<runtime::Request> requests(const Fixture& f) {
  std::vector<runtime::Request> r;
  for (const auto& p : f.prompts) r.push_back(runtime::Request{p});
  return r;
}

TEST(Pipeline, EveryContiguousSplitOverOneToFourWorkersMatchesOneProcess) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  model::GenerateOptions gen;
  gen.n_predict = 24;
  gen.sampling.temperature = 0;
  const int64_t n_ctx = 96;
  const auto want = single_process(f, gen, n_ctx);
  const int n_units = static_cast<int>(f.model->n_units());
  int n_checked = 0;
  for (int k = 1; k <= 4; ++k) {
    test::InprocCluster cluster(k);
    for (bool ring : {false, true}) {
      runtime::CoordinatorOptions co;
      co.ring = ring;
      co.n_ctx = n_ctx;
      co.n_ubatch = 3;  // several micro-batches per prompt
      auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
      ASSERT_TRUE(coord.has_value()) << coord.error().message;
      for (const auto& stages : all_splits(n_units, k, ring)) {
        const std::string what = std::string(ring ? "ring " : "chain ") + runtime::format_split(stages);
        auto loaded = (*coord)->load(stages);
        ASSERT_TRUE(loaded.has_value()) << what << ": " << loaded.error().message;
        auto got = (*coord)->generate(*f.tok, requests(f), gen, /*parallel=*/static_cast<int>(f.prompts.size()));
        ASSERT_TRUE(got.has_value()) << what << ": " << got.error().message;
        expect_same(want, *got, what);
        ++n_checked;
      }
    }
  }
  // 56 chain + 56 ring splits of 7 units over 1..4 workers.
  EXPECT_EQ(n_checked, 112);
}

TEST(Pipeline, SampledAndPenalisedGenerationMatchesOneProcess) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  test::InprocCluster cluster(2);
  for (float penalty : {1.0f, 1.3f}) {  // 1.0: the head worker samples; 1.3: logits come back to the origin
    for (bool ring : {false, true}) {
      model::GenerateOptions gen;
      gen.n_predict = 30;
      gen.sampling.temperature = 0.9f;
      gen.sampling.seed = 1234;
      gen.sampling.repeat_penalty = penalty;
      const auto want = single_process(f, gen, 128);
      runtime::CoordinatorOptions co;
      co.ring = ring;
      co.n_ctx = 128;
      auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
      ASSERT_TRUE(coord.has_value()) << coord.error().message;
      auto stages = runtime::split_even(f.model->n_units(), 2, ring);
      ASSERT_TRUE(stages.has_value());
      ASSERT_TRUE((*coord)->load(*stages).has_value());
      for (int parallel : {1, 3}) {
        auto got = (*coord)->generate(*f.tok, requests(f), gen, parallel);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        expect_same(want, *got, "penalty " + std::to_string(penalty) + (ring ? " ring" : " chain") + " parallel " +
                                    std::to_string(parallel));
      }
      // The map says what crosses the network.
      const auto map = (*coord)->transmission_map(gen);
      ASSERT_FALSE(map.empty());
      bool logits_leave = false, token_from_head = false;
      for (const auto& t : map) {
        if (t.what.find("logits") != std::string::npos) logits_leave = true;
        if (t.what.find("token id") != std::string::npos) token_from_head = true;
      }
      EXPECT_EQ(logits_leave, !ring && penalty != 1.0f);
      EXPECT_EQ(token_from_head, !ring && penalty == 1.0f);
      if (ring) {
        for (const auto& t : map) EXPECT_NE(t.what.find("hidden state"), std::string::npos) << t.what;
      }
    }
  }
}

TEST(Pipeline, StopStringsContextEndAndZeroTokensBehaveAsOneProcess) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  test::InprocCluster cluster(3);
  struct Case {
    int64_t n_predict;
    int64_t n_ctx;
    std::vector<std::string> stop;
  };
  for (const Case& cs : {Case{0, 64, {}}, Case{-1, 40, {}}, Case{50, 128, {"the", "."}}}) {
    model::GenerateOptions gen;
    gen.n_predict = cs.n_predict;
    gen.sampling.temperature = 0;
    gen.stop = cs.stop;
    const auto want = single_process(f, gen, cs.n_ctx);
    runtime::CoordinatorOptions co;
    co.n_ctx = cs.n_ctx;
    auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
    ASSERT_TRUE(coord.has_value());
    ASSERT_TRUE((*coord)->load(*runtime::split_even(f.model->n_units(), 3, false)).has_value());
    auto got = (*coord)->generate(*f.tok, requests(f), gen, 2);
    ASSERT_TRUE(got.has_value()) << got.error().message;
    expect_same(want, *got, "n_predict " + std::to_string(cs.n_predict));
  }
}

// Each request may carry its own limits, sampling, seed and stop strings (as an HTTP server batches
// requests that ask for different ones): each gives what one process gives with those options.
TEST(Pipeline, RequestsWithTheirOwnOptionsMatchOneProcessEach) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  std::vector<model::GenerateOptions> opts(3);
  opts[0].n_predict = 12;
  opts[0].sampling.temperature = 0;
  opts[1].n_predict = 30;
  opts[1].sampling.temperature = 0.9f;
  opts[1].sampling.top_k = 0;
  opts[1].sampling.seed = 77;
  opts[2].n_predict = 40;
  opts[2].sampling.temperature = 0.7f;
  opts[2].sampling.seed = 5;
  opts[2].stop = {"."};
  std::vector<model::GenerateResult> want;
  for (size_t i = 0; i < opts.size(); ++i) {
    ThreadPool pool(1);
    auto runner = model::UnitRunner::create(*f.model, 0, f.model->n_units() - 1, pool, 128);
    ASSERT_TRUE(runner.has_value());
    auto r = model::generate(**runner, *f.tok, f.prompts[i], opts[i]);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    want.push_back(std::move(*r));
  }
  test::InprocCluster cluster(2);
  for (float penalty : {1.0f, 1.2f}) {  // worker-side and origin-side sampling
    for (auto& o : opts) o.sampling.repeat_penalty = 1.0f;
    opts[0].sampling.repeat_penalty = penalty;  // greedy: a penalty on one request moves sampling to the origin
    runtime::CoordinatorOptions co;
    co.n_ctx = 128;
    auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
    ASSERT_TRUE(coord.has_value()) << coord.error().message;
    ASSERT_TRUE((*coord)->load(*runtime::split_even(f.model->n_units(), 2, false)).has_value());
    std::vector<runtime::Request> reqs;
    for (size_t i = 0; i < opts.size(); ++i) reqs.push_back(runtime::Request{f.prompts[i], opts[i]});
    model::GenerateOptions other;  // the call's options must not leak into requests that have their own
    other.n_predict = 3;
    other.sampling.temperature = 2;
    auto got = (*coord)->generate(*f.tok, reqs, other, 3);
    ASSERT_TRUE(got.has_value()) << got.error().message;
    if (penalty == 1.0f) {
      expect_same(want, *got, "own options");
    } else {
      EXPECT_EQ((*got)[1].tokens, want[1].tokens);
      EXPECT_EQ((*got)[2].tokens, want[2].tokens);
    }
    EXPECT_EQ((*got)[1].seed, 77u);
    EXPECT_EQ((*got)[2].seed, 5u);
    EXPECT_EQ(model::stop_reason_name((*got)[2].stop_reason), std::string("stop"));
  }
}

// A cancelled request ends after the token that found it cancelled; the others are untouched.
TEST(Pipeline, ACancelledRequestEndsEarlyAndTheOthersDoNot) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  model::GenerateOptions gen;
  gen.n_predict = 30;
  gen.sampling.temperature = 0;
  const auto want = single_process(f, gen, 96);
  test::InprocCluster cluster(2);
  runtime::CoordinatorOptions co;
  co.n_ctx = 96;
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value());
  ASSERT_TRUE((*coord)->load(*runtime::split_even(f.model->n_units(), 2, false)).has_value());
  auto reqs = requests(f);
  int asked = 0;
  reqs[1].cancelled = [&asked] { return ++asked >= 5; };  // cancelled once 5 tokens were generated
  auto got = (*coord)->generate(*f.tok, reqs, gen, 3);
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ((*got)[0].tokens, want[0].tokens);
  EXPECT_EQ((*got)[2].tokens, want[2].tokens);
  ASSERT_EQ((*got)[1].tokens.size(), 5u);
  EXPECT_TRUE(std::equal((*got)[1].tokens.begin(), (*got)[1].tokens.end(), want[1].tokens.begin()));
}

// More decode batches allowed than stages (--decode-batches 4 over two worker stages): the
// sequences already decoding must not take every slot, or a fourth request's prefill waits until
// they finish and its tokens come after all of theirs instead of beside them.
TEST(Pipeline, MoreDecodeBatchesThanStagesStillAdmitEveryRequest) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  f.prompts.push_back(f.tok->encode("One day a little bird", true));
  model::GenerateOptions gen;
  gen.n_predict = 24;
  gen.sampling.temperature = 0;
  const auto want = single_process(f, gen, 96);
  test::InprocCluster cluster(2);
  runtime::CoordinatorOptions co;
  co.n_ctx = 96;
  co.decode_batches = 4;
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value());
  ASSERT_TRUE((*coord)->load(*runtime::split_even(f.model->n_units(), 2, false)).has_value());
  const auto& stages = (*coord)->stages();
  ASSERT_EQ(std::count_if(stages.begin(), stages.end(), [](const Stage& st) { return st.device != 0; }), 2);
  auto reqs = requests(f);
  std::vector<size_t> order;  // which request each generated token belongs to, in the order they came
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].cancelled = [&order, i] {
      order.push_back(i);
      return false;
    };
  }
  auto got = (*coord)->generate(*f.tok, reqs, gen, 4);
  ASSERT_TRUE(got.has_value()) << got.error().message;
  expect_same(want, *got, "4 requests, 4 decode batches");
  const auto first_of_last = std::find(order.begin(), order.end(), size_t{3});
  const auto last_of_first = std::find(order.rbegin(), order.rend(), size_t{0});
  ASSERT_NE(first_of_last, order.end());
  ASSERT_NE(last_of_first, order.rend());
  EXPECT_LT(first_of_last - order.begin(), order.rend() - last_of_first - 1)
      << "the fourth request produced its first token only after the first request had finished";
}

// By default one decode batch per stage that computes: the origin's stage counts when it holds
// blocks, not when it holds only the embedding (a lookup). Same tokens either way.
TEST(Pipeline, OneDecodeBatchPerComputingStageByDefault) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  model::GenerateOptions gen;
  gen.n_predict = 12;
  gen.sampling.temperature = 0;
  const auto want = single_process(f, gen, 64);
  test::InprocCluster cluster(2);
  runtime::CoordinatorOptions co;
  co.n_ctx = 64;
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value());
  struct Case {
    std::vector<Stage> stages;
    size_t batches;
  };
  for (const Case& c : {Case{{{0, 0, 0}, {1, 1, 3}, {2, 4, 6}}, 2}, Case{{{0, 0, 2}, {1, 3, 4}, {2, 5, 6}}, 3}}) {
    ASSERT_TRUE((*coord)->load(c.stages).has_value());
    auto got = (*coord)->generate(*f.tok, requests(f), gen, 3);
    ASSERT_TRUE(got.has_value()) << got.error().message;
    expect_same(want, *got, "origin up to unit " + std::to_string(c.stages[0].last_unit));
    EXPECT_EQ((*coord)->last_run_stats().max_decode_batches_in_flight, c.batches)
        << "origin up to unit " << c.stages[0].last_unit;
  }
}

TEST(DecodeOverlap, CountsTheTokensWhileEverySequenceDecodes) {
  // Sequence 0 starts at 10 and ends at 100; sequence 1 starts at 30 (its prompt ran first) and ends
  // at 130: both decode in (30, 100]. Tokens in it: 0's at 40..100 (7), 1's at 45..95 (6).
  const std::vector<double> a{10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
  const std::vector<double> b{30, 45, 55, 65, 75, 85, 95, 105, 115, 130};
  runtime::DecodeOverlap o = runtime::decode_overlap({a, b});
  EXPECT_DOUBLE_EQ(o.ms, 70.0);
  EXPECT_EQ(o.n_tokens, 13);
  // A sequence with a single token (stopped at once) takes no part; one sequence alone has no overlap.
  o = runtime::decode_overlap({a, b, {50}});
  EXPECT_DOUBLE_EQ(o.ms, 70.0);
  EXPECT_EQ(o.n_tokens, 13);
  o = runtime::decode_overlap({a});
  EXPECT_EQ(o.ms, 0.0);
  EXPECT_EQ(o.n_tokens, 0);
  // One after the other (as the single-process path runs them): no overlap.
  o = runtime::decode_overlap({{0, 1, 2}, {3, 4, 5}});
  EXPECT_EQ(o.ms, 0.0);
  EXPECT_EQ(o.n_tokens, 0);
  o = runtime::decode_overlap({});
  EXPECT_EQ(o.n_tokens, 0);
}

TEST(PrefillMicroBatches, FewestNearEqualBatchesOfAtMostTheSize) {
  EXPECT_EQ(runtime::prefill_micro_batches(254, 16), (std::vector<int64_t>{16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 15, 15}));
  EXPECT_EQ(runtime::prefill_micro_batches(33, 16), (std::vector<int64_t>{11, 11, 11}));
  EXPECT_EQ(runtime::prefill_micro_batches(5, 16), (std::vector<int64_t>{5}));
  EXPECT_EQ(runtime::prefill_micro_batches(3, 1), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_TRUE(runtime::prefill_micro_batches(0, 16).empty());
  EXPECT_EQ(runtime::prefill_micro_batches(7, 0), (std::vector<int64_t>(7, 1)));  // (a size below 1 counts as 1)
  for (int64_t n = 1; n <= 300; n += 7) {
    for (int64_t cap : {1, 3, 16, 64}) {
      const auto sizes = runtime::prefill_micro_batches(n, cap);
      int64_t sum = 0;
      for (int64_t b : sizes) {
        EXPECT_GE(b, 1);
        EXPECT_LE(b, cap);
        EXPECT_LE(sizes.front() - b, 1) << n << " / " << cap;
        sum += b;
      }
      EXPECT_EQ(sum, n);
      EXPECT_EQ(static_cast<int64_t>(sizes.size()), (n + cap - 1) / cap);
    }
  }
}

TEST(Pipeline, PlannerSplitsMayUseSomeWorkersInAnyOrderOrNone) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  model::GenerateOptions gen;
  gen.n_predict = 20;
  gen.sampling.temperature = 0;
  const auto want = single_process(f, gen, 64);
  test::InprocCluster cluster(3);
  for (bool ring : {false, true}) {
    runtime::CoordinatorOptions co;
    co.ring = ring;
    co.n_ctx = 64;
    auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
    ASSERT_TRUE(coord.has_value());
    const std::vector<std::vector<Stage>> splits =
        ring ? std::vector<std::vector<Stage>>{{{0, 0, 1}, {3, 2, 3}, {1, 4, 5}, {0, 6, 6}},
                                               {{0, 0, 0}, {2, 1, 5}, {0, 6, 6}},
                                               {{0, 0, 3}, {0, 4, 6}},  // the origin alone, as two stages
                                               {{0, 0, 6}}}              // or one
             : std::vector<std::vector<Stage>>{{{0, 0, 0}, {3, 1, 2}, {1, 3, 6}}, {{0, 0, 2}, {2, 3, 6}}, {{0, 0, 6}}};
    for (const auto& stages : splits) {
      const std::string what = std::string(ring ? "ring " : "chain ") + runtime::format_split(stages);
      auto loaded = (*coord)->load(stages);
      ASSERT_TRUE(loaded.has_value()) << what << ": " << loaded.error().message;
      auto got = (*coord)->generate(*f.tok, requests(f), gen, 2);
      ASSERT_TRUE(got.has_value()) << what << ": " << got.error().message;
      expect_same(want, *got, what);
      // Unused workers are reported without units.
      auto devs = (*coord)->devices();
      ASSERT_TRUE(devs.has_value());
      size_t n_with_units = 0;
      for (const auto& d : *devs) n_with_units += d.ranges.empty() ? 0 : 1;
      size_t n_worker_stages = 0;
      for (const auto& st : stages) n_worker_stages += st.device != 0 ? 1 : 0;
      EXPECT_EQ(n_with_units, 1 + n_worker_stages) << what;
    }
  }
}

TEST(Pipeline, ReportsMeasuredComputePerStageAndAggregateDecode) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  test::InprocCluster cluster(2);
  runtime::CoordinatorOptions co;
  co.n_ctx = 64;
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value());
  ASSERT_TRUE((*coord)->load({{0, 0, 1}, {1, 2, 3}, {2, 4, 6}}).has_value());
  model::GenerateOptions gen;
  gen.n_predict = 16;
  gen.sampling.temperature = 0;
  auto got = (*coord)->generate(*f.tok, requests(f), gen, 3);
  ASSERT_TRUE(got.has_value()) << got.error().message;
  const runtime::RunStats st = (*coord)->last_run_stats();
  ASSERT_EQ(st.stage_compute_ms_per_token.size(), 3u);
  for (double ms : st.stage_compute_ms_per_token) EXPECT_GT(ms, 0.0);
  int64_t n_decode = 0;
  for (const auto& r : *got) n_decode += static_cast<int64_t>(r.tokens.size()) - 1;
  EXPECT_EQ(st.n_decode_tokens, n_decode);
  EXPECT_GT(st.aggregate_decode_tok_s(), 0.0);
  EXPECT_LE(st.decode_span_ms, st.wall_ms);
  // Three sequences of 16 tokens decoding together: they overlap, inside the whole decode span.
  EXPECT_GT(st.concurrent_decode_ms, 0.0);
  EXPECT_LE(st.concurrent_decode_ms, st.decode_span_ms);
  EXPECT_GT(st.n_concurrent_decode_tokens, 0);
  EXPECT_LE(st.n_concurrent_decode_tokens, st.n_decode_tokens);
}

TEST(Pipeline, RefusesBadSplitsAndPromptsWithClearErrors) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Fixture f = load_stories();
  ASSERT_TRUE(f.model);
  test::InprocCluster cluster(2);
  runtime::CoordinatorOptions co;
  co.n_ctx = 16;
  auto coord = runtime::Coordinator::connect(*f.model, cluster.net(), cluster.endpoints(), co);
  ASSERT_TRUE(coord.has_value());
  // Not contiguous; a worker twice; a worker that does not exist; the origin in the middle; not on the origin first.
  EXPECT_FALSE((*coord)->load({{0, 0, 0}, {1, 1, 3}, {2, 5, 6}}).has_value());
  EXPECT_FALSE((*coord)->load({{0, 0, 0}, {1, 1, 3}, {1, 4, 6}}).has_value());
  EXPECT_FALSE((*coord)->load({{0, 0, 0}, {3, 1, 6}}).has_value());
  EXPECT_FALSE((*coord)->load({{0, 0, 0}, {0, 1, 3}, {1, 4, 6}}).has_value());
  EXPECT_FALSE((*coord)->load({{1, 0, 6}}).has_value());
  ASSERT_TRUE((*coord)->load(*runtime::split_even(7, 2, false)).has_value());
  model::GenerateOptions gen;
  gen.sampling.temperature = 0;
  std::vector<runtime::Request> too_long{runtime::Request{std::vector<int32_t>(20, 1)}};
  auto r = (*coord)->generate(*f.tok, too_long, gen, 1);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("does not fit a context of 16"), std::string::npos) << r.error().message;
  EXPECT_FALSE(runtime::Coordinator::connect(*f.model, cluster.net(), {"inproc://nobody"}, co).has_value());
}

}  // namespace
}  // namespace ll
