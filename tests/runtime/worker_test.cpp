// A worker answers malformed, truncated, oversized and out-of-order messages with errors and keeps
// serving; refuses work over its memory limit; reuses its tensor cache; maps a local model copy.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "inproc_cluster.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "net/channel.h"
#include "net/codec.h"
#include "runtime/coordinator.h"
#include "runtime/model_source.h"
#include "runtime/split.h"
#include "runtime/sysinfo.h"

namespace ll {
namespace {

const std::string k_model = "models/stories260K.gguf";

struct Loaded {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::Tokenizer> tok;
};

Loaded load() {
  Loaded l;
  auto m = model::Model::load(test::shared_path(k_model));
  if (!m) return l;
  l.model = std::move(*m);
  l.tok = std::make_unique<model::Tokenizer>(std::move(*model::Tokenizer::from_gguf(l.model->file())));
  return l;
}

std::vector<int32_t> reference(const Loaded& l, const std::vector<int32_t>& prompt, int n) {
  ThreadPool pool(1);
  auto runner = model::UnitRunner::create(*l.model, 0, l.model->n_units() - 1, pool, 64);
  model::GenerateOptions g;
  g.n_predict = n;
  g.sampling.temperature = 0;
  return model::generate(**runner, *l.tok, prompt, g)->tokens;
}

// Generates through a fresh coordinator over `endpoints` and returns the tokens (or the error text).
Expected<std::vector<int32_t>> run_pipeline(const Loaded& l, net::Network& net, const std::vector<std::string>& endpoints,
                                            const std::vector<int32_t>& prompt, int n) {
  runtime::CoordinatorOptions co;
  co.n_ctx = 64;
  co.timeout = net::Millis(20000);
  LL_ASSIGN_OR_RETURN(auto coord, runtime::Coordinator::connect(*l.model, net, endpoints, co));
  LL_TRY(coord->load(*runtime::split_even(l.model->n_units(), static_cast<int>(endpoints.size()), false)));
  model::GenerateOptions g;
  g.n_predict = n;
  g.sampling.temperature = 0;
  LL_ASSIGN_OR_RETURN(auto res, coord->generate(*l.tok, {runtime::Request{prompt}}, g, 1));
  return res[0].tokens;
}

// Receives until an ERROR arrives (skipping other answers); returns it.
std::optional<net::ErrorMessage> next_error(net::Channel& ch) {
  for (int i = 0; i < 20; ++i) {
    auto m = ch.recv(net::Millis(2000));
    if (!m || !*m) return std::nullopt;
    if (auto* e = std::get_if<net::ErrorMessage>(&(*m)->message)) return *e;
  }
  return std::nullopt;
}

net::Hello coordinator_hello() {
  net::Hello h;
  h.role = net::Role::coordinator;
  h.name = "test";
  return h;
}

TEST(Worker, BadMessagesGetErrorsAndTheWorkerKeepsServing) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  // The real transport, with a small frame limit so "oversized" is cheap to send.
  net::TransportOptions to;
  to.limits.max_frame_bytes = 1 << 20;
  auto net = net::make_zmq_network(to);
  runtime::WorkerOptions wo;
  wo.listen = "tcp://127.0.0.1:*";
  wo.limits = to.limits;
  auto worker = runtime::Worker::create(wo, *net);
  ASSERT_TRUE(worker.has_value()) << worker.error().message;
  std::atomic<bool> stop{false};
  std::thread serving([&] { (void)(*worker)->serve([&] { return stop.load(); }); });
  const std::string ep = (*worker)->endpoint();

  auto link = net->connect(ep);
  ASSERT_TRUE(link.has_value());
  net::Channel ch(**link, to.limits);
  // Garbage before anything else.
  ASSERT_TRUE((*link)->send_bytes({1, 2, 3, 4, 5}).has_value());
  auto e = next_error(ch);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, net::WireError::malformed);
  // A valid message before HELLO.
  ASSERT_TRUE(ch.send(net::StatsRequest{}, 7).has_value());
  e = next_error(ch);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, net::WireError::unexpected);
  // HELLO: the worker says who it is.
  auto hello = ch.handshake(coordinator_hello(), net::Role::worker, net::Millis(5000));
  ASSERT_TRUE(hello.has_value()) << hello.error().message;
  EXPECT_EQ(hello->n_threads, 1u);
  EXPECT_FALSE(hello->cpu_features.empty());
  EXPECT_GT(hello->free_memory_bytes, 0u);
  // Truncated frame: a valid header whose payload was cut.
  {
    net::TensorChunk c;
    c.total_bytes = 10;
    c.data = {1, 2, 3};
    auto bytes = net::encode(c, 9).take_bytes();
    bytes.resize(bytes.size() - 2);
    ASSERT_TRUE((*link)->send_bytes(bytes).has_value());
    e = next_error(ch);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->code, net::WireError::malformed);
  }
  // Valid messages at the wrong time.
  {
    net::TensorChunk c;
    c.total_bytes = 10;
    c.data = {1, 2, 3};
    ASSERT_TRUE(ch.send(c, 10).has_value());
    e = next_error(ch);
    ASSERT_TRUE(e.has_value());
    EXPECT_NE(e->message.find("without a LOAD_SEGMENT"), std::string::npos) << e->message;
    net::ActivationBatch b;
    b.tokens = {net::TokenMeta{0, 0, true}};
    b.n_embd = 64;
    b.hidden.assign(64, 0.5f);
    ASSERT_TRUE(ch.send(b, 11).has_value());
    e = next_error(ch);
    ASSERT_TRUE(e.has_value());
    EXPECT_NE(e->message.find("before the segment is ready"), std::string::npos) << e->message;
  }
  // Segments it must refuse.
  {
    net::LoadSegment ls;
    ls.unit_first = 0;
    ls.unit_last = 2;
    ls.n_ctx = 16;
    ASSERT_TRUE(ch.send(ls, 12).has_value());
    e = next_error(ch);
    ASSERT_TRUE(e.has_value());
    EXPECT_NE(e->message.find("stays on the origin"), std::string::npos) << e->message;
    ls.unit_first = 1;
    ls.metadata = {9, 9, 9};
    ASSERT_TRUE(ch.send(ls, 13).has_value());
    e = next_error(ch);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->in_reply_to, static_cast<uint16_t>(net::MessageType::load_segment));
  }
  // Oversized: ZeroMQ drops the frame (and that connection) before allocating it.
  ASSERT_TRUE((*link)->send_bytes(std::vector<uint8_t>((1 << 20) + 100, 0)).has_value());

  // After all that, a real pipeline through this worker still gives the right tokens.
  const auto prompt = l.tok->encode("Once upon a time", true);
  auto toks = run_pipeline(l, *net, {ep}, prompt, 16);
  ASSERT_TRUE(toks.has_value()) << toks.error().message;
  EXPECT_EQ(*toks, reference(l, prompt, 16));
  EXPECT_GE((*worker)->counters().n_bad_messages, 6u);
  stop = true;
  serving.join();
}

TEST(Worker, OutOfOrderPositionsAreRefusedAndTheSequenceCanContinue) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  test::InprocCluster cluster(1);
  // Load a segment through a coordinator, then talk to the worker directly as that coordinator would.
  const auto prompt = l.tok->encode("Once upon a time", true);
  auto toks = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 4);
  ASSERT_TRUE(toks.has_value());
  auto link = cluster.net().connect(cluster.endpoints()[0]);
  ASSERT_TRUE(link.has_value());
  net::Channel ch(**link);
  ASSERT_TRUE(ch.handshake(coordinator_hello(), net::Role::worker, net::Millis(5000)).has_value());
  net::ActivationBatch b;
  b.tokens = {net::TokenMeta{5, 3, false}};  // position 3 of a sequence the worker has never seen
  b.n_embd = 64;
  b.hidden.assign(64, 0.25f);
  ASSERT_TRUE(ch.send(b, 21).has_value());
  // The error goes to the coordinator of the segment (the earlier one, now gone); the worker counts it
  // and keeps serving: a new pipeline works.
  auto again = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 8);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(*again, reference(l, prompt, 8));
  EXPECT_GE(cluster.worker(0).counters().n_bad_messages, 1u);
}

// KV_REQUEST / KV_DATA (load balancing moves KV caches with them): a stored cache comes back
// as it went in; bad requests get errors and the worker keeps serving.
TEST(Worker, StoresAndReturnsKvCachesAndRefusesBadOnes) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  test::InprocCluster cluster(1);
  auto link0 = cluster.net().connect(cluster.endpoints()[0]);
  ASSERT_TRUE(link0.has_value());
  {
    net::Channel early(**link0);
    ASSERT_TRUE(early.handshake(coordinator_hello(), net::Role::worker, net::Millis(5000)).has_value());
    ASSERT_TRUE(early.send(net::KvRequest{0, 1, 1}, 3).has_value());
    auto e = next_error(early);
    ASSERT_TRUE(e.has_value()) << "KV_REQUEST before a segment must be refused";
    EXPECT_NE(e->message.find("before the segment is ready"), std::string::npos) << e->message;
  }
  const auto prompt = l.tok->encode("Once upon a time", true);
  ASSERT_TRUE(run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 4).has_value());  // worker: units 1-6
  auto link = cluster.net().connect(cluster.endpoints()[0]);
  ASSERT_TRUE(link.has_value());
  net::Channel ch(**link);
  ASSERT_TRUE(ch.handshake(coordinator_hello(), net::Role::worker, net::Millis(5000)).has_value());
  const uint32_t kv_dim = static_cast<uint32_t>(l.model->hparams().kv_dim());
  net::KvData d;
  d.seq_id = 40;
  d.unit = 2;
  d.n_pos = 3;
  d.kv_dim = kv_dim;
  for (uint32_t i = 0; i < 3 * kv_dim; ++i) {
    d.k.push_back(static_cast<uint16_t>(0x3c00 + i % 97));
    d.v.push_back(static_cast<uint16_t>(0x3800 + i % 89));
  }
  // Every block it runs (units 1-5) gets the cache; until then the sequence has no positions.
  for (uint32_t u : {2u, 1u, 3u, 4u, 5u}) {
    net::KvData one = d;
    one.unit = u;
    ASSERT_TRUE(ch.send(one, 10 + u).has_value());
    auto ack = ch.recv(net::Millis(5000));
    ASSERT_TRUE(ack.has_value() && ack->has_value());
    const auto* stored = std::get_if<net::KvStored>(&(*ack)->message);
    ASSERT_NE(stored, nullptr) << net::message_type_name(net::message_type((*ack)->message));
    EXPECT_EQ(stored->seq_id, 40);
    EXPECT_EQ(stored->unit, u);
    EXPECT_EQ(stored->n_pos, 3u);
    EXPECT_EQ((*ack)->request_id, 10u + u);
  }
  ASSERT_TRUE(ch.send(net::KvRequest{40, 2, 2}, 11).has_value());
  auto back = ch.recv(net::Millis(5000));
  ASSERT_TRUE(back.has_value() && back->has_value());
  const auto* got = std::get_if<net::KvData>(&(*back)->message);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(*got, d);
  // Refused: a unit it does not run (the embedding is the origin's), a width that is not the
  // model's, sizes that do not match, a sequence it does not hold, positions past its context.
  std::vector<net::KvData> bad(5, d);
  bad[0].unit = 0;
  bad[1].kv_dim = kv_dim + 1;
  bad[1].k.resize(3 * (kv_dim + 1));
  bad[1].v.resize(3 * (kv_dim + 1));
  bad[2].seq_id = 41;
  bad[2].unit = 7;
  bad[3].seq_id = 42;
  bad[3].n_pos = 65;
  bad[3].k.assign(65 * kv_dim, 0);
  bad[3].v.assign(65 * kv_dim, 0);
  bad[4].unit = 6;  // the head: no KV cache
  uint64_t rid = 20;
  for (const auto& b : bad) {
    ASSERT_TRUE(ch.send(b, rid).has_value());
    auto e = next_error(ch);
    EXPECT_TRUE(e.has_value()) << "KV_DATA " << rid << " was not refused";
    ++rid;
  }
  ASSERT_TRUE(ch.send(net::KvRequest{99, 1, 5}, rid).has_value());
  auto e = next_error(ch);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->message.find("no KV cache for sequence 99"), std::string::npos) << e->message;
  // Still serving.
  auto again = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 8);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(*again, reference(l, prompt, 8));
}

TEST(Worker, RefusesASegmentOverItsMemoryLimitWithAClearError) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  runtime::WorkerOptions wo;
  wo.memory_limit_bytes = 8u << 20;  // less than the process itself
  test::InprocCluster cluster(1, wo);
  auto toks = run_pipeline(l, cluster.net(), cluster.endpoints(), l.tok->encode("Hi", true), 4);
  ASSERT_FALSE(toks.has_value());
  EXPECT_EQ(toks.error().code, ErrorCode::resource) << toks.error().message;
  EXPECT_NE(toks.error().message.find("--memory-limit"), std::string::npos) << toks.error().message;
  EXPECT_NE(toks.error().message.find("w1"), std::string::npos) << toks.error().message;
}

TEST(Worker, CacheDirectoryAvoidsFetchingTensorsAgain) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  const std::string dir = ::testing::TempDir() + "/ll_cache_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  const auto prompt = l.tok->encode("The cat sat", true);
  const auto want = reference(l, prompt, 12);
  runtime::WorkerOptions wo;
  wo.cache_dir = dir;
  {
    test::InprocCluster cluster(1, wo, "inproc://cache-a");
    auto toks = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 12);
    ASSERT_TRUE(toks.has_value()) << toks.error().message;
    EXPECT_EQ(*toks, want);
    EXPECT_GT(cluster.worker(0).counters().n_tensors_received, 0u);
    EXPECT_EQ(cluster.worker(0).counters().n_tensors_from_cache, 0u);
  }
  {  // "restart": a new worker with the same cache directory
    test::InprocCluster cluster(1, wo, "inproc://cache-b");
    auto toks = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 12);
    ASSERT_TRUE(toks.has_value()) << toks.error().message;
    EXPECT_EQ(*toks, want);
    EXPECT_EQ(cluster.worker(0).counters().n_tensors_received, 0u);
    EXPECT_GT(cluster.worker(0).counters().n_tensors_from_cache, 0u);
  }
  // A corrupted cache file is detected by its hash and fetched again.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::FILE* fp = std::fopen(entry.path().c_str(), "r+b");
    ASSERT_NE(fp, nullptr);
    std::fputc(0x5A, fp);
    std::fclose(fp);
  }
  {
    test::InprocCluster cluster(1, wo, "inproc://cache-c");
    auto toks = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 12);
    ASSERT_TRUE(toks.has_value()) << toks.error().message;
    EXPECT_EQ(*toks, want);
    EXPECT_GT(cluster.worker(0).counters().n_tensors_received, 0u);
  }
  std::filesystem::remove_all(dir);
}

// A coordinator over `cluster` with a 64-token context and `spare_units` on each side of a segment.
Expected<std::unique_ptr<runtime::Coordinator>> connect_spares(const Loaded& l, test::InprocCluster& cluster,
                                                               int spare_units) {
  runtime::CoordinatorOptions co;
  co.n_ctx = 64;
  co.spare_units = spare_units;
  return runtime::Coordinator::connect(*l.model, cluster.net(), cluster.endpoints(), co);
}

TEST(Worker, AShiftedSegmentKeepsTheTensorsItSharesWithTheLastOne) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  const auto prompt = l.tok->encode("The cat sat", true);
  const auto want = reference(l, prompt, 12);
  test::InprocCluster cluster(2, {}, "inproc://shift");
  auto coord = connect_spares(l, cluster, 0);  // (no spares: only the segments' own tensors)
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  const int last = static_cast<int>(l.model->n_units()) - 1;  // stories260K: 0 embed, 1-5 blocks, 6 head
  ASSERT_TRUE((*coord)->load({{0, 0, 0}, {1, 1, 2}, {2, 3, last}}).has_value());
  const uint64_t received_1 = cluster.worker(0).counters().n_tensors_received;
  const uint64_t received_2 = cluster.worker(1).counters().n_tensors_received;
  // The boundary moves by one block: worker 1 gains block 3, worker 2 loses it.
  ASSERT_TRUE((*coord)->load({{0, 0, 0}, {1, 1, 3}, {2, 4, last}}).has_value());
  const auto c1 = cluster.worker(0).counters();
  const auto c2 = cluster.worker(1).counters();
  EXPECT_EQ(c1.n_tensors_kept, received_1) << "blocks 1-2 stay on worker 1";
  EXPECT_EQ(c1.n_tensors_received - received_1, received_1 / 2) << "only block 3 is sent (a block's tensors)";
  EXPECT_EQ(c2.n_tensors_received, received_2) << "worker 2 already had blocks 4-5 and the head";
  EXPECT_EQ(c2.n_tensors_kept, received_2 - received_1 / 2);
  model::GenerateOptions g;
  g.n_predict = 12;
  g.sampling.temperature = 0;
  auto res = (*coord)->generate(*l.tok, {runtime::Request{prompt}}, g, 1);
  ASSERT_TRUE(res.has_value()) << res.error().message;
  EXPECT_EQ((*res)[0].tokens, want);
}

// Spares stream after the segment is ready (load() does not wait for them): the worker's count of
// received tensors once it has taken `want`, or what it has after 5 s.
uint64_t received_when(const runtime::Worker& w, uint64_t want) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (w.counters().n_tensors_received < want && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // (and nothing more arrives)
  return w.counters().n_tensors_received;
}

// Spares (CoordinatorOptions::spare_units): each worker also keeps the units next to its segment, so
// that moving a boundary by up to that many units sends none of the segment's weights.
TEST(Worker, SparesNextToTheSegmentMakeAShiftedBoundarySendNoWeights) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  const auto prompt = l.tok->encode("The cat sat", true);
  const auto want = reference(l, prompt, 12);
  test::InprocCluster cluster(2, {}, "inproc://spares");
  auto coord = connect_spares(l, cluster, 2);
  ASSERT_TRUE(coord.has_value()) << coord.error().message;
  const int last = static_cast<int>(l.model->n_units()) - 1;  // stories260K: 0 embed, 1-5 blocks, 6 head
  auto n_tensors = [&](int first, int last_unit) {
    return static_cast<uint64_t>(runtime::segment_tensor_names(*l.model, first, last_unit).size());
  };
  // Worker 1 runs 1-2 and keeps 3-4 (never unit 0); worker 2 runs 3-6 and keeps 1-2.
  ASSERT_TRUE((*coord)->load({{0, 0, 0}, {1, 1, 2}, {2, 3, last}}).has_value());
  EXPECT_EQ(received_when(cluster.worker(0), n_tensors(1, 4)), n_tensors(1, 4));
  EXPECT_EQ(received_when(cluster.worker(1), n_tensors(1, last)), n_tensors(1, last));
  const auto a1 = cluster.worker(0).counters();
  const auto a2 = cluster.worker(1).counters();
  // The boundary moves by one block: worker 1 gains block 3, which it holds already (and block 5
  // becomes a new spare); worker 2 keeps 4-6 and holds 2-3 as spares: nothing to send it.
  ASSERT_TRUE((*coord)->load({{0, 0, 0}, {1, 1, 3}, {2, 4, last}}).has_value());
  EXPECT_EQ(received_when(cluster.worker(0), a1.n_tensors_received + n_tensors(5, 5)) - a1.n_tensors_received,
            n_tensors(5, 5))
      << "only the new spare 5";
  const auto b1 = cluster.worker(0).counters();
  const auto b2 = cluster.worker(1).counters();
  EXPECT_EQ(b1.n_tensors_kept - a1.n_tensors_kept, n_tensors(1, 4)) << "blocks 1-3 and spare 4 kept";
  EXPECT_EQ(b2.n_tensors_received, a2.n_tensors_received);
  EXPECT_EQ(b2.n_tensors_kept - a2.n_tensors_kept, n_tensors(2, last));
  model::GenerateOptions g;
  g.n_predict = 12;
  g.sampling.temperature = 0;
  auto res = (*coord)->generate(*l.tok, {runtime::Request{prompt}}, g, 1);
  ASSERT_TRUE(res.has_value()) << res.error().message;
  EXPECT_EQ((*res)[0].tokens, want);
  // Two blocks the other way: worker 2 gets 2-3 back from its spares (only block 1, its new spare,
  // is sent).
  const auto c2 = cluster.worker(1).counters();
  ASSERT_TRUE((*coord)->load({{0, 0, 0}, {1, 1, 1}, {2, 2, last}}).has_value());
  EXPECT_EQ(received_when(cluster.worker(1), c2.n_tensors_received + n_tensors(1, 1)) - c2.n_tensors_received,
            n_tensors(1, 1));
  EXPECT_EQ(cluster.worker(1).counters().n_tensors_kept - c2.n_tensors_kept, n_tensors(2, last));
  res = (*coord)->generate(*l.tok, {runtime::Request{prompt}}, g, 1);
  ASSERT_TRUE(res.has_value()) << res.error().message;
  EXPECT_EQ((*res)[0].tokens, want);
}

// Spares are kept only as the worker's memory allows: the rest are declined, and the coordinator
// knows which units it holds; a sequence that needs the room a spare takes gets it.
TEST(Worker, SparesBeyondTheMemoryLimitAreDeclined) {
  // Blocks of 28 MiB (F32, n_embd 512, n_ff 4096) around a small vocabulary: 0 embed, 1-4 blocks, 5 head.
  const std::string path = ::testing::TempDir() + "/ll_big_blocks_" + std::to_string(::getpid()) + ".gguf";
  model::GenModelOptions g;
  g.preset = model::ModelPreset{"big-blocks", 512, 4, 4, 4, 4096, 256, 8192};
  g.type = DType::F32;
  ASSERT_TRUE(model::write_random_model(g, path).has_value());
  auto m = model::Model::load(path);
  ASSERT_TRUE(m.has_value()) << m.error().message;
  const model::Model& mm = **m;
  const uint64_t block = mm.unit_weight_bytes(1);
  ASSERT_GT(block, uint64_t{27} << 20);
  constexpr int64_t k_ctx = 8192;
  runtime::CoordinatorOptions co;
  co.n_ctx = k_ctx;
  co.spare_units = 2;
  const std::vector<runtime::Stage> stages = {{0, 0, 1}, {1, 2, 5}};
  {  // Once without a limit first: the origin's units (hashed, kept resident) count in what follows.
    test::InprocCluster warm(1, {}, "inproc://spare-warm");
    auto coord = runtime::Coordinator::connect(mm, warm.net(), warm.endpoints(), co);
    ASSERT_TRUE(coord.has_value()) << coord.error().message;
    ASSERT_TRUE((*coord)->load(stages).has_value());
  }
  // The worker runs 2-5 (its spare: block 1); the origin 0-1. Its budget: what the process holds
  // now, its runtime reserve (48 MiB), its units, a sequence's KV cache (48 MiB), and `room` more.
  uint64_t seg = 0;
  for (int u = 2; u <= 5; ++u) seg += mm.unit_weight_bytes(u);
  const uint64_t kv = 3 * k_ctx * 512 * 2 * 2;  // blocks 2-4, K and V in F16
  for (const bool fits : {false, true}) {
    // (Either way the outcome holds for any error of +-14 MiB in the process's resident memory.)
    const uint64_t room = fits ? block + (34u << 20) : block - (14u << 20);
    runtime::WorkerOptions wo;
    wo.memory_limit_bytes = runtime::current_rss_bytes() + (48u << 20) + seg + kv + room;
    test::InprocCluster cluster(1, wo, fits ? "inproc://spare-fits" : "inproc://spare-declined");
    std::vector<std::string> lines;
    co.log = [&lines](const std::string& s) { lines.push_back(s); };
    auto coord = runtime::Coordinator::connect(mm, cluster.net(), cluster.endpoints(), co);
    ASSERT_TRUE(coord.has_value()) << coord.error().message;
    ASSERT_TRUE((*coord)->load(stages).has_value());
    const std::string want = fits ? "units 2-5, 1 of 1 spare units held" : "units 2-5, 0 of 1 spare units held";
    bool said = false;
    for (const auto& s : lines) said = said || s.find(want) != std::string::npos;
    EXPECT_TRUE(said) << want << " not in " << ::testing::PrintToString(lines);
    const uint64_t names = runtime::segment_tensor_names(mm, 2, 5).size() +
                           (fits ? runtime::segment_tensor_names(mm, 1, 1).size() : 0);
    EXPECT_EQ(received_when(cluster.worker(0), names), names);
    if (!fits) continue;
    // The first sequence fits beside the spare; the second only in the room the spare took (it is
    // given up); a third does not fit at all and is refused with a clear error.
    auto link = cluster.net().connect(cluster.endpoints()[0]);
    ASSERT_TRUE(link.has_value());
    net::Channel ch(**link);
    ASSERT_TRUE(ch.handshake(coordinator_hello(), net::Role::worker, net::Millis(5000)).has_value());
    for (int32_t seq = 1; seq <= 3; ++seq) {
      net::KvData d;
      d.seq_id = seq;
      d.unit = 2;
      d.n_pos = 1;
      d.kv_dim = 512;
      d.k.assign(512, 0x3c00);
      d.v.assign(512, 0x3c00);
      ASSERT_TRUE(ch.send(d, static_cast<uint64_t>(100 + seq)).has_value());
      auto got = ch.recv(net::Millis(5000));
      ASSERT_TRUE(got.has_value() && got->has_value());
      if (seq < 3) {
        EXPECT_NE(std::get_if<net::KvStored>(&(*got)->message), nullptr) << "sequence " << seq << " was refused";
      } else {
        const auto* e = std::get_if<net::ErrorMessage>(&(*got)->message);
        ASSERT_NE(e, nullptr) << "a third sequence must not fit";
        EXPECT_NE(e->message.find("3 sequences needs"), std::string::npos) << e->message;
      }
    }
  }
  std::filesystem::remove(path);
}

TEST(Worker, LocalModelCopyIsUsedAfterCheckingItIsTheSameModel) {
  LL_REQUIRE_SHARED(test::shared_path(k_model));
  Loaded l = load();
  ASSERT_TRUE(l.model);
  const auto prompt = l.tok->encode("Once upon a time", true);
  runtime::WorkerOptions wo;
  wo.model_path = test::shared_path(k_model);
  {
    test::InprocCluster cluster(2, wo, "inproc://local-a");
    auto toks = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 12);
    ASSERT_TRUE(toks.has_value()) << toks.error().message;
    EXPECT_EQ(*toks, reference(l, prompt, 12));
    EXPECT_EQ(cluster.worker(0).counters().n_tensors_received, 0u);
    EXPECT_EQ(cluster.worker(1).counters().n_tensors_received, 0u);
  }
  // Another model file (same shapes, other weights) is refused.
  const std::string other = ::testing::TempDir() + "/ll_other_" + std::to_string(::getpid()) + ".gguf";
  model::GenModelOptions g;
  g.preset = *model::find_preset("stories-260k");
  g.type = DType::F32;
  ASSERT_TRUE(model::write_random_model(g, other).has_value());
  wo.model_path = other;
  {
    test::InprocCluster cluster(1, wo, "inproc://local-b");
    auto toks = run_pipeline(l, cluster.net(), cluster.endpoints(), prompt, 4);
    ASSERT_FALSE(toks.has_value());
    EXPECT_NE(toks.error().message.find("not the same model"), std::string::npos) << toks.error().message;
  }
  std::filesystem::remove(other);
}

TEST(WorkerMemory, TensorBuffersCountWholeHugePagesOnlyWhenMostlyFilled) {
  constexpr uint64_t MiB = uint64_t{1} << 20;
  EXPECT_EQ(runtime::tensor_resident_bytes(100), 4096u);                // small: 4 KiB pages
  EXPECT_EQ(runtime::tensor_resident_bytes(MiB + 1), MiB + 4096);
  EXPECT_EQ(runtime::tensor_resident_bytes(9 * MiB), 9 * MiB);          // 7B Q4_0 attention: exact
  // 7B Q4_0 FFN (11008 x 4096): 24 MiB + 0.19 MiB, the tail in small pages, not rounded to 26 MiB.
  EXPECT_EQ(runtime::tensor_resident_bytes(25362432), 25362432u);
  // TinyLlama Q8_0 FFN (5632 x 2048): 11.69 MiB fills most of its last huge page, which it gets.
  EXPECT_EQ(runtime::tensor_resident_bytes(12255232), 12 * MiB);
  EXPECT_EQ(runtime::tensor_resident_bytes(3 * MiB + 1), 4 * MiB);  // over half of the last one
  EXPECT_EQ(runtime::tensor_resident_bytes(3 * MiB), 3 * MiB);      // half: small pages
}

TEST(Worker, ParsesByteSizes) {
  EXPECT_EQ(*runtime::parse_byte_size("1600MB"), 1600000000u);
  EXPECT_EQ(*runtime::parse_byte_size("1.5GiB"), 1610612736u);
  EXPECT_EQ(*runtime::parse_byte_size("800M"), 800u << 20);
  EXPECT_EQ(*runtime::parse_byte_size("123456"), 123456u);
  for (const char* bad : {"", "MB", "-5", "12XB", "1e400", "0"}) {
    EXPECT_FALSE(runtime::parse_byte_size(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace ll
