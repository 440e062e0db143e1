#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

namespace ll::serve {

using nlohmann::json;

namespace {

// Debian's cpp-httplib 0.11 is compiled with a listen backlog of 5: a burst of more clients than
// that (8 connecting at once) overflows it, and their SYNs are retried only after a second.
// Listening again on the bound socket raises the backlog (Linux updates it in place).
class HttpServer : public httplib::Server {
 public:
  void widen_backlog(int n) { ::listen(svr_sock_, n); }
};

}  // namespace

// Most bytes of an oversized chunked body read and dropped before the connection is closed.
constexpr size_t k_max_drain_bytes = 16u << 20;

struct Server::Impl {
  ServerOptions opt;
  Scheduler* scheduler = nullptr;
  const model::Tokenizer* tok = nullptr;
  ServeMetrics* metrics = nullptr;
  EventLog* events = nullptr;
  HttpServer http;
  std::thread thread;
  int port = 0;
  int64_t started = 0;
  std::atomic<uint64_t> next_id{1};
  uint64_t id_salt = 0;

  void send_error(httplib::Response& res, int status, std::string_view message, std::string_view code = {}) {
    res.status = status;
    res.set_content(dump_json(error_body(status, message, code)), "application/json");
    if (status != 429 && status != 404) ++metrics->requests_failed;
  }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty()) return true;
    const std::string got = req.get_header_value("Authorization");
    const std::string want = std::string("Bearer ").append(opt.api_key);
    // Compare in time independent of where they differ.
    unsigned diff = got.size() == want.size() ? 0u : 1u;
    for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned>(want[i] ^ (i < got.size() ? got[i] : 0));
    if (diff == 0) return true;
    send_error(res, 401, "invalid or missing API key (send \"Authorization: Bearer KEY\")", "invalid_api_key");
    return false;
  }

  std::string new_id(const char* prefix) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%016llx%06llx", prefix, static_cast<unsigned long long>(id_salt),
                  static_cast<unsigned long long>(next_id++));
    return buf;
  }

  json model_json() const {
    return {{"id", opt.model_id}, {"object", "model"}, {"created", started}, {"owned_by", "lingualinked"}};
  }

  // Reads the body ourselves (a content-reader route): httplib's own reading caps bodies sent as
  // application/x-www-form-urlencoded (curl -d's default) at 8 KiB and parses them as a form.
  std::optional<std::string> read_body(const httplib::Request& req, httplib::Response& res,
                                       const httplib::ContentReader& reader) {
    if (req.is_multipart_form_data()) {
      send_error(res, 400, "expected a JSON body, not multipart/form-data");
      res.set_header("Connection", "close");  // the body was not read
      return std::nullopt;
    }
    std::string body;
    bool too_large = false;
    size_t n_discarded = 0;
    const bool ok = reader([&](const char* data, size_t n) {
      if (too_large || body.size() + n > opt.max_body_bytes) {
        // Read on (discarding, up to a bound) so that the client gets to read our 413: closing
        // with its data unread would reset the connection under it.
        too_large = true;
        body.clear();
        n_discarded += n;
        return n_discarded <= k_max_drain_bytes;
      }
      body.append(data, n);
      return true;
    });
    if (too_large || res.status == 413) {
      send_error(res, 413, "the request body is larger than " + std::to_string(opt.max_body_bytes) + " bytes");
      res.set_header("Connection", "close");  // the rest of the body was not read
      return std::nullopt;
    }
    if (!ok) {
      send_error(res, 400, "could not read the request body");
      res.set_header("Connection", "close");
      return std::nullopt;
    }
    return body;
  }

  void completions(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
                   Endpoint endpoint) {
    ++metrics->requests_total;
    // The body first (bounded), so that a refused request leaves the connection usable.
    const auto body = read_body(req, res, reader);
    if (!body) return;
    if (!authorized(req, res)) return;
    auto parsed = parse_completion_request(*body, endpoint, opt.limits);
    if (!parsed) return send_error(res, 400, parsed.error().message);
    CompletionRequest& r = *parsed;
    if (!r.model.empty() && r.model != opt.model_id) {
      return send_error(res, 404, "the model '" + r.model + "' does not exist (this server has '" + opt.model_id + "')",
                        "model_not_found");
    }
    std::vector<int32_t> tokens;
    if (endpoint == Endpoint::chat) {
      if (!opt.chat_template) return send_error(res, 400, opt.chat_template.error().message);
      tokens = tok->encode(render_chat(*opt.chat_template, r.messages, opt.eos_text), true, /*parse_special=*/true);
    } else {
      tokens = tok->encode(r.prompt, true);
    }
    if (tokens.empty()) return send_error(res, 400, "the prompt is empty");
    const auto n_prompt = static_cast<int64_t>(tokens.size());
    if (n_prompt >= opt.n_ctx) {
      return send_error(res, 400,
                        "the prompt has " + std::to_string(n_prompt) + " tokens; this server's context is " +
                            std::to_string(opt.n_ctx) + " tokens (prompt and completion)",
                        "context_length_exceeded");
    }
    auto job = std::make_shared<Job>(EngineRequest{std::move(tokens), generate_options(r)});
    switch (scheduler->submit(job)) {
      case Admission::accepted: break;
      case Admission::queue_full:
        ++metrics->requests_rejected;
        return send_error(res, 429, "too many requests are queued; retry later", "queue_full");
      case Admission::unavailable:
        return send_error(res, 503, "the pipeline is not available", "cluster_unavailable");
    }
    ResponseIds ids{new_id(endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-"),
                    static_cast<int64_t>(std::time(nullptr)), opt.model_id};
    if (!r.stream) {
      job->wait_done();
      if (job->error()) return send_error(res, http_status(*job->error()), job->error()->message);
      const auto& out = job->result();
      res.set_content(dump_json(completion_response(endpoint, ids, out.text, finish_reason(out.stop_reason),
                                                    out.n_prompt, static_cast<int64_t>(out.tokens.size()))),
                      "application/json");
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    const bool include_usage = r.include_usage;
    res.set_chunked_content_provider(
        "text/event-stream", [job, ids, endpoint, include_usage](size_t, httplib::DataSink& sink) {
          auto write = [&sink, &job](const std::string& s) {
            if (sink.write(s.data(), s.size())) return true;
            job->abandon();  // the client went away: the pipeline may stop generating for it
            return false;
          };
          bool first = true;
          if (endpoint == Endpoint::chat) {  // the role first, as OpenAI does
            if (!write(sse_event(completion_chunk(endpoint, ids, "", nullptr, true)))) return false;
            first = false;
          }
          for (;;) {
            std::string text;
            const bool ended = job->wait_text(text, std::chrono::milliseconds(200));
            if (!text.empty()) {
              if (!write(sse_event(completion_chunk(endpoint, ids, text, nullptr, first)))) return false;
              first = false;
            }
            if (!ended) {
              if (!sink.is_writable()) {
                job->abandon();
                return false;
              }
              continue;
            }
            if (job->error()) {
              const Error& e = *job->error();
              write(sse_event(error_body(http_status(e), e.message)));
            } else {
              const auto& out = job->result();
              write(sse_event(completion_chunk(endpoint, ids, "", finish_reason(out.stop_reason), first)));
              if (include_usage) {
                write(sse_event(usage_chunk(endpoint, ids, out.n_prompt, static_cast<int64_t>(out.tokens.size()))));
              }
            }
            write(std::string(k_sse_done));
            sink.done();
            return true;
          }
        });
  }

  void routes() {
    http.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& s,
                                        const httplib::ContentReader& r) { completions(q, s, r, Endpoint::completions); });
    http.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& s,
                                             const httplib::ContentReader& r) { completions(q, s, r, Endpoint::chat); });
    http.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& s) {
      if (!authorized(q, s)) return;
      s.set_content(dump_json({{"object", "list"}, {"data", json::array({model_json()})}}), "application/json");
    });
    http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& q, httplib::Response& s) {
      if (!authorized(q, s)) return;
      if (q.matches[1] != opt.model_id) {
        return send_error(s, 404, "the model '" + std::string(q.matches[1]) + "' does not exist", "model_not_found");
      }
      s.set_content(dump_json(model_json()), "application/json");
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& s) {
      const QueueState q = scheduler->state();
      if (!q.healthy) {
        s.status = 503;
        s.set_content(dump_json(error_body(503, "the pipeline is not available", "cluster_unavailable")),
                      "application/json");
        return;
      }
      s.set_content(dump_json({{"status", "ok"}, {"queued", q.queued}, {"in_flight", q.in_flight}}),
                    "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& s) {
      s.set_content(prometheus_text(*metrics, scheduler->state()), "text/plain; version=0.0.4");
    });
    http.Get("/cluster.json", [this](const httplib::Request&, httplib::Response& s) {
      s.set_header("Cache-Control", "no-store");
      s.set_content(dump_json(cluster_json(*metrics, scheduler->state(), *events)), "application/json");
    });
    http.Get("/", [](const httplib::Request&, httplib::Response& s) {
      s.set_content(cluster_page_html(), "text/html; charset=utf-8");
    });
    http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& q, httplib::Response& s) {
      if (!s.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours already
      std::string msg;
      switch (s.status) {
        case 404: msg = std::string("no route for ").append(q.method).append(" ").append(q.path); break;
        case 413: msg = "the request body is larger than " + std::to_string(opt.max_body_bytes) + " bytes"; break;
        case 400: msg = "malformed HTTP request"; break;
        default: msg = std::string("HTTP error ").append(std::to_string(s.status)); break;
      }
      s.set_content(dump_json(error_body(s.status, msg)), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& s, std::exception_ptr) {
      s.status = 500;
      s.set_content(dump_json(error_body(500, "internal error")), "application/json");
    });
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { stop(); }

int Server::port() const { return impl_->port; }

void Server::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->http.stop();
  impl_->thread.join();
}

Expected<std::unique_ptr<Server>> Server::start(ServerOptions options, Scheduler& scheduler,
                                                const model::Tokenizer& tokenizer, ServeMetrics& metrics,
                                                EventLog& events) {
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->scheduler = &scheduler;
  impl->tok = &tokenizer;
  impl->metrics = &metrics;
  impl->events = &events;
  impl->started = static_cast<int64_t>(std::time(nullptr));
  impl->id_salt = std::random_device{}() | (static_cast<uint64_t>(std::random_device{}()) << 32);
  const size_t n_threads = std::max<size_t>(2, impl->opt.n_http_threads);
  impl->http.new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };
  impl->http.set_payload_max_length(impl->opt.max_body_bytes);
  impl->http.set_read_timeout(30);
  impl->http.set_write_timeout(30);
  impl->routes();
  Impl& i = *impl;
  if (i.opt.port == 0) {
    i.port = i.http.bind_to_any_port(i.opt.host);
    if (i.port < 0) return make_error(ErrorCode::io, "cannot listen on " + i.opt.host);
  } else {
    if (!i.http.bind_to_port(i.opt.host, i.opt.port)) {
      return make_error(ErrorCode::io, "cannot listen on " + i.opt.host + ":" + std::to_string(i.opt.port) +
                                           " (in use, or not an address of this machine)");
    }
    i.port = i.opt.port;
  }
  i.http.widen_backlog(SOMAXCONN);
  i.thread = std::thread([&i] { i.http.listen_after_bind(); });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

}  // namespace ll::serve
