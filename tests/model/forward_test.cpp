// The forward pass over units: results must not depend on how units are grouped into segments,
// on micro-batch sizes, on batching several sequences together, or on the thread count.
#include "model/forward.h"

#include <gtest/gtest.h>

#include <cstring>

#include "common/shared_files.h"

namespace ll::model {
namespace {

const std::vector<int32_t> k_prompt = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};

std::unique_ptr<Model> load_stories() {
  auto m = Model::load(test::shared_path("models/stories260K.gguf"));
  EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().message);
  return m ? std::move(m).value() : nullptr;
}

// Runs the prompt through a chain of segments (split points given as the first unit of each
// segment after the first) with prefill micro-batches of n_batch; returns the logits of every token.
std::vector<float> run_chain(const Model& model, const std::vector<int64_t>& cuts, int64_t n_batch, int n_threads) {
  ThreadPool pool(n_threads);
  std::vector<std::unique_ptr<UnitRunner>> segs;
  int64_t first = 0;
  std::vector<int64_t> bounds = cuts;
  bounds.push_back(model.n_units());
  for (int64_t b : bounds) {
    auto r = UnitRunner::create(model, first, b - 1, pool, 64);
    EXPECT_TRUE(r.has_value());
    segs.push_back(std::move(r).value());
    first = b;
  }
  std::vector<float> all_logits;
  const int64_t n = static_cast<int64_t>(k_prompt.size());
  for (int64_t s = 0; s < n; s += n_batch) {
    std::vector<BatchToken> batch;
    for (int64_t i = s; i < std::min(n, s + n_batch); ++i) {
      batch.push_back({0, static_cast<int32_t>(i), k_prompt[static_cast<size_t>(i)], true});
    }
    std::vector<float> in, out;
    for (size_t k = 0; k < segs.size(); ++k) {
      auto res = segs[k]->forward(batch, k == 0 ? nullptr : in.data(), out);
      EXPECT_TRUE(res.has_value()) << (res ? "" : res.error().message);
      in.swap(out);
    }
    all_logits.insert(all_logits.end(), in.begin(), in.end());
  }
  return all_logits;
}

void expect_bit_identical(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

TEST(Forward, EveryContiguousSplitGivesIdenticalLogits) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_stories();
  ASSERT_TRUE(model);
  const std::vector<float> ref = run_chain(*model, {}, 64, 1);
  ASSERT_EQ(ref.size(), k_prompt.size() * 512);
  const int64_t U = model->n_units();  // 7
  // All splits into up to 4 segments: choose up to 3 cut points among 1..U-1.
  int n_checked = 0;
  for (int mask = 0; mask < (1 << (U - 1)); ++mask) {
    if (__builtin_popcount(static_cast<unsigned>(mask)) > 3) continue;
    std::vector<int64_t> cuts;
    for (int64_t c = 1; c < U; ++c) {
      if (mask & (1 << (c - 1))) cuts.push_back(c);
    }
    expect_bit_identical(ref, run_chain(*model, cuts, 64, 2), "split mask " + std::to_string(mask));
    ++n_checked;
  }
  EXPECT_EQ(n_checked, 42);
}

TEST(Forward, MicroBatchesAndThreadsGiveIdenticalLogits) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_stories();
  ASSERT_TRUE(model);
  const std::vector<float> ref = run_chain(*model, {}, 64, 1);
  for (int64_t nb : {1, 2, 3, 5, 12}) {
    for (int t : {1, 2, 3, 4}) {
      expect_bit_identical(ref, run_chain(*model, {3}, nb, t),
                           "batch " + std::to_string(nb) + " threads " + std::to_string(t));
    }
  }
}

TEST(Forward, SequencesBatchedTogetherMatchSequencesAlone) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_stories();
  ASSERT_TRUE(model);
  ThreadPool pool(2);
  auto alone = UnitRunner::create(*model, 0, model->n_units() - 1, pool, 64).value();
  auto mixed = UnitRunner::create(*model, 0, model->n_units() - 1, pool, 64).value();
  const std::vector<int32_t> other = {1, 291, 376, 400, 428, 286};
  // Sequence 7 alone, then sequence 9 alone.
  std::vector<float> a7, a9, out;
  for (size_t i = 0; i < k_prompt.size(); ++i) {
    BatchToken bt{7, static_cast<int32_t>(i), k_prompt[i], true};
    ASSERT_TRUE(alone->forward({&bt, 1}, nullptr, out).has_value());
    a7.insert(a7.end(), out.begin(), out.end());
  }
  for (size_t i = 0; i < other.size(); ++i) {
    BatchToken bt{9, static_cast<int32_t>(i), other[i], true};
    ASSERT_TRUE(alone->forward({&bt, 1}, nullptr, out).has_value());
    a9.insert(a9.end(), out.begin(), out.end());
  }
  // Both in one interleaved batch.
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < k_prompt.size(); ++i) {
    batch.push_back({7, static_cast<int32_t>(i), k_prompt[i], true});
    if (i < other.size()) batch.push_back({9, static_cast<int32_t>(i), other[i], true});
  }
  ASSERT_TRUE(mixed->forward(batch, nullptr, out).has_value());
  std::vector<float> m7, m9;
  for (size_t b = 0; b < batch.size(); ++b) {
    auto& dst = batch[b].seq_id == 7 ? m7 : m9;
    dst.insert(dst.end(), out.begin() + static_cast<long>(b * 512), out.begin() + static_cast<long>((b + 1) * 512));
  }
  expect_bit_identical(a7, m7, "sequence 7");
  expect_bit_identical(a9, m9, "sequence 9");
  // Releasing a sequence frees its cache; positions must then start again at 0.
  mixed->release_sequence(7);
  BatchToken late{7, 5, 1, true};
  EXPECT_FALSE(mixed->forward({&late, 1}, nullptr, out).has_value());
}

// Load balancing moves a sequence's KV cache between devices: prefill on one split, move every
// block's cache to runners of another split, decode there — the logits are those of never moving.
TEST(Forward, AKvCacheMovedToAnotherSplitDecodesIdentically) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_stories();
  ASSERT_TRUE(model);
  ThreadPool pool(1);
  const int64_t U = model->n_units();  // embed, 5 blocks, head
  auto whole = UnitRunner::create(*model, 0, U - 1, pool, 32).value();
  auto a1 = UnitRunner::create(*model, 0, 2, pool, 32).value();
  auto a2 = UnitRunner::create(*model, 3, U - 1, pool, 32).value();
  std::vector<float> out, hid, want, got;
  const size_t n_pre = 8;
  for (size_t i = 0; i < k_prompt.size(); ++i) {
    BatchToken bt{3, static_cast<int32_t>(i), k_prompt[i], true};
    ASSERT_TRUE(whole->forward({&bt, 1}, nullptr, out).has_value());
    if (i >= n_pre) want.insert(want.end(), out.begin(), out.end());
    if (i < n_pre) {  // the first n_pre positions on the old split
      ASSERT_TRUE(a1->forward({&bt, 1}, nullptr, hid).has_value());
      ASSERT_TRUE(a2->forward({&bt, 1}, hid.data(), out).has_value());
    }
  }
  // The new split: 0-3 and 4-6, fed the caches of sequence 3 as sequence 11.
  auto b1 = UnitRunner::create(*model, 0, 3, pool, 32).value();
  auto b2 = UnitRunner::create(*model, 4, U - 1, pool, 32).value();
  for (int64_t u = 1; u <= U - 2; ++u) {
    const UnitRunner& from = u <= 2 ? *a1 : *a2;
    UnitRunner& to = u <= 3 ? *b1 : *b2;
    auto rows = from.export_kv(3, u);
    ASSERT_TRUE(rows.has_value()) << rows.error().message;
    EXPECT_EQ(rows->n_pos, static_cast<int64_t>(n_pre));
    BatchToken early{11, static_cast<int32_t>(n_pre), k_prompt[n_pre], true};
    if (u == 4) {  // b1 has all its blocks; b2 still misses block 5's: it cannot run yet
      ASSERT_TRUE(b1->forward({&early, 1}, nullptr, hid).has_value());
      b1->release_sequence(11);
      for (int64_t v = 1; v <= 3; ++v) {  // (released: import b1's again)
        const UnitRunner& f = v <= 2 ? *a1 : *a2;
        auto r = f.export_kv(3, v).value();
        ASSERT_TRUE(b1->import_kv(11, v, r.n_pos, r.k, r.v).has_value());
      }
    }
    auto ok = to.import_kv(11, u, rows->n_pos, rows->k, rows->v);
    ASSERT_TRUE(ok.has_value()) << ok.error().message;
    if (u == 4) {
      EXPECT_FALSE(b2->forward({&early, 1}, hid.data(), out).has_value()) << "block 5's cache is still missing";
    }
  }
  for (size_t i = n_pre; i < k_prompt.size(); ++i) {
    BatchToken bt{11, static_cast<int32_t>(i), k_prompt[i], true};
    ASSERT_TRUE(b1->forward({&bt, 1}, nullptr, hid).has_value());
    ASSERT_TRUE(b2->forward({&bt, 1}, hid.data(), out).has_value());
    got.insert(got.end(), out.begin(), out.end());
  }
  expect_bit_identical(want, got, "decoded after the move");
  // Bad moves are refused: not a block here, wrong sizes, past the context, a sequence computed here.
  auto rows = a1->export_kv(3, 1).value();
  EXPECT_FALSE(b2->import_kv(12, 1, rows.n_pos, rows.k, rows.v).has_value());
  EXPECT_FALSE(b1->import_kv(12, 0, rows.n_pos, rows.k, rows.v).has_value());
  EXPECT_FALSE(b1->import_kv(12, 1, rows.n_pos + 1, rows.k, rows.v).has_value());
  std::vector<uint16_t> big(static_cast<size_t>(33 * b1->kv_dim()));
  EXPECT_FALSE(b1->import_kv(12, 1, 33, big, big).has_value());
  EXPECT_FALSE(b1->import_kv(-1, 1, rows.n_pos, rows.k, rows.v).has_value());
  EXPECT_FALSE(a1->import_kv(3, 1, rows.n_pos, rows.k, rows.v).has_value());
  EXPECT_FALSE(a1->export_kv(99, 1).has_value());
  EXPECT_FALSE(a1->export_kv(3, 3).has_value());
}

TEST(Forward, RejectsBadInput) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_stories();
  ASSERT_TRUE(model);
  ThreadPool pool(1);
  EXPECT_FALSE(UnitRunner::create(*model, 3, 2, pool, 16).has_value());
  EXPECT_FALSE(UnitRunner::create(*model, 0, 7, pool, 16).has_value());
  auto r = UnitRunner::create(*model, 0, 6, pool, 16).value();
  std::vector<float> out;
  BatchToken bad_tok{0, 0, 512, true};
  EXPECT_FALSE(r->forward({&bad_tok, 1}, nullptr, out).has_value());
  BatchToken bad_pos{0, 16, 1, true};
  EXPECT_FALSE(r->forward({&bad_pos, 1}, nullptr, out).has_value());
  BatchToken gap{0, 3, 1, true};
  EXPECT_FALSE(r->forward({&gap, 1}, nullptr, out).has_value());
  auto mid = UnitRunner::create(*model, 2, 4, pool, 16).value();
  BatchToken ok{0, 0, 1, false};
  EXPECT_FALSE(mid->forward({&ok, 1}, nullptr, out).has_value());  // needs a hidden-state input
}

}  // namespace
}  // namespace ll::model
