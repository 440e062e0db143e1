// Coordinator and workers over CURVE-secured ZeroMQ links (in this process, on loopback): the
// pipeline works end to end — including the worker-to-worker link, which the coordinator authorizes
// through LOAD_SEGMENT — and a coordinator refuses a worker whose key is not the expected one, and is
// refused by a worker that does not list it, with a clear error well within the connect timeout.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/shared_files.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "net/channel.h"
#include "net/security.h"
#include "net/transport.h"
#include "runtime/coordinator.h"
#include "runtime/split.h"
#include "runtime/worker.h"

namespace ll {
namespace {

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

net::CurveKeyPair keys() {
  auto k = net::generate_curve_keypair();
  EXPECT_TRUE(k.has_value()) << k.error().message;
  return k ? *k : net::CurveKeyPair{};
}

net::TransportOptions curve_options(const net::CurveKeyPair& k, std::shared_ptr<net::AuthorizedKeys> allowed = {}) {
  net::TransportOptions o;
  o.security.mode = net::SocketSecurity::Mode::curve;
  o.security.curve_public_key = k.public_key;
  o.security.curve_secret_key = k.secret_key;
  o.security.authorized_clients = std::move(allowed);
  return o;
}

// Workers with their own key pairs, each accepting `coordinators`, serving on threads.
class SecureWorkers {
 public:
  SecureWorkers(int n, const std::vector<std::string>& coordinators) {
    for (int i = 0; i < n; ++i) {
      const net::CurveKeyPair k = keys();
      auto allowed = std::make_shared<net::AuthorizedKeys>(coordinators);
      nets_.push_back(net::make_zmq_network(curve_options(k, allowed)));
      runtime::WorkerOptions o;
      o.listen = "tcp://127.0.0.1:*";
      o.name = "secure-" + std::to_string(i + 1);
      o.quiet = true;
      o.authorized_keys = allowed;
      auto w = runtime::Worker::create(o, *nets_.back());
      if (!w) {
        ADD_FAILURE() << w.error().message;
        continue;
      }
      endpoints_.push_back((*w)->endpoint());
      public_keys_.push_back(k.public_key);
      key_pairs_.push_back(k);
      workers_.push_back(std::move(*w));
    }
    for (auto& w : workers_) {
      runtime::Worker* wp = w.get();
      threads_.emplace_back([this, wp] { (void)wp->serve([this] { return stop_.load(); }); });
    }
  }
  ~SecureWorkers() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const std::vector<std::string>& public_keys() const { return public_keys_; }
  const net::CurveKeyPair& key_pair(size_t i) const { return key_pairs_.at(i); }
  runtime::Worker& worker(size_t i) { return *workers_.at(i); }

 private:
  std::vector<std::unique_ptr<net::Network>> nets_;
  std::vector<std::unique_ptr<runtime::Worker>> workers_;
  std::vector<std::string> endpoints_, public_keys_;
  std::vector<net::CurveKeyPair> key_pairs_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
};

std::unique_ptr<model::Model> load_model() {
  auto m = model::Model::load(test::shared_path("models/stories260K.gguf"));
  EXPECT_TRUE(m.has_value());
  return m ? std::move(*m) : nullptr;
}

TEST(SecureCluster, CurvePipelineMatchesOneProcess) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_model();
  ASSERT_TRUE(model);
  auto tok = model::Tokenizer::from_gguf(model->file());
  ASSERT_TRUE(tok.has_value());
  const auto prompt = tok->encode("Once upon a time", true);
  model::GenerateOptions gen;
  gen.n_predict = 12;
  gen.sampling.temperature = 0;
  ThreadPool pool(1);
  auto one = model::UnitRunner::create(*model, 0, model->n_units() - 1, pool, 64);
  ASSERT_TRUE(one.has_value());
  auto want = model::generate(**one, *tok, prompt, gen);
  ASSERT_TRUE(want.has_value());

  const net::CurveKeyPair origin = keys();
  SecureWorkers workers(3, {origin.public_key});
  auto net = net::make_zmq_network(curve_options(origin));
  for (bool ring : {false, true}) {
    runtime::CoordinatorOptions co;
    co.ring = ring;
    co.n_ctx = 64;
    co.worker_public_keys = workers.public_keys();
    co.connect_timeout = net::Millis(5000);
    co.timeout = net::Millis(30000);
    auto coord = runtime::Coordinator::connect(*model, *net, workers.endpoints(), co);
    ASSERT_TRUE(coord.has_value()) << coord.error().message;
    auto stages = runtime::split_even(model->n_units(), 3, ring);
    ASSERT_TRUE(stages.has_value());
    // Workers 1 -> 2 -> 3 forward to each other: each one's Listener accepts the previous worker only
    // because the coordinator's LOAD_SEGMENT named it.
    auto loaded = (*coord)->load(*stages);
    ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
    auto got = (*coord)->generate(*tok, {runtime::Request{prompt}}, gen, 1);
    ASSERT_TRUE(got.has_value()) << got.error().message;
    ASSERT_EQ(got->size(), 1u);
    EXPECT_EQ((*got)[0].tokens, want->tokens) << (ring ? "ring" : "chain");
  }
}

TEST(SecureCluster, ThePreviousStageMayForwardButNotControlTheNext) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_model();
  ASSERT_TRUE(model);
  const net::CurveKeyPair origin = keys();
  SecureWorkers workers(2, {origin.public_key});
  auto net = net::make_zmq_network(curve_options(origin));
  runtime::CoordinatorOptions co;
  co.n_ctx = 32;
  co.worker_public_keys = workers.public_keys();
  auto coord = runtime::Coordinator::connect(*model, *net, workers.endpoints(), co);
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  auto stages = runtime::split_even(model->n_units(), 2, false);
  ASSERT_TRUE(stages.has_value());
  ASSERT_TRUE((*coord)->load(*stages).has_value());  // worker 2 now accepts worker 1's key (delegated)

  // Someone holding worker 1's key (the previous stage) talks to worker 2.
  auto as_w1 = net::make_zmq_network(curve_options(workers.key_pair(0)));
  auto link = as_w1->connect(workers.endpoints()[1], workers.public_keys()[1]);
  ASSERT_TRUE(link.has_value()) << link.error().message;
  net::Channel ch(**link);
  net::Hello hello;
  hello.role = net::Role::worker;
  hello.name = "impostor";
  ASSERT_TRUE(ch.handshake(hello, net::Role::worker, net::Millis(5000)).has_value());
  const uint64_t bad_before = workers.worker(1).counters().n_bad_messages;
  auto expect_refused = [&](const net::Message& m, uint64_t rid) {
    ASSERT_TRUE(ch.send(m, rid).has_value());
    auto reply = ch.recv(net::Millis(5000));
    ASSERT_TRUE(reply.has_value() && reply->has_value());
    const auto* e = std::get_if<net::ErrorMessage>(&(*reply)->message);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->code, net::WireError::unauthorized);
    EXPECT_CONTAINS(e->message, "only a coordinator may send it");
  };
  net::LoadSegment takeover;
  takeover.unit_first = 1;
  takeover.unit_last = 1;
  takeover.n_ctx = 8;
  expect_refused(takeover, 11);
  expect_refused(net::StatsRequest{}, 12);
  EXPECT_EQ(workers.worker(1).counters().n_bad_messages, bad_before + 2);
  // Pipeline frames are still its business: a HEARTBEAT is echoed.
  ASSERT_TRUE(ch.send(net::Heartbeat{1, 2}, 13).has_value());
  auto echo = ch.recv(net::Millis(5000));
  ASSERT_TRUE(echo.has_value() && echo->has_value());
  EXPECT_TRUE(std::holds_alternative<net::Heartbeat>((*echo)->message));
  // The real pipeline still works.
  auto tok = model::Tokenizer::from_gguf(model->file());
  ASSERT_TRUE(tok.has_value());
  model::GenerateOptions gen;
  gen.n_predict = 4;
  gen.sampling.temperature = 0;
  auto got = (*coord)->generate(*tok, {runtime::Request{tok->encode("Once", true)}}, gen, 1);
  EXPECT_TRUE(got.has_value()) << got.error().message;
}

TEST(SecureCluster, CoordinatorRefusesAWorkerWithAnotherKey) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_model();
  ASSERT_TRUE(model);
  const net::CurveKeyPair origin = keys();
  SecureWorkers workers(2, {origin.public_key});
  auto net = net::make_zmq_network(curve_options(origin));
  runtime::CoordinatorOptions co;
  co.worker_public_keys = workers.public_keys();
  co.worker_public_keys[1] = keys().public_key;  // the cluster file names another key for worker 2
  co.connect_timeout = net::Millis(8000);
  const auto t0 = std::chrono::steady_clock::now();
  auto coord = runtime::Coordinator::connect(*model, *net, workers.endpoints(), co);
  ASSERT_FALSE(coord.has_value());
  EXPECT_CONTAINS(coord.error().message, "could not authenticate worker at " + workers.endpoints()[1]);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));
  // The impostor test did not disturb the real worker: it never saw a frame from that link.
  EXPECT_EQ(workers.worker(1).counters().n_messages, 0u);
}

TEST(SecureCluster, WorkerRefusesAnUnlistedCoordinator) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_model();
  ASSERT_TRUE(model);
  SecureWorkers workers(1, {keys().public_key});  // trusts some other origin
  auto intruder = net::make_zmq_network(curve_options(keys()));
  runtime::CoordinatorOptions co;
  co.worker_public_keys = workers.public_keys();  // knows the worker's real key
  co.connect_timeout = net::Millis(8000);
  auto coord = runtime::Coordinator::connect(*model, *intruder, workers.endpoints(), co);
  ASSERT_FALSE(coord.has_value());
  EXPECT_CONTAINS(coord.error().message, "refused our public key");
  // Nothing reached the worker: no HELLO, no bad message.
  const runtime::WorkerCounters c = workers.worker(0).counters();
  EXPECT_EQ(c.n_messages, 0u);
  EXPECT_EQ(c.n_bad_messages, 0u);
}

TEST(SecureCluster, PlainCoordinatorCannotReachASecureWorker) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto model = load_model();
  ASSERT_TRUE(model);
  SecureWorkers workers(1, {keys().public_key});
  auto plain = net::make_zmq_network();
  runtime::CoordinatorOptions co;
  co.connect_timeout = net::Millis(1500);
  auto coord = runtime::Coordinator::connect(*model, *plain, workers.endpoints(), co);
  ASSERT_FALSE(coord.has_value());
  EXPECT_EQ(workers.worker(0).counters().n_messages, 0u);
  EXPECT_EQ(workers.worker(0).counters().n_bad_messages, 0u);
}

}  // namespace
}  // namespace ll
