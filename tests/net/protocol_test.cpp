#include "net/protocol.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>

#include "net/net_test_util.h"
#include "net/xxh64.h"

namespace ll::net {
namespace {

using Bytes = std::vector<uint8_t>;
using testing::frame_bytes;
using testing::sample_messages;

Bytes to_bytes(std::span<const uint8_t> s) {
  return Bytes(s.begin(), s.end());
}

// The error's message, for EXPECT_*; fails the test when decoding succeeded.
template <class T>
std::string error_of(const Expected<T>& r) {
  if (r) return "<decoded successfully>";
  EXPECT_EQ(r.error().code, ErrorCode::parse) << r.error().message;
  return r.error().message;
}

#define EXPECT_CONTAINS(haystack, needle)                                \
  do {                                                                   \
    const std::string ll_h_ = (haystack);                                \
    EXPECT_NE(ll_h_.find(needle), std::string::npos) << "in: " << ll_h_; \
  } while (0)

Expected<Message> decode_payload_of(MessageType t, const Bytes& payload, const Limits& limits = {}) {
  return decode_payload(static_cast<uint16_t>(t), payload, limits);
}

// ---------------------------------------------------------------------------------------- round trips

TEST(Protocol, MessageIdsAreUniqueAndNamed) {
  for (MessageType t : k_message_types) {
    EXPECT_TRUE(is_known_message_type(static_cast<uint16_t>(t)));
    EXPECT_EQ(message_type_name(t).find("type 0x"), std::string::npos);
  }
  EXPECT_FALSE(is_known_message_type(0));
  EXPECT_FALSE(is_known_message_type(0x0104));
  EXPECT_EQ(message_type_name(0x7777), "type 0x7777");
  EXPECT_EQ(message_type_name(MessageType::kv_request), "KV_REQUEST");
  EXPECT_EQ(message_type_name(MessageType::kv_data), "KV_DATA");
  EXPECT_EQ(message_type_name(MessageType::kv_stored), "KV_STORED");
  EXPECT_EQ(message_type_name(MessageType::join), "JOIN");
}

TEST(Protocol, SampleMessagesCoverEveryType) {
  std::set<MessageType> seen;
  for (const Message& m : sample_messages()) seen.insert(message_type(m));
  EXPECT_EQ(seen.size(), k_message_types.size()) << "a message type has no sample";
}

TEST(Protocol, EveryMessageRoundTrips) {
  uint64_t rid = 1000;
  for (const Message& m : sample_messages()) {
    const Frame f = encode(m, ++rid);
    SCOPED_TRACE(message_type_name(message_type(m)));
    EXPECT_EQ(f.type(), message_type(m));
    EXPECT_EQ(f.request_id(), rid);
    EXPECT_EQ(f.size(), k_frame_header_bytes + f.payload().size());
    auto env = decode(f.bytes(), Limits{});
    ASSERT_TRUE(env) << env.error().message;
    EXPECT_EQ(env->request_id, rid);
    EXPECT_TRUE(env->message == m);
    // Canonical: decoding then encoding gives the same bytes.
    EXPECT_EQ(to_bytes(encode(env->message, rid).bytes()), to_bytes(f.bytes()));
    // Frame::from_bytes + decode_message agree with decode().
    auto frame = Frame::from_bytes(to_bytes(f.bytes()), Limits{});
    ASSERT_TRUE(frame);
    auto m2 = decode_message(*frame, Limits{});
    ASSERT_TRUE(m2);
    EXPECT_TRUE(*m2 == m);
  }
}

TEST(Protocol, F16HiddenStatesAreExactForHalfValues) {
  const ActivationBatch b = testing::sample_batch(WireDType::f16);
  const Frame f = encode(b, 1);
  // F16 on the wire: 2 bytes per value.
  EXPECT_EQ(f.payload().size(), 4 + 3 * k_token_wire_bytes + 4 + 1 + 4 + b.hidden.size() * 2);
  auto back = decode_activation_batch(f.payload(), Limits{});
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->hidden.size(), b.hidden.size());
  for (size_t i = 0; i < b.hidden.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(back->hidden[i]), std::bit_cast<uint32_t>(b.hidden[i])) << i;
  }
}

TEST(Protocol, F16RoundsValuesNotRepresentableInHalf) {
  ActivationBatch b;
  b.tokens = {{0, 0, true}};
  b.n_embd = 2;
  b.dtype = WireDType::f16;
  b.hidden = {0.1f, 1.0f / 3.0f};
  auto back = decode_activation_batch(encode(b, 0).payload(), Limits{});
  ASSERT_TRUE(back);
  EXPECT_NEAR(back->hidden[0], 0.1f, 0.1f / 1024);
  EXPECT_NEAR(back->hidden[1], 1.0f / 3.0f, 1.0f / 3.0f / 1024);
}

// ---------------------------------------------------------------------------------------- golden bytes

TEST(Protocol, GoldenHeartbeat) {
  const Frame f = encode(Heartbeat{0x1122334455667788ull, 42}, 0x0102030405060708ull);
  const Bytes expect = {
      'L',  'L',  'N',  'K',                           // magic
      0x01, 0x00,                                      // version 1
      0x02, 0x01,                                      // type 0x0102 HEARTBEAT
      0x00, 0x00, 0x00, 0x00,                          // flags
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // request id
      0x10, 0x00, 0x00, 0x00,                          // payload_bytes 16
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // timestamp_us
      0x2A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // sequence 42
  };
  EXPECT_EQ(to_bytes(f.bytes()), expect);
}

TEST(Protocol, GoldenHello) {
  Hello h;
  h.role = Role::coordinator;
  h.name = "co";
  h.n_threads = 4;
  h.free_memory_bytes = 1ull << 32;
  h.memory_limit_bytes = 0;
  h.cpu_features = "avx2";
  const Frame f = encode(h, 0);
  const Bytes expect = {
      'L',  'L',  'N', 'K', 0x01, 0x00, 0x01, 0x01, 0, 0, 0, 0,  // magic, version 1, type 0x0101, flags
      0,    0,    0,   0,   0,    0,    0,    0,                 // request id 0
      41,   0,    0,   0,                                        // payload_bytes
      0x01, 0x00,                                                // protocol_version 1
      0x01,                                                      // role coordinator
      2,    0,    0,   0,   'c',  'o',                           // name
      4,    0,    0,   0,                                        // n_threads
      0,    0,    0,   0,   1,    0,    0,    0,                 // free_memory_bytes 2^32
      0,    0,    0,   0,   0,    0,    0,    0,                 // memory_limit_bytes
      4,    0,    0,   0,   'a',  'v',  'x',  '2',               // cpu_features
      0,    0,    0,   0,                                        // auth_token ""
  };
  EXPECT_EQ(to_bytes(f.bytes()), expect);
}

TEST(Protocol, GoldenActivationBatch) {
  ActivationBatch b;
  b.tokens = {{3, 5, true}};
  b.n_embd = 2;
  b.hidden = {1.0f, -2.0f};
  b.dtype = WireDType::f16;
  const Bytes expect_f16 = {
      'L',  'L',  'N',  'K',  0x01, 0x00, 0x01, 0x03, 0, 0, 0, 0,  // type 0x0301 ACTIVATION_BATCH
      7,    0,    0,    0,    0,    0,    0,    0,                 // request id 7
      26,   0,    0,    0,                                         // payload_bytes
      1,    0,    0,    0,                                         // n_tokens
      3,    0,    0,    0,    5,    0,    0,    0,    1,           // seq_id 3, pos 5, want_output
      2,    0,    0,    0,                                         // n_embd
      1,                                                           // dtype F16
      4,    0,    0,    0,                                         // hidden: 4 bytes
      0x00, 0x3C, 0x00, 0xC0,                                      // 1.0, -2.0 as half
  };
  EXPECT_EQ(to_bytes(encode(b, 7).bytes()), expect_f16);
  b.dtype = WireDType::f32;
  const Bytes expect_f32 = {
      'L',  'L',  'N',  'K',  0x01, 0x00, 0x01, 0x03, 0, 0, 0, 0,  // type 0x0301 ACTIVATION_BATCH
      7,    0,    0,    0,    0,    0,    0,    0,                 // request id 7
      30,   0,    0,    0,                                         // payload_bytes
      1,    0,    0,    0,                                         // n_tokens
      3,    0,    0,    0,    5,    0,    0,    0,    1,           // seq_id 3, pos 5, want_output
      2,    0,    0,    0,                                         // n_embd
      0,                                                           // dtype F32
      8,    0,    0,    0,                                         // hidden: 8 bytes
      0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,              // 1.0f, -2.0f
  };

  EXPECT_EQ(to_bytes(encode(b, 7).bytes()), expect_f32);
}

TEST(Protocol, GoldenTensorChunkCarriesXxh64) {
  TensorChunk c;
  c.tensor_index = 2;
  c.offset = 0;
  c.total_bytes = 3;
  c.data = {'a', 'b', 'c'};
  const Bytes expect = {
      'L',  'L',  'N',  'K',  0x01, 0x00, 0x03, 0x02, 0, 0, 0, 0,  // type 0x0203 TENSOR_CHUNK
      0,    0,    0,    0,    0,    0,    0,    0,                 // request id 0
      35,   0,    0,    0,                                         // payload_bytes
      2,    0,    0,    0,                                         // tensor_index
      0,    0,    0,    0,    0,    0,    0,    0,                 // offset
      3,    0,    0,    0,    0,    0,    0,    0,                 // total_bytes
      0x99, 0x09, 0x77, 0xAD, 0xF5, 0x2C, 0xBC, 0x44,              // xxh64("abc") = 0x44bc2cf5ad770999
      3,    0,    0,    0,    'a',  'b',  'c',                     // data
  };
  EXPECT_EQ(to_bytes(encode(c, 0).bytes()), expect);
}

TEST(Protocol, GoldenSampling) {
  Sampling m;
  m.seq_id = 3;
  m.temperature = 1.0f;
  m.top_k = 40;
  m.top_p = 0.5f;
  m.min_p = 0.25f;
  m.seed = 0x1122334455667788ull;
  const Bytes expect = {
      'L',  'L',  'N',  'K',  0x01, 0x00, 0x04, 0x03, 0, 0, 0, 0,  // type 0x0304 SAMPLING
      5,    0,    0,    0,    0,    0,    0,    0,                 // request id 5
      28,   0,    0,    0,                                         // payload_bytes
      3,    0,    0,    0,                                         // seq_id
      0x00, 0x00, 0x80, 0x3F,                                      // temperature 1.0f
      40,   0,    0,    0,                                         // top_k
      0x00, 0x00, 0x00, 0x3F,                                      // top_p 0.5f
      0x00, 0x00, 0x80, 0x3E,                                      // min_p 0.25f
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,              // seed
  };
  EXPECT_EQ(to_bytes(encode(m, 5).bytes()), expect);
}

TEST(Protocol, GoldenKvMessages) {
  const Bytes expect_request = {
      'L', 'L', 'N', 'K', 0x01, 0x00, 0x01, 0x05, 0, 0, 0, 0,  // type 0x0501 KV_REQUEST
      21,  0,   0,   0,   0,    0,    0,    0,                 // request id 21
      12,  0,   0,   0,                                        // payload_bytes
      3,   0,   0,   0,                                        // seq_id
      1,   0,   0,   0,                                        // unit_first
      4,   0,   0,   0,                                        // unit_last
  };
  EXPECT_EQ(to_bytes(encode(KvRequest{3, 1, 4}, 21).bytes()), expect_request);

  KvData d;
  d.seq_id = 3;
  d.unit = 2;
  d.n_pos = 1;
  d.kv_dim = 2;
  d.k = {0x3C00, 0xC000};
  d.v = {0x1234, 0xABCD};
  const Bytes expect_data = {
      'L', 'L', 'N', 'K', 0x01, 0x00, 0x02, 0x05, 0, 0, 0, 0,  // type 0x0502 KV_DATA
      21,  0,   0,   0,   0,    0,    0,    0,                 // request id 21
      32,  0,   0,   0,                                        // payload_bytes
      3,   0,   0,   0,                                        // seq_id
      2,   0,   0,   0,                                        // unit
      1,   0,   0,   0,                                        // n_pos
      2,   0,   0,   0,                                        // kv_dim
      4,   0,   0,   0,   0x00, 0x3C, 0x00, 0xC0,              // k: 1.0, -2.0 as half bits
      4,   0,   0,   0,   0x34, 0x12, 0xCD, 0xAB,              // v: 0x1234, 0xABCD
  };
  EXPECT_EQ(to_bytes(encode(d, 21).bytes()), expect_data);

  const Bytes expect_stored = {
      'L', 'L', 'N', 'K', 0x01, 0x00, 0x03, 0x05, 0, 0, 0, 0,  // type 0x0503 KV_STORED
      21,  0,   0,   0,   0,    0,    0,    0,                 // request id 21
      12,  0,   0,   0,                                        // payload_bytes
      3,   0,   0,   0,                                        // seq_id
      2,   0,   0,   0,                                        // unit
      1,   0,   0,   0,                                        // n_pos
  };
  EXPECT_EQ(to_bytes(encode(KvStored{3, 2, 1}, 21).bytes()), expect_stored);
}

// ---------------------------------------------------------------------------------------- frame header

TEST(ProtocolFrame, TruncatedAtEveryLength) {
  for (const Message& m : sample_messages()) {
    const Bytes full = to_bytes(encode(m, 9).bytes());
    for (size_t n = 0; n < full.size(); ++n) {
      auto r = decode(std::span(full).first(n), Limits{});
      ASSERT_FALSE(r) << message_type_name(message_type(m)) << " cut at " << n;
      EXPECT_EQ(r.error().code, ErrorCode::parse);
    }
  }
}

TEST(ProtocolFrame, PayloadTruncatedAtEveryLengthWithConsistentHeader) {
  // The header agrees with the cut payload, so the payload decoder itself must notice.
  for (const Message& m : sample_messages()) {
    const Frame f = encode(m, 9);
    const Bytes payload = to_bytes(f.payload());
    for (size_t n = 0; n < payload.size(); ++n) {
      const Bytes cut(payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(n));
      auto r = decode(frame_bytes(f.type(), cut, 9), Limits{});
      ASSERT_FALSE(r) << message_type_name(f.type()) << " payload cut at " << n;
      EXPECT_EQ(r.error().code, ErrorCode::parse);
    }
  }
}

TEST(ProtocolFrame, TrailingBytes) {
  for (const Message& m : sample_messages()) {
    const Frame f = encode(m, 9);
    Bytes payload = to_bytes(f.payload());
    payload.push_back(0);
    const std::string e = error_of(decode(frame_bytes(f.type(), payload, 9), Limits{}));
    EXPECT_CONTAINS(e, "trailing");
    // Bytes after the declared payload are trailing too.
    Bytes whole = to_bytes(f.bytes());
    whole.push_back(0);
    EXPECT_CONTAINS(error_of(decode(whole, Limits{})), "payload_bytes");
  }
}

TEST(ProtocolFrame, WrongMagic) {
  Bytes b = to_bytes(encode(Heartbeat{}, 0).bytes());
  b[3] = 'X';
  EXPECT_CONTAINS(error_of(decode(b, Limits{})), "bad magic");
}

TEST(ProtocolFrame, WrongVersionNamesBoth) {
  const Bytes b = frame_bytes(static_cast<uint16_t>(MessageType::heartbeat), Bytes(16, 0), 0, 2);
  const std::string e = error_of(decode(b, Limits{}));
  EXPECT_CONTAINS(e, "version 2");
  EXPECT_CONTAINS(e, "version 1");
}

TEST(ProtocolFrame, HelloWithOtherVersionNamesBoth) {
  Frame f = encode(testing::sample_hello(), 0);
  Bytes payload = to_bytes(f.payload());
  payload[0] = 7;  // protocol_version 7
  const std::string e = error_of(decode(frame_bytes(MessageType::hello, payload), Limits{}));
  EXPECT_CONTAINS(e, "HELLO");
  EXPECT_CONTAINS(e, "version 7");
  EXPECT_CONTAINS(e, "version 1");
}

TEST(ProtocolFrame, UnknownTypeAndFlags) {
  EXPECT_CONTAINS(error_of(decode(frame_bytes(uint16_t{0x0999}, Bytes{}), Limits{})),
                  "unknown message type 0x0999");
  EXPECT_CONTAINS(error_of(decode(frame_bytes(uint16_t{0}, Bytes{}), Limits{})), "unknown message type");
  EXPECT_CONTAINS(error_of(decode_payload(0x0500, Bytes{}, Limits{})), "unknown message type");
  const Bytes flagged = frame_bytes(static_cast<uint16_t>(MessageType::stats_request), Bytes{}, 0, 1, 0x10);
  EXPECT_CONTAINS(error_of(decode(flagged, Limits{})), "flags");
}

TEST(ProtocolFrame, PayloadLengthMustMatch) {
  Bytes b = to_bytes(encode(Heartbeat{}, 0).bytes());
  b[20] = 17;  // says 17, 16 follow
  EXPECT_CONTAINS(error_of(decode(b, Limits{})), "payload_bytes says 17 but 16");
  b[20] = 0xFF;
  b[23] = 0xFF;  // absurd
  EXPECT_FALSE(decode(b, Limits{}));
}

TEST(ProtocolFrame, FrameLimit) {
  Limits small;
  small.max_frame_bytes = 64;
  const Frame f = encode(testing::sample_batch(WireDType::f32), 0);
  ASSERT_GT(f.size(), 64u);
  EXPECT_CONTAINS(error_of(decode(f.bytes(), small)), "exceed the frame limit");
  EXPECT_FALSE(Frame::from_bytes(to_bytes(f.bytes()), small));
}

TEST(ProtocolFrame, SingleByteMutationsNeverCrash) {
  // A small deterministic fuzz: every byte of every sample set to a few values. Whatever decodes
  // must re-encode to the same bytes.
  for (const Message& m : sample_messages()) {
    const Bytes full = to_bytes(encode(m, 3).bytes());
    for (size_t i = 0; i < full.size(); ++i) {
      for (uint8_t v : {uint8_t{0}, uint8_t{1}, uint8_t{0x7F}, uint8_t{0x80}, uint8_t{0xFF}}) {
        Bytes b = full;
        b[i] = v;
        auto r = decode(b, Limits{});
        if (r) {
          EXPECT_EQ(to_bytes(encode(r->message, r->request_id).bytes()), b);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------- payload checks

// Builders of hand-made payloads.
Bytes batch_payload(uint32_t n_tokens, std::vector<TokenMeta> tokens, uint32_t n_embd, uint8_t dtype,
                    const Bytes& blob) {
  Writer w;
  w.u32(n_tokens);
  for (const auto& t : tokens) {
    w.i32(t.seq_id);
    w.i32(t.pos);
    w.u8(t.want_output ? 1 : 0);
  }
  w.u32(n_embd);
  w.u8(dtype);
  w.bytes(blob);
  return w.take();
}

Bytes f32_blob(std::vector<float> v) {
  Writer w;
  w.f32_array(v);
  return w.take();
}

TEST(ProtocolActivation, AbsurdTokenCount) {
  const std::string e =
      error_of(decode_payload_of(MessageType::activation_batch, batch_payload(0xFFFFFFFF, {}, 4, 0, {})));
  EXPECT_CONTAINS(e, "ACTIVATION_BATCH: n_tokens");
  EXPECT_CONTAINS(e, "exceeds the limit 65536");
  // Within the limit but more tokens than bytes.
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(1000, {{0, 0, false}}, 4, 0, {}))),
                  "bytes left");
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch, batch_payload(0, {}, 4, 0, {}))),
                  "n_tokens: is 0");
}

TEST(ProtocolActivation, HiddenSizeLimits) {
  EXPECT_CONTAINS(
      error_of(decode_payload_of(MessageType::activation_batch, batch_payload(1, {{0, 0, false}}, 0, 0, {}))),
      "n_embd: 0 is outside");
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(1, {{0, 0, false}}, (1u << 20) + 1, 0, {}))),
                  "n_embd: 1048577 is outside");
}

TEST(ProtocolActivation, BlobMustEqualTokensTimesHiddenTimesElemSize) {
  const std::vector<TokenMeta> two = {{0, 0, false}, {0, 1, true}};
  EXPECT_TRUE(
      decode_payload_of(MessageType::activation_batch, batch_payload(2, two, 2, 0, f32_blob({1, 2, 3, 4}))));
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(2, two, 2, 0, f32_blob({1, 2, 3})))),
                  "hidden: length 12 != 2 rows x 2 x 4 bytes = 16");
  // F16 declared, F32-sized blob.
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(2, two, 2, 1, f32_blob({1, 2, 3, 4})))),
                  "!= 2 rows x 2 x 2 bytes = 8");
}

TEST(ProtocolActivation, SizeProductDoesNotWrap) {
  // 4096 tokens x 2^20 x 4 bytes = 2^34, which is 0 in 32-bit arithmetic: an empty blob must not pass.
  std::vector<TokenMeta> many(4096, TokenMeta{0, 0, false});
  for (size_t i = 0; i < many.size(); ++i) many[i].pos = static_cast<int32_t>(i);
  EXPECT_CONTAINS(
      error_of(decode_payload_of(MessageType::activation_batch, batch_payload(4096, many, 1u << 20, 0, {}))),
      "length 0 != 4096 rows x 1048576 x 4 bytes = 17179869184");
  // With the limits raised to the maximum, the products still cannot overflow silently.
  Limits huge;
  huge.max_tokens = 0xFFFFFFFF;
  huge.max_hidden = 0xFFFFFFFF;
  EXPECT_FALSE(decode_payload_of(MessageType::activation_batch,
                                 batch_payload(1, {{0, 0, false}}, 0xFFFFFFFF, 0, {}), huge));
}

TEST(ProtocolActivation, BadEnumsAndNegativeIds) {
  const Bytes blob = f32_blob({1, 2});
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(1, {{0, 0, false}}, 2, 2, blob))),
                  "dtype: 2 is not 0 (F32) or 1 (F16)");
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(1, {{0, -1, false}}, 2, 0, blob))),
                  "tokens[0].pos: -1 is negative");
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(2, {{0, 0, false}, {-3, 0, false}}, 1, 0, blob))),
                  "tokens[1].seq_id: -3 is negative");
  Bytes p = batch_payload(1, {{0, 0, true}}, 2, 0, blob);
  p[4 + 8] = 2;  // want_output
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch, p)),
                  "tokens[0].want_output: 2 is not 0 or 1");
}

TEST(ProtocolActivation, NonFiniteValuesRejected) {
  const std::vector<TokenMeta> one = {{0, 0, false}};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(1, one, 2, 0, f32_blob({1, nan})))),
                  "hidden[1]: not finite");
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(1, one, 2, 0, f32_blob({-inf, 1})))),
                  "hidden[0]: not finite");
  // F16 infinity (0x7c00) and NaN (0x7e00).
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::activation_batch,
                                             batch_payload(1, one, 2, 1, Bytes{0, 0x3C, 0, 0x7C}))),
                  "hidden[1]: not finite");
  EXPECT_FALSE(
      decode_payload_of(MessageType::activation_batch, batch_payload(1, one, 2, 1, Bytes{0, 0x7E, 0, 0x3C})));
}

TEST(ProtocolResult, Checks) {
  auto result_payload = [](uint8_t kind, uint32_t n_rows, std::vector<TokenMeta> rows, auto&& tail) {
    Writer w;
    w.u8(kind);
    w.u32(n_rows);
    for (const auto& t : rows) {
      w.i32(t.seq_id);
      w.i32(t.pos);
      w.u8(t.want_output ? 1 : 0);
    }
    tail(w);
    return w.take();
  };
  const std::vector<TokenMeta> one = {{1, 2, true}};
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::result, result_payload(3, 0, {}, [](Writer&) {}))),
                  "kind: 3 is not");
  EXPECT_TRUE(decode_payload_of(MessageType::result, result_payload(2, 1, one, [](Writer& w) { w.i32(5); })));
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::result,
                                             result_payload(2, 1, one, [](Writer& w) { w.i32(-5); }))),
                  "token_ids[0]: -5 is negative");
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::result,
                                             result_payload(2, 1, one, [](Writer& w) { w.u16(5); }))),
                  "truncated");
  // No rows: a valid (empty) answer for every kind.
  EXPECT_TRUE(decode_payload_of(MessageType::result, result_payload(2, 0, {}, [](Writer&) {})));
  EXPECT_TRUE(decode_payload_of(MessageType::result, result_payload(1, 0, {}, [](Writer& w) {
                                  w.u32(7);
                                  w.u8(0);
                                  w.u32(0);
                                })));
  // Logits width limit is max_vocab, hidden width limit is max_hidden.
  Limits l;
  l.max_vocab = 10;
  l.max_hidden = 100;
  auto wide = [](Writer& w) {
    w.u32(50);
    w.u8(0);
    w.u32(0);
  };
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::result, result_payload(1, 0, {}, wide), l)),
                  "width: 50 is outside 1..10");
  EXPECT_TRUE(decode_payload_of(MessageType::result, result_payload(0, 0, {}, wide), l));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_CONTAINS(
      error_of(decode_payload_of(MessageType::result, result_payload(1, 1, one,
                                                                     [&](Writer& w) {
                                                                       w.u32(2);
                                                                       w.u8(0);
                                                                       w.bytes(f32_blob({0, nan}));
                                                                     }))),
      "values[1]: not finite");
}

LoadSegment segment_with(std::function<void(LoadSegment&)> edit) {
  LoadSegment m = testing::sample_load_segment();
  edit(m);
  return m;
}

// Decodes an encoded (possibly invalid) LoadSegment.
std::string load_error(const LoadSegment& m, const Limits& l = {}) {
  return error_of(decode_load_segment(encode(m, 0).payload(), l));
}

TEST(ProtocolLoadSegment, Checks) {
  EXPECT_TRUE(decode_load_segment(encode(testing::sample_load_segment(), 0).payload(), Limits{}));
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.unit_first = 8; })),
                  "unit_first: 8 > unit_last 7");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.unit_last = 70000; })),
                  "unit_last: 70000 exceeds");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.n_ctx = 0; })), "n_ctx: 0 is outside");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.n_spare = 4; })), "n_spare: 4 spares among 3");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.tensors[1].name = ""; })),
                  "tensors[1]: name: is empty");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.tensors[1].name = m.tensors[0].name; })),
                  "duplicate name");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.tensors[0].shape = {}; })),
                  "tensors[0]: n_dims: 0 is outside");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) {
                    m.tensors[0].shape = {1, 1, 1, 1, 1};
                  })),
                  "n_dims: 5 is outside 1..4");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) {
                    m.tensors[0].shape = {4, 0};
                  })),
                  "ne[1]: is 0");
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) { m.tensors[0].n_bytes = 31; })),
                  "n_bytes: 31 != 32 implied by dtype F32");
  // Q8_0 rows must be whole blocks of 32.
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) {
                    m.tensors[1].shape = {33, 3};
                  })),
                  "block size");
  // Size overflow: 2^62 x 8 elements.
  EXPECT_CONTAINS(load_error(segment_with([](LoadSegment& m) {
                    m.tensors[0].shape = {1ull << 62, 8};
                  })),
                  "overflows");
  Limits small;
  small.max_tensors = 1;
  EXPECT_CONTAINS(load_error(testing::sample_load_segment(), small),
                  "n_tensors: count 3 exceeds the limit 1");
  small = Limits{};
  small.max_metadata_bytes = 4;
  EXPECT_CONTAINS(load_error(testing::sample_load_segment(), small),
                  "metadata: length 8 exceeds the limit 4");
  small = Limits{};
  small.max_string = 8;
  EXPECT_CONTAINS(load_error(testing::sample_load_segment(), small),
                  "next_endpoint: length 21 exceeds the limit 8");
}

TEST(ProtocolLoadSegment, UnsupportedDtypeId) {
  LoadSegment m = testing::sample_load_segment();
  Bytes p = to_bytes(encode(m, 0).payload());
  // The first tensor's dtype follows: hash(32) units(8) n_ctx(4) endpoint(4+21) metadata(4+8) n_tensors(4)
  // name(4+22).
  const size_t at = 32 + 8 + 4 + 4 + 21 + 4 + 8 + 4 + 4 + 22;
  ASSERT_EQ(load_u32_le(p.data() + at), 0u);  // F32
  store_u32_le(p.data() + at, 3);             // Q4_1: a GGML type we do not read
  EXPECT_CONTAINS(error_of(decode_load_segment(p, Limits{})), "tensors[0]: dtype: type id 3");
  store_u32_le(p.data() + at, 0xFFFFFFFF);
  EXPECT_CONTAINS(error_of(decode_load_segment(p, Limits{})), "is not supported");
}

TEST(ProtocolLoadSegment, CurveKeysRoundTripAndAreChecked) {
  LoadSegment m = testing::sample_load_segment();
  m.next_public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  m.upstream_public_key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
  auto back = decode_load_segment(encode(m, 0).payload(), Limits{});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, m);
  // The keys are the last two strings of the payload: 4 + 40 bytes each.
  Bytes p = to_bytes(encode(m, 0).payload());
  p[p.size() - 44 - 40 + 3] = ' ';  // inside next_public_key: not Z85
  EXPECT_CONTAINS(error_of(decode_load_segment(p, Limits{})), "LOAD_SEGMENT: next_public_key:");
  EXPECT_CONTAINS(error_of(decode_load_segment(p, Limits{})), "not Z85");
  m.next_public_key.clear();
  m.upstream_public_key = "tooshort";
  EXPECT_CONTAINS(error_of(decode_load_segment(encode(m, 0).payload(), Limits{})),
                  "upstream_public_key: key: a CURVE key is 40 Z85 characters, not 8");
}

TEST(ProtocolLoadSegment, AbsurdTensorCount) {
  Writer w;
  w.raw(testing::digest_of(0));
  w.u32(0);
  w.u32(0);
  w.u32(16);
  w.string("");
  w.bytes(Bytes{});
  w.u32(60000);  // within max_tensors, but no bytes follow
  EXPECT_CONTAINS(error_of(decode_load_segment(w.buffer(), Limits{})),
                  "n_tensors: count 60000 of at least 60 bytes");
}

TEST(ProtocolChunk, Checks) {
  TensorChunk c;
  c.tensor_index = 0;
  c.offset = 10;
  c.total_bytes = 12;
  c.data = {1, 2};
  EXPECT_TRUE(decode_tensor_chunk(encode(c, 0).payload(), Limits{}));
  c.total_bytes = 11;
  EXPECT_CONTAINS(error_of(decode_tensor_chunk(encode(c, 0).payload(), Limits{})),
                  "runs past total_bytes 11");
  c.offset = ~0ull;
  c.total_bytes = ~0ull;
  EXPECT_CONTAINS(error_of(decode_tensor_chunk(encode(c, 0).payload(), Limits{})), "runs past");
  c = TensorChunk{0, 0, 0, {1}};
  EXPECT_CONTAINS(error_of(decode_tensor_chunk(encode(c, 0).payload(), Limits{})), "total_bytes: is 0");
  c = TensorChunk{0, 0, 5, {}};
  EXPECT_CONTAINS(error_of(decode_tensor_chunk(encode(c, 0).payload(), Limits{})), "data: is empty");
  c = TensorChunk{70000, 0, 5, {1}};
  EXPECT_CONTAINS(error_of(decode_tensor_chunk(encode(c, 0).payload(), Limits{})),
                  "tensor_index: 70000 exceeds");
  // A flipped data byte no longer matches the hash.
  c = TensorChunk{1, 0, 5, {1, 2, 3}};
  Bytes p = to_bytes(encode(c, 0).payload());
  p.back() ^= 1;
  EXPECT_CONTAINS(error_of(decode_tensor_chunk(p, Limits{})), "chunk_xxh64: mismatch");
}

TEST(ProtocolSmallMessages, Checks) {
  // SEGMENT_STATUS
  EXPECT_CONTAINS(error_of(decode_segment_status(Bytes{2, 0, 0, 0, 0}, Limits{})), "state: 2 is not");
  // (ready with spares still wanted is fine: the segment runs without them)
  auto ready = decode_segment_status(encode(SegmentStatus{SegmentState::ready, {1}, {2, 4}}, 0).payload(), Limits{});
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->missing, std::vector<uint32_t>{1});
  EXPECT_EQ(ready->declined, (std::vector<uint32_t>{2, 4}));
  EXPECT_CONTAINS(error_of(decode_segment_status(
                      encode(SegmentStatus{SegmentState::need_tensors, {1}, {5, 5}}, 0).payload(), Limits{})),
                  "declined[1]: indices must be strictly increasing");
  EXPECT_CONTAINS(error_of(decode_segment_status(Bytes{0, 0, 0, 0, 0}, Limits{})), "n_declined");
  EXPECT_CONTAINS(error_of(decode_segment_status(
                      encode(SegmentStatus{SegmentState::need_tensors, {3, 3}}, 0).payload(), Limits{})),
                  "missing[1]: indices must be strictly increasing");
  EXPECT_CONTAINS(error_of(decode_segment_status(
                      encode(SegmentStatus{SegmentState::need_tensors, {70000}}, 0).payload(), Limits{})),
                  "missing[0]: 70000 exceeds");
  // RELEASE_SEQUENCE
  EXPECT_CONTAINS(error_of(decode_release_sequence(encode(ReleaseSequence{-1}, 0).payload(), Limits{})),
                  "seq_id: -1 is negative");
  // ERROR
  EXPECT_CONTAINS(error_of(decode_error(Bytes{0, 0, 0, 0, 0, 0, 0, 0}, Limits{})),
                  "code: 0 is not a known error code");
  EXPECT_CONTAINS(error_of(decode_error(Bytes{11, 0, 0, 0, 0, 0, 0, 0}, Limits{})), "code: 11 is not");
  // HELLO
  Hello h = testing::sample_hello();
  Bytes p = to_bytes(encode(h, 0).payload());
  p[2] = 2;  // role
  EXPECT_CONTAINS(error_of(decode_hello(p, Limits{})), "role: 2 is not 0 (worker) or 1 (coordinator)");
  h.name = std::string(5000, 'n');
  EXPECT_CONTAINS(error_of(decode_hello(encode(h, 0).payload(), Limits{})),
                  "HELLO: name: length 5000 exceeds the limit 4096");
  // STATS_REQUEST has no payload.
  EXPECT_CONTAINS(error_of(decode_stats_request(Bytes{0}, Limits{})), "trailing");
}

TEST(ProtocolStats, Checks) {
  Stats s;
  s.units = {{1, 0, std::numeric_limits<double>::quiet_NaN()}};
  EXPECT_CONTAINS(error_of(decode_stats(encode(s, 0).payload(), Limits{})),
                  "units[0].compute_ms: must be finite and >= 0");
  s.units = {{1, 0, -1.0}};
  EXPECT_CONTAINS(error_of(decode_stats(encode(s, 0).payload(), Limits{})), "must be finite");
  s.units = {{1, 0, std::numeric_limits<double>::infinity()}};
  EXPECT_CONTAINS(error_of(decode_stats(encode(s, 0).payload(), Limits{})), "must be finite");
  s.units = {{2, 0, 1.0}, {2, 0, 1.0}};
  EXPECT_CONTAINS(error_of(decode_stats(encode(s, 0).payload(), Limits{})),
                  "units[1].unit: units must be strictly increasing");
  s.units = {{70000, 0, 1.0}};
  EXPECT_CONTAINS(error_of(decode_stats(encode(s, 0).payload(), Limits{})), "exceeds the unit limit");
}

// KV_DATA payload with the blobs as given (lengths need not match n_pos and kv_dim).
Bytes kv_data_payload(int32_t seq_id, uint32_t unit, uint32_t n_pos, uint32_t kv_dim, const Bytes& k,
                      const Bytes& v) {
  Writer w;
  w.i32(seq_id);
  w.u32(unit);
  w.u32(n_pos);
  w.u32(kv_dim);
  w.bytes(k);
  w.bytes(v);
  return w.take();
}

std::string kv_error(const Message& m, const Limits& l = {}) {
  const Frame f = encode(m, 0);
  return error_of(decode_payload(static_cast<uint16_t>(f.type()), f.payload(), l));
}

std::string kv_data_error(const Bytes& payload, const Limits& l = {}) {
  return error_of(decode_payload_of(MessageType::kv_data, payload, l));
}

TEST(ProtocolKv, RoundTrips) {
  const std::vector<Message> ok = {
      KvRequest{0, 0, 0},
      KvRequest{std::numeric_limits<int32_t>::max(), 65535, 65535},
      KvRequest{4, 0, 65535},
      testing::sample_kv_data(),
      KvData{1, 0, 0, 1, {}, {}},  // no positions: empty blobs
      KvData{1, 65535, 1, 1, {0xFFFF}, {0x0000}},
      KvStored{0, 0, 0},
      KvStored{5, 65535, 1u << 24},
  };
  for (const Message& m : ok) {
    SCOPED_TRACE(message_type_name(message_type(m)));
    const Frame f = encode(m, 77);
    auto env = decode(f.bytes(), Limits{});
    ASSERT_TRUE(env) << env.error().message;
    EXPECT_EQ(env->request_id, 77u);
    EXPECT_TRUE(env->message == m);
    EXPECT_EQ(to_bytes(encode(env->message, 77).bytes()), to_bytes(f.bytes()));
  }
  // Blobs are exactly n_pos * kv_dim * 2 bytes; the values are the bits as sent.
  const KvData d = testing::sample_kv_data();
  EXPECT_EQ(encode(d, 0).payload().size(), 16 + 4 + 12 + 4 + 12);
  auto back = decode_payload_of(MessageType::kv_data, to_bytes(encode(d, 0).payload()));
  ASSERT_TRUE(back);
  EXPECT_EQ(std::get<KvData>(*back).k, d.k);
  EXPECT_EQ(std::get<KvData>(*back).v, d.v);
  EXPECT_EQ(encode(KvData{1, 0, 0, 1, {}, {}}, 0).payload().size(), 24u);
}

TEST(ProtocolKv, RequestChecks) {
  EXPECT_CONTAINS(kv_error(KvRequest{-1, 0, 0}), "KV_REQUEST: seq_id: -1 is negative (at byte 0)");
  EXPECT_CONTAINS(kv_error(KvRequest{0, 5, 4}), "KV_REQUEST: unit_first: 5 > unit_last 4 (at byte 4)");
  EXPECT_CONTAINS(kv_error(KvRequest{0, 0, 65536}),
                  "KV_REQUEST: unit_last: 65536 exceeds the limit 65535 (at byte 8)");
  Limits l;
  l.max_units = 4;
  EXPECT_CONTAINS(kv_error(KvRequest{0, 4, 4}, l), "unit_last: 4 exceeds the limit 3");
  EXPECT_CONTAINS(kv_error(KvRequest{0, 5, 0xFFFFFFFF}), "unit_last: 4294967295 exceeds");
  const Bytes p = to_bytes(encode(KvRequest{1, 2, 3}, 0).payload());
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::kv_request, Bytes(p.begin(), p.end() - 1))),
                  "KV_REQUEST: unit_last: truncated");
  Bytes trailing = p;
  trailing.push_back(0);
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::kv_request, trailing)),
                  "KV_REQUEST: end: 1 trailing bytes");
}

TEST(ProtocolKv, StoredChecks) {
  EXPECT_CONTAINS(kv_error(KvStored{-5, 0, 0}), "KV_STORED: seq_id: -5 is negative (at byte 0)");
  EXPECT_CONTAINS(kv_error(KvStored{0, 65536, 0}),
                  "KV_STORED: unit: 65536 exceeds the unit limit (at byte 4)");
  EXPECT_CONTAINS(kv_error(KvStored{0, 0, (1u << 24) + 1}),
                  "KV_STORED: n_pos: 16777217 exceeds the context limit 16777216 (at byte 8)");
  const Bytes p = to_bytes(encode(KvStored{1, 2, 3}, 0).payload());
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::kv_stored, Bytes(p.begin(), p.begin() + 5))),
                  "KV_STORED: unit: truncated");
  Bytes trailing = p;
  trailing.push_back(0);
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::kv_stored, trailing)), "trailing");
}

TEST(ProtocolKv, DataChecks) {
  const Bytes four(4, 0x11), three(3, 0x11), six(6, 0x11);
  EXPECT_TRUE(decode_payload_of(MessageType::kv_data, kv_data_payload(0, 0, 1, 2, four, four)));
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(-1, 0, 1, 2, four, four)),
                  "KV_DATA: seq_id: -1 is negative (at byte 0)");
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 65536, 1, 2, four, four)),
                  "KV_DATA: unit: 65536 exceeds the unit limit (at byte 4)");
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 0, 0, {}, {})),
                  "KV_DATA: kv_dim: 0 is outside 1..1048576 (at byte 12)");
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 0, (1u << 20) + 1, {}, {})),
                  "kv_dim: 1048577 is outside 1..1048576");
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, (1u << 24) + 1, 1, {}, {})),
                  "KV_DATA: n_pos: 16777217 exceeds the context limit 16777216 (at byte 8)");
  // Blob lengths must be exactly n_pos x kv_dim x 2, each.
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 1, 2, six, four)),
                  "KV_DATA: k: length 6 != 1 positions x kv_dim 2 x 2 bytes = 4 (at byte 16)");
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 1, 2, four, three)),
                  "KV_DATA: v: length 3 != 1 positions x kv_dim 2 x 2 bytes = 4 (at byte 24)");
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 0, 2, four, {})), "k: length 4 != 0 positions");
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 2, 1, four, {})), "v: length 0 != 2 positions");
  // Within the limits but far more than a frame: rejected before any blob is read.
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 1u << 24, 1u << 20, {}, {})),
                  "x 2 bytes exceed the frame limit");
  // A blob that claims more bytes than are left.
  Writer w;
  w.i32(0);
  w.u32(0);
  w.u32(1000);
  w.u32(64);
  w.u32(128000);
  w.u32(0);
  EXPECT_CONTAINS(kv_data_error(w.buffer()), "KV_DATA: k: length 128000 exceeds the limit 8 (at byte 16)");
  // Truncated anywhere, and trailing bytes.
  const Bytes p = to_bytes(encode(testing::sample_kv_data(), 0).payload());
  for (size_t n = 0; n < p.size(); ++n) {
    EXPECT_FALSE(
        decode_payload_of(MessageType::kv_data, Bytes(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(n))))
        << "cut at " << n;
  }
  EXPECT_CONTAINS(kv_data_error(Bytes(p.begin(), p.end() - 1)),
                  "KV_DATA: v: length 12 exceeds the 11 bytes left");
  Bytes trailing = p;
  trailing.push_back(0);
  EXPECT_CONTAINS(kv_data_error(trailing), "KV_DATA: end: 1 trailing bytes");
}

TEST(ProtocolKv, DataSizeOverflow) {
  // With limits raised as far as they go, n_pos x kv_dim x 2 no longer fits in 64 bits.
  Limits huge;
  huge.max_ctx = std::numeric_limits<uint32_t>::max();
  huge.max_hidden = std::numeric_limits<uint32_t>::max();
  huge.max_frame_bytes = std::numeric_limits<uint32_t>::max();
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 0xFFFFFFFF, 0xFFFFFFFF, {}, {}), huge),
                  "KV_DATA: n_pos: n_pos x kv_dim x 2 bytes overflows");
  // Just below: fits in 64 bits, but not in a frame.
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 0xFFFFFFFF, 0x7FFFFFFF, {}, {}), huge),
                  "exceed the frame limit");
  // And with the same limits a blob must still match.
  EXPECT_CONTAINS(kv_data_error(kv_data_payload(0, 0, 256, 256, {}, {}), huge),
                  "k: length 0 != 256 positions x kv_dim 256 x 2 bytes = 131072");
}

Sampling sampling_with(std::function<void(Sampling&)> edit) {
  Sampling m = testing::sample_sampling();
  edit(m);
  return m;
}

std::string sampling_error(const Sampling& m) {
  return error_of(decode_sampling(encode(m, 0).payload(), Limits{}));
}

TEST(ProtocolSampling, EveryFieldIsChecked) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_CONTAINS(sampling_error(sampling_with([](Sampling& m) { m.seq_id = -1; })),
                  "SAMPLING: seq_id: -1 is negative (at byte 0)");
  EXPECT_CONTAINS(sampling_error(sampling_with([](Sampling& m) { m.temperature = -0.5f; })),
                  "SAMPLING: temperature: -0.5 is not finite and >= 0 (at byte 4)");
  EXPECT_CONTAINS(sampling_error(sampling_with([&](Sampling& m) { m.temperature = nan; })),
                  "temperature: nan");
  EXPECT_CONTAINS(sampling_error(sampling_with([&](Sampling& m) { m.temperature = inf; })),
                  "temperature: inf");
  EXPECT_CONTAINS(sampling_error(sampling_with([](Sampling& m) { m.top_k = -1; })),
                  "SAMPLING: top_k: -1 is negative (at byte 8)");
  EXPECT_CONTAINS(sampling_error(sampling_with([](Sampling& m) { m.top_p = -0.1f; })),
                  "SAMPLING: top_p: -0.1 is not finite and >= 0 (at byte 12)");
  EXPECT_CONTAINS(sampling_error(sampling_with([&](Sampling& m) { m.top_p = nan; })), "top_p: nan");
  EXPECT_CONTAINS(sampling_error(sampling_with([&](Sampling& m) { m.top_p = -inf; })), "top_p: -inf");
  EXPECT_CONTAINS(sampling_error(sampling_with([](Sampling& m) { m.min_p = -0.01f; })),
                  "SAMPLING: min_p: -0.01 is not in [0, 1] (at byte 16)");
  EXPECT_CONTAINS(sampling_error(sampling_with([](Sampling& m) { m.min_p = 1.5f; })), "min_p: 1.5 is not in");
  EXPECT_CONTAINS(sampling_error(sampling_with([&](Sampling& m) { m.min_p = nan; })), "min_p: nan");
  // The seed takes any value; a missing or extra byte is caught.
  EXPECT_TRUE(
      decode_sampling(encode(sampling_with([](Sampling& m) { m.seed = ~0ull; }), 0).payload(), Limits{}));
  Bytes p = to_bytes(encode(testing::sample_sampling(), 0).payload());
  EXPECT_CONTAINS(error_of(decode_sampling(std::span(p).first(p.size() - 1), Limits{})), "seed: truncated");
  p.push_back(0);
  EXPECT_CONTAINS(error_of(decode_sampling(p, Limits{})), "trailing");
}

TEST(ProtocolSampling, PermissiveLikeTheSampler) {
  // Boundaries and "off" values model::Sampler accepts: greedy, no top-k, top_p >= 1, min_p 0 or 1.
  const std::vector<Sampling> ok = {
      Sampling{0, 0.0f, 0, 0.0f, 0.0f, 0},
      Sampling{std::numeric_limits<int32_t>::max(), 100.0f, std::numeric_limits<int32_t>::max(), 1.0f, 1.0f,
               1},
      Sampling{1, 2.0f, 1, 7.5f, 0.5f, 0xFFFFFFFF},
      Sampling{2, -0.0f, 0, 1.0f, -0.0f, 0},  // -0 is >= 0; its bits survive the round trip
  };
  for (const Sampling& m : ok) {
    const Frame f = encode(m, 1);
    auto back = decode_sampling(f.payload(), Limits{});
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, m);
    EXPECT_EQ(std::bit_cast<uint32_t>(back->temperature), std::bit_cast<uint32_t>(m.temperature));
    EXPECT_EQ(to_bytes(encode(*back, 1).bytes()), to_bytes(f.bytes()));
  }
}

// ---------------------------------------------------------------------------------------- errors

TEST(ProtocolErrors, ErrorMessagesAndReplies) {
  const ErrorMessage m = make_error_message(make_error(ErrorCode::resource, "too big"), 0x0201);
  EXPECT_EQ(m.code, WireError::resource);
  EXPECT_EQ(m.in_reply_to, 0x0201);
  const Error e = to_error(m);
  EXPECT_EQ(e.code, ErrorCode::resource);
  EXPECT_CONTAINS(e.message, "peer error (resource exhausted): too big");

  // Truncated to max_string, never inside a UTF-8 sequence.
  Limits l;
  l.max_string = 5;
  const ErrorMessage t = make_error_message(WireError::internal, "abcd\xC3\xA9xyz", 0, l);
  EXPECT_EQ(t.message, "abcd");

  // A reply to garbage echoes what is readable.
  Bytes bad = to_bytes(encode(Heartbeat{}, 0xABCDEF).bytes());
  bad.push_back(0);
  auto why = decode(bad, Limits{});
  ASSERT_FALSE(why);
  auto reply = make_error_reply(bad, why.error(), Limits{});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->request_id(), 0xABCDEFu);
  auto em = decode_error(reply->payload(), Limits{});
  ASSERT_TRUE(em);
  EXPECT_EQ(em->code, WireError::malformed);
  EXPECT_EQ(em->in_reply_to, static_cast<uint16_t>(MessageType::heartbeat));

  // Another version: version_mismatch.
  const Bytes v2 = frame_bytes(static_cast<uint16_t>(MessageType::hello), Bytes{}, 5, 2);
  auto r2 = make_error_reply(v2, decode(v2, Limits{}).error(), Limits{});
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(decode_error(r2->payload(), Limits{})->code, WireError::version_mismatch);

  // Never answer an ERROR, even a broken one or one from another version.
  const Bytes bad_error = frame_bytes(static_cast<uint16_t>(MessageType::error), Bytes{1}, 0, 9);
  EXPECT_FALSE(make_error_reply(bad_error, make_error(ErrorCode::parse, "x"), Limits{}).has_value());

  // Pure garbage (no magic): request id 0, type 0.
  auto g = make_error_reply(Bytes{1, 2, 3}, make_error(ErrorCode::parse, "garbage"), Limits{});
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->request_id(), 0u);
  EXPECT_EQ(decode_error(g->payload(), Limits{})->in_reply_to, 0);
}

}  // namespace
}  // namespace ll::net

namespace ll::net {
namespace {

std::string join_error(const Join& m) { return error_of(decode_payload_of(MessageType::join, to_bytes(encode(m, 0).payload()))); }

TEST(ProtocolJoin, GoldenRoundTripAndChecks) {
  const Bytes expect = {
      'L', 'L', 'N', 'K', 0x01, 0x00, 0x01, 0x06, 0, 0, 0, 0,  // type 0x0601 JOIN
      7,   0,   0,   0,   0,    0,    0,    0,                 // request id 7
      17,  0,   0,   0,                                        // payload_bytes
      9,   0,   0,   0,   't',  'c',  'p',  ':', '/', '/', 'h', ':', '1',  // endpoint
      0,   0,   0,   0,                                        // public_key: none
  };
  EXPECT_EQ(to_bytes(encode(Join{"tcp://h:1", ""}, 7).bytes()), expect);
  const std::string key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  for (const Join& m : {Join{"tcp://h:1", ""}, Join{"tcp://192.0.2.14:5601", key}, Join{"inproc://w", ""},
                        Join{"tcp://" + std::string(250, 'a'), key}}) {
    auto env = decode(encode(m, 9).bytes(), Limits{});
    ASSERT_TRUE(env) << env.error().message;
    EXPECT_TRUE(std::get<Join>(env->message) == m);
  }
  EXPECT_CONTAINS(join_error(Join{"", ""}), "JOIN: endpoint: is empty");
  EXPECT_CONTAINS(join_error(Join{"tcp://h :1", ""}), "JOIN: endpoint: has a character that is not printable ASCII");
  EXPECT_CONTAINS(join_error(Join{"udp://h:1", ""}), "JOIN: endpoint: is not tcp://HOST:PORT");
  EXPECT_CONTAINS(join_error(Join{"tcp://" + std::string(251, 'a'), ""}), "JOIN: endpoint:");
  EXPECT_CONTAINS(join_error(Join{"tcp://h:1", "short"}), "JOIN: public_key: is not 40 Z85 characters");
  EXPECT_CONTAINS(join_error(Join{"tcp://h:1", std::string(39, 'a') + "\""}), "public_key: is not 40 Z85");
  EXPECT_CONTAINS(join_error(Join{"tcp://h:1", key + "x"}), "JOIN: public_key:");
  Bytes trailing = to_bytes(encode(Join{"tcp://h:1", ""}, 0).payload());
  trailing.push_back(0);
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::join, trailing)), "JOIN: end: 1 trailing bytes");
  const Bytes p = to_bytes(encode(Join{"tcp://h:1", key}, 0).payload());
  EXPECT_CONTAINS(error_of(decode_payload_of(MessageType::join, Bytes(p.begin(), p.begin() + 20))), "JOIN: public_key:");
}

}  // namespace
}  // namespace ll::net
