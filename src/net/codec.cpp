#include "net/codec.h"

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/fp16.h"

namespace ll::net {

namespace {

constexpr bool k_little_endian_host = std::endian::native == std::endian::little;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "ll::net::Writer: %s\n", what);
  std::abort();
}

uint32_t checked_length(size_t n) {
  if (n > std::numeric_limits<uint32_t>::max()) die("length does not fit in u32");
  return static_cast<uint32_t>(n);
}

}  // namespace

// ---------------------------------------------------------------------------------------------- Writer

void Writer::u16(uint16_t v) {
  buf_.push_back(static_cast<uint8_t>(v));
  buf_.push_back(static_cast<uint8_t>(v >> 8));
}

void Writer::u32(uint32_t v) {
  const size_t at = buf_.size();
  buf_.resize(at + 4);
  store_u32_le(buf_.data() + at, v);
}

void Writer::u64(uint64_t v) {
  u32(static_cast<uint32_t>(v));
  u32(static_cast<uint32_t>(v >> 32));
}

void Writer::f32(float v) {
  u32(std::bit_cast<uint32_t>(v));
}
void Writer::f64(double v) {
  u64(std::bit_cast<uint64_t>(v));
}

void Writer::raw(std::span<const uint8_t> bytes) {
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

void Writer::string(std::string_view s) {
  u32(checked_length(s.size()));
  buf_.insert(buf_.end(), s.begin(), s.end());
}

void Writer::bytes(std::span<const uint8_t> b) {
  u32(checked_length(b.size()));
  raw(b);
}

void Writer::f32_array(std::span<const float> values) {
  const size_t at = buf_.size();
  buf_.resize(at + values.size() * 4);
  uint8_t* p = buf_.data() + at;
  if constexpr (k_little_endian_host) {
    // The host's float bytes already are the little-endian IEEE bits the wire wants.
    if (!values.empty()) std::memcpy(p, values.data(), values.size() * 4);
  } else {
    for (size_t i = 0; i < values.size(); ++i) store_u32_le(p + 4 * i, std::bit_cast<uint32_t>(values[i]));
  }
}

void Writer::f16_array(std::span<const float> values) {
  const size_t at = buf_.size();
  buf_.resize(at + values.size() * 2);
  uint8_t* p = buf_.data() + at;
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = fp32_to_fp16(values[i]);
    p[2 * i] = static_cast<uint8_t>(h);
    p[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
}

void Writer::i32_array(std::span<const int32_t> values) {
  const size_t at = buf_.size();
  buf_.resize(at + values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i)
    store_u32_le(buf_.data() + at + 4 * i, static_cast<uint32_t>(values[i]));
}

void Writer::u32_array(std::span<const uint32_t> values) {
  const size_t at = buf_.size();
  buf_.resize(at + values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) store_u32_le(buf_.data() + at + 4 * i, values[i]);
}

void Writer::patch_u32(size_t offset, uint32_t v) {
  if (offset > buf_.size() || buf_.size() - offset < 4) die("patch_u32 outside the buffer");
  store_u32_le(buf_.data() + offset, v);
}

// ---------------------------------------------------------------------------------------------- Reader

Error Reader::error_at(size_t offset, std::string_view field, std::string_view fault) const {
  std::string m;
  m.reserve(context_.size() + field.size() + fault.size() + 32);
  m.append(context_).append(": ").append(field).append(": ").append(fault);
  m.append(" (at byte ").append(std::to_string(offset)).append(")");
  return make_error(ErrorCode::parse, std::move(m));
}

Error Reader::error(std::string_view field, std::string_view fault) const {
  return error_at(pos_, field, fault);
}

Expected<void> Reader::need(std::string_view field, size_t n) const {
  if (n > remaining()) {
    return error(
        field, "truncated: needs " + std::to_string(n) + " bytes, " + std::to_string(remaining()) + " left");
  }
  return {};
}

Expected<void> Reader::need_elems(std::string_view field, size_t n, size_t elem_bytes) const {
  if (n > remaining() / elem_bytes) {  // n * elem_bytes > remaining, without overflow
    return error(field, "truncated: needs " + std::to_string(n) + " elements of " +
                            std::to_string(elem_bytes) + " bytes, " + std::to_string(remaining()) +
                            " bytes left");
  }
  return {};
}

Expected<uint8_t> Reader::u8(std::string_view field) {
  LL_TRY(need(field, 1));
  return data_[pos_++];
}

Expected<uint16_t> Reader::u16(std::string_view field) {
  LL_TRY(need(field, 2));
  const uint16_t v = load_u16_le(data_.data() + pos_);
  pos_ += 2;
  return v;
}

Expected<uint32_t> Reader::u32(std::string_view field) {
  LL_TRY(need(field, 4));
  const uint32_t v = load_u32_le(data_.data() + pos_);
  pos_ += 4;
  return v;
}

Expected<uint64_t> Reader::u64(std::string_view field) {
  LL_TRY(need(field, 8));
  const uint64_t v = load_u64_le(data_.data() + pos_);
  pos_ += 8;
  return v;
}

Expected<int32_t> Reader::i32(std::string_view field) {
  LL_ASSIGN_OR_RETURN(uint32_t v, u32(field));
  return static_cast<int32_t>(v);
}

Expected<int64_t> Reader::i64(std::string_view field) {
  LL_ASSIGN_OR_RETURN(uint64_t v, u64(field));
  return static_cast<int64_t>(v);
}

Expected<float> Reader::f32(std::string_view field) {
  LL_ASSIGN_OR_RETURN(uint32_t v, u32(field));
  return std::bit_cast<float>(v);
}

Expected<double> Reader::f64(std::string_view field) {
  LL_ASSIGN_OR_RETURN(uint64_t v, u64(field));
  return std::bit_cast<double>(v);
}

Expected<std::span<const uint8_t>> Reader::bytes(std::string_view field, size_t max_bytes) {
  const size_t at = pos_;
  LL_ASSIGN_OR_RETURN(uint32_t n, u32(field));
  if (n > max_bytes) {
    return error_at(at, field,
                    "length " + std::to_string(n) + " exceeds the limit " + std::to_string(max_bytes));
  }
  if (n > remaining()) {
    return error_at(
        at, field,
        "length " + std::to_string(n) + " exceeds the " + std::to_string(remaining()) + " bytes left");
  }
  std::span<const uint8_t> out = data_.subspan(pos_, n);
  pos_ += n;
  return out;
}

Expected<std::string> Reader::string(std::string_view field, size_t max_bytes) {
  LL_ASSIGN_OR_RETURN(std::span<const uint8_t> b, bytes(field, max_bytes));
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Expected<std::span<const uint8_t>> Reader::raw(std::string_view field, size_t n) {
  LL_TRY(need(field, n));
  std::span<const uint8_t> out = data_.subspan(pos_, n);
  pos_ += n;
  return out;
}

Expected<uint32_t> Reader::count(std::string_view field, uint32_t max, size_t min_bytes_each) {
  const size_t at = pos_;
  LL_ASSIGN_OR_RETURN(uint32_t n, u32(field));
  if (n > max)
    return error_at(at, field, "count " + std::to_string(n) + " exceeds the limit " + std::to_string(max));
  const size_t each = min_bytes_each == 0 ? 1 : min_bytes_each;
  if (n > remaining() / each) {  // n * each > remaining, without overflow
    return error_at(at, field,
                    "count " + std::to_string(n) + " of at least " + std::to_string(each) +
                        " bytes each exceeds the " + std::to_string(remaining()) + " bytes left");
  }
  return n;
}

Expected<void> Reader::f32_array(std::string_view field, size_t n, std::vector<float>& out) {
  LL_TRY(need_elems(field, n, 4));
  out.resize(n);
  const uint8_t* p = data_.data() + pos_;
  if constexpr (k_little_endian_host) {
    if (n != 0) std::memcpy(out.data(), p, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(load_u32_le(p + 4 * i));
  }
  pos_ += n * 4;
  return {};
}

Expected<void> Reader::f16_array(std::string_view field, size_t n, std::vector<float>& out) {
  LL_TRY(need_elems(field, n, 2));
  out.resize(n);
  const uint8_t* p = data_.data() + pos_;
  for (size_t i = 0; i < n; ++i) out[i] = fp16_to_fp32(load_u16_le(p + 2 * i));
  pos_ += n * 2;
  return {};
}

Expected<void> Reader::i32_array(std::string_view field, size_t n, std::vector<int32_t>& out) {
  LL_TRY(need_elems(field, n, 4));
  out.resize(n);
  const uint8_t* p = data_.data() + pos_;
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(load_u32_le(p + 4 * i));
  pos_ += n * 4;
  return {};
}

Expected<void> Reader::u32_array(std::string_view field, size_t n, std::vector<uint32_t>& out) {
  LL_TRY(need_elems(field, n, 4));
  out.resize(n);
  const uint8_t* p = data_.data() + pos_;
  for (size_t i = 0; i < n; ++i) out[i] = load_u32_le(p + 4 * i);
  pos_ += n * 4;
  return {};
}

Expected<void> Reader::expect_end() {
  if (!at_end()) return error("end", std::to_string(remaining()) + " trailing bytes after the last field");
  return {};
}

}  // namespace ll::net
