#include "serve/scheduler.h"

#include <chrono>

namespace ll::serve {

void Job::append_text(std::string_view text) {
  {
    std::lock_guard lock(m_);
    pending_.append(text);
  }
  cv_.notify_all();
}

void Job::finish(model::GenerateResult result) {
  {
    std::lock_guard lock(m_);
    result_ = std::move(result);
    done_ = true;
  }
  cv_.notify_all();
}

void Job::fail(Error error) {
  {
    std::lock_guard lock(m_);
    error_ = std::move(error);
    done_ = true;
  }
  cv_.notify_all();
}

bool Job::wait_text(std::string& text, std::chrono::milliseconds timeout) {
  std::unique_lock lock(m_);
  cv_.wait_for(lock, timeout, [&] { return done_ || !pending_.empty(); });
  text = std::move(pending_);
  pending_.clear();
  return done_;
}

void Job::wait_done() {
  std::unique_lock lock(m_);
  cv_.wait(lock, [&] { return done_; });
}

bool Job::done() const {
  std::lock_guard lock(m_);
  return done_;
}

Scheduler::Scheduler(Engine& engine, SchedulerOptions options, ServeMetrics& metrics, EventLog& events)
    : engine_(engine), opt_(options), metrics_(metrics), events_(events) {
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() { shutdown(); }

void Scheduler::shutdown() {
  {
    std::lock_guard lock(m_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::deque<std::shared_ptr<Job>> rest;
  {
    std::lock_guard lock(m_);
    rest.swap(queue_);
  }
  for (auto& j : rest) j->fail(make_error(ErrorCode::resource, "the server is shutting down"));
}

Admission Scheduler::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(m_);
    if (!healthy_ || stop_) return Admission::unavailable;
    if (queue_.size() >= opt_.max_queue) return Admission::queue_full;
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return Admission::accepted;
}

QueueState Scheduler::state() const {
  std::lock_guard lock(m_);
  return QueueState{queue_.size(), in_flight_, opt_.max_queue, healthy_};
}

void Scheduler::request_describe() {
  {
    std::lock_guard lock(m_);
    describe_wanted_ = true;
  }
  cv_.notify_all();
}

void Scheduler::describe_now() {
  auto info = engine_.describe();
  if (info) metrics_.set_cluster_info(std::move(*info));
}

void Scheduler::run() {
  for (;;) {
    std::vector<std::shared_ptr<Job>> batch;
    bool describe = false;
    {
      std::unique_lock lock(m_);
      cv_.wait(lock, [&] { return stop_ || describe_wanted_ || (!queue_.empty() && healthy_); });
      if (stop_) return;
      describe = describe_wanted_;
      describe_wanted_ = false;
      const size_t n = std::min(queue_.size(), std::max<size_t>(1, engine_.max_batch()));
      for (size_t i = 0; i < n && healthy_; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      in_flight_ = batch.size();
    }
    if (describe && healthy_) describe_now();
    if (batch.empty()) continue;
    std::vector<EngineRequest> reqs;
    reqs.reserve(batch.size());
    for (const auto& j : batch) {
      reqs.push_back(j->request());
      reqs.back().cancelled = [j = j.get()] { return j->abandoned(); };  // the batch outlives the call
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto res = engine_.generate(reqs, [&](size_t i, std::string_view text) {
      if (i < batch.size()) batch[i]->append_text(text);
    });
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++metrics_.batches_total;
    if (res && res->size() == batch.size()) {
      // Counters and the cluster description first, so that a client that got its answer sees them.
      uint64_t n_tokens = 0;
      for (const auto& r : *res) {
        n_tokens += r.tokens.size();
        metrics_.prompt_tokens_total += static_cast<uint64_t>(r.n_prompt);
      }
      metrics_.completion_tokens_total += n_tokens;
      auto info = engine_.describe();
      if (info) {  // workers that joined since the last description (they join between batches)
        const ClusterInfo before = metrics_.cluster_info();
        for (const auto& d : info->devices) {
          bool known = before.devices.empty();  // (the first description: the devices of the start)
          for (const auto& b : before.devices) known = known || b.name == d.name;
          if (!known) events_.add("join", d.name + " joined from " + d.address + "; it is offered units at the next re-plan");
        }
      }
      if (info && info->n_failovers > 0) {
        metrics_.cluster.failovers += static_cast<uint64_t>(info->n_failovers);
        events_.add("failure", "a worker was lost; its units moved to the others (" +
                                   std::to_string(info->n_failovers) + " failover(s)), the batch completed");
      }
      if (info && info->n_rebalances > 0) {
        metrics_.cluster.rebalances += static_cast<uint64_t>(info->n_rebalances);
        events_.add("rebalance", "the devices' measured speeds changed; units moved (" +
                                     std::to_string(info->n_rebalances) + " plan switch(es)), the batch completed");
      }
      if (info) metrics_.set_last_batch(ms > 0 ? n_tokens * 1000.0 / ms : 0, std::move(*info));
      for (size_t i = 0; i < batch.size(); ++i) batch[i]->finish(std::move((*res)[i]));
    } else {
      const Error err = res ? make_error(ErrorCode::internal, "the engine returned the wrong number of results")
                            : res.error();
      // Errors about the requests (a prompt that does not fit) leave the pipeline usable; anything
      // else (a worker gone, a protocol error) leaves it in an unknown state.
      const bool fatal = err.code != ErrorCode::invalid_argument;
      events_.add("failure", std::string(fatal ? "pipeline failed: " : "batch refused: ").append(err.message));
      std::deque<std::shared_ptr<Job>> rest;
      if (fatal) {
        std::lock_guard lock(m_);
        healthy_ = false;
        rest.swap(queue_);
      }
      const Error fatal_err = make_error(ErrorCode::resource, "the pipeline failed: " + err.message);
      for (auto& j : batch) j->fail(fatal ? fatal_err : err);
      for (auto& j : rest) j->fail(fatal_err);
    }
    std::lock_guard lock(m_);
    in_flight_ = 0;
  }
}

}  // namespace ll::serve
