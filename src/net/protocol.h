// LinguaLinked wire protocol, version 1 (docs/wire-protocol.md has the full write-up).
//
// Every message travels as one frame = one ZeroMQ message part: a 24-byte header, then the payload.
// All integers are little-endian; f32/f64 are the little-endian bytes of their IEEE-754 bits; there
// is no padding or alignment anywhere. Everything is written and read through net/codec.h.
//
//   offset size field
//   0      4    magic          "LLNK" (4C 4C 4E 4B)
//   4      2    u16 version    protocol version of the sender (k_protocol_version = 1)
//   6      2    u16 type       MessageType, below
//   8      4    u32 flags      reserved: must be 0 in version 1
//   12     8    u64 request_id chosen by the sender of a request; a reply (HELLO answer, SEGMENT_STATUS,
//                              RESULT, STATS, ERROR) echoes the id of the frame it answers
//   20     4    u32 payload_bytes  the frame is exactly 24 + payload_bytes bytes
//   24     ...  payload
// Bytes 0..7 (magic, version, type) keep this meaning in every future version, so any two versions
// can tell each other apart and never answer an ERROR with an ERROR.
//
// Payload building blocks:
//   string   u32 n | n bytes (no terminator)       blob   u32 n | n bytes
//   hash256  32 bytes (SHA-256 digest)              token  i32 seq_id | i32 pos | u8 want_output  (9 bytes)
//
// Message types, grouped by family (high byte = family):
//   0x0101 HELLO            u16 protocol_version | u8 role | string name | u32 n_threads
//                           | u64 free_memory_bytes | u64 memory_limit_bytes | string cpu_features
//                           | string auth_token
//   0x0102 HEARTBEAT        u64 timestamp_us | u64 sequence
//   0x0103 ERROR            u16 code (WireError) | u16 in_reply_to (a MessageType or 0) | string message
//   0x0201 LOAD_SEGMENT     hash256 model_hash | u32 unit_first | u32 unit_last | u32 n_ctx
//                           | string next_endpoint | blob metadata | u32 n_tensors | n_tensors x tensor
//                           | string next_public_key | string upstream_public_key  (CURVE; "" or 40 Z85)
//                           | u32 n_spare  (the last n_spare tensors are spares, kept as memory allows)
//                           tensor = string name | u32 dtype (GGML id) | u32 n_dims | u64 ne[n_dims]
//                                    | u64 n_bytes | hash256 sha256
//   0x0202 SEGMENT_STATUS   u8 state | u32 n_missing | u32 missing[n_missing] | u32 n_declined
//                           | u32 declined[n_declined]  (tensor indices, each list increasing)
//   0x0203 TENSOR_CHUNK     u32 tensor_index | u64 offset | u64 total_bytes | u64 chunk_xxh64 | blob data
//   0x0301 ACTIVATION_BATCH u32 n_tokens | n_tokens x token | u32 n_embd | u8 dtype | blob hidden
//                           hidden: F32 or F16 [n_tokens][n_embd]
//   0x0302 RESULT           u8 kind | u32 n_rows | n_rows x token | then by kind:
//                             hidden, logits: u32 width | u8 dtype | blob values  (F32/F16 [n_rows][width])
//                             token_ids:      i32 token[n_rows]
//   0x0303 RELEASE_SEQUENCE i32 seq_id
//   0x0304 SAMPLING         i32 seq_id | f32 temperature | i32 top_k | f32 top_p | f32 min_p | u64 seed
//   0x0401 STATS_REQUEST    (empty payload)
//   0x0501 KV_REQUEST       i32 seq_id | u32 unit_first | u32 unit_last
//   0x0502 KV_DATA          i32 seq_id | u32 unit | u32 n_pos | u32 kv_dim | blob k | blob v
//                           k, v: F16 bits [n_pos][kv_dim], each exactly n_pos * kv_dim * 2 bytes
//   0x0503 KV_STORED        i32 seq_id | u32 unit | u32 n_pos
//   0x0402 STATS            u64 uptime_ms | u64 bytes_in | u64 bytes_out | u64 n_messages_in
//                           | u64 n_messages_out | u64 n_bad_messages | u64 n_tokens | u64 rss_bytes
//                           | u64 peak_rss_bytes
//                           | u32 n_units | n_units x { u32 unit | u64 n_tokens | f64 compute_ms }
//
// Pipeline semantics (what the runtime implements; docs/wire-protocol.md section 4 has the diagram):
//   - LOAD_SEGMENT.next_endpoint non-empty: the worker connects a Link there (HELLO as a worker first)
//     and forwards the output hidden states of each batch as ACTIVATION_BATCH with the same
//     request_id. Empty: the outputs go back as RESULT (same request_id) to the peer that sent
//     LOAD_SEGMENT, i.e. the coordinator, not to whoever sent the batch.
//   - SAMPLING and RELEASE_SEQUENCE travel along the pipeline like batches: the coordinator sends them
//     to the first stage on the link that carries that stage's batches; every worker applies them
//     (RELEASE_SEQUENCE: drop the sequence's KV cache and sampler; SAMPLING: only the stage that runs
//     the output head keeps it) and forwards them to next_endpoint, if any. One ordered link per hop
//     keeps them in order with the ACTIVATION_BATCHes of the same sequence.
//   - KV_REQUEST, KV_DATA and KV_STORED move a sequence's KV cache when the coordinator switches
//     plans (load balancing): they go straight to one worker, never along the pipeline. KV_REQUEST
//     asks for positions 0..n-1 of every transformer block in [unit_first, unit_last] that the
//     worker runs; it answers with one KV_DATA per such block (same request_id), in unit order.
//     A KV_DATA from the coordinator stores positions 0..n_pos-1 of one block the worker runs for
//     a sequence (replacing what it held); the worker answers KV_STORED. Failures answer ERROR.
//   - An error while processing a batch (or a SAMPLING / RELEASE_SEQUENCE) goes to the coordinator
//     (the LOAD_SEGMENT sender) as ERROR with that frame's request_id, whichever stage it happens
//     on. Frames that fail validation are still answered to the peer that sent them (channel.h).
//
// Decoding validates everything (see Limits and docs/wire-protocol.md): magic, version, known type,
// zero flags, payload length equal to what the fields consume (no trailing bytes), every count and
// length against Limits and against the bytes left before allocating, size products with overflow
// checks, enum values in range, floats finite, ids and positions non-negative. Any fault is an
// ErrorCode::parse Error naming the message and field, never a crash or an unbounded allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "net/sha256.h"

namespace ll::net {

inline constexpr uint16_t k_protocol_version = 1;
inline constexpr std::array<uint8_t, 4> k_magic = {'L', 'L', 'N', 'K'};
inline constexpr size_t k_frame_header_bytes = 24;
inline constexpr size_t k_token_wire_bytes = 9;  // i32 seq_id | i32 pos | u8 want_output

// Every limit a decoder enforces; one instance is shared by the codec checks and the transport
// (max_frame_bytes becomes ZMQ_MAXMSGSIZE, so an oversized frame is dropped before it is allocated).
struct Limits {
  // Whole frame (header + payload). 64 MiB holds a 2048-token F32 batch at n_embd 8192 and is the
  // most a peer can make us allocate per message.
  uint32_t max_frame_bytes = 64u << 20;
  uint32_t max_tokens = 65536;              // tokens (rows) per ACTIVATION_BATCH / RESULT
  uint32_t max_hidden = 1u << 20;           // n_embd of an activation batch / width of a hidden RESULT
  uint32_t max_vocab = 1u << 20;            // width of a logits RESULT
  uint32_t max_string = 4096;               // bytes of any string field
  uint32_t max_tensors = 65536;             // tensors per LOAD_SEGMENT
  uint32_t max_units = 65536;               // unit indices are < max_units
  uint32_t max_ctx = 1u << 24;              // n_ctx of a segment
  uint32_t max_dims = 4;                    // dimensions of a tensor
  uint32_t max_metadata_bytes = 32u << 20;  // LOAD_SEGMENT metadata blob (a GGUF without tensors)
};

// ------------------------------------------------------------------------------------- message types

enum class MessageType : uint16_t {
  hello = 0x0101,
  heartbeat = 0x0102,
  error = 0x0103,
  load_segment = 0x0201,
  segment_status = 0x0202,
  tensor_chunk = 0x0203,
  activation_batch = 0x0301,
  result = 0x0302,
  release_sequence = 0x0303,
  sampling = 0x0304,
  stats_request = 0x0401,
  stats = 0x0402,
  kv_request = 0x0501,
  kv_data = 0x0502,
  kv_stored = 0x0503,
  join = 0x0601,
};

inline constexpr std::array<MessageType, 16> k_message_types = {
    MessageType::hello,
    MessageType::heartbeat,
    MessageType::error,
    MessageType::load_segment,
    MessageType::segment_status,
    MessageType::tensor_chunk,
    MessageType::activation_batch,
    MessageType::result,
    MessageType::release_sequence,
    MessageType::sampling,
    MessageType::stats_request,
    MessageType::stats,
    MessageType::kv_request,
    MessageType::kv_data,
    MessageType::kv_stored,
    MessageType::join,
};

namespace detail {
constexpr bool message_types_unique() {
  for (size_t i = 0; i < k_message_types.size(); ++i)
    for (size_t j = i + 1; j < k_message_types.size(); ++j)
      if (k_message_types[i] == k_message_types[j]) return false;
  return true;
}
}  // namespace detail
static_assert(detail::message_types_unique(), "message type ids must be unique");

// "HELLO", "ACTIVATION_BATCH", ...; "type 0x1234" for ids we do not know.
std::string message_type_name(uint16_t type);
inline std::string message_type_name(MessageType t) {
  return message_type_name(static_cast<uint16_t>(t));
}
bool is_known_message_type(uint16_t type);

// -------------------------------------------------------------------------------------------- enums

enum class Role : uint8_t { worker = 0, coordinator = 1 };
std::string_view role_name(Role r);

// Element type of hidden states / logits on the wire; values are the GGML type ids.
enum class WireDType : uint8_t { f32 = 0, f16 = 1 };
size_t wire_dtype_bytes(WireDType t);

enum class SegmentState : uint8_t {
  need_tensors = 0,  // send TENSOR_CHUNKs for the tensors listed as missing
  ready = 1,         // every tensor is present and verified; batches may flow
};

enum class ResultKind : uint8_t {
  hidden = 0,     // hidden states F32/F16 [n_rows][width = n_embd]
  logits = 1,     // logits F32/F16 [n_rows][width = n_vocab], rows = the tokens with want_output
  token_ids = 2,  // one sampled token id per row
};

// Error codes carried by ERROR messages (stable numbers; 0 is never sent).
enum class WireError : uint16_t {
  malformed = 1,         // frame or payload failed validation
  version_mismatch = 2,  // the peer speaks another protocol version
  unexpected = 3,        // valid message, wrong time (e.g. before HELLO, chunk before LOAD_SEGMENT)
  invalid_argument = 4,  // well-formed but unusable (unit range outside the model, position gap)
  unsupported = 5,       // well-formed but not implemented here
  resource = 6,          // over the memory limit or another resource
  not_found = 7,         // unknown sequence, tensor or model
  hash_mismatch = 8,     // content hash does not match
  unauthorized = 9,      // auth token refused
  internal = 10,
};
inline constexpr uint16_t k_max_wire_error = 10;
std::string_view wire_error_name(WireError e);
WireError wire_error_from(ErrorCode code);
ErrorCode error_code_from(WireError e);

// -------------------------------------------------------------------------------------------- messages

// Per-token bookkeeping that travels with every hidden-state row.
struct TokenMeta {
  int32_t seq_id = 0;        // >= 0
  int32_t pos = 0;           // >= 0, position in its sequence
  bool want_output = false;  // the head should produce logits / a token for it
  bool operator==(const TokenMeta&) const = default;
};

// First message in both directions. Decoding fails, naming both versions, when protocol_version is
// not ours.
struct Hello {
  static constexpr MessageType k_type = MessageType::hello;
  uint16_t protocol_version = k_protocol_version;
  Role role = Role::worker;
  std::string name;
  uint32_t n_threads = 0;
  uint64_t free_memory_bytes = 0;
  uint64_t memory_limit_bytes = 0;  // 0 = no limit
  std::string cpu_features;         // e.g. "avx2 fma f16c avx512f"
  std::string auth_token;           // placeholder until CURVE; empty = none
  bool operator==(const Hello&) const = default;
};

struct Heartbeat {
  static constexpr MessageType k_type = MessageType::heartbeat;
  uint64_t timestamp_us = 0;  // sender's clock
  uint64_t sequence = 0;
  bool operator==(const Heartbeat&) const = default;
};

struct ErrorMessage {
  static constexpr MessageType k_type = MessageType::error;
  WireError code = WireError::internal;
  uint16_t in_reply_to = 0;  // MessageType of the offending frame, or 0 when unknown
  std::string message;       // at most Limits::max_string bytes (make_error_message truncates)
  bool operator==(const ErrorMessage&) const = default;
};

struct TensorDesc {
  std::string name;  // non-empty, unique within the segment
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // ne[0] innermost; 1..max_dims entries, each >= 1
  uint64_t n_bytes = 0;         // must equal the size implied by dtype and shape
  Sha256Digest sha256{};        // of the tensor's n_bytes bytes
  bool operator==(const TensorDesc&) const = default;
};

struct LoadSegment {
  static constexpr MessageType k_type = MessageType::load_segment;
  Sha256Digest model_hash{};  // identifies the model (a worker with --model checks its copy)
  uint32_t unit_first = 0;    // unit_first <= unit_last < max_units
  uint32_t unit_last = 0;
  uint32_t n_ctx = 0;  // 1..max_ctx
  // Non-empty: the next stage's Listener; the worker connects a Link there and forwards its output
  // hidden states as ACTIVATION_BATCH (and SAMPLING / RELEASE_SEQUENCE after applying them). Empty:
  // this is the last stage; outputs go back as RESULT to the peer that sent this LOAD_SEGMENT.
  std::string next_endpoint;
  std::vector<uint8_t> metadata;  // GGUF bytes without tensors (hyper-parameters); may be empty
  std::vector<TensorDesc> tensors;
  // CURVE (net/security.h); both empty over plain links. next_public_key: the public key the
  // Listener at next_endpoint must have (the worker's forwarding Link checks it). upstream_public_key:
  // the public key of the worker that forwards to this one (the previous stage), which this worker's
  // Listener then accepts besides its own authorized keys; empty when the coordinator feeds it.
  std::string next_public_key;
  std::string upstream_public_key;
  // The last n_spare entries of `tensors` (<= its size) are spares: tensors of units next to the
  // segment, nearest first, that the worker keeps as its memory allows (and gives up first when a
  // sequence needs the room), so that a later LOAD_SEGMENT moving a boundary onto them needs no
  // transfer. They are not part of the segment: it is ready without them.
  uint32_t n_spare = 0;
  bool operator==(const LoadSegment&) const = default;
};

struct SegmentStatus {
  static constexpr MessageType k_type = MessageType::segment_status;
  SegmentState state = SegmentState::need_tensors;
  // Strictly increasing tensor indices the worker asks for: the segment's it lacks, then the spares
  // it has room for and lacks. In state ready only spares (the segment runs without them).
  std::vector<uint32_t> missing;
  // Strictly increasing indices of spares it will not keep (no room); neither list names the rest,
  // which it holds.
  std::vector<uint32_t> declined = {};
  bool operator==(const SegmentStatus&) const = default;
};

struct TensorChunk {
  static constexpr MessageType k_type = MessageType::tensor_chunk;
  uint32_t tensor_index = 0;  // into LoadSegment::tensors, < max_tensors
  uint64_t offset = 0;        // of data within the tensor; offset + data.size() <= total_bytes
  uint64_t total_bytes = 0;   // the tensor's n_bytes, >= 1
  std::vector<uint8_t> data;  // >= 1 byte; its xxh64 (seed 0) travels with it and is checked
  bool operator==(const TensorChunk&) const = default;
};

struct ActivationBatch {
  static constexpr MessageType k_type = MessageType::activation_batch;
  std::vector<TokenMeta> tokens;     // 1..max_tokens
  uint32_t n_embd = 0;               // 1..max_hidden
  WireDType dtype = WireDType::f32;  // encoding on the wire; decoded values are always F32
  std::vector<float> hidden;         // F32 [tokens.size()][n_embd], finite
  bool operator==(const ActivationBatch&) const = default;
};

struct Result {
  static constexpr MessageType k_type = MessageType::result;
  ResultKind kind = ResultKind::hidden;
  std::vector<TokenMeta> tokens;     // one per row; 1..max_tokens for hidden, 0..max_tokens otherwise
  uint32_t width = 0;                // hidden/logits: 1..max_hidden / 1..max_vocab; token_ids: 0
  WireDType dtype = WireDType::f32;  // hidden/logits only
  std::vector<float> values;         // hidden/logits: F32 [tokens.size()][width], finite
  std::vector<int32_t> token_ids;    // token_ids: one per row, >= 0
  bool operator==(const Result&) const = default;
};

// Frees a sequence's state (KV cache, sampler) on every stage; forwarded along the pipeline.
struct ReleaseSequence {
  static constexpr MessageType k_type = MessageType::release_sequence;
  int32_t seq_id = 0;  // >= 0
  bool operator==(const ReleaseSequence&) const = default;
};

// How the stage that runs the output head picks tokens for one sequence (non-ring mode): from then
// on (until RELEASE_SEQUENCE or another SAMPLING for the sequence, which replaces it and reseeds),
// its rows with want_output come back as RESULT token_ids instead of logits. Forwarded along the
// pipeline like RELEASE_SEQUENCE, so it arrives before the batches sent after it. The values are
// checked only as loosely as model::Sampler needs (top_p >= 1 and min_p == 0 switch a stage off).
//
// No repetition penalty on purpose: it needs the sequence's token history (the prompt included),
// which never leaves the origin. A sequence that wants a penalty sends no SAMPLING: the head returns
// logits and the origin samples.
struct Sampling {
  static constexpr MessageType k_type = MessageType::sampling;
  int32_t seq_id = 0;        // >= 0
  float temperature = 0.0f;  // finite, >= 0; 0 = greedy (argmax, lowest id wins ties)
  int32_t top_k = 0;         // >= 0; 0 = off
  float top_p = 1.0f;        // finite, >= 0; >= 1 = off
  float min_p = 0.0f;        // finite, in [0, 1]; 0 = off
  uint64_t seed = 0;         // the head's RNG seed for this sequence; the origin resolves a "random"
                             // seed before sending, so a run can be reproduced from its log
  bool operator==(const Sampling&) const = default;
};

struct StatsRequest {
  static constexpr MessageType k_type = MessageType::stats_request;
  bool operator==(const StatsRequest&) const = default;
};

struct UnitStats {
  uint32_t unit = 0;      // < max_units
  uint64_t n_tokens = 0;  // tokens this unit has processed
  double compute_ms = 0;  // total compute time, finite and >= 0
  bool operator==(const UnitStats&) const = default;
};

struct Stats {
  static constexpr MessageType k_type = MessageType::stats;
  uint64_t uptime_ms = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t n_messages_in = 0;
  uint64_t n_messages_out = 0;
  uint64_t n_bad_messages = 0;
  uint64_t n_tokens = 0;
  uint64_t rss_bytes = 0;
  uint64_t peak_rss_bytes = 0;  // highest resident set size since the process started
  std::vector<UnitStats> units;  // at most max_units
  bool operator==(const Stats&) const = default;
};

// Asks a worker for a sequence's KV cache (see the pipeline semantics above).
struct KvRequest {
  static constexpr MessageType k_type = MessageType::kv_request;
  int32_t seq_id = 0;       // >= 0
  uint32_t unit_first = 0;  // unit_first <= unit_last < max_units
  uint32_t unit_last = 0;
  bool operator==(const KvRequest&) const = default;
};

// One transformer block's KV cache for one sequence, positions 0..n_pos-1.
struct KvData {
  static constexpr MessageType k_type = MessageType::kv_data;
  int32_t seq_id = 0;          // >= 0
  uint32_t unit = 0;           // < max_units
  uint32_t n_pos = 0;          // 0..max_ctx
  uint32_t kv_dim = 0;         // 1..max_hidden
  std::vector<uint16_t> k, v;  // F16 bits [n_pos][kv_dim] each
  bool operator==(const KvData&) const = default;
};

// A worker stored a KV_DATA.
struct KvStored {
  static constexpr MessageType k_type = MessageType::kv_stored;
  int32_t seq_id = 0;  // >= 0
  uint32_t unit = 0;   // < max_units
  uint32_t n_pos = 0;  // <= max_ctx
  bool operator==(const KvStored&) const = default;
};

// A worker asks a running cluster's origin to take it in (`lingua worker --join`), after HELLO on a
// link to the origin's join endpoint. Answered with HEARTBEAT (accepted: the origin will connect to
// `endpoint` and profile the worker) or ERROR (refused).
struct Join {
  static constexpr MessageType k_type = MessageType::join;
  std::string endpoint;    // where the worker listens: tcp://HOST:PORT (or inproc://NAME); 1..256 bytes
  std::string public_key;  // its CURVE public key (40 Z85 characters), or empty over plain links
  bool operator==(const Join&) const = default;
};

using Message = std::variant<Hello, Heartbeat, ErrorMessage, LoadSegment, SegmentStatus, TensorChunk,
                             ActivationBatch, Result, ReleaseSequence, Sampling, StatsRequest, Stats, KvRequest,
                             KvData, KvStored, Join>;
static_assert(std::variant_size_v<Message> == k_message_types.size(), "every message type has a struct");

MessageType message_type(const Message& m);

// ---------------------------------------------------------------------------------------------- frames

struct FrameHeader {
  uint16_t version = k_protocol_version;
  MessageType type = MessageType::hello;
  uint32_t flags = 0;
  uint64_t request_id = 0;
  uint32_t payload_bytes = 0;
};

// Validates the header of a complete frame (magic, version, known type, zero flags, payload length
// equal to frame.size() - 24, frame size within limits). The payload is not looked at.
Expected<FrameHeader> parse_frame_header(std::span<const uint8_t> frame, const Limits& limits);

// A complete frame (header + payload) whose header has been validated.
class Frame {
 public:
  Frame() = default;
  static Expected<Frame> from_bytes(std::vector<uint8_t> bytes, const Limits& limits);

  MessageType type() const { return header_.type; }
  uint64_t request_id() const { return header_.request_id; }
  const FrameHeader& header() const { return header_; }
  std::span<const uint8_t> bytes() const { return bytes_; }
  std::span<const uint8_t> payload() const {
    if (bytes_.size() < k_frame_header_bytes) return {};  // a default-constructed Frame
    return std::span<const uint8_t>(bytes_).subspan(k_frame_header_bytes);
  }
  size_t size() const { return bytes_.size(); }
  std::vector<uint8_t> take_bytes() && { return std::move(bytes_); }

 private:
  friend Frame encode(const Message& m, uint64_t request_id);
  FrameHeader header_;
  std::vector<uint8_t> bytes_;
};

// Encodes a message as a frame. The message must satisfy the invariants its struct documents
// (e.g. hidden.size() == tokens.size() * n_embd); breaking them is a bug and aborts. Limits are not
// checked here: an encoder may legitimately use larger limits than a given receiver.
Frame encode(const Message& m, uint64_t request_id);

// A decoded message and the request id of its frame.
struct Envelope {
  uint64_t request_id = 0;
  Message message;
};

// Validates and decodes a frame's payload.
Expected<Message> decode_message(const Frame& frame, const Limits& limits);
// Header and payload from raw bytes (what the fuzz target drives).
Expected<Envelope> decode(std::span<const uint8_t> frame_bytes, const Limits& limits);

// Payload decoders, one per type (payload = the bytes after the header).
Expected<Hello> decode_hello(std::span<const uint8_t> payload, const Limits& limits);
Expected<Heartbeat> decode_heartbeat(std::span<const uint8_t> payload, const Limits& limits);
Expected<ErrorMessage> decode_error(std::span<const uint8_t> payload, const Limits& limits);
Expected<LoadSegment> decode_load_segment(std::span<const uint8_t> payload, const Limits& limits);
Expected<SegmentStatus> decode_segment_status(std::span<const uint8_t> payload, const Limits& limits);
Expected<TensorChunk> decode_tensor_chunk(std::span<const uint8_t> payload, const Limits& limits);
Expected<ActivationBatch> decode_activation_batch(std::span<const uint8_t> payload, const Limits& limits);
Expected<Result> decode_result(std::span<const uint8_t> payload, const Limits& limits);
Expected<ReleaseSequence> decode_release_sequence(std::span<const uint8_t> payload, const Limits& limits);
Expected<Sampling> decode_sampling(std::span<const uint8_t> payload, const Limits& limits);
Expected<StatsRequest> decode_stats_request(std::span<const uint8_t> payload, const Limits& limits);
Expected<Stats> decode_stats(std::span<const uint8_t> payload, const Limits& limits);
// Dispatches on `type`; ErrorCode::parse for unknown types.
Expected<Message> decode_payload(uint16_t type, std::span<const uint8_t> payload, const Limits& limits);

// ---------------------------------------------------------------------------------------------- helpers

// The text of a version mismatch, naming both versions.
std::string version_mismatch_text(uint16_t peer_version);

// An ERROR message; `text` is truncated to limits.max_string bytes (at a UTF-8 character boundary).
ErrorMessage make_error_message(WireError code, std::string_view text, uint16_t in_reply_to,
                                const Limits& limits = {});
// An ERROR message for a local Error, its code mapped by wire_error_from().
ErrorMessage make_error_message(const Error& e, uint16_t in_reply_to, const Limits& limits = {});
// The ll::Error a received ERROR message stands for: "peer error (<code name>): <message>".
Error to_error(const ErrorMessage& m);

// The ERROR frame that answers a frame that failed validation (header or payload), or nullopt when
// no answer must be sent: an ERROR is never answered (magic + type ERROR in bytes 0..7, whatever the
// version), so two peers cannot bounce errors forever. The request id and type are echoed when the
// header is readable; a frame from another protocol version gets WireError::version_mismatch.
std::optional<Frame> make_error_reply(std::span<const uint8_t> bad_frame, const Error& why,
                                      const Limits& limits);

}  // namespace ll::net
