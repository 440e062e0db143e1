#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/cluster_args.h"
#include "apps/commands.h"
#include "apps/split_args.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "plan/plan.h"
#include "net/transport.h"
#include "runtime/cluster_file.h"
#include "runtime/coordinator.h"
#include "runtime/local_cluster.h"
#include "runtime/model_source.h"
#include "runtime/process.h"
#include "runtime/split.h"
#include "runtime/sysinfo.h"
#include "runtime/worker.h"

namespace ll::apps {

namespace {

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(std::min(n, 64u));
}

}  // namespace

Runner add_run_command(CLI::App& app) {
  struct Opts {
    std::string model, prompt, prompt_file;
    int64_t n_predict = 128, ctx_size = 0, batch_size = 64, ubatch = 32;
    int threads = default_threads();
    model::SamplingParams sampling;
    std::vector<std::string> stop;
    bool json = false, verbose = false, mmap = false;
    // Distributed.
    ClusterArgs cluster;
    int parallel = 1, decode_batches = 0;
    SplitArgs split;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  auto* p = app.add_option("-p,--prompt", o->prompt, "Prompt text");
  auto* f = app.add_option("-f,--file", o->prompt_file, "Read prompts from a file, one per line (empty lines skipped)")
                ->check(CLI::ExistingFile);
  p->excludes(f);
  app.add_option("-n,--n-predict", o->n_predict, "Tokens to generate (-1: until end of text or context)")
      ->capture_default_str();
  app.add_option("--temp", o->sampling.temperature, "Temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", o->sampling.top_k, "Keep the K most likely tokens (0 = off)")->capture_default_str();
  app.add_option("--top-p", o->sampling.top_p, "Nucleus sampling threshold (1 = off)")->capture_default_str();
  app.add_option("--min-p", o->sampling.min_p, "Drop tokens below P x the top probability (0 = off)")
      ->capture_default_str();
  app.add_option("--repeat-penalty", o->sampling.repeat_penalty, "Penalty for repeated tokens (1 = off)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", o->sampling.repeat_last_n, "Window of the repeat penalty")->capture_default_str();
  app.add_option("--seed", o->sampling.seed,
                 "Random seed (default: random; --json reports the seed used; prompt i uses seed + i)");
  app.add_option("--stop", o->stop, "Stop when this text appears (repeatable)");
  app.add_option("-t,--threads", o->threads, "Threads (of this process: the origin)")->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("-c,--ctx-size", o->ctx_size,
                 "Context size in tokens (default: longest prompt + n-predict, at most the model's context)");
  app.add_option("-b,--batch-size", o->batch_size, "Prefill micro-batch size (one process)")->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_flag("--mmap", o->mmap,
               "Run the weights straight from the model file's mapping (default: the units this process runs are "
               "held in memory in huge pages when they fit, which decodes faster where the page cache maps "
               "files in small pages)");
  app.add_flag("--json", o->json, "Print a JSON summary as the last line");
  app.add_flag("-v,--verbose", o->verbose, "Print model, plan, transmission map and timing details to stderr");
  add_cluster_options(app, o->cluster, true);
  add_split_options(app, o->split);
  app.add_option("--parallel", o->parallel, "Generate up to K prompts concurrently (pipelined)")
      ->check(CLI::Range(1, 4096))->capture_default_str()->group("Distributed");
  app.add_option("--decode-batches", o->decode_batches,
                 "Decode batches in flight (default: one per computing stage; 1 = all sequences in one batch)")
      ->check(CLI::Range(1, 4096))->group("Distributed");
  app.add_option("--ubatch", o->ubatch, "Tokens per prefill micro-batch over several computing stages (one stage: batches of 64)")->check(CLI::Range(1, 4096))
      ->capture_default_str()->group("Distributed");

  return [o]() -> int {
    std::vector<std::string> prompts;
    if (!o->prompt_file.empty()) {
      std::ifstream in(o->prompt_file, std::ios::binary);
      if (!in) return report_error(make_error(ErrorCode::io, "cannot read " + o->prompt_file));
      std::string line;
      while (std::getline(in, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
        if (!line.empty()) prompts.push_back(line);
      }
    } else if (!o->prompt.empty()) {
      prompts.push_back(o->prompt);
    }
    if (prompts.empty()) return report_error(make_error(ErrorCode::invalid_argument, "give a prompt with -p or -f"));
    const bool distributed = o->cluster.wanted();
    if (!distributed && (o->split.custom() || o->parallel != 1 ||
                         !o->cluster.memory_limit.empty())) {
      return report_error(make_error(ErrorCode::invalid_argument,
                                     "--ring, --split, --split-units, --parallel and --memory-limit need --local N or "
                                     "--cluster FILE"));
    }

    auto model = model::Model::load(o->model);
    if (!model) return report_error(model.error());
    const model::HParams& hp = (*model)->hparams();
    auto tok = model::Tokenizer::from_gguf((*model)->file());
    if (!tok) return report_error(tok.error());
    if (tok->n_vocab() > hp.n_vocab) {
      return report_error(make_error(ErrorCode::parse, o->model + ": the vocabulary has " +
                                                           std::to_string(tok->n_vocab()) +
                                                           " tokens but the embedding only " +
                                                           std::to_string(hp.n_vocab)));
    }
    std::vector<std::vector<int32_t>> prompt_tokens;
    size_t longest = 0;
    for (const auto& text : prompts) {
      prompt_tokens.push_back(tok->encode(text, true));
      longest = std::max(longest, prompt_tokens.back().size());
    }
    int64_t n_ctx = o->ctx_size;
    if (n_ctx <= 0) {
      const int64_t want = static_cast<int64_t>(longest) + (o->n_predict < 0 ? hp.n_ctx_train : o->n_predict);
      n_ctx = std::min(want, hp.n_ctx_train);
      n_ctx = std::max<int64_t>(n_ctx, static_cast<int64_t>(longest) + 1);
    }
    if (o->verbose) {
      std::fprintf(stderr,
                   "model: %s (%s), %lld layers, n_embd %lld, %lld heads (%lld kv), n_ff %lld, vocab %lld\n"
                   "kernels: %s, threads %d, context %lld, %zu prompt(s), longest %zu tokens\n",
                   o->model.c_str(), std::string(hp.arch->name).c_str(), static_cast<long long>(hp.n_layer),
                   static_cast<long long>(hp.n_embd), static_cast<long long>(hp.n_head),
                   static_cast<long long>(hp.n_head_kv), static_cast<long long>(hp.n_ff),
                   static_cast<long long>(hp.n_vocab), kernels::matmul_isa(), o->threads,
                   static_cast<long long>(n_ctx), prompts.size(), longest);
    }
    model::GenerateOptions gopt;
    gopt.n_predict = o->n_predict;
    gopt.n_batch = o->batch_size;
    gopt.sampling = o->sampling;
    gopt.stop = o->stop;
    if (gopt.sampling.seed == model::kRandomSeed) gopt.sampling.seed = model::Sampler(gopt.sampling).seed();
    const bool stream = prompts.size() == 1;
    auto print_piece = [stream](size_t, std::string_view piece) {
      if (!stream) return;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };

    std::vector<model::GenerateResult> results;
    ClusterConnection cluster_conn;  // lives until the output is printed
    nlohmann::json devices = nlohmann::json::array();
    double wall_ms = 0;
    runtime::RunStats run_stats;
    std::string device_report;  // --verbose: printed after the text
    std::vector<runtime::Stage> run_stages;
    std::vector<std::string> stage_names, device_names;
    std::vector<plan::StageReport> predicted;  // --split optimal: the planner's figures per stage
    // --split optimal: what it solved, and the decode batch factors the profile measured (for the
    // batched prediction).
    std::optional<plan::Profile> chosen_profile;
    plan::SolveOptions chosen_solve;
    std::vector<runtime::Stage> chosen_stages;
    std::vector<double> batch_factors;
    // Sequences generated at once.
    const size_t n_seqs = std::min(prompts.size(), static_cast<size_t>(std::max(1, o->parallel)));
    if (!distributed) {
      if (!o->mmap) {
        const uint64_t held = runtime::hold_units_in_memory(**model, 0, hp.n_units() - 1, [&](const std::string& s) {
          std::fprintf(stderr, "lingua: %s\n", s.c_str());
        });
        if (o->verbose) std::fprintf(stderr, "weights: %.1f MiB held in memory\n", static_cast<double>(held) / (1 << 20));
      }
      ThreadPool pool(o->threads);
      auto runner = model::UnitRunner::create(**model, 0, hp.n_units() - 1, pool, n_ctx);
      if (!runner) return report_error(runner.error());
      const auto t0 = std::chrono::steady_clock::now();
      for (size_t i = 0; i < prompts.size(); ++i) {
        model::GenerateOptions g = gopt;
        g.sampling.seed = gopt.sampling.seed + i;
        auto res = model::generate(**runner, *tok, prompt_tokens[i], g,
                                   [&](std::string_view piece) { print_piece(i, piece); });
        if (!res) {
          if (stream) std::fputc('\n', stdout);
          return report_error(res.error());
        }
        (*runner)->release_sequence(g.seq_id);
        run_stats.n_decode_tokens += std::max<int64_t>(0, static_cast<int64_t>(res->tokens.size()) - 1);
        run_stats.decode_span_ms += res->tokens.size() > 1 ? res->decode_ms : 0;
        results.push_back(std::move(*res));
      }
      wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      devices.push_back({{"name", "origin"}, {"address", "local"}, {"units", {0, hp.n_units() - 1}},
                         {"rss_bytes", runtime::current_rss_bytes()}, {"peak_rss_bytes", runtime::peak_rss_bytes()}});
    } else {
      runtime::CoordinatorOptions co;
      co.ring = o->split.ring;
      co.n_ctx = n_ctx;
      co.n_ubatch = o->ubatch;
      co.decode_batches = o->decode_batches;
      co.hold_weights_in_memory = !o->mmap;
      // Several sequences at once: the profile also times decode steps of as many tokens, so that
      // --verbose can predict the run's batches (plan::batched_ms_per_token).
      co.profile_batch_tokens = static_cast<int>(std::min<size_t>(n_seqs, runtime::kMaxProfileBatchTokens));
      co.log = [v = o->verbose](const std::string& s) {
        if (v) std::fprintf(stderr, "lingua: %s\n", s.c_str());
      };
      o->split.origin_shares_cores = runtime::oversubscribes_cores(
          o->cluster.local, o->cluster.worker_threads > 0 ? o->cluster.worker_threads : o->threads, o->threads,
          static_cast<int>(runtime::allowed_cpus().size()));
      auto resplit = std::make_shared<Resplitter>();
      resplit->args = o->split;
      Resplitter::install(resplit, co);
      co.late_workers = true;  // (--cluster: a device not up yet joins when it answers)
      auto conn = connect_cluster(o->cluster, **model, o->threads, o->verbose, co);
      if (!conn) return report_error(conn.error());
      cluster_conn = std::move(*conn);
      auto* coord = &cluster_conn.coordinator;
      runtime::Coordinator& c = **coord;
      // 24 timed profiling steps of each kind, fewer when the context is shorter (two warm-up
      // steps come first): a device under a CPU quota runs in bursts of its period, and 8 steps
      // left the plan's predicted cost 10-25 % off from run to run on the emulated phones.
      auto chosen = choose_split(o->split, c, **model, prompts.size() > 1 && o->parallel > 1, o->verbose,
                                 static_cast<int>(std::clamp<int64_t>((n_ctx - 3) / 2, 1, 24)));
      if (!chosen) return report_error(chosen.error());
      predicted = chosen->predicted;
      if (chosen->profile) {
        chosen_profile = chosen->profile;
        chosen_solve = chosen->solve;
        chosen_stages = chosen->stages;
        batch_factors = c.batch_factors();
      }
      resplit->chosen = *chosen;
      resplit->coordinator = &c;
      resplit->model = &**model;
      auto loaded = c.load(chosen->stages);
      if (!loaded) return report_error(loaded.error());
      if (o->verbose) std::fprintf(stderr, "%s", c.describe(gopt).c_str());
      std::vector<runtime::Request> reqs;
      for (auto& t : prompt_tokens) reqs.push_back(runtime::Request{t});
      const auto t0 = std::chrono::steady_clock::now();
      auto res = c.generate(*tok, reqs, gopt, o->parallel, print_piece);
      wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (!res) {
        if (stream) std::fputc('\n', stdout);
        return report_error(res.error());
      }
      results = std::move(*res);
      run_stats = c.last_run_stats();
      run_stages = c.stages();
      for (const auto& st : run_stages) stage_names.push_back(st.device == 0 ? "origin" : c.worker_hello(st.device).name);
      device_names.push_back("origin");
      for (int w = 1; w <= c.n_workers(); ++w) device_names.push_back(c.worker_hello(w).name);
      auto devs = c.devices();
      if (!devs) return report_error(devs.error());
      for (const auto& d : *devs) {
        if (o->verbose && !d.ranges.empty()) {
          char line[512];
          std::snprintf(line, sizeof line,
                        "device %-16s units %lld-%lld: %.1f MiB weights, %.1f MiB resident (peak %.1f), %.1f ms computing\n",
                        d.name.c_str(), static_cast<long long>(d.ranges.front().first),
                        static_cast<long long>(d.ranges.back().second), d.weight_bytes / 1048576.0,
                        d.rss_bytes / 1048576.0, d.peak_rss_bytes / 1048576.0, d.compute_ms);
          device_report += line;
        }
        nlohmann::json j{{"name", d.name},
                         {"address", d.address},
                         {"units", d.ranges.empty() ? nlohmann::json() : nlohmann::json{d.ranges.front().first,
                                                                                       d.ranges.front().second}},
                         {"rss_bytes", d.rss_bytes},
                         {"peak_rss_bytes", d.peak_rss_bytes},
                         {"weight_bytes", d.weight_bytes},
                         {"compute_ms", d.compute_ms}};
        if (d.ranges.size() > 1) j["ring_units"] = {d.ranges.back().first, d.ranges.back().second};
        devices.push_back(std::move(j));
      }
    }
    if (stream) {
      std::fputc('\n', stdout);
    } else {
      for (size_t i = 0; i < results.size(); ++i) {
        std::printf("== %zu: %s\n%s\n", i + 1, prompts[i].c_str(), results[i].text.c_str());
      }
    }
    std::fflush(stdout);
    size_t n_generated = 0;
    for (const auto& r : results) n_generated += r.tokens.size();
    if (o->verbose) {
      std::fputs(device_report.c_str(), stderr);
      if (run_stats.stage_compute_ms_per_token.size() == run_stages.size()) {
        for (size_t i = 0; i < run_stages.size(); ++i) {
          const auto& st = run_stages[i];
          std::fprintf(stderr, "stage %zu %-16s units %d-%d: measured %.3f ms/token computing", i, stage_names[i].c_str(),
                       st.first_unit, st.last_unit, run_stats.stage_compute_ms_per_token[i]);
          if (i < predicted.size()) {
            std::fprintf(stderr, "; predicted %.3f ms computing + %.3f ms transfer", predicted[i].compute_ms,
                         predicted[i].transfer_ms);
          }
          std::fputc('\n', stderr);
        }
      }
      for (size_t d = 0; d < run_stats.device_ms_per_token.size(); ++d) {
        const double ms = run_stats.device_ms_per_token[d];
        if (!std::isnan(ms)) {
          std::fprintf(stderr, "monitor: %-16s %.3f ms/token computing (moving estimate of the last window)\n",
                       device_names[d].c_str(), ms);
        }
      }
      if (run_stats.max_decode_batches_in_flight > 1) {
        std::fprintf(stderr, "decode: up to %zu batches in the pipeline at once\n", run_stats.max_decode_batches_in_flight);
      }
      // Several sequences on the plan as solved: the planner's figures for the batches they ran in
      // (the plan's cost above is one token per step).
      if (chosen_profile && n_seqs > 1 && run_stats.n_rebalances == 0 && run_stats.n_failovers == 0 &&
          run_stats.aggregate_decode_tok_s() > 0) {
        const size_t n_batches = std::clamp<size_t>(run_stats.max_decode_batches_in_flight, 1, n_seqs);
        std::vector<int> sizes;
        std::string shown;
        for (size_t b = 0; b < n_batches; ++b) {
          sizes.push_back(static_cast<int>(n_seqs / n_batches + (b < n_seqs % n_batches ? 1 : 0)));
          shown += (b == 0 ? "" : "+") + std::to_string(sizes.back());
        }
        if (auto ms = plan::batched_ms_per_token(*chosen_profile, chosen_stages, chosen_solve, sizes, batch_factors)) {
          std::fprintf(stderr,
                       "predicted for %zu sequences in %zu decode batches (%s tokens): %.3f ms per token generated; "
                       "measured %.3f\n",
                       n_seqs, n_batches, shown.c_str(), *ms, 1000.0 / run_stats.aggregate_decode_tok_s());
        }
      }
      if (run_stats.n_rebalances > 0 || run_stats.n_failovers > 0) {
        std::fprintf(stderr, "plan changes: %d rebalance(s), %d failover(s)\n", run_stats.n_rebalances,
                     run_stats.n_failovers);
      }
      for (const auto& r : results) {
        std::fprintf(stderr,
                     "prefill: %lld tokens in %.1f ms (%.2f tok/s); decode: %zu tokens in %.1f ms (%.2f tok/s); stop: %s\n",
                     static_cast<long long>(r.n_prompt), r.prefill_ms, r.prefill_tok_s(), r.tokens.size(), r.decode_ms,
                     r.decode_tok_s(), model::stop_reason_name(r.stop_reason));
      }
      std::fprintf(stderr, "total: %zu tokens generated in %.1f ms (%.2f tok/s overall)\n", n_generated, wall_ms,
                   wall_ms > 0 ? n_generated * 1000.0 / wall_ms : 0.0);
      if (results.size() > 1 && run_stats.aggregate_decode_tok_s() > 0) {
        std::fprintf(stderr, "decode: %lld tokens in %.1f ms from the first sequence's first token (%.2f tok/s)",
                     static_cast<long long>(run_stats.n_decode_tokens), run_stats.decode_span_ms,
                     run_stats.aggregate_decode_tok_s());
        if (run_stats.concurrent_decode_tok_s() > 0) {
          std::fprintf(stderr, "; %lld in the %.1f ms all %zu decoded at once (%.2f tok/s)",
                       static_cast<long long>(run_stats.n_concurrent_decode_tokens), run_stats.concurrent_decode_ms,
                       results.size(), run_stats.concurrent_decode_tok_s());
        }
        std::fputc('\n', stderr);
      }
    }
    if (o->json) {
      auto one = [&](size_t i) {
        const auto& r = results[i];
        return nlohmann::json{{"prompt_tokens", prompt_tokens[i]},
                              {"tokens", r.tokens},
                              {"text", r.text},
                              {"prefill_tok_s", r.prefill_tok_s()},
                              {"decode_tok_s", r.decode_tok_s()},
                              {"stop_reason", model::stop_reason_name(r.stop_reason)},
                              {"seed", r.seed}};
      };
      nlohmann::json j;
      if (results.size() == 1) {
        j = one(0);
      } else {
        j["results"] = nlohmann::json::array();
        for (size_t i = 0; i < results.size(); ++i) j["results"].push_back(one(i));
        j["tokens_generated"] = n_generated;
        j["wall_ms"] = wall_ms;
        j["aggregate_tok_s"] = wall_ms > 0 ? n_generated * 1000.0 / wall_ms : 0.0;
        j["aggregate_decode_tok_s"] = run_stats.aggregate_decode_tok_s();
        if (run_stats.concurrent_decode_tok_s() > 0) j["concurrent_decode_tok_s"] = run_stats.concurrent_decode_tok_s();
      }
      if (distributed) {
        j["failovers"] = run_stats.n_failovers;
        j["rebalances"] = run_stats.n_rebalances;
      }
      j["devices"] = devices;
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
    return 0;
  };
}

}  // namespace ll::apps
