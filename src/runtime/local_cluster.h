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
  std::function<void(const std::string&)> log;
};

class LocalCluster {
 public:
  static Expected<std::unique_ptr<LocalCluster>> start(const LocalClusterOptions& options);
  ~LocalCluster();
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const std::vector<std::string>& names() const { return names_; }
  // Stops every worker (SIGTERM, then SIGKILL after a grace period).
  void stop();

 private:
  LocalCluster() = default;
  std::vector<ChildProcess> children_;
  std::vector<std::string> endpoints_, names_;
};

}  // namespace ll::runtime
