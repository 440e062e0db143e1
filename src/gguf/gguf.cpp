// GGUF reader and writer; see gguf.h for the byte layout.
//
// Reader discipline: every read goes through Parser, which checks the bytes left before touching
// them; every count is checked against the bytes left (times the smallest encoding of one element)
// before anything is reserved, so a file can make us allocate at most a small multiple of its size;
// all size arithmetic is checked for overflow. Errors read "<path>: <fault> (at byte offset N)".
#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <type_traits>
#include <unordered_set>

namespace ll::gguf {

// GGUF is little-endian; we read fields with memcpy, which is only correct on little-endian hosts
// (x86-64 and AArch64, everything we target).
static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint32_t k_magic = 0x46554747;  // the bytes "GGUF" read as a little-endian u32
constexpr uint32_t k_write_version = 3;
constexpr uint64_t k_max_elements = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr uint64_t k_u64_max = std::numeric_limits<uint64_t>::max();
constexpr uint32_t k_n_value_types = 13;
constexpr std::string_view k_alignment_key = "general.alignment";

// Smallest possible encodings, used to bound counts against the bytes left.
constexpr uint64_t k_min_kv_bytes = 8 + 4 + 1;               // key length, value type, 1-byte value
constexpr uint64_t k_min_tensor_info_bytes = 8 + 4 + 8 + 4 + 8;  // name length, n_dims, ne[0], type, offset

// Bytes of a scalar value; 0 for string and array.
uint64_t scalar_bytes(ValueType t) {
  switch (t) {
    case ValueType::u8: case ValueType::i8: case ValueType::boolean: return 1;
    case ValueType::u16: case ValueType::i16: return 2;
    case ValueType::u32: case ValueType::i32: case ValueType::f32: return 4;
    case ValueType::u64: case ValueType::i64: case ValueType::f64: return 8;
    case ValueType::string: case ValueType::array: return 0;
  }
  return 0;
}

// Smallest number of bytes one array element of type t occupies in the file.
uint64_t min_elem_bytes(ValueType t) {
  if (t == ValueType::string) return 8;       // u64 length
  if (t == ValueType::array) return 4 + 8;    // u32 elem type + u64 count
  return scalar_bytes(t);
}

bool is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// Round x up to a multiple of a (a power of two); false on overflow.
bool align_up(uint64_t x, uint64_t a, uint64_t& out) {
  const uint64_t rem = x & (a - 1);
  if (rem == 0) {
    out = x;
    return true;
  }
  const uint64_t add = a - rem;
  if (x > k_u64_max - add) return false;
  out = x + add;
  return true;
}

// Quote a name or key from the file for an error message: printable ASCII kept, the rest escaped,
// long names cut, so that a hostile file cannot put control characters or megabytes into a message.
std::string quote(std::string_view s) {
  constexpr size_t k_max_shown = 96;
  std::string out = "'";
  const size_t n = std::min(s.size(), k_max_shown);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > n) out += "...";
  out += "'";
  return out;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string type_id_string(uint32_t id) {
  return std::string(ggml_type_id_name(id)) + " (" + std::to_string(id) + ")";
}

// Shared by reader and writer: element count and byte size of a tensor, or a description of what
// is wrong with its shape (empty on success).
std::string tensor_size(DType type, const std::vector<uint64_t>& shape, uint64_t& n_elements,
                        uint64_t& n_bytes) {
  if (shape.empty()) return "has 0 dimensions";
  if (shape.size() > k_max_dims) {
    return "has " + std::to_string(shape.size()) + " dimensions, more than the maximum of " +
           std::to_string(k_max_dims);
  }
  uint64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return "has dimension " + std::to_string(i) + " of size 0 (shape " + shape_string(shape) + ")";
    if (shape[i] > k_max_elements) {
      return "has an absurd size " + std::to_string(shape[i]) + " in dimension " + std::to_string(i);
    }
    if (n > k_max_elements / shape[i]) return "element count overflows (shape " + shape_string(shape) + ")";
    n *= shape[i];
  }
  const uint64_t block = dtype_block_elems(type);
  if (shape[0] % block != 0) {
    return "row length " + std::to_string(shape[0]) + " is not a multiple of the " +
           std::string(dtype_name(type)) + " block size " + std::to_string(block);
  }
  const std::optional<size_t> row_bytes = dtype_row_bytes(type, shape[0]);
  if (!row_bytes) return "byte size overflows (shape " + shape_string(shape) + ")";
  const uint64_t n_rows = n / shape[0];
  if (*row_bytes != 0 && n_rows > k_u64_max / *row_bytes) {
    return "byte size overflows (shape " + shape_string(shape) + ")";
  }
  n_elements = n;
  n_bytes = static_cast<uint64_t>(*row_bytes) * n_rows;
  return {};
}

// ---------------------------------------------------------------------------------------------
// Reader

// Reads fields with bounds checks. Methods return false on a fault and leave the error in error();
// messages are only built on failure, so the per-element path allocates nothing but the values.
class Parser {
 public:
  Parser(const uint8_t* base, uint64_t size, const std::string& path) : base_(base), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const uint8_t* at(uint64_t off) const { return base_ + off; }
  Error& error() { return err_; }

  // What is being read, e.g. "key 'general.name'", prefixed to messages.
  void set_context(std::string ctx) { ctx_ = std::move(ctx); }
  const std::string& context() const { return ctx_; }

  Error fail(ErrorCode code, uint64_t offset, const std::string& what) const {
    return make_error(code, path_ + ": " + what + " (at byte offset " + std::to_string(offset) + ")");
  }
  bool set_fail(ErrorCode code, uint64_t offset, const std::string& what) {
    err_ = fail(code, offset, what);
    return false;
  }

  // Fails with a "truncated" message naming `field` if fewer than n bytes are left.
  bool need(uint64_t n, const char* field) {
    if (n <= left()) return true;
    return set_fail(ErrorCode::parse, pos_,
                    "truncated " + prefixed(field) + ": needs " + std::to_string(n) + " bytes but only " +
                        std::to_string(left()) + " are left before the end of the file");
  }

  template <class T>
  bool scalar(T& out, const char* field) {
    if (!need(sizeof(T), field)) return false;
    std::memcpy(&out, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  // A string: u64 length + bytes. Returns a view into the file.
  bool string(std::string_view& out, const char* field) {
    const uint64_t start = pos_;
    uint64_t len = 0;
    if (!need(8, field)) return false;
    std::memcpy(&len, base_ + pos_, 8);
    pos_ += 8;
    if (len > left()) {
      return set_fail(ErrorCode::parse, start,
                      prefixed(field) + " of length " + std::to_string(len) + " runs past the end of the file (" +
                          std::to_string(left()) + " bytes left)");
    }
    out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return true;
  }

  bool value_type(ValueType& out, const char* field) {
    const uint64_t start = pos_;
    uint32_t raw = 0;
    if (!scalar(raw, field)) return false;
    if (raw >= k_n_value_types) {
      return set_fail(ErrorCode::parse, start,
                      (ctx_.empty() ? std::string("value") : ctx_) + " has unknown " + field + " " +
                          std::to_string(raw));
    }
    out = static_cast<ValueType>(raw);
    return true;
  }

  // A value of type t; `depth` is the number of arrays around it.
  bool value(ValueType t, size_t depth, Value& out) {
    switch (t) {
      case ValueType::u8: return typed<uint8_t>(out);
      case ValueType::i8: return typed<int8_t>(out);
      case ValueType::u16: return typed<uint16_t>(out);
      case ValueType::i16: return typed<int16_t>(out);
      case ValueType::u32: return typed<uint32_t>(out);
      case ValueType::i32: return typed<int32_t>(out);
      case ValueType::f32: return typed<float>(out);
      case ValueType::u64: return typed<uint64_t>(out);
      case ValueType::i64: return typed<int64_t>(out);
      case ValueType::f64: return typed<double>(out);
      case ValueType::boolean: {
        const uint64_t start = pos_;
        uint8_t b = 0;
        if (!scalar(b, "value")) return false;
        if (b > 1) {
          return set_fail(ErrorCode::parse, start,
                          ctx_ + ": bool value " + std::to_string(b) + " is neither 0 nor 1");
        }
        out.v = (b == 1);
        return true;
      }
      case ValueType::string: {
        std::string_view s;
        if (!string(s, "string value")) return false;
        out.v.emplace<std::string>(s);
        return true;
      }
      case ValueType::array: return array(depth, out);
    }
    return set_fail(ErrorCode::internal, pos_, ctx_ + ": bad value type");  // unreachable: types are checked
  }

 private:
  std::string prefixed(const char* field) const { return ctx_.empty() ? field : ctx_ + " " + field; }

  template <class T>
  bool typed(Value& out) {
    T x{};
    if (!scalar(x, "value")) return false;
    out.v = x;
    return true;
  }

  bool array(size_t depth, Value& out) {
    const uint64_t start = pos_;
    const size_t level = depth + 1;  // this array's nesting level, 1 for a top-level array
    ValueType elem = ValueType::u8;
    if (!value_type(elem, "array element type")) return false;
    if (elem == ValueType::array && level >= k_max_array_depth) {
      return set_fail(ErrorCode::parse, start,
                      ctx_ + ": arrays nested more than " + std::to_string(k_max_array_depth) + " deep");
    }
    uint64_t count = 0;
    if (!scalar(count, "array length")) return false;
    const uint64_t min_bytes = min_elem_bytes(elem);
    if (count > left() / min_bytes) {
      return set_fail(ErrorCode::parse, start,
                      ctx_ + ": array of " + std::to_string(count) + " " + std::string(value_type_name(elem)) +
                          " elements runs past the end of the file (" + std::to_string(left()) + " bytes left)");
    }
    Array& arr = out.v.emplace<Array>();
    arr.elem_type = elem;
    arr.items.resize(static_cast<size_t>(count));
    for (auto& item : arr.items) {
      if (!value(elem, level, item)) return false;
    }
    return true;
  }

  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
  std::string ctx_;
  Error err_;
};

// Where a tensor's info record starts and its offset field sits, for error messages.
struct TensorPos {
  uint64_t info_at;
  uint64_t offset_at;
};

std::string describe_type(const Value& v) {
  if (const Array* a = v.as_array()) return "array of " + std::string(value_type_name(a->elem_type));
  return std::string(value_type_name(v.type()));
}

template <class Index>
Index build_index(const std::vector<std::string_view>& names) {
  Index idx;
  idx.reserve(names.size());
  for (size_t i = 0; i < names.size(); ++i) idx.emplace_back(names[i], static_cast<uint32_t>(i));
  std::sort(idx.begin(), idx.end());
  return idx;
}

template <class Index>
const typename Index::value_type* lookup(const Index& idx, std::string_view key) {
  auto it = std::lower_bound(idx.begin(), idx.end(), key,
                             [](const auto& entry, std::string_view k) { return entry.first < k; });
  if (it == idx.end() || it->first != key) return nullptr;
  return &*it;
}

}  // namespace

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::u8: return "u8";
    case ValueType::i8: return "i8";
    case ValueType::u16: return "u16";
    case ValueType::i16: return "i16";
    case ValueType::u32: return "u32";
    case ValueType::i32: return "i32";
    case ValueType::f32: return "f32";
    case ValueType::boolean: return "bool";
    case ValueType::string: return "string";
    case ValueType::array: return "array";
    case ValueType::u64: return "u64";
    case ValueType::i64: return "i64";
    case ValueType::f64: return "f64";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Value

ValueType Value::type() const { return static_cast<ValueType>(v.index()); }

bool Value::as_u64(uint64_t& out) const {
  return std::visit(
      [&out](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          out = x ? 1 : 0;
          return true;
        } else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) {
          out = x;
          return true;
        } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
          if (x < 0) return false;
          out = static_cast<uint64_t>(x);
          return true;
        } else {
          return false;
        }
      },
      v);
}

bool Value::as_i64(int64_t& out) const {
  return std::visit(
      [&out](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          return false;
        } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
          out = x;
          return true;
        } else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) {
          if (static_cast<uint64_t>(x) > k_max_elements) return false;
          out = static_cast<int64_t>(x);
          return true;
        } else {
          return false;
        }
      },
      v);
}

bool Value::as_f64(double& out) const {
  return std::visit(
      [&out](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          return false;
        } else if constexpr (std::is_arithmetic_v<T>) {
          out = static_cast<double>(x);
          return true;
        } else {
          return false;
        }
      },
      v);
}

const std::string* Value::as_string() const { return std::get_if<std::string>(&v); }
const Array* Value::as_array() const { return std::get_if<Array>(&v); }

Value make_string_array(std::vector<std::string> items) {
  Array a;
  a.elem_type = ValueType::string;
  a.items.reserve(items.size());
  for (auto& s : items) a.items.push_back(Value{std::move(s)});
  return Value{std::move(a)};
}

Value make_f32_array(std::span<const float> items) {
  Array a;
  a.elem_type = ValueType::f32;
  a.items.reserve(items.size());
  for (float x : items) a.items.push_back(Value{x});
  return Value{std::move(a)};
}

Value make_i32_array(std::span<const int32_t> items) {
  Array a;
  a.elem_type = ValueType::i32;
  a.items.reserve(items.size());
  for (int32_t x : items) a.items.push_back(Value{x});
  return Value{std::move(a)};
}

// ---------------------------------------------------------------------------------------------
// File

File::File(File&& o) noexcept
    : path_(std::move(o.path_)),
      version_(o.version_),
      alignment_(o.alignment_),
      base_(o.base_),
      size_(o.size_),
      data_offset_(o.data_offset_),
      mapping_(o.mapping_),
      held_(std::move(o.held_)),
      owned_(std::move(o.owned_)),
      kv_(std::move(o.kv_)),
      tensors_(std::move(o.tensors_)),
      kv_index_(std::move(o.kv_index_)),
      tensor_index_(std::move(o.tensor_index_)) {
  // owned_'s buffer moves with it, so base_ and the tensors' data pointers stay valid.
  o.mapping_ = nullptr;
  o.base_ = nullptr;
  o.size_ = 0;
}

File& File::operator=(File&& o) noexcept {
  if (this == &o) return *this;
  if (mapping_ != nullptr) munmap(mapping_, static_cast<size_t>(size_));
  path_ = std::move(o.path_);
  version_ = o.version_;
  alignment_ = o.alignment_;
  base_ = o.base_;
  size_ = o.size_;
  data_offset_ = o.data_offset_;
  mapping_ = o.mapping_;
  held_ = std::move(o.held_);
  owned_ = std::move(o.owned_);
  kv_ = std::move(o.kv_);
  tensors_ = std::move(o.tensors_);
  kv_index_ = std::move(o.kv_index_);
  tensor_index_ = std::move(o.tensor_index_);
  o.mapping_ = nullptr;
  o.base_ = nullptr;
  o.size_ = 0;
  return *this;
}

// ------------------------------------------------------------------------------ held in memory

namespace {
constexpr uint64_t k_stretch = uint64_t{2} << 20;  // a transparent huge page on x86-64 and arm64 (4 KiB pages)

uint64_t page_bytes() {
  const long p = ::sysconf(_SC_PAGESIZE);
  return p > 0 ? static_cast<uint64_t>(p) : 4096;
}
}  // namespace

struct File::Held {
  explicit Held(int f) : fd(f) {}
  ~Held() { ::close(fd); }
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  int fd;
  std::mutex mu;
  std::vector<bool> stretch;  // stretch k: [align_down(base, 2 MiB) + k * 2 MiB, + 2 MiB) within the mapping
  uint64_t held = 0;
};

Expected<uint64_t> File::hold_in_memory(uint64_t offset, uint64_t n) const {
  if (!held_ || n == 0 || offset >= size_) return uint64_t{0};
  n = std::min(n, size_ - offset);
  const uint64_t page = page_bytes();
  const auto base = reinterpret_cast<uintptr_t>(mapping_);
  const uintptr_t map_end = base + (size_ + page - 1) / page * page;
  const uintptr_t origin = base / k_stretch * k_stretch;
  const size_t k_first = (base + offset - origin) / k_stretch;
  const size_t k_last = (base + offset + n - 1 - origin) / k_stretch;
  std::lock_guard<std::mutex> lock(held_->mu);
  if (held_->stretch.size() <= k_last) held_->stretch.resize(k_last + 1, false);
  uint64_t done = 0;
  for (size_t k = k_first; k <= k_last;) {
    if (held_->stretch[k]) {
      ++k;
      continue;
    }
    size_t k_end = k;  // a run of stretches not held yet, moved in one go
    while (k_end + 1 <= k_last && !held_->stretch[k_end + 1]) ++k_end;
    const uintptr_t w0 = std::max<uintptr_t>(base, origin + k * k_stretch);
    const uintptr_t w1 = std::min<uintptr_t>(map_end, origin + (k_end + 1) * k_stretch);
    const auto len = static_cast<size_t>(w1 - w0);
    // Anonymous memory on a 2 MiB boundary (like the destination), filled, made read-only, then
    // moved over the file's pages: mremap swaps the page tables at once, never leaving a hole.
    void* raw = ::mmap(nullptr, len + k_stretch, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
      const int e = errno;
      return make_error(ErrorCode::io, path_ + ": cannot allocate " + std::to_string(len) +
                                           " bytes to hold the weights in memory: " + std::strerror(e));
    }
    const auto r = reinterpret_cast<uintptr_t>(raw);
    // Same offset within a 2 MiB stretch as w0, so that huge pages line up after the move.
    uintptr_t dst = (r + k_stretch - 1) / k_stretch * k_stretch + (w0 % k_stretch);
    if (dst - r >= k_stretch) dst -= k_stretch;
    if (dst > r) ::munmap(raw, dst - r);
    if (r + len + k_stretch > dst + len) ::munmap(reinterpret_cast<void*>(dst + len), r + len + k_stretch - (dst + len));
    auto* d = reinterpret_cast<uint8_t*>(dst);
    (void)::madvise(d, len, MADV_HUGEPAGE);
    std::memcpy(d, reinterpret_cast<const void*>(w0), len);
    void* moved = MAP_FAILED;
    if (::mprotect(d, len, PROT_READ) == 0) {
      moved = ::mremap(d, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(w0));
    }
    if (moved == MAP_FAILED) {
      const int e = errno;
      ::munmap(d, len);
      return make_error(ErrorCode::io, path_ + ": cannot move the weights into memory: " + std::strerror(e));
    }
    for (size_t j = k; j <= k_end; ++j) held_->stretch[j] = true;
    held_->held += len;
    done += len;
    k = k_end + 1;
  }
  return done;
}

uint64_t File::release_memory(uint64_t offset, uint64_t n) const {
  if (!held_ || n == 0 || offset >= size_) return 0;
  n = std::min(n, size_ - offset);
  const uint64_t page = page_bytes();
  const auto base = reinterpret_cast<uintptr_t>(mapping_);
  const uintptr_t map_end = base + (size_ + page - 1) / page * page;
  const uintptr_t origin = base / k_stretch * k_stretch;
  const uintptr_t lo = base + offset, hi = base + offset + n;
  std::lock_guard<std::mutex> lock(held_->mu);
  uint64_t released = 0;
  // Whole pages of [lo, hi), stretch by stretch: a held stretch wholly inside maps the file again;
  // a held one partly inside stays (its other part is in use); pages of the file are dropped.
  for (uintptr_t s = (lo - origin) / k_stretch * k_stretch + origin; s < hi; s += k_stretch) {
    const size_t k = (s - origin) / k_stretch;
    const uintptr_t w0 = std::max<uintptr_t>(base, s), w1 = std::min<uintptr_t>(map_end, s + k_stretch);
    const bool held = k < held_->stretch.size() && held_->stretch[k];
    if (held) {
      const uintptr_t hi_pages = hi >= base + size_ ? map_end : hi;  // (to the end of the file: its last page)
      if (lo > w0 || hi_pages < w1) continue;
      void* m = ::mmap(reinterpret_cast<void*>(w0), static_cast<size_t>(w1 - w0), PROT_READ, MAP_PRIVATE | MAP_FIXED,
                       held_->fd, static_cast<off_t>(w0 - base));
      if (m == MAP_FAILED) continue;  // stays held: the same bytes either way
      held_->stretch[k] = false;
      held_->held -= w1 - w0;
      released += w1 - w0;
      continue;
    }
    const uintptr_t p0 = (std::max(lo, w0) + page - 1) / page * page;
    const uintptr_t p1 = std::min(hi, w1) / page * page;
    if (p1 > p0) (void)::madvise(reinterpret_cast<void*>(p0), static_cast<size_t>(p1 - p0), MADV_DONTNEED);
  }
  return released;
}

uint64_t File::held_bytes() const {
  if (!held_) return 0;
  std::lock_guard<std::mutex> lock(held_->mu);
  return held_->held;
}

File::~File() {
  if (mapping_ != nullptr) munmap(mapping_, static_cast<size_t>(size_));
}

Expected<File> File::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return make_error(ErrorCode::io, path + ": cannot open: " + std::strerror(e));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return make_error(ErrorCode::io, path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(ErrorCode::io, path + ": not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  File f;
  f.path_ = path;
  if (size == 0) {
    ::close(fd);
    return parse(std::move(f));  // reports the truncated header
  }
  if (size > std::numeric_limits<size_t>::max()) {
    ::close(fd);
    return make_error(ErrorCode::io, path + ": file too large to map");
  }
  void* m = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  if (m == MAP_FAILED) {
    ::close(fd);
    return make_error(ErrorCode::io, path + ": mmap failed: " + std::strerror(e));
  }
  f.mapping_ = m;
  f.held_ = std::make_unique<Held>(fd);  // keeps the file open to map it again (release_memory)
  f.base_ = static_cast<const uint8_t*>(m);
  f.size_ = size;
  return parse(std::move(f));
}

namespace {
constexpr std::align_val_t k_owned_alignment{64};
}  // namespace

void File::AlignedDelete::operator()(uint8_t* p) const noexcept { ::operator delete[](p, k_owned_alignment); }

Expected<File> File::from_bytes(std::span<const uint8_t> bytes, std::string name) {
  File f;
  f.path_ = std::move(name);
  // Exactly bytes.size() (so ASan sees any overread), aligned like the tensors want to be.
  f.owned_.reset(static_cast<uint8_t*>(::operator new[](bytes.size(), k_owned_alignment)));
  if (!bytes.empty()) std::memcpy(f.owned_.get(), bytes.data(), bytes.size());
  f.base_ = f.owned_.get();
  f.size_ = bytes.size();
  return parse(std::move(f));
}

Expected<File> File::parse(File f) {
  Parser p(f.base_, f.size_, f.path_);
#define LL_READ(expr) \
  if (!(expr)) return std::move(p.error())

  // Header.
  uint32_t magic = 0;
  LL_READ(p.scalar(magic, "header (magic)"));
  if (magic != k_magic) {
    const uint8_t* m = p.at(0);
    std::string shown;
    for (int i = 0; i < 4; ++i) {
      static constexpr char hex[] = "0123456789abcdef";
      shown += hex[m[i] >> 4];
      shown += hex[m[i] & 15];
    }
    return p.fail(ErrorCode::parse, 0, "bad magic 0x" + shown + " (expected \"GGUF\"): not a GGUF file");
  }
  const uint64_t version_at = p.pos();
  uint32_t version = 0;
  LL_READ(p.scalar(version, "header (version)"));
  if (version != 2 && version != 3) {
    const uint32_t swapped =
        (version >> 24) | ((version >> 8) & 0xff00u) | ((version << 8) & 0xff0000u) | (version << 24);
    if (swapped == 2 || swapped == 3) {
      return p.fail(ErrorCode::unsupported, version_at, "big-endian GGUF files are not supported");
    }
    return p.fail(ErrorCode::unsupported, version_at,
                  "GGUF version " + std::to_string(version) + " is not supported (only versions 2 and 3)");
  }
  f.version_ = version;
  const uint64_t counts_at = p.pos();
  uint64_t n_tensors = 0;
  uint64_t n_kv = 0;
  LL_READ(p.scalar(n_tensors, "header (tensor count)"));
  LL_READ(p.scalar(n_kv, "header (metadata count)"));
  // Bound both counts by the bytes left before reserving anything.
  if (n_kv > p.left() / k_min_kv_bytes) {
    return p.fail(ErrorCode::parse, counts_at + 8,
                  "header claims " + std::to_string(n_kv) +
                      " metadata entries, which would run past the end of the file (" + std::to_string(p.left()) +
                      " bytes left)");
  }
  if (n_tensors > p.left() / k_min_tensor_info_bytes) {
    return p.fail(ErrorCode::parse, counts_at,
                  "header claims " + std::to_string(n_tensors) +
                      " tensors, which would run past the end of the file (" + std::to_string(p.left()) +
                      " bytes left)");
  }

  // Metadata.
  f.kv_.reserve(static_cast<size_t>(n_kv));
  std::unordered_set<std::string_view> seen;  // views into the file bytes, which do not move
  seen.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const uint64_t key_at = p.pos();
    std::string_view key;
    p.set_context("metadata entry " + std::to_string(i));
    LL_READ(p.string(key, "key"));
    p.set_context("key " + quote(key));
    if (!seen.insert(key).second) return p.fail(ErrorCode::parse, key_at, "duplicate " + p.context());
    ValueType type = ValueType::u8;
    LL_READ(p.value_type(type, "value type"));
    const uint64_t value_at = p.pos();
    auto& kv = f.kv_.emplace_back(std::string(key), Value{});
    LL_READ(p.value(type, 0, kv.second));
    if (key == k_alignment_key) {
      const auto* a = std::get_if<uint32_t>(&kv.second.v);
      if (a == nullptr) {
        return p.fail(ErrorCode::parse, value_at,
                      std::string(k_alignment_key) + " has type " + describe_type(kv.second) + ", expected u32");
      }
      if (!is_pow2(*a)) {
        return p.fail(ErrorCode::parse, value_at,
                      std::string(k_alignment_key) + " " + std::to_string(*a) + " is not a power of two");
      }
      f.alignment_ = *a;
    }
  }

  // Tensor infos.
  f.tensors_.reserve(static_cast<size_t>(n_tensors));
  std::vector<TensorPos> positions;
  positions.reserve(static_cast<size_t>(n_tensors));
  seen.clear();
  seen.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorPos pos{p.pos(), 0};
    std::string_view name;
    p.set_context("tensor " + std::to_string(i));
    LL_READ(p.string(name, "name"));
    p.set_context("tensor " + quote(name));
    const std::string& ctx = p.context();
    if (!seen.insert(name).second) return p.fail(ErrorCode::parse, pos.info_at, "duplicate " + ctx);
    const uint64_t dims_at = p.pos();
    uint32_t n_dims = 0;
    LL_READ(p.scalar(n_dims, "dimension count"));
    if (n_dims == 0 || n_dims > k_max_dims) {
      return p.fail(ErrorCode::parse, dims_at,
                    ctx + " has " + std::to_string(n_dims) + " dimensions (1 to " + std::to_string(k_max_dims) +
                        " are allowed)");
    }
    TensorInfo t;
    t.name = std::string(name);
    t.shape.resize(n_dims);
    for (auto& d : t.shape) LL_READ(p.scalar(d, "shape"));
    const uint64_t type_at = p.pos();
    uint32_t type_id = 0;
    LL_READ(p.scalar(type_id, "type"));
    const std::optional<DType> type = dtype_from_id(type_id);
    if (!type) {
      if (ggml_type_id_name(type_id) == "unknown") {
        return p.fail(ErrorCode::parse, type_at, ctx + " has unknown type id " + std::to_string(type_id));
      }
      return p.fail(ErrorCode::unsupported, type_at,
                    ctx + " has type " + type_id_string(type_id) + ", which is not supported");
    }
    t.type = *type;
    const std::string fault = tensor_size(t.type, t.shape, t.n_elements, t.n_bytes);
    if (!fault.empty()) return p.fail(ErrorCode::parse, dims_at, ctx + " " + fault);
    pos.offset_at = p.pos();
    LL_READ(p.scalar(t.offset, "data offset"));
    f.tensors_.push_back(std::move(t));
    positions.push_back(pos);
  }
#undef LL_READ

  // Data section: starts at the end of the header rounded up to the alignment.
  const uint64_t header_end = p.pos();
  if (!align_up(header_end, f.alignment_, f.data_offset_)) {
    return p.fail(ErrorCode::parse, header_end, "data section offset overflows");
  }
  const uint64_t data_size = f.data_offset_ <= f.size_ ? f.size_ - f.data_offset_ : 0;
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    TensorInfo& t = f.tensors_[i];
    const std::string ctx = "tensor " + quote(t.name);
    if (t.offset % f.alignment_ != 0) {
      return p.fail(ErrorCode::parse, positions[i].offset_at,
                    ctx + " data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                        std::to_string(f.alignment_));
    }
    if (t.n_bytes > k_u64_max - t.offset) {
      return p.fail(ErrorCode::parse, positions[i].offset_at,
                    ctx + " data offset " + std::to_string(t.offset) + " + size " + std::to_string(t.n_bytes) +
                        " overflows");
    }
    if (t.offset + t.n_bytes > data_size) {
      return p.fail(ErrorCode::parse, positions[i].offset_at,
                    ctx + " data (offset " + std::to_string(t.offset) + ", " + std::to_string(t.n_bytes) +
                        " bytes) runs past the end of the file (the data section holds " +
                        std::to_string(data_size) + " bytes)");
    }
    t.data = f.base_ + f.data_offset_ + t.offset;
  }

  // Lookup indexes; the views point at strings whose storage stays put from here on.
  std::vector<std::string_view> names;
  names.reserve(f.kv_.size());
  for (const auto& kv : f.kv_) names.push_back(kv.first);
  f.kv_index_ = build_index<decltype(f.kv_index_)>(names);
  names.clear();
  for (const auto& t : f.tensors_) names.push_back(t.name);
  f.tensor_index_ = build_index<decltype(f.tensor_index_)>(names);
  return f;
}

const Value* File::find(std::string_view key) const {
  const auto* e = lookup(kv_index_, key);
  return e == nullptr ? nullptr : &kv_[e->second].second;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  const auto* e = lookup(tensor_index_, name);
  return e == nullptr ? nullptr : &tensors_[e->second];
}

namespace {

Error not_found(const std::string& path, std::string_view key) {
  return make_error(ErrorCode::not_found, path + ": key " + quote(key) + " not found");
}

Error wrong_type(const std::string& path, std::string_view key, const Value& v, std::string_view expected) {
  return make_error(ErrorCode::parse, path + ": key " + quote(key) + " has type " + describe_type(v) +
                                          ", expected " + std::string(expected));
}

}  // namespace

Expected<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return not_found(path_, key);
  const std::string* s = v->as_string();
  if (s == nullptr) return wrong_type(path_, key, *v, "string");
  return *s;
}

Expected<uint64_t> File::get_u64(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return not_found(path_, key);
  uint64_t out = 0;
  if (v->type() == ValueType::boolean || !v->as_u64(out)) {
    int64_t neg = 0;
    if (v->as_i64(neg) && neg < 0) {
      return make_error(ErrorCode::parse, path_ + ": key " + quote(key) + " is " + std::to_string(neg) +
                                              ", expected a non-negative integer");
    }
    return wrong_type(path_, key, *v, "a non-negative integer");
  }
  return out;
}

Expected<double> File::get_f64(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return not_found(path_, key);
  double out = 0;
  if (!v->as_f64(out)) return wrong_type(path_, key, *v, "a number");
  return out;
}

Expected<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return not_found(path_, key);
  const bool* b = std::get_if<bool>(&v->v);
  if (b == nullptr) return wrong_type(path_, key, *v, "bool");
  return *b;
}

Expected<std::vector<std::string>> File::get_string_array(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return not_found(path_, key);
  const Array* a = v->as_array();
  if (a == nullptr || a->elem_type != ValueType::string) return wrong_type(path_, key, *v, "array of string");
  std::vector<std::string> out;
  out.reserve(a->items.size());
  for (const Value& item : a->items) out.push_back(*item.as_string());  // homogeneous by construction
  return out;
}

Expected<std::vector<float>> File::get_f32_array(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return not_found(path_, key);
  const Array* a = v->as_array();
  const auto numeric = [](ValueType t) {
    return t != ValueType::string && t != ValueType::array && t != ValueType::boolean;
  };
  if (a == nullptr || !numeric(a->elem_type)) return wrong_type(path_, key, *v, "array of numbers");
  std::vector<float> out;
  out.reserve(a->items.size());
  for (const Value& item : a->items) {
    double d = 0;
    if (!item.as_f64(d)) return wrong_type(path_, key, *v, "array of numbers");
    out.push_back(static_cast<float>(d));
  }
  return out;
}

Expected<std::vector<int64_t>> File::get_i64_array(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return not_found(path_, key);
  const Array* a = v->as_array();
  const auto integer = [](ValueType t) {
    switch (t) {
      case ValueType::u8: case ValueType::i8: case ValueType::u16: case ValueType::i16: case ValueType::u32:
      case ValueType::i32: case ValueType::u64: case ValueType::i64: return true;
      default: return false;
    }
  };
  if (a == nullptr || !integer(a->elem_type)) return wrong_type(path_, key, *v, "array of integers");
  std::vector<int64_t> out;
  out.reserve(a->items.size());
  for (size_t i = 0; i < a->items.size(); ++i) {
    int64_t x = 0;
    if (!a->items[i].as_i64(x)) {
      return make_error(ErrorCode::parse, path_ + ": key " + quote(key) + " element " + std::to_string(i) +
                                              " does not fit in i64");
    }
    out.push_back(x);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

void put_bytes(std::vector<uint8_t>& buf, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  buf.insert(buf.end(), b, b + n);
}

template <class T>
void put(std::vector<uint8_t>& buf, T x) {
  put_bytes(buf, &x, sizeof(x));
}

void put_string(std::vector<uint8_t>& buf, std::string_view s) {
  put<uint64_t>(buf, s.size());
  put_bytes(buf, s.data(), s.size());
}

// The payload of a value (without its type tag).
void put_value(std::vector<uint8_t>& buf, const Value& value) {
  std::visit(
      [&buf](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          put_string(buf, x);
        } else if constexpr (std::is_same_v<T, Array>) {
          put<uint32_t>(buf, static_cast<uint32_t>(x.elem_type));
          put<uint64_t>(buf, x.items.size());
          for (const Value& item : x.items) put_value(buf, item);
        } else if constexpr (std::is_same_v<T, bool>) {
          put<uint8_t>(buf, x ? 1 : 0);
        } else {
          put<T>(buf, x);
        }
      },
      value.v);
}

// Checks that arrays are homogeneous and not nested deeper than the reader accepts.
std::string check_value(const Value& value, size_t depth) {
  const Array* a = value.as_array();
  if (a == nullptr) return {};
  const size_t level = depth + 1;
  if (level > k_max_array_depth || (level == k_max_array_depth && a->elem_type == ValueType::array)) {
    return "arrays nested more than " + std::to_string(k_max_array_depth) + " deep";
  }
  if (static_cast<uint32_t>(a->elem_type) >= k_n_value_types) return "array has an invalid element type";
  for (size_t i = 0; i < a->items.size(); ++i) {
    if (a->items[i].type() != a->elem_type) {
      return "array element " + std::to_string(i) + " has type " + std::string(value_type_name(a->items[i].type())) +
             ", but the array holds " + std::string(value_type_name(a->elem_type));
    }
    std::string fault = check_value(a->items[i], level);
    if (!fault.empty()) return fault;
  }
  return {};
}

// Owns the temporary file of a write; removes it unless committed.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (f_ != nullptr) std::fclose(f_);
    if (created_) std::remove(path_.c_str());
  }
  bool open() {
    f_ = std::fopen(path_.c_str(), "wb");
    created_ = f_ != nullptr;
    return created_;
  }
  bool write(const void* p, size_t n) { return n == 0 || std::fwrite(p, 1, n, f_) == n; }
  // Flush, sync and close; false (errno set) on failure.
  bool close() {
    bool ok = std::fflush(f_) == 0;
    int e = errno;
    if (ok && fsync(fileno(f_)) != 0 && errno != EINVAL && errno != EROFS) {
      ok = false;
      e = errno;
    }
    if (std::fclose(f_) != 0 && ok) {
      ok = false;
      e = errno;
    }
    f_ = nullptr;
    errno = e;
    return ok;
  }
  void commit() { created_ = false; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  bool created_ = false;
};

}  // namespace

void Writer::set(std::string key, Value value) {
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

Expected<void> Writer::add_tensor(std::string name, DType type, std::vector<uint64_t> shape, Fill fill) {
  if (name.empty()) return make_error(ErrorCode::invalid_argument, "gguf writer: tensor name is empty");
  for (const auto& t : tensors_) {
    if (t.name == name) {
      return make_error(ErrorCode::invalid_argument, "gguf writer: tensor " + quote(name) + " added twice");
    }
  }
  if (!fill) return make_error(ErrorCode::invalid_argument, "gguf writer: tensor " + quote(name) + " has no fill");
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const std::string fault = tensor_size(type, shape, n_elements, n_bytes);
  if (!fault.empty()) {
    return make_error(ErrorCode::invalid_argument, "gguf writer: tensor " + quote(name) + " " + fault);
  }
  tensors_.push_back(PendingTensor{std::move(name), type, std::move(shape), n_bytes, std::move(fill)});
  return {};
}

Expected<void> Writer::add_tensor_bytes(std::string name, DType type, std::vector<uint64_t> shape,
                                        std::span<const uint8_t> data) {
  auto copy = std::make_shared<std::vector<uint8_t>>(data.begin(), data.end());
  const std::string shown = quote(name);
  LL_TRY(add_tensor(std::move(name), type, std::move(shape), [copy](std::span<uint8_t> dst) -> Expected<void> {
    std::memcpy(dst.data(), copy->data(), dst.size());
    return {};
  }));
  if (tensors_.back().n_bytes != data.size()) {
    const uint64_t want = tensors_.back().n_bytes;
    tensors_.pop_back();
    return make_error(ErrorCode::invalid_argument, "gguf writer: tensor " + shown + " needs " +
                                                       std::to_string(want) + " bytes, got " +
                                                       std::to_string(data.size()));
  }
  return {};
}

// Receives the file's bytes in order. begin() is called once, after validation and layout and
// before any byte, with the total size: the file sink creates its temporary file only then, so
// that invalid input leaves nothing behind, and the vector sink allocates once.
class Writer::Sink {
 public:
  std::function<Expected<void>(uint64_t total_bytes)> begin;
  std::function<Expected<void>(std::span<const uint8_t> bytes)> put;
};

Expected<void> Writer::emit(const std::string& name, Sink& sink,
                            const std::function<void(uint64_t, uint64_t)>& progress) const {
  if (!is_pow2(alignment)) {
    return make_error(ErrorCode::invalid_argument,
                      name + ": alignment " + std::to_string(alignment) + " is not a power of two");
  }
  // general.alignment must agree with the alignment we lay the data out with.
  bool has_alignment_key = false;
  for (const auto& [key, value] : kv_) {
    if (key != k_alignment_key) continue;
    has_alignment_key = true;
    const auto* a = std::get_if<uint32_t>(&value.v);
    if (a == nullptr || *a != alignment) {
      return make_error(ErrorCode::invalid_argument,
                        name + ": general.alignment must be the u32 " + std::to_string(alignment) +
                            " (set Writer::alignment instead)");
    }
  }
  const bool add_alignment_key = !has_alignment_key && alignment != k_default_alignment;
  for (const auto& [key, value] : kv_) {
    const std::string fault = check_value(value, 0);
    if (!fault.empty()) return make_error(ErrorCode::invalid_argument, name + ": key " + quote(key) + ": " + fault);
  }

  // Header, tensor infos and the padding before the data section.
  std::vector<uint8_t> header;
  put<uint32_t>(header, k_magic);
  put<uint32_t>(header, k_write_version);
  put<uint64_t>(header, tensors_.size());
  put<uint64_t>(header, kv_.size() + (add_alignment_key ? 1 : 0));
  for (const auto& [key, value] : kv_) {
    put_string(header, key);
    put<uint32_t>(header, static_cast<uint32_t>(value.type()));
    put_value(header, value);
  }
  if (add_alignment_key) {
    put_string(header, k_alignment_key);
    put<uint32_t>(header, static_cast<uint32_t>(ValueType::u32));
    put<uint32_t>(header, alignment);
  }
  uint64_t offset = 0;
  uint64_t total_bytes = 0;
  for (const auto& t : tensors_) {
    put_string(header, t.name);
    put<uint32_t>(header, static_cast<uint32_t>(t.shape.size()));
    for (uint64_t d : t.shape) put<uint64_t>(header, d);
    put<uint32_t>(header, static_cast<uint32_t>(t.type));
    put<uint64_t>(header, offset);
    uint64_t next = 0;
    if (t.n_bytes > k_u64_max - offset || !align_up(offset + t.n_bytes, alignment, next)) {
      return make_error(ErrorCode::invalid_argument, name + ": total tensor size overflows");
    }
    offset = next;
    total_bytes += t.n_bytes;
  }
  uint64_t padded = 0;
  if (!align_up(header.size(), alignment, padded) || offset > k_u64_max - padded) {
    return make_error(ErrorCode::invalid_argument, name + ": header size overflows");
  }
  header.resize(static_cast<size_t>(padded), 0);

  LL_TRY(sink.begin(padded + offset));
  LL_TRY(sink.put(header));
  header = {};

  std::vector<uint8_t> buf;
  static const uint8_t zeros[256] = {};
  uint64_t done = 0;
  for (const auto& t : tensors_) {
    try {
      buf.assign(static_cast<size_t>(t.n_bytes), 0);
    } catch (const std::bad_alloc&) {
      return make_error(ErrorCode::resource, name + ": cannot allocate " + std::to_string(t.n_bytes) +
                                                 " bytes for tensor " + quote(t.name));
    }
    Expected<void> filled = t.fill(std::span<uint8_t>(buf.data(), buf.size()));
    if (!filled) {
      return make_error(filled.error().code, name + ": tensor " + quote(t.name) + ": " + filled.error().message);
    }
    LL_TRY(sink.put(buf));
    uint64_t end = 0;
    (void)align_up(t.n_bytes, alignment, end);  // cannot overflow: checked while laying out
    for (uint64_t pad = end - t.n_bytes; pad > 0;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof(zeros)));
      LL_TRY(sink.put(std::span<const uint8_t>(zeros, n)));
      pad -= n;
    }
    done += t.n_bytes;
    if (progress) progress(done, total_bytes);
  }
  return {};
}

Expected<void> Writer::write(const std::string& path, const std::function<void(uint64_t, uint64_t)>& progress) const {
  TempFile tmp(path + ".tmp");
  const auto io_error = [&](const char* what) {
    const int e = errno;
    return make_error(ErrorCode::io, path + ": " + what + " '" + tmp.path() + "': " + std::strerror(e));
  };
  Sink sink;
  sink.begin = [&](uint64_t) -> Expected<void> {
    if (!tmp.open()) return io_error("cannot create");
    return {};
  };
  sink.put = [&](std::span<const uint8_t> bytes) -> Expected<void> {
    if (!tmp.write(bytes.data(), bytes.size())) return io_error("write failed on");
    return {};
  };
  LL_TRY(emit(path, sink, progress));
  if (!tmp.close()) return io_error("write failed on");
  if (std::rename(tmp.path().c_str(), path.c_str()) != 0) {
    const int e = errno;
    return make_error(ErrorCode::io, path + ": cannot rename '" + tmp.path() + "' to it: " + std::strerror(e));
  }
  tmp.commit();
  return {};
}

Expected<std::vector<uint8_t>> Writer::to_bytes() const {
  const std::string name = "gguf writer";
  std::vector<uint8_t> out;
  Sink sink;
  sink.begin = [&](uint64_t total_bytes) -> Expected<void> {
    try {
      if (total_bytes > out.max_size()) throw std::bad_alloc();
      out.reserve(static_cast<size_t>(total_bytes));
    } catch (const std::bad_alloc&) {
      return make_error(ErrorCode::resource,
                        name + ": cannot allocate " + std::to_string(total_bytes) + " bytes for the file");
    }
    return {};
  };
  sink.put = [&](std::span<const uint8_t> bytes) -> Expected<void> {
    out.insert(out.end(), bytes.begin(), bytes.end());  // within the reserved size: no allocation
    return {};
  };
  LL_TRY(emit(name, sink, {}));
  return out;
}

}  // namespace ll::gguf
