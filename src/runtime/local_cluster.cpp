#include "runtime/local_cluster.h"

#include <algorithm>
#include <chrono>

#include "net/security.h"
#include "runtime/sysinfo.h"

namespace ll::runtime {

bool oversubscribes_cores(int n_workers, int worker_threads, int origin_threads, int cores) {
  if (n_workers <= 0) return false;
  const int64_t threads = int64_t{n_workers} * std::max(1, worker_threads) + std::max(1, origin_threads);
  return threads > std::max(1, cores);
}

Expected<std::unique_ptr<LocalCluster>> LocalCluster::start(const LocalClusterOptions& o) {
  if (o.n_workers < 1 || o.n_workers > 64) {
    return make_error(ErrorCode::invalid_argument, "--local takes 1 to 64 workers");
  }
  if (!o.insecure) LL_TRY(net::check_curve_key(o.origin_public_key, "the origin's public key"));
  std::unique_ptr<LocalCluster> cl(new LocalCluster());
  const std::string bin = o.lingua_binary.empty() ? self_executable_path() : o.lingua_binary;
  const std::vector<int> cpus = allowed_cpus();
  const bool pin = o.pin && static_cast<size_t>(o.n_workers) * static_cast<size_t>(o.n_threads) <= cpus.size();
  for (int i = 0; i < o.n_workers; ++i) {
    const std::string name = "local-" + std::to_string(i + 1);
    SpawnOptions so;
    so.argv = {bin, "worker", "--listen", "tcp://127.0.0.1:0", "--name", name, "-t", std::to_string(o.n_threads)};
    if (o.quiet) so.argv.push_back("--quiet");
    if (pin) {
      const auto first = cpus.begin() + static_cast<std::ptrdiff_t>(i) * o.n_threads;
      so.argv.push_back("--cpus");
      so.argv.push_back(format_cpu_list(std::vector<int>(first, first + o.n_threads)));
    }
    if (o.memory_limit_bytes > 0) {
      so.argv.push_back("--memory-limit");
      so.argv.push_back(std::to_string(o.memory_limit_bytes));
    }
    if (!o.cache_dir.empty()) {
      so.argv.push_back("--cache-dir");
      so.argv.push_back(o.cache_dir + "/" + name);
    }
    if (o.insecure) {
      so.argv.push_back("--insecure");
    } else {
      // The secret key goes through the environment: /proc/PID/environ is readable by the owner only,
      // unlike the command line, and nothing is left on disk if we are killed. The worker unsets it.
      LL_ASSIGN_OR_RETURN(net::CurveKeyPair keys, net::generate_curve_keypair());
      // One argument: a Z85 key may begin with '-', which a separate argument would turn into an option.
      so.argv.push_back("--allow=" + o.origin_public_key);
      so.extra_env.emplace_back(k_worker_secret_key_env, keys.secret_key);
      cl->public_keys_.push_back(keys.public_key);
    }
    LL_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::spawn(so));
    cl->children_.push_back(std::move(child));
    cl->names_.push_back(name);
  }
  // Each worker prints "listening on <endpoint>" once its socket is bound.
  for (size_t i = 0; i < cl->children_.size(); ++i) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      auto line = cl->children_[i].read_line(std::chrono::milliseconds(500));
      if (!line) {
        return make_error(line.error().code, "local worker " + cl->names_[i] + " did not start: " + line.error().message);
      }
      if (*line) {
        const std::string prefix = "listening on ";
        const size_t at = (*line)->find(prefix);
        if (at != std::string::npos) {
          cl->endpoints_.push_back((*line)->substr(at + prefix.size()));
          break;
        }
        continue;
      }
      // (read_line returns at once, reading nothing, once SIGINT/SIGTERM came: stop here, and the
      // workers with us, instead of spinning until the deadline.)
      if (TerminationSignals::requested()) {
        return make_error(ErrorCode::resource, "interrupted while the local workers were starting");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return make_error(ErrorCode::resource, "local worker " + cl->names_[i] + " did not start within 30 s");
      }
    }
    if (o.log) o.log("started " + cl->names_[i] + " at " + cl->endpoints_.back());
  }
  return cl;
}

void LocalCluster::stop() {
  for (auto& c : children_) {
    if (c.running()) (void)c.terminate(std::chrono::milliseconds(2000));
  }
  children_.clear();
}

LocalCluster::~LocalCluster() { stop(); }

}  // namespace ll::runtime
