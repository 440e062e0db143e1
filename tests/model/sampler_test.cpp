#include "model/sampler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <vector>

namespace ll::model {
namespace {

// Sampling frequencies over kDraws draws are compared with the expected probabilities to within
// kFreqTol (about 6 binomial standard deviations at p = 0.5).
constexpr int kDraws = 20000;
constexpr double kFreqTol = 0.022;

SamplingParams plain(float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.repeat_penalty = 1.0f;
  p.seed = 1234;
  return p;
}

std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::vector<double> frequencies(Sampler& s, const std::vector<float>& logits, int n_draws = kDraws) {
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < n_draws; ++i) {
    const int32_t t = s.sample(logits.data(), static_cast<int64_t>(logits.size()), {});
    EXPECT_GE(t, 0);
    EXPECT_LT(t, static_cast<int32_t>(logits.size()));
    f[static_cast<size_t>(t)] += 1.0 / n_draws;
  }
  return f;
}

std::vector<float> random_logits(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> l(static_cast<size_t>(n));
  for (auto& x : l) x = d(rng);
  return l;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler s(plain(0.0f));
  const std::vector<float> l = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s.sample(l.data(), 5, {}), 1);
  const std::vector<float> l2 = {-INFINITY, -2.0f, NAN, -1.0f};
  EXPECT_EQ(s.sample(l2.data(), 4, {}), 3);
  // Greedy ignores top-k/p/min-p and the seed.
  SamplingParams p;
  p.temperature = -1.0f;
  Sampler s2(p);
  const auto big = random_logits(50000, 3);
  const auto best = std::max_element(big.begin(), big.end()) - big.begin();
  EXPECT_EQ(s2.sample(big.data(), 50000, {}), best);
}

TEST(Sampler, SameSeedSameSequence) {
  const auto l = random_logits(1000, 7);
  SamplingParams p;  // the defaults: top-k 40, top-p 0.95, min-p 0.05, temperature 0.8
  p.seed = 42;
  p.repeat_penalty = 1.1f;
  Sampler a(p), b(p);
  std::vector<int32_t> ha, hb;
  for (int i = 0; i < 300; ++i) {
    ha.push_back(a.sample(l.data(), 1000, ha));
    hb.push_back(b.sample(l.data(), 1000, hb));
  }
  EXPECT_EQ(ha, hb);
  EXPECT_EQ(a.seed(), 42u);
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> hc;
  for (int i = 0; i < 300; ++i) hc.push_back(c.sample(l.data(), 1000, hc));
  EXPECT_NE(ha, hc);
  // A 64-bit seed works too and is distinct from its low half.
  p.seed = 42 + (uint64_t{1} << 40);
  Sampler d(p);
  std::vector<int32_t> hd;
  for (int i = 0; i < 300; ++i) hd.push_back(d.sample(l.data(), 1000, hd));
  EXPECT_NE(ha, hd);
}

TEST(Sampler, RandomSeedIsDrawnAndReported) {
  SamplingParams p;
  ASSERT_EQ(p.seed, kRandomSeed);
  Sampler s(p);
  EXPECT_NE(s.seed(), kRandomSeed);
  // Re-running with the reported seed reproduces the run.
  const auto l = random_logits(500, 9);
  SamplingParams q = p;
  q.seed = s.seed();
  Sampler r(q);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(l.data(), 500, {}), r.sample(l.data(), 500, {}));
}

TEST(Sampler, TopKOneIsGreedy) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto l = random_logits(3000, seed);
    SamplingParams p = plain(1.5f);
    p.top_k = 1;
    p.seed = seed;
    Sampler s(p), g(plain(0.0f));
    EXPECT_EQ(s.sample(l.data(), 3000, {}), g.sample(l.data(), 3000, {}));
  }
}

TEST(Sampler, FullDistributionFrequencies) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  Sampler s(plain(1.0f));
  const auto f = frequencies(s, logits_of(probs));
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(f[i], probs[i], kFreqTol) << i;
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  const std::vector<double> probs = {0.1, 0.4, 0.05, 0.3, 0.15};
  SamplingParams p = plain(1.0f);
  p.top_k = 2;  // tokens 1 and 3
  Sampler s(p);
  const auto f = frequencies(s, logits_of(probs));
  EXPECT_NEAR(f[1], 0.4 / 0.7, kFreqTol);
  EXPECT_NEAR(f[3], 0.3 / 0.7, kFreqTol);
  EXPECT_EQ(f[0] + f[2] + f[4], 0.0);
}

TEST(Sampler, TopPCutsTheTail) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  SamplingParams p = plain(1.0f);
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3: keep tokens 0 and 1
  Sampler s(p);
  auto f = frequencies(s, logits_of(probs));
  EXPECT_NEAR(f[0], 0.5 / 0.8, kFreqTol);
  EXPECT_NEAR(f[1], 0.3 / 0.8, kFreqTol);
  EXPECT_EQ(f[2] + f[3], 0.0);
  // Just above the first two's mass: token 2 joins, token 3 never does.
  p.top_p = 0.85f;
  Sampler s2(p);
  f = frequencies(s2, logits_of(probs));
  EXPECT_NEAR(f[2], 0.15 / 0.95, kFreqTol);
  EXPECT_EQ(f[3], 0.0);
  // top_p below the top token's probability keeps only it.
  p.top_p = 0.2f;
  Sampler s3(p);
  f = frequencies(s3, logits_of(probs), 500);
  EXPECT_NEAR(f[0], 1.0, 1e-9);
}

TEST(Sampler, TopPOnALargeVocabulary) {
  // Mass spread over many tokens: the prefix sort has to grow past its first guess.
  const int64_t n = 20000;
  std::vector<float> l(static_cast<size_t>(n), 0.0f);  // uniform
  SamplingParams p = plain(1.0f);
  p.top_p = 0.5f;  // keeps the lowest 10000 ids (ties sort by id; one more if rounding falls short)
  Sampler s(p);
  for (int i = 0; i < 200; ++i) ASSERT_LE(s.sample(l.data(), n, {}), 10000);
}

TEST(Sampler, MinPCutsRelativeToTheTop) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  SamplingParams p = plain(1.0f);
  p.min_p = 0.2f;  // threshold 0.1: tokens 0, 1, 2
  Sampler s(p);
  auto f = frequencies(s, logits_of(probs));
  EXPECT_NEAR(f[0], 0.5 / 0.95, kFreqTol);
  EXPECT_NEAR(f[1], 0.3 / 0.95, kFreqTol);
  EXPECT_NEAR(f[2], 0.15 / 0.95, kFreqTol);
  EXPECT_EQ(f[3], 0.0);
  p.min_p = 0.5f;  // threshold 0.25: tokens 0, 1
  Sampler s2(p);
  f = frequencies(s2, logits_of(probs));
  EXPECT_NEAR(f[1], 0.3 / 0.8, kFreqTol);
  EXPECT_EQ(f[2] + f[3], 0.0);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  for (float t : {0.5f, 2.0f}) {
    Sampler s(plain(t));
    const auto f = frequencies(s, logits_of(probs));
    double z = 0;
    for (double q : probs) z += std::pow(q, 1.0 / t);
    for (size_t i = 0; i < probs.size(); ++i)
      EXPECT_NEAR(f[i], std::pow(probs[i], 1.0 / t) / z, kFreqTol) << t;
  }
}

TEST(Sampler, FiltersApplyBeforeTemperature) {
  // llama.cpp's order: top-p sees temperature-1 probabilities. At temperature 5 the four tokens are nearly
  // uniform, but top_p = 0.75 still keeps only tokens 0 and 1.
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  SamplingParams p = plain(5.0f);
  p.top_p = 0.75f;
  Sampler s(p);
  const auto f = frequencies(s, logits_of(probs));
  EXPECT_EQ(f[2] + f[3], 0.0);
  const double a = std::pow(0.5, 0.2), b = std::pow(0.3, 0.2);
  EXPECT_NEAR(f[0], a / (a + b), kFreqTol);
}

TEST(Sampler, RepeatPenaltyLowersRepeatedTokens) {
  SamplingParams p = plain(0.0f);
  p.repeat_penalty = 1.5f;
  p.repeat_last_n = 4;
  Sampler s(p);
  const std::vector<float> l = {2.0f, 1.9f, 1.2f, -1.0f, -1.2f};
  EXPECT_EQ(s.sample(l.data(), 5, {}), 0);
  const std::vector<int32_t> h0 = {0};
  EXPECT_EQ(s.sample(l.data(), 5, h0), 1);  // 2.0 / 1.5 = 1.33 < 1.9
  // Each distinct token once: three 0s still give 1.33 (> 1.2 once 1 is penalized too).
  const std::vector<int32_t> h01 = {0, 0, 1, 0};
  EXPECT_EQ(s.sample(l.data(), 5, h01), 0);  // 1.33 vs 1.27 vs 1.2
  // Outside the window (last 4) no penalty: the 0 at the front does not count.
  const std::vector<int32_t> h_old = {0, 4, 4, 4, 4};
  EXPECT_EQ(s.sample(l.data(), 5, h_old), 0);
  // Negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.2.
  const std::vector<float> neg = {-1.0f, -1.2f};
  EXPECT_EQ(s.sample(neg.data(), 2, {}), 0);
  const std::vector<int32_t> h1 = {0};
  EXPECT_EQ(s.sample(neg.data(), 2, h1), 1);
  // Ids outside the vocabulary are ignored; repeat_last_n = 0 turns the penalty off.
  const std::vector<int32_t> bad = {-5, 99};
  EXPECT_EQ(s.sample(l.data(), 5, bad), 0);
  p.repeat_last_n = 0;
  Sampler off(p);
  EXPECT_EQ(off.sample(l.data(), 5, h0), 0);
  p.repeat_last_n = -1;  // the whole history
  Sampler all(p);
  EXPECT_EQ(all.sample(l.data(), 5, h_old), 1);
}

TEST(Sampler, PenaltyChangesSampledFrequencies) {
  const std::vector<double> probs = {0.5, 0.5};
  SamplingParams p = plain(1.0f);
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  auto l = logits_of(probs);
  l[0] = l[1] = 1.0f;  // equal positive logits; after the penalty token 0 has 0.5
  const std::vector<int32_t> h = {0};
  double f0 = 0;
  for (int i = 0; i < kDraws; ++i) f0 += s.sample(l.data(), 2, h) == 0 ? 1.0 / kDraws : 0.0;
  const double want = std::exp(0.5) / (std::exp(0.5) + std::exp(1.0));
  EXPECT_NEAR(f0, want, kFreqTol);
}

TEST(Sampler, EdgeCases) {
  SamplingParams p = plain(1.0f);
  p.min_p = 2.0f;  // above 1: only the top token survives
  Sampler s(p);
  const std::vector<float> l = {0.0f, 1.0f, 0.5f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(l.data(), 3, {}), 1);
  // All -inf (or NaN): the lowest id.
  Sampler s2(SamplingParams{});
  const std::vector<float> dead = {-INFINITY, NAN, -INFINITY};
  EXPECT_EQ(s2.sample(dead.data(), 3, {}), 0);
  // A single token.
  const float one = 3.0f;
  EXPECT_EQ(s2.sample(&one, 1, {}), 0);
  // -inf tokens are never drawn.
  Sampler s3(plain(1.0f));
  const std::vector<float> masked = {-INFINITY, 0.0f, -INFINITY, 0.0f};
  for (int i = 0; i < 200; ++i) {
    const int32_t t = s3.sample(masked.data(), 4, {});
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

TEST(Sampler, DefaultsOnAVocabularyOf150kAreQuick) {
  const int64_t n = 151936;
  const auto l = random_logits(n, 5);
  SamplingParams p;
  p.seed = 5;
  Sampler s(p);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  std::partial_sort(idx.begin(), idx.begin() + 40, idx.end(),
                    [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  const std::vector<int32_t> top40(idx.begin(), idx.begin() + 40);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    const int32_t t = s.sample(l.data(), n, {});
    EXPECT_NE(std::find(top40.begin(), top40.end(), t), top40.end());
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 20;
  EXPECT_LT(ms, 50.0);  // generous: a few ms on one slow core
  // With top-k off, top-p alone still avoids sorting the whole vocabulary in the usual case.
  p.top_k = 0;
  Sampler s2(p);
  for (int i = 0; i < 5; ++i) {
    const int32_t t = s2.sample(l.data(), n, {});
    EXPECT_GE(t, 0);
  }
}

}  // namespace
}  // namespace ll::model
