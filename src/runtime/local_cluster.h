// `lingua run --local N`: N worker processes on free loopback ports, started from this same binary
// and stopped when the cluster object goes away (also on error; with Ctrl-C the coordinator's
// signal handling unwinds to here, and workers die with their parent even if it is killed).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "runtime/process.h"

namespace ll::runtime {

// Where `lingua worker` looks for its secret key when it has no --key (set by LocalCluster).
inline constexpr const char* k_worker_secret_key_env = "LINGUA_WORKER_SECRET_KEY";

struct LocalClusterOptions {
  int n_workers = 2;
  int n_threads = 1;                // per worker
  uint64_t memory_limit_bytes = 0;  // per worker; 0 = none
  std::string cache_dir;            // per worker: <cache_dir>/<worker name>; empty = no cache
  bool quiet = true;                // workers log errors only
  // Give each worker its own CPUs (n_threads each) when they fit in this process's CPU set: processes
  // that hand batches to each other are otherwise often woken on the same core (the scheduler's
  // wake-affine placement), so emulated devices would share a core they should not.
  bool pin = true;
  std::string lingua_binary;        // default: this executable
  // Security. By default each worker gets an ephemeral CURVE key pair made here (its secret key
  // travels in the environment variable LINGUA_WORKER_SECRET_KEY, never on the command line where
  // `ps` shows it) and accepts only `origin_public_key` (--allow). insecure: plain TCP (--insecure).
  bool insecure = false;
  std::string origin_public_key;
  std::function<void(const std::string&)> log;
};

// Whether `n_workers` local workers of `worker_threads` threads each and an origin computing with
// `origin_threads` need more cores than the `cores` given (they then share them).
bool oversubscribes_cores(int n_workers, int worker_threads, int origin_threads, int cores);

class LocalCluster {
 public:
  static Expected<std::unique_ptr<LocalCluster>> start(const LocalClusterOptions& options);
  ~LocalCluster();
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const std::vector<std::string>& names() const { return names_; }
  // The workers' CURVE public keys, in the order of endpoints(); empty with insecure.
  const std::vector<std::string>& public_keys() const { return public_keys_; }
  // Stops every worker (SIGTERM, then SIGKILL after a grace period).
  void stop();

 private:
  LocalCluster() = default;
  std::vector<ChildProcess> children_;
  std::vector<std::string> endpoints_, names_, public_keys_;
};

}  // namespace ll::runtime
