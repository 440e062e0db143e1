// lingua worker: serve one device's share of a model for a coordinator.
#include <cstdio>
#include <cstdlib>

#include "apps/commands.h"
#include "net/security.h"
#include "net/transport.h"
#include "runtime/join.h"
#include "runtime/local_cluster.h"
#include "runtime/process.h"
#include "runtime/sysinfo.h"
#include "runtime/worker.h"

namespace ll::apps {

Runner add_worker_command(CLI::App& app) {
  struct Opts {
    std::string listen = "tcp://127.0.0.1:5601", name, memory_limit, cache_dir, model, cpus;
    int threads = 1;
    bool quiet = false;
    // Security.
    std::string key_file, authorized_keys_file;
    std::vector<std::string> allow;
    bool insecure = false;
    // Membership.
    std::string join, advertise, origin_key;
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
  app.add_option("--model", o->model, "Take tensors from this local copy of the model instead of receiving them (checked by SHA-256; the segment's are held in memory in huge pages)")
      ->check(CLI::ExistingFile);
  app.add_flag("-q,--quiet", o->quiet, "Log errors only");
  app.add_option("--cpus", o->cpus, "Run only on these CPUs, e.g. 0-1 or 0,2 (an emulated device's cores)");
  auto* key = app.add_option("--key", o->key_file, "This worker's CURVE key pair (NAME.key from `lingua keygen`)")
                  ->check(CLI::ExistingFile)->group("Security");
  auto* auth = app.add_option("--authorized-keys", o->authorized_keys_file,
                              "Accept only coordinators whose public key is in this file (one per line, as in .pub "
                              "files)")->check(CLI::ExistingFile)->group("Security");
  // One key per --allow: with several values per option CLI11 would read a key that begins with
  // '[' and ends with ']' (Z85 has both) as a bracketed list and cut it.
  auto* allow = app.add_option("--allow", o->allow, "Accept the coordinator with this public key (repeatable; write --allow=KEY, as a key may begin with '-')")
                    ->allow_extra_args(false)
                    ->group("Security");
  app.add_flag("--insecure", o->insecure, "Plain TCP: no encryption, anyone who reaches the port may connect")
      ->excludes(key)->excludes(auth)->excludes(allow)->group("Security");
  auto* join = app.add_option("--join", o->join,
                              "Ask a running cluster's origin to take this worker in (its --join-listen endpoint, "
                              "tcp://HOST:PORT); asks again until it answers")
                   ->group("Membership");
  app.add_option("--advertise", o->advertise,
                 "With --join: the endpoint the origin reaches this worker at (default: the --listen endpoint; "
                 "needed when listening on all addresses)")
      ->needs(join)->group("Membership");
  app.add_option("--origin-key", o->origin_key,
                 "With --join: the origin's public key (default: the one coordinator key of --allow/--authorized-keys; "
                 "write --origin-key=KEY)")
      ->needs(join)->group("Membership");
  app.footer(
      "The worker prints \"listening on ENDPOINT\" on stdout once it accepts connections, then serves until\n"
      "SIGINT/SIGTERM. It needs no model file: the coordinator sends the tensors of its units.\n"
      "Security: links are CURVE-encrypted; the worker proves it holds --key and accepts only the coordinators\n"
      "given by --authorized-keys/--allow. Without --key the secret key may come from the environment variable\n"
      "LINGUA_WORKER_SECRET_KEY (how `lingua run --local` passes ephemeral keys). --insecure: plain TCP.");
  return [o]() -> int {
    std::string join_key, my_key;  // --join over CURVE: the origin's key, and ours
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
    // Read, then removed from our environment, so that nothing we start inherits it.
    const char* env_secret = std::getenv(runtime::k_worker_secret_key_env);
    const std::string secret_from_env = env_secret != nullptr ? env_secret : "";
    ::unsetenv(runtime::k_worker_secret_key_env);
    if (o->insecure) {
      if (!secret_from_env.empty()) {
        return report_error(make_error(ErrorCode::invalid_argument,
                                       std::string("--insecure with a secret key in ") +
                                           runtime::k_worker_secret_key_env + ": choose one"));
      }
    } else {
      if (auto ok = net::check_curve_available(); !ok) return report_error(ok.error());
      net::CurveKeyPair keys;
      if (!o->key_file.empty()) {
        auto k = net::read_key_file(o->key_file);
        if (!k) return report_error(k.error());
        keys = *k;
      } else if (!secret_from_env.empty()) {
        auto pub = net::curve_public_key_of(secret_from_env);
        if (!pub) {
          return report_error(make_error(ErrorCode::invalid_argument,
                                         std::string(runtime::k_worker_secret_key_env) + ": " + pub.error().message));
        }
        keys = net::CurveKeyPair{*pub, secret_from_env};
      } else {
        return report_error(make_error(
            ErrorCode::invalid_argument,
            "a worker needs its key pair (--key NAME.key, from `lingua keygen -o NAME`) and the coordinators it "
            "accepts (--authorized-keys FILE or --allow PUBLIC_KEY); or --insecure for plain TCP"));
      }
      std::vector<std::string> allowed;
      if (!o->authorized_keys_file.empty()) {
        auto listed = net::read_authorized_keys(o->authorized_keys_file);
        if (!listed) return report_error(listed.error());
        allowed = *listed;
      }
      for (const std::string& k : o->allow) {
        if (auto ok = net::check_curve_key(k, "--allow"); !ok) return report_error(ok.error());
        allowed.push_back(k);
      }
      if (allowed.empty()) {
        return report_error(make_error(ErrorCode::invalid_argument,
                                       "a secure worker accepts only the coordinators it is told about: give their "
                                       "public keys with --authorized-keys FILE or --allow=KEY (or run --insecure)"));
      }
      if (!o->join.empty()) {
        if (!o->origin_key.empty()) {
          if (auto ok = net::check_curve_key(o->origin_key, "--origin-key"); !ok) return report_error(ok.error());
          join_key = o->origin_key;
        } else if (allowed.size() == 1) {
          join_key = allowed.front();
        } else {
          return report_error(make_error(ErrorCode::invalid_argument,
                                         "--join: which of the " + std::to_string(allowed.size()) +
                                             " coordinator keys is the origin's? Say it with --origin-key=KEY"));
        }
        my_key = keys.public_key;
      }
      wo.authorized_keys = std::make_shared<net::AuthorizedKeys>(std::move(allowed));
      to.security.mode = net::SocketSecurity::Mode::curve;
      to.security.curve_public_key = keys.public_key;
      to.security.curve_secret_key = keys.secret_key;
      to.security.authorized_clients = wo.authorized_keys;
      if (!o->quiet) std::fprintf(stderr, "lingua worker: CURVE public key %s\n", keys.public_key.c_str());
    }
    auto net = net::make_zmq_network(to);
    auto worker = runtime::Worker::create(wo, *net);
    if (!worker) return report_error(worker.error());
    std::printf("lingua worker %s listening on %s\n", (*worker)->name().c_str(), (*worker)->endpoint().c_str());
    std::fflush(stdout);
    if (!o->join.empty()) {
      runtime::JoinOptions jo;
      jo.origin = o->join;
      jo.origin_key = join_key;
      jo.advertise = o->advertise.empty() ? (*worker)->endpoint() : o->advertise;
      if (jo.advertise.find("://0.0.0.0:") != std::string::npos || jo.advertise.find("://*:") != std::string::npos ||
          jo.advertise.find("://[::]:") != std::string::npos) {
        return report_error(make_error(ErrorCode::invalid_argument,
                                       "--join: this worker listens on every address (" + jo.advertise +
                                           "); say where the origin reaches it with --advertise tcp://HOST:PORT"));
      }
      jo.public_key = my_key;
      jo.hello = (*worker)->hello();
      jo.should_stop = [] { return runtime::TerminationSignals::requested(); };
      const bool quiet = o->quiet;
      jo.log = [quiet](const std::string& s) {
        if (!quiet) std::fprintf(stderr, "lingua worker: %s\n", s.c_str());
      };
      auto joined = runtime::join_cluster(*net, jo);
      if (!joined) return report_error(joined.error());
      if (!o->quiet) {
        std::fprintf(stderr, "lingua worker %s: the origin at %s takes us in (it reaches us at %s)\n",
                     (*worker)->name().c_str(), jo.origin.c_str(), jo.advertise.c_str());
      }
    }
    auto served = (*worker)->serve([] { return runtime::TerminationSignals::requested(); });
    if (!served) return report_error(served.error());
    if (!o->quiet) std::fprintf(stderr, "lingua worker %s: stopping (signal %d)\n", (*worker)->name().c_str(),
                 runtime::TerminationSignals::signal_number());
    return 0;
  };
}

}  // namespace ll::apps
