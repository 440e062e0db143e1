// Message-level endpoints over the transport: encode on send; on receive, decode and validate the
// payload (net/protocol.h), enforce "HELLO first", count bad messages and answer each with an ERROR.
//
//   Channel        over a Link (the connecting side, e.g. the coordinator talking to one worker)
//   ServerChannel  over a Listener (the accepting side, e.g. a worker serving the coordinator and the
//                  previous pipeline stage), tracking which peers have said HELLO
//
// A bad message is returned by recv() as its Error after being counted and answered; the channel
// stays usable, so a serving loop simply logs the error and calls recv() again.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>

#include "core/error.h"
#include "net/protocol.h"
#include "net/transport.h"

namespace ll::net {

// Checks a peer's HELLO: same protocol version (decode already guarantees it; checked again for
// HELLOs built by hand) and the expected role.
Expected<void> check_hello(const Hello& peer, Role expected_role);

class Channel {
 public:
  explicit Channel(Link& link, Limits limits = {}) : link_(link), limits_(limits) {}

  Expected<void> send(const Message& m, uint64_t request_id);

  // The next valid message, or nullopt on timeout. Until the peer's HELLO has arrived, any other
  // message is refused (WireError::unexpected); an ERROR from the peer is returned as a message.
  Expected<std::optional<Envelope>> recv(Millis timeout);

  // Sends `mine`, then waits up to `timeout` for the peer's HELLO and checks it (check_hello).
  // An ERROR answer (e.g. the peer speaks another version) becomes the returned Error.
  // `should_stop`, when given, is asked between 100 ms waits: true ends the wait ("interrupted").
  Expected<Hello> handshake(const Hello& mine, Role expected_peer_role, Millis timeout,
                            const std::function<bool()>& should_stop = {});

  bool peer_said_hello() const { return peer_said_hello_; }
  // Bad frames (counted by the link) plus bad or out-of-order payloads.
  uint64_t n_bad_messages() const { return link_.stats().n_bad_frames + n_bad_payloads_; }
  Link& link() { return link_; }

 private:
  Link& link_;
  Limits limits_;
  bool peer_said_hello_ = false;
  uint64_t n_bad_payloads_ = 0;
};

struct IncomingMessage {
  PeerId peer;
  uint64_t request_id = 0;
  Message message;
  PeerTrust trust = PeerTrust::unauthenticated;  // Incoming::trust
};

class ServerChannel {
 public:
  // Remembers up to max_peers peers that said HELLO (the oldest is forgotten first and must HELLO
  // again), so a stream of new connections cannot grow memory without bound.
  explicit ServerChannel(Listener& listener, Limits limits = {}, size_t max_peers = 1024)
      : listener_(listener), limits_(limits), max_peers_(max_peers == 0 ? 1 : max_peers) {}

  Expected<void> send(const PeerId& peer, const Message& m, uint64_t request_id);

  // The next valid message from any peer, or nullopt on timeout. A non-HELLO message from a peer
  // that has not said HELLO is refused with WireError::unexpected. A valid HELLO marks its peer; the
  // caller answers it (with its own HELLO, or an ERROR to refuse it and then forget() the peer).
  Expected<std::optional<IncomingMessage>> recv(Millis timeout);

  bool said_hello(const PeerId& peer) const { return greeted_.count(peer.id) != 0; }
  void forget(const PeerId& peer);

  uint64_t n_bad_messages() const { return listener_.stats().n_bad_frames + n_bad_payloads_; }
  Listener& listener() { return listener_; }

 private:
  void remember(const PeerId& peer);

  Listener& listener_;
  Limits limits_;
  size_t max_peers_;
  std::unordered_set<std::string> greeted_;
  std::deque<std::string> greeted_order_;  // oldest first, for eviction
  uint64_t n_bad_payloads_ = 0;
};

}  // namespace ll::net
