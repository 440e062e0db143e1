// The scheduler: batches what is queued, bounds the queue, streams text into jobs, and stops
// admitting after a pipeline failure.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "fake_engine.h"
#include "serve/scheduler.h"

namespace ll::serve {
namespace {

std::shared_ptr<Job> job(int64_t n_predict) {
  model::GenerateOptions g;
  g.n_predict = n_predict;
  return std::make_shared<Job>(EngineRequest{{1, 2, 3}, g});
}

TEST(ServeScheduler, GathersWhatIsQueuedIntoTheNextBatch) {
  test::FakeEngine engine;
  engine.max_batch_ = 4;
  ServeMetrics metrics;
  EventLog events;
  Scheduler s(engine, SchedulerOptions{16}, metrics, events);
  engine.hold();
  auto first = job(2);
  ASSERT_EQ(s.submit(first), Admission::accepted);
  engine.wait_started(1);  // the first batch runs alone; the next six wait
  std::vector<std::shared_ptr<Job>> rest;
  for (int i = 0; i < 6; ++i) {
    rest.push_back(job(i + 1));
    ASSERT_EQ(s.submit(rest.back()), Admission::accepted);
  }
  EXPECT_EQ(s.state().queued, 6u);
  EXPECT_EQ(s.state().in_flight, 1u);
  engine.release();
  first->wait_done();
  for (auto& j : rest) j->wait_done();
  EXPECT_EQ(engine.batch_sizes(), (std::vector<size_t>{1, 4, 2}));
  for (size_t i = 0; i < rest.size(); ++i) {
    ASSERT_FALSE(rest[i]->error().has_value());
    EXPECT_EQ(rest[i]->result().tokens.size(), i + 1);
  }
  EXPECT_EQ(metrics.completion_tokens_total.load(), 2u + 1 + 2 + 3 + 4 + 5 + 6);
  EXPECT_EQ(metrics.prompt_tokens_total.load(), 7u * 3);
  EXPECT_EQ(metrics.batches_total.load(), 3u);
  EXPECT_EQ(metrics.cluster_info().devices.size(), 2u);  // described after each batch
}

TEST(ServeScheduler, RefusesWhenTheQueueIsFull) {
  test::FakeEngine engine;
  engine.max_batch_ = 1;
  ServeMetrics metrics;
  EventLog events;
  Scheduler s(engine, SchedulerOptions{2}, metrics, events);
  engine.hold();
  auto running = job(1);
  ASSERT_EQ(s.submit(running), Admission::accepted);
  engine.wait_started(1);
  ASSERT_EQ(s.submit(job(1)), Admission::accepted);
  ASSERT_EQ(s.submit(job(1)), Admission::accepted);
  EXPECT_EQ(s.submit(job(1)), Admission::queue_full);
  EXPECT_EQ(s.state().capacity, 2u);
  engine.release();
  running->wait_done();
}

TEST(ServeScheduler, StreamsTextAsItComes) {
  test::FakeEngine engine;
  ServeMetrics metrics;
  EventLog events;
  Scheduler s(engine, SchedulerOptions{4}, metrics, events);
  auto j = job(3);
  ASSERT_EQ(s.submit(j), Admission::accepted);
  std::string all;
  for (;;) {
    std::string text;
    const bool ended = j->wait_text(text, std::chrono::milliseconds(1000));
    all += text;
    if (ended) break;
  }
  EXPECT_EQ(all, "ababab");
  EXPECT_EQ(j->result().text, "ababab");
}

TEST(ServeScheduler, APipelineFailureFailsTheBatchAndStopsAdmission) {
  test::FakeEngine engine;
  ServeMetrics metrics;
  EventLog events;
  Scheduler s(engine, SchedulerOptions{4}, metrics, events);
  engine.fail_with(make_error(ErrorCode::io, "local-2 did not answer"));
  auto j = job(2);
  ASSERT_EQ(s.submit(j), Admission::accepted);
  j->wait_done();
  ASSERT_TRUE(j->error().has_value());
  EXPECT_EQ(j->error()->code, ErrorCode::resource);  // 503
  EXPECT_NE(j->error()->message.find("local-2 did not answer"), std::string::npos);
  EXPECT_FALSE(s.state().healthy);
  EXPECT_EQ(s.submit(job(1)), Admission::unavailable);
  bool logged = false;
  for (const auto& e : events.events()) logged = logged || (e.kind == "failure");
  EXPECT_TRUE(logged);
}

TEST(ServeScheduler, ARefusedBatchLeavesThePipelineUsable) {
  test::FakeEngine engine;
  ServeMetrics metrics;
  EventLog events;
  Scheduler s(engine, SchedulerOptions{4}, metrics, events);
  engine.fail_with(make_error(ErrorCode::invalid_argument, "prompt 1 is empty"));
  auto j = job(2);
  ASSERT_EQ(s.submit(j), Admission::accepted);
  j->wait_done();
  ASSERT_TRUE(j->error().has_value());
  EXPECT_EQ(j->error()->code, ErrorCode::invalid_argument);
  EXPECT_TRUE(s.state().healthy);
}

TEST(ServeScheduler, ShutdownFailsQueuedJobsAndRefusesNewOnes) {
  test::FakeEngine engine;
  engine.max_batch_ = 1;
  ServeMetrics metrics;
  EventLog events;
  Scheduler s(engine, SchedulerOptions{4}, metrics, events);
  engine.hold();
  auto running = job(1), queued = job(1);
  ASSERT_EQ(s.submit(running), Admission::accepted);
  engine.wait_started(1);
  ASSERT_EQ(s.submit(queued), Admission::accepted);
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    engine.release();
  });
  s.shutdown();
  releaser.join();
  EXPECT_FALSE(running->error().has_value());  // the running batch ended normally
  ASSERT_TRUE(queued->done());
  ASSERT_TRUE(queued->error().has_value());
  EXPECT_NE(queued->error()->message.find("shutting down"), std::string::npos);
  EXPECT_EQ(s.submit(job(1)), Admission::unavailable);
}

TEST(ServeMetrics, PrometheusTextHasTheCountersAndPerStageGauges) {
  ServeMetrics m;
  m.requests_total = 5;
  m.cluster.rebalances = 2;  // a balancer would increment these
  test::FakeEngine engine;
  m.set_last_batch(12.5, *engine.describe());
  const std::string text = prometheus_text(m, QueueState{3, 2, 64, true});
  for (const char* want : {"lingua_requests_total 5\n", "lingua_tokens_per_second 12.5\n", "lingua_queue_length 3\n",
                           "lingua_requests_in_flight 2\n", "lingua_rebalances_total 2\n", "lingua_failovers_total 0\n",
                           "# TYPE lingua_rebalances_total counter\n",
                           "lingua_stage_compute_ms{stage=\"1\",device=\"phone-a\",units=\"1-6\"} 3.5\n", "lingua_up 1\n"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  }
  EventLog log;
  log.add("join", "phone-a joined");
  const auto j = cluster_json(m, QueueState{0, 0, 8, false}, log);
  EXPECT_EQ(j["devices"][1]["name"], "phone-a");
  EXPECT_EQ(j["devices"][1]["units"], nlohmann::json::parse("[[1,6]]"));
  EXPECT_EQ(j["stages"][1]["compute_ms_per_token"], 3.5);
  EXPECT_EQ(j["events"][0]["text"], "phone-a joined");
  EXPECT_EQ(j["healthy"], false);
  EXPECT_EQ(j["counters"]["rebalances"], 2);
}

TEST(ServeMetrics, TheEventLogKeepsTheNewest) {
  EventLog log(3);
  for (int i = 0; i < 5; ++i) log.add("e", std::to_string(i));
  const auto ev = log.events();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev.front().text, "2");
  EXPECT_EQ(ev.back().text, "4");
}

}  // namespace
}  // namespace ll::serve
