// What the server counts and shows: request and token counters, the cluster's devices and stages as
// last measured, and an event log (joins, failures, rebalances). Written by the scheduler thread
// and the HTTP handlers, read by /metrics, /cluster.json and the cluster page.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ll::serve {

// Counters of the runtime's own decisions: rebalances and failovers (the scheduler adds the
// coordinator's counts after each batch).
struct ClusterCounters {
  std::atomic<uint64_t> rebalances{0};
  std::atomic<uint64_t> failovers{0};
};

struct DeviceInfo {
  std::string name;
  std::string address;
  std::vector<std::pair<int64_t, int64_t>> units;  // ranges it runs
  uint64_t rss_bytes = 0;
  uint64_t weight_bytes = 0;
  double compute_ms = 0;
};

struct StageInfo {
  std::string device;
  int64_t first_unit = 0;
  int64_t last_unit = 0;
  double compute_ms_per_token = 0;  // measured in the last batch (0 before any)
};

struct ClusterInfo {
  std::string model;
  std::string mode;  // "single process", "local workers", "cluster"
  std::vector<DeviceInfo> devices;
  std::vector<StageInfo> stages;
  int n_failovers = 0;   // in the last batch: workers lost and their units re-planned onto the others
  int n_rebalances = 0;  // in the last batch: plans the load balancer switched to
};

struct Event {
  double unix_s = 0;
  std::string kind;  // "join", "load", "failure", "rebalance", "start"
  std::string text;
};

class EventLog {
 public:
  explicit EventLog(size_t capacity = 200) : capacity_(capacity) {}
  void add(std::string kind, std::string text);
  std::vector<Event> events() const;

 private:
  mutable std::mutex m_;
  std::deque<Event> events_;
  size_t capacity_;
};

struct ServeMetrics {
  std::atomic<uint64_t> requests_total{0};
  std::atomic<uint64_t> requests_failed{0};    // answered with an error status
  std::atomic<uint64_t> requests_rejected{0};  // 429: queue full
  std::atomic<uint64_t> prompt_tokens_total{0};
  std::atomic<uint64_t> completion_tokens_total{0};
  std::atomic<uint64_t> batches_total{0};
  ClusterCounters cluster;

  // Set by the scheduler after each batch.
  void set_last_batch(double tok_s, ClusterInfo info);
  double last_tok_s() const;
  ClusterInfo cluster_info() const;
  void set_cluster_info(ClusterInfo info);

 private:
  mutable std::mutex m_;
  double last_tok_s_ = 0;
  ClusterInfo info_;
};

struct QueueState {
  size_t queued = 0;
  size_t in_flight = 0;
  size_t capacity = 0;
  bool healthy = true;
};

// Prometheus text exposition format (version 0.0.4).
std::string prometheus_text(const ServeMetrics& m, const QueueState& q);

// The JSON the cluster page polls: {"model","mode","healthy","queue":{...},"tok_s","devices":[...],
// "stages":[...],"events":[...],"counters":{...}}.
nlohmann::json cluster_json(const ServeMetrics& m, const QueueState& q, const EventLog& log);

}  // namespace ll::serve
