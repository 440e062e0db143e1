// lingua serve: the OpenAI-compatible HTTP server over one process or a cluster of workers.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "apps/cluster_args.h"
#include "apps/commands.h"
#include "apps/split_args.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "runtime/local_cluster.h"
#include "runtime/model_source.h"
#include "runtime/process.h"
#include "runtime/split.h"
#include "runtime/sysinfo.h"
#include "runtime/worker.h"
#include "serve/chat_template.h"
#include "serve/engine.h"
#include "serve/scheduler.h"
#include "serve/server.h"

namespace ll::apps {

namespace {

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(std::min(n, 64u));
}

// Runs `fn` with SIGINT/SIGTERM blocked, so the threads it starts inherit the mask and the signals
// reach the main thread, which waits for them.
template <class F>
auto with_signals_blocked(F&& fn) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  auto r = fn();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return r;
}

}  // namespace

Runner add_serve_command(CLI::App& app) {
  struct Opts {
    std::string model, host = "127.0.0.1", api_key, chat_template, model_id;
    int port = 8080;
    int threads = default_threads();
    int64_t ctx_size = 0, ubatch = 32;
    int parallel = 8, decode_batches = 0, max_queue = 64, http_threads = 0;
    std::string max_body = "1MB";
    bool verbose = false, mmap = false;
    ClusterArgs cluster;
    SplitArgs split;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("--host", o->host, "Address to listen on (127.0.0.1: this machine only)")->capture_default_str();
  app.add_option("--port", o->port, "TCP port (0: any free port; the bound address is printed)")
      ->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--api-key", o->api_key, "Require \"Authorization: Bearer KEY\" on /v1/*");
  app.add_option("--chat-template", o->chat_template,
                 "llama2, llama3, chatml (qwen), zephyr, mistral or plain (default: recognised from the model's "
                 "tokenizer.chat_template; plain when it has none)");
  app.add_option("--model-id", o->model_id, "Model name in the API (default: the file name without .gguf)");
  app.add_option("-t,--threads", o->threads, "Threads of this process (the origin)")->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("-c,--ctx-size", o->ctx_size,
                 "Context per request, prompt + completion (default: the model's, at most 4096)");
  app.add_option("--parallel", o->parallel, "Requests in flight at once through the pipeline (one batch)")
      ->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--queue", o->max_queue, "Requests that may wait for the next batch (more: 429)")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--max-body", o->max_body, "Largest request body (more: 413)")->capture_default_str();
  app.add_option("--http-threads", o->http_threads, "HTTP connection threads (default: parallel + queue + 4)")
      ->check(CLI::Range(2, 1024));
  app.add_flag("--mmap", o->mmap,
               "Run the weights straight from the model file's mapping (default: the units this process runs are "
               "held in memory in huge pages when they fit, which decodes faster where the page cache maps "
               "files in small pages)");
  app.add_flag("-v,--verbose", o->verbose, "Progress and plan details on stderr");
  add_cluster_options(app, o->cluster, true);
  add_split_options(app, o->split);
  app.add_option("--ubatch", o->ubatch, "Tokens per prefill micro-batch over several computing stages (one stage: batches of 64)")->check(CLI::Range(1, 4096))
      ->capture_default_str()->group("Distributed");
  app.add_option("--decode-batches", o->decode_batches, "Decode batches in flight (default: one per computing stage)")
      ->check(CLI::Range(1, 4096))->group("Distributed");

  return [o]() -> int {
    const bool distributed = o->cluster.wanted();
    if (!distributed && (o->split.custom() || !o->cluster.memory_limit.empty())) {
      return report_error(make_error(ErrorCode::invalid_argument,
                                     "--ring, --split, --split-units and --memory-limit need --local N or --cluster FILE"));
    }
    auto max_body = runtime::parse_byte_size(o->max_body);
    if (!max_body || *max_body == 0) {
      return report_error(make_error(ErrorCode::invalid_argument, "--max-body: give a size such as 1MB"));
    }
    auto model = model::Model::load(o->model);
    if (!model) return report_error(model.error());
    const model::HParams& hp = (*model)->hparams();
    auto tok = model::Tokenizer::from_gguf((*model)->file());
    if (!tok) return report_error(tok.error());
    if (tok->n_vocab() > hp.n_vocab) {
      return report_error(make_error(ErrorCode::parse, o->model + ": the vocabulary is larger than the embedding"));
    }
    std::optional<std::string> gguf_template;
    if (auto t = (*model)->file().get_string("tokenizer.chat_template")) gguf_template = *t;
    auto chat_template = serve::choose_chat_template(o->chat_template, gguf_template);
    if (!chat_template && !o->chat_template.empty()) return report_error(chat_template.error());
    if (!chat_template) {
      std::fprintf(stderr, "lingua: warning: %s; /v1/chat/completions will refuse requests\n",
                   chat_template.error().message.c_str());
    }
    const int64_t n_ctx = o->ctx_size > 0 ? std::min(o->ctx_size, hp.n_ctx_train) : std::min<int64_t>(hp.n_ctx_train, 4096);
    const std::string model_id =
        o->model_id.empty() ? std::filesystem::path(o->model).stem().string() : o->model_id;

    serve::ServeMetrics metrics;
    serve::EventLog events;
    ClusterConnection conn;
    std::unique_ptr<serve::Engine> engine;
    auto log = [v = o->verbose](const std::string& s) {
      if (v) std::fprintf(stderr, "lingua: %s\n", s.c_str());
    };
    if (distributed) {
      runtime::CoordinatorOptions co;
      co.ring = o->split.ring;
      co.n_ctx = n_ctx;
      co.n_ubatch = o->ubatch;
      co.decode_batches = o->decode_batches;
      co.hold_weights_in_memory = !o->mmap;
      co.log = log;
      o->split.origin_shares_cores = runtime::oversubscribes_cores(
          o->cluster.local, o->cluster.worker_threads > 0 ? o->cluster.worker_threads : o->threads, o->threads,
          static_cast<int>(runtime::allowed_cpus().size()));
      auto resplit = std::make_shared<Resplitter>();  // a lost worker: re-plan over the survivors
      resplit->args = o->split;
      Resplitter::install(resplit, co);
      co.late_workers = true;  // (--cluster: a device not up yet joins when it answers)
      auto c = connect_cluster(o->cluster, **model, o->threads, o->verbose, co);
      if (!c) return report_error(c.error());
      conn = std::move(*c);
      runtime::Coordinator& coord = *conn.coordinator;
      for (int w = 1; w <= coord.n_workers(); ++w) {
        events.add("join", coord.worker_hello(w).name + " joined from " + coord.worker_endpoint(w));
      }
      auto chosen = choose_split(o->split, coord, **model, o->parallel > 1, o->verbose);
      if (!chosen) return report_error(chosen.error());
      resplit->chosen = *chosen;
      resplit->coordinator = &coord;
      resplit->model = &**model;
      auto loaded = coord.load(chosen->stages);
      if (!loaded) return report_error(loaded.error());
      events.add("load", "plan " + runtime::format_split(chosen->stages) + " loaded");
      engine = serve::make_coordinator_engine(coord, *tok, static_cast<size_t>(o->parallel), model_id,
                                              o->cluster.local > 0 ? "local workers" : "cluster");
    } else {
      runtime::TerminationSignals::install();
      if (!o->mmap) {
        const uint64_t held = runtime::hold_units_in_memory(**model, 0, hp.n_units() - 1, [](const std::string& s) {
          std::fprintf(stderr, "lingua: %s\n", s.c_str());
        });
        log("weights: " + std::to_string(held >> 20) + " MiB held in memory");
      }
      auto e = serve::make_local_engine(**model, *tok, o->threads, n_ctx, model_id);
      if (!e) return report_error(e.error());
      engine = std::move(*e);
      events.add("load", "every unit on this process");
    }

    serve::SchedulerOptions so;
    so.max_queue = static_cast<size_t>(o->max_queue);
    auto scheduler = with_signals_blocked([&] { return std::make_unique<serve::Scheduler>(*engine, so, metrics, events); });
    serve::ServerOptions sv;
    sv.host = o->host;
    sv.port = o->port;
    sv.api_key = o->api_key;
    sv.model_id = model_id;
    sv.max_body_bytes = *max_body;
    sv.n_ctx = n_ctx;
    sv.chat_template = chat_template;
    if (tok->eos_id() >= 0) sv.eos_text = tok->token_text(tok->eos_id());
    sv.n_http_threads = o->http_threads > 0 ? static_cast<size_t>(o->http_threads)
                                            : std::min<size_t>(o->parallel + o->max_queue + 4, 512);
    auto server = with_signals_blocked([&] { return serve::Server::start(sv, *scheduler, *tok, metrics, events); });
    if (!server) return report_error(server.error());
    events.add("start", "serving " + model_id + " on http://" + o->host + ":" + std::to_string((*server)->port()));
    std::printf("lingua serve listening on http://%s:%d\n", o->host.c_str(), (*server)->port());
    std::fflush(stdout);
    if (o->verbose) {
      std::fprintf(stderr, "lingua: chat template %s, context %lld, parallel %d, queue %d\n",
                   chat_template ? serve::chat_template_name(*chat_template) : "(none)", static_cast<long long>(n_ctx),
                   o->parallel, o->max_queue);
    }
    while (!runtime::TerminationSignals::requested()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (o->verbose) std::fprintf(stderr, "lingua: shutting down\n");
    scheduler->shutdown();  // the running batch ends (or is interrupted), the queued requests fail
    (*server)->stop();
    return 0;
  };
}

}  // namespace ll::apps
