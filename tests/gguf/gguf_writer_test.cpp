// Writer round trips and writer error handling.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <string>

#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace ll::gguf::test {
namespace {

constexpr char k_odd_string[] = "nul\0inside, \xc3\xbc" "n\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9";
const std::string& odd_string() {
  static const std::string s(k_odd_string, sizeof(k_odd_string) - 1);
  return s;
}

Value array_of(ValueType elem, std::vector<Value> items) { return Value{Array{elem, std::move(items)}}; }

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

struct TensorSpec {
  std::string name;
  DType type;
  std::vector<uint64_t> shape;
  size_t n_bytes;
};

// Every value type, edge values, nested arrays; and tensors of every dtype we read.
void fill_writer(Writer& w, const std::vector<TensorSpec>& specs) {
  w.set("general.architecture", Value{std::string("llama")});
  w.set("u8", Value{uint8_t{255}});
  w.set("i8", Value{int8_t{-128}});
  w.set("u16", Value{uint16_t{65535}});
  w.set("i16", Value{int16_t{-32768}});
  w.set_u32("u32", 0xfffffffeu);
  w.set_i32("i32", std::numeric_limits<int32_t>::min());
  w.set_f32("f32", -0.0f);
  w.set_bool("bool.true", true);
  w.set_bool("bool.false", false);
  w.set_string("string", odd_string());
  w.set_string("string.empty", "");
  w.set_u64("u64", std::numeric_limits<uint64_t>::max());
  w.set("i64", Value{std::numeric_limits<int64_t>::min()});
  w.set("f64", Value{3.141592653589793});
  w.set("f32.nan", Value{std::numeric_limits<float>::quiet_NaN()});
  w.set("arr.u8", array_of(ValueType::u8, {Value{uint8_t{1}}, Value{uint8_t{2}}}));
  w.set("arr.empty", array_of(ValueType::u32, {}));
  w.set("arr.strings", make_string_array({"<unk>", "", "▁the"}));
  const float scores[] = {0.0f, -1.5f, 2.25f};
  w.set("arr.f32", make_f32_array(scores));
  const int32_t types[] = {2, 3, 1};
  w.set("arr.i32", make_i32_array(types));
  w.set("arr.bool", array_of(ValueType::boolean, {Value{true}, Value{false}}));
  w.set("arr.f64", array_of(ValueType::f64, {Value{1e300}}));
  w.set("arr.i64", array_of(ValueType::i64, {Value{int64_t{-5}}}));
  // array of arrays of arrays of arrays of i16 (depth 4, the maximum)
  Value leaf = array_of(ValueType::i16, {Value{int16_t{-7}}, Value{int16_t{8}}});
  Value d3 = array_of(ValueType::array, {leaf, array_of(ValueType::i16, {})});
  Value d2 = array_of(ValueType::array, {d3});
  w.set("arr.nested", array_of(ValueType::array, {d2, array_of(ValueType::array, {})}));
  w.set("arr.nested.strings",
        array_of(ValueType::array, {make_string_array({"a", "b"}), make_string_array({})}));
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    auto data = random_bytes(s.n_bytes, static_cast<uint32_t>(i + 1));
    ASSERT_TRUE(w.add_tensor_bytes(s.name, s.type, s.shape, data).has_value()) << s.name;
  }
}

const std::vector<TensorSpec>& specs() {
  static const std::vector<TensorSpec> s = {
      {"f32", DType::F32, {4, 3}, 4 * 12},
      {"f16", DType::F16, {8}, 16},
      {"bf16", DType::BF16, {2, 2, 2, 2}, 32},
      {"q8_0", DType::Q8_0, {64, 2}, 34 * 4},
      {"q4_0", DType::Q4_0, {32, 3}, 18 * 3},
      {"q4_k", DType::Q4_K, {256}, 144},
      {"q6_k", DType::Q6_K, {512, 1, 2}, 210 * 4},
  };
  return s;
}

void expect_round_trip(const Writer& w, const File& f, const std::vector<TensorSpec>& s) {
  // Metadata, in insertion order (plus general.alignment at the end when it was added).
  ASSERT_GE(f.metadata().size(), 26u);
  (void)w;
  for (const auto& [key, value] : f.metadata()) {
    const Value* again = f.find(key);
    ASSERT_NE(again, nullptr) << key;
    EXPECT_TRUE(same_value(*again, value)) << key;
  }
  EXPECT_EQ(f.metadata()[0].first, "general.architecture");
  EXPECT_EQ(f.metadata()[1].first, "u8");
  EXPECT_EQ(*f.get_string("general.architecture"), "llama");
  EXPECT_EQ(std::get<uint8_t>(f.find("u8")->v), 255);
  EXPECT_EQ(std::get<int8_t>(f.find("i8")->v), -128);
  EXPECT_EQ(std::get<uint16_t>(f.find("u16")->v), 65535);
  EXPECT_EQ(std::get<int16_t>(f.find("i16")->v), -32768);
  EXPECT_EQ(std::get<uint32_t>(f.find("u32")->v), 0xfffffffeu);
  EXPECT_EQ(std::get<int32_t>(f.find("i32")->v), std::numeric_limits<int32_t>::min());
  EXPECT_TRUE(std::signbit(std::get<float>(f.find("f32")->v)));
  EXPECT_TRUE(*f.get_bool("bool.true"));
  EXPECT_FALSE(*f.get_bool("bool.false"));
  EXPECT_EQ(*f.get_string("string"), odd_string());
  EXPECT_EQ(f.get_string("string")->size(), 23u);
  EXPECT_EQ(*f.get_string("string.empty"), "");
  EXPECT_EQ(*f.get_u64("u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(std::get<int64_t>(f.find("i64")->v), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(*f.get_f64("f64"), 3.141592653589793);
  EXPECT_TRUE(std::isnan(*f.get_f64("f32.nan")));
  EXPECT_EQ(*f.get_i64_array("arr.u8"), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(f.get_i64_array("arr.empty")->empty());
  EXPECT_EQ(*f.get_string_array("arr.strings"), (std::vector<std::string>{"<unk>", "", "▁the"}));
  EXPECT_EQ(*f.get_f32_array("arr.f32"), (std::vector<float>{0.0f, -1.5f, 2.25f}));
  EXPECT_EQ(*f.get_i64_array("arr.i32"), (std::vector<int64_t>{2, 3, 1}));
  EXPECT_EQ(*f.get_f32_array("arr.f64"), (std::vector<float>{static_cast<float>(1e300)}));
  EXPECT_EQ(*f.get_i64_array("arr.i64"), (std::vector<int64_t>{-5}));
  const Array* bools = f.find("arr.bool")->as_array();
  ASSERT_NE(bools, nullptr);
  EXPECT_EQ(bools->elem_type, ValueType::boolean);
  EXPECT_TRUE(std::get<bool>(bools->items.at(0).v));

  // Nested: [[[[-7, 8], []]], []]
  const Array* n1 = f.find("arr.nested")->as_array();
  ASSERT_NE(n1, nullptr);
  ASSERT_EQ(n1->items.size(), 2u);
  EXPECT_EQ(n1->elem_type, ValueType::array);
  EXPECT_TRUE(n1->items[1].as_array()->items.empty());
  const Array* n2 = n1->items[0].as_array();
  ASSERT_EQ(n2->items.size(), 1u);
  const Array* n3 = n2->items[0].as_array();
  ASSERT_EQ(n3->items.size(), 2u);
  const Array* n4 = n3->items[0].as_array();
  ASSERT_EQ(n4->elem_type, ValueType::i16);
  ASSERT_EQ(n4->items.size(), 2u);
  EXPECT_EQ(std::get<int16_t>(n4->items[0].v), -7);
  EXPECT_EQ(std::get<int16_t>(n4->items[1].v), 8);
  EXPECT_EQ(n3->items[1].as_array()->elem_type, ValueType::i16);
  const Array* ns = f.find("arr.nested.strings")->as_array();
  ASSERT_EQ(ns->items.size(), 2u);
  EXPECT_EQ(*ns->items[0].as_array()->items[1].as_string(), "b");

  // Tensors: in order, aligned, with the bytes we gave.
  ASSERT_EQ(f.tensors().size(), s.size());
  EXPECT_EQ(f.data_offset() % f.alignment(), 0u);
  uint64_t expect_offset = 0;
  for (size_t t = 0; t < s.size(); ++t) {
    const TensorInfo& ti = f.tensors()[t];
    EXPECT_EQ(ti.name, s[t].name);
    EXPECT_EQ(ti.type, s[t].type);
    EXPECT_EQ(ti.shape, s[t].shape);
    EXPECT_EQ(ti.n_bytes, s[t].n_bytes);
    EXPECT_EQ(ti.offset, expect_offset);
    EXPECT_EQ(ti.offset % f.alignment(), 0u);
    expect_offset += (ti.n_bytes + f.alignment() - 1) / f.alignment() * f.alignment();
    uint64_t n = 1;
    for (uint64_t d : ti.shape) n *= d;
    EXPECT_EQ(ti.n_elements, n);
    EXPECT_EQ(ti.row_elems(), s[t].shape[0]);
    EXPECT_EQ(ti.n_rows(), n / s[t].shape[0]);
    const auto want = random_bytes(s[t].n_bytes, static_cast<uint32_t>(t + 1));
    ASSERT_EQ(std::memcmp(ti.data, want.data(), want.size()), 0) << ti.name;
    EXPECT_EQ(f.find_tensor(ti.name), &ti);
  }
  EXPECT_EQ(f.file_size(), f.data_offset() + expect_offset);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
  EXPECT_EQ(f.find("nope"), nullptr);
}

TEST(GgufWriter, RoundTripAllTypes) {
  TempDir dir;
  Writer w;
  fill_writer(w, specs());
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  const std::string path = dir.file("all.gguf");
  auto r = w.write(path, [&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); });
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  ASSERT_EQ(progress.size(), specs().size());
  EXPECT_EQ(progress.back().first, progress.back().second);

  auto f = File::open(path);
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->find("general.alignment"), nullptr);  // default alignment: no key written
  EXPECT_EQ(f->path(), path);
  expect_round_trip(w, *f, specs());
  // mmap'ed data is aligned in memory too (the mapping is page-aligned).
  for (const auto& t : f->tensors()) EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << t.name;

  // from_bytes gives the same result.
  auto g = File::from_bytes(read_all(path), "test.gguf");
  ASSERT_TRUE(g.has_value()) << g.error().message;
  expect_round_trip(w, *g, specs());
  for (const auto& t : g->tensors()) EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << t.name;
}

TEST(GgufWriter, CustomAlignment) {
  for (uint32_t a : {1u, 8u, 64u, 4096u}) {
    TempDir dir;
    Writer w;
    w.alignment = a;
    fill_writer(w, specs());
    const std::string path = dir.file("aligned.gguf");
    auto r = w.write(path);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    auto f = File::open(path);
    ASSERT_TRUE(f.has_value()) << f.error().message;
    EXPECT_EQ(f->alignment(), a);
    EXPECT_EQ(*f->get_u64("general.alignment"), a);
    EXPECT_EQ(f->metadata().back().first, "general.alignment");
    expect_round_trip(w, *f, specs());
    // In memory, too: the mapping is page-aligned, the from_bytes copy 64-byte aligned.
    auto g = File::from_bytes(read_all(path), "test.gguf");
    ASSERT_TRUE(g.has_value()) << g.error().message;
    for (const auto& t : f->tensors()) EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % a, 0u) << t.name;
    for (const auto& t : g->tensors()) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % std::min<uint32_t>(a, 64), 0u) << t.name;
    }
  }
  // An explicit, consistent key is kept where it was set.
  TempDir dir;
  Writer w;
  w.alignment = 64;
  w.set_u32("general.alignment", 64);
  w.set_string("general.name", "x");
  auto r = w.write(dir.file("k.gguf"));
  ASSERT_TRUE(r.has_value()) << r.error().message;
  auto f = File::open(dir.file("k.gguf"));
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "general.alignment");
  EXPECT_EQ(f->alignment(), 64u);
}

TEST(GgufWriter, SetReplacesInPlace) {
  TempDir dir;
  Writer w;
  w.set_u32("a", 1);
  w.set_u32("b", 2);
  w.set_string("a", "now a string");
  ASSERT_TRUE(w.write(dir.file("s.gguf")).has_value());
  auto f = File::open(dir.file("s.gguf"));
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "a");
  EXPECT_EQ(*f->get_string("a"), "now a string");
  EXPECT_EQ(f->metadata()[1].first, "b");
}

TEST(GgufWriter, FillCallbackWritesStraightIntoTheBuffer) {
  TempDir dir;
  Writer w;
  uint64_t calls = 0;
  auto r = w.add_tensor("big", DType::F32, {1024, 64}, [&calls](std::span<uint8_t> dst) -> Expected<void> {
    ++calls;
    EXPECT_EQ(dst.size(), 1024u * 64u * 4u);
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<uint8_t>(i * 7);
    return {};
  });
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(calls, 0u);  // nothing produced before write()
  ASSERT_TRUE(w.write(dir.file("b.gguf")).has_value());
  EXPECT_EQ(calls, 1u);
  auto f = File::open(dir.file("b.gguf"));
  ASSERT_TRUE(f.has_value());
  const TensorInfo* t = f->find_tensor("big");
  ASSERT_NE(t, nullptr);
  for (size_t i = 0; i < t->n_bytes; ++i) ASSERT_EQ(t->data[i], static_cast<uint8_t>(i * 7));
}

TEST(GgufWriter, RejectsBadTensors) {
  Writer w;
  const auto noop = [](std::span<uint8_t>) -> Expected<void> { return {}; };
  ASSERT_TRUE(w.add_tensor("a", DType::F32, {4}, noop).has_value());
  auto dup = w.add_tensor("a", DType::F32, {4}, noop);
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(dup.error().message.find("twice"), std::string::npos);
  auto row = w.add_tensor("q", DType::Q8_0, {33}, noop);
  ASSERT_FALSE(row.has_value());
  EXPECT_NE(row.error().message.find("block size 32"), std::string::npos);
  EXPECT_FALSE(w.add_tensor("z", DType::F32, {0}, noop).has_value());
  EXPECT_FALSE(w.add_tensor("d", DType::F32, {1, 1, 1, 1, 1}, noop).has_value());
  EXPECT_FALSE(w.add_tensor("e", DType::F32, {}, noop).has_value());
  EXPECT_FALSE(w.add_tensor("o", DType::F32, {uint64_t{1} << 32, uint64_t{1} << 32}, noop).has_value());
  EXPECT_FALSE(w.add_tensor("", DType::F32, {4}, noop).has_value());
  EXPECT_FALSE(w.add_tensor("nofill", DType::F32, {4}, Writer::Fill{}).has_value());
  const uint8_t three[3] = {};
  auto size = w.add_tensor_bytes("s", DType::F32, {1}, three);
  ASSERT_FALSE(size.has_value());
  EXPECT_NE(size.error().message.find("needs 4 bytes, got 3"), std::string::npos);
  // The failed add left nothing behind: "s" can be added correctly now.
  const uint8_t four[4] = {};
  EXPECT_TRUE(w.add_tensor_bytes("s", DType::F32, {1}, four).has_value());
}

void expect_no_output(const std::string& path) {
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(GgufWriter, RejectsBadMetadataAndAlignment) {
  TempDir dir;
  const std::string path = dir.file("bad.gguf");
  {
    Writer w;
    w.set("mixed", array_of(ValueType::u32, {Value{uint32_t{1}}, Value{std::string("x")}}));
    auto r = w.write(path);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("'mixed'"), std::string::npos);
    expect_no_output(path);
  }
  {
    Writer w;
    Value deep = array_of(ValueType::u8, {});
    for (int i = 0; i < 5; ++i) deep = array_of(ValueType::array, {deep});
    w.set("deep", deep);
    auto r = w.write(path);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("nested"), std::string::npos);
    expect_no_output(path);
  }
  for (uint32_t a : {0u, 3u, 100u}) {
    Writer w;
    w.alignment = a;
    auto r = w.write(path);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("power of two"), std::string::npos);
    expect_no_output(path);
  }
  {
    Writer w;
    w.set_u32("general.alignment", 64);  // disagrees with w.alignment == 32
    auto r = w.write(path);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("general.alignment"), std::string::npos);
    expect_no_output(path);
  }
}

TEST(GgufWriter, FillErrorLeavesNothingBehind) {
  TempDir dir;
  const std::string path = dir.file("fail.gguf");
  Writer w;
  w.set_string("general.name", "x");
  ASSERT_TRUE(w.add_tensor("ok", DType::F32, {8}, [](std::span<uint8_t>) -> Expected<void> { return {}; }));
  ASSERT_TRUE(w.add_tensor("broken", DType::F32, {8}, [](std::span<uint8_t>) -> Expected<void> {
    return make_error(ErrorCode::resource, "generator ran dry");
  }));
  auto r = w.write(path);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::resource);
  EXPECT_NE(r.error().message.find(path), std::string::npos);
  EXPECT_NE(r.error().message.find("'broken'"), std::string::npos);
  EXPECT_NE(r.error().message.find("generator ran dry"), std::string::npos);
  expect_no_output(path);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(GgufWriter, IoErrorsNameThePath) {
  Writer w;
  w.set_u32("a", 1);
  auto r = w.write("/nonexistent-dir/x/model.gguf");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::io);
  EXPECT_NE(r.error().message.find("/nonexistent-dir/x/model.gguf"), std::string::npos);
}

// A full disk, simulated with RLIMIT_FSIZE in a child process: writes beyond the limit fail with
// EFBIG (SIGXFSZ ignored), as they would with ENOSPC.
TEST(GgufWriter, DiskFullIsReportedAndCleanedUp) {
  TempDir dir;
  const std::string path = dir.file("full.gguf");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = 100000;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(3);
    Writer w;
    w.set_u32("a", 1);
    auto big = w.add_tensor("big", DType::F32, {1024, 256}, [](std::span<uint8_t> d) -> Expected<void> {
      std::fill(d.begin(), d.end(), uint8_t{1});
      return {};
    });
    if (!big) _exit(4);
    auto r = w.write(path);
    if (r) _exit(5);
    const std::string msg = r.error().message;
    (void)!write(fds[1], msg.data(), msg.size());
    _exit(r.error().code == ErrorCode::io ? 0 : 6);
  }
  close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("File too large"), std::string::npos) << msg;
  expect_no_output(path);
}

TEST(GgufWriter, FailedRewriteKeepsTheOldFile) {
  TempDir dir;
  const std::string path = dir.file("keep.gguf");
  Writer good;
  good.set_string("general.name", "old");
  ASSERT_TRUE(good.write(path).has_value());
  Writer bad;
  bad.set_string("general.name", "new");
  ASSERT_TRUE(bad.add_tensor("t", DType::F32, {4}, [](std::span<uint8_t>) -> Expected<void> {
    return make_error(ErrorCode::internal, "boom");
  }));
  ASSERT_FALSE(bad.write(path).has_value());
  auto f = File::open(path);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(*f->get_string("general.name"), "old");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

// to_bytes() is write() without the file: byte-identical output, and it parses back the same.
TEST(GgufWriter, ToBytesEqualsTheWrittenFile) {
  for (uint32_t a : {32u, 1u, 64u, 4096u}) {
    TempDir dir;
    Writer w;
    w.alignment = a;
    fill_writer(w, specs());
    const std::string path = dir.file("same.gguf");
    ASSERT_TRUE(w.write(path).has_value());
    auto bytes = w.to_bytes();
    ASSERT_TRUE(bytes.has_value()) << bytes.error().message;
    EXPECT_EQ(*bytes, read_all(path)) << "alignment " << a;
    auto f = File::from_bytes(*bytes, "mem.gguf");
    ASSERT_TRUE(f.has_value()) << f.error().message;
    EXPECT_EQ(f->alignment(), a);
    EXPECT_EQ(f->file_size(), bytes->size());
    expect_round_trip(w, *f, specs());
  }
  // Metadata only (no tensors), as sent to workers: still padded to the alignment.
  TempDir dir;
  Writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.vocab_size", 512);
  ASSERT_TRUE(w.write(dir.file("meta.gguf")).has_value());
  auto bytes = w.to_bytes();
  ASSERT_TRUE(bytes.has_value()) << bytes.error().message;
  EXPECT_EQ(*bytes, read_all(dir.file("meta.gguf")));
  EXPECT_EQ(bytes->size() % 32, 0u);
  auto f = File::from_bytes(*bytes, "meta.gguf");
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(*f->get_u64("llama.vocab_size"), 512u);
  // An empty writer gives a valid empty file.
  auto empty = Writer{}.to_bytes();
  ASSERT_TRUE(empty.has_value());
  auto e = File::from_bytes(*empty, "empty.gguf");
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_TRUE(e->metadata().empty());
}

TEST(GgufWriter, ToBytesCallsEachFillOncePerCall) {
  Writer w;
  int calls = 0;
  ASSERT_TRUE(w.add_tensor("t", DType::F32, {3}, [&calls](std::span<uint8_t> dst) -> Expected<void> {
    ++calls;
    const float v[3] = {1.0f, -2.0f, 0.5f};
    std::memcpy(dst.data(), v, sizeof(v));
    return {};
  }));
  auto a = w.to_bytes();
  auto b = w.to_bytes();
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(*a, *b);
  auto f = File::from_bytes(*a, "t.gguf");
  ASSERT_TRUE(f.has_value());
  float got[3];
  std::memcpy(got, f->find_tensor("t")->data, sizeof(got));
  EXPECT_EQ(got[1], -2.0f);
}

TEST(GgufWriter, ToBytesReportsTheSameErrors) {
  {
    Writer w;
    w.alignment = 3;
    auto r = w.to_bytes();
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("power of two"), std::string::npos);
    EXPECT_NE(r.error().message.find("gguf writer"), std::string::npos);
  }
  {
    Writer w;
    w.set_u32("general.alignment", 64);  // disagrees with w.alignment == 32
    auto r = w.to_bytes();
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("general.alignment"), std::string::npos);
  }
  {
    Writer w;
    w.set("mixed", array_of(ValueType::u32, {Value{uint32_t{1}}, Value{std::string("x")}}));
    auto r = w.to_bytes();
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("'mixed'"), std::string::npos);
  }
  {
    Writer w;
    ASSERT_TRUE(w.add_tensor("broken", DType::F32, {8}, [](std::span<uint8_t>) -> Expected<void> {
      return make_error(ErrorCode::resource, "generator ran dry");
    }));
    auto r = w.to_bytes();
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::resource);
    EXPECT_NE(r.error().message.find("'broken'"), std::string::npos);
    EXPECT_NE(r.error().message.find("generator ran dry"), std::string::npos);
  }
}

TEST(GgufFile, MovesKeepDataValid) {
  TempDir dir;
  Writer w;
  fill_writer(w, specs());
  const std::string path = dir.file("m.gguf");
  ASSERT_TRUE(w.write(path).has_value());

  auto mem = File::from_bytes(read_all(path), "test.gguf");
  ASSERT_TRUE(mem.has_value());
  File a = std::move(mem).value();
  const uint8_t* first = a.tensors()[0].data;
  File b = std::move(a);
  EXPECT_EQ(b.tensors()[0].data, first);
  std::vector<File> files;
  files.push_back(std::move(b));
  for (int i = 0; i < 8; ++i) {
    auto again = File::from_bytes(read_all(path), "test.gguf");
    ASSERT_TRUE(again.has_value());
    files.push_back(std::move(again).value());  // reallocations move the Files around
  }
  for (const File& f : files) expect_round_trip(w, f, specs());

  // Move-assigning over an mmap'ed File unmaps the old one; the new data stays readable.
  auto mapped = File::open(path);
  ASSERT_TRUE(mapped.has_value());
  File m = std::move(mapped).value();
  m = std::move(files[3]);
  expect_round_trip(w, m, specs());
  auto mapped2 = File::open(path);
  ASSERT_TRUE(mapped2.has_value());
  m = std::move(mapped2).value();
  expect_round_trip(w, m, specs());
}

}  // namespace
}  // namespace ll::gguf::test
