// End-to-end engine benchmark: prefill and decode speed of a GGUF model on this device, the
// memory-bandwidth bound for decoding measured in the same run, and peak RSS.
//
// usage: bench_engine MODEL.gguf [-t THREADS] [--prefill 64] [--decode 64] [--reps 3] [--json]
//   Prefill: one batch of --prefill tokens (micro-batch = the whole prompt), best of --reps.
//   Decode: --decode tokens one at a time after the prompt, best of --reps.
//   Bound: bytes of weights read per decoded token / read bandwidth (probe on all cores, over the
//   model's mapped weights).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bandwidth_probe.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "model/forward.h"
#include "model/model.h"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

long peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss * 1024L;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [-t THREADS] [--prefill N] [--decode N] [--reps R] [--json]\n", argv[0]);
    return 2;
  }
  std::string path = argv[1];
  int threads = 2, reps = 3;
  int64_t n_prefill = 64, n_decode = 64;
  bool json = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> long { return i + 1 < argc ? std::atol(argv[++i]) : 0; };
    if (a == "-t") threads = static_cast<int>(next());
    else if (a == "--prefill") n_prefill = next();
    else if (a == "--decode") n_decode = next();
    else if (a == "--reps") reps = static_cast<int>(next());
    else if (a == "--json") json = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (threads < 1 || n_prefill < 1 || n_decode < 1 || reps < 1) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  auto model = ll::model::Model::load(path);
  if (!model) {
    std::fprintf(stderr, "error: %s\n", model.error().message.c_str());
    return 1;
  }
  const auto& hp = (*model)->hparams();
  ll::ThreadPool pool(threads);
  const int64_t n_ctx = n_prefill + n_decode + 1;
  std::vector<int32_t> prompt(static_cast<size_t>(n_prefill));
  for (int64_t i = 0; i < n_prefill; ++i) prompt[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 13) % hp.n_vocab);

  double best_prefill = 1e30, best_decode = 1e30;
  std::vector<float> logits;
  for (int rep = 0; rep < reps; ++rep) {
    auto runner = ll::model::UnitRunner::create(**model, 0, hp.n_units() - 1, pool, n_ctx).value();
    std::vector<ll::model::BatchToken> batch;
    for (int64_t i = 0; i < n_prefill; ++i) {
      batch.push_back({0, static_cast<int32_t>(i), prompt[static_cast<size_t>(i)], i == n_prefill - 1});
    }
    auto t0 = clock_type::now();
    if (!runner->forward(batch, nullptr, logits)) return 1;
    best_prefill = std::min(best_prefill, seconds_since(t0));
    t0 = clock_type::now();
    for (int64_t i = 0; i < n_decode; ++i) {
      const int32_t tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ll::model::BatchToken bt{0, static_cast<int32_t>(n_prefill + i), tok, true};
      if (!runner->forward({&bt, 1}, nullptr, logits)) return 1;
    }
    best_decode = std::min(best_decode, seconds_since(t0));
  }
  // Bytes of weights read per decoded token: every unit's weights except the embedding (only one
  // row of it is read), plus the output matrix when it is tied to the embedding.
  uint64_t weight_bytes = 0;
  for (int64_t u = 1; u < (*model)->n_units(); ++u) weight_bytes += (*model)->unit_weight_bytes(u);
  const long rss = peak_rss_bytes();  // before the probe allocates its buffer
  // Probe over the model's own mapped tensor data (resident after the runs above).
  const uint8_t* lo = nullptr;
  const uint8_t* hi = nullptr;
  for (const auto& t : (*model)->file().tensors()) {
    if (lo == nullptr || t.data < lo) lo = t.data;
    if (hi == nullptr || t.data + t.n_bytes > hi) hi = t.data + t.n_bytes;
  }
  // The physical limit is the machine's read bandwidth, so the probe uses every core whatever
  // THREADS is (one core alone cannot saturate memory).
  const int probe_threads = std::max<int>(threads, static_cast<int>(std::thread::hardware_concurrency()));
  ll::ThreadPool probe_pool(probe_threads);
  const double bw = ll::bench::read_bandwidth_gbs(probe_pool, lo, static_cast<size_t>(hi - lo));
  const double prefill_tok_s = static_cast<double>(n_prefill) / best_prefill;
  const double decode_tok_s = static_cast<double>(n_decode) / best_decode;
  const double bound_tok_s = bw * 1e9 / static_cast<double>(weight_bytes);
  const uint64_t kv_bytes = static_cast<uint64_t>(2 * hp.n_layer * n_ctx * hp.kv_dim() * 2);
  const uint64_t file_bytes = (*model)->file().file_size();
  const double rss_limit = static_cast<double>(file_bytes + kv_bytes) + 64.0 * (1 << 20);
  nlohmann::json j = {{"model", path},
                      {"isa", ll::kernels::matmul_isa()},
                      {"threads", threads},
                      {"prefill_tokens", n_prefill},
                      {"prefill_tok_s", prefill_tok_s},
                      {"decode_tokens", n_decode},
                      {"decode_tok_s", decode_tok_s},
                      {"weight_bytes_per_token", weight_bytes},
                      {"read_bandwidth_gb_s", bw},
                      {"probe_threads", probe_threads},
                      {"decode_bound_tok_s", bound_tok_s},
                      {"decode_fraction_of_bound", decode_tok_s / bound_tok_s},
                      {"file_bytes", file_bytes},
                      {"kv_bytes", kv_bytes},
                      {"peak_rss_bytes", rss},
                      {"rss_within_limit", static_cast<double>(rss) <= rss_limit}};
  if (json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s  [%s, %d threads]\n", path.c_str(), ll::kernels::matmul_isa(), threads);
    std::printf("  prefill %lld tokens: %8.2f tok/s\n", static_cast<long long>(n_prefill), prefill_tok_s);
    std::printf("  decode  %lld tokens: %8.2f tok/s  (%.0f%% of the bandwidth bound %.2f tok/s: %.1f MB/token at %.2f GB/s, %d-thread probe)\n",
                static_cast<long long>(n_decode), decode_tok_s, 100.0 * decode_tok_s / bound_tok_s, bound_tok_s,
                static_cast<double>(weight_bytes) / 1e6, bw, probe_threads);
    std::printf("  peak RSS %.1f MiB; limit file %.1f MiB + KV %.1f MiB + 64 MiB = %.1f MiB: %s\n",
                static_cast<double>(rss) / (1 << 20), static_cast<double>(file_bytes) / (1 << 20),
                static_cast<double>(kv_bytes) / (1 << 20), rss_limit / (1 << 20),
                static_cast<double>(rss) <= rss_limit ? "within" : "EXCEEDED");
  }
  return 0;
}
