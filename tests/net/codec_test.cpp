#include "net/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/fp16.h"

namespace ll::net {
namespace {

using Bytes = std::vector<uint8_t>;

TEST(Codec, WriterProducesLittleEndianBytes) {
  Writer w;
  w.u8(0xAB);
  w.u16(0x0102);
  w.u32(0x01020304);
  w.u64(0x0102030405060708ull);
  w.i32(-2);
  w.i64(-1);
  w.f32(1.0f);
  w.f64(-2.0);
  const Bytes expect = {
      0xAB,                                            // u8
      0x02, 0x01,                                      // u16
      0x04, 0x03, 0x02, 0x01,                          // u32
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // u64
      0xFE, 0xFF, 0xFF, 0xFF,                          // i32 -2
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  // i64 -1
      0x00, 0x00, 0x80, 0x3F,                          // f32 1.0 = 0x3f800000
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0,  // f64 -2.0 = 0xc000000000000000
  };
  EXPECT_EQ(w.buffer(), expect);
}

TEST(Codec, WriterStringsBytesAndArrays) {
  Writer w;
  w.string("hi");
  w.bytes(Bytes{9, 8, 7});
  w.string("");
  const float f[] = {1.0f, -2.0f};
  w.f32_array(f);
  w.f16_array(f);
  const int32_t i[] = {1, -1};
  w.i32_array(i);
  const uint32_t u[] = {0x0A0B0C0D};
  w.u32_array(u);
  const Bytes expect = {
      2,    0,    0,    0,    'h',  'i',               // string
      3,    0,    0,    0,    9,    8,    7,           // bytes
      0,    0,    0,    0,                             // empty string
      0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,  // f32 1, -2
      0x00, 0x3C, 0x00, 0xC0,                          // f16 1 = 0x3c00, -2 = 0xc000
      1,    0,    0,    0,    0xFF, 0xFF, 0xFF, 0xFF,  // i32 1, -1
      0x0D, 0x0C, 0x0B, 0x0A,                          // u32
  };
  EXPECT_EQ(w.buffer(), expect);
  w.patch_u32(0, 0x11223344);
  EXPECT_EQ(w.buffer()[0], 0x44);
  EXPECT_EQ(w.buffer()[3], 0x11);
}

TEST(Codec, ReaderRoundTrip) {
  Writer w;
  w.u8(7);
  w.u16(65535);
  w.u32(0xDEADBEEF);
  w.u64(0x8000000000000001ull);
  w.i32(std::numeric_limits<int32_t>::min());
  w.i64(-5);
  w.f32(-0.0f);
  w.f64(3.5);
  w.string("name");
  w.bytes(Bytes{1, 2});
  const float f[] = {0.25f, -8.0f, 65504.0f};
  w.f32_array(f);
  w.f16_array(f);
  const Bytes buf = w.take();

  Reader r(buf, "T");
  EXPECT_EQ(*r.u8("a"), 7);
  EXPECT_EQ(*r.u16("b"), 65535);
  EXPECT_EQ(*r.u32("c"), 0xDEADBEEFu);
  EXPECT_EQ(*r.u64("d"), 0x8000000000000001ull);
  EXPECT_EQ(*r.i32("e"), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(*r.i64("f"), -5);
  const float z = *r.f32("g");
  EXPECT_TRUE(z == 0.0f && std::signbit(z));
  EXPECT_EQ(*r.f64("h"), 3.5);
  EXPECT_EQ(*r.string("s", 100), "name");
  auto b = r.bytes("blob", 100);
  ASSERT_TRUE(b);
  EXPECT_EQ(Bytes(b->begin(), b->end()), (Bytes{1, 2}));
  std::vector<float> out;
  ASSERT_TRUE(r.f32_array("f32", 3, out));
  EXPECT_EQ(out, std::vector<float>(f, f + 3));
  ASSERT_TRUE(r.f16_array("f16", 3, out));
  EXPECT_EQ(out, std::vector<float>(f, f + 3));
  EXPECT_TRUE(r.at_end());
  EXPECT_TRUE(r.expect_end());
}

TEST(Codec, ReaderNeverReadsPastTheEnd) {
  const Bytes buf = {1, 2, 3};
  Reader r(buf, "CTX");
  auto v = r.u32("field_x");
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, ErrorCode::parse);
  EXPECT_NE(v.error().message.find("CTX: field_x: truncated"), std::string::npos) << v.error().message;
  EXPECT_NE(v.error().message.find("at byte 0"), std::string::npos) << v.error().message;
  // A failed read consumes nothing.
  EXPECT_EQ(r.offset(), 0u);
  EXPECT_EQ(*r.u16("ok"), 0x0201);
  EXPECT_FALSE(r.u16("short"));
  EXPECT_FALSE(r.u64("short"));
  EXPECT_FALSE(r.f64("short"));
  EXPECT_EQ(*r.u8("last"), 3);
  EXPECT_FALSE(r.u8("none"));
}

TEST(Codec, ReaderChecksLengthsAgainstLimitAndBytesLeft) {
  Writer w;
  w.u32(10);  // claims 10 bytes
  w.raw(Bytes{1, 2, 3});
  const Bytes buf = w.take();
  {
    Reader r(buf, "T");
    auto s = r.string("name", 5);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("exceeds the limit 5"), std::string::npos) << s.error().message;
  }
  {
    Reader r(buf, "T");
    auto s = r.string("name", 100);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("bytes left"), std::string::npos) << s.error().message;
  }
  {
    Writer huge;
    huge.u32(0xFFFFFFFFu);
    const Bytes hb = huge.take();
    Reader r(hb, "T");
    EXPECT_FALSE(r.bytes("blob", std::numeric_limits<size_t>::max()));
  }
}

TEST(Codec, ReaderCountChecksLimitAndMinimumSize) {
  Writer w;
  w.u32(4);
  w.raw(Bytes(15, 0));  // 4 elements of 4 bytes need 16
  const Bytes buf = w.take();
  {
    Reader r(buf, "T");
    auto n = r.count("n", 3, 4);
    ASSERT_FALSE(n);
    EXPECT_NE(n.error().message.find("exceeds the limit 3"), std::string::npos);
  }
  {
    Reader r(buf, "T");
    auto n = r.count("n", 100, 4);
    ASSERT_FALSE(n);
    EXPECT_NE(n.error().message.find("bytes left"), std::string::npos) << n.error().message;
  }
  {
    Reader r(buf, "T");
    auto n = r.count("n", 100, 3);  // 4 x 3 = 12 <= 15
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 4u);
  }
  {
    Writer big;
    big.u32(0xFFFFFFFFu);
    const Bytes bb = big.take();
    Reader r(bb, "T");
    EXPECT_FALSE(r.count("n", 0xFFFFFFFFu, 1));
  }
}

TEST(Codec, ReaderArraysCheckBeforeAllocating) {
  const Bytes buf(7, 0);
  Reader r(buf, "T");
  std::vector<float> f;
  EXPECT_FALSE(r.f32_array("x", 2, f));
  EXPECT_FALSE(r.f32_array("x", std::numeric_limits<size_t>::max() / 2, f));  // would overflow n * 4
  EXPECT_TRUE(f.empty());
  EXPECT_FALSE(r.f16_array("x", 4, f));
  std::vector<int32_t> i;
  EXPECT_FALSE(r.i32_array("x", 2, i));
  std::vector<uint32_t> u;
  EXPECT_FALSE(r.u32_array("x", std::numeric_limits<size_t>::max(), u));
  EXPECT_TRUE(r.f16_array("x", 3, f));
  EXPECT_EQ(f.size(), 3u);
  auto end = r.expect_end();
  ASSERT_FALSE(end);
  EXPECT_NE(end.error().message.find("1 trailing bytes"), std::string::npos) << end.error().message;
}

TEST(Codec, EveryFiniteHalfSurvivesF32AndBack) {
  // The F16 wire path decodes to F32 and a re-encode must give the same bits (decode is canonical).
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // Inf / NaN are rejected on the wire
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << h;
  }
}

TEST(Codec, CheckedArithmetic) {
  uint64_t out = 0;
  EXPECT_TRUE(checked_mul(1ull << 31, 1ull << 32, out));
  EXPECT_EQ(out, 1ull << 63);
  EXPECT_FALSE(checked_mul(1ull << 32, 1ull << 32, out));
  EXPECT_FALSE(checked_add(~0ull, 1, out));
  EXPECT_TRUE(checked_add(~0ull - 1, 1, out));
}

}  // namespace
}  // namespace ll::net
