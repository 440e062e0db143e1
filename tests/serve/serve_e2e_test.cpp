// `lingua serve` end to end: the real binary over 2 local worker processes (and alone), checked
// against llama.cpp's greedy texts of stories260K, plain, streamed and concurrent; malformed bodies;
// the official openai npm client (tests/e2e/openai_client); the cluster page in headless Chromium.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "common/shared_files.h"
#include "e2e/cli_util.h"
#include "runtime/process.h"

namespace ll {
namespace {

using nlohmann::json;

std::string model_path() { return test::shared_path("models/stories260K.gguf"); }
std::string expected_path() { return test::shared_path("expected/stories260K-greedy.json"); }

// A running `lingua serve` on a free loopback port (stopped by the destructor).
struct ServeProcess {
  std::optional<runtime::ChildProcess> child;
  int port = 0;

  explicit ServeProcess(const std::vector<std::string>& extra) {
    runtime::SpawnOptions so;
    so.argv = {LL_LINGUA_BIN, "serve", "-m", model_path(), "--port", "0", "-t", "1"};
    so.argv.insert(so.argv.end(), extra.begin(), extra.end());
    auto c = runtime::ChildProcess::spawn(so);
    if (!c) {
      ADD_FAILURE() << c.error().message;
      return;
    }
    child.emplace(std::move(*c));
    // The first line says where it listens, once it does.
    auto line = child->read_line(std::chrono::seconds(120));
    if (!line || !*line) {
      ADD_FAILURE() << "lingua serve did not print its address: " << (line ? "timeout" : line.error().message);
      return;
    }
    // (No std::regex: GCC 12 warns falsely inside it under the sanitizers' -O1.)
    const std::string prefix = "lingua serve listening on http://127.0.0.1:";
    const std::string& got = **line;
    const std::string digits = got.rfind(prefix, 0) == 0 ? got.substr(prefix.size()) : "";
    if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos) {
      ADD_FAILURE() << "unexpected first line: " << got;
      return;
    }
    port = std::stoi(digits);
  }
  ~ServeProcess() {
    if (!child) return;
    auto st = child->terminate(std::chrono::seconds(20));
    EXPECT_TRUE(st.has_value());
    if (st) {
      EXPECT_TRUE(st->success()) << "lingua serve " << st->describe();  // SIGTERM: a clean exit
    }
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120);
    return c;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

std::string complete(const ServeProcess& s, const json& c) {
  json body{{"model", "stories260K"}, {"prompt", c["prompt"]}, {"max_tokens", c["n_predict"]}, {"temperature", 0}};
  auto r = s.client().Post("/v1/completions", body.dump(), "application/json");
  if (!r) return "(no response)";
  EXPECT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body, nullptr, false);
  if (!j.is_object() || !j.contains("choices")) return "(bad response) " + r->body;
  EXPECT_EQ(j["usage"]["prompt_tokens"], c["prompt_tokens"].size());
  EXPECT_EQ(j["usage"]["completion_tokens"], c["tokens"].size());
  return j["choices"][0]["text"].get<std::string>();
}

std::string complete_streamed(const ServeProcess& s, const json& c) {
  json body{{"prompt", c["prompt"]}, {"max_tokens", c["n_predict"]}, {"temperature", 0}, {"stream", true}};
  std::string text, buffer;
  bool done = false;
  size_t n_chunks = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
                             buffer.append(data, n);
                             for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
                               const std::string ev = buffer.substr(0, end);
                               buffer.erase(0, end + 2);
                               EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
                               if (ev == "data: [DONE]") {
                                 done = true;
                                 continue;
                               }
                               json j = json::parse(ev.substr(6), nullptr, false);
                               EXPECT_TRUE(j.is_object()) << ev;
                               if (j.is_object()) text += j["choices"][0]["text"].get<std::string>();
                               ++n_chunks;
                             }
                             return true;
                           };
  auto r = s.client().send(req);
  EXPECT_TRUE(r);
  EXPECT_TRUE(done) << "no data: [DONE]";
  EXPECT_TRUE(buffer.empty()) << buffer;
  // At least one text event and the finish event (pieces that arrive while one is written are
  // sent together, so a fast run may send all the text in one event).
  EXPECT_GE(n_chunks, 2u);
  return text;
}

#define REQUIRE_MODEL_AND_EXPECTED()         \
  LL_REQUIRE_SHARED(model_path());           \
  LL_REQUIRE_SHARED(expected_path());        \
  const json cases = test::load_json(expected_path()); \
  ASSERT_FALSE(cases.empty())

TEST(ServeEndToEnd, CompletionsOverTwoLocalWorkersEqualTheExpectedTexts) {
  REQUIRE_MODEL_AND_EXPECTED();
  ServeProcess s({"--local", "2", "--split", "even", "--worker-threads", "1"});
  ASSERT_GT(s.port, 0);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["prompt"].get<std::string>());
    EXPECT_EQ(complete(s, c), c["text"].get<std::string>());
    EXPECT_EQ(complete_streamed(s, c), c["text"].get<std::string>());
  }
  // Several at once, plain and streamed: pipelined together, each still exactly its text.
  std::vector<std::string> got(2 * cases.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cases.size(); ++i) {
    threads.emplace_back([&, i] { got[2 * i] = complete(s, cases[i]); });
    threads.emplace_back([&, i] { got[2 * i + 1] = complete_streamed(s, cases[i]); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(got[2 * i], cases[i]["text"].get<std::string>()) << "concurrent, plain, case " << i;
    EXPECT_EQ(got[2 * i + 1], cases[i]["text"].get<std::string>()) << "concurrent, streamed, case " << i;
  }
  // Malformed bodies: 400 with an OpenAI error object, and the server keeps serving.
  for (const std::string& body : {std::string("{\"prompt\":"), std::string("[]"), std::string("\x01\x02garbage"),
                                 std::string(R"({"prompt":"x","temperature":"warm"})")}) {
    auto r = s.client().Post("/v1/completions", body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << body;
    json j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r->body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << r->body;
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  }
  auto health = s.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = s.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("lingua_stage_compute_ms{stage=\"1\",device=\"local-1\",units=\"1-3\"}"),
            std::string::npos)
      << metrics->body;
}

TEST(ServeEndToEnd, AWorkerKilledBetweenRequestsIsFailedOverAndTheTextsStayTheSame) {
  REQUIRE_MODEL_AND_EXPECTED();
  ServeProcess s({"--local", "3", "--split", "even", "--worker-threads", "1"});
  ASSERT_GT(s.port, 0);
  EXPECT_EQ(complete(s, cases[0]), cases[0]["text"].get<std::string>());
  std::vector<int> workers = test::children_of(s.child->pid());
  ASSERT_EQ(workers.size(), 3u);
  std::sort(workers.begin(), workers.end());
  ASSERT_EQ(::kill(workers[1], SIGKILL), 0);  // the middle stage
  for (const auto& c : cases) EXPECT_EQ(complete(s, c), c["text"].get<std::string>());
  auto metrics = s.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  const std::string key = "\nlingua_failovers_total ";
  const size_t at = metrics->body.find(key);
  ASSERT_NE(at, std::string::npos) << metrics->body;
  EXPECT_EQ(std::atoi(metrics->body.c_str() + at + key.size()), 1) << metrics->body;
}

// A TCP port nobody listens on right now (bound to 127.0.0.1:0, then closed).
int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

// Membership through the CLI: `lingua serve --join-listen` takes in a `lingua worker --join` started
// after it; once a local worker is killed, the failover's re-plan (even over the survivors) gives the
// newcomer units, and the texts stay llama.cpp's.
TEST(ServeEndToEnd, AWorkerThatAsksToJoinIsTakenInAndUsedByTheNextReplan) {
  REQUIRE_MODEL_AND_EXPECTED();
  const int jp = free_tcp_port();
  ASSERT_GT(jp, 0);
  const std::string join = "tcp://127.0.0.1:" + std::to_string(jp);
  ServeProcess s({"--local", "2", "--split", "even", "--worker-threads", "1", "--insecure", "--join-listen", join});
  ASSERT_GT(s.port, 0);
  std::vector<int> locals = test::children_of(s.child->pid());
  ASSERT_EQ(locals.size(), 2u);
  std::sort(locals.begin(), locals.end());
  runtime::SpawnOptions so;
  so.argv = {LL_LINGUA_BIN, "worker", "--listen", "tcp://127.0.0.1:0", "--insecure", "--name", "joiner", "--join", join};
  auto w = runtime::ChildProcess::spawn(so);
  ASSERT_TRUE(w.has_value()) << w.error().message;
  auto line = w->read_line(std::chrono::seconds(30));
  ASSERT_TRUE(line && *line) << "the worker did not start";
  EXPECT_NE((*line)->find("listening on"), std::string::npos) << **line;
  // Workers that joined become part of the cluster between batches: serve until /cluster.json lists it.
  auto units_of = [&](const std::string& name) -> std::optional<json> {
    auto r = s.client().Get("/cluster.json");
    if (!r) return std::nullopt;
    json j = json::parse(r->body, nullptr, false);
    if (!j.is_object() || !j.contains("devices")) return std::nullopt;
    for (const auto& d : j["devices"]) {
      if (d["name"] == name) return d["units"];
    }
    return std::nullopt;
  };
  bool listed = false;
  for (int i = 0; i < 60 && !listed; ++i) {
    EXPECT_EQ(complete(s, cases[0]), cases[0]["text"].get<std::string>());
    listed = units_of("joiner").has_value();
    if (!listed) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_TRUE(listed) << "the worker that asked to join never appeared in /cluster.json";
  {
    auto r = s.client().Get("/cluster.json");
    ASSERT_TRUE(r);
    EXPECT_NE(r->body.find("joiner joined from tcp://127.0.0.1:"), std::string::npos) << "no join event: " << r->body;
  }
  ASSERT_EQ(::kill(locals[1], SIGKILL), 0);
  for (const auto& c : cases) EXPECT_EQ(complete(s, c), c["text"].get<std::string>());
  const auto units = units_of("joiner");
  ASSERT_TRUE(units.has_value());
  EXPECT_FALSE(units->empty()) << "the re-plan after the failover left the worker that joined idle";
  (void)w->terminate(std::chrono::seconds(10));
}

// The same over CURVE: the origin takes in only keys of --join-keys; a worker with another key is
// refused at the join endpoint and says so.
TEST(ServeEndToEnd, OverCurveOnlyWorkersWithAJoinKeyAreTakenIn) {
  REQUIRE_MODEL_AND_EXPECTED();
  const std::string dir = ::testing::TempDir() + "/ll_join_keys_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  auto keygen = [&](const std::string& name) {
    std::filesystem::remove(dir + "/" + name + ".key");
    std::filesystem::remove(dir + "/" + name + ".pub");
    std::string out;
    EXPECT_EQ(test::run_command(std::string(LL_LINGUA_BIN) + " keygen -o " + test::shell_quote(dir + "/" + name) +
                                    " 2>/dev/null",
                                out),
              0);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  };
  const std::string origin_pub = keygen("origin");
  keygen("member");
  keygen("stranger");
  const int jp = free_tcp_port();
  ASSERT_GT(jp, 0);
  const std::string join = "tcp://127.0.0.1:" + std::to_string(jp);
  ServeProcess s({"--local", "1", "--split", "even", "--key", dir + "/origin.key", "--join-listen", join, "--join-keys",
                  dir + "/member.pub"});
  ASSERT_GT(s.port, 0);
  // Not on the list: refused (the join endpoint's CURVE handshake rejects its key), a clear error.
  std::string out;
  const int rc = test::run_command(std::string(LL_LINGUA_BIN) + " worker --listen tcp://127.0.0.1:0 --key " +
                                       test::shell_quote(dir + "/stranger.key") + " --allow=" +
                                       test::shell_quote(origin_pub) + " --join " + join + " 2>&1",
                                   out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("could not authenticate"), std::string::npos) << out;
  // On the list: taken in, and used once the local worker is gone.
  runtime::SpawnOptions so;
  so.argv = {LL_LINGUA_BIN, "worker", "--listen", "tcp://127.0.0.1:0", "--name", "member", "-q", "--key",
             dir + "/member.key", "--allow=" + origin_pub, "--join", join};
  auto w = runtime::ChildProcess::spawn(so);
  ASSERT_TRUE(w.has_value()) << w.error().message;
  std::vector<int> locals = test::children_of(s.child->pid());
  ASSERT_EQ(locals.size(), 1u);
  bool listed = false;
  for (int i = 0; i < 60 && !listed; ++i) {
    EXPECT_EQ(complete(s, cases[0]), cases[0]["text"].get<std::string>());
    auto r = s.client().Get("/cluster.json");
    listed = r && r->body.find("\"member\"") != std::string::npos;
    if (!listed) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_TRUE(listed) << "the worker with a join key never appeared in /cluster.json";
  ASSERT_EQ(::kill(locals[0], SIGKILL), 0);
  for (const auto& c : cases) EXPECT_EQ(complete(s, c), c["text"].get<std::string>());
  (void)w->terminate(std::chrono::seconds(10));
  std::filesystem::remove_all(dir);
}

TEST(ServeEndToEnd, OneProcessServesTheSameTexts) {
  REQUIRE_MODEL_AND_EXPECTED();
  ServeProcess s({});
  ASSERT_GT(s.port, 0);
  const json& c = cases[0];
  EXPECT_EQ(complete(s, c), c["text"].get<std::string>());
  EXPECT_EQ(complete_streamed(s, c), c["text"].get<std::string>());
}

TEST(ServeEndToEnd, RefusesAnUnknownChatTemplateName) {
  LL_REQUIRE_SHARED(model_path());
  std::string out;
  const int rc = test::run_command(std::string(LL_LINGUA_BIN) + " serve -m " + test::shell_quote(model_path()) +
                                       " --port 0 --chat-template vicuna 2>&1",
                                   out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("unknown chat template \"vicuna\""), std::string::npos) << out;
}

// Missing tools: a failure under CI=true, else a skip with the reason.
#define REQUIRE_TOOL(cond, what)                                   \
  do {                                                             \
    if (!(cond)) {                                                 \
      if (test::under_ci()) FAIL() << "missing under CI: " << what; \
      GTEST_SKIP() << "skipping: " << what;                        \
    }                                                              \
  } while (0)

bool have_program(const std::string& name) {
  std::string out;
  return test::run_command("command -v " + name + " >/dev/null 2>&1", out) == 0;
}

TEST(ServeEndToEnd, TheOfficialOpenAIClientWorks) {
  REQUIRE_MODEL_AND_EXPECTED();
  const std::string dir = test::source_dir() + "/tests/e2e/openai_client";
  REQUIRE_TOOL(have_program("node"), "node (Debian package nodejs)");
  REQUIRE_TOOL(std::filesystem::exists(dir + "/node_modules/openai/package.json"),
               "the openai npm package (run `npm ci` in tests/e2e/openai_client; scripts/install-deps.sh does)");
  ServeProcess s({"--local", "2", "--split", "even", "--worker-threads", "1", "--api-key", "e2e-key"});
  ASSERT_GT(s.port, 0);
  std::string out;
  const int rc = test::run_command("cd " + test::shell_quote(dir) + " && LINGUA_BASE_URL=" + s.url() +
                                       "/v1 LINGUA_API_KEY=e2e-key LINGUA_EXPECTED=" +
                                       test::shell_quote(expected_path()) + " node test.mjs 2>&1",
                                   out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("all openai client checks passed"), std::string::npos) << out;
}

TEST(ServeEndToEnd, TheClusterPageShowsDevicesUnitsStagesAndEventsInChromium) {
  LL_REQUIRE_SHARED(model_path());
  REQUIRE_TOOL(have_program("chromium"), "chromium (Debian package chromium)");
  ServeProcess s({"--local", "2", "--split", "even", "--worker-threads", "1"});
  ASSERT_GT(s.port, 0);
  auto r = s.client().Post("/v1/completions", R"({"prompt":"Once upon a time","max_tokens":8,"temperature":0})",
                           "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const auto dir = std::filesystem::temp_directory_path() / ("lingua-page-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string chromium = "chromium --headless --no-sandbox --disable-gpu --user-data-dir=" +
                               test::shell_quote((dir / "profile").string()) + " --virtual-time-budget=5000 ";
  std::string dom;
  ASSERT_EQ(test::run_command(chromium + "--dump-dom " + s.url() + "/ 2>/dev/null", dom), 0);
  // The page's script has run: the tables are filled from /cluster.json.
  for (const char* want : {"<td>local-1</td>", "<td>local-2</td>", "<td>1–3</td>", "<td>4–6</td>", "<td>origin</td>",
                           "plan 0-0,1-3,4-6 loaded", "local-1 joined from tcp://127.0.0.1:", ">serving<",
                           "model stories260K — local workers"}) {
    EXPECT_NE(dom.find(want), std::string::npos) << want << "\n" << dom.substr(0, 4000);
  }
  // Measured stage times are shown (not the 0.000 of a page that never got data).
  const std::string stage_row = "<td>local-1</td><td>1–3</td><td class=\"num\">";
  const size_t at = dom.find(stage_row);
  ASSERT_NE(at, std::string::npos) << dom.substr(0, 4000);
  const std::string ms = dom.substr(at + stage_row.size(), dom.find("</td>", at + stage_row.size()) - at - stage_row.size());
  const size_t dot = ms.find('.');
  EXPECT_TRUE(dot != std::string::npos && dot > 0 && ms.size() == dot + 4 &&
              ms.find_first_not_of("0123456789.") == std::string::npos)
      << "stage ms shown as \"" << ms << "\"";
  const auto png = dir / "page.png";
  std::string out;
  ASSERT_EQ(test::run_command(chromium + "--window-size=1200,900 --screenshot=" + test::shell_quote(png.string()) +
                                  " " + s.url() + "/ 2>&1",
                              out),
            0)
      << out;
  std::ifstream in(png, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 8u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(bytes.size(), 20000u) << "a blank page compresses to a few KiB; the drawn tables do not";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ll
