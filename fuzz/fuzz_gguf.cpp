// libFuzzer target for the GGUF reader: File::from_bytes on arbitrary bytes must return an error
// naming the input or a File whose every value and tensor byte can be read (ASan+UBSan watch).
//
// Seeds and run (see fuzz/make_seeds.sh):
//   fuzz/make_seeds.sh build-fuzz/gguf-corpus
//   build-fuzz/fuzz_gguf -max_total_time=60 -rss_limit_mb=2048 -max_len=65536 \
//       -dict=fuzz/gguf.dict build-fuzz/gguf-corpus
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "gguf/gguf.h"

namespace {

using ll::gguf::Array;
using ll::gguf::File;
using ll::gguf::Value;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_gguf invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}

uint64_t touch(const Value& v) {
  uint64_t h = static_cast<uint64_t>(v.type());
  if (const std::string* s = v.as_string()) {
    for (char c : *s) h = h * 131 + static_cast<uint8_t>(c);
  } else if (const Array* a = v.as_array()) {
    for (const Value& item : a->items) {
      if (item.type() != a->elem_type) fail("array element type", std::string(value_type_name(item.type())));
      h = h * 131 + touch(item);
    }
  } else {
    uint64_t u = 0;
    int64_t i = 0;
    double d = 0;
    if (v.as_u64(u)) h ^= u;
    if (v.as_i64(i)) h ^= static_cast<uint64_t>(i);
    if (v.as_f64(d)) h ^= d == d ? 1 : 2;
  }
  return h;
}

template <class E>
uint64_t touch_result(const E& r) {
  if (!r) return r.error().message.size();
  return 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = File::from_bytes(std::span<const uint8_t>(data, size), "fuzz.gguf");
  if (!parsed) {
    const std::string& m = parsed.error().message;
    if (m.rfind("fuzz.gguf: ", 0) != 0) fail("error does not name the file", m);
    return 0;
  }
  const File& f = *parsed;
  volatile uint64_t sink = 0;
  uint64_t h = 0;
  const uint64_t a = f.alignment();
  if (a == 0 || (a & (a - 1)) != 0) fail("alignment", std::to_string(a));
  if (f.version() != 2 && f.version() != 3) fail("version", std::to_string(f.version()));
  for (const auto& [key, value] : f.metadata()) {
    if (f.find(key) != &value) fail("find() after duplicate check", key);
    h += touch(value);
    h += touch_result(f.get_string(key));
    h += touch_result(f.get_u64(key));
    h += touch_result(f.get_f64(key));
    h += touch_result(f.get_bool(key));
    h += touch_result(f.get_string_array(key));
    h += touch_result(f.get_f32_array(key));
    h += touch_result(f.get_i64_array(key));
  }
  for (const auto& t : f.tensors()) {
    if (f.find_tensor(t.name) != &t) fail("find_tensor()", t.name);
    if (t.shape.empty() || t.shape.size() > ll::gguf::k_max_dims) fail("dims", t.name);
    if (t.offset % a != 0) fail("tensor alignment", t.name);
    if (f.data_offset() + t.offset + t.n_bytes > f.file_size()) fail("tensor bounds", t.name);
    const auto row = ll::dtype_row_bytes(t.type, t.row_elems());
    if (!row || *row * t.n_rows() != t.n_bytes) fail("tensor size", t.name);
    for (uint64_t i = 0; i < t.n_bytes; ++i) h += t.data[i];
  }
  sink = h;
  (void)sink;
  return 0;
}
