#include "net/protocol.h"
#include "net/security.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "net/codec.h"
#include "net/xxh64.h"

namespace ll::net {

namespace {

[[noreturn]] void encode_bug(const char* what) {
  std::fprintf(stderr, "ll::net::encode: %s\n", what);
  std::abort();
}

void require(bool ok, const char* what) {
  if (!ok) encode_bug(what);
}

std::string hex16(uint16_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04x", static_cast<unsigned>(v));
  return buf;
}

std::string hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

Error frame_error(std::string what) {
  return make_error(ErrorCode::parse, "frame: " + std::move(what));
}

// A float is finite iff its exponent bits are not all ones (checked on the bits, so no compiler
// flag can fold it away).
inline bool finite_f32(float f) {
  return (std::bit_cast<uint32_t>(f) & 0x7F800000u) != 0x7F800000u;
}

// A float for an error message: "%g", so NaN and infinities read as "nan" / "inf".
std::string float_text(float f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(f));
  return buf;
}

// ------------------------------------------------------------------------------------------- encoders

void put_tokens(Writer& w, const std::vector<TokenMeta>& tokens) {
  for (const TokenMeta& t : tokens) {
    w.i32(t.seq_id);
    w.i32(t.pos);
    w.u8(t.want_output ? 1 : 0);
  }
}

// u8 dtype | blob values, the values converted to the wire dtype.
void put_values(Writer& w, WireDType dtype, const std::vector<float>& values) {
  const size_t elem = wire_dtype_bytes(dtype);
  require(values.size() <= std::numeric_limits<uint32_t>::max() / elem, "values do not fit in a frame");
  w.u8(static_cast<uint8_t>(dtype));
  w.u32(static_cast<uint32_t>(values.size() * elem));
  if (dtype == WireDType::f16) {
    w.f16_array(values);
  } else {
    w.f32_array(values);
  }
}

void encode_payload(Writer& w, const Hello& m) {
  w.u16(m.protocol_version);
  w.u8(static_cast<uint8_t>(m.role));
  w.string(m.name);
  w.u32(m.n_threads);
  w.u64(m.free_memory_bytes);
  w.u64(m.memory_limit_bytes);
  w.string(m.cpu_features);
  w.string(m.auth_token);
}

void encode_payload(Writer& w, const Heartbeat& m) {
  w.u64(m.timestamp_us);
  w.u64(m.sequence);
}

void encode_payload(Writer& w, const ErrorMessage& m) {
  w.u16(static_cast<uint16_t>(m.code));
  w.u16(m.in_reply_to);
  w.string(m.message);
}

void encode_payload(Writer& w, const LoadSegment& m) {
  w.reserve(w.size() + 160 + m.next_endpoint.size() + m.metadata.size() + m.tensors.size() * 96);
  w.raw(m.model_hash);
  w.u32(m.unit_first);
  w.u32(m.unit_last);
  w.u32(m.n_ctx);
  w.string(m.next_endpoint);
  w.bytes(m.metadata);
  require(m.tensors.size() <= std::numeric_limits<uint32_t>::max(), "too many tensors");
  w.u32(static_cast<uint32_t>(m.tensors.size()));
  for (const TensorDesc& t : m.tensors) {
    w.string(t.name);
    w.u32(static_cast<uint32_t>(t.dtype));
    require(t.shape.size() <= std::numeric_limits<uint32_t>::max(), "too many dimensions");
    w.u32(static_cast<uint32_t>(t.shape.size()));
    for (uint64_t ne : t.shape) w.u64(ne);
    w.u64(t.n_bytes);
    w.raw(t.sha256);
  }
  w.string(m.next_public_key);
  w.string(m.upstream_public_key);
  w.u32(m.n_spare);
}

void encode_payload(Writer& w, const SegmentStatus& m) {
  w.u8(static_cast<uint8_t>(m.state));
  require(m.missing.size() <= std::numeric_limits<uint32_t>::max(), "too many missing tensors");
  w.u32(static_cast<uint32_t>(m.missing.size()));
  w.u32_array(m.missing);
  require(m.declined.size() <= std::numeric_limits<uint32_t>::max(), "too many declined tensors");
  w.u32(static_cast<uint32_t>(m.declined.size()));
  w.u32_array(m.declined);
}

void encode_payload(Writer& w, const TensorChunk& m) {
  w.reserve(w.size() + 32 + m.data.size());
  w.u32(m.tensor_index);
  w.u64(m.offset);
  w.u64(m.total_bytes);
  w.u64(xxh64(m.data));
  w.bytes(m.data);
}

void encode_payload(Writer& w, const ActivationBatch& m) {
  require(m.tokens.size() <= std::numeric_limits<uint32_t>::max(), "too many tokens");
  require(m.hidden.size() == m.tokens.size() * static_cast<size_t>(m.n_embd),
          "ActivationBatch: hidden.size() != tokens.size() * n_embd");
  w.reserve(w.size() + 16 + m.tokens.size() * k_token_wire_bytes +
            m.hidden.size() * wire_dtype_bytes(m.dtype));
  w.u32(static_cast<uint32_t>(m.tokens.size()));
  put_tokens(w, m.tokens);
  w.u32(m.n_embd);
  put_values(w, m.dtype, m.hidden);
}

void encode_payload(Writer& w, const Result& m) {
  require(m.tokens.size() <= std::numeric_limits<uint32_t>::max(), "too many rows");
  w.u8(static_cast<uint8_t>(m.kind));
  if (m.kind == ResultKind::token_ids) {
    require(m.token_ids.size() == m.tokens.size(), "Result: token_ids.size() != tokens.size()");
    require(m.values.empty() && m.width == 0, "Result: token_ids carry no values");
    w.reserve(w.size() + 8 + m.tokens.size() * (k_token_wire_bytes + 4));
    w.u32(static_cast<uint32_t>(m.tokens.size()));
    put_tokens(w, m.tokens);
    w.i32_array(m.token_ids);
    return;
  }
  require(m.kind == ResultKind::hidden || m.kind == ResultKind::logits, "Result: bad kind");
  require(m.token_ids.empty(), "Result: hidden/logits carry no token ids");
  require(m.values.size() == m.tokens.size() * static_cast<size_t>(m.width),
          "Result: values.size() != tokens.size() * width");
  w.reserve(w.size() + 16 + m.tokens.size() * k_token_wire_bytes +
            m.values.size() * wire_dtype_bytes(m.dtype));
  w.u32(static_cast<uint32_t>(m.tokens.size()));
  put_tokens(w, m.tokens);
  w.u32(m.width);
  put_values(w, m.dtype, m.values);
}

void encode_payload(Writer& w, const ReleaseSequence& m) {
  w.i32(m.seq_id);
}

void encode_payload(Writer& w, const Sampling& m) {
  w.i32(m.seq_id);
  w.f32(m.temperature);
  w.i32(m.top_k);
  w.f32(m.top_p);
  w.f32(m.min_p);
  w.u64(m.seed);
}

void encode_payload(Writer&, const StatsRequest&) {}

void encode_payload(Writer& w, const Stats& m) {
  w.u64(m.uptime_ms);
  w.u64(m.bytes_in);
  w.u64(m.bytes_out);
  w.u64(m.n_messages_in);
  w.u64(m.n_messages_out);
  w.u64(m.n_bad_messages);
  w.u64(m.n_tokens);
  w.u64(m.rss_bytes);
  w.u64(m.peak_rss_bytes);
  require(m.units.size() <= std::numeric_limits<uint32_t>::max(), "too many units");
  w.u32(static_cast<uint32_t>(m.units.size()));
  for (const UnitStats& u : m.units) {
    w.u32(u.unit);
    w.u64(u.n_tokens);
    w.f64(u.compute_ms);
  }
}

void encode_payload(Writer& w, const KvRequest& m) {
  w.i32(m.seq_id);
  w.u32(m.unit_first);
  w.u32(m.unit_last);
}

// blob of F16 bits, 2 little-endian bytes each.
void put_f16_bits(Writer& w, const std::vector<uint16_t>& bits) {
  require(bits.size() <= std::numeric_limits<uint32_t>::max() / 2, "KV_DATA blob does not fit in a frame");
  w.u32(static_cast<uint32_t>(bits.size() * 2));
  for (uint16_t b : bits) w.u16(b);
}

void encode_payload(Writer& w, const KvData& m) {
  const uint64_t n_elems = static_cast<uint64_t>(m.n_pos) * m.kv_dim;
  require(m.k.size() == n_elems, "KvData: k.size() != n_pos * kv_dim");
  require(m.v.size() == n_elems, "KvData: v.size() != n_pos * kv_dim");
  w.reserve(w.size() + 24 + (m.k.size() + m.v.size()) * 2);
  w.i32(m.seq_id);
  w.u32(m.unit);
  w.u32(m.n_pos);
  w.u32(m.kv_dim);
  put_f16_bits(w, m.k);
  put_f16_bits(w, m.v);
}

void encode_payload(Writer& w, const Join& m) {
  w.string(m.endpoint);
  w.string(m.public_key);
}

void encode_payload(Writer& w, const KvStored& m) {
  w.i32(m.seq_id);
  w.u32(m.unit);
  w.u32(m.n_pos);
}

// ------------------------------------------------------------------------------------------- decoders

// n_tokens x token, already known to fit in the bytes left (Reader::count checked it).
Expected<std::vector<TokenMeta>> get_tokens(Reader& r, uint32_t n) {
  const size_t at = r.offset();
  LL_ASSIGN_OR_RETURN(std::span<const uint8_t> raw,
                      r.raw("tokens", static_cast<size_t>(n) * k_token_wire_bytes));
  std::vector<TokenMeta> tokens(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* p = raw.data() + static_cast<size_t>(i) * k_token_wire_bytes;
    TokenMeta& t = tokens[i];
    t.seq_id = static_cast<int32_t>(load_u32_le(p));
    t.pos = static_cast<int32_t>(load_u32_le(p + 4));
    const uint8_t want = p[8];
    if (t.seq_id < 0 || t.pos < 0 || want > 1) {  // rare: build the message only here
      const size_t off = at + static_cast<size_t>(i) * k_token_wire_bytes;
      const std::string idx = "tokens[" + std::to_string(i) + "]";
      if (t.seq_id < 0) return r.error_at(off, idx + ".seq_id", std::to_string(t.seq_id) + " is negative");
      if (t.pos < 0) return r.error_at(off + 4, idx + ".pos", std::to_string(t.pos) + " is negative");
      return r.error_at(off + 8, idx + ".want_output", std::to_string(want) + " is not 0 or 1");
    }
    t.want_output = want == 1;
  }
  return tokens;
}

Expected<WireDType> get_wire_dtype(Reader& r) {
  LL_ASSIGN_OR_RETURN(uint8_t d, r.u8("dtype"));
  if (d > 1) return r.error_at(r.offset() - 1, "dtype", std::to_string(d) + " is not 0 (F32) or 1 (F16)");
  return static_cast<WireDType>(d);
}

// blob values of exactly n_rows * width elements of `dtype`, decoded to F32 and checked finite.
Expected<std::vector<float>> get_values(Reader& r, const char* field, WireDType dtype, uint64_t n_rows,
                                        uint64_t width) {
  const size_t at = r.offset();
  LL_ASSIGN_OR_RETURN(std::span<const uint8_t> blob, r.bytes(field, r.remaining()));
  uint64_t n_elems = 0, n_bytes = 0;
  if (!checked_mul(n_rows, width, n_elems) || !checked_mul(n_elems, wire_dtype_bytes(dtype), n_bytes)) {
    return r.error_at(at, field, "element count overflows");
  }
  if (n_bytes != blob.size()) {
    return r.error_at(at, field,
                      "length " + std::to_string(blob.size()) + " != " + std::to_string(n_rows) + " rows x " +
                          std::to_string(width) + " x " + std::to_string(wire_dtype_bytes(dtype)) +
                          " bytes = " + std::to_string(n_bytes));
  }
  Reader values(blob, "values");
  std::vector<float> out;
  if (dtype == WireDType::f16) {
    LL_TRY(values.f16_array(field, n_elems, out));
  } else {
    LL_TRY(values.f32_array(field, n_elems, out));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if (!finite_f32(out[i])) {
      return r.error_at(at + 4 + i * wire_dtype_bytes(dtype),
                        std::string(field) + "[" + std::to_string(i) + "]", "not finite (NaN or infinity)");
    }
  }
  return out;
}

// blob of exactly n_bytes = n_pos * kv_dim * 2 bytes (already computed without overflow), as the
// u16 bits of each F16 value.
Expected<std::vector<uint16_t>> get_f16_bits(Reader& r, const char* field, uint32_t n_pos, uint32_t kv_dim,
                                             uint64_t n_bytes) {
  const size_t at = r.offset();
  LL_ASSIGN_OR_RETURN(std::span<const uint8_t> blob, r.bytes(field, r.remaining()));
  if (blob.size() != n_bytes) {
    return r.error_at(at, field,
                      "length " + std::to_string(blob.size()) + " != " + std::to_string(n_pos) +
                          " positions x kv_dim " + std::to_string(kv_dim) +
                          " x 2 bytes = " + std::to_string(n_bytes));
  }
  // The blob is in the input, so this allocates no more than the frame's size.
  std::vector<uint16_t> out(blob.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_u16_le(blob.data() + 2 * i);
  return out;
}

Expected<Sha256Digest> get_hash(Reader& r, const char* field) {
  LL_ASSIGN_OR_RETURN(std::span<const uint8_t> raw, r.raw(field, 32));
  Sha256Digest d;
  std::copy(raw.begin(), raw.end(), d.begin());
  return d;
}

// Bytes of a tensor of `dtype` and `shape`, or nullopt when a dimension does not fit the block size
// or the product overflows.
std::optional<uint64_t> tensor_bytes(DType dtype, const std::vector<uint64_t>& shape) {
  const std::optional<size_t> row = dtype_row_bytes(dtype, shape[0]);
  if (!row) return std::nullopt;
  uint64_t total = *row;
  for (size_t i = 1; i < shape.size(); ++i) {
    if (!checked_mul(total, shape[i], total)) return std::nullopt;
  }
  return total;
}

}  // namespace

// ------------------------------------------------------------------------------------------ names etc.

std::string message_type_name(uint16_t type) {
  switch (static_cast<MessageType>(type)) {
    case MessageType::hello:
      return "HELLO";
    case MessageType::heartbeat:
      return "HEARTBEAT";
    case MessageType::error:
      return "ERROR";
    case MessageType::load_segment:
      return "LOAD_SEGMENT";
    case MessageType::segment_status:
      return "SEGMENT_STATUS";
    case MessageType::tensor_chunk:
      return "TENSOR_CHUNK";
    case MessageType::activation_batch:
      return "ACTIVATION_BATCH";
    case MessageType::result:
      return "RESULT";
    case MessageType::release_sequence:
      return "RELEASE_SEQUENCE";
    case MessageType::sampling:
      return "SAMPLING";
    case MessageType::stats_request:
      return "STATS_REQUEST";
    case MessageType::stats:
      return "STATS";
    case MessageType::kv_request:
      return "KV_REQUEST";
    case MessageType::kv_data:
      return "KV_DATA";
    case MessageType::kv_stored:
      return "KV_STORED";
    case MessageType::join:
      return "JOIN";
  }
  return "type " + hex16(type);
}

bool is_known_message_type(uint16_t type) {
  return std::find(k_message_types.begin(), k_message_types.end(), static_cast<MessageType>(type)) !=
         k_message_types.end();
}

std::string_view role_name(Role r) {
  switch (r) {
    case Role::worker:
      return "worker";
    case Role::coordinator:
      return "coordinator";
  }
  return "?";
}

size_t wire_dtype_bytes(WireDType t) {
  return t == WireDType::f16 ? 2 : 4;
}

std::string_view wire_error_name(WireError e) {
  switch (e) {
    case WireError::malformed:
      return "malformed";
    case WireError::version_mismatch:
      return "version mismatch";
    case WireError::unexpected:
      return "unexpected message";
    case WireError::invalid_argument:
      return "invalid argument";
    case WireError::unsupported:
      return "unsupported";
    case WireError::resource:
      return "resource exhausted";
    case WireError::not_found:
      return "not found";
    case WireError::hash_mismatch:
      return "hash mismatch";
    case WireError::unauthorized:
      return "unauthorized";
    case WireError::internal:
      return "internal error";
  }
  return "?";
}

WireError wire_error_from(ErrorCode code) {
  switch (code) {
    case ErrorCode::parse:
      return WireError::malformed;
    case ErrorCode::invalid_argument:
      return WireError::invalid_argument;
    case ErrorCode::out_of_range:
      return WireError::invalid_argument;
    case ErrorCode::unsupported:
      return WireError::unsupported;
    case ErrorCode::resource:
      return WireError::resource;
    case ErrorCode::not_found:
      return WireError::not_found;
    case ErrorCode::io:
      return WireError::internal;
    case ErrorCode::internal:
      return WireError::internal;
  }
  return WireError::internal;
}

ErrorCode error_code_from(WireError e) {
  switch (e) {
    case WireError::malformed:
      return ErrorCode::parse;
    case WireError::version_mismatch:
      return ErrorCode::unsupported;
    case WireError::unexpected:
      return ErrorCode::invalid_argument;
    case WireError::invalid_argument:
      return ErrorCode::invalid_argument;
    case WireError::unsupported:
      return ErrorCode::unsupported;
    case WireError::resource:
      return ErrorCode::resource;
    case WireError::not_found:
      return ErrorCode::not_found;
    case WireError::hash_mismatch:
      return ErrorCode::parse;
    case WireError::unauthorized:
      return ErrorCode::invalid_argument;
    case WireError::internal:
      return ErrorCode::internal;
  }
  return ErrorCode::internal;
}

MessageType message_type(const Message& m) {
  return std::visit([](const auto& v) { return std::decay_t<decltype(v)>::k_type; }, m);
}

std::string version_mismatch_text(uint16_t peer_version) {
  return "protocol version mismatch: the peer speaks version " + std::to_string(peer_version) +
         ", this build speaks version " + std::to_string(k_protocol_version);
}

// --------------------------------------------------------------------------------------------- frames

Expected<FrameHeader> parse_frame_header(std::span<const uint8_t> frame, const Limits& limits) {
  if (frame.size() < k_frame_header_bytes) {
    return frame_error("truncated header: " + std::to_string(frame.size()) + " bytes, a header needs " +
                       std::to_string(k_frame_header_bytes));
  }
  if (!std::equal(k_magic.begin(), k_magic.end(), frame.begin())) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "bad magic %02x %02x %02x %02x (expected \"LLNK\")", frame[0], frame[1],
                  frame[2], frame[3]);
    return frame_error(buf);
  }
  FrameHeader h;
  h.version = load_u16_le(frame.data() + 4);
  if (h.version != k_protocol_version) return frame_error(version_mismatch_text(h.version));
  const uint16_t type = load_u16_le(frame.data() + 6);
  if (!is_known_message_type(type)) return frame_error("unknown message type " + hex16(type));
  h.type = static_cast<MessageType>(type);
  h.flags = load_u32_le(frame.data() + 8);
  if (h.flags != 0)
    return frame_error("flags: reserved bits " + hex64(h.flags) + " set (must be 0 in version 1)");
  h.request_id = load_u64_le(frame.data() + 12);
  h.payload_bytes = load_u32_le(frame.data() + 20);
  if (frame.size() > limits.max_frame_bytes) {
    return frame_error(std::to_string(frame.size()) + " bytes exceed the frame limit " +
                       std::to_string(limits.max_frame_bytes));
  }
  if (h.payload_bytes != frame.size() - k_frame_header_bytes) {
    return frame_error("payload_bytes says " + std::to_string(h.payload_bytes) + " but " +
                       std::to_string(frame.size() - k_frame_header_bytes) + " bytes follow the header");
  }
  return h;
}

Expected<Frame> Frame::from_bytes(std::vector<uint8_t> bytes, const Limits& limits) {
  LL_ASSIGN_OR_RETURN(FrameHeader h, parse_frame_header(bytes, limits));
  Frame f;
  f.header_ = h;
  f.bytes_ = std::move(bytes);
  return f;
}

Frame encode(const Message& m, uint64_t request_id) {
  Writer w;
  const MessageType type = message_type(m);
  w.raw(k_magic);
  w.u16(k_protocol_version);
  w.u16(static_cast<uint16_t>(type));
  w.u32(0);  // flags
  w.u64(request_id);
  w.u32(0);  // payload_bytes, patched below
  std::visit([&w](const auto& v) { encode_payload(w, v); }, m);
  const size_t payload = w.size() - k_frame_header_bytes;
  require(payload <= std::numeric_limits<uint32_t>::max(), "payload exceeds 4 GiB");
  w.patch_u32(20, static_cast<uint32_t>(payload));
  Frame f;
  f.header_ = FrameHeader{k_protocol_version, type, 0, request_id, static_cast<uint32_t>(payload)};
  f.bytes_ = w.take();
  return f;
}

// ---------------------------------------------------------------------------------------- payloads

Expected<Hello> decode_hello(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "HELLO");
  Hello m;
  LL_ASSIGN_OR_RETURN(m.protocol_version, r.u16("protocol_version"));
  if (m.protocol_version != k_protocol_version) {
    return make_error(ErrorCode::parse, "HELLO: " + version_mismatch_text(m.protocol_version));
  }
  LL_ASSIGN_OR_RETURN(uint8_t role, r.u8("role"));
  if (role > 1)
    return r.error_at(r.offset() - 1, "role", std::to_string(role) + " is not 0 (worker) or 1 (coordinator)");
  m.role = static_cast<Role>(role);
  LL_ASSIGN_OR_RETURN(m.name, r.string("name", limits.max_string));
  LL_ASSIGN_OR_RETURN(m.n_threads, r.u32("n_threads"));
  LL_ASSIGN_OR_RETURN(m.free_memory_bytes, r.u64("free_memory_bytes"));
  LL_ASSIGN_OR_RETURN(m.memory_limit_bytes, r.u64("memory_limit_bytes"));
  LL_ASSIGN_OR_RETURN(m.cpu_features, r.string("cpu_features", limits.max_string));
  LL_ASSIGN_OR_RETURN(m.auth_token, r.string("auth_token", limits.max_string));
  LL_TRY(r.expect_end());
  return m;
}

Expected<Heartbeat> decode_heartbeat(std::span<const uint8_t> payload, const Limits&) {
  Reader r(payload, "HEARTBEAT");
  Heartbeat m;
  LL_ASSIGN_OR_RETURN(m.timestamp_us, r.u64("timestamp_us"));
  LL_ASSIGN_OR_RETURN(m.sequence, r.u64("sequence"));
  LL_TRY(r.expect_end());
  return m;
}

Expected<ErrorMessage> decode_error(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "ERROR");
  ErrorMessage m;
  LL_ASSIGN_OR_RETURN(uint16_t code, r.u16("code"));
  if (code == 0 || code > k_max_wire_error) {
    return r.error_at(
        r.offset() - 2, "code",
        std::to_string(code) + " is not a known error code (1.." + std::to_string(k_max_wire_error) + ")");
  }
  m.code = static_cast<WireError>(code);
  LL_ASSIGN_OR_RETURN(m.in_reply_to, r.u16("in_reply_to"));
  LL_ASSIGN_OR_RETURN(m.message, r.string("message", limits.max_string));
  LL_TRY(r.expect_end());
  return m;
}

Expected<LoadSegment> decode_load_segment(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "LOAD_SEGMENT");
  LoadSegment m;
  LL_ASSIGN_OR_RETURN(m.model_hash, get_hash(r, "model_hash"));
  LL_ASSIGN_OR_RETURN(m.unit_first, r.u32("unit_first"));
  LL_ASSIGN_OR_RETURN(m.unit_last, r.u32("unit_last"));
  if (m.unit_last >= limits.max_units) {
    return r.error_at(
        r.offset() - 4, "unit_last",
        std::to_string(m.unit_last) + " exceeds the limit " + std::to_string(limits.max_units - 1));
  }
  if (m.unit_first > m.unit_last) {
    return r.error_at(r.offset() - 8, "unit_first",
                      std::to_string(m.unit_first) + " > unit_last " + std::to_string(m.unit_last));
  }
  LL_ASSIGN_OR_RETURN(m.n_ctx, r.u32("n_ctx"));
  if (m.n_ctx == 0 || m.n_ctx > limits.max_ctx) {
    return r.error_at(r.offset() - 4, "n_ctx",
                      std::to_string(m.n_ctx) + " is outside 1.." + std::to_string(limits.max_ctx));
  }
  LL_ASSIGN_OR_RETURN(m.next_endpoint, r.string("next_endpoint", limits.max_string));
  LL_ASSIGN_OR_RETURN(std::span<const uint8_t> metadata, r.bytes("metadata", limits.max_metadata_bytes));
  m.metadata.assign(metadata.begin(), metadata.end());
  // Smallest tensor on the wire: empty name (rejected later) + dtype + n_dims + one ne + n_bytes + hash.
  constexpr size_t k_min_tensor_bytes = 4 + 4 + 4 + 8 + 8 + 32;
  LL_ASSIGN_OR_RETURN(uint32_t n_tensors, r.count("n_tensors", limits.max_tensors, k_min_tensor_bytes));
  m.tensors.resize(n_tensors);
  std::string ctx;
  for (uint32_t i = 0; i < n_tensors; ++i) {
    ctx = "LOAD_SEGMENT: tensors[" + std::to_string(i) + "]";
    r.set_context(ctx);
    TensorDesc& t = m.tensors[i];
    const size_t name_at = r.offset();
    LL_ASSIGN_OR_RETURN(t.name, r.string("name", limits.max_string));
    if (t.name.empty()) return r.error_at(name_at, "name", "is empty");
    LL_ASSIGN_OR_RETURN(uint32_t type_id, r.u32("dtype"));
    const std::optional<DType> dtype = dtype_from_id(type_id);
    if (!dtype) {
      return r.error_at(r.offset() - 4, "dtype",
                        "type id " + std::to_string(type_id) + " (" +
                            std::string(ggml_type_id_name(type_id)) + ") is not supported");
    }
    t.dtype = *dtype;
    LL_ASSIGN_OR_RETURN(uint32_t n_dims, r.u32("n_dims"));
    if (n_dims == 0 || n_dims > limits.max_dims) {
      return r.error_at(r.offset() - 4, "n_dims",
                        std::to_string(n_dims) + " is outside 1.." + std::to_string(limits.max_dims));
    }
    // n_dims <= max_dims is small, but a caller may raise the limit: check the bytes before resizing.
    if (n_dims > r.remaining() / 8)
      return r.error("ne", "truncated: " + std::to_string(n_dims) + " dimensions do not fit");
    t.shape.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      LL_ASSIGN_OR_RETURN(t.shape[d], r.u64("ne"));
      if (t.shape[d] == 0) return r.error_at(r.offset() - 8, "ne[" + std::to_string(d) + "]", "is 0");
    }
    LL_ASSIGN_OR_RETURN(t.n_bytes, r.u64("n_bytes"));
    const std::optional<uint64_t> expect = tensor_bytes(t.dtype, t.shape);
    if (!expect) {
      return r.error_at(r.offset() - 8, "n_bytes",
                        "the shape does not fit " + std::string(dtype_name(t.dtype)) +
                            " (ne[0] not a multiple of its block size, or the size overflows)");
    }
    if (*expect != t.n_bytes) {
      return r.error_at(r.offset() - 8, "n_bytes",
                        std::to_string(t.n_bytes) + " != " + std::to_string(*expect) + " implied by dtype " +
                            std::string(dtype_name(t.dtype)) + " and the shape");
    }
    LL_ASSIGN_OR_RETURN(t.sha256, get_hash(r, "sha256"));
  }
  r.set_context("LOAD_SEGMENT");
  for (auto [field, key] : {std::pair{"next_public_key", &m.next_public_key},
                            std::pair{"upstream_public_key", &m.upstream_public_key}}) {
    const size_t at = r.offset();
    LL_ASSIGN_OR_RETURN(*key, r.string(field, limits.max_string));
    if (!key->empty()) {
      if (auto ok = check_curve_key(*key, "key"); !ok) return r.error_at(at, field, ok.error().message);
    }
  }
  LL_ASSIGN_OR_RETURN(m.n_spare, r.u32("n_spare"));
  if (m.n_spare > n_tensors) {
    return r.error_at(r.offset() - 4, "n_spare",
                      std::to_string(m.n_spare) + " spares among " + std::to_string(n_tensors) + " tensors");
  }
  // Names must be unique: sort views of them and compare neighbours.
  std::vector<std::pair<std::string_view, uint32_t>> names(n_tensors);
  for (uint32_t i = 0; i < n_tensors; ++i) names[i] = {m.tensors[i].name, i};
  std::sort(names.begin(), names.end());
  for (size_t i = 1; i < names.size(); ++i) {
    if (names[i].first == names[i - 1].first) {
      return make_error(ErrorCode::parse, "LOAD_SEGMENT: tensors[" + std::to_string(names[i].second) +
                                              "].name: duplicate name \"" + std::string(names[i].first) +
                                              "\" (also tensors[" + std::to_string(names[i - 1].second) +
                                              "])");
    }
  }
  LL_TRY(r.expect_end());
  return m;
}

Expected<SegmentStatus> decode_segment_status(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "SEGMENT_STATUS");
  SegmentStatus m;
  LL_ASSIGN_OR_RETURN(uint8_t state, r.u8("state"));
  if (state > 1)
    return r.error_at(0, "state", std::to_string(state) + " is not 0 (need_tensors) or 1 (ready)");
  m.state = static_cast<SegmentState>(state);
  for (auto [field, list] : {std::pair{"missing", &m.missing}, std::pair{"declined", &m.declined}}) {
    const std::string n_field = std::string("n_") + field;
    LL_ASSIGN_OR_RETURN(uint32_t n, r.count(n_field.c_str(), limits.max_tensors, 4));
    const size_t at = r.offset();
    LL_TRY(r.u32_array(field, n, *list));
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string f = std::string(field) + "[" + std::to_string(i) + "]";
      if ((*list)[i] >= limits.max_tensors) {
        return r.error_at(at + 4 * i, f, std::to_string((*list)[i]) + " exceeds the tensor limit");
      }
      if (i > 0 && (*list)[i] <= (*list)[i - 1]) {
        return r.error_at(at + 4 * i, f, "indices must be strictly increasing");
      }
    }
  }
  LL_TRY(r.expect_end());
  return m;
}

Expected<TensorChunk> decode_tensor_chunk(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "TENSOR_CHUNK");
  TensorChunk m;
  LL_ASSIGN_OR_RETURN(m.tensor_index, r.u32("tensor_index"));
  if (m.tensor_index >= limits.max_tensors) {
    return r.error_at(0, "tensor_index", std::to_string(m.tensor_index) + " exceeds the tensor limit");
  }
  LL_ASSIGN_OR_RETURN(m.offset, r.u64("offset"));
  LL_ASSIGN_OR_RETURN(m.total_bytes, r.u64("total_bytes"));
  if (m.total_bytes == 0) return r.error_at(12, "total_bytes", "is 0");
  LL_ASSIGN_OR_RETURN(uint64_t hash, r.u64("chunk_xxh64"));
  const size_t data_at = r.offset();
  LL_ASSIGN_OR_RETURN(std::span<const uint8_t> data, r.bytes("data", limits.max_frame_bytes));
  if (data.empty()) return r.error_at(data_at, "data", "is empty");
  uint64_t end = 0;
  if (!checked_add(m.offset, data.size(), end) || end > m.total_bytes) {
    return r.error_at(4, "offset",
                      std::to_string(m.offset) + " + " + std::to_string(data.size()) +
                          " bytes runs past total_bytes " + std::to_string(m.total_bytes));
  }
  LL_TRY(r.expect_end());
  const uint64_t actual = xxh64(data);
  if (actual != hash) {
    return r.error_at(20, "chunk_xxh64",
                      "mismatch: the frame says " + hex64(hash) + ", the data hashes to " + hex64(actual));
  }
  m.data.assign(data.begin(), data.end());
  return m;
}

Expected<ActivationBatch> decode_activation_batch(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "ACTIVATION_BATCH");
  ActivationBatch m;
  LL_ASSIGN_OR_RETURN(uint32_t n_tokens, r.count("n_tokens", limits.max_tokens, k_token_wire_bytes));
  if (n_tokens == 0) return r.error_at(0, "n_tokens", "is 0");
  LL_ASSIGN_OR_RETURN(m.tokens, get_tokens(r, n_tokens));
  LL_ASSIGN_OR_RETURN(m.n_embd, r.u32("n_embd"));
  if (m.n_embd == 0 || m.n_embd > limits.max_hidden) {
    return r.error_at(r.offset() - 4, "n_embd",
                      std::to_string(m.n_embd) + " is outside 1.." + std::to_string(limits.max_hidden));
  }
  LL_ASSIGN_OR_RETURN(m.dtype, get_wire_dtype(r));
  LL_ASSIGN_OR_RETURN(m.hidden, get_values(r, "hidden", m.dtype, n_tokens, m.n_embd));
  LL_TRY(r.expect_end());
  return m;
}

Expected<Result> decode_result(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "RESULT");
  Result m;
  LL_ASSIGN_OR_RETURN(uint8_t kind, r.u8("kind"));
  if (kind > 2)
    return r.error_at(0, "kind", std::to_string(kind) + " is not 0 (hidden), 1 (logits) or 2 (token_ids)");
  m.kind = static_cast<ResultKind>(kind);
  LL_ASSIGN_OR_RETURN(uint32_t n_rows, r.count("n_rows", limits.max_tokens, k_token_wire_bytes));
  LL_ASSIGN_OR_RETURN(m.tokens, get_tokens(r, n_rows));
  if (m.kind == ResultKind::token_ids) {
    const size_t at = r.offset();
    LL_TRY(r.i32_array("token_ids", n_rows, m.token_ids));
    for (size_t i = 0; i < m.token_ids.size(); ++i) {
      if (m.token_ids[i] < 0) {
        return r.error_at(at + 4 * i, "token_ids[" + std::to_string(i) + "]",
                          std::to_string(m.token_ids[i]) + " is negative");
      }
    }
  } else {
    const uint32_t max_width = m.kind == ResultKind::hidden ? limits.max_hidden : limits.max_vocab;
    LL_ASSIGN_OR_RETURN(m.width, r.u32("width"));
    if (m.width == 0 || m.width > max_width) {
      return r.error_at(r.offset() - 4, "width",
                        std::to_string(m.width) + " is outside 1.." + std::to_string(max_width));
    }
    LL_ASSIGN_OR_RETURN(m.dtype, get_wire_dtype(r));
    LL_ASSIGN_OR_RETURN(m.values, get_values(r, "values", m.dtype, n_rows, m.width));
  }
  LL_TRY(r.expect_end());
  return m;
}

Expected<ReleaseSequence> decode_release_sequence(std::span<const uint8_t> payload, const Limits&) {
  Reader r(payload, "RELEASE_SEQUENCE");
  ReleaseSequence m;
  LL_ASSIGN_OR_RETURN(m.seq_id, r.i32("seq_id"));
  if (m.seq_id < 0) return r.error_at(0, "seq_id", std::to_string(m.seq_id) + " is negative");
  LL_TRY(r.expect_end());
  return m;
}

Expected<Sampling> decode_sampling(std::span<const uint8_t> payload, const Limits&) {
  Reader r(payload, "SAMPLING");
  Sampling m;
  LL_ASSIGN_OR_RETURN(m.seq_id, r.i32("seq_id"));
  if (m.seq_id < 0) return r.error_at(0, "seq_id", std::to_string(m.seq_id) + " is negative");
  LL_ASSIGN_OR_RETURN(m.temperature, r.f32("temperature"));
  if (!finite_f32(m.temperature) || !(m.temperature >= 0.0f)) {
    return r.error_at(4, "temperature", float_text(m.temperature) + " is not finite and >= 0");
  }
  LL_ASSIGN_OR_RETURN(m.top_k, r.i32("top_k"));
  if (m.top_k < 0) return r.error_at(8, "top_k", std::to_string(m.top_k) + " is negative");
  LL_ASSIGN_OR_RETURN(m.top_p, r.f32("top_p"));
  if (!finite_f32(m.top_p) || !(m.top_p >= 0.0f)) {
    return r.error_at(12, "top_p", float_text(m.top_p) + " is not finite and >= 0");
  }
  LL_ASSIGN_OR_RETURN(m.min_p, r.f32("min_p"));
  if (!finite_f32(m.min_p) || !(m.min_p >= 0.0f && m.min_p <= 1.0f)) {
    return r.error_at(16, "min_p", float_text(m.min_p) + " is not in [0, 1]");
  }
  LL_ASSIGN_OR_RETURN(m.seed, r.u64("seed"));
  LL_TRY(r.expect_end());
  return m;
}

Expected<StatsRequest> decode_stats_request(std::span<const uint8_t> payload, const Limits&) {
  Reader r(payload, "STATS_REQUEST");
  LL_TRY(r.expect_end());
  return StatsRequest{};
}

Expected<Stats> decode_stats(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "STATS");
  Stats m;
  LL_ASSIGN_OR_RETURN(m.uptime_ms, r.u64("uptime_ms"));
  LL_ASSIGN_OR_RETURN(m.bytes_in, r.u64("bytes_in"));
  LL_ASSIGN_OR_RETURN(m.bytes_out, r.u64("bytes_out"));
  LL_ASSIGN_OR_RETURN(m.n_messages_in, r.u64("n_messages_in"));
  LL_ASSIGN_OR_RETURN(m.n_messages_out, r.u64("n_messages_out"));
  LL_ASSIGN_OR_RETURN(m.n_bad_messages, r.u64("n_bad_messages"));
  LL_ASSIGN_OR_RETURN(m.n_tokens, r.u64("n_tokens"));
  LL_ASSIGN_OR_RETURN(m.rss_bytes, r.u64("rss_bytes"));
  LL_ASSIGN_OR_RETURN(m.peak_rss_bytes, r.u64("peak_rss_bytes"));
  constexpr size_t k_unit_bytes = 4 + 8 + 8;
  LL_ASSIGN_OR_RETURN(uint32_t n_units, r.count("n_units", limits.max_units, k_unit_bytes));
  m.units.resize(n_units);
  for (uint32_t i = 0; i < n_units; ++i) {
    UnitStats& u = m.units[i];
    const std::string idx = "units[" + std::to_string(i) + "]";
    const size_t at = r.offset();
    LL_ASSIGN_OR_RETURN(u.unit, r.u32("unit"));
    if (u.unit >= limits.max_units)
      return r.error_at(at, idx + ".unit", std::to_string(u.unit) + " exceeds the unit limit");
    if (i > 0 && u.unit <= m.units[i - 1].unit)
      return r.error_at(at, idx + ".unit", "units must be strictly increasing");
    LL_ASSIGN_OR_RETURN(u.n_tokens, r.u64("n_tokens"));
    LL_ASSIGN_OR_RETURN(u.compute_ms, r.f64("compute_ms"));
    if (!(u.compute_ms >= 0) ||
        (std::bit_cast<uint64_t>(u.compute_ms) & 0x7FF0000000000000ull) == 0x7FF0000000000000ull) {
      return r.error_at(at + 12, idx + ".compute_ms", "must be finite and >= 0");
    }
  }
  LL_TRY(r.expect_end());
  return m;
}

// KV_REQUEST, KV_DATA and KV_STORED have no decode_* in protocol.h (added within version 1 after
// the per-type decoders were published); decode_payload reaches them.
namespace {

Expected<KvRequest> decode_kv_request(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "KV_REQUEST");
  KvRequest m;
  LL_ASSIGN_OR_RETURN(m.seq_id, r.i32("seq_id"));
  if (m.seq_id < 0) return r.error_at(0, "seq_id", std::to_string(m.seq_id) + " is negative");
  LL_ASSIGN_OR_RETURN(m.unit_first, r.u32("unit_first"));
  LL_ASSIGN_OR_RETURN(m.unit_last, r.u32("unit_last"));
  if (m.unit_last >= limits.max_units) {
    return r.error_at(
        8, "unit_last",
        std::to_string(m.unit_last) + " exceeds the limit " + std::to_string(limits.max_units - 1));
  }
  if (m.unit_first > m.unit_last) {
    return r.error_at(4, "unit_first",
                      std::to_string(m.unit_first) + " > unit_last " + std::to_string(m.unit_last));
  }
  LL_TRY(r.expect_end());
  return m;
}

// i32 seq_id | u32 unit | u32 n_pos: the fields KV_DATA and KV_STORED begin with.
template <typename M>
Expected<void> get_kv_head(Reader& r, M& m, const Limits& limits) {
  LL_ASSIGN_OR_RETURN(m.seq_id, r.i32("seq_id"));
  if (m.seq_id < 0) return r.error_at(0, "seq_id", std::to_string(m.seq_id) + " is negative");
  LL_ASSIGN_OR_RETURN(m.unit, r.u32("unit"));
  if (m.unit >= limits.max_units)
    return r.error_at(4, "unit", std::to_string(m.unit) + " exceeds the unit limit");
  LL_ASSIGN_OR_RETURN(m.n_pos, r.u32("n_pos"));
  if (m.n_pos > limits.max_ctx) {
    return r.error_at(
        8, "n_pos", std::to_string(m.n_pos) + " exceeds the context limit " + std::to_string(limits.max_ctx));
  }
  return {};
}

Expected<KvData> decode_kv_data(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "KV_DATA");
  KvData m;
  LL_TRY(get_kv_head(r, m, limits));
  LL_ASSIGN_OR_RETURN(m.kv_dim, r.u32("kv_dim"));
  if (m.kv_dim == 0 || m.kv_dim > limits.max_hidden) {
    return r.error_at(12, "kv_dim",
                      std::to_string(m.kv_dim) + " is outside 1.." + std::to_string(limits.max_hidden));
  }
  uint64_t n_elems = 0, n_bytes = 0;
  if (!checked_mul(m.n_pos, m.kv_dim, n_elems) || !checked_mul(n_elems, 2, n_bytes)) {
    return r.error_at(8, "n_pos", "n_pos x kv_dim x 2 bytes overflows");
  }
  if (n_bytes > limits.max_frame_bytes) {
    return r.error_at(8, "n_pos",
                      std::to_string(m.n_pos) + " positions x kv_dim " + std::to_string(m.kv_dim) +
                          " x 2 bytes exceed the frame limit " + std::to_string(limits.max_frame_bytes));
  }
  LL_ASSIGN_OR_RETURN(m.k, get_f16_bits(r, "k", m.n_pos, m.kv_dim, n_bytes));
  LL_ASSIGN_OR_RETURN(m.v, get_f16_bits(r, "v", m.n_pos, m.kv_dim, n_bytes));
  LL_TRY(r.expect_end());
  return m;
}

Expected<KvStored> decode_kv_stored(std::span<const uint8_t> payload, const Limits& limits) {
  Reader r(payload, "KV_STORED");
  KvStored m;
  LL_TRY(get_kv_head(r, m, limits));
  LL_TRY(r.expect_end());
  return m;
}

constexpr size_t k_max_join_endpoint = 256;

Expected<Join> decode_join(std::span<const uint8_t> payload, const Limits&) {
  Reader r(payload, "JOIN");
  Join m;
  LL_ASSIGN_OR_RETURN(m.endpoint, r.string("endpoint", k_max_join_endpoint));
  if (m.endpoint.empty()) return r.error_at(0, "endpoint", "is empty");
  for (char ch : m.endpoint) {
    if (ch <= ' ' || ch > '~') return r.error_at(4, "endpoint", "has a character that is not printable ASCII");
  }
  if (m.endpoint.rfind("tcp://", 0) != 0 && m.endpoint.rfind("inproc://", 0) != 0) {
    return r.error_at(4, "endpoint", "is not tcp://HOST:PORT");
  }
  const size_t key_at = 4 + m.endpoint.size();
  LL_ASSIGN_OR_RETURN(m.public_key, r.string("public_key", 40));
  if (!m.public_key.empty()) {
    if (m.public_key.size() != 40) return r.error_at(key_at, "public_key", "is not 40 Z85 characters");
    static constexpr std::string_view k_z85 =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    for (char ch : m.public_key) {
      if (k_z85.find(ch) == std::string_view::npos) {
        return r.error_at(key_at, "public_key", "is not 40 Z85 characters");
      }
    }
  }
  LL_TRY(r.expect_end());
  return m;
}

}  // namespace

Expected<Message> decode_payload(uint16_t type, std::span<const uint8_t> payload, const Limits& limits) {
  auto lift = [](auto&& e) -> Expected<Message> {
    if (!e) return e.error();
    return Message(std::move(e).value());
  };
  switch (static_cast<MessageType>(type)) {
    case MessageType::hello:
      return lift(decode_hello(payload, limits));
    case MessageType::heartbeat:
      return lift(decode_heartbeat(payload, limits));
    case MessageType::error:
      return lift(decode_error(payload, limits));
    case MessageType::load_segment:
      return lift(decode_load_segment(payload, limits));
    case MessageType::segment_status:
      return lift(decode_segment_status(payload, limits));
    case MessageType::tensor_chunk:
      return lift(decode_tensor_chunk(payload, limits));
    case MessageType::activation_batch:
      return lift(decode_activation_batch(payload, limits));
    case MessageType::result:
      return lift(decode_result(payload, limits));
    case MessageType::release_sequence:
      return lift(decode_release_sequence(payload, limits));
    case MessageType::sampling:
      return lift(decode_sampling(payload, limits));
    case MessageType::stats_request:
      return lift(decode_stats_request(payload, limits));
    case MessageType::stats:
      return lift(decode_stats(payload, limits));
    case MessageType::kv_request:
      return lift(decode_kv_request(payload, limits));
    case MessageType::kv_data:
      return lift(decode_kv_data(payload, limits));
    case MessageType::kv_stored:
      return lift(decode_kv_stored(payload, limits));
    case MessageType::join:
      return lift(decode_join(payload, limits));
  }
  return make_error(ErrorCode::parse, "unknown message type " + hex16(type));
}

Expected<Message> decode_message(const Frame& frame, const Limits& limits) {
  return decode_payload(static_cast<uint16_t>(frame.type()), frame.payload(), limits);
}

Expected<Envelope> decode(std::span<const uint8_t> frame_bytes, const Limits& limits) {
  LL_ASSIGN_OR_RETURN(FrameHeader h, parse_frame_header(frame_bytes, limits));
  LL_ASSIGN_OR_RETURN(Message m, decode_payload(static_cast<uint16_t>(h.type),
                                                frame_bytes.subspan(k_frame_header_bytes), limits));
  return Envelope{h.request_id, std::move(m)};
}

// ---------------------------------------------------------------------------------------------- errors

ErrorMessage make_error_message(WireError code, std::string_view text, uint16_t in_reply_to,
                                const Limits& limits) {
  ErrorMessage m;
  m.code = code;
  m.in_reply_to = in_reply_to;
  size_t n = std::min<size_t>(text.size(), limits.max_string);
  // Do not cut a UTF-8 sequence: back off over continuation bytes (10xxxxxx).
  if (n < text.size()) {
    while (n > 0 && (static_cast<uint8_t>(text[n]) & 0xC0) == 0x80) --n;
  }
  m.message.assign(text.substr(0, n));
  return m;
}

ErrorMessage make_error_message(const Error& e, uint16_t in_reply_to, const Limits& limits) {
  return make_error_message(wire_error_from(e.code), e.message, in_reply_to, limits);
}

Error to_error(const ErrorMessage& m) {
  return make_error(error_code_from(m.code),
                    "peer error (" + std::string(wire_error_name(m.code)) + "): " + m.message);
}

std::optional<Frame> make_error_reply(std::span<const uint8_t> bad_frame, const Error& why,
                                      const Limits& limits) {
  const bool magic_ok =
      bad_frame.size() >= k_magic.size() && std::equal(k_magic.begin(), k_magic.end(), bad_frame.begin());
  uint16_t type = 0;
  uint64_t request_id = 0;
  WireError code = WireError::malformed;
  if (magic_ok) {
    if (bad_frame.size() >= 8) {
      type = load_u16_le(bad_frame.data() + 6);
      if (type == static_cast<uint16_t>(MessageType::error)) return std::nullopt;
    }
    if (bad_frame.size() >= 6 && load_u16_le(bad_frame.data() + 4) != k_protocol_version) {
      code = WireError::version_mismatch;
    }
    if (bad_frame.size() >= 20) request_id = load_u64_le(bad_frame.data() + 12);
  }
  return encode(make_error_message(code, why.message, type, limits), request_id);
}

}  // namespace ll::net
