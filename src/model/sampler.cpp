#include "model/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace ll::model {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Larger logit first, then lower id: a total order, so every sort and selection below has exactly one
// possible result, and the candidates' order (which sums and the draw walk) never depends on the standard
// library. Candidates are always either in id order or sorted by this.
struct ByLogitDesc {
  template <class C>
  bool operator()(const C& a, const C& b) const {
    return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
  }
};

std::mt19937 make_rng(uint64_t seed) {
  if (seed <= 0xFFFFFFFFu) return std::mt19937(static_cast<std::mt19937::result_type>(seed));
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  return std::mt19937(seq);
}

uint64_t resolve_seed(uint64_t seed) {
  if (seed != kRandomSeed) return seed;
  std::random_device rd;
  uint64_t s = kRandomSeed;
  while (s == kRandomSeed) s = rd();  // a 32-bit draw, like llama.cpp's; never the "random" marker itself
  return s;
}

}  // namespace

Sampler::Sampler(SamplingParams p) : params_(p), seed_(resolve_seed(p.seed)), rng_(make_rng(seed_)) {}

double Sampler::uniform01() {
  const uint32_t a = rng_() >> 5, b = rng_() >> 6;  // 27 + 26 bits
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

void Sampler::apply_penalty(std::span<const int32_t> history, int64_t n_vocab) {
  if (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0 || history.empty()) return;
  size_t n = history.size();
  if (params_.repeat_last_n > 0) n = std::min(n, static_cast<size_t>(params_.repeat_last_n));
  window_ids_.clear();
  for (int32_t id : history.subspan(history.size() - n)) {
    if (id >= 0 && id < n_vocab) window_ids_.push_back(id);
  }
  std::sort(window_ids_.begin(), window_ids_.end());
  window_ids_.erase(std::unique(window_ids_.begin(), window_ids_.end()), window_ids_.end());
  // cand_ is still in id order here.
  for (int32_t id : window_ids_) {
    float& l = cand_[static_cast<size_t>(id)].logit;
    l = l > 0.0f ? l / params_.repeat_penalty : l * params_.repeat_penalty;
  }
}

// Keeps the k best candidates, sorted. For small k one pass with a heap of the k best so far (most
// candidates are rejected by one comparison), else nth_element.
void Sampler::keep_top_k() {
  const size_t k = static_cast<size_t>(params_.top_k);
  if (k <= 256) {
    // A max-heap under ByLogitDesc: its front is the worst of the kept.
    std::vector<Candidate>& heap = scratch_;
    heap.assign(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k));
    std::make_heap(heap.begin(), heap.end(), ByLogitDesc{});
    float worst = heap.front().logit;
    for (size_t i = k; i < cand_.size(); ++i) {
      if (cand_[i].logit < worst) continue;  // the common case, one comparison
      if (ByLogitDesc{}(cand_[i], heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), ByLogitDesc{});
        heap.back() = cand_[i];
        std::push_heap(heap.begin(), heap.end(), ByLogitDesc{});
        worst = heap.front().logit;
      }
    }
    cand_.assign(heap.begin(), heap.end());
  } else {
    const auto kth = cand_.begin() + static_cast<std::ptrdiff_t>(k);
    std::nth_element(cand_.begin(), kth, cand_.end(), ByLogitDesc{});
    cand_.erase(kth, cand_.end());
  }
  std::sort(cand_.begin(), cand_.end(), ByLogitDesc{});
}

// Keeps the smallest best-first prefix whose probability mass reaches top_p; probabilities over the current
// candidates at temperature 1, as llama.cpp's top-p (temperature comes later in the chain). The normalizer
// is summed in the candidates' canonical order. Leaves cand_ sorted.
void Sampler::keep_top_p() {
  const size_t n = cand_.size();
  const Candidate top = *std::min_element(cand_.begin(), cand_.end(), ByLogitDesc{});
  if (n <= 1 || top.logit == kNegInf) {
    std::sort(cand_.begin(), cand_.end(), ByLogitDesc{});
    return;
  }
  const double max_logit = top.logit;
  double z = 0.0;
  for (const auto& c : cand_) z += std::exp(c.logit - max_logit);
  const double mass = static_cast<double>(params_.top_p) * z;
  // Walks a sorted range; returns how many to keep, or 0 if the range ends before the mass is reached.
  auto cut = [&](auto first, auto last) -> size_t {
    double cum = 0.0;
    for (auto it = first; it != last; ++it) {
      cum += std::exp(it->logit - max_logit) / z;
      if (cum >= params_.top_p) return static_cast<size_t>(it - first) + 1;
    }
    return 0;
  };

  if (n > 1024) {
    // Large vocabulary: find, with a histogram of the mass over logit buckets below the top, the bucket where
    // the cumulative mass crosses top_p; then sort only the candidates down to one bucket past it (a margin
    // for the histogram's different summation order). The last bucket takes everything lower.
    constexpr int kBuckets = 512;
    constexpr double kRange = 40.0;  // logits below max - 40 have relative mass < 5e-18 each
    const double inv_width = (kBuckets - 1) / kRange;
    auto bucket_of = [&](const Candidate& c) {
      const double scaled = (max_logit - c.logit) * inv_width;  // +inf for -inf logits
      return scaled < kBuckets - 1 ? static_cast<int>(scaled) : kBuckets - 1;
    };
    std::array<double, kBuckets> bucket_mass{};
    for (const auto& c : cand_)
      bucket_mass[static_cast<size_t>(bucket_of(c))] += std::exp(c.logit - max_logit);
    double cum = 0.0;
    int b_cut = kBuckets - 1;
    for (int b = 0; b < kBuckets; ++b) {
      cum += bucket_mass[static_cast<size_t>(b)];
      if (cum >= mass) {
        b_cut = b;
        break;
      }
    }
    if (b_cut + 1 < kBuckets - 1) {
      const auto mid = std::partition(cand_.begin(), cand_.end(),
                                      [&](const Candidate& c) { return bucket_of(c) <= b_cut + 1; });
      std::sort(cand_.begin(), mid, ByLogitDesc{});
      const size_t keep = cut(cand_.begin(), mid);
      if (keep > 0) {
        cand_.resize(keep);
        return;
      }
    }
  }
  std::sort(cand_.begin(), cand_.end(), ByLogitDesc{});
  const size_t keep = cut(cand_.begin(), cand_.end());
  if (keep > 0) cand_.resize(keep);  // else rounding left the total just under top_p: keep everything
}

// Keeps tokens whose probability is at least min_p times the top one's: logit >= max + log(min_p).
// Keeps the candidates' relative order.
void Sampler::keep_min_p() {
  if (params_.min_p <= 0.0f || cand_.size() <= 1) return;
  const Candidate top = *std::min_element(cand_.begin(), cand_.end(), ByLogitDesc{});
  const float min_logit = top.logit + std::log(params_.min_p);
  cand_.erase(
      std::remove_if(cand_.begin(), cand_.end(), [&](const Candidate& c) { return c.logit < min_logit; }),
      cand_.end());
  if (cand_.empty()) cand_.push_back(top);  // min_p > 1: keep the top token
}

// Softmax at the temperature over the candidates, then one uniform draw walked through the cumulative sum
// in the candidates' (canonical) order.
int32_t Sampler::draw() {
  const Candidate top = *std::min_element(cand_.begin(), cand_.end(), ByLogitDesc{});
  if (top.logit == kNegInf || cand_.size() == 1) return top.id;
  const double max_logit = top.logit;
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  double sum = 0.0;
  for (const auto& c : cand_) sum += std::exp((c.logit - max_logit) * inv_t);
  const double target = uniform01() * sum;
  double cum = 0.0;
  size_t last_positive = 0;
  for (size_t i = 0; i < cand_.size(); ++i) {
    const double w = std::exp((cand_[i].logit - max_logit) * inv_t);
    if (w > 0.0) last_positive = i;
    cum += w;
    if (target < cum) return cand_[i].id;
  }
  return cand_[last_positive].id;  // target landed on the rounding gap at the very end
}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, std::span<const int32_t> history) {
  cand_.resize(static_cast<size_t>(n_vocab));
  Candidate* c = cand_.data();
  for (int64_t i = 0; i < n_vocab; ++i) {
    const float l = logits[i];
    c[i].logit = l == l ? l : kNegInf;  // NaN -> -inf
    c[i].id = static_cast<int32_t>(i);
  }
  apply_penalty(history, n_vocab);

  if (params_.temperature <= 0.0f) {  // greedy: the first (lowest id) of the largest
    size_t best = 0;
    for (size_t i = 1; i < cand_.size(); ++i) {
      if (cand_[i].logit > cand_[best].logit) best = i;
    }
    return cand_[best].id;
  }

  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < cand_.size()) keep_top_k();
  if (params_.top_p < 1.0f) keep_top_p();
  keep_min_p();
  return draw();
}

}  // namespace ll::model
