// The OpenAI-compatible API: parsing and validating request bodies, and the JSON of responses,
// stream chunks (server-sent events) and errors.
//
// Bodies are untrusted: the nesting depth is bounded before parsing, every field is type-checked,
// unknown fields are refused (as OpenAI does), and options we cannot honour (n != 1, logprobs,
// penalties other than 0, ...) are 400s naming the field rather than silently ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/generate.h"
#include "serve/chat_template.h"

namespace ll::serve {

enum class Endpoint { completions, chat };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::completions;
  std::string model;                  // "" when not given
  std::string prompt;                 // completions
  std::vector<ChatMessage> messages;  // chat
  std::optional<int64_t> max_tokens;  // nullopt: the endpoint's default
  float temperature = 1.0f;           // OpenAI's defaults; top-k and min-p off unless asked for
  float top_p = 1.0f;
  int32_t top_k = 0;                  // extension (llama.cpp server)
  float min_p = 0.0f;                 // extension
  float repeat_penalty = 1.0f;        // extension
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
};

struct ParseLimits {
  size_t max_depth = 32;         // JSON nesting
  size_t max_stop = 4;           // stop strings (OpenAI's limit)
  size_t max_stop_bytes = 256;   // each
  size_t max_messages = 1024;
};

// Parses a request body. Errors: ErrorCode::parse (not JSON / not an object / too deep) and
// ErrorCode::invalid_argument (a field of the wrong type or value; the message names it) — both
// 400; the model name is checked by the server, not here.
Expected<CompletionRequest> parse_completion_request(std::string_view body, Endpoint endpoint,
                                                     const ParseLimits& limits = {});

// The deepest nesting of arrays/objects in a JSON text (strings skipped), stopping early past `stop_at`.
size_t json_nesting_depth(std::string_view text, size_t stop_at);

// Generation options for a parsed request: max_tokens (default: 16 for completions as OpenAI's
// legacy endpoint; until the end of text or the context for chat), sampling and stop strings.
model::GenerateOptions generate_options(const CompletionRequest& r);

// OpenAI's finish_reason: "stop" (end of text or a stop string) or "length" (max_tokens or the context).
const char* finish_reason(model::StopReason r);

// --- Responses -------------------------------------------------------------------------------------
struct ResponseIds {
  std::string id;        // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;   // unix seconds
  std::string model;
};

nlohmann::json completion_response(Endpoint e, const ResponseIds& ids, const std::string& text,
                                   const char* finish, int64_t n_prompt, int64_t n_completion);
// One streamed chunk: a piece of text (finish == nullptr), or the last one carrying finish_reason.
// For chat, the first chunk also carries the role.
nlohmann::json completion_chunk(Endpoint e, const ResponseIds& ids, std::string_view text, const char* finish,
                                bool first);
// The extra last chunk of stream_options.include_usage: no choices, the usage.
nlohmann::json usage_chunk(Endpoint e, const ResponseIds& ids, int64_t n_prompt, int64_t n_completion);

// "data: <json>\n\n" (invalid UTF-8 in text replaced, so a cut multi-byte character cannot break the JSON).
std::string sse_event(const nlohmann::json& j);
inline constexpr std::string_view k_sse_done = "data: [DONE]\n\n";

// {"error":{"message":...,"type":...,"param":null,"code":...}} with the type OpenAI uses for the status.
nlohmann::json error_body(int status, std::string_view message, std::string_view code = {});
// The HTTP status for an error at this boundary.
int http_status(const Error& e);

// JSON text with invalid UTF-8 replaced (model output may cut a character).
std::string dump_json(const nlohmann::json& j);

}  // namespace ll::serve
