// Helpers for the GGUF tests: a little-endian byte builder for hand-made (often broken) files,
// a temporary directory, a deep Value comparison and a "touch everything" walk for sanitizers.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"

namespace ll::gguf::test {

// Appends little-endian fields; every method returns *this for chaining.
struct Bytes {
  std::vector<uint8_t> b;

  Bytes& raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  template <class T>
  Bytes& put(T x) {
    return raw(&x, sizeof(x));
  }
  Bytes& u8(uint8_t x) { return put(x); }
  Bytes& u32(uint32_t x) { return put(x); }
  Bytes& u64(uint64_t x) { return put(x); }
  Bytes& str(std::string_view s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Bytes& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  Bytes& pad_to(size_t alignment) {
    while (b.size() % alignment != 0) b.push_back(0);
    return *this;
  }
  // "GGUF" | version | n_tensors | n_kv
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Bytes& kv_type(std::string_view key, ValueType t) {
    str(key);
    return u32(static_cast<uint32_t>(t));
  }
  Bytes& kv_u32(std::string_view key, uint32_t v) { return kv_type(key, ValueType::u32).u32(v); }
  Bytes& kv_str(std::string_view key, std::string_view v) { return kv_type(key, ValueType::string).str(v); }
  // name | n_dims | ne[] | type | offset
  Bytes& tensor(std::string_view name, const std::vector<uint64_t>& shape, uint32_t type, uint64_t offset) {
    str(name);
    u32(static_cast<uint32_t>(shape.size()));
    for (uint64_t d : shape) u64(d);
    u32(type);
    return u64(offset);
  }
  size_t size() const { return b.size(); }
};

inline Expected<File> parse(const Bytes& bytes) { return File::from_bytes(bytes.b, "test.gguf"); }
inline Expected<File> parse(const std::vector<uint8_t>& bytes) { return File::from_bytes(bytes, "test.gguf"); }

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "ll_gguf_" + std::to_string(::getpid()) + "_";
    if (info != nullptr) name += std::string(info->test_suite_name()) + "_" + info->name();
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Bitwise deep equality (so NaN payloads and -0.0 compare exactly).
inline bool same_value(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  return std::visit(
      [&b](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        const T& y = std::get<T>(b.v);
        if constexpr (std::is_same_v<T, Array>) {
          if (x.elem_type != y.elem_type || x.items.size() != y.items.size()) return false;
          for (size_t i = 0; i < x.items.size(); ++i) {
            if (!same_value(x.items[i], y.items[i])) return false;
          }
          return true;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return x == y;
        } else {
          return std::memcmp(&x, &y, sizeof(T)) == 0;
        }
      },
      a.v);
}

// Visit every parsed value and every tensor byte, so that ASan sees any bad pointer or length.
inline uint64_t touch_value(const Value& v) {
  uint64_t h = static_cast<uint64_t>(v.type());
  if (const auto* s = v.as_string()) {
    for (char c : *s) h = h * 31 + static_cast<uint8_t>(c);
  } else if (const auto* a = v.as_array()) {
    for (const auto& item : a->items) h = h * 31 + touch_value(item);
  } else {
    uint64_t u = 0;
    int64_t i = 0;
    double d = 0;
    if (v.as_u64(u)) h += u;
    if (v.as_i64(i)) h += static_cast<uint64_t>(i);
    if (v.as_f64(d)) h += d == d ? 1 : 2;
  }
  return h;
}

inline uint64_t touch_file(const File& f) {
  uint64_t h = f.version() + f.alignment() + f.data_offset();
  for (const auto& [key, value] : f.metadata()) {
    h += key.size() + touch_value(value);
    EXPECT_EQ(f.find(key), &value);
    (void)f.get_string(key);
    (void)f.get_u64(key);
    (void)f.get_f64(key);
    (void)f.get_bool(key);
    (void)f.get_string_array(key);
    (void)f.get_f32_array(key);
    (void)f.get_i64_array(key);
  }
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(f.find_tensor(t.name), &t);
    EXPECT_LE(t.shape.size(), k_max_dims);
    EXPECT_GT(t.n_bytes, 0u);
    for (uint64_t i = 0; i < t.n_bytes; ++i) h += t.data[i];
    h += t.n_rows();
  }
  return h;
}

}  // namespace ll::gguf::test

// The result is an error with this code whose message names the file, mentions `needle` and
// (for parse faults) gives a byte offset.
#define EXPECT_GGUF_FAULT(result, error_code, needle)                                              \
  do {                                                                                             \
    const auto& ll_r_ = (result);                                                                  \
    ASSERT_FALSE(ll_r_.has_value()) << "expected an error mentioning \"" << (needle) << "\"";      \
    EXPECT_EQ(ll_r_.error().code, (error_code)) << ll_r_.error().message;                          \
    EXPECT_NE(ll_r_.error().message.find(needle), std::string::npos) << ll_r_.error().message;     \
    EXPECT_EQ(ll_r_.error().message.rfind("test.gguf: ", 0), 0u) << ll_r_.error().message;         \
    EXPECT_NE(ll_r_.error().message.find("(at byte offset "), std::string::npos)                   \
        << ll_r_.error().message;                                                                  \
  } while (0)
