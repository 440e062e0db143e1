// Issue 6, item 4: with --ring, no token id and no logit leaves the origin; the workers see hidden
// states only. A recording Network wraps the origin's links and keeps every frame the origin sends
// (and receives); the test then decodes each one and checks what it may carry:
//   HELLO, HEARTBEAT, STATS_REQUEST   no model data at all
//   LOAD_SEGMENT                      units >= 1 only: never the token embedding, and with ring never
//                                     the output head; tensor names, shapes and hashes only
//   TENSOR_CHUNK                      weights of those tensors
//   ACTIVATION_BATCH                  per token only {seq_id, pos, want_output}, then hidden states:
//                                     the payload is exactly 4 + 9 n_tokens + 9 + n_tokens*n_embd*4
//                                     bytes, so nothing else can hide in it
//   RELEASE_SEQUENCE                  a sequence id
// and nothing else: no SAMPLING (ring mode samples on the origin), no RESULT, no ERROR. What comes
// back is RESULT kind hidden only. As a last net, the little-endian bytes of every prompt's and
// generated text's token ids (3 in a row) are searched for in every frame the origin sent.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <cstring>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "inproc_cluster.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "net/codec.h"
#include "net/protocol.h"
#include "runtime/coordinator.h"
#include "runtime/split.h"

namespace ll {
namespace {

struct FrameLog {
  std::mutex mu;
  std::vector<std::vector<uint8_t>> sent, received;
  void add(std::vector<std::vector<uint8_t>>& to, std::span<const uint8_t> bytes) {
    std::lock_guard<std::mutex> lock(mu);
    to.emplace_back(bytes.begin(), bytes.end());
  }
};

// A Link decorator that records every frame before it goes out, and every frame received.
class RecordingLink final : public net::Link {
 public:
  RecordingLink(std::unique_ptr<net::Link> inner, std::shared_ptr<FrameLog> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}
  Expected<void> send(net::Frame frame) override {
    log_->add(log_->sent, frame.bytes());
    return inner_->send(std::move(frame));
  }
  Expected<void> send_bytes(std::vector<uint8_t> bytes) override {
    log_->add(log_->sent, bytes);
    return inner_->send_bytes(std::move(bytes));
  }
  Expected<std::optional<net::Frame>> recv(net::Millis timeout) override {
    auto got = inner_->recv(timeout);
    if (got && *got) log_->add(log_->received, (*got)->bytes());
    return got;
  }
  Expected<bool> wait_readable(net::Millis timeout) override { return inner_->wait_readable(timeout); }
  net::LinkStats stats() const override { return inner_->stats(); }
  std::string endpoint() const override { return inner_->endpoint(); }

 private:
  std::unique_ptr<net::Link> inner_;
  std::shared_ptr<FrameLog> log_;
};

class RecordingNetwork final : public net::Network {
 public:
  RecordingNetwork(net::Network& inner, std::shared_ptr<FrameLog> log) : inner_(inner), log_(std::move(log)) {}
  Expected<std::unique_ptr<net::Listener>> listen(const std::string& endpoint) override {
    ++n_listens;  // the origin never listens: nobody can send it anything unasked
    return inner_.listen(endpoint);
  }
  Expected<std::unique_ptr<net::Link>> connect(const std::string& endpoint, const std::string& key = {}) override {
    LL_ASSIGN_OR_RETURN(std::unique_ptr<net::Link> link, inner_.connect(endpoint, key));
    return std::unique_ptr<net::Link>(new RecordingLink(std::move(link), log_));
  }
  int n_listens = 0;

 private:
  net::Network& inner_;
  std::shared_ptr<FrameLog> log_;
};

bool contains_bytes(std::span<const uint8_t> hay, const std::vector<uint8_t>& needle) {
  return !needle.empty() &&
         std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

// Every window of 3 consecutive token ids, as they would look encoded as i32 little-endian.
std::vector<std::vector<uint8_t>> token_windows(const std::vector<int32_t>& ids) {
  std::vector<std::vector<uint8_t>> out;
  for (size_t i = 0; i + 3 <= ids.size(); ++i) {
    net::Writer w;
    for (size_t j = i; j < i + 3; ++j) w.i32(ids[j]);
    out.emplace_back(w.buffer().begin(), w.buffer().end());
  }
  return out;
}

struct Audit {
  std::vector<std::string> violations;
  std::set<net::MessageType> types_sent;
  size_t n_batches = 0, n_hidden_results = 0;
};

Audit audit(FrameLog& log, const model::Model& model, bool ring, const std::vector<std::vector<int32_t>>& token_seqs) {
  Audit a;
  const uint32_t n_embd = static_cast<uint32_t>(model.hparams().n_embd);
  const net::Limits limits;
  std::vector<std::vector<uint8_t>> needles;
  for (const auto& seq : token_seqs) {
    for (auto& n : token_windows(seq)) needles.push_back(std::move(n));
  }
  for (const auto& bytes : log.sent) {
    auto env = net::decode(bytes, limits);
    if (!env) {
      a.violations.push_back("undecodable frame: " + env.error().message);
      continue;
    }
    const auto type = static_cast<net::MessageType>(bytes[6] | (bytes[7] << 8));
    a.types_sent.insert(type);
    const std::string name = net::message_type_name(type);
    for (const auto& n : needles) {
      if (contains_bytes(bytes, n)) a.violations.push_back(name + " carries 3 consecutive token ids");
    }
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, net::Hello> || std::is_same_v<T, net::Heartbeat> ||
                        std::is_same_v<T, net::StatsRequest> || std::is_same_v<T, net::ReleaseSequence> ||
                        std::is_same_v<T, net::TensorChunk>) {
            // no model inputs or outputs
          } else if constexpr (std::is_same_v<T, net::LoadSegment>) {
            if (m.unit_first == 0) a.violations.push_back("LOAD_SEGMENT of unit 0 (the token embedding)");
            const bool head = m.unit_last + 1 == static_cast<uint32_t>(model.n_units());
            if (ring && head) a.violations.push_back("LOAD_SEGMENT of the output head in ring mode");
            for (const auto& t : m.tensors) {
              if (t.name.rfind("token_embd", 0) == 0) a.violations.push_back("token embedding sent: " + t.name);
              if (ring && t.name.rfind("output", 0) == 0) a.violations.push_back("output head sent: " + t.name);
            }
          } else if constexpr (std::is_same_v<T, net::ActivationBatch>) {
            ++a.n_batches;
            const size_t n = m.tokens.size();
            const size_t want = 4 + 9 * n + 4 + 1 + 4 + n * n_embd * 4;
            if (m.n_embd != n_embd) a.violations.push_back("ACTIVATION_BATCH of width " + std::to_string(m.n_embd));
            if (m.dtype != net::WireDType::f32 || bytes.size() != net::k_frame_header_bytes + want) {
              a.violations.push_back("ACTIVATION_BATCH payload of " +
                                     std::to_string(bytes.size() - net::k_frame_header_bytes) +
                                     " bytes, not n_tokens*n_embd*4 hidden states plus token metadata (" +
                                     std::to_string(want) + ")");
            }
          } else {
            a.violations.push_back(name + " sent by the origin");
          }
        },
        env->message);
  }
  for (const auto& bytes : log.received) {
    auto env = net::decode(bytes, limits);
    if (!env) continue;  // the transport already refused it
    if (const auto* r = std::get_if<net::Result>(&env->message)) {
      if (r->kind == net::ResultKind::hidden) {
        ++a.n_hidden_results;
      } else {
        a.violations.push_back(std::string("the origin received a RESULT of ") +
                               (r->kind == net::ResultKind::logits ? "logits" : "token ids"));
      }
    }
  }
  return a;
}

struct RecordedRun {
  std::vector<std::vector<int32_t>> token_seqs;  // prompts and generated tokens
  Audit audit;
  int n_listens = 0;
};

RecordedRun run_recorded(bool ring, float repeat_penalty) {
  RecordedRun out;
  auto m = model::Model::load(test::shared_path("models/stories260K.gguf"));
  EXPECT_TRUE(m.has_value());
  if (!m) return out;
  auto tok = model::Tokenizer::from_gguf((*m)->file());
  EXPECT_TRUE(tok.has_value());
  if (!tok) return out;
  std::vector<runtime::Request> reqs;
  for (const char* p : {"Once upon a time", "Lily and Ben went to the park. They saw a big"}) {
    reqs.push_back(runtime::Request{tok->encode(p, true)});
    out.token_seqs.push_back(reqs.back().prompt_tokens);
  }
  test::InprocCluster cluster(3);
  auto log = std::make_shared<FrameLog>();
  RecordingNetwork net(cluster.net(), log);
  runtime::CoordinatorOptions co;
  co.ring = ring;
  co.n_ctx = 96;
  co.n_ubatch = 4;
  auto coord = runtime::Coordinator::connect(**m, net, cluster.endpoints(), co);
  EXPECT_TRUE(coord.has_value()) << coord.error().message;
  if (!coord) return out;
  auto stages = runtime::split_even((*m)->n_units(), 3, ring);
  EXPECT_TRUE(stages.has_value());
  auto loaded = (*coord)->load(*stages);
  EXPECT_TRUE(loaded.has_value()) << loaded.error().message;
  model::GenerateOptions gen;
  gen.n_predict = 16;
  gen.sampling.temperature = 0;
  gen.sampling.repeat_penalty = repeat_penalty;
  auto got = (*coord)->generate(*tok, reqs, gen, /*parallel=*/2);
  EXPECT_TRUE(got.has_value()) << got.error().message;
  if (got) {
    for (const auto& r : *got) {
      EXPECT_GE(r.tokens.size(), 3u);
      out.token_seqs.push_back(r.tokens);
    }
  }
  auto devices = (*coord)->devices();  // STATS_REQUEST: allowed
  EXPECT_TRUE(devices.has_value());
  coord->reset();
  out.audit = audit(*log, **m, ring, out.token_seqs);
  out.n_listens = net.n_listens;
  return out;
}

TEST(Privacy, RingSendsHiddenStatesOnlyNoTokenIdsNoLogits) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  for (float penalty : {1.0f, 1.3f}) {  // 1.3: the sampler needs the history, which stays here too
    RecordedRun run = run_recorded(/*ring=*/true, penalty);
    EXPECT_TRUE(run.audit.violations.empty()) << ::testing::PrintToString(run.audit.violations);
    EXPECT_EQ(run.n_listens, 0);
    EXPECT_GT(run.audit.n_batches, 0u);         // hidden states did go out…
    EXPECT_GT(run.audit.n_hidden_results, 0u);  // …and came back as hidden states
    const std::set<net::MessageType> allowed = {
        net::MessageType::hello,        net::MessageType::heartbeat,        net::MessageType::load_segment,
        net::MessageType::tensor_chunk, net::MessageType::activation_batch, net::MessageType::release_sequence,
        net::MessageType::stats_request};
    for (net::MessageType t : run.audit.types_sent) {
      EXPECT_TRUE(allowed.count(t)) << net::message_type_name(t) << " left the origin";
    }
    EXPECT_TRUE(run.audit.types_sent.count(net::MessageType::activation_batch));
  }
}

// The same audit finds what a chain (non-ring) run reveals by design: the last worker runs the head,
// so the origin sends it SAMPLING and receives token ids (or logits with a repeat penalty). This shows
// the audit would notice a leak, rather than passing because it looks at nothing.
TEST(Privacy, TheAuditCatchesWhatAChainRunReveals) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  RecordedRun greedy = run_recorded(/*ring=*/false, 1.0f);
  EXPECT_TRUE(greedy.audit.types_sent.count(net::MessageType::sampling));
  const auto& v = greedy.audit.violations;
  EXPECT_TRUE(std::any_of(v.begin(), v.end(), [](const std::string& s) { return s == "SAMPLING sent by the origin"; }))
      << ::testing::PrintToString(v);
  EXPECT_TRUE(std::any_of(v.begin(), v.end(),
                          [](const std::string& s) { return s == "the origin received a RESULT of token ids"; }));
  RecordedRun penalised = run_recorded(/*ring=*/false, 1.3f);
  const auto& w = penalised.audit.violations;
  EXPECT_TRUE(std::any_of(w.begin(), w.end(),
                          [](const std::string& s) { return s == "the origin received a RESULT of logits"; }))
      << ::testing::PrintToString(w);
}

// The token-id search itself: a hidden-state batch whose floats carry a prompt's ids as i32
// little-endian (what a leak through an ACTIVATION_BATCH would look like) is caught, and the same
// batch with other values is not.
TEST(Privacy, TheAuditFindsTokenIdsHiddenInAFrame) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto m = model::Model::load(test::shared_path("models/stories260K.gguf"));
  ASSERT_TRUE(m.has_value());
  const uint32_t n_embd = static_cast<uint32_t>((*m)->hparams().n_embd);
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  auto frame_with = [&](bool leak) {
    net::ActivationBatch ab;
    ab.tokens = {net::TokenMeta{0, 0, false}};
    ab.n_embd = n_embd;
    ab.hidden.assign(n_embd, 0.5f);
    if (leak) {
      for (size_t j = 0; j < 3; ++j) std::memcpy(&ab.hidden[10 + j], &ids[1 + j], 4);
    }
    const net::Frame f = net::encode(ab, 7);
    return std::vector<uint8_t>(f.bytes().begin(), f.bytes().end());
  };
  for (bool leak : {true, false}) {
    FrameLog log;
    log.add(log.sent, frame_with(leak));
    const Audit a = audit(log, **m, /*ring=*/true, {ids});
    const bool found = std::any_of(a.violations.begin(), a.violations.end(), [](const std::string& v) {
      return v.find("carries 3 consecutive token ids") != std::string::npos;
    });
    EXPECT_EQ(found, leak) << ::testing::PrintToString(a.violations);
  }
}

}  // namespace
}  // namespace ll
