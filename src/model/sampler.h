// Picks the next token from logits, like llama.cpp's common sampler chain:
//   repetition penalty -> top-k -> top-p -> min-p -> temperature -> random draw
// (greedy argmax after the penalty when temperature <= 0). Deterministic for a given seed: the draw uses
// std::mt19937 (fully specified by the standard) and our own uniform conversion and cumulative walk, so a run
// reproduces across standard libraries, not only across runs.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace ll::model {

// llama.cpp's LLAMA_DEFAULT_SEED: draw the seed from std::random_device.
inline constexpr uint64_t kRandomSeed = 0xFFFFFFFF;

struct SamplingParams {
  float temperature = 0.8f;     // <= 0 means greedy (argmax, lowest id wins ties)
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off; applied to the last repeat_last_n tokens like llama.cpp
  int32_t repeat_last_n = 64;   // 0: off; < 0: the whole history
  uint64_t seed = kRandomSeed;  // llama.cpp's "random" default; any other value reproduces a run
};

class Sampler {
 public:
  explicit Sampler(SamplingParams p);

  // logits: n_vocab floats (not modified; NaN counts as -inf). history: the tokens so far (prompt +
  // generated) for the penalty; ids outside [0, n_vocab) are ignored. n_vocab >= 1.
  int32_t sample(const float* logits, int64_t n_vocab, std::span<const int32_t> history);

  const SamplingParams& params() const { return params_; }
  // The seed in use (drawn at construction when params.seed == kRandomSeed); pass it back to reproduce.
  uint64_t seed() const { return seed_; }

 private:
  struct Candidate {
    float logit;
    int32_t id;
  };
  void apply_penalty(std::span<const int32_t> history, int64_t n_vocab);
  void keep_top_k();
  void keep_top_p();
  void keep_min_p();
  int32_t draw();
  double uniform01();  // [0, 1) with 53 random bits

  SamplingParams params_;
  uint64_t seed_;
  std::mt19937 rng_;
  // Reused between calls: the candidates (in id order, or sorted best first), the top-k heap, and the
  // distinct ids of the penalty window.
  std::vector<Candidate> cand_;
  std::vector<Candidate> scratch_;
  std::vector<int32_t> window_ids_;
};

}  // namespace ll::model
