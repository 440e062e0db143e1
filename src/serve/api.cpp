#include "serve/api.h"

#include <cmath>
#include <functional>
#include <map>

namespace ll::serve {

namespace {

using nlohmann::json;

Error bad(std::string_view field, std::string_view what) {
  return make_error(ErrorCode::invalid_argument, std::string("'").append(field).append("': ").append(what));
}

Expected<double> number_in(const json& v, std::string_view field, double lo, double hi) {
  if (!v.is_number()) return bad(field, "must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    return bad(field, "must be between " + json(lo).dump() + " and " + json(hi).dump());
  }
  return x;
}

Expected<int64_t> integer_in(const json& v, std::string_view field, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) return bad(field, "must be an integer");
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return bad(field, "must be at most " + std::to_string(hi));
    return static_cast<int64_t>(u);
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) return bad(field, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return x;
}

// Message content: a string, or an array of {"type":"text","text":...} parts (joined).
Expected<std::string> content_text(const json& v, std::string_view field) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) return bad(field, "must be a string or an array of text parts");
  std::string out;
  for (const auto& part : v) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return bad(field, "only parts of the form {\"type\":\"text\",\"text\":\"...\"} are supported");
    }
    out += part["text"].get<std::string>();
  }
  return out;
}

// A field whose only accepted values are the ones that mean "off" (null, false, 0, 1, ...).
using Check = std::function<Expected<void>(const json&, CompletionRequest&)>;

Check only_default(std::string_view field, std::function<bool(const json&)> ok, std::string what) {
  return [field = std::string(field), ok = std::move(ok), what = std::move(what)](const json& v,
                                                                                   CompletionRequest&) -> Expected<void> {
    if (v.is_null() || ok(v)) return {};
    return bad(field, what);
  };
}

}  // namespace

size_t json_nesting_depth(std::string_view text, size_t stop_at) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    else if (ch == '[' || ch == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > stop_at) return deepest;
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

Expected<CompletionRequest> parse_completion_request(std::string_view body, Endpoint endpoint,
                                                     const ParseLimits& limits) {
  if (json_nesting_depth(body, limits.max_depth) > limits.max_depth) {
    return make_error(ErrorCode::parse, "the body nests deeper than " + std::to_string(limits.max_depth) + " levels");
  }
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return make_error(ErrorCode::parse, "the body is not valid JSON");
  if (!j.is_object()) return make_error(ErrorCode::parse, "the body must be a JSON object");

  CompletionRequest r;
  r.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::chat;
  std::map<std::string, Check, std::less<>> checks;
  checks["model"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (!v.is_string()) return bad("model", "must be a string");
    q.model = v.get<std::string>();
    return {};
  };
  auto max_tokens = [](std::string_view field) {
    return [field = std::string(field)](const json& v, CompletionRequest& q) -> Expected<void> {
      if (v.is_null()) return {};
      LL_ASSIGN_OR_RETURN(q.max_tokens, integer_in(v, field, 0, 1 << 30));
      return {};
    };
  };
  checks["max_tokens"] = max_tokens("max_tokens");
  checks["temperature"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    LL_ASSIGN_OR_RETURN(double x, number_in(v, "temperature", 0, 2));
    q.temperature = static_cast<float>(x);
    return {};
  };
  checks["top_p"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    LL_ASSIGN_OR_RETURN(double x, number_in(v, "top_p", 0, 1));
    q.top_p = static_cast<float>(x);
    return {};
  };
  checks["top_k"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    LL_ASSIGN_OR_RETURN(int64_t x, integer_in(v, "top_k", 0, 1 << 24));
    q.top_k = static_cast<int32_t>(x);
    return {};
  };
  checks["min_p"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    LL_ASSIGN_OR_RETURN(double x, number_in(v, "min_p", 0, 1));
    q.min_p = static_cast<float>(x);
    return {};
  };
  checks["repeat_penalty"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    LL_ASSIGN_OR_RETURN(double x, number_in(v, "repeat_penalty", 0.01, 100));
    q.repeat_penalty = static_cast<float>(x);
    return {};
  };
  checks["seed"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    // The sampler reserves 0xFFFFFFFF for "draw a random seed".
    LL_ASSIGN_OR_RETURN(int64_t x, integer_in(v, "seed", INT64_MIN, INT64_MAX));
    const auto s = static_cast<uint64_t>(x);
    if (s == model::kRandomSeed) return bad("seed", "4294967295 is reserved (it means a random seed)");
    q.seed = s;
    return {};
  };
  checks["stop"] = [&limits](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    std::vector<json> items;
    if (v.is_string()) items.push_back(v);
    else if (v.is_array()) items.assign(v.begin(), v.end());
    else return bad("stop", "must be a string or an array of strings");
    if (items.size() > limits.max_stop) return bad("stop", "at most " + std::to_string(limits.max_stop) + " strings");
    for (const auto& s : items) {
      if (!s.is_string()) return bad("stop", "must be a string or an array of strings");
      std::string text = s.get<std::string>();
      if (text.empty()) return bad("stop", "stop strings must not be empty");
      if (text.size() > limits.max_stop_bytes) {
        return bad("stop", "each stop string is at most " + std::to_string(limits.max_stop_bytes) + " bytes");
      }
      q.stop.push_back(std::move(text));
    }
    return {};
  };
  checks["n"] = [](const json& v, CompletionRequest&) -> Expected<void> {
    if (v.is_null()) return {};
    if (!v.is_number_integer()) return bad("n", "must be an integer");
    if (v != 1) return bad("n", "only n = 1 is supported");
    return {};
  };
  checks["stream"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    if (!v.is_boolean()) return bad("stream", "must be a boolean");
    q.stream = v.get<bool>();
    return {};
  };
  checks["stream_options"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
    if (v.is_null()) return {};
    if (!v.is_object()) return bad("stream_options", "must be an object");
    for (const auto& [k, x] : v.items()) {
      if (k != "include_usage") return bad("stream_options", "unknown field '" + k + "'");
      if (!x.is_boolean()) return bad("stream_options.include_usage", "must be a boolean");
      q.include_usage = x.get<bool>();
    }
    return {};
  };
  checks["user"] = [](const json& v, CompletionRequest&) -> Expected<void> {
    if (v.is_null() || v.is_string()) return {};
    return bad("user", "must be a string");
  };
  auto zero = [](const json& v) { return v.is_number() && v.get<double>() == 0; };
  checks["frequency_penalty"] = only_default("frequency_penalty", zero, "only 0 is supported (see repeat_penalty)");
  checks["presence_penalty"] = only_default("presence_penalty", zero, "only 0 is supported (see repeat_penalty)");
  checks["logit_bias"] = only_default("logit_bias", [](const json& v) { return v.is_object() && v.empty(); },
                                      "is not supported");
  if (chat) {
    checks["max_completion_tokens"] = max_tokens("max_completion_tokens");
    checks["logprobs"] = only_default("logprobs", [](const json& v) { return v == false; }, "is not supported");
    checks["top_logprobs"] = only_default("top_logprobs", [](const json&) { return false; }, "is not supported");
    checks["response_format"] = only_default(
        "response_format", [](const json& v) { return v.is_object() && v.size() == 1 && v.value("type", "") == "text"; },
        "only {\"type\":\"text\"} is supported");
    checks["messages"] = [&limits](const json& v, CompletionRequest& q) -> Expected<void> {
      if (!v.is_array() || v.empty()) return bad("messages", "must be a non-empty array");
      if (v.size() > limits.max_messages) {
        return bad("messages", "at most " + std::to_string(limits.max_messages) + " messages");
      }
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string field = "messages[" + std::to_string(i) + "]";
        const json& m = v[i];
        if (!m.is_object()) return bad(field, "must be an object");
        ChatMessage msg;
        bool has_content = false;
        for (const auto& [k, x] : m.items()) {
          if (k == "role") {
            if (!x.is_string()) return bad(field + ".role", "must be a string");
            msg.role = x.get<std::string>();
            if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for it
            if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
              return bad(field + ".role", "must be \"system\", \"user\" or \"assistant\"");
            }
          } else if (k == "content") {
            LL_ASSIGN_OR_RETURN(msg.content, content_text(x, field + ".content"));
            has_content = true;
          } else if (k == "name") {
            if (!x.is_string()) return bad(field + ".name", "must be a string");
          } else {
            return bad(field, "unknown field '" + k + "'");
          }
        }
        if (msg.role.empty()) return bad(field + ".role", "is required");
        if (!has_content) return bad(field + ".content", "is required");
        q.messages.push_back(std::move(msg));
      }
      return {};
    };
  } else {
    checks["prompt"] = [](const json& v, CompletionRequest& q) -> Expected<void> {
      if (v.is_string()) {
        q.prompt = v.get<std::string>();
      } else if (v.is_array() && v.size() == 1 && v[0].is_string()) {
        q.prompt = v[0].get<std::string>();
      } else {
        return bad("prompt", "must be a string (or an array of one string)");
      }
      return {};
    };
    checks["echo"] = only_default("echo", [](const json& v) { return v == false; }, "is not supported");
    checks["logprobs"] = only_default("logprobs", [](const json&) { return false; }, "is not supported");
    checks["best_of"] = only_default("best_of", [](const json& v) { return v == 1; }, "only 1 is supported");
    checks["suffix"] = only_default("suffix", [](const json& v) { return v == ""; }, "is not supported");
  }
  for (const auto& [key, value] : j.items()) {
    auto it = checks.find(key);
    if (it == checks.end()) {
      return make_error(ErrorCode::invalid_argument, "unrecognized request argument supplied: " + key);
    }
    LL_TRY(it->second(value, r));
  }
  if (chat && !j.contains("messages")) return bad("messages", "is required");
  if (!chat && !j.contains("prompt")) return bad("prompt", "is required");
  if (chat && j.contains("max_completion_tokens") && !j["max_completion_tokens"].is_null()) {
    // max_completion_tokens wins (OpenAI's newer name); parsed into max_tokens by the same check.
    LL_ASSIGN_OR_RETURN(r.max_tokens, integer_in(j["max_completion_tokens"], "max_completion_tokens", 0, 1 << 30));
  }
  return r;
}

model::GenerateOptions generate_options(const CompletionRequest& r) {
  model::GenerateOptions g;
  g.n_predict = r.max_tokens ? *r.max_tokens : (r.endpoint == Endpoint::completions ? 16 : -1);
  g.sampling.temperature = r.temperature;
  g.sampling.top_p = r.top_p;
  g.sampling.top_k = r.top_k;
  g.sampling.min_p = r.min_p;
  g.sampling.repeat_penalty = r.repeat_penalty;
  g.sampling.seed = r.seed ? *r.seed : model::kRandomSeed;
  g.stop = r.stop;
  return g;
}

const char* finish_reason(model::StopReason r) {
  switch (r) {
    case model::StopReason::eog:
    case model::StopReason::stop_string: return "stop";
    case model::StopReason::length:
    case model::StopReason::context: return "length";
  }
  return "stop";
}

namespace {

json usage_json(int64_t n_prompt, int64_t n_completion) {
  return {{"prompt_tokens", n_prompt}, {"completion_tokens", n_completion}, {"total_tokens", n_prompt + n_completion}};
}

json envelope(Endpoint e, const ResponseIds& ids, bool chunk) {
  const char* object = e == Endpoint::chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", ids.id}, {"object", object}, {"created", ids.created}, {"model", ids.model},
          {"system_fingerprint", "lingua"}};
}

}  // namespace

json completion_response(Endpoint e, const ResponseIds& ids, const std::string& text, const char* finish,
                         int64_t n_prompt, int64_t n_completion) {
  json j = envelope(e, ids, false);
  json choice{{"index", 0}, {"finish_reason", finish}, {"logprobs", nullptr}};
  if (e == Endpoint::chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(n_prompt, n_completion);
  return j;
}

json completion_chunk(Endpoint e, const ResponseIds& ids, std::string_view text, const char* finish, bool first) {
  json j = envelope(e, ids, true);
  json choice{{"index", 0}, {"finish_reason", finish == nullptr ? json() : json(finish)}, {"logprobs", nullptr}};
  if (e == Endpoint::chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish == nullptr)) delta["content"] = std::string(text);
    choice["delta"] = delta;
  } else {
    choice["text"] = std::string(text);
  }
  j["choices"] = json::array({choice});
  return j;
}

json usage_chunk(Endpoint e, const ResponseIds& ids, int64_t n_prompt, int64_t n_completion) {
  json j = envelope(e, ids, true);
  j["choices"] = json::array();
  j["usage"] = usage_json(n_prompt, n_completion);
  return j;
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& j) { return std::string("data: ").append(dump_json(j)).append("\n\n"); }

json error_body(int status, std::string_view message, std::string_view code) {
  const char* type = "invalid_request_error";
  if (status == 401) type = "authentication_error";
  else if (status == 404) type = "not_found_error";
  else if (status == 429) type = "rate_limit_error";
  else if (status >= 500) type = status == 503 ? "service_unavailable" : "server_error";
  return {{"error",
           {{"message", std::string(message)}, {"type", type}, {"param", nullptr},
            {"code", code.empty() ? json() : json(std::string(code))}}}};
}

int http_status(const Error& e) {
  switch (e.code) {
    case ErrorCode::invalid_argument:
    case ErrorCode::parse:
    case ErrorCode::unsupported: return 400;
    case ErrorCode::not_found: return 404;
    case ErrorCode::out_of_range: return 413;
    case ErrorCode::resource: return 503;
    case ErrorCode::io:
    case ErrorCode::internal: return 500;
  }
  return 500;
}

}  // namespace ll::serve
