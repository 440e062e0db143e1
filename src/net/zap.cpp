#include "net/zap.h"

#include <zmq.h>

#include <cstdio>
#include <vector>

namespace ll::net::detail {

namespace {

constexpr const char* k_zap_endpoint = "inproc://zeromq.zap.01";

// All parts of one message; empty on error.
std::vector<std::string> recv_parts(zmq::socket_t& s) {
  std::vector<std::string> parts;
  for (;;) {
    zmq::message_t m;
    if (!s.recv(m, zmq::recv_flags::dontwait)) return {};
    parts.emplace_back(static_cast<const char*>(m.data()), m.size());
    if (!m.more()) return parts;
    if (parts.size() > 16) {  // a ZAP request has 7 parts for CURVE; drain anything longer
      while (m.more() && s.recv(m, zmq::recv_flags::dontwait)) {
      }
      return {};
    }
  }
}

}  // namespace

Expected<std::unique_ptr<ZapHandler>> ZapHandler::start(zmq::context_t& ctx) {
  std::unique_ptr<ZapHandler> h(new ZapHandler(ctx));
  char name[64];
  std::snprintf(name, sizeof name, "inproc://ll-zap-stop-%p", static_cast<void*>(h.get()));
  h->stop_endpoint_ = name;
  try {
    zmq::socket_t rep(ctx, zmq::socket_type::rep);
    rep.set(zmq::sockopt::linger, 0);
    rep.bind(k_zap_endpoint);
    zmq::socket_t stop(ctx, zmq::socket_type::pair);
    stop.set(zmq::sockopt::linger, 0);
    stop.bind(h->stop_endpoint_);
    h->thread_ = std::thread([p = h.get(), r = std::move(rep), s = std::move(stop)]() mutable {
      p->run(std::move(r), std::move(s));
    });
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::io, std::string("cannot start the CURVE authenticator (ZAP handler): ") + e.what());
  }
  return h;
}

ZapHandler::~ZapHandler() {
  if (!thread_.joinable()) return;
  try {
    zmq::socket_t s(ctx_, zmq::socket_type::pair);
    s.set(zmq::sockopt::linger, 0);
    s.connect(stop_endpoint_);
    s.send(zmq::str_buffer("stop"), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    std::fprintf(stderr, "ll::net: cannot stop the ZAP handler: %s\n", e.what());  // a bug: never seen
    std::abort();
  }
  thread_.join();
}

std::string ZapHandler::add_domain(std::shared_ptr<const AuthorizedKeys> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string domain = "ll-listener-" + std::to_string(next_domain_++);
  domains_[domain] = std::move(keys);
  return domain;
}

void ZapHandler::remove_domain(const std::string& domain) {
  std::lock_guard<std::mutex> lock(mu_);
  domains_.erase(domain);
}

std::optional<PeerTrust> ZapHandler::authorize(const std::string& domain, const std::string& mechanism,
                                               const std::string& credential) {
  if (mechanism != "CURVE" || credential.size() != 32) return std::nullopt;
  std::shared_ptr<const AuthorizedKeys> keys;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = domains_.find(domain);
    if (it == domains_.end()) return std::nullopt;
    keys = it->second;
  }
  char z85[k_curve_key_chars + 1] = {};
  if (zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(credential.data()), 32) == nullptr) return std::nullopt;
  if (!keys) return std::nullopt;
  return keys->trust(z85);
}

void ZapHandler::run(zmq::socket_t rep, zmq::socket_t stop) {
  for (;;) {
    zmq::pollitem_t items[] = {{rep.handle(), 0, ZMQ_POLLIN, 0}, {stop.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return;  // the context is going away
    }
    if ((items[1].revents & ZMQ_POLLIN) != 0) return;
    if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
    // Request (RFC 27): version, request id, domain, address, routing id, mechanism, credentials...
    std::vector<std::string> req = recv_parts(rep);
    const bool well_formed = req.size() >= 6 && req[0] == "1.0";
    const std::optional<PeerTrust> trust =
        well_formed ? authorize(req[2], req[5], req.size() >= 7 ? req[6] : std::string()) : std::nullopt;
    const bool ok = trust.has_value();
    // Reply: version, request id, status code, status text, user id, metadata. A REP socket must
    // answer every request it received, even a malformed one.
    const std::string request_id = req.size() >= 2 ? req[1] : std::string();
    const std::string parts[] = {"1.0", request_id, ok ? "200" : "400",
                                 ok ? "OK" : "client public key not authorized",
                                 ok ? peer_trust_name(*trust) : "", ""};
    try {
      for (size_t i = 0; i < 6; ++i) {
        rep.send(zmq::buffer(parts[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    } catch (const zmq::error_t&) {
      return;  // the context is terminating
    }
  }
}

}  // namespace ll::net::detail
