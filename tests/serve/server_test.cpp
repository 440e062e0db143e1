// The HTTP layer over a fake engine: routes, statuses and OpenAI error objects, authentication,
// body limits, the queue bound, streaming framing, health, metrics and the cluster page.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "common/shared_files.h"
#include "fake_engine.h"
#include "gguf/gguf.h"
#include "model/tokenizer.h"
#include "serve/server.h"

namespace ll::serve {
namespace {

using nlohmann::json;

struct Harness {
  explicit Harness(ServerOptions o = {}, size_t max_queue = 8) {
    auto f = gguf::File::open(test::shared_path("models/stories260K.gguf"));
    EXPECT_TRUE(f.has_value());
    if (!f) return;
    auto t = model::Tokenizer::from_gguf(*f);
    EXPECT_TRUE(t.has_value());
    if (!t) return;
    tok = std::make_unique<model::Tokenizer>(std::move(*t));
    scheduler = std::make_unique<Scheduler>(engine, SchedulerOptions{max_queue}, metrics, events);
    o.host = "127.0.0.1";
    o.port = 0;
    if (o.model_id.empty()) o.model_id = "tiny";
    o.n_ctx = 64;
    auto s = Server::start(o, *scheduler, *tok, metrics, events);
    EXPECT_TRUE(s.has_value()) << s.error().message;
    if (s) server = std::move(*s);
  }
  ~Harness() {
    if (scheduler) scheduler->shutdown();
    if (server) server->stop();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(10);
    return c;
  }
  test::FakeEngine engine;
  ServeMetrics metrics;
  EventLog events;
  std::unique_ptr<model::Tokenizer> tok;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Server> server;
};

void expect_error(const httplib::Result& r, int status, const std::string& mentions = {}) {
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, status) << r->body;
  json j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  ASSERT_TRUE(j.contains("error")) << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["error"]["type"].is_string());
  if (!mentions.empty()) {
    EXPECT_NE(j["error"]["message"].get<std::string>().find(mentions), std::string::npos) << r->body;
  }
}

// Sends raw bytes to 127.0.0.1:port and returns everything the server answers until it closes.
std::string raw_exchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "(socket failed)";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

#define REQUIRE_HARNESS(h) \
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf")); \
  Harness h;                                                        \
  ASSERT_TRUE(h.server)

TEST(ServeServer, CompletesAndCountsUsage) {
  REQUIRE_HARNESS(h);
  auto r = h.client().Post("/v1/completions", R"({"model":"tiny","prompt":"Once upon a time","max_tokens":3})",
                           "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["text"], "ababab");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);  // BOS + 4, as llama.cpp tokenizes it
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["model"], "tiny");
  auto c = h.client().Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":2})",
                           "application/json");
  ASSERT_TRUE(c);
  ASSERT_EQ(c->status, 200) << c->body;
  EXPECT_EQ(json::parse(c->body)["choices"][0]["message"]["content"], "abab");
}

TEST(ServeServer, StreamsServerSentEventsEndingWithDone) {
  REQUIRE_HARNESS(h);
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    SCOPED_TRACE(path);
    const bool chat = std::string(path).find("chat") != std::string::npos;
    const std::string body = chat ? R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"stream":true,
                                       "stream_options":{"include_usage":true}})"
                                  : R"({"prompt":"Hi","max_tokens":2,"stream":true})";
    auto r = h.client().Post(path, body, "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
    // Every event is "data: ...\n\n"; the last is [DONE].
    std::string text, finish;
    bool usage = false;
    size_t at = 0, n_events = 0;
    std::string last;
    while (at < r->body.size()) {
      const size_t end = r->body.find("\n\n", at);
      ASSERT_NE(end, std::string::npos) << r->body;
      const std::string ev = r->body.substr(at, end - at);
      ASSERT_EQ(ev.rfind("data: ", 0), 0u) << ev;
      last = ev.substr(6);
      at = end + 2;
      ++n_events;
      if (last == "[DONE]") break;
      json j = json::parse(last);
      if (j.contains("usage")) {
        usage = true;
        EXPECT_EQ(j["usage"]["completion_tokens"], 2);
        continue;
      }
      const json& ch = j["choices"][0];
      text += chat ? ch["delta"].value("content", "") : ch["text"].get<std::string>();
      if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
    }
    EXPECT_EQ(last, "[DONE]");
    EXPECT_EQ(at, r->body.size());
    EXPECT_EQ(text, "abab");
    EXPECT_EQ(finish, "length");
    EXPECT_EQ(usage, chat);
    EXPECT_GE(n_events, 3u);
  }
}

// A streaming client that goes away cancels its request: the engine is told at the next token.
TEST(ServeServer, AStreamingClientThatLeavesCancelsItsRequest) {
  REQUIRE_HARNESS(h);
  h.engine.token_delay_ms_ = 2;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"prompt":"a","max_tokens":5000,"stream":true})";
  req.set_header("Content-Type", "application/json");
  size_t received = 0;
  req.content_receiver = [&](const char*, size_t n, uint64_t, uint64_t) {
    received += n;
    return false;  // hang up after the first chunk
  };
  (void)h.client().send(req);
  EXPECT_GT(received, 0u);
  for (int i = 0; i < 500 && h.engine.n_cancelled_.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(h.engine.n_cancelled_.load(), 1);
  for (int i = 0; i < 500 && h.metrics.batches_total.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const uint64_t generated = h.metrics.completion_tokens_total.load();  // counted once the batch ended
  EXPECT_GT(generated, 0u);
  EXPECT_LT(generated, 5000u);
  // The server goes on serving.
  auto r = h.client().Post("/v1/completions", R"({"prompt":"a","max_tokens":1})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(ServeServer, AnswersBadRequestsWithOpenAIErrorObjects) {
  REQUIRE_HARNESS(h);
  auto c = h.client();
  expect_error(c.Post("/v1/completions", "{not json", "application/json"), 400, "not valid JSON");
  expect_error(c.Post("/v1/completions", "", "application/json"), 400);
  expect_error(c.Post("/v1/completions", R"({"prompt":"a","n":3})", "application/json"), 400, "n = 1");
  expect_error(c.Post("/v1/completions", R"({"prompt":"a","max_tokens":"x"})", "application/json"), 400, "max_tokens");
  expect_error(c.Post("/v1/chat/completions", R"({"messages":[{"role":"user"}]})", "application/json"), 400, "content");
  expect_error(c.Post("/v1/completions", R"({"prompt":"a","model":"gpt-4"})", "application/json"), 404, "gpt-4");
  expect_error(c.Get("/v1/models/gpt-4"), 404);
  expect_error(c.Get("/no/such/route"), 404, "no route");
  expect_error(c.Post("/v1/completions", R"({"prompt":")" + std::string(600, 'x') + "\"}", "application/json"), 400,
               "context");  // 600 characters do not fit a 64-token context
  // Bytes that are not UTF-8 in a string: still a JSON parse error, not a crash.
  expect_error(c.Post("/v1/completions", std::string("{\"prompt\":\"\xff\xfe\"}"), "application/json"), 400);
}

// curl -d sends application/x-www-form-urlencoded; httplib would cap such bodies at 8 KiB and
// parse them as forms. The server reads bodies itself, whatever their content type.
TEST(ServeServer, ReadsJsonBodiesWhateverTheirContentType) {
  REQUIRE_HARNESS(h);
  const std::string padded = R"({"prompt":"Once upon a time","max_tokens":2,"user":")" + std::string(20000, 'u') + "\"}";
  for (const char* type : {"application/x-www-form-urlencoded", "text/plain", "application/json"}) {
    auto r = h.client().Post("/v1/completions", padded, type);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << type << ": " << r->body;
  }
  expect_error(h.client().Post("/v1/completions", "--x\r\n\r\n--x--\r\n", "multipart/form-data; boundary=x"), 400,
               "multipart");
  // The connection stays usable after refused requests (keep-alive).
  httplib::Client c = h.client();
  c.set_keep_alive(true);
  expect_error(c.Post("/v1/completions", "{", "application/json"), 400);
  auto ok = c.Post("/v1/completions", R"({"prompt":"a","max_tokens":1})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST(ServeServer, RefusesBodiesOverTheLimitWith413) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  ServerOptions o;
  o.max_body_bytes = 1000;
  Harness h(o);
  ASSERT_TRUE(h.server);
  {
    SCOPED_TRACE("Content-Length over the limit");
    expect_error(h.client().Post("/v1/completions", R"({"prompt":")" + std::string(5000, 'x') + "\"}", "application/json"),
                 413, "larger than 1000 bytes");
  }
  {
    SCOPED_TRACE("form-urlencoded over the limit");
    expect_error(h.client().Post("/v1/chat/completions", std::string(1001, ' '), "application/x-www-form-urlencoded"),
                 413);
  }
  // Chunked bodies (no Content-Length) are cut at the limit as they arrive; the rest is read and
  // dropped so that the client gets the 413 (written on a raw socket: the whole exchange is ours).
  SCOPED_TRACE("chunked over the limit");
  std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  for (int i = 0; i < 8; ++i) request += "1f4\r\n" + std::string(500, ' ') + "\r\n";  // 0x1f4 = 500
  request += "0\r\n\r\n";
  const std::string reply = raw_exchange(h.server->port(), request);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply;
  EXPECT_NE(reply.find("larger than 1000 bytes"), std::string::npos) << reply;
}

TEST(ServeServer, ChecksTheApiKeyOnV1Routes) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  ServerOptions o;
  o.api_key = "sekrit";
  Harness h(o);
  ASSERT_TRUE(h.server);
  auto c = h.client();
  expect_error(c.Get("/v1/models"), 401, "API key");
  expect_error(c.Post("/v1/completions", R"({"prompt":"a"})", "application/json"), 401);
  c.set_bearer_token_auth("wrong!");
  expect_error(c.Get("/v1/models"), 401);
  c.set_bearer_token_auth("sekri");
  expect_error(c.Get("/v1/models"), 401);
  c.set_bearer_token_auth("sekrit");
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["data"][0]["id"], "tiny");
  auto health = h.client().Get("/health");  // open
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST(ServeServer, AnswersTooManyRequestsWhenTheQueueIsFull) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  Harness h({}, /*max_queue=*/1);
  ASSERT_TRUE(h.server);
  h.engine.max_batch_ = 1;
  h.engine.hold();
  const std::string body = R"({"prompt":"a","max_tokens":1})";
  std::vector<std::thread> waiting;
  std::vector<int> statuses(2, 0);
  waiting.emplace_back([&] { auto r = h.client().Post("/v1/completions", body, "application/json"); statuses[0] = r ? r->status : -1; });
  h.engine.wait_started(1);  // one runs
  waiting.emplace_back([&] { auto r = h.client().Post("/v1/completions", body, "application/json"); statuses[1] = r ? r->status : -1; });
  while (h.scheduler->state().queued < 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // one waits
  expect_error(h.client().Post("/v1/completions", body, "application/json"), 429, "retry");
  h.engine.release();
  for (auto& t : waiting) t.join();
  EXPECT_EQ(statuses, (std::vector<int>{200, 200}));
  EXPECT_EQ(h.metrics.requests_rejected.load(), 1u);
}

TEST(ServeServer, AnswersServiceUnavailableAfterAPipelineFailure) {
  REQUIRE_HARNESS(h);
  h.engine.fail_with(make_error(ErrorCode::io, "worker gone"));
  expect_error(h.client().Post("/v1/completions", R"({"prompt":"a"})", "application/json"), 503, "worker gone");
  expect_error(h.client().Post("/v1/completions", R"({"prompt":"a"})", "application/json"), 503);
  expect_error(h.client().Get("/health"), 503);
}

TEST(ServeServer, RefusesChatWhenTheTemplateIsUnknown) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  ServerOptions o;
  o.chat_template = choose_chat_template("", std::string("{{ unknown }}"));
  Harness h(o);
  ASSERT_TRUE(h.server);
  expect_error(h.client().Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hi"}]})",
                               "application/json"),
               400, "--chat-template");
}

TEST(ServeServer, ServesHealthMetricsModelsAndTheClusterPage) {
  REQUIRE_HARNESS(h);
  h.scheduler->request_describe();
  auto c = h.client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["object"], "list");
  auto one = c.Get("/v1/models/tiny");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  EXPECT_NE(metrics->body.find("lingua_queue_length 0"), std::string::npos);
  EXPECT_NE(metrics->body.find("lingua_failovers_total 0"), std::string::npos);
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("/cluster.json"), std::string::npos);
  json cluster;
  for (int i = 0; i < 100; ++i) {  // the scheduler describes the engine on its own thread
    cluster = json::parse(c.Get("/cluster.json")->body);
    if (!cluster["devices"].empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(cluster["devices"].size(), 2u);
  EXPECT_EQ(cluster["devices"][1]["name"], "phone-a");
  EXPECT_EQ(cluster["stages"][1]["compute_ms_per_token"], 3.5);
}

}  // namespace
}  // namespace ll::serve

namespace ll::serve {
namespace {

// The listen backlog is widened from httplib's compiled-in 5, so that a burst of clients is not
// delayed a second by SYN retries (seen in bench/serve_load.py). `ss` shows a listening socket's
// backlog as its Send-Q.
TEST(ServeServer, ListensWithAWideBacklog) {
  REQUIRE_HARNESS(h);
  std::string out;
  FILE* p = popen(("ss -ltnH 'sport = :" + std::to_string(h.server->port()) + "' 2>/dev/null").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[512];
  while (fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int rc = pclose(p);
  if (rc != 0 || out.empty()) GTEST_SKIP() << "ss (iproute2) not available";
  // LISTEN <Recv-Q> <Send-Q> ...
  char state[32] = {0};
  unsigned recv_q = 0, send_q = 0;
  ASSERT_EQ(std::sscanf(out.c_str(), "%31s %u %u", state, &recv_q, &send_q), 3) << out;
  EXPECT_STREQ(state, "LISTEN");
  EXPECT_GE(send_q, 128u) << out;
}

}  // namespace
}  // namespace ll::serve
