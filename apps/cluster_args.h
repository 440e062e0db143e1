// The options and setup shared by the commands that drive workers (`run`, `profile`): which workers
// (--local N started here, or --cluster FILE), and the coordinator connected to them.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "core/error.h"
#include "model/model.h"
#include "net/transport.h"
#include "plan/profile.h"
#include "runtime/coordinator.h"
#include "runtime/join.h"
#include "runtime/local_cluster.h"

namespace ll::apps {

struct ClusterArgs {
  int local = 0;
  std::string cluster;
  int worker_threads = 0;  // 0: the command's -t
  std::string memory_limit, cache_dir;
  std::string origin_memory;  // what the planner may place on this device (default: its available memory)
  double connect_timeout_s = 10;
  // Security (net/security.h). By default every link is CURVE: the origin's key pair comes from
  // --key (required with --cluster, whose devices must each have a public_key; optional with --local,
  // which otherwise makes ephemeral keys for the origin and every worker). --insecure: plain TCP.
  std::string key_file;
  bool insecure = false;
  // Membership: take in workers that ask to join (`lingua worker --join`) on this endpoint; over
  // CURVE only those whose key is a device's public_key in the cluster file or in join_keys_file.
  std::string join_listen, join_keys_file;
  // Units on each side of its segment a worker keeps (as its memory allows) so that a re-plan moving
  // a boundary sends no weights (runtime::CoordinatorOptions::spare_units).
  int spare_units = runtime::CoordinatorOptions{}.spare_units;
  bool wanted() const { return local > 0 || !cluster.empty(); }
};

// --local, --cluster, --worker-threads, --memory-limit, --origin-memory, --cache-dir, --connect-timeout,
// --key, --insecure; with `membership` (commands that keep running: run, serve) also --join-listen,
// --join-keys and --spare-units.
void add_cluster_options(CLI::App& app, ClusterArgs& a, bool membership = false);

// Members are destroyed bottom-up: the coordinator, then its network, then the local workers.
struct ClusterConnection {
  std::unique_ptr<runtime::LocalCluster> local;
  std::unique_ptr<net::Network> net;
  std::unique_ptr<runtime::Coordinator> coordinator;
  std::unique_ptr<runtime::JoinListener> join;  // --join-listen (stopped before the coordinator goes)
};

// Starts the --local workers or reads the cluster file, and connects a coordinator to the workers
// (installs the SIGINT/SIGTERM handling that stops everything cleanly). `co.log` also gets progress.
Expected<ClusterConnection> connect_cluster(const ClusterArgs& a, const model::Model& model, int origin_threads,
                                            bool verbose, runtime::CoordinatorOptions co);

// Loads the model, connects to the workers and measures a planner profile (`profile`, `plan -m`).
Expected<plan::Profile> measure_live_profile(const ClusterArgs& a, const std::string& model_path, int origin_threads,
                                             int steps, int64_t ctx_size, bool verbose);

}  // namespace ll::apps
