// libFuzzer target for the wire decoder (src/net/protocol.h): arbitrary bytes are decoded as a
// whole frame, and as the payload of every message type, under the default limits and under tiny
// ones. Decoding must return an ErrorCode::parse Error or a message, never crash, hang or allocate
// without bound (ASan+UBSan and -rss_limit_mb watch), and whatever decodes must re-encode to exactly
// the input bytes (the encoding is canonical), so the decoder cannot accept what the encoder would
// not write. The ERROR reply for a rejected frame must itself decode.
//
// Seeds and run (see fuzz/make_wire_seeds.sh):
//   fuzz/make_wire_seeds.sh build-fuzz/wire-corpus
//   build-fuzz/fuzz_wire -max_total_time=60 -rss_limit_mb=2048 -max_len=65536
//       -dict=fuzz/wire.dict build-fuzz/wire-corpus          (one command line)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "net/protocol.h"

namespace {

using namespace ll::net;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_wire invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool same(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

void check_error(const ll::Error& e, const char* where) {
  if (e.code != ll::ErrorCode::parse) fail(where, "error code is not parse: " + e.message);
  if (e.message.empty()) fail(where, "empty error message");
}

void fuzz_with(std::span<const uint8_t> in, const Limits& limits) {
  // 1. A whole frame.
  auto env = decode(in, limits);
  if (env) {
    const Frame again = encode(env->message, env->request_id);
    if (!same(again.bytes(), in))
      fail("frame re-encoding differs", message_type_name(message_type(env->message)));
  } else {
    check_error(env.error(), "decode");
    if (auto reply = make_error_reply(in, env.error(), limits)) {
      auto back = decode(reply->bytes(), limits);
      if (!back || !std::holds_alternative<ErrorMessage>(back->message))
        fail("error reply does not decode", "");
    }
  }
  // 2. The same bytes as the payload of every type.
  for (MessageType t : k_message_types) {
    auto m = decode_payload(static_cast<uint16_t>(t), in, limits);
    if (!m) {
      check_error(m.error(), "decode_payload");
      continue;
    }
    if (message_type(*m) != t) fail("decoded type", message_type_name(t));
    const Frame again = encode(*m, 0);
    if (!same(again.payload(), in)) fail("payload re-encoding differs", message_type_name(t));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  fuzz_with(in, Limits{});
  Limits tiny;
  tiny.max_frame_bytes = 256;
  tiny.max_tokens = 3;
  tiny.max_hidden = 4;
  tiny.max_vocab = 5;
  tiny.max_string = 8;
  tiny.max_tensors = 2;
  tiny.max_units = 16;
  tiny.max_ctx = 64;
  tiny.max_dims = 2;
  tiny.max_metadata_bytes = 8;
  fuzz_with(in, tiny);
  return 0;
}
