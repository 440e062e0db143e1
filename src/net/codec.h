// The one codec for every byte that crosses the wire: fixed-width little-endian fields.
//
// Writer appends fields to a byte buffer; Reader walks a span of untrusted bytes. Integers are built
// from / split into bytes with shifts, so the encoding is the same on little- and big-endian hosts;
// floats travel as the little-endian bytes of their IEEE-754 bit pattern (f32: u32 bits, f64: u64
// bits). Nothing is padded and no struct is ever copied onto the wire.
//
//   u8 u16 u32 u64      1/2/4/8 bytes, least significant byte first
//   i32 i64             two's complement, as u32/u64
//   f32 f64             IEEE bits as u32/u64
//   string, bytes       u32 n | n bytes   (strings: no terminator, not checked for UTF-8)
//   f32/f16/i32 arrays  n elements back to back, no count (the count is a separate, earlier field)
//
// Reader never reads out of bounds: every read checks the bytes left first; every length or count
// is checked against a caller-given limit and against the bytes left before anything is allocated,
// so a reader allocates at most a small multiple of its input's size. Errors are ErrorCode::parse
// with a message "<context>: <field>: <fault> (at byte N)", N counted from the start of the span.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ll::net {

class Writer {
 public:
  Writer() = default;
  explicit Writer(std::vector<uint8_t> initial) : buf_(std::move(initial)) {}

  void u8(uint8_t v) { buf_.push_back(v); }
  void u16(uint16_t v);
  void u32(uint32_t v);
  void u64(uint64_t v);
  void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void f32(float v);
  void f64(double v);
  void raw(std::span<const uint8_t> bytes);          // no length prefix
  void string(std::string_view s);                   // u32 length + bytes; aborts if > 4 GiB (a bug)
  void bytes(std::span<const uint8_t> b);            // u32 length + bytes; aborts if > 4 GiB (a bug)
  void f32_array(std::span<const float> values);     // 4 bytes each
  void f16_array(std::span<const float> values);     // 2 bytes each: IEEE half, round to nearest even
  void i32_array(std::span<const int32_t> values);   // 4 bytes each
  void u32_array(std::span<const uint32_t> values);  // 4 bytes each

  // Overwrites 4 bytes at `offset` (already written) with v, little-endian.
  void patch_u32(size_t offset, uint32_t v);
  void reserve(size_t n) { buf_.reserve(n); }

  size_t size() const { return buf_.size(); }
  const std::vector<uint8_t>& buffer() const { return buf_; }
  std::vector<uint8_t> take() { return std::move(buf_); }

 private:
  std::vector<uint8_t> buf_;
};

class Reader {
 public:
  // `context` prefixes every error message (e.g. "ACTIVATION_BATCH"). The span must outlive the Reader
  // and every span it returns.
  Reader(std::span<const uint8_t> data, std::string_view context) : data_(data), context_(context) {}

  // Replaces the error-message prefix (the string must outlive its use), e.g. for list elements.
  void set_context(std::string_view context) { context_ = context; }

  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  bool at_end() const { return pos_ == data_.size(); }

  Expected<uint8_t> u8(std::string_view field);
  Expected<uint16_t> u16(std::string_view field);
  Expected<uint32_t> u32(std::string_view field);
  Expected<uint64_t> u64(std::string_view field);
  Expected<int32_t> i32(std::string_view field);
  Expected<int64_t> i64(std::string_view field);
  Expected<float> f32(std::string_view field);
  Expected<double> f64(std::string_view field);

  // u32 length (at most max_bytes) + that many bytes.
  Expected<std::string> string(std::string_view field, size_t max_bytes);
  // u32 length (at most max_bytes) + that many bytes, as a view into the input.
  Expected<std::span<const uint8_t>> bytes(std::string_view field, size_t max_bytes);
  // Exactly n bytes (no length prefix), as a view into the input.
  Expected<std::span<const uint8_t>> raw(std::string_view field, size_t n);
  // A u32 element count, at most `max`, whose elements (each at least min_bytes_each bytes on the
  // wire, > 0) fit in the bytes left. Use before reserving or resizing for the elements.
  Expected<uint32_t> count(std::string_view field, uint32_t max, size_t min_bytes_each);

  // n elements into `out` (resized to n only after checking that n elements fit in the bytes left).
  Expected<void> f32_array(std::string_view field, size_t n, std::vector<float>& out);
  Expected<void> f16_array(std::string_view field, size_t n, std::vector<float>& out);  // half -> F32
  Expected<void> i32_array(std::string_view field, size_t n, std::vector<int32_t>& out);
  Expected<void> u32_array(std::string_view field, size_t n, std::vector<uint32_t>& out);

  // Fails when bytes are left over ("N trailing bytes").
  Expected<void> expect_end();

  // An ErrorCode::parse error about `field` at the current offset (for checks made by the caller).
  Error error(std::string_view field, std::string_view fault) const;
  Error error_at(size_t offset, std::string_view field, std::string_view fault) const;

 private:
  // Checks that n bytes are left; the error names `field`.
  Expected<void> need(std::string_view field, size_t n) const;
  // Checks that n elements of elem_bytes (> 0) each are left, without overflow.
  Expected<void> need_elems(std::string_view field, size_t n, size_t elem_bytes) const;

  std::span<const uint8_t> data_;
  size_t pos_ = 0;
  std::string_view context_;
};

// Little-endian loads from raw bytes (caller guarantees the bytes exist).
inline uint16_t load_u16_le(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
inline uint32_t load_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t load_u64_le(const uint8_t* p) {
  return static_cast<uint64_t>(load_u32_le(p)) | (static_cast<uint64_t>(load_u32_le(p + 4)) << 32);
}
inline void store_u32_le(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

// a * b and a + b, or false if the result does not fit in uint64_t.
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}
inline bool checked_add(uint64_t a, uint64_t b, uint64_t& out) {
  return !__builtin_add_overflow(a, b, &out);
}

}  // namespace ll::net
