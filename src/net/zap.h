// The ZAP handler (ZeroMQ RFC 27) that decides which CURVE clients a Listener accepts. Internal to
// net/transport.cpp: one per ZeroMQ context, started with the first CURVE Listener and stopped
// before the context is closed.
//
// libzmq asks the REP socket bound at inproc://zeromq.zap.01 of the socket's context about every
// CURVE handshake, passing the server socket's ZAP domain and the client's 32-byte public key. Each
// CURVE Listener gets a domain of its own ("ll-listener-N") mapped to its AuthorizedKeys; the
// handler answers 200 for a listed key and 400 for anything else (an unknown domain, another
// mechanism, a malformed request), with the user id "authorized" or "delegated" (PeerTrust) that
// libzmq attaches to each of the client's frames as "User-Id". libzmq then closes a refused connection before any of its frames
// reach the Listener.
//
// The handler is bound before any CURVE Listener exists: without a bound handler libzmq would accept
// every client that knows the server key.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "core/error.h"
#include "net/security.h"

namespace ll::net::detail {

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 on `ctx` and starts the handler thread.
  static Expected<std::unique_ptr<ZapHandler>> start(zmq::context_t& ctx);
  ~ZapHandler();  // stops the thread and closes its sockets (before the context may close)

  // A new domain whose clients are checked against `keys`.
  std::string add_domain(std::shared_ptr<const AuthorizedKeys> keys);
  void remove_domain(const std::string& domain);

 private:
  explicit ZapHandler(zmq::context_t& ctx) : ctx_(ctx) {}
  void run(zmq::socket_t rep, zmq::socket_t stop);
  // The trust granted to the client, or nullopt to refuse it.
  std::optional<PeerTrust> authorize(const std::string& domain, const std::string& mechanism,
                                     const std::string& credential);

  zmq::context_t& ctx_;
  std::string stop_endpoint_;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const AuthorizedKeys>> domains_;
  uint64_t next_domain_ = 1;
};

}  // namespace ll::net::detail
