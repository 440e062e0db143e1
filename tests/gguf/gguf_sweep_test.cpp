// Truncation and corruption sweeps: every prefix and many corrupted variants of a valid file must
// parse to an error or a valid File, never crash, hang or allocate wildly (run under ASan+UBSan).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "common/shared_files.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace ll::gguf::test {
namespace {

// A small file with every value type, nested arrays, a custom alignment and several tensors.
std::vector<uint8_t> small_valid_file() {
  TempDir dir;
  Writer w;
  w.alignment = 16;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_i32("i32", -3);
  w.set_f32("f32", 0.5f);
  w.set_bool("flag", true);
  w.set_u64("u64", 1234567890123ull);
  w.set("i8", Value{int8_t{-1}});
  w.set("u16", Value{uint16_t{7}});
  w.set("f64", Value{2.5});
  w.set("tokens", make_string_array({"a", "bc", "", "def"}));
  const float f[] = {1.0f, 2.0f};
  w.set("scores", make_f32_array(f));
  Value inner = Value{Array{ValueType::i16, {Value{int16_t{1}}, Value{int16_t{2}}}}};
  w.set("nested", Value{Array{ValueType::array, {inner, inner}}});
  std::vector<uint8_t> data(34 * 2, 0x5a);
  EXPECT_TRUE(w.add_tensor_bytes("q", DType::Q8_0, {32, 2}, data));
  EXPECT_TRUE(w.add_tensor_bytes("n", DType::F32, {3}, std::span<const uint8_t>(data.data(), 12)));
  EXPECT_TRUE(w.add_tensor_bytes("h", DType::F16, {2, 2}, std::span<const uint8_t>(data.data(), 8)));
  const std::string path = dir.file("small.gguf");
  auto r = w.write(path);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return read_all(path);
}

// Parse; if it succeeds, walk everything. Returns whether it parsed.
bool parse_and_touch(const std::vector<uint8_t>& bytes) {
  auto f = File::from_bytes(bytes, "test.gguf");
  if (!f) {
    // Every error names the file.
    EXPECT_EQ(f.error().message.rfind("test.gguf: ", 0), 0u) << f.error().message;
    return false;
  }
  touch_file(*f);
  return true;
}

TEST(GgufSweep, EveryPrefix) {
  const auto file = small_valid_file();
  ASSERT_GT(file.size(), 200u);
  ASSERT_TRUE(parse_and_touch(file));
  size_t n_ok = 0;
  for (size_t n = 0; n < file.size(); ++n) {
    std::vector<uint8_t> prefix(file.begin(), file.begin() + static_cast<long>(n));
    if (parse_and_touch(prefix)) ++n_ok;
  }
  // Only cuts inside the final tensor's padding can still be valid.
  EXPECT_LT(n_ok, 16u);
}

TEST(GgufSweep, EverySingleByteCorruption) {
  const auto file = small_valid_file();
  size_t n_ok = 0;
  for (size_t i = 0; i < file.size(); ++i) {
    for (uint8_t mode = 0; mode < 6; ++mode) {
      auto bad = file;
      switch (mode) {
        case 0: bad[i] ^= 0xff; break;
        case 1: bad[i] = 0; break;
        case 2: bad[i] = 0x80; break;
        case 3: bad[i] = static_cast<uint8_t>(bad[i] + 1); break;
        case 4: bad[i] = static_cast<uint8_t>(bad[i] - 1); break;
        default: bad[i] = 0x7f; break;
      }
      if (parse_and_touch(bad)) ++n_ok;
    }
  }
  EXPECT_GT(n_ok, 0u);  // corruptions of tensor data and string bytes stay valid
}

TEST(GgufSweep, RandomMultiByteCorruption) {
  const auto file = small_valid_file();
  std::mt19937_64 rng(12345);
  for (int iter = 0; iter < 4000; ++iter) {
    auto bad = file;
    const int n_edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < n_edits; ++e) {
      const size_t at = rng() % bad.size();
      switch (rng() % 4) {
        case 0: bad[at] = static_cast<uint8_t>(rng()); break;
        case 1: {  // an absurd 64-bit field
          const uint64_t v = (rng() % 2) ? ~uint64_t{0} - (rng() % 64) : uint64_t{1} << (rng() % 64);
          for (size_t k = 0; k < 8 && at + k < bad.size(); ++k) bad[at + k] = static_cast<uint8_t>(v >> (8 * k));
          break;
        }
        case 2: bad.resize(at); break;
        default: bad.insert(bad.begin() + static_cast<long>(at), static_cast<uint8_t>(rng())); break;
      }
      if (bad.empty()) break;
    }
    parse_and_touch(bad);
  }
}

// The header region of a real file, cut at a dense sample of lengths.
TEST(GgufSweep, RealFilePrefixes) {
  const std::string path = ll::test::shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(path);
  const auto file = read_all(path);
  auto full = File::from_bytes(file, "test.gguf");
  ASSERT_TRUE(full.has_value());
  const size_t header_end = static_cast<size_t>(full->data_offset());
  for (size_t n = 0; n < header_end + 64; n += (n < 256 ? 1 : 13)) {
    std::vector<uint8_t> prefix(file.begin(), file.begin() + static_cast<long>(n));
    EXPECT_FALSE(parse_and_touch(prefix)) << n;
  }
}

}  // namespace
}  // namespace ll::gguf::test
