// Hand-made broken GGUF files: each must give a clear error naming the file and the fault.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace ll::gguf::test {
namespace {

constexpr uint64_t k_u64_max = std::numeric_limits<uint64_t>::max();
constexpr uint32_t k_f32 = 0, k_q8_0 = 8, k_q5_k = 13;

// A header with one F32 tensor [8] at offset 0 and no metadata; valid as is.
Bytes one_tensor(const std::vector<uint64_t>& shape = {8}, uint32_t type = k_f32, uint64_t offset = 0) {
  Bytes b;
  b.header(1, 0).tensor("w", shape, type, offset).pad_to(32);
  return b;
}

TEST(GgufMalformed, MinimalFilesAreValid) {
  Bytes b;
  b.header(0, 0);
  auto f = parse(b);
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_TRUE(f->tensors().empty());

  Bytes v2;
  v2.header(0, 1, 2).kv_str("general.name", "v2");
  auto f2 = parse(v2);
  ASSERT_TRUE(f2.has_value()) << f2.error().message;
  EXPECT_EQ(f2->version(), 2u);
  EXPECT_EQ(*f2->get_string("general.name"), "v2");

  Bytes t = one_tensor();
  t.zeros(32);
  auto ft = parse(t);
  ASSERT_TRUE(ft.has_value()) << ft.error().message;
  ASSERT_EQ(ft->tensors().size(), 1u);
  EXPECT_EQ(ft->data_offset(), 64u);
  EXPECT_EQ(ft->tensors()[0].n_bytes, 32u);
}

TEST(GgufMalformed, EmptyAndTinyFiles) {
  EXPECT_GGUF_FAULT(parse(Bytes{}), ErrorCode::parse, "truncated");
  Bytes b;
  b.raw("GGU", 3);
  EXPECT_GGUF_FAULT(parse(b), ErrorCode::parse, "truncated");
}

TEST(GgufMalformed, BadMagic) {
  Bytes b;
  b.raw("GGUX", 4).u32(3).u64(0).u64(0);
  EXPECT_GGUF_FAULT(parse(b), ErrorCode::parse, "magic");
  Bytes text;
  text.raw("hello world, not gguf at all", 28);
  EXPECT_GGUF_FAULT(parse(text), ErrorCode::parse, "magic");
  EXPECT_NE(parse(text).error().message.find("(at byte offset 0)"), std::string::npos);
}

TEST(GgufMalformed, UnsupportedVersions) {
  for (uint32_t v : {0u, 1u, 4u, 0xffffffffu}) {
    Bytes b;
    b.header(0, 0, v);
    EXPECT_GGUF_FAULT(parse(b), ErrorCode::unsupported, "version " + std::to_string(v));
    EXPECT_NE(parse(b).error().message.find("(at byte offset 4)"), std::string::npos);
  }
  Bytes be;
  be.raw("GGUF", 4).raw("\0\0\0\3", 4).u64(0).u64(0);
  EXPECT_GGUF_FAULT(parse(be), ErrorCode::unsupported, "big-endian");
}

TEST(GgufMalformed, TruncatedHeader) {
  Bytes b;
  b.header(0, 0);
  for (size_t n = 0; n < b.size(); ++n) {
    std::vector<uint8_t> prefix(b.b.begin(), b.b.begin() + static_cast<long>(n));
    EXPECT_GGUF_FAULT(parse(prefix), ErrorCode::parse, "truncated");
  }
}

TEST(GgufMalformed, CountsPastTheEnd) {
  Bytes kv;
  kv.header(0, uint64_t{1} << 62);
  EXPECT_GGUF_FAULT(parse(kv), ErrorCode::parse, "past the end");
  Bytes kv_max;
  kv_max.header(0, k_u64_max);
  EXPECT_GGUF_FAULT(parse(kv_max), ErrorCode::parse, "metadata entries");
  Bytes t;
  t.header(k_u64_max, 0);
  EXPECT_GGUF_FAULT(parse(t), ErrorCode::parse, "tensors, which would run past the end");
  // Claims more entries than there are, each small enough to pass the up-front bound.
  Bytes some;
  some.header(0, 3).kv_u32("a", 1);
  some.zeros(30);
  EXPECT_FALSE(parse(some).has_value());
}

TEST(GgufMalformed, TruncatedMetadata) {
  Bytes b;
  b.header(0, 2).kv_str("general.name", "abc").kv_u32("x.count", 7);
  ASSERT_TRUE(parse(b).has_value());
  for (size_t n = 24; n < b.size(); ++n) {
    std::vector<uint8_t> prefix(b.b.begin(), b.b.begin() + static_cast<long>(n));
    auto r = parse(prefix);
    ASSERT_FALSE(r.has_value()) << n;
    EXPECT_EQ(r.error().code, ErrorCode::parse);
    const std::string& m = r.error().message;
    EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("past the end") != std::string::npos) << m;
  }
}

TEST(GgufMalformed, StringLengthPastTheEnd) {
  Bytes key;
  key.header(0, 1).u64(1000).raw("abc", 3);
  EXPECT_GGUF_FAULT(parse(key), ErrorCode::parse, "past the end");
  Bytes huge_key;
  huge_key.header(0, 1).u64(k_u64_max).zeros(16);
  EXPECT_GGUF_FAULT(parse(huge_key), ErrorCode::parse, "length 18446744073709551615 runs past the end");
  Bytes value;
  value.header(0, 1).kv_type("general.name", ValueType::string).u64(uint64_t{1} << 40).raw("x", 1);
  EXPECT_GGUF_FAULT(parse(value), ErrorCode::parse, "past the end");
  EXPECT_NE(parse(value).error().message.find("general.name"), std::string::npos);
  Bytes name;
  name.header(1, 0).u64(999).zeros(40);
  EXPECT_GGUF_FAULT(parse(name), ErrorCode::parse, "past the end");
}

TEST(GgufMalformed, ArrayLengthPastTheEnd) {
  // Every element needs at least one byte (a string 8, a nested array 12): counts above that are
  // rejected before anything is allocated, even when the count is absurd.
  struct Case {
    ValueType elem;
    uint64_t count;
    size_t bytes_after;
  };
  for (const Case& c : {Case{ValueType::u8, 100, 99}, Case{ValueType::u32, 25, 99}, Case{ValueType::f64, 13, 99},
                        Case{ValueType::string, 13, 99}, Case{ValueType::array, 9, 99},
                        Case{ValueType::u8, k_u64_max, 64}, Case{ValueType::string, uint64_t{1} << 61, 64},
                        Case{ValueType::array, uint64_t{1} << 60, 64}}) {
    Bytes b;
    b.header(0, 1).kv_type("arr", ValueType::array).u32(static_cast<uint32_t>(c.elem)).u64(c.count);
    b.zeros(c.bytes_after);
    EXPECT_GGUF_FAULT(parse(b), ErrorCode::parse, "past the end");
  }
  // A count that fits the up-front bound but whose elements do not.
  Bytes strings;
  strings.header(0, 1).kv_type("arr", ValueType::array).u32(static_cast<uint32_t>(ValueType::string)).u64(4);
  strings.str("ok").u64(500).zeros(20);
  EXPECT_GGUF_FAULT(parse(strings), ErrorCode::parse, "past the end");
}

TEST(GgufMalformed, UnknownValueTypes) {
  for (uint32_t t : {13u, 100u, 0xffffffffu}) {
    Bytes b;
    b.header(0, 1).str("k").u32(t).zeros(16);
    EXPECT_GGUF_FAULT(parse(b), ErrorCode::parse, "key 'k' has unknown value type " + std::to_string(t));
    Bytes arr;
    arr.header(0, 1).kv_type("k", ValueType::array).u32(t).u64(1).zeros(16);
    EXPECT_GGUF_FAULT(parse(arr), ErrorCode::parse, "key 'k' has unknown array element type " + std::to_string(t));
  }
}

TEST(GgufMalformed, BoolOutOfRange) {
  Bytes b;
  b.header(0, 1).kv_type("flag", ValueType::boolean).u8(2);
  EXPECT_GGUF_FAULT(parse(b), ErrorCode::parse, "bool");
}

TEST(GgufMalformed, NestedArrayDepth) {
  // depth arrays around one i32; depth 4 is allowed, 5 is not.
  const auto nested = [](size_t depth) {
    Bytes b;
    b.header(0, 1).kv_type("nest", ValueType::array);
    for (size_t i = 1; i < depth; ++i) b.u32(static_cast<uint32_t>(ValueType::array)).u64(1);
    b.u32(static_cast<uint32_t>(ValueType::i32)).u64(1).u32(42);
    return b;
  };
  auto ok = parse(nested(k_max_array_depth));
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  const Value* v = ok->find("nest");
  ASSERT_NE(v, nullptr);
  for (size_t i = 1; i < k_max_array_depth; ++i) {
    ASSERT_NE(v->as_array(), nullptr);
    v = &v->as_array()->items.at(0);
  }
  ASSERT_NE(v->as_array(), nullptr);
  EXPECT_EQ(std::get<int32_t>(v->as_array()->items.at(0).v), 42);
  EXPECT_GGUF_FAULT(parse(nested(k_max_array_depth + 1)), ErrorCode::parse, "nested");
  EXPECT_GGUF_FAULT(parse(nested(50)), ErrorCode::parse, "nested");
}

TEST(GgufMalformed, DuplicateKeysAndTensors) {
  Bytes k;
  k.header(0, 2).kv_u32("a.b", 1).kv_str("a.b", "again");
  EXPECT_GGUF_FAULT(parse(k), ErrorCode::parse, "duplicate key 'a.b'");
  Bytes t;
  t.header(2, 0).tensor("w", {8}, k_f32, 0).tensor("w", {8}, k_f32, 32).pad_to(32).zeros(64);
  EXPECT_GGUF_FAULT(parse(t), ErrorCode::parse, "duplicate tensor 'w'");
}

TEST(GgufMalformed, Alignment) {
  for (uint32_t a : {0u, 3u, 48u, 0xffffffffu}) {
    Bytes b;
    b.header(0, 1).kv_u32("general.alignment", a);
    EXPECT_GGUF_FAULT(parse(b), ErrorCode::parse, "not a power of two");
    EXPECT_NE(parse(b).error().message.find("general.alignment"), std::string::npos);
  }
  Bytes wrong_type;
  wrong_type.header(0, 1).kv_type("general.alignment", ValueType::u64).u64(64);
  EXPECT_GGUF_FAULT(parse(wrong_type), ErrorCode::parse, "expected u32");

  // A valid override moves the data section and the tensor offsets.
  Bytes ok;
  ok.header(2, 1).kv_u32("general.alignment", 64).tensor("a", {8}, k_f32, 0).tensor("b", {8}, k_f32, 64);
  const size_t header_end = ok.size();
  ok.pad_to(64).zeros(96);
  auto f = parse(ok);
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset(), (header_end + 63) / 64 * 64);
  EXPECT_EQ(f->tensors()[1].data - f->tensors()[0].data, 64);

  Bytes mis;
  mis.header(1, 1).kv_u32("general.alignment", 64).tensor("a", {8}, k_f32, 32).pad_to(64).zeros(128);
  EXPECT_GGUF_FAULT(parse(mis), ErrorCode::parse, "alignment 64");
}

TEST(GgufMalformed, TruncatedTensorTable) {
  Bytes b = one_tensor();
  b.zeros(32);
  const size_t table_end = 24 + 8 + 1 + 4 + 8 + 4 + 8;
  for (size_t n = 24; n < table_end; ++n) {
    std::vector<uint8_t> prefix(b.b.begin(), b.b.begin() + static_cast<long>(n));
    auto r = parse(prefix);
    ASSERT_FALSE(r.has_value()) << n;
    EXPECT_EQ(r.error().code, ErrorCode::parse);
    const std::string& m = r.error().message;
    EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("past the end") != std::string::npos) << m;
  }
}

TEST(GgufMalformed, Dimensions) {
  Bytes five;
  five.header(1, 0).tensor("w", {1, 1, 1, 1, 1}, k_f32, 0).pad_to(32).zeros(32);
  EXPECT_GGUF_FAULT(parse(five), ErrorCode::parse, "5 dimensions");
  Bytes many;
  many.header(1, 0).str("w").u32(0xffffffffu).zeros(64);
  EXPECT_GGUF_FAULT(parse(many), ErrorCode::parse, "dimensions");
  Bytes none;
  none.header(1, 0).tensor("w", {}, k_f32, 0).pad_to(32).zeros(32);
  EXPECT_GGUF_FAULT(parse(none), ErrorCode::parse, "0 dimensions");
  EXPECT_GGUF_FAULT(parse(one_tensor({8, 0})), ErrorCode::parse, "dimension 1 of size 0");
  EXPECT_GGUF_FAULT(parse(one_tensor({uint64_t{1} << 63})), ErrorCode::parse, "absurd");
  EXPECT_GGUF_FAULT(parse(one_tensor({k_u64_max})), ErrorCode::parse, "absurd");
}

TEST(GgufMalformed, SizeOverflows) {
  // Element count product.
  EXPECT_GGUF_FAULT(parse(one_tensor({uint64_t{1} << 32, uint64_t{1} << 32})), ErrorCode::parse,
                    "element count overflows");
  EXPECT_GGUF_FAULT(parse(one_tensor({1u << 16, 1u << 16, 1u << 16, 1u << 16})), ErrorCode::parse,
                    "element count overflows");
  // Byte size: 2^62 F32 elements are 2^64 bytes.
  EXPECT_GGUF_FAULT(parse(one_tensor({uint64_t{1} << 62})), ErrorCode::parse, "byte size overflows");
  EXPECT_GGUF_FAULT(parse(one_tensor({uint64_t{1} << 31, uint64_t{1} << 31})), ErrorCode::parse,
                    "byte size overflows");
  // offset + size.
  EXPECT_GGUF_FAULT(parse(one_tensor({8}, k_f32, k_u64_max - 31)), ErrorCode::parse, "overflows");
  // Large but representable sizes are simply past the end.
  EXPECT_GGUF_FAULT(parse(one_tensor({uint64_t{1} << 40})), ErrorCode::parse, "past the end");
}

TEST(GgufMalformed, TensorTypes) {
  auto q5 = parse(one_tensor({256}, k_q5_k));
  EXPECT_GGUF_FAULT(q5, ErrorCode::unsupported, "tensor 'w' has type Q5_K (13), which is not supported");
  EXPECT_GGUF_FAULT(parse(one_tensor({8}, 3)), ErrorCode::unsupported, "type Q4_1 (3)");
  EXPECT_GGUF_FAULT(parse(one_tensor({8}, 200)), ErrorCode::parse, "unknown type id 200");
  EXPECT_GGUF_FAULT(parse(one_tensor({8}, 0xffffffffu)), ErrorCode::parse, "type");
}

TEST(GgufMalformed, RowNotMultipleOfBlock) {
  EXPECT_GGUF_FAULT(parse(one_tensor({33, 2}, k_q8_0)), ErrorCode::parse,
                    "row length 33 is not a multiple of the Q8_0 block size 32");
  EXPECT_GGUF_FAULT(parse(one_tensor({128}, 12)), ErrorCode::parse, "Q4_K block size 256");
}

TEST(GgufMalformed, TensorDataBounds) {
  // Data section present but one byte short.
  Bytes short_data = one_tensor({8});
  short_data.zeros(31);
  EXPECT_GGUF_FAULT(parse(short_data), ErrorCode::parse, "past the end");
  // No data section at all (file ends right after the tensor table).
  Bytes no_data;
  no_data.header(1, 0).tensor("w", {8}, k_f32, 0);
  EXPECT_GGUF_FAULT(parse(no_data), ErrorCode::parse, "past the end");
  // Offset beyond the end.
  Bytes far = one_tensor({8}, k_f32, 1u << 20);
  far.zeros(64);
  EXPECT_GGUF_FAULT(parse(far), ErrorCode::parse, "past the end");
  // Misaligned offset.
  Bytes mis = one_tensor({8}, k_f32, 4);
  mis.zeros(64);
  EXPECT_GGUF_FAULT(parse(mis), ErrorCode::parse, "not a multiple of the alignment 32");
}

TEST(GgufMalformed, HostileNamesAreEscapedInMessages) {
  const std::string key = std::string("bad\n\x01key") + std::string(500, 'z');
  Bytes b;
  b.header(0, 1).str(key).u32(99);
  auto r = parse(b);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message.find('\n'), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("bad\\x0a\\x01key"), std::string::npos) << r.error().message;
  EXPECT_LT(r.error().message.size(), 400u);
}

TEST(GgufMalformed, OpenErrors) {
  auto missing = File::open("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, ErrorCode::io);
  EXPECT_NE(missing.error().message.find("/nonexistent/dir/model.gguf"), std::string::npos);

  TempDir dir;
  auto directory = File::open(dir.path().string());
  ASSERT_FALSE(directory.has_value());
  EXPECT_EQ(directory.error().code, ErrorCode::io);
  EXPECT_NE(directory.error().message.find("not a regular file"), std::string::npos);

  const std::string empty = dir.file("empty.gguf");
  { std::ofstream out(empty); }
  auto e = File::open(empty);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::parse);
  EXPECT_NE(e.error().message.find(empty + ": truncated"), std::string::npos) << e.error().message;
}

// ---------------------------------------------------------------------------------------------
// Typed getters

Bytes getter_file() {
  Bytes b;
  b.header(0, 14);
  b.kv_type("u8", ValueType::u8).u8(200);
  b.kv_type("i8.neg", ValueType::i8).u8(0xff);  // -1
  b.kv_type("i32", ValueType::i32).u32(7);
  b.kv_type("u64", ValueType::u64).u64(k_u64_max);
  b.kv_type("f32", ValueType::f32).put(1.5f);
  b.kv_type("f64", ValueType::f64).put(-2.25);
  b.kv_type("bool", ValueType::boolean).u8(1);
  b.kv_str("str", "hello");
  b.kv_type("strs", ValueType::array).u32(static_cast<uint32_t>(ValueType::string)).u64(2).str("a").str("bc");
  b.kv_type("f32s", ValueType::array).u32(static_cast<uint32_t>(ValueType::f32)).u64(2).put(0.5f).put(-1.0f);
  b.kv_type("i32s", ValueType::array).u32(static_cast<uint32_t>(ValueType::i32)).u64(3).u32(1).u32(0xffffffffu).u32(3);
  b.kv_type("u64s", ValueType::array).u32(static_cast<uint32_t>(ValueType::u64)).u64(2).u64(5).u64(k_u64_max);
  b.kv_type("u8s", ValueType::array).u32(static_cast<uint32_t>(ValueType::u8)).u64(2).u8(1).u8(255);
  b.kv_type("bools", ValueType::array).u32(static_cast<uint32_t>(ValueType::boolean)).u64(1).u8(0);
  return b;
}

#define EXPECT_GETTER_FAULT(result, want_code, needle)                                             \
  do {                                                                                        \
    const auto& g_r_ = (result);                                                              \
    ASSERT_FALSE(g_r_.has_value());                                                           \
    EXPECT_EQ(g_r_.error().code, (want_code)) << g_r_.error().message;                             \
    EXPECT_NE(g_r_.error().message.find(needle), std::string::npos) << g_r_.error().message;  \
    EXPECT_EQ(g_r_.error().message.rfind("test.gguf: ", 0), 0u) << g_r_.error().message;      \
  } while (0)

TEST(GgufGetters, Scalars) {
  auto f = parse(getter_file());
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(*f->get_u64("u8"), 200u);
  EXPECT_EQ(*f->get_u64("i32"), 7u);
  EXPECT_EQ(*f->get_u64("u64"), k_u64_max);
  EXPECT_GETTER_FAULT(f->get_u64("i8.neg"), ErrorCode::parse, "key 'i8.neg' is -1");
  EXPECT_GETTER_FAULT(f->get_u64("f32"), ErrorCode::parse, "key 'f32' has type f32");
  EXPECT_GETTER_FAULT(f->get_u64("str"), ErrorCode::parse, "has type string");
  EXPECT_GETTER_FAULT(f->get_u64("bool"), ErrorCode::parse, "has type bool");
  EXPECT_GETTER_FAULT(f->get_u64("missing"), ErrorCode::not_found, "key 'missing' not found");

  EXPECT_EQ(*f->get_f64("f32"), 1.5);
  EXPECT_EQ(*f->get_f64("f64"), -2.25);
  EXPECT_EQ(*f->get_f64("i8.neg"), -1.0);
  EXPECT_EQ(*f->get_f64("u8"), 200.0);
  EXPECT_GETTER_FAULT(f->get_f64("str"), ErrorCode::parse, "has type string");
  EXPECT_GETTER_FAULT(f->get_f64("f32s"), ErrorCode::parse, "has type array of f32");

  EXPECT_EQ(*f->get_bool("bool"), true);
  EXPECT_GETTER_FAULT(f->get_bool("u8"), ErrorCode::parse, "has type u8, expected bool");

  EXPECT_EQ(*f->get_string("str"), "hello");
  EXPECT_GETTER_FAULT(f->get_string("u64"), ErrorCode::parse, "key 'u64' has type u64, expected string");
  EXPECT_GETTER_FAULT(f->get_string("nope"), ErrorCode::not_found, "not found");

  int64_t i = 0;
  uint64_t u = 0;
  EXPECT_FALSE(f->find("u64")->as_i64(i));
  EXPECT_TRUE(f->find("i8.neg")->as_i64(i));
  EXPECT_EQ(i, -1);
  EXPECT_TRUE(f->find("bool")->as_u64(u));
  EXPECT_EQ(u, 1u);
}

TEST(GgufGetters, Arrays) {
  auto f = parse(getter_file());
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(*f->get_string_array("strs"), (std::vector<std::string>{"a", "bc"}));
  EXPECT_GETTER_FAULT(f->get_string_array("f32s"), ErrorCode::parse, "key 'f32s' has type array of f32");
  EXPECT_GETTER_FAULT(f->get_string_array("str"), ErrorCode::parse, "has type string");

  EXPECT_EQ(*f->get_f32_array("f32s"), (std::vector<float>{0.5f, -1.0f}));
  EXPECT_EQ(*f->get_f32_array("i32s"), (std::vector<float>{1.0f, -1.0f, 3.0f}));
  EXPECT_EQ(*f->get_f32_array("u8s"), (std::vector<float>{1.0f, 255.0f}));
  EXPECT_GETTER_FAULT(f->get_f32_array("strs"), ErrorCode::parse, "array of string");
  EXPECT_GETTER_FAULT(f->get_f32_array("bools"), ErrorCode::parse, "array of bool");
  EXPECT_GETTER_FAULT(f->get_f32_array("f32"), ErrorCode::parse, "has type f32");

  EXPECT_EQ(*f->get_i64_array("i32s"), (std::vector<int64_t>{1, -1, 3}));
  EXPECT_EQ(*f->get_i64_array("u8s"), (std::vector<int64_t>{1, 255}));
  EXPECT_GETTER_FAULT(f->get_i64_array("u64s"), ErrorCode::parse, "element 1 does not fit");
  EXPECT_GETTER_FAULT(f->get_i64_array("f32s"), ErrorCode::parse, "array of f32");
  EXPECT_GETTER_FAULT(f->get_i64_array("gone"), ErrorCode::not_found, "not found");
}

}  // namespace
}  // namespace ll::gguf::test
