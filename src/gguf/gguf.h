// GGUF reader (versions 2 and 3, little-endian, mmap) and writer.
//
// File layout (all integers little-endian):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32)
//   tensor data; each tensor at data_start + offset, offset a multiple of the alignment
// string = u64 length + bytes (no terminator); array = u32 elem_type + u64 count + elements.
//
// Every byte of the file is untrusted: all counts are checked against the bytes left and against
// overflow before anything is allocated; a malformed file gives an Error naming the file and fault,
// as "<path>: <fault> (at byte offset N)". Since every array element takes at least one file byte,
// parsed metadata takes at most ~sizeof(Value) (40) bytes of memory per byte of file.
//
// A File is immutable once parsed (const methods are safe from several threads). Tensor data pointers
// stay valid for the File's lifetime, across moves; they are aligned in memory to the file's alignment
// (open(): page-aligned mapping; from_bytes(): a 64-byte aligned copy), capped at 64 for from_bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace ll::gguf {

enum class ValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
std::string_view value_type_name(ValueType t);

struct Value;
struct Array {
  ValueType elem_type = ValueType::u8;
  std::vector<Value> items;
};

// One metadata value. Scalars keep their exact stored type.
struct Value {
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, Array, uint64_t, int64_t, double>;
  Storage v;
  ValueType type() const;  // from the variant index

  // Convenience conversions; nullopt-like failure is reported by returning false.
  bool as_u64(uint64_t& out) const;  // any non-negative integer type (or bool)
  bool as_i64(int64_t& out) const;   // any integer type that fits
  bool as_f64(double& out) const;    // any integer or float type
  const std::string* as_string() const;
  const Array* as_array() const;
};

constexpr size_t k_max_dims = 4;
// Arrays may nest (array of arrays ...) at most this deep; a top-level array has depth 1.
constexpr size_t k_max_array_depth = 4;
// Alignment of the tensor data section when `general.alignment` is absent.
constexpr uint32_t k_default_alignment = 32;

// Builders for array values (the writer's usual inputs).
Value make_string_array(std::vector<std::string> items);
Value make_f32_array(std::span<const float> items);
Value make_i32_array(std::span<const int32_t> items);

struct TensorInfo {
  std::string name;
  DType type = DType::F32;
  std::vector<uint64_t> shape;  // ne[0] is the innermost (contiguous) dimension
  uint64_t n_elements = 0;
  uint64_t offset = 0;          // from the start of the data section
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // points into the mapping (or memory) of the File
  // Rows are ne[0] elements long; n_rows = product of the other dims.
  uint64_t row_elems() const { return shape.empty() ? 1 : shape[0]; }
  uint64_t n_rows() const { return row_elems() == 0 ? 0 : n_elements / row_elems(); }
};

class File {
 public:
  // mmap the file read-only and parse it.
  static Expected<File> open(const std::string& path);
  // Parse bytes already in memory (copied into the File). `name` is used in error messages.
  static Expected<File> from_bytes(std::span<const uint8_t> bytes, std::string name);

  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;

  // Typed getters: not_found if absent, parse error naming the key if the type does not fit.
  Expected<std::string> get_string(std::string_view key) const;
  Expected<uint64_t> get_u64(std::string_view key) const;  // any non-negative integer type
  Expected<double> get_f64(std::string_view key) const;    // any numeric type
  Expected<bool> get_bool(std::string_view key) const;
  Expected<std::vector<std::string>> get_string_array(std::string_view key) const;
  Expected<std::vector<float>> get_f32_array(std::string_view key) const;    // numeric elements
  Expected<std::vector<int64_t>> get_i64_array(std::string_view key) const;  // integer elements

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

  // Weights are read again and again while decoding, and a file mapping has the page cache's pages:
  // where the kernel caches the file in small folios, every 4 KiB costs a TLB miss (decode ran at
  // half the speed of the same bytes in huge pages on such a kernel). hold_in_memory() moves the
  // pages of [offset, offset + n) of the file, rounded out to whole 2 MiB stretches of the mapping,
  // into anonymous memory with the same bytes, in transparent huge pages, *at the same addresses*:
  // every pointer into the file (tensor data) stays valid, and threads reading those bytes
  // meanwhile see the same bytes throughout. Returns the bytes newly held (0 for stretches held
  // already, and for a File built from_bytes, which is in memory). Errors: io when the kernel
  // refuses (the bytes then stay mapped from the file; nothing is lost).
  Expected<uint64_t> hold_in_memory(uint64_t offset, uint64_t n) const;
  // Gives the pages of [offset, offset + n) back (whole pages only): held stretches lying wholly
  // inside map the file again, other pages leave the resident set (read back from the file when
  // touched). The bytes seen never change. Returns the bytes no longer held.
  uint64_t release_memory(uint64_t offset, uint64_t n) const;
  uint64_t held_bytes() const;  // bytes now held in memory by hold_in_memory()

 private:
  File() = default;
  static Expected<File> parse(File f);

  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;
  struct AlignedDelete {
    void operator()(uint8_t* p) const noexcept;
  };
  void* mapping_ = nullptr;                          // mmap'ed region, if any
  struct Held;                                       // hold_in_memory()'s state: the file, stretches held
  std::unique_ptr<Held> held_;                       // with mapping_ only
  std::unique_ptr<uint8_t[], AlignedDelete> owned_;  // for from_bytes: exact-size, 64-byte aligned copy
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  // Sorted (name, index) for lookups; the views point into kv_ / tensors_ strings, whose storage
  // does not move when the File is moved.
  std::vector<std::pair<std::string_view, uint32_t>> kv_index_;
  std::vector<std::pair<std::string_view, uint32_t>> tensor_index_;
};

// Writes GGUF v3. Tensor data is produced tensor by tensor at write time, so that files larger
// than memory (e.g. a generated 7B model) can be written.
class Writer {
 public:
  using Fill = std::function<Expected<void>(std::span<uint8_t> dst)>;

  void set(std::string key, Value value);  // replaces an existing key, keeps first position
  void set_u32(std::string key, uint32_t v) { set(std::move(key), Value{v}); }
  void set_i32(std::string key, int32_t v) { set(std::move(key), Value{v}); }
  void set_u64(std::string key, uint64_t v) { set(std::move(key), Value{v}); }
  void set_f32(std::string key, float v) { set(std::move(key), Value{v}); }
  void set_bool(std::string key, bool v) { set(std::move(key), Value{v}); }
  void set_string(std::string key, std::string v) { set(std::move(key), Value{std::move(v)}); }

  // shape[0] innermost. The fill callback receives exactly the tensor's byte size.
  Expected<void> add_tensor(std::string name, DType type, std::vector<uint64_t> shape, Fill fill);
  // Convenience: data copied now.
  Expected<void> add_tensor_bytes(std::string name, DType type, std::vector<uint64_t> shape,
                                  std::span<const uint8_t> data);

  // Writes "<path>.tmp" and renames it to `path` on success; on any failure nothing is left behind.
  // Errors: invalid_argument (bad alignment, inconsistent array values, general.alignment conflict),
  // io (with the path and strerror), or whatever a fill callback returned.
  // progress(done_bytes, total_bytes) is called after each tensor.
  Expected<void> write(const std::string& path,
                       const std::function<void(uint64_t, uint64_t)>& progress = {}) const;
  // The exact bytes write() would put in the file, in memory (for small files: metadata-only
  // GGUFs sent over the network, tests). Same errors as write(), named "gguf writer" instead of a
  // path, plus resource when the buffer cannot be allocated.
  Expected<std::vector<uint8_t>> to_bytes() const;
  uint32_t alignment = 32;

 private:
  class Sink;  // where emit() streams the file: a temporary file or a byte vector
  // Validates, lays out and streams the whole file to `sink`; `name` prefixes error messages.
  Expected<void> emit(const std::string& name, Sink& sink,
                      const std::function<void(uint64_t, uint64_t)>& progress) const;

  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<uint64_t> shape;
    uint64_t n_bytes;
    Fill fill;
  };
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace ll::gguf
