#include "serve/engine.h"

#include "runtime/sysinfo.h"

namespace ll::serve {

namespace {

class CoordinatorEngine final : public Engine {
 public:
  CoordinatorEngine(runtime::Coordinator& c, const model::Tokenizer& tok, size_t parallel, std::string model_name,
                    std::string mode)
      : c_(c), tok_(tok), parallel_(std::max<size_t>(1, parallel)), model_(std::move(model_name)),
        mode_(std::move(mode)) {}

  Expected<std::vector<model::GenerateResult>> generate(
      const std::vector<EngineRequest>& requests,
      const std::function<void(size_t, std::string_view)>& on_text) override {
    std::vector<runtime::Request> reqs;
    reqs.reserve(requests.size());
    for (const auto& r : requests) reqs.push_back(runtime::Request{r.prompt_tokens, r.options, r.cancelled});
    model::GenerateOptions unused;  // every request carries its own
    return c_.generate(tok_, reqs, unused, static_cast<int>(parallel_), on_text);
  }

  size_t max_batch() const override { return parallel_; }

  Expected<ClusterInfo> describe() override {
    ClusterInfo info;
    info.model = model_;
    info.mode = mode_;
    LL_ASSIGN_OR_RETURN(auto devs, c_.devices());
    for (const auto& d : devs) {
      info.devices.push_back(DeviceInfo{d.name, d.address, d.ranges, d.rss_bytes, d.weight_bytes, d.compute_ms});
    }
    const auto stats = c_.last_run_stats();
    info.n_failovers = stats.n_failovers;
    info.n_rebalances = stats.n_rebalances;
    const auto& stages = c_.stages();
    for (size_t i = 0; i < stages.size(); ++i) {
      StageInfo s;
      s.device = stages[i].device == 0 ? devs[0].name : c_.worker_hello(stages[i].device).name;
      s.first_unit = stages[i].first_unit;
      s.last_unit = stages[i].last_unit;
      if (i < stats.stage_compute_ms_per_token.size()) s.compute_ms_per_token = stats.stage_compute_ms_per_token[i];
      info.stages.push_back(std::move(s));
    }
    return info;
  }

 private:
  runtime::Coordinator& c_;
  const model::Tokenizer& tok_;
  size_t parallel_;
  std::string model_, mode_;
};

class LocalEngine final : public Engine {
 public:
  LocalEngine(const model::Model& model, const model::Tokenizer& tok, int n_threads, std::string model_name)
      : model_(model), tok_(tok), pool_(n_threads), name_(std::move(model_name)) {}

  Expected<void> init(int64_t n_ctx) {
    LL_ASSIGN_OR_RETURN(runner_, model::UnitRunner::create(model_, 0, model_.n_units() - 1, pool_, n_ctx));
    return {};
  }

  Expected<std::vector<model::GenerateResult>> generate(
      const std::vector<EngineRequest>& requests,
      const std::function<void(size_t, std::string_view)>& on_text) override {
    std::vector<model::GenerateResult> out;
    double ms = 0;
    int64_t n = 0;
    for (size_t i = 0; i < requests.size(); ++i) {
      model::GenerateOptions g = requests[i].options;
      g.seq_id = 0;
      auto res = model::generate(*runner_, tok_, requests[i].prompt_tokens, g, [&](std::string_view piece) {
        if (on_text) on_text(i, piece);
      });
      runner_->release_sequence(0);
      if (!res) return res.error();
      ms += res->decode_ms;
      n += std::max<int64_t>(0, static_cast<int64_t>(res->tokens.size()) - 1);
      out.push_back(std::move(*res));
    }
    last_ms_per_token_ = n > 0 ? ms / static_cast<double>(n) : 0;
    return out;
  }

  size_t max_batch() const override { return 1; }

  Expected<ClusterInfo> describe() override {
    ClusterInfo info;
    info.model = name_;
    info.mode = "single process";
    DeviceInfo d;
    d.name = "origin";
    d.address = "local";
    d.units.emplace_back(0, model_.n_units() - 1);
    d.rss_bytes = runtime::current_rss_bytes();
    for (int64_t u = 0; u < model_.n_units(); ++u) d.weight_bytes += model_.unit_weight_bytes(u);
    for (const auto& t : runner_->unit_timings()) d.compute_ms += t.compute_ms;
    info.devices.push_back(d);
    // One stage; its time per token is the decode time (the only device does everything).
    info.stages.push_back(StageInfo{"origin", 0, model_.n_units() - 1, last_ms_per_token_});
    return info;
  }

 private:
  const model::Model& model_;
  const model::Tokenizer& tok_;
  ThreadPool pool_;
  std::string name_;
  std::unique_ptr<model::UnitRunner> runner_;
  double last_ms_per_token_ = 0;
};

}  // namespace

std::unique_ptr<Engine> make_coordinator_engine(runtime::Coordinator& coordinator, const model::Tokenizer& tokenizer,
                                                size_t parallel, std::string model_name, std::string mode) {
  return std::make_unique<CoordinatorEngine>(coordinator, tokenizer, parallel, std::move(model_name), std::move(mode));
}

Expected<std::unique_ptr<Engine>> make_local_engine(const model::Model& model, const model::Tokenizer& tokenizer,
                                                    int n_threads, int64_t n_ctx, std::string model_name) {
  auto e = std::make_unique<LocalEngine>(model, tokenizer, n_threads, std::move(model_name));
  LL_TRY(e->init(n_ctx));
  return std::unique_ptr<Engine>(std::move(e));
}

}  // namespace ll::serve
