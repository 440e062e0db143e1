// Shared by the net tests: one sample of every message (non-trivial field values) and a helper
// that wraps hand-written payload bytes in a frame header.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "net/codec.h"
#include "net/protocol.h"

namespace ll::net::testing {

inline Sha256Digest digest_of(uint8_t seed) {
  Sha256Digest d;
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(seed + i * 7);
  return d;
}

inline Hello sample_hello() {
  Hello h;
  h.role = Role::worker;
  h.name = "phone-a";
  h.n_threads = 4;
  h.free_memory_bytes = 3ull << 30;
  h.memory_limit_bytes = 1600ull << 20;
  h.cpu_features = "avx2 fma f16c";
  h.auth_token = "";
  return h;
}

inline LoadSegment sample_load_segment() {
  LoadSegment m;
  m.model_hash = digest_of(1);
  m.unit_first = 3;
  m.unit_last = 7;
  m.n_ctx = 512;
  m.next_endpoint = "tcp://192.0.2.10:5601";
  m.metadata = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  TensorDesc a;
  a.name = "blk.2.attn_norm.weight";
  a.dtype = DType::F32;
  a.shape = {4, 2};
  a.n_bytes = 32;
  a.sha256 = digest_of(2);
  TensorDesc b;
  b.name = "blk.2.ffn_up.weight";
  b.dtype = DType::Q8_0;
  b.shape = {64, 3};
  b.n_bytes = 2 * 34 * 3;
  b.sha256 = digest_of(3);
  TensorDesc c;  // a spare: the next unit's norm
  c.name = "blk.7.attn_norm.weight";
  c.dtype = DType::F32;
  c.shape = {4};
  c.n_bytes = 16;
  c.sha256 = digest_of(4);
  m.tensors = {a, b, c};
  m.n_spare = 1;
  return m;
}

inline ActivationBatch sample_batch(WireDType dtype) {
  ActivationBatch b;
  b.tokens = {{0, 0, false}, {0, 1, false}, {5, 17, true}};
  b.n_embd = 4;
  b.dtype = dtype;
  // Values exactly representable in half (so an F16 round trip is exact), incl. a subnormal and -0.
  b.hidden = {1.0f, -2.5f,          0.125f, 65504.0f, -0.0f, 3.0f, 1024.0f, -0.000061035156f,
              0.5f, 5.9604645e-08f, -7.0f,  100.0f};
  return b;
}

inline Sampling sample_sampling() {
  Sampling m;
  m.seq_id = 7;
  m.temperature = 0.8f;
  m.top_k = 40;
  m.top_p = 0.95f;
  m.min_p = 0.05f;
  m.seed = 0x0123456789ABCDEFull;
  return m;
}

// Two positions of one block, kv_dim 3; F16 bits, each with two different bytes (any bits travel,
// NaN and infinity included).
inline KvData sample_kv_data() {
  KvData m;
  m.seq_id = 9;
  m.unit = 3;
  m.n_pos = 2;
  m.kv_dim = 3;
  m.k = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x8000, 0x1234};
  m.v = {0xABCD, 0x7C00, 0x7E01, 0x3555, 0x0400, 0xFBFF};
  return m;
}

inline std::vector<Message> sample_messages() {
  std::vector<Message> out;
  out.push_back(sample_hello());
  out.push_back(Heartbeat{123456789, 42});
  out.push_back(ErrorMessage{WireError::resource, static_cast<uint16_t>(MessageType::load_segment),
                             "segment needs 2.1 GB, memory limit is 1.6 GB"});
  out.push_back(sample_load_segment());
  out.push_back(SegmentStatus{SegmentState::need_tensors, {0, 1, 5}, {6, 7}});
  out.push_back(SegmentStatus{SegmentState::ready, {}, {}});
  out.push_back(SegmentStatus{SegmentState::ready, {6}, {7}});
  TensorChunk c;
  c.tensor_index = 1;
  c.offset = 100;
  c.total_bytes = 204;
  for (int i = 0; i < 50; ++i) c.data.push_back(static_cast<uint8_t>(i * 13));
  out.push_back(c);
  out.push_back(sample_batch(WireDType::f32));
  out.push_back(sample_batch(WireDType::f16));
  Result hidden;
  hidden.kind = ResultKind::hidden;
  hidden.tokens = {{2, 9, false}};
  hidden.width = 3;
  hidden.dtype = WireDType::f16;
  hidden.values = {0.5f, -1.0f, 2.0f};
  out.push_back(hidden);
  Result logits;
  logits.kind = ResultKind::logits;
  logits.tokens = {{1, 4, true}, {2, 9, true}};
  logits.width = 5;
  logits.dtype = WireDType::f32;
  logits.values = {0.1f, -3.25f, 7.0f, 1e-30f, -1e30f, 0.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  out.push_back(logits);
  Result ids;
  ids.kind = ResultKind::token_ids;
  ids.tokens = {{1, 5, true}, {2, 10, true}};
  ids.width = 0;
  ids.token_ids = {31999, 0};
  out.push_back(ids);
  out.push_back(ReleaseSequence{12});
  out.push_back(sample_sampling());
  out.push_back(Sampling{0, 0.0f, 0, 1.0f, 0.0f, 0});  // greedy, every filter off
  out.push_back(StatsRequest{});
  Stats s;
  s.uptime_ms = 60000;
  s.bytes_in = 1 << 20;
  s.bytes_out = 1 << 21;
  s.n_messages_in = 100;
  s.n_messages_out = 99;
  s.n_bad_messages = 1;
  s.n_tokens = 4096;
  s.rss_bytes = 512ull << 20;
  s.peak_rss_bytes = 600ull << 20;
  s.units = {{3, 4096, 1234.5}, {4, 4096, 0.0}};
  out.push_back(s);
  out.push_back(KvRequest{9, 2, 5});
  out.push_back(sample_kv_data());
  out.push_back(KvData{9, 0, 0, 8, {}, {}});  // no positions: empty blobs
  out.push_back(KvStored{9, 3, 2});
  out.push_back(Join{"tcp://192.0.2.14:5601", ""});
  return out;
}

// header (magic, version, type, flags, request id, payload length) + payload, all as given.
inline std::vector<uint8_t> frame_bytes(uint16_t type, std::span<const uint8_t> payload,
                                        uint64_t request_id = 0, uint16_t version = k_protocol_version,
                                        uint32_t flags = 0) {
  Writer w;
  w.raw(k_magic);
  w.u16(version);
  w.u16(type);
  w.u32(flags);
  w.u64(request_id);
  w.u32(static_cast<uint32_t>(payload.size()));
  w.raw(payload);
  return w.take();
}

inline std::vector<uint8_t> frame_bytes(MessageType type, std::span<const uint8_t> payload,
                                        uint64_t request_id = 0) {
  return frame_bytes(static_cast<uint16_t>(type), payload, request_id);
}

}  // namespace ll::net::testing
