#include "apps/cluster_args.h"

#include <algorithm>
#include <cstdio>

#include "net/security.h"
#include "runtime/cluster_file.h"
#include "runtime/process.h"
#include "runtime/worker.h"

namespace ll::apps {

void add_cluster_options(CLI::App& app, ClusterArgs& a, bool membership) {
  auto* local = app.add_option("--local", a.local,
                               "Run over N worker processes started here on free loopback ports (stopped on exit)")
                    ->check(CLI::Range(1, 64))->group("Distributed");
  auto* cluster = app.add_option("--cluster", a.cluster, "Run over the workers listed in this TOML file")
                      ->check(CLI::ExistingFile)->group("Distributed");
  local->excludes(cluster);
  app.add_option("--worker-threads", a.worker_threads, "Threads of each --local worker (default: -t)")
      ->check(CLI::Range(1, 256))->group("Distributed");
  app.add_option("--memory-limit", a.memory_limit, "Memory limit of each --local worker (e.g. 1600MB)")
      ->group("Distributed");
  app.add_option("--origin-memory", a.origin_memory,
                 "Memory the planner may give model units on this device, the origin (e.g. 500MB; default: its "
                 "available memory less 128 MiB)")
      ->group("Distributed");
  app.add_option("--cache-dir", a.cache_dir, "Tensor cache directory of the --local workers (one subdirectory each)")
      ->group("Distributed");
  app.add_option("--connect-timeout", a.connect_timeout_s, "Seconds to wait for each worker's HELLO")
      ->check(CLI::Range(0.1, 3600.0))->capture_default_str()->group("Distributed");
  auto* key = app.add_option("--key", a.key_file,
                             "This origin's CURVE key pair (NAME.key from `lingua keygen`); required with --cluster, "
                             "whose devices each name their public_key; --local makes ephemeral keys without it")
                  ->check(CLI::ExistingFile)->group("Distributed");
  app.add_flag("--insecure", a.insecure,
               "Plain TCP: no encryption, no authentication (trusted networks only; workers need --insecure too)")
      ->excludes(key)->group("Distributed");
  if (!membership) return;
  auto* join = app.add_option("--join-listen", a.join_listen,
                              "Take in workers that ask to join while running (`lingua worker --join ENDPOINT`) on "
                              "this endpoint, e.g. tcp://0.0.0.0:5600 (port 0 picks a free one); each is profiled "
                              "and offered units at the next re-plan")
                   ->group("Distributed");
  app.add_option("--join-keys", a.join_keys_file,
                 "Public keys of the workers that may join (one per line, as in .pub files), besides the devices of "
                 "the cluster file (their public_key); over CURVE --join-listen takes in no one else")
      ->check(CLI::ExistingFile)->needs(join)->group("Distributed");
  app.add_option("--spare-units", a.spare_units,
                 "Units on each side of its segment that each worker also keeps, as its memory allows, so that "
                 "load balancing can move a boundary by that many units without sending weights (0: none)")
      ->check(CLI::Range(0, 1 << 16))->capture_default_str()->group("Distributed");
}

Expected<ClusterConnection> connect_cluster(const ClusterArgs& a, const model::Model& model, int origin_threads,
                                            bool verbose, runtime::CoordinatorOptions co) {
  runtime::TerminationSignals::install();
  ClusterConnection conn;
  std::vector<std::string> endpoints;
  net::TransportOptions to;
  to.send_timeout_ms = 30000;  // a worker busy verifying a large tensor may not drain chunks at once
  if (!a.insecure) {
    LL_TRY(net::check_curve_available());
    net::SocketSecurity& sec = to.security;
    sec.mode = net::SocketSecurity::Mode::curve;
    net::CurveKeyPair origin;
    if (!a.key_file.empty()) {
      LL_ASSIGN_OR_RETURN(origin, net::read_key_file(a.key_file));
    } else if (a.local > 0) {
      LL_ASSIGN_OR_RETURN(origin, net::generate_curve_keypair());  // ephemeral: this run only
    } else {
      return make_error(ErrorCode::invalid_argument,
                        "--cluster needs this origin's key pair: --key ORIGIN.key (make one with `lingua keygen -o "
                        "origin`; give each worker its .pub with --allow or --authorized-keys), or --insecure for "
                        "plain TCP");
    }
    sec.curve_public_key = origin.public_key;
    sec.curve_secret_key = origin.secret_key;
  }
  std::vector<std::string> device_names;
  if (a.local > 0) {
    runtime::LocalClusterOptions lo;
    lo.n_workers = a.local;
    lo.n_threads = a.worker_threads > 0 ? a.worker_threads : origin_threads;
    lo.cache_dir = a.cache_dir;
    lo.quiet = !verbose;
    lo.log = co.log;
    if (!a.memory_limit.empty()) {
      auto limit = runtime::parse_byte_size(a.memory_limit);
      if (!limit) return make_error(limit.error().code, "--memory-limit: " + limit.error().message);
      lo.memory_limit_bytes = *limit;
    }
    lo.insecure = a.insecure;
    lo.origin_public_key = to.security.curve_public_key;
    LL_ASSIGN_OR_RETURN(conn.local, runtime::LocalCluster::start(lo));
    endpoints = conn.local->endpoints();
    device_names = conn.local->names();
    if (!a.insecure) co.worker_public_keys = conn.local->public_keys();
  } else {
    LL_ASSIGN_OR_RETURN(runtime::ClusterFile cf, runtime::load_cluster_file(a.cluster));
    for (const auto& d : cf.devices) {
      endpoints.push_back(d.address);
      device_names.push_back(d.name);
      if (a.insecure) continue;
      if (d.public_key.empty()) {
        return make_error(ErrorCode::invalid_argument,
                          a.cluster + ": device \"" + d.name +
                              "\" has no public_key (the worker's .pub from `lingua keygen`); or run with --insecure");
      }
      co.worker_public_keys.push_back(d.public_key);
    }
  }
  // Who may join (--join-listen): over CURVE, the cluster file's keys and --join-keys.
  std::shared_ptr<net::AuthorizedKeys> joiners;
  if (!a.join_listen.empty() && !a.insecure) {
    std::vector<std::string> keys = co.worker_public_keys;
    if (a.local > 0) keys.clear();  // (ephemeral keys of our own workers)
    if (!a.join_keys_file.empty()) {
      LL_ASSIGN_OR_RETURN(auto listed, net::read_authorized_keys(a.join_keys_file));
      keys.insert(keys.end(), listed.begin(), listed.end());
    }
    if (keys.empty()) {
      return make_error(ErrorCode::invalid_argument,
                        "--join-listen takes in only the workers it is told about: give their public keys with "
                        "--join-keys FILE (or list them with their public_key in the cluster file), or run --insecure");
    }
    joiners = std::make_shared<net::AuthorizedKeys>(std::move(keys));
    to.security.authorized_clients = joiners;
  }
  if (!a.origin_memory.empty()) {
    auto bytes = runtime::parse_byte_size(a.origin_memory);
    if (!bytes) return make_error(bytes.error().code, "--origin-memory: " + bytes.error().message);
    co.origin_memory_bytes = *bytes;
  }
  conn.net = net::make_zmq_network(to);
  co.n_threads = origin_threads;
  co.connect_timeout = net::Millis(static_cast<int64_t>(a.connect_timeout_s * 1000));
  co.should_stop = [] { return runtime::TerminationSignals::requested(); };
  co.spare_units = a.spare_units;
  if (a.local > 0) co.late_workers = false;  // (ours: one that does not answer is broken)
  auto coordinator = runtime::Coordinator::connect(model, *conn.net, endpoints, co);
  if (!coordinator) {
    // Name the device whose address the error mentions (the user knows it by its name). connect()
    // writes "worker at ENDPOINT: ...": matched with the colon, so that tcp://h:560 is not taken
    // for tcp://h:5601.
    for (size_t i = 0; i < endpoints.size() && i < device_names.size(); ++i) {
      if (coordinator.error().message.find("worker at " + endpoints[i] + ": ") != std::string::npos) {
        std::string msg = "device \"";
        msg.append(device_names[i]).append("\": ").append(coordinator.error().message);
        return make_error(coordinator.error().code, std::move(msg));
      }
    }
    return coordinator.error();
  }
  conn.coordinator = std::move(*coordinator);
  // Devices of the cluster file that are not up yet (co.late_workers): said even without --verbose
  // (with it, the coordinator's log says so).
  for (const std::string& e : verbose ? std::vector<std::string>{} : conn.coordinator->joining()) {
    std::string name;
    for (size_t i = 0; i < endpoints.size() && i < device_names.size(); ++i) {
      if (endpoints[i] == e) name = device_names[i];
    }
    std::fprintf(stderr, "lingua: device \"%s\" (%s) did not answer within %.1f s: going on without it; it joins when it "
                 "answers\n", name.c_str(), e.c_str(), a.connect_timeout_s);
  }
  if (!a.join_listen.empty()) {
    std::string listen = a.join_listen;
    if (listen.size() > 2 && listen.compare(listen.size() - 2, 2, ":0") == 0) listen.replace(listen.size() - 1, 1, "*");
    net::Hello mine;
    mine.name = co.origin_name;
    mine.n_threads = static_cast<uint32_t>(origin_threads);
    runtime::Coordinator* coord = conn.coordinator.get();
    const bool secure = !a.insecure;
    auto admit = [coord, joiners, secure](const std::string& endpoint, const std::string& key) -> Expected<void> {
      if (secure && (key.empty() || joiners->trust(key) != net::PeerTrust::authorized)) {
        return make_error(ErrorCode::invalid_argument, "public key " + (key.empty() ? std::string("(none)") : key) +
                                                           " is not one this origin takes in (--join-keys)");
      }
      std::fprintf(stderr, "lingua: a worker at %s asked to join; reaching it\n", endpoint.c_str());
      coord->add_worker(endpoint, secure ? key : std::string());
      return {};
    };
    auto jl = runtime::JoinListener::start(*conn.net, listen, mine, admit);
    if (!jl) return make_error(jl.error().code, "--join-listen: " + jl.error().message);
    conn.join = std::move(*jl);
    std::fprintf(stderr, "lingua: taking in workers that ask to join at %s\n", conn.join->endpoint().c_str());
  }
  return conn;
}

Expected<plan::Profile> measure_live_profile(const ClusterArgs& a, const std::string& model_path, int origin_threads,
                                             int steps, int64_t ctx_size, bool verbose) {
  if (!a.wanted()) return make_error(ErrorCode::invalid_argument, "measuring devices needs --local N or --cluster FILE");
  LL_ASSIGN_OR_RETURN(auto model, model::Model::load(model_path));
  runtime::CoordinatorOptions co;
  co.n_ctx = std::max<int64_t>(ctx_size, 2 * steps + 8);  // two kinds of timed steps, warm-up steps, room
  co.log = [verbose](const std::string& s) {
    if (verbose) std::fprintf(stderr, "lingua: %s\n", s.c_str());
  };
  LL_ASSIGN_OR_RETURN(ClusterConnection conn, connect_cluster(a, *model, origin_threads, verbose, co));
  return conn.coordinator->measure_profile(steps);
}

}  // namespace ll::apps
