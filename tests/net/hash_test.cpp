#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "net/sha256.h"
#include "net/xxh64.h"

namespace ll::net {
namespace {

// FIPS 180-2 / NIST CAVP example vectors.
TEST(Sha256, NistVectors) {
  EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(to_hex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),  // 448 bits
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(
      to_hex(sha256(
          "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopq"
          "rsmnopqrstnopqrstu")),  // 896 bits
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(to_hex(sha256(std::string(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Lengths around the padding boundaries (55/56 bytes: the length fits / spills into a new block),
// against Python's hashlib.
TEST(Sha256, PaddingBoundaries) {
  const std::pair<size_t, const char*> cases[] = {
      {55, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072"},
      {56, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e"},
      {63, "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2"},
      {64, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c"},
      {65, "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9"},
      {119, "000b48d4edf0fa7bee3c6236ecd2785baa5db4eeb8bb54341b029e0d9fa5fb0c"},
      {120, "13f05a0b594787f5ecd315edc96141bd3243203d1b7d4f0836f37308b276ba98"},
  };
  for (const auto& [n, hex] : cases) EXPECT_EQ(to_hex(sha256(std::string(n, 'x'))), hex) << n;
}

TEST(Sha256, IncrementalEqualsOneShot) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  const Sha256Digest whole = sha256(data);
  for (size_t split : {0, 1, 55, 63, 64, 65, 128, 999, 1000}) {
    Sha256 h;
    h.update(std::span(data).first(split));
    h.update(std::span(data).subspan(split));
    EXPECT_EQ(h.finish(), whole) << split;
  }
  // Byte by byte, and finish() resets.
  Sha256 h;
  for (uint8_t b : data) h.update(std::span(&b, 1));
  EXPECT_EQ(h.finish(), whole);
  EXPECT_EQ(to_hex(h.finish()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

// 64 MiB + 1 bytes (so the total is not a multiple of the 64-byte block), hashed in one call and in
// uneven chunks, against Python's hashlib. Prints the one-shot throughput; asserts nothing on time.
TEST(Sha256, LargeBufferChunkedEqualsOneShot) {
  const size_t n = (size_t{64} << 20) + 1;
  std::vector<uint8_t> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  const char* want = "d4ce9a7e16fa1865ddb88ec2738933b2b476b06142db2d1506468c65f8228d08";

  const auto t0 = std::chrono::steady_clock::now();
  const Sha256Digest whole = sha256(data);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(to_hex(whole), want);
  std::printf("[ info     ] sha256 one-shot: %.0f MB/s over %zu bytes\n", n / 1e6 / seconds, n);

  Sha256 h;
  const size_t chunk_sizes[] = {1, 63, 4096, 1 << 20, 3, 65, (size_t{7} << 20) + 13};
  size_t offset = 0;
  for (size_t k = 0; offset < n; ++k) {
    const size_t take = std::min(chunk_sizes[k % std::size(chunk_sizes)], n - offset);
    h.update(std::span(data).subspan(offset, take));
    offset += take;
  }
  EXPECT_EQ(h.finish(), whole);
}

// A copy continues from the same intermediate state; a moved-from object acts as a fresh one.
TEST(Sha256, CopyAndMove) {
  const std::string prefix(100, 'p');
  Sha256 a;
  a.update(prefix);
  Sha256 b = a;  // copy
  a.update("one");
  b.update("two");
  EXPECT_EQ(a.finish(), sha256(prefix + "one"));
  EXPECT_EQ(b.finish(), sha256(prefix + "two"));

  Sha256 c;
  c.update("xyz");
  c = a;  // copy-assign over progress: c now holds a's (reset) state
  c.update("abc");
  EXPECT_EQ(to_hex(c.finish()), to_hex(sha256("abc")));

  Sha256 d;
  d.update(prefix);
  Sha256 e = std::move(d);
  e.update("!");
  EXPECT_EQ(e.finish(), sha256(prefix + "!"));
  d.update("abc");  // NOLINT(bugprone-use-after-move): moved-from is defined to be fresh
  EXPECT_EQ(d.finish(), sha256("abc"));

  Sha256 f;
  f.update("zzz");
  f = std::move(e);
  f.update("abc");
  EXPECT_EQ(f.finish(), sha256("abc"));
  Sha256 g = d;  // copying a used-then-finished object
  EXPECT_EQ(to_hex(g.finish()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 moved_from;
  Sha256 sink = std::move(moved_from);
  Sha256 copy_of_moved_from = moved_from;  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(copy_of_moved_from.finish(), sha256(""));
  sink = moved_from;  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(sink.finish(), sha256(""));
}

// XXH64 reference values published with xxHash and its ports (seed 0 unless given).
TEST(Xxh64, ReferenceVectors) {
  EXPECT_EQ(xxh64(""), 0xEF46DB3751D8E999ull);
  EXPECT_EQ(xxh64("a"), 0xD24EC4F1A98C6E5Bull);
  EXPECT_EQ(xxh64("abc"), 0x44BC2CF5AD770999ull);
  EXPECT_EQ(xxh64("ABC"), 0xE66AE7354FCFEE98ull);
  EXPECT_EQ(xxh64("xxhash"), 0x32DD38952C4BC720ull);
  EXPECT_EQ(xxh64("", 0x1234567890ABCDEFull), 0xA2F5C44D0F46C872ull);
  // 71 bytes: the 32-byte stripe loop, the 8-byte tail loop and the single-byte tail.
  EXPECT_EQ(
      xxh64("This code is derived from software contributed to The DragonFly Project", 0x4D617474446C6C6Eull),
      0x103C241EEDDC8D32ull);
}

TEST(Xxh64, SensitiveToEveryByte) {
  std::vector<uint8_t> data(100, 0);
  const uint64_t base = xxh64(data);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = 1;
    EXPECT_NE(xxh64(data), base) << i;
    data[i] = 0;
  }
}

}  // namespace
}  // namespace ll::net
