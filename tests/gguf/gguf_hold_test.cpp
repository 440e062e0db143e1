// gguf::File::hold_in_memory / release_memory: the bytes and their addresses never change, the
// pages move between the file mapping and anonymous memory.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace ll::gguf::test {
namespace {

constexpr uint64_t k_mib = uint64_t{1} << 20;

// What /proc/self/maps says of the mapping holding p: its path, "" for anonymous memory, or
// "(unmapped)".
std::string mapping_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || a < lo || a >= hi) continue;
    std::istringstream in(line);
    std::string range, perms, off, dev, inode, path;
    in >> range >> perms >> off >> dev >> inode >> path;
    return path;
  }
  return "(unmapped)";
}

struct Fixture {
  TempDir dir;
  std::string path = dir.file("hold.gguf");
  std::vector<std::vector<uint8_t>> bytes;  // of tensors a, b, c

  Fixture() {
    Writer w;
    w.set_string("general.architecture", "llama");
    std::mt19937 rng(7);
    // 3 MiB + 1 KiB each: tensor b starts and ends inside 2 MiB stretches it shares with a and c.
    for (const char* name : {"a", "b", "c"}) {
      std::vector<uint8_t> v(3 * k_mib + 1024);
      for (auto& x : v) x = static_cast<uint8_t>(rng());
      EXPECT_TRUE(w.add_tensor_bytes(name, DType::F32, {v.size() / 4}, v).has_value());
      bytes.push_back(std::move(v));
    }
    EXPECT_TRUE(w.write(path).has_value());
  }
};

void expect_same_bytes(const File& f, const Fixture& fx) {
  const char* names[] = {"a", "b", "c"};
  for (size_t i = 0; i < 3; ++i) {
    const TensorInfo* t = f.find_tensor(names[i]);
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->n_bytes, fx.bytes[i].size());
    EXPECT_EQ(std::memcmp(t->data, fx.bytes[i].data(), t->n_bytes), 0) << "tensor " << names[i];
  }
}

TEST(GgufHold, HoldsATensorInMemoryAtTheSameAddress) {
  Fixture fx;
  auto f = File::open(fx.path);
  ASSERT_TRUE(f.has_value()) << f.error().message;
  const TensorInfo* b = f->find_tensor("b");
  ASSERT_NE(b, nullptr);
  const uint8_t* before = b->data;
  const std::string file_name = mapping_of(b->data);
  EXPECT_NE(file_name.find("hold.gguf"), std::string::npos) << file_name;
  EXPECT_EQ(f->held_bytes(), 0u);

  auto held = f->hold_in_memory(f->data_offset() + b->offset, b->n_bytes);
  ASSERT_TRUE(held.has_value()) << held.error().message;
  // Rounded out to whole 2 MiB stretches: at least the tensor, at most two stretches more.
  EXPECT_GE(*held, b->n_bytes);
  EXPECT_LE(*held, b->n_bytes + 4 * k_mib);
  EXPECT_EQ(f->held_bytes(), *held);
  EXPECT_EQ(f->find_tensor("b")->data, before);
  EXPECT_EQ(mapping_of(b->data), "");                       // anonymous now
  EXPECT_EQ(mapping_of(b->data + b->n_bytes - 1), "");
  expect_same_bytes(*f, fx);

  // Again: nothing more to move.
  auto again = f->hold_in_memory(f->data_offset() + b->offset, b->n_bytes);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, 0u);

  // Moving the File keeps what it holds.
  File moved = std::move(*f);
  EXPECT_EQ(moved.held_bytes(), *held);
  expect_same_bytes(moved, fx);
}

TEST(GgufHold, ReleaseMapsTheFileAgainAndNeverLosesBytes) {
  Fixture fx;
  auto f = File::open(fx.path);
  ASSERT_TRUE(f.has_value()) << f.error().message;
  const TensorInfo* a = f->find_tensor("a");
  const TensorInfo* b = f->find_tensor("b");
  const TensorInfo* c = f->find_tensor("c");
  ASSERT_TRUE(a && b && c);
  ASSERT_TRUE(f->hold_in_memory(f->data_offset() + b->offset, b->n_bytes).has_value());
  const uint64_t held = f->held_bytes();
  ASSERT_GT(held, 0u);

  // Giving back a and c (what the coordinator does with the workers' tensors) drops file pages
  // only: the stretches b shares with them stay held, and no byte of any tensor changes (dropping
  // anonymous pages would have zeroed them).
  f->release_memory(f->data_offset() + a->offset, a->n_bytes);
  f->release_memory(f->data_offset() + c->offset, c->n_bytes);
  EXPECT_EQ(f->held_bytes(), held);
  expect_same_bytes(*f, fx);

  // Giving back b: the stretches wholly inside it map the file again; those it shares stay held.
  const uint64_t released = f->release_memory(f->data_offset() + b->offset, b->n_bytes);
  EXPECT_GT(released, 0u);
  EXPECT_EQ(f->held_bytes(), held - released);
  expect_same_bytes(*f, fx);
  // Everything, the whole file: nothing is held any more.
  f->release_memory(0, f->file_size());
  EXPECT_EQ(f->held_bytes(), 0u);
  EXPECT_NE(mapping_of(b->data + b->n_bytes / 2).find("hold.gguf"), std::string::npos);
  expect_same_bytes(*f, fx);

  // And held again after that.
  auto again = f->hold_in_memory(0, f->file_size());
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_GE(*again, f->file_size());
  EXPECT_EQ(mapping_of(a->data), "");
  expect_same_bytes(*f, fx);
}

TEST(GgufHold, RangesOutsideTheFileAndFilesInMemoryHoldNothing) {
  Fixture fx;
  auto f = File::open(fx.path);
  ASSERT_TRUE(f.has_value());
  auto none = f->hold_in_memory(f->file_size(), 100);
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(*none, 0u);
  none = f->hold_in_memory(0, 0);
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(*none, 0u);
  EXPECT_EQ(f->release_memory(f->file_size() + 1, 1u << 30), 0u);
  // A range running past the end is cut at the end.
  auto tail = f->hold_in_memory(f->file_size() - 10, uint64_t{1} << 40);
  ASSERT_TRUE(tail.has_value());
  EXPECT_GT(*tail, 0u);
  EXPECT_LE(*tail, 2 * k_mib);
  expect_same_bytes(*f, fx);

  auto mem = File::from_bytes(read_all(fx.path), "in memory");
  ASSERT_TRUE(mem.has_value()) << mem.error().message;
  auto held = mem->hold_in_memory(0, mem->file_size());
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(*held, 0u);
  EXPECT_EQ(mem->release_memory(0, mem->file_size()), 0u);
  expect_same_bytes(*mem, fx);
}

}  // namespace
}  // namespace ll::gguf::test
