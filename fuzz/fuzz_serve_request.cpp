// libFuzzer target for the HTTP server's request parser (src/serve/api.h) and chat rendering: the
// first byte picks the endpoint, the rest is a request body. Parsing must return a value or an
// ErrorCode::parse / invalid_argument Error with a message — never crash, hang or recurse without
// bound (the depth check runs before the JSON parser) — and whatever parses must satisfy the
// documented limits, give generation options in range, and render with every chat template.
//
//   fuzz/run_fuzz.sh build-fuzz/fuzz_serve_request 60
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "serve/api.h"
#include "serve/chat_template.h"

namespace {

using namespace ll::serve;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_serve_request invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Endpoint endpoint = (data[0] & 1) != 0 ? Endpoint::chat : Endpoint::completions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  ParseLimits limits;
  auto r = parse_completion_request(body, endpoint, limits);
  if (!r) {
    const auto code = r.error().code;
    if (code != ll::ErrorCode::parse && code != ll::ErrorCode::invalid_argument) fail("error code", r.error().message);
    if (r.error().message.empty()) fail("error", "empty message");
    if (http_status(r.error()) != 400) fail("status", r.error().message);
    return 0;
  }
  if (r->stop.size() > limits.max_stop) fail("stop", "too many stop strings");
  for (const auto& s : r->stop) {
    if (s.empty() || s.size() > limits.max_stop_bytes) fail("stop", "a stop string out of its limits");
  }
  if (endpoint == Endpoint::chat && (r->messages.empty() || r->messages.size() > limits.max_messages)) {
    fail("messages", "count out of its limits");
  }
  const auto g = generate_options(*r);
  if (!(g.sampling.temperature >= 0 && g.sampling.temperature <= 2)) fail("temperature", "out of range");
  if (!(g.sampling.top_p >= 0 && g.sampling.top_p <= 1)) fail("top_p", "out of range");
  if (g.n_predict < -1) fail("max_tokens", "negative");
  if (r->seed && *r->seed == ll::model::kRandomSeed) fail("seed", "the reserved value was accepted");
  for (auto t : {ChatTemplate::plain, ChatTemplate::llama2, ChatTemplate::llama3, ChatTemplate::chatml,
                 ChatTemplate::zephyr, ChatTemplate::mistral}) {
    (void)render_chat(t, r->messages);
  }
  // Responses built from parsed text must be valid JSON whatever the bytes (invalid UTF-8 replaced).
  const std::string text = endpoint == Endpoint::chat ? r->messages.back().content : r->prompt;
  const std::string ev = sse_event(completion_chunk(endpoint, ResponseIds{"id", 0, r->model}, text, nullptr, true));
  if (nlohmann::json::parse(ev.substr(6), nullptr, false).is_discarded()) fail("sse", "not JSON");
  return 0;
}
