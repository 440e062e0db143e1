// lingua worker: serve one device's share of a model for a coordinator.
#include <cstdio>

#include "apps/commands.h"
#include "net/transport.h"
#include "runtime/process.h"
#include "runtime/sysinfo.h"
#include "runtime/worker.h"

namespace ll::apps {

Runner add_worker_command(CLI::App& app) {
  struct Opts {
    std::string listen = "tcp://127.0.0.1:5601", name, memory_limit, cache_dir, model, cpus;
    int threads = 1;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--listen", o->listen, "Endpoint to listen on, tcp://HOST:PORT (port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--name", o->name, "Name reported to the coordinator (default: worker-PORT)");
  app.add_option("-t,--threads", o->threads, "Threads for this worker's units")->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--memory-limit", o->memory_limit,
                 "Refuse segments and sequences that would need more memory than this (e.g. 1600MB, 2GiB)");
  app.add_option("--cache-dir", o->cache_dir,
                 "Keep received tensors here, by content hash, so a restart does not fetch them again");
  app.add_option("--model", o->model, "Map tensors from this local copy of the model instead of receiving them")
      ->check(CLI::ExistingFile);
  app.add_flag("-q,--quiet", o->quiet, "Log errors only");
  app.add_option("--cpus", o->cpus, "Run only on these CPUs, e.g. 0-1 or 0,2 (an emulated device's cores)");
  app.footer(
      "The worker prints \"listening on ENDPOINT\" on stdout once it accepts connections, then serves until\n"
      "SIGINT/SIGTERM. It needs no model file: the coordinator sends the tensors of its units.");
  return [o]() -> int {
    // First, so that every thread started later (compute pool, ZeroMQ I/O) inherits it.
    if (!o->cpus.empty()) {
      auto cpus = runtime::parse_cpu_list(o->cpus);
      if (!cpus) return report_error(make_error(ErrorCode::invalid_argument, "--cpus: " + cpus.error().message));
      auto pinned = runtime::pin_to_cpus(*cpus);
      if (!pinned) return report_error(pinned.error());
    }
    runtime::WorkerOptions wo;
    wo.listen = o->listen;
    // ZeroMQ spells "any free port" as "*".
    if (wo.listen.size() > 2 && wo.listen.compare(wo.listen.size() - 2, 2, ":0") == 0) {
      wo.listen.replace(wo.listen.size() - 1, 1, "*");
    }
    wo.name = o->name;
    wo.n_threads = o->threads;
    wo.cache_dir = o->cache_dir;
    wo.model_path = o->model;
    wo.quiet = o->quiet;
    if (!o->memory_limit.empty()) {
      auto limit = runtime::parse_byte_size(o->memory_limit);
      if (!limit) return report_error(make_error(ErrorCode::invalid_argument, "--memory-limit: " + limit.error().message));
      wo.memory_limit_bytes = *limit;
    }
    runtime::TerminationSignals::install();
    net::TransportOptions to;
    to.recv_hwm = 16;  // bounds the tensor chunks (1 MiB each) queued in this process while loading
    auto net = net::make_zmq_network(to);
    auto worker = runtime::Worker::create(wo, *net);
    if (!worker) return report_error(worker.error());
    std::printf("lingua worker %s listening on %s\n", (*worker)->name().c_str(), (*worker)->endpoint().c_str());
    std::fflush(stdout);
    auto served = (*worker)->serve([] { return runtime::TerminationSignals::requested(); });
    if (!served) return report_error(served.error());
    if (!o->quiet) std::fprintf(stderr, "lingua worker %s: stopping (signal %d)\n", (*worker)->name().c_str(),
                 runtime::TerminationSignals::signal_number());
    return 0;
  };
}

}  // namespace ll::apps
