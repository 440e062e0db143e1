// Hidden states on the wire have one layout and one byte order, whatever the host (issue 7, item 5):
// row-major [n_tokens][n_embd], each F32 value as the 4 little-endian bytes of its IEEE-754 bits,
// each F16 value as the 2 little-endian bytes of its IEEE-754 binary16 bits. The expected bytes
// below are written by hand; the test runs on x86-64 and, cross-compiled, on arm64 under qemu, so a
// mixed cluster's two ends are held to the same bytes.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <vector>

#include "net/protocol.h"

namespace ll::net {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes to_bytes(std::span<const uint8_t> s) {
  return Bytes(s.begin(), s.end());
}

std::vector<uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<uint32_t> out;
  for (float f : v) out.push_back(std::bit_cast<uint32_t>(f));
  return out;
}

// Two tokens of three values each. Every F32 value has four different bytes where possible, so a
// swapped byte order, a swapped row/column order or a transposition changes the bytes.
const std::vector<TokenMeta> k_tokens = {{0, 0, false}, {7, 12, true}};
const std::vector<float> k_f32_values = {
    std::bit_cast<float>(0x40490FDBu),  // pi
    std::bit_cast<float>(0x80000000u),  // -0.0
    std::bit_cast<float>(0x00000001u),  // smallest subnormal
    std::bit_cast<float>(0x501502F9u),  // 1e10
    std::bit_cast<float>(0x80800000u),  // -FLT_MIN
    std::bit_cast<float>(0x3DCCCCCDu),  // 0.1f
};

// The tokens as they travel: i32 seq_id | i32 pos | u8 want_output, each.
const Bytes k_token_bytes = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // seq 0, pos 0, no output
    0x07, 0x00, 0x00, 0x00, 0x0C, 0x00, 0x00, 0x00, 0x01,  // seq 7, pos 12, want_output
};

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(WireLayout, F32HiddenStatesAreRowMajorLittleEndianIeeeBits) {
  ActivationBatch b;
  b.tokens = k_tokens;
  b.n_embd = 3;
  b.dtype = WireDType::f32;
  b.hidden = k_f32_values;
  const Bytes expect = concat({
      {'L', 'L', 'N', 'K', 0x01, 0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00},  // magic, v1, 0x0301, flags
      {0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},                      // request id 9
      {55, 0x00, 0x00, 0x00},                                                // payload_bytes
      {0x02, 0x00, 0x00, 0x00},                                              // n_tokens 2
      k_token_bytes,
      {0x03, 0x00, 0x00, 0x00},  // n_embd 3
      {0x00},                    // dtype F32
      {24, 0x00, 0x00, 0x00},    // blob: 2 x 3 x 4 bytes
      {0xDB, 0x0F, 0x49, 0x40},  // [0][0] pi
      {0x00, 0x00, 0x00, 0x80},  // [0][1] -0.0
      {0x01, 0x00, 0x00, 0x00},  // [0][2] smallest subnormal
      {0xF9, 0x02, 0x15, 0x50},  // [1][0] 1e10
      {0x00, 0x00, 0x80, 0x80},  // [1][1] -FLT_MIN
      {0xCD, 0xCC, 0xCC, 0x3D},  // [1][2] 0.1f
  });
  const Frame f = encode(b, 9);
  EXPECT_EQ(to_bytes(f.bytes()), expect);

  // The hand-written bytes decode to the same values, bit for bit (no flush of subnormals, -0 kept).
  auto back = decode(expect, Limits{});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->request_id, 9u);
  const auto* got = std::get_if<ActivationBatch>(&back->message);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->tokens, k_tokens);
  EXPECT_EQ(got->n_embd, 3u);
  EXPECT_EQ(bits_of(got->hidden), bits_of(k_f32_values));
}

TEST(WireLayout, F16HiddenStatesAreRowMajorLittleEndianHalfBits) {
  ActivationBatch b;
  b.tokens = k_tokens;
  b.n_embd = 3;
  b.dtype = WireDType::f16;
  b.hidden = {1.0f, -2.0f, 65504.0f, std::bit_cast<float>(0x33800000u) /* 2^-24 */, 0.1f, -0.0f};
  const Bytes payload = concat({
      {0x02, 0x00, 0x00, 0x00},  // n_tokens 2
      k_token_bytes,
      {0x03, 0x00, 0x00, 0x00},  // n_embd 3
      {0x01},                    // dtype F16
      {12, 0x00, 0x00, 0x00},    // blob: 2 x 3 x 2 bytes
      {0x00, 0x3C},              // [0][0] 1.0
      {0x00, 0xC0},              // [0][1] -2.0
      {0xFF, 0x7B},              // [0][2] 65504, the largest half
      {0x01, 0x00},              // [1][0] 2^-24, the smallest subnormal half
      {0x66, 0x2E},              // [1][1] 0.1f rounded to the nearest half, 0.0999755859375
      {0x00, 0x80},              // [1][2] -0.0
  });
  const Frame f = encode(b, 9);
  EXPECT_EQ(to_bytes(f.payload()), payload);
  EXPECT_EQ(f.header().payload_bytes, 43u);

  auto back = decode_activation_batch(payload, Limits{});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->tokens, k_tokens);
  // Widened exactly: the decoded F32 values are the half values.
  EXPECT_EQ(bits_of(back->hidden), (std::vector<uint32_t>{0x3F800000u, 0xC0000000u, 0x477FE000u, 0x33800000u,
                                                         0x3DCCC000u, 0x80000000u}));
}

TEST(WireLayout, HiddenResultUsesTheSameRowLayout) {
  // Ring mode: the last worker sends its hidden states back to the origin as a RESULT.
  Result r;
  r.kind = ResultKind::hidden;
  r.tokens = k_tokens;
  r.width = 3;
  r.dtype = WireDType::f32;
  r.values = k_f32_values;
  const Bytes payload = concat({
      {0x00},                    // kind hidden
      {0x02, 0x00, 0x00, 0x00},  // n_rows 2
      k_token_bytes,
      {0x03, 0x00, 0x00, 0x00},  // width 3
      {0x00},                    // dtype F32
      {24, 0x00, 0x00, 0x00},    // blob
      {0xDB, 0x0F, 0x49, 0x40, 0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00},  // row 0
      {0xF9, 0x02, 0x15, 0x50, 0x00, 0x00, 0x80, 0x80, 0xCD, 0xCC, 0xCC, 0x3D},  // row 1
  });
  const Frame f = encode(r, 3);
  EXPECT_EQ(to_bytes(f.payload()), payload);
  auto back = decode_result(payload, Limits{});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->kind, ResultKind::hidden);
  EXPECT_EQ(bits_of(back->values), bits_of(k_f32_values));
}

}  // namespace
}  // namespace ll::net
