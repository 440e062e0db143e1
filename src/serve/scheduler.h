// The scheduler: one thread owns the engine (the coordinator is not thread-safe) and runs the
// queued requests in batches.
//
// Admission: HTTP handlers submit jobs to a bounded queue (full: the handler answers 429). While a
// batch runs, new jobs wait; when it ends, everything queued (up to the engine's batch size) forms
// the next batch, whose requests are then pipelined through the stages together. The coordinator
// cannot take new sequences into a running generate() call, so a request that arrives just after a
// batch started waits for that batch's longest request. An engine error that is not about the
// requests themselves fails the batch and marks the scheduler unhealthy: every later submission is
// refused (503). A lost worker is not such an error while a re-plan over the survivors exists: the
// coordinator fails over inside generate() and the batch completes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/error.h"
#include "serve/engine.h"
#include "serve/metrics.h"

namespace ll::serve {

// One request's life, shared by its HTTP handler (which waits or streams) and the scheduler.
class Job {
 public:
  explicit Job(EngineRequest req) : request_(std::move(req)) {}
  const EngineRequest& request() const { return request_; }

  // Scheduler side.
  void append_text(std::string_view text);
  void finish(model::GenerateResult result);
  void fail(Error error);
  bool abandoned() const { return abandoned_.load(); }

  // Handler side: nobody waits for the answer any more (the client went away).
  void abandon() { abandoned_ = true; }

  // Handler side: waits until there is new text or the job ended (or `timeout` passed); moves the
  // new text into `text`. Returns true once the job has ended and all its text was taken.
  bool wait_text(std::string& text, std::chrono::milliseconds timeout);
  // Waits for the end.
  void wait_done();
  bool done() const;
  // After done(): the result, or the error.
  const std::optional<Error>& error() const { return error_; }
  const model::GenerateResult& result() const { return result_; }

 private:
  EngineRequest request_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::string pending_;
  bool done_ = false;
  std::optional<Error> error_;
  model::GenerateResult result_;
  std::atomic<bool> abandoned_{false};
};

enum class Admission { accepted, queue_full, unavailable };

struct SchedulerOptions {
  size_t max_queue = 64;  // jobs waiting (not counting the running batch)
};

class Scheduler {
 public:
  Scheduler(Engine& engine, SchedulerOptions options, ServeMetrics& metrics, EventLog& events);
  ~Scheduler();  // shutdown()
  // Lets the running batch end, fails the queued jobs ("shutting down") and stops the thread;
  // later submissions are refused. Idempotent.
  void shutdown();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  Admission submit(std::shared_ptr<Job> job);
  QueueState state() const;
  // Refreshes the devices and stages shown by /metrics and the page (runs on the scheduler thread
  // between batches); called once at start.
  void request_describe();

 private:
  void run();
  void describe_now();

  Engine& engine_;
  SchedulerOptions opt_;
  ServeMetrics& metrics_;
  EventLog& events_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  size_t in_flight_ = 0;
  bool healthy_ = true;
  bool stop_ = false;
  bool describe_wanted_ = true;
  std::thread thread_;
};

}  // namespace ll::serve
