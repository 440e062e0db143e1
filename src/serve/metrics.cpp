#include "serve/metrics.h"

#include <chrono>
#include <cstdio>

namespace ll::serve {

void EventLog::add(std::string kind, std::string text) {
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::lock_guard lock(m_);
  events_.push_back(Event{now, std::move(kind), std::move(text)});
  while (events_.size() > capacity_) events_.pop_front();
}

std::vector<Event> EventLog::events() const {
  std::lock_guard lock(m_);
  return {events_.begin(), events_.end()};
}

void ServeMetrics::set_last_batch(double tok_s, ClusterInfo info) {
  std::lock_guard lock(m_);
  last_tok_s_ = tok_s;
  info_ = std::move(info);
}

double ServeMetrics::last_tok_s() const {
  std::lock_guard lock(m_);
  return last_tok_s_;
}

ClusterInfo ServeMetrics::cluster_info() const {
  std::lock_guard lock(m_);
  return info_;
}

void ServeMetrics::set_cluster_info(ClusterInfo info) {
  std::lock_guard lock(m_);
  info_ = std::move(info);
}

namespace {

// Label values escape backslash, double quote and newline.
std::string label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  out.append(name).append(" ").append(buf).append("\n");
}

}  // namespace

std::string prometheus_text(const ServeMetrics& m, const QueueState& q) {
  std::string out;
  metric(out, "lingua_requests_total", "counter", "Completion requests received", m.requests_total.load());
  metric(out, "lingua_requests_failed_total", "counter", "Requests answered with an error status",
         m.requests_failed.load());
  metric(out, "lingua_requests_rejected_total", "counter", "Requests refused with 429 because the queue was full",
         m.requests_rejected.load());
  metric(out, "lingua_prompt_tokens_total", "counter", "Prompt tokens processed", m.prompt_tokens_total.load());
  metric(out, "lingua_completion_tokens_total", "counter", "Tokens generated", m.completion_tokens_total.load());
  metric(out, "lingua_batches_total", "counter", "Batches of requests run through the pipeline",
         m.batches_total.load());
  metric(out, "lingua_tokens_per_second", "gauge", "Generated tokens per second in the last batch", m.last_tok_s());
  metric(out, "lingua_queue_length", "gauge", "Requests waiting for the next batch", static_cast<double>(q.queued));
  metric(out, "lingua_queue_capacity", "gauge", "Most requests that may wait", static_cast<double>(q.capacity));
  metric(out, "lingua_requests_in_flight", "gauge", "Requests in the running batch", static_cast<double>(q.in_flight));
  metric(out, "lingua_up", "gauge", "1 while the pipeline serves requests", q.healthy ? 1 : 0);
  metric(out, "lingua_rebalances_total", "counter", "Plan changes by the load balancer", m.cluster.rebalances.load());
  metric(out, "lingua_failovers_total", "counter", "Workers lost mid-batch whose units were re-planned onto the others", m.cluster.failovers.load());
  const ClusterInfo info = m.cluster_info();
  out += "# HELP lingua_stage_compute_ms Compute ms per token of each pipeline stage, measured in the last batch\n";
  out += "# TYPE lingua_stage_compute_ms gauge\n";
  for (size_t i = 0; i < info.stages.size(); ++i) {
    const StageInfo& s = info.stages[i];
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", s.compute_ms_per_token);
    out.append("lingua_stage_compute_ms{stage=\"").append(std::to_string(i)).append("\",device=\"");
    out.append(label(s.device)).append("\",units=\"").append(std::to_string(s.first_unit)).append("-");
    out.append(std::to_string(s.last_unit)).append("\"} ").append(buf).append("\n");
  }
  return out;
}

nlohmann::json cluster_json(const ServeMetrics& m, const QueueState& q, const EventLog& log) {
  using nlohmann::json;
  const ClusterInfo info = m.cluster_info();
  json devices = json::array();
  for (const auto& d : info.devices) {
    json units = json::array();
    for (const auto& [a, b] : d.units) units.push_back({a, b});
    devices.push_back({{"name", d.name}, {"address", d.address}, {"units", units}, {"rss_bytes", d.rss_bytes},
                       {"weight_bytes", d.weight_bytes}, {"compute_ms", d.compute_ms}});
  }
  json stages = json::array();
  for (const auto& s : info.stages) {
    stages.push_back({{"device", s.device}, {"first_unit", s.first_unit}, {"last_unit", s.last_unit},
                      {"compute_ms_per_token", s.compute_ms_per_token}});
  }
  json events = json::array();
  for (const auto& e : log.events()) events.push_back({{"time", e.unix_s}, {"kind", e.kind}, {"text", e.text}});
  return {{"model", info.model},
          {"mode", info.mode},
          {"healthy", q.healthy},
          {"queue", {{"queued", q.queued}, {"in_flight", q.in_flight}, {"capacity", q.capacity}}},
          {"tok_s", m.last_tok_s()},
          {"requests_total", m.requests_total.load()},
          {"completion_tokens_total", m.completion_tokens_total.load()},
          {"counters", {{"rebalances", m.cluster.rebalances.load()}, {"failovers", m.cluster.failovers.load()}}},
          {"devices", devices},
          {"stages", stages},
          {"events", events}};
}

}  // namespace ll::serve
