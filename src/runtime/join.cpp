#include "runtime/join.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "net/channel.h"

namespace ll::runtime {

Expected<void> join_cluster(net::Network& net, const JoinOptions& o) {
  auto say = [&](const std::string& s) {
    if (o.log) o.log(s);
  };
  auto stopped = [&] { return o.should_stop && o.should_stop(); };
  for (int attempt = 1;; ++attempt) {
    if (stopped()) return make_error(ErrorCode::resource, "interrupted");
    const auto t_attempt = std::chrono::steady_clock::now();
    auto link = net.connect(o.origin, o.origin_key);
    if (!link) {
      if (link.error().code != ErrorCode::not_found) return link.error();
    } else {
      net::Channel ch(**link);
      auto h = ch.handshake(o.hello, net::Role::coordinator, o.attempt_timeout);
      if (!h) {
        // A refusal of our key, a version or role mismatch: final. Silence: ask again.
        if (h.error().code != ErrorCode::io) return make_error(h.error().code, o.origin + ": " + h.error().message);
      } else {
        LL_TRY(ch.send(net::Join{o.advertise, o.public_key}, 1));
        const auto deadline = std::chrono::steady_clock::now() + o.attempt_timeout;
        while (std::chrono::steady_clock::now() < deadline && !stopped()) {
          LL_ASSIGN_OR_RETURN(auto m, ch.recv(net::Millis(100)));
          if (!m || m->request_id != 1) continue;
          if (auto* e = std::get_if<net::ErrorMessage>(&m->message)) {
            const Error err = net::to_error(*e);
            return make_error(err.code, "the origin at " + o.origin + " refused to take us in: " + err.message);
          }
          if (std::holds_alternative<net::Heartbeat>(m->message)) return {};
        }
      }
    }
    say("no answer from the origin at " + o.origin + " (attempt " + std::to_string(attempt) + "); trying again");
    // (At most one attempt per second, also when the connection fails at once.)
    while (std::chrono::steady_clock::now() - t_attempt < std::chrono::seconds(1) && !stopped()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

struct JoinListener::Impl {
  std::unique_ptr<net::Listener> listener;
  std::unique_ptr<net::ServerChannel> server;
  net::Hello mine;
  Admit admit;
  std::thread thread;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> n_refused{0};

  void refuse(const net::PeerId& peer, uint64_t rid, const Error& e, net::MessageType in_reply_to) {
    ++n_refused;
    (void)server->send(peer, net::make_error_message(e, static_cast<uint16_t>(in_reply_to)), rid);
  }

  void serve() {
    while (!stop) {
      auto in = server->recv(net::Millis(100));
      if (!in) {
        ++n_refused;  // a bad frame or payload (answered and counted by the channel)
        if (in.error().code == ErrorCode::io) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      if (!*in) continue;
      net::IncomingMessage& m = **in;
      if (auto* h = std::get_if<net::Hello>(&m.message)) {
        if (auto ok = net::check_hello(*h, net::Role::worker); !ok) {
          refuse(m.peer, m.request_id, ok.error(), net::MessageType::hello);
          server->forget(m.peer);
          continue;
        }
        (void)server->send(m.peer, mine, m.request_id);
      } else if (auto* j = std::get_if<net::Join>(&m.message)) {
        if (auto ok = admit(j->endpoint, j->public_key); !ok) {
          refuse(m.peer, m.request_id, ok.error(), net::MessageType::join);
          continue;
        }
        (void)server->send(m.peer, net::Heartbeat{0, 0}, m.request_id);
      } else if (std::holds_alternative<net::Heartbeat>(m.message)) {
        (void)server->send(m.peer, m.message, m.request_id);
      } else {
        refuse(m.peer, m.request_id,
               make_error(ErrorCode::invalid_argument,
                          net::message_type_name(net::message_type(m.message)) + " is not something a join endpoint accepts"),
               net::message_type(m.message));
      }
    }
  }
};

Expected<std::unique_ptr<JoinListener>> JoinListener::start(net::Network& net, const std::string& endpoint,
                                                            net::Hello mine, Admit admit) {
  auto impl = std::make_unique<Impl>();
  LL_ASSIGN_OR_RETURN(impl->listener, net.listen(endpoint));
  impl->server = std::make_unique<net::ServerChannel>(*impl->listener, net::Limits{}, 256);
  impl->mine = std::move(mine);
  impl->mine.role = net::Role::coordinator;
  impl->admit = std::move(admit);
  Impl* p = impl.get();
  impl->thread = std::thread([p] { p->serve(); });
  return std::unique_ptr<JoinListener>(new JoinListener(std::move(impl)));
}

JoinListener::JoinListener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

JoinListener::~JoinListener() {
  impl_->stop = true;
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string JoinListener::endpoint() const { return impl_->listener->endpoint(); }
uint64_t JoinListener::n_refused() const { return impl_->n_refused.load(); }

}  // namespace ll::runtime
