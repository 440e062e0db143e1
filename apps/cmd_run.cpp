#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"

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
    int64_t n_predict = 128, ctx_size = 0, batch_size = 64;
    int threads = default_threads();
    model::SamplingParams sampling;
    std::vector<std::string> stop;
    bool json = false, verbose = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  auto* p = app.add_option("-p,--prompt", o->prompt, "Prompt text");
  auto* f = app.add_option("-f,--file", o->prompt_file, "Read the prompt from a file")->check(CLI::ExistingFile);
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
  app.add_option("--seed", o->sampling.seed, "Random seed (default: random; --json reports the seed used)");
  app.add_option("--stop", o->stop, "Stop when this text appears (repeatable)");
  app.add_option("-t,--threads", o->threads, "Threads")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("-c,--ctx-size", o->ctx_size,
                 "Context size in tokens (default: prompt + n-predict, at most the model's context)");
  app.add_option("-b,--batch-size", o->batch_size, "Prefill micro-batch size")->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_flag("--json", o->json, "Print a JSON summary as the last line");
  app.add_flag("-v,--verbose", o->verbose, "Print model and timing details to stderr");

  return [o]() -> int {
    std::string prompt = o->prompt;
    if (!o->prompt_file.empty()) {
      std::ifstream in(o->prompt_file, std::ios::binary);
      if (!in) return report_error(make_error(ErrorCode::io, "cannot read " + o->prompt_file));
      std::stringstream ss;
      ss << in.rdbuf();
      prompt = ss.str();
      while (!prompt.empty() && (prompt.back() == '\n' || prompt.back() == '\r')) prompt.pop_back();
    }
    if (prompt.empty()) return report_error(make_error(ErrorCode::invalid_argument, "give a prompt with -p or -f"));

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
    const std::vector<int32_t> prompt_tokens = tok->encode(prompt, true);
    int64_t n_ctx = o->ctx_size;
    if (n_ctx <= 0) {
      const int64_t want = static_cast<int64_t>(prompt_tokens.size()) + (o->n_predict < 0 ? hp.n_ctx_train : o->n_predict);
      n_ctx = std::min(want, hp.n_ctx_train);
      n_ctx = std::max<int64_t>(n_ctx, static_cast<int64_t>(prompt_tokens.size()) + 1);
    }
    ThreadPool pool(o->threads);
    auto runner = model::UnitRunner::create(**model, 0, hp.n_units() - 1, pool, n_ctx);
    if (!runner) return report_error(runner.error());
    if (o->verbose) {
      std::fprintf(stderr,
                   "model: %s (%s), %lld layers, n_embd %lld, %lld heads (%lld kv), n_ff %lld, vocab %lld\n"
                   "kernels: %s, threads %d, context %lld, prompt %zu tokens\n",
                   o->model.c_str(), std::string(hp.arch->name).c_str(), static_cast<long long>(hp.n_layer),
                   static_cast<long long>(hp.n_embd), static_cast<long long>(hp.n_head),
                   static_cast<long long>(hp.n_head_kv), static_cast<long long>(hp.n_ff),
                   static_cast<long long>(hp.n_vocab), kernels::matmul_isa(), o->threads,
                   static_cast<long long>(n_ctx), prompt_tokens.size());
    }
    model::GenerateOptions gopt;
    gopt.n_predict = o->n_predict;
    gopt.n_batch = o->batch_size;
    gopt.sampling = o->sampling;
    gopt.stop = o->stop;
    auto res = model::generate(**runner, *tok, prompt_tokens, gopt, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!res) return report_error(res.error());
    if (o->verbose) {
      std::fprintf(stderr, "prefill: %lld tokens in %.1f ms (%.2f tok/s); decode: %zu tokens in %.1f ms (%.2f tok/s); stop: %s\n",
                   static_cast<long long>(res->n_prompt), res->prefill_ms, res->prefill_tok_s(), res->tokens.size(),
                   res->decode_ms, res->decode_tok_s(), model::stop_reason_name(res->stop_reason));
    }
    if (o->json) {
      nlohmann::json j;
      j["prompt_tokens"] = prompt_tokens;
      j["tokens"] = res->tokens;
      j["text"] = res->text;
      j["prefill_tok_s"] = res->prefill_tok_s();
      j["decode_tok_s"] = res->decode_tok_s();
      j["stop_reason"] = model::stop_reason_name(res->stop_reason);
      j["seed"] = res->seed;
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
    return 0;
  };
}

}  // namespace ll::apps
