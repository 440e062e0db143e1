#include "net/transport.h"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "net/zap.h"

namespace ll::net {

LinkStats LinkCounters::snapshot() const {
  LinkStats s;
  s.n_frames_in = n_frames_in_.load(std::memory_order_relaxed);
  s.n_frames_out = n_frames_out_.load(std::memory_order_relaxed);
  s.bytes_in = bytes_in_.load(std::memory_order_relaxed);
  s.bytes_out = bytes_out_.load(std::memory_order_relaxed);
  s.n_bad_frames = n_bad_frames_.load(std::memory_order_relaxed);
  s.n_error_replies = n_error_replies_.load(std::memory_order_relaxed);
  return s;
}

std::string peer_name(const PeerId& p) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(p.id.size() * 2);
  for (char c : p.id) {
    const auto b = static_cast<uint8_t>(c);
    s.push_back(k_digits[b >> 4]);
    s.push_back(k_digits[b & 15]);
  }
  return s;
}

namespace {

// Timeouts as the waits below take them: negative means "just check" (zmq_poll would read -1 as
// "forever"), and a year stands for "forever" (steady_clock::now() + Millis::max() would overflow).
Millis bounded(Millis timeout) {
  constexpr Millis k_longest = std::chrono::duration_cast<Millis>(std::chrono::hours(24 * 365));
  return std::clamp(timeout, Millis(0), k_longest);
}

// Validates a received frame's header. On failure: counts it, hands the ERROR reply (when the
// options and the protocol allow one) to `reply`, and returns the Error.
template <class Reply>
Expected<Frame> accept_frame(std::vector<uint8_t> bytes, const TransportOptions& options,
                             LinkCounters& counters, Reply&& reply) {
  const size_t n = bytes.size();
  Expected<FrameHeader> header = parse_frame_header(bytes, options.limits);
  if (!header) {
    counters.bad_frame(n);
    if (options.reply_to_bad_frames) {
      if (std::optional<Frame> answer = make_error_reply(bytes, header.error(), options.limits)) {
        if (reply(std::move(*answer).take_bytes())) counters.error_reply();
      }
    }
    return header.error();
  }
  counters.frame_in(n);
  return Frame::from_bytes(std::move(bytes), options.limits);
}

// A frame larger than the limit would be dropped by the peer (with the connection, over ZeroMQ)
// and never answered: refuse it here, where the sender can still learn why.
Expected<void> check_outgoing(const Frame& frame, const TransportOptions& options) {
  if (frame.size() > options.limits.max_frame_bytes) {
    return make_error(ErrorCode::invalid_argument,
                      message_type_name(frame.type()) + " frame of " + std::to_string(frame.size()) +
                          " bytes exceeds max_frame_bytes " + std::to_string(options.limits.max_frame_bytes) +
                          "; send it in smaller parts");
  }
  return {};
}

// ============================================================================================ ZeroMQ

// One context per process while any socket lives (created on first use, freed with the last socket),
// with its ZAP handler once a CURVE Listener needed one.
struct ZmqContext {
  zmq::context_t ctx{1};
  std::mutex zap_mu;
  std::unique_ptr<detail::ZapHandler> zap;  // declared after ctx: stopped before the context closes
  std::atomic<uint64_t> next_monitor{1};

  Expected<detail::ZapHandler*> zap_handler() {
    std::lock_guard<std::mutex> lock(zap_mu);
    if (!zap) {
      LL_ASSIGN_OR_RETURN(zap, detail::ZapHandler::start(ctx));
    }
    return zap.get();
  }
};

std::shared_ptr<ZmqContext> shared_context() {
  static auto* mu = new std::mutex;  // never destroyed: sockets may outlive static destruction order
  static auto* weak = new std::weak_ptr<ZmqContext>;
  std::lock_guard<std::mutex> lock(*mu);
  std::shared_ptr<ZmqContext> ctx = weak->lock();
  if (!ctx) {
    ctx = std::make_shared<ZmqContext>();
    *weak = ctx;
  }
  return ctx;
}

Error zmq_failure(ErrorCode code, const std::string& what, const zmq::error_t& e) {
  return make_error(code, what + ": " + e.what());
}

// A configured socket, and what CURVE attached to it.
struct ZmqSocket {
  zmq::socket_t sock;
  zmq::socket_t monitor;   // Link: receives the socket's connection (and CURVE handshake) events
  std::string zap_domain;  // CURVE Listener: its domain in the ZAP handler
};

// The one place where ZeroMQ sockets are created and configured (see transport.h for why each
// option is set). `server_key` is a CURVE Link's expected Listener key (empty: the options').
Expected<ZmqSocket> make_socket(ZmqContext& zctx, zmq::socket_type type, const TransportOptions& options,
                                const std::string& server_key = {}) {
  const SocketSecurity& sec = options.security;
  const bool curve = sec.mode == SocketSecurity::Mode::curve;
  const bool is_listener = type == zmq::socket_type::router;
  const std::string& server_public = server_key;
  if (curve) {
    LL_TRY(check_curve_available());
    LL_TRY(check_curve_key(sec.curve_public_key, "CURVE public key"));
    LL_TRY(check_curve_key(sec.curve_secret_key, "CURVE secret key"));
    if (is_listener && !sec.authorized_clients) {
      return make_error(ErrorCode::invalid_argument,
                        "a CURVE listener needs the list of client keys it accepts (authorized_clients)");
    }
    if (!is_listener) LL_TRY(check_curve_key(server_public, "the server's CURVE public key"));
  }
  ZmqSocket out;
  try {
    zmq::socket_t s(zctx.ctx, type);
    s.set(zmq::sockopt::linger, options.linger_ms);
    s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options.limits.max_frame_bytes));
    s.set(zmq::sockopt::sndtimeo, options.send_timeout_ms);
    s.set(zmq::sockopt::sndhwm, options.send_hwm);
    s.set(zmq::sockopt::rcvhwm, options.recv_hwm);
    if (is_listener) s.set(zmq::sockopt::router_mandatory, 1);
    if (options.heartbeat_ivl_ms > 0) {
      s.set(zmq::sockopt::heartbeat_ivl, options.heartbeat_ivl_ms);
      s.set(zmq::sockopt::heartbeat_timeout, options.heartbeat_timeout_ms);
      s.set(zmq::sockopt::heartbeat_ttl, options.heartbeat_timeout_ms);
    }
    if (curve && is_listener) {
      // The handler is bound before this socket can accept anyone (without it, libzmq would let
      // every client with the server key in).
      LL_ASSIGN_OR_RETURN(detail::ZapHandler * zap, zctx.zap_handler());
      out.zap_domain = zap->add_domain(sec.authorized_clients);
      s.set(zmq::sockopt::zap_domain, out.zap_domain);
      s.set(zmq::sockopt::curve_server, 1);
      s.set(zmq::sockopt::curve_secretkey, sec.curve_secret_key);
    } else if (curve) {
      s.set(zmq::sockopt::curve_serverkey, server_public);
      s.set(zmq::sockopt::curve_publickey, sec.curve_public_key);
      s.set(zmq::sockopt::curve_secretkey, sec.curve_secret_key);
    }
    if (!is_listener) {
      // Every Link is monitored: connection events for peer_lost() (kill -9, heartbeat timeout)
      // and, over CURVE, handshake outcomes, so that a refused link says so instead of staying
      // silent. (A socket has at most one monitor.)
      int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED;
      if (curve) {
        events |= ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                  ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
      }
      const std::string mon = "inproc://ll-monitor-" + std::to_string(zctx.next_monitor.fetch_add(1));
      if (zmq_socket_monitor(s.handle(), mon.c_str(), events) != 0) throw zmq::error_t();
      out.monitor = zmq::socket_t(zctx.ctx, zmq::socket_type::pair);
      out.monitor.set(zmq::sockopt::linger, 0);
      out.monitor.connect(mon);
    }
    out.sock = std::move(s);
    return out;
  } catch (const zmq::error_t& e) {
    if (detail::ZapHandler* zap = out.zap_domain.empty() ? nullptr : zctx.zap.get()) zap->remove_domain(out.zap_domain);
    return zmq_failure(ErrorCode::io, "cannot create a ZeroMQ socket", e);
  }
}

// A message that owns `bytes` without copying them; ZeroMQ frees them once sent.
zmq::message_t owning_message(std::vector<uint8_t> bytes) {
  if (bytes.empty()) return zmq::message_t();
  auto* owned = new std::vector<uint8_t>(std::move(bytes));
  return zmq::message_t(
      owned->data(), owned->size(),
      [](void*, void* hint) { delete static_cast<std::vector<uint8_t>*>(hint); }, owned);
}

std::vector<uint8_t> message_bytes(const zmq::message_t& m) {
  const auto* p = static_cast<const uint8_t*>(m.data());
  return std::vector<uint8_t>(p, p + m.size());
}

// Waits until `sock` has something to read. false on timeout or EINTR.
bool poll_readable(zmq::socket_t& sock, Millis timeout) {
  zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
  try {
    return zmq::poll(&item, 1, bounded(timeout)) > 0 && (item.revents & ZMQ_POLLIN) != 0;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
}

// Discards the remaining parts of a multipart message; returns their total size.
size_t drain_parts(zmq::socket_t& sock, zmq::message_t& last) {
  size_t n = 0;
  while (last.more()) {
    zmq::message_t part;
    if (!sock.recv(part, zmq::recv_flags::dontwait)) break;  // parts arrive together; cannot happen
    n += part.size();
    last = std::move(part);
  }
  return n;
}

Error multipart_error(size_t n_parts_hint) {
  return make_error(ErrorCode::parse, "frame: a multipart ZeroMQ message (" + std::to_string(n_parts_hint) +
                                          "+ parts); a frame is exactly one part");
}

class ZmqLink final : public Link {
 public:
  ZmqLink(std::shared_ptr<ZmqContext> ctx, ZmqSocket sock, std::string endpoint, TransportOptions options)
      : ctx_(std::move(ctx)),
        sock_(std::move(sock.sock)),
        monitor_(std::move(sock.monitor)),
        endpoint_(std::move(endpoint)),
        options_(std::move(options)) {}

  ~ZmqLink() override {
    // Drain first: stopping the monitor waits for libzmq's I/O thread, which may be blocked sending
    // to a full monitor queue.
    read_monitor();
    zmq_socket_monitor(sock_.handle(), nullptr, 0);  // stop the monitor before its PAIR socket closes
  }

  bool peer_lost() override {
    read_monitor();
    return lost_;
  }

  Expected<void> send(Frame frame) override {
    LL_TRY(check_outgoing(frame, options_));
    return send_bytes(std::move(frame).take_bytes());
  }

  Expected<void> send_bytes(std::vector<uint8_t> bytes) override {
    return send_message(std::move(bytes), zmq::send_flags::none);
  }

  Expected<std::optional<Frame>> recv(Millis timeout) override {
    // Keep the monitor's queue short (a peer that keeps reconnecting adds events): when it is full,
    // libzmq's I/O thread blocks on it and every socket of the process stalls.
    read_monitor();
    try {
      if (!poll_readable(sock_, timeout)) return std::optional<Frame>();
      zmq::message_t msg;
      if (!sock_.recv(msg, zmq::recv_flags::dontwait)) return std::optional<Frame>();
      if (msg.more()) {
        const size_t extra = drain_parts(sock_, msg);
        counters_.bad_frame(msg.size() + extra);
        return multipart_error(2);
      }
      auto frame = accept_frame(message_bytes(msg), options_, counters_, [this](std::vector<uint8_t> reply) {
        return static_cast<bool>(send_message(std::move(reply), zmq::send_flags::dontwait));
      });
      if (!frame) return frame.error();
      return std::optional<Frame>(std::move(frame).value());
    } catch (const zmq::error_t& e) {
      return zmq_failure(ErrorCode::io, "receive from " + endpoint_, e);
    }
  }

  Expected<bool> wait_readable(Millis timeout) override {
    try {
      return poll_readable(sock_, timeout);
    } catch (const zmq::error_t& e) {
      return zmq_failure(ErrorCode::io, "wait for " + endpoint_, e);
    }
  }

  LinkStats stats() const override { return counters_.snapshot(); }
  std::string endpoint() const override { return endpoint_; }
  // For wait_any's single zmq_poll over several links.
  void* socket_handle() { return sock_.handle(); }

  std::optional<std::string> security_failure() override {
    read_monitor();
    return failure_;
  }

 private:
  Expected<void> send_message(std::vector<uint8_t> bytes, zmq::send_flags flags) {
    const size_t n = bytes.size();
    try {
      zmq::message_t msg = owning_message(std::move(bytes));
      if (!sock_.send(msg, flags)) {
        return make_error(ErrorCode::io, "send to " + endpoint_ + " timed out after " +
                                             std::to_string(options_.send_timeout_ms) +
                                             " ms (peer absent or not reading)");
      }
    } catch (const zmq::error_t& e) {
      return zmq_failure(ErrorCode::io, "send to " + endpoint_, e);
    }
    counters_.frame_out(n);
    return {};
  }

  // Takes in the monitor's events (never blocks): connections made and lost (peer_lost) and, over
  // CURVE, handshake outcomes (security_failure). An event is two parts: [u16 event, u32 value] in
  // host order, then the endpoint.
  void read_monitor() {
    try {
      for (;;) {
        zmq::message_t event, address;
        if (!monitor_.recv(event, zmq::recv_flags::dontwait)) break;
        if (event.more()) (void)monitor_.recv(address, zmq::recv_flags::dontwait);
        if (event.size() < 6) continue;
        uint16_t id = 0;
        uint32_t value = 0;
        std::memcpy(&id, event.data(), 2);
        std::memcpy(&value, static_cast<const char*>(event.data()) + 2, 4);
        if (id == ZMQ_EVENT_CONNECTED) {
          connected_ = true;
        } else if (id == ZMQ_EVENT_DISCONNECTED) {
          if (connected_) lost_ = true;  // sticky: a peer that comes back is a new process
        } else if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
          failure_.reset();
        } else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
          failure_ = "the peer refused our public key (ZAP status " + std::to_string(value) +
                     "): it is not among the keys that peer authorizes";
        } else {
          failure_ = "the CURVE handshake failed: the peer's public key is not the expected one, or it does "
                     "not speak CURVE";
        }
      }
    } catch (const zmq::error_t&) {
      // The monitor is advisory: a failure to read it leaves the last known state.
    }
  }

  std::shared_ptr<ZmqContext> ctx_;  // declared first: outlives the sockets
  zmq::socket_t sock_;
  zmq::socket_t monitor_;  // declared after sock_: closed first, once the destructor stopped it
  std::optional<std::string> failure_;
  bool connected_ = false, lost_ = false;
  std::string endpoint_;
  TransportOptions options_;
  LinkCounters counters_;
};

class ZmqListener final : public Listener {
 public:
  ZmqListener(std::shared_ptr<ZmqContext> ctx, ZmqSocket sock, std::string endpoint, TransportOptions options)
      : ctx_(std::move(ctx)),
        sock_(std::move(sock.sock)),
        zap_domain_(std::move(sock.zap_domain)),
        endpoint_(std::move(endpoint)),
        options_(std::move(options)) {}

  ~ZmqListener() override {
    if (!zap_domain_.empty() && ctx_->zap) ctx_->zap->remove_domain(zap_domain_);
  }

  std::string endpoint() const override { return endpoint_; }

  Expected<void> send(const PeerId& peer, Frame frame) override {
    LL_TRY(check_outgoing(frame, options_));
    return send_bytes(peer, std::move(frame).take_bytes());
  }

  Expected<void> send_bytes(const PeerId& peer, std::vector<uint8_t> bytes) override {
    return send_message(peer, std::move(bytes), zmq::send_flags::none);
  }

  Expected<std::optional<Incoming>> recv(Millis timeout) override {
    try {
      if (!poll_readable(sock_, timeout)) return std::optional<Incoming>();
      // A ROUTER delivers [routing id][part...]; a frame is exactly one part after the id.
      zmq::message_t id;
      if (!sock_.recv(id, zmq::recv_flags::dontwait)) return std::optional<Incoming>();
      PeerId peer{std::string(static_cast<const char*>(id.data()), id.size())};
      if (!id.more()) {  // cannot happen with a ROUTER; treat as an empty frame
        counters_.bad_frame(0);
        return make_error(ErrorCode::parse, "frame: empty message from peer " + peer_name(peer));
      }
      zmq::message_t msg;
      if (!sock_.recv(msg, zmq::recv_flags::dontwait)) return std::optional<Incoming>();
      if (msg.more()) {
        const size_t extra = drain_parts(sock_, msg);
        counters_.bad_frame(msg.size() + extra);
        return multipart_error(2);
      }
      // Over CURVE, libzmq stamps each frame with the user id our ZAP handler gave its connection.
      PeerTrust trust = PeerTrust::unauthenticated;
      if (const char* user = zmq_msg_gets(msg.handle(), "User-Id")) {
        if (std::strcmp(user, peer_trust_name(PeerTrust::authorized)) == 0) trust = PeerTrust::authorized;
        if (std::strcmp(user, peer_trust_name(PeerTrust::delegated)) == 0) trust = PeerTrust::delegated;
      }
      auto frame = accept_frame(message_bytes(msg), options_, counters_, [&](std::vector<uint8_t> reply) {
        return static_cast<bool>(send_message(peer, std::move(reply), zmq::send_flags::dontwait));
      });
      if (!frame) return frame.error();
      return std::optional<Incoming>(Incoming{std::move(peer), std::move(frame).value(), trust});
    } catch (const zmq::error_t& e) {
      return zmq_failure(ErrorCode::io, "receive on " + endpoint_, e);
    }
  }

  LinkStats stats() const override { return counters_.snapshot(); }

 private:
  Expected<void> send_message(const PeerId& peer, std::vector<uint8_t> bytes, zmq::send_flags flags) {
    const size_t n = bytes.size();
    try {
      zmq::message_t id(peer.id.data(), peer.id.size());
      if (!sock_.send(id, flags | zmq::send_flags::sndmore)) {
        return make_error(ErrorCode::io,
                          "send to peer " + peer_name(peer) + " on " + endpoint_ + " timed out");
      }
      zmq::message_t msg = owning_message(std::move(bytes));
      if (!sock_.send(msg, flags)) {
        return make_error(ErrorCode::io,
                          "send to peer " + peer_name(peer) + " on " + endpoint_ + " timed out");
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EHOSTUNREACH) {
        return make_error(ErrorCode::not_found,
                          "peer " + peer_name(peer) + " is not connected to " + endpoint_);
      }
      return zmq_failure(ErrorCode::io, "send to peer " + peer_name(peer) + " on " + endpoint_, e);
    }
    counters_.frame_out(n);
    return {};
  }

  std::shared_ptr<ZmqContext> ctx_;  // declared first: outlives the socket
  zmq::socket_t sock_;
  std::string zap_domain_;  // CURVE only
  std::string endpoint_;
  TransportOptions options_;
  LinkCounters counters_;
};

class ZmqNetwork final : public Network {
 public:
  explicit ZmqNetwork(TransportOptions options) : options_(std::move(options)) {}

  Expected<std::unique_ptr<Listener>> listen(const std::string& endpoint) override {
    std::shared_ptr<ZmqContext> ctx = shared_context();
    LL_ASSIGN_OR_RETURN(ZmqSocket sock, make_socket(*ctx, zmq::socket_type::router, options_));
    std::string resolved;
    try {
      sock.sock.bind(endpoint);
      resolved = sock.sock.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      if (!sock.zap_domain.empty()) ctx->zap->remove_domain(sock.zap_domain);
      return zmq_failure(ErrorCode::io, "cannot listen on " + endpoint, e);
    }
    return std::unique_ptr<Listener>(new ZmqListener(std::move(ctx), std::move(sock), resolved, options_));
  }

  Expected<std::unique_ptr<Link>> connect(const std::string& endpoint, const std::string& server_key = {}) override {
    std::shared_ptr<ZmqContext> ctx = shared_context();
    LL_ASSIGN_OR_RETURN(ZmqSocket sock, make_socket(*ctx, zmq::socket_type::dealer, options_, server_key));
    try {
      sock.sock.connect(endpoint);
    } catch (const zmq::error_t& e) {
      zmq_socket_monitor(sock.sock.handle(), nullptr, 0);
      return zmq_failure(ErrorCode::invalid_argument, "cannot connect to " + endpoint, e);
    }
    return std::unique_ptr<Link>(new ZmqLink(std::move(ctx), std::move(sock), endpoint, options_));
  }

 private:
  TransportOptions options_;
};

// ======================================================================================== in-process

// Wakes one wait_any() call when any mailbox it watches receives an item. `signaled` stays set until
// the waiter takes it, so a push between the waiter's check and its wait is not lost.
struct Notifier {
  std::mutex mu;  // a leaf lock: taken inside Mailbox::mu_, never the other way round
  std::condition_variable cv;
  bool signaled = false;

  void notify() {
    {
      std::lock_guard<std::mutex> lock(mu);
      signaled = true;
    }
    cv.notify_all();
  }
};

// A queue of (sender id, frame bytes) owned by one receiver. Closed when its owner goes away;
// pushing to a closed mailbox fails, as sending to a vanished peer does.
class Mailbox {
 public:
  struct Item {
    std::string from;
    std::vector<uint8_t> bytes;
  };

  bool push(std::string from, std::vector<uint8_t> bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return false;
      items_.push_back(Item{std::move(from), std::move(bytes)});
      // Under mu_: once unwatch() has returned, no push can still be touching that notifier.
      for (Notifier* n : watchers_) n->notify();
    }
    cv_.notify_all();
    return true;
  }

  std::optional<Item> pop(Millis timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, bounded(timeout), [this] { return !items_.empty(); })) return std::nullopt;
    Item item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

  // true as soon as an item is queued (not consumed), false after `timeout`.
  bool wait_nonempty(Millis timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, bounded(timeout), [this] { return !items_.empty(); });
  }

  bool has_items() {
    std::lock_guard<std::mutex> lock(mu_);
    return !items_.empty();
  }

  // `n` is notified on every push until unwatch(n); a notifier may watch many mailboxes.
  void watch(Notifier* n) {
    std::lock_guard<std::mutex> lock(mu_);
    watchers_.push_back(n);
  }
  void unwatch(Notifier* n) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find(watchers_.begin(), watchers_.end(), n);
    if (it != watchers_.end()) watchers_.erase(it);
  }

  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    items_.clear();
  }
  bool is_closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> items_;
  std::vector<Notifier*> watchers_;  // wait_any() calls in progress
  bool closed_ = false;
};

Error inproc_closed(const std::string& endpoint) {
  return make_error(ErrorCode::io, "in-process peer " + endpoint + " is closed");
}

class InProcLink final : public Link {
 public:
  // `on_close` runs in the destructor (deregisters a client from its listener).
  InProcLink(std::shared_ptr<Mailbox> inbox, std::shared_ptr<Mailbox> peer_inbox, std::string self_id,
             std::string endpoint, TransportOptions options, std::function<void()> on_close = {})
      : inbox_(std::move(inbox)),
        peer_inbox_(std::move(peer_inbox)),
        self_id_(std::move(self_id)),
        endpoint_(std::move(endpoint)),
        options_(std::move(options)),
        on_close_(std::move(on_close)) {}

  ~InProcLink() override {
    inbox_->close();
    if (on_close_) on_close_();
  }

  Expected<void> send(Frame frame) override {
    LL_TRY(check_outgoing(frame, options_));
    return send_bytes(std::move(frame).take_bytes());
  }

  Expected<void> send_bytes(std::vector<uint8_t> bytes) override {
    const size_t n = bytes.size();
    if (!peer_inbox_->push(self_id_, std::move(bytes))) return inproc_closed(endpoint_);
    counters_.frame_out(n);
    return {};
  }

  Expected<std::optional<Frame>> recv(Millis timeout) override {
    std::optional<Mailbox::Item> item = inbox_->pop(timeout);
    if (!item) return std::optional<Frame>();
    auto frame = accept_frame(
        std::move(item->bytes), options_, counters_,
        [this](std::vector<uint8_t> reply) { return static_cast<bool>(send_bytes(std::move(reply))); });
    if (!frame) return frame.error();
    return std::optional<Frame>(std::move(frame).value());
  }

  Expected<bool> wait_readable(Millis timeout) override { return inbox_->wait_nonempty(timeout); }

  LinkStats stats() const override { return counters_.snapshot(); }
  std::string endpoint() const override { return endpoint_; }
  bool peer_lost() override { return peer_inbox_->is_closed(); }
  Mailbox& inbox() { return *inbox_; }

 private:
  std::shared_ptr<Mailbox> inbox_;
  std::shared_ptr<Mailbox> peer_inbox_;
  std::string self_id_;
  std::string endpoint_;
  TransportOptions options_;
  std::function<void()> on_close_;
  LinkCounters counters_;
};

// What an in-process listener shares with the links connected to it.
struct InProcListenerState {
  std::shared_ptr<Mailbox> inbox = std::make_shared<Mailbox>();
  std::mutex mu;
  std::map<std::string, std::weak_ptr<Mailbox>> clients;  // peer id -> that client's inbox
  uint64_t next_client = 1;
};

struct InProcRegistry {
  std::mutex mu;
  std::map<std::string, std::weak_ptr<InProcListenerState>> listeners;
};

class InProcListener final : public Listener {
 public:
  InProcListener(std::shared_ptr<InProcRegistry> registry, std::shared_ptr<InProcListenerState> state,
                 std::string endpoint, TransportOptions options)
      : registry_(std::move(registry)),
        state_(std::move(state)),
        endpoint_(std::move(endpoint)),
        options_(std::move(options)) {}

  ~InProcListener() override {
    state_->inbox->close();
    std::lock_guard<std::mutex> lock(registry_->mu);
    registry_->listeners.erase(endpoint_);
  }

  std::string endpoint() const override { return endpoint_; }

  Expected<void> send(const PeerId& peer, Frame frame) override {
    LL_TRY(check_outgoing(frame, options_));
    return send_bytes(peer, std::move(frame).take_bytes());
  }

  Expected<void> send_bytes(const PeerId& peer, std::vector<uint8_t> bytes) override {
    std::shared_ptr<Mailbox> box;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      auto it = state_->clients.find(peer.id);
      if (it != state_->clients.end()) box = it->second.lock();
    }
    const size_t n = bytes.size();
    if (!box || !box->push(std::string(), std::move(bytes))) {
      return make_error(ErrorCode::not_found,
                        "peer " + peer_name(peer) + " is not connected to " + endpoint_);
    }
    counters_.frame_out(n);
    return {};
  }

  Expected<std::optional<Incoming>> recv(Millis timeout) override {
    std::optional<Mailbox::Item> item = state_->inbox->pop(timeout);
    if (!item) return std::optional<Incoming>();
    PeerId peer{std::move(item->from)};
    auto frame = accept_frame(std::move(item->bytes), options_, counters_, [&](std::vector<uint8_t> reply) {
      return static_cast<bool>(send_bytes(peer, std::move(reply)));
    });
    if (!frame) return frame.error();
    return std::optional<Incoming>(Incoming{std::move(peer), std::move(frame).value()});
  }

  LinkStats stats() const override { return counters_.snapshot(); }

 private:
  std::shared_ptr<InProcRegistry> registry_;
  std::shared_ptr<InProcListenerState> state_;
  std::string endpoint_;
  TransportOptions options_;
  LinkCounters counters_;
};

class InProcNetwork final : public Network {
 public:
  explicit InProcNetwork(TransportOptions options) : options_(std::move(options)) {}

  Expected<std::unique_ptr<Listener>> listen(const std::string& endpoint) override {
    auto state = std::make_shared<InProcListenerState>();
    {
      std::lock_guard<std::mutex> lock(registry_->mu);
      auto it = registry_->listeners.find(endpoint);
      if (it != registry_->listeners.end() && !it->second.expired()) {
        return make_error(ErrorCode::io, "cannot listen on " + endpoint + ": already in use");
      }
      registry_->listeners[endpoint] = state;
    }
    return std::unique_ptr<Listener>(new InProcListener(registry_, std::move(state), endpoint, options_));
  }

  Expected<std::unique_ptr<Link>> connect(const std::string& endpoint, const std::string& = {}) override {
    std::shared_ptr<InProcListenerState> state;
    {
      std::lock_guard<std::mutex> lock(registry_->mu);
      auto it = registry_->listeners.find(endpoint);
      if (it != registry_->listeners.end()) state = it->second.lock();
    }
    if (!state)
      return make_error(ErrorCode::not_found, "cannot connect to " + endpoint + ": nobody listens there");
    auto inbox = std::make_shared<Mailbox>();
    std::string id;
    {
      std::lock_guard<std::mutex> lock(state->mu);
      const uint64_t n = state->next_client++;
      for (int i = 0; i < 8; ++i) id.push_back(static_cast<char>(n >> (8 * i)));
      state->clients[id] = inbox;
    }
    std::weak_ptr<InProcListenerState> weak_state = state;
    auto on_close = [weak_state, id] {
      if (auto s = weak_state.lock()) {
        std::lock_guard<std::mutex> lock(s->mu);
        s->clients.erase(id);
      }
    };
    return std::unique_ptr<Link>(
        new InProcLink(std::move(inbox), state->inbox, id, endpoint, options_, on_close));
  }

 private:
  TransportOptions options_;
  std::shared_ptr<InProcRegistry> registry_ = std::make_shared<InProcRegistry>();
};

// ========================================================================================== wait_any

Expected<std::optional<size_t>> wait_any_zmq(std::span<Link* const> links, Millis timeout) {
  std::vector<zmq::pollitem_t> items;
  items.reserve(links.size());
  for (Link* link : links) {
    items.push_back(zmq::pollitem_t{static_cast<ZmqLink*>(link)->socket_handle(), 0, ZMQ_POLLIN, 0});
  }
  try {
    if (zmq::poll(items.data(), items.size(), timeout) <= 0) return std::optional<size_t>();
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::optional<size_t>();
    return zmq_failure(ErrorCode::io, "wait for " + std::to_string(links.size()) + " links", e);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if ((items[i].revents & ZMQ_POLLIN) != 0) return std::optional<size_t>(i);
  }
  return std::optional<size_t>();
}

std::optional<size_t> wait_any_inproc(std::span<Link* const> links, Millis timeout) {
  std::vector<Mailbox*> boxes;
  boxes.reserve(links.size());
  for (Link* link : links) boxes.push_back(&static_cast<InProcLink*>(link)->inbox());
  auto first_ready = [&]() -> std::optional<size_t> {
    for (size_t i = 0; i < boxes.size(); ++i) {
      if (boxes[i]->has_items()) return i;
    }
    return std::nullopt;
  };
  if (timeout == Millis(0)) return first_ready();

  // Watch first, then check: an item pushed after the check sets `signaled`, one pushed before is seen.
  Notifier notifier;
  struct Unwatch {
    std::vector<Mailbox*>& boxes;
    Notifier& n;
    ~Unwatch() {
      for (Mailbox* b : boxes) b->unwatch(&n);
    }
  };
  for (Mailbox* b : boxes) b->watch(&notifier);
  const Unwatch unwatch{boxes, notifier};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (std::optional<size_t> ready = first_ready()) return ready;
    std::unique_lock<std::mutex> lock(notifier.mu);
    if (!notifier.cv.wait_until(lock, deadline, [&] { return notifier.signaled; })) return std::nullopt;
    notifier.signaled = false;
  }
}

// Any mix of links: check each, sleep <= 1 ms, repeat.
Expected<std::optional<size_t>> wait_any_polling(std::span<Link* const> links, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    for (size_t i = 0; i < links.size(); ++i) {
      LL_ASSIGN_OR_RETURN(bool ready, links[i]->wait_readable(Millis(0)));
      if (ready) return std::optional<size_t>(i);
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::optional<size_t>();
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(Millis(1), deadline - now));
  }
}

}  // namespace

Expected<std::optional<size_t>> wait_any(std::span<Link* const> links, Millis timeout) {
  timeout = bounded(timeout);
  bool all_zmq = true, all_inproc = true;
  for (Link* link : links) {
    if (link == nullptr) {
      std::fprintf(stderr, "ll::net::wait_any: null link\n");  // a bug in the caller
      std::abort();
    }
    all_zmq = all_zmq && dynamic_cast<ZmqLink*>(link) != nullptr;
    all_inproc = all_inproc && dynamic_cast<InProcLink*>(link) != nullptr;
  }
  if (links.empty()) {
    std::this_thread::sleep_for(timeout);
    return std::optional<size_t>();
  }
  if (all_zmq) return wait_any_zmq(links, timeout);
  if (all_inproc) return wait_any_inproc(links, timeout);
  return wait_any_polling(links, timeout);
}

std::unique_ptr<Network> make_zmq_network(TransportOptions options) {
  return std::make_unique<ZmqNetwork>(std::move(options));
}

std::unique_ptr<Network> make_inproc_network(TransportOptions options) {
  return std::make_unique<InProcNetwork>(std::move(options));
}

std::pair<std::unique_ptr<Link>, std::unique_ptr<Link>> make_inproc_pair(TransportOptions options) {
  auto a = std::make_shared<Mailbox>();
  auto b = std::make_shared<Mailbox>();
  std::unique_ptr<Link> la(new InProcLink(a, b, "a", "inproc://pair/a", options));
  std::unique_ptr<Link> lb(new InProcLink(b, a, "b", "inproc://pair/b", options));
  return {std::move(la), std::move(lb)};
}

}  // namespace ll::net
