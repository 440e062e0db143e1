// Request parsing and validation (every field type-checked, unknown fields and unsupported options
// refused with the field named), response and stream-chunk JSON, SSE framing and error objects.
#include <gtest/gtest.h>

#include <string>

#include "serve/api.h"

namespace ll::serve {
namespace {

using nlohmann::json;

Expected<CompletionRequest> completion(const std::string& body) {
  return parse_completion_request(body, Endpoint::completions);
}
Expected<CompletionRequest> chat(const std::string& body) { return parse_completion_request(body, Endpoint::chat); }

void expect_refused(const Expected<CompletionRequest>& r, const std::string& mentions) {
  ASSERT_FALSE(r.has_value()) << "accepted; wanted an error mentioning " << mentions;
  EXPECT_NE(r.error().message.find(mentions), std::string::npos) << r.error().message;
  EXPECT_EQ(http_status(r.error()), 400);
}

TEST(ServeApi, ParsesACompletionRequestWithEveryOption) {
  auto r = completion(R"({"model":"m","prompt":"Once","max_tokens":7,"temperature":0,"top_p":0.5,"seed":42,
                          "stop":["a","bb"],"n":1,"stream":true,"stream_options":{"include_usage":true},
                          "top_k":5,"min_p":0.1,"repeat_penalty":1.1,"user":"u","frequency_penalty":0,
                          "presence_penalty":0,"logit_bias":{},"echo":false,"best_of":1,"logprobs":null})");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->prompt, "Once");
  EXPECT_EQ(r->max_tokens, 7);
  EXPECT_EQ(r->temperature, 0.0f);
  EXPECT_EQ(r->top_p, 0.5f);
  EXPECT_EQ(r->seed, 42u);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"a", "bb"}));
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  const model::GenerateOptions g = generate_options(*r);
  EXPECT_EQ(g.n_predict, 7);
  EXPECT_EQ(g.sampling.seed, 42u);
  EXPECT_EQ(g.sampling.top_k, 5);
  EXPECT_FLOAT_EQ(g.sampling.min_p, 0.1f);
  EXPECT_FLOAT_EQ(g.sampling.repeat_penalty, 1.1f);
  EXPECT_EQ(g.stop.size(), 2u);
}

TEST(ServeApi, DefaultsFollowOpenAI) {
  auto r = completion(R"({"prompt":["one string in an array"]})");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->prompt, "one string in an array");
  model::GenerateOptions g = generate_options(*r);
  EXPECT_EQ(g.n_predict, 16);  // the legacy completions default
  EXPECT_EQ(g.sampling.temperature, 1.0f);
  EXPECT_EQ(g.sampling.top_p, 1.0f);
  EXPECT_EQ(g.sampling.top_k, 0);  // our CLI's top-k 40 / min-p 0.05 are not OpenAI's
  EXPECT_EQ(g.sampling.min_p, 0.0f);
  EXPECT_EQ(g.sampling.seed, model::kRandomSeed);
  auto c = chat(R"({"messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(generate_options(*c).n_predict, -1);  // chat: until the end of text or the context
}

TEST(ServeApi, ParsesChatMessagesAndTextParts) {
  auto r = chat(R"({"model":"m","messages":[{"role":"system","content":"Be brief."},
                     {"role":"user","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}],"name":"a"},
                     {"role":"developer","content":"x"}],
                   "max_tokens":3,"max_completion_tokens":9,"response_format":{"type":"text"},"logprobs":false})");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_EQ(r->messages[0].role, "system");
  EXPECT_EQ(r->messages[1].content, "Hello");
  EXPECT_EQ(r->messages[2].role, "system");
  EXPECT_EQ(r->max_tokens, 9);  // max_completion_tokens wins
}

TEST(ServeApi, RefusesMalformedBodies) {
  for (const char* body : {"", "{", "not json", "{\"prompt\":\"a\",}", "\xff\xfe", "{\"prompt\":\"a\"} trailing"}) {
    auto r = completion(body);
    ASSERT_FALSE(r.has_value()) << body;
    EXPECT_EQ(r.error().code, ErrorCode::parse) << body;
    EXPECT_EQ(http_status(r.error()), 400);
  }
  expect_refused(completion("[1,2]"), "must be a JSON object");
  expect_refused(completion("\"text\""), "must be a JSON object");
  // Deep nesting is refused before the parser sees it.
  expect_refused(completion(std::string(100000, '[') + std::string(100000, ']')), "nests deeper");
  expect_refused(completion(R"({"prompt":"a","user":)" + std::string(40, '[') + std::string(40, ']') + "}"),
                 "nests deeper");
}

TEST(ServeApi, TypeChecksEveryField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prompt":1})", "'prompt'"},
      {R"({"prompt":["a","b"]})", "'prompt'"},
      {R"({"prompt":"a","model":3})", "'model'"},
      {R"({"prompt":"a","max_tokens":"5"})", "'max_tokens'"},
      {R"({"prompt":"a","max_tokens":1.5})", "'max_tokens'"},
      {R"({"prompt":"a","max_tokens":-1})", "'max_tokens'"},
      {R"({"prompt":"a","max_tokens":99999999999999999999})", "'max_tokens'"},
      {R"({"prompt":"a","temperature":"hot"})", "'temperature'"},
      {R"({"prompt":"a","temperature":2.5})", "'temperature'"},
      {R"({"prompt":"a","top_p":1.5})", "'top_p'"},
      {R"({"prompt":"a","top_k":-1})", "'top_k'"},
      {R"({"prompt":"a","min_p":true})", "'min_p'"},
      {R"({"prompt":"a","repeat_penalty":0})", "'repeat_penalty'"},
      {R"({"prompt":"a","seed":"1"})", "'seed'"},
      {R"({"prompt":"a","seed":4294967295})", "'seed'"},
      {R"({"prompt":"a","stop":5})", "'stop'"},
      {R"({"prompt":"a","stop":["a",1]})", "'stop'"},
      {R"({"prompt":"a","stop":["a","b","c","d","e"]})", "at most 4"},
      {R"({"prompt":"a","stop":[""]})", "'stop'"},
      {R"({"prompt":"a","n":2})", "only n = 1"},
      {R"({"prompt":"a","n":"1"})", "'n'"},
      {R"({"prompt":"a","stream":"yes"})", "'stream'"},
      {R"({"prompt":"a","stream_options":{"include_usage":1}})", "include_usage"},
      {R"({"prompt":"a","stream_options":{"other":true}})", "'stream_options'"},
      {R"({"prompt":"a","user":5})", "'user'"},
      {R"({"prompt":"a","frequency_penalty":0.5})", "'frequency_penalty'"},
      {R"({"prompt":"a","logit_bias":{"1":5}})", "'logit_bias'"},
      {R"({"prompt":"a","echo":true})", "'echo'"},
      {R"({"prompt":"a","best_of":3})", "'best_of'"},
      {R"({"prompt":"a","logprobs":2})", "'logprobs'"},
      {R"({"prompt":"a","whatever":1})", "unrecognized request argument supplied: whatever"},
      {R"({"max_tokens":1})", "'prompt': is required"},
  };
  for (const auto& [body, mentions] : cases) {
    SCOPED_TRACE(body);
    expect_refused(completion(body), mentions);
  }
  const std::pair<const char*, const char*> chat_cases[] = {
      {R"({"messages":[]})", "'messages'"},
      {R"({"messages":"hi"})", "'messages'"},
      {R"({"messages":[1]})", "'messages[0]'"},
      {R"({"messages":[{"role":"user"}]})", "'messages[0].content': is required"},
      {R"({"messages":[{"content":"x"}]})", "'messages[0].role': is required"},
      {R"({"messages":[{"role":"tool","content":"x"}]})", "'messages[0].role'"},
      {R"({"messages":[{"role":"user","content":5}]})", "'messages[0].content'"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", "'messages[0].content'"},
      {R"({"messages":[{"role":"user","content":"x","tool_calls":[]}]})", "unknown field 'tool_calls'"},
      {R"({"messages":[{"role":"user","content":"x"}],"prompt":"a"})", "unrecognized request argument"},
      {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})", "'response_format'"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})", "'logprobs'"},
      {R"({"prompt":"a"})", "unrecognized request argument supplied: prompt"},
  };
  for (const auto& [body, mentions] : chat_cases) {
    SCOPED_TRACE(body);
    expect_refused(chat(body), mentions);
  }
}

TEST(ServeApi, NestingDepthSkipsStrings) {
  EXPECT_EQ(json_nesting_depth(R"({"a":"[[[[{{{{"})", 10), 1u);
  EXPECT_EQ(json_nesting_depth(R"({"a":"\"[[["})", 10), 1u);
  EXPECT_EQ(json_nesting_depth(R"([[[]],{"b":[{}]}])", 10), 4u);
  EXPECT_EQ(json_nesting_depth(std::string(1000, '['), 5), 6u);  // stops early
}

TEST(ServeApi, FinishReasonsAreOpenAIs) {
  EXPECT_STREQ(finish_reason(model::StopReason::eog), "stop");
  EXPECT_STREQ(finish_reason(model::StopReason::stop_string), "stop");
  EXPECT_STREQ(finish_reason(model::StopReason::length), "length");
  EXPECT_STREQ(finish_reason(model::StopReason::context), "length");
}

TEST(ServeApi, ResponsesAndChunksHaveOpenAIsShape) {
  ResponseIds ids{"cmpl-1", 1700000000, "m"};
  json c = completion_response(Endpoint::completions, ids, "text", "length", 5, 3);
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "text");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["usage"], json({{"prompt_tokens", 5}, {"completion_tokens", 3}, {"total_tokens", 8}}));
  json h = completion_response(Endpoint::chat, ids, "hi", "stop", 1, 1);
  EXPECT_EQ(h["object"], "chat.completion");
  EXPECT_EQ(h["choices"][0]["message"], json({{"role", "assistant"}, {"content", "hi"}}));
  json first = completion_chunk(Endpoint::chat, ids, "", nullptr, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  json last = completion_chunk(Endpoint::chat, ids, "", "stop", false);
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  json piece = completion_chunk(Endpoint::completions, ids, "abc", nullptr, false);
  EXPECT_EQ(piece["choices"][0]["text"], "abc");
  json usage = usage_chunk(Endpoint::chat, ids, 2, 3);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 5);
}

TEST(ServeApi, SseEventsAreOneDataLineAndABlankLine) {
  const std::string e = sse_event(json{{"a", "x\ny"}});
  EXPECT_EQ(e, "data: {\"a\":\"x\\ny\"}\n\n");
  EXPECT_EQ(std::string(k_sse_done), "data: [DONE]\n\n");
  // A cut UTF-8 character (a byte token) cannot break the JSON.
  const std::string cut = sse_event(json{{"text", std::string("caf\xc3")}});
  EXPECT_TRUE(json::parse(cut.substr(6)).is_object());
}

TEST(ServeApi, ErrorObjectsCarryOpenAIsTypes) {
  json e = error_body(400, "bad", "x");
  EXPECT_EQ(e["error"]["message"], "bad");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["code"], "x");
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_EQ(error_body(401, "k")["error"]["type"], "authentication_error");
  EXPECT_EQ(error_body(429, "q")["error"]["type"], "rate_limit_error");
  EXPECT_EQ(error_body(503, "u")["error"]["type"], "service_unavailable");
  EXPECT_TRUE(error_body(404, "n")["error"]["code"].is_null());
  EXPECT_EQ(http_status(make_error(ErrorCode::not_found, "")), 404);
  EXPECT_EQ(http_status(make_error(ErrorCode::out_of_range, "")), 413);
  EXPECT_EQ(http_status(make_error(ErrorCode::resource, "")), 503);
  EXPECT_EQ(http_status(make_error(ErrorCode::internal, "")), 500);
}

}  // namespace
}  // namespace ll::serve
