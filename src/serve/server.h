// The HTTP server: OpenAI-compatible routes over a Scheduler, plus health, Prometheus metrics and
// the cluster page.
//
//   POST /v1/completions        POST /v1/chat/completions     (stream: server-sent events, then
//   GET  /v1/models             GET  /v1/models/{id}           "data: [DONE]")
//   GET  /health    GET /metrics    GET / (cluster page)    GET /cluster.json (what the page polls)
//
// With an API key, /v1/* needs "Authorization: Bearer KEY" (401 otherwise); the health, metrics and
// cluster routes stay open, as llama.cpp's server leaves them. Errors are OpenAI-style objects:
// 400 malformed or invalid body, 401 bad key, 404 unknown route or model, 413 body too large, 429
// queue full, 503 pipeline unavailable.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/error.h"
#include "model/tokenizer.h"
#include "serve/api.h"
#include "serve/chat_template.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"

namespace ll::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                         // 0: any free port (see Server::port())
  std::string api_key;                     // empty: no authentication
  std::string model_id;                    // the name /v1/models reports and requests may give
  size_t max_body_bytes = 1 << 20;
  int64_t n_ctx = 512;                     // prompt + completion
  Expected<ChatTemplate> chat_template = ChatTemplate::plain;  // an error: chat requests get it (400)
  std::string eos_text = "</s>";
  size_t n_http_threads = 16;
  ParseLimits limits;
};

class Server {
 public:
  // Binds and starts serving on a thread of its own.
  static Expected<std::unique_ptr<Server>> start(ServerOptions options, Scheduler& scheduler,
                                                 const model::Tokenizer& tokenizer, ServeMetrics& metrics,
                                                 EventLog& events);
  ~Server();  // stops
  int port() const;
  void stop();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The cluster page (static HTML + JS polling /cluster.json).
const std::string& cluster_page_html();

}  // namespace ll::serve
