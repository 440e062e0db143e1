#include "net/channel.h"

#include <algorithm>

#include "net/codec.h"

namespace ll::net {

namespace {

// The ERROR frame answering a frame whose payload failed (or came at the wrong time), or nullopt
// when the frame is itself an ERROR (never answered).
std::optional<Frame> payload_error_reply(const Frame& bad, WireError code, const Error& why,
                                         const Limits& limits) {
  if (bad.type() == MessageType::error) return std::nullopt;
  // A HELLO whose payload names another version is a version mismatch, not mere garbage.
  if (bad.type() == MessageType::hello && bad.payload().size() >= 2 &&
      load_u16_le(bad.payload().data()) != k_protocol_version) {
    code = WireError::version_mismatch;
  }
  return encode(make_error_message(code, why.message, static_cast<uint16_t>(bad.type()), limits),
                bad.request_id());
}

Error not_before_hello(const Frame& f) {
  return make_error(ErrorCode::invalid_argument,
                    message_type_name(f.type()) + " before HELLO: the first message must be HELLO");
}

}  // namespace

Expected<void> check_hello(const Hello& peer, Role expected_role) {
  if (peer.protocol_version != k_protocol_version) {
    return make_error(ErrorCode::unsupported, version_mismatch_text(peer.protocol_version));
  }
  if (peer.role != expected_role) {
    return make_error(ErrorCode::invalid_argument, "peer \"" + peer.name + "\" says it is a " +
                                                       std::string(role_name(peer.role)) + ", expected a " +
                                                       std::string(role_name(expected_role)));
  }
  return {};
}

// ------------------------------------------------------------------------------------------- Channel

Expected<void> Channel::send(const Message& m, uint64_t request_id) {
  return link_.send(encode(m, request_id));
}

Expected<std::optional<Envelope>> Channel::recv(Millis timeout) {
  LL_ASSIGN_OR_RETURN(std::optional<Frame> frame, link_.recv(timeout));
  if (!frame) return std::optional<Envelope>();
  if (!peer_said_hello_ && frame->type() != MessageType::hello && frame->type() != MessageType::error) {
    ++n_bad_payloads_;
    Error e = not_before_hello(*frame);
    if (auto reply = payload_error_reply(*frame, WireError::unexpected, e, limits_))
      (void)link_.send(std::move(*reply));
    return e;
  }
  Expected<Message> m = decode_message(*frame, limits_);
  if (!m) {
    ++n_bad_payloads_;
    if (auto reply = payload_error_reply(*frame, WireError::malformed, m.error(), limits_)) {
      (void)link_.send(std::move(*reply));
    }
    return m.error();
  }
  if (frame->type() == MessageType::hello) peer_said_hello_ = true;
  return std::optional<Envelope>(Envelope{frame->request_id(), std::move(m).value()});
}

Expected<Hello> Channel::handshake(const Hello& mine, Role expected_peer_role, Millis timeout,
                                   const std::function<bool()>& should_stop) {
  LL_TRY(send(mine, 0));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (should_stop && should_stop()) {
      return make_error(ErrorCode::resource, "interrupted while waiting for the HELLO of " + link_.endpoint());
    }
    const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    if (left <= Millis(0)) {
      return make_error(ErrorCode::io, "no HELLO from " + link_.endpoint() + " within " +
                                           std::to_string(timeout.count()) + " ms");
    }
    // In slices, so that a failed CURVE handshake (final: nothing will arrive) ends the wait at once.
    LL_ASSIGN_OR_RETURN(std::optional<Envelope> env, recv(std::min(left, Millis(100))));
    if (!env) {
      if (std::optional<std::string> why = link_.security_failure()) {
        return make_error(ErrorCode::invalid_argument, "could not authenticate " + link_.endpoint() + ": " + *why);
      }
      continue;  // timed out or interrupted: the loop re-checks the deadline
    }
    if (const auto* err = std::get_if<ErrorMessage>(&env->message)) return to_error(*err);
    const auto* hello = std::get_if<Hello>(&env->message);
    if (!hello) continue;  // cannot happen: recv refuses anything else before HELLO
    LL_TRY(check_hello(*hello, expected_peer_role));
    return *hello;
  }
}

// ------------------------------------------------------------------------------------- ServerChannel

Expected<void> ServerChannel::send(const PeerId& peer, const Message& m, uint64_t request_id) {
  return listener_.send(peer, encode(m, request_id));
}

void ServerChannel::remember(const PeerId& peer) {
  if (!greeted_.insert(peer.id).second) return;
  greeted_order_.push_back(peer.id);
  while (greeted_.size() > max_peers_ && !greeted_order_.empty()) {
    greeted_.erase(greeted_order_.front());
    greeted_order_.pop_front();
  }
}

void ServerChannel::forget(const PeerId& peer) {
  if (greeted_.erase(peer.id) == 0) return;
  for (auto it = greeted_order_.begin(); it != greeted_order_.end(); ++it) {
    if (*it == peer.id) {
      greeted_order_.erase(it);
      break;
    }
  }
}

Expected<std::optional<IncomingMessage>> ServerChannel::recv(Millis timeout) {
  LL_ASSIGN_OR_RETURN(std::optional<Incoming> in, listener_.recv(timeout));
  if (!in) return std::optional<IncomingMessage>();
  const Frame& frame = in->frame;
  if (frame.type() != MessageType::hello && !said_hello(in->peer)) {
    ++n_bad_payloads_;
    Error e = not_before_hello(frame);
    e.message = "peer " + peer_name(in->peer) + ": " + e.message;
    if (auto reply = payload_error_reply(frame, WireError::unexpected, e, limits_)) {
      (void)listener_.send(in->peer, std::move(*reply));
    }
    return e;
  }
  Expected<Message> m = decode_message(frame, limits_);
  if (!m) {
    ++n_bad_payloads_;
    if (auto reply = payload_error_reply(frame, WireError::malformed, m.error(), limits_)) {
      (void)listener_.send(in->peer, std::move(*reply));
    }
    return m.error();
  }
  if (frame.type() == MessageType::hello) remember(in->peer);
  return std::optional<IncomingMessage>(
      IncomingMessage{std::move(in->peer), frame.request_id(), std::move(m).value(), in->trust});
}

}  // namespace ll::net
