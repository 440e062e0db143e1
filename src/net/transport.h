// Transport: moves frames (net/protocol.h) between processes over ZeroMQ, or inside one process
// over queues, behind one small interface, so runtime code never knows which it talks to.
//
//   Link      a point-to-point, message-level connection: send(Frame), recv(timeout).
//   Listener  the accepting side: receives frames from any number of peers, each tagged with a
//             PeerId, and sends to a peer by its id.
//   Network   makes both from an endpoint string: make_zmq_network() ("tcp://host:port", a Listener
//             is a bound ROUTER socket, a Link a connected DEALER socket) or make_inproc_network()
//             (any name; queues guarded by a mutex, no sockets, deterministic).
//
// Both implementations check every received frame's header (parse_frame_header): a bad frame is
// counted in LinkStats::n_bad_frames, answered with an ERROR frame where the protocol allows
// (make_error_reply: never to an ERROR), and reported by recv() as an Error; the link stays usable.
// Payloads are validated one level up (net/channel.h).
//
// ZeroMQ sockets are created and configured in exactly one function (make_socket in transport.cpp):
//   ZMQ_MAXMSGSIZE = Limits::max_frame_bytes  a larger frame is never allocated: libzmq drops the
//                                             connection that sent it
//   ZMQ_LINGER     = linger_ms                closing never blocks long on unsent frames
//   ZMQ_SNDTIMEO   = send_timeout_ms          a send to a stuck or absent peer fails instead of hanging
//   ZMQ_SNDHWM/RCVHWM = send_hwm/recv_hwm     frames queued per peer (memory bound: hwm x max frame)
//   ZMQ_ROUTER_MANDATORY = 1 (Listener)       sending to a peer that is gone is an error, not a drop
//   CURVE options, ZAP domain                 with SocketSecurity::Mode::curve (see SocketSecurity)
//   ZMQ_HEARTBEAT_IVL/TIMEOUT/TTL             ZMTP PINGs from libzmq's I/O thread (so a busy worker thread
//                                             still answers): a peer silent for heartbeat_timeout_ms has its
//                                             connection closed, which Link::peer_lost() reports
// A Link also gets a socket monitor (made with the socket): kill -9 closes the peer's TCP connection
// at once (ZMQ_EVENT_DISCONNECTED); a cut link is caught by the heartbeat timeout; over CURVE the
// handshake outcome tells a refused key (Link::security_failure()).
// Receives use zmq_poll with the caller's timeout, so nothing waits forever.
//
// Waiting on several Links at once (a coordinator reading all its workers): wait_any() below. Over
// ZeroMQ it is one zmq_poll over the Links' sockets; in-process Links wake it through a notifier
// their queues signal; a mixed set falls back to checking every Link and sleeping <= 1 ms.
//
// Threading: a Link or Listener is used by one thread at a time (ZeroMQ sockets are not thread-safe);
// stats() may be read from any thread. Different Links may live on different threads. The in-process
// implementation is thread-safe throughout.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "net/protocol.h"
#include "net/security.h"

namespace ll::net {

using Millis = std::chrono::milliseconds;

// How ZeroMQ sockets are secured (net/security.h explains CURVE and the key files).
//   plain  no authentication, no encryption (`--insecure`; trusted networks and tests only).
//   curve  every link is encrypted and both ends authenticated (make_socket in transport.cpp):
//          Listener: ZMQ_CURVE_SERVER=1 + ZMQ_CURVE_SECRETKEY, and a ZAP domain whose handler
//                    (net/zap.h) accepts only the clients in `authorized_clients` (required);
//          Link:     ZMQ_CURVE_SERVERKEY (the Listener's public key: Network::connect's server_key)
//                    + ZMQ_CURVE_PUBLICKEY + ZMQ_CURVE_SECRETKEY.
//          libzmq must be built with CURVE (check_curve_available()); keys are 40-character Z85.
// The in-process transport ignores security: its frames never leave the process.
struct SocketSecurity {
  enum class Mode { plain, curve };
  Mode mode = Mode::plain;
  std::string curve_public_key;  // this side's long-term public key (as client and as server)
  std::string curve_secret_key;  // this side's secret key
  // Listener only: the client public keys it accepts (shared, so its owner may change them later).
  std::shared_ptr<const AuthorizedKeys> authorized_clients;
};

struct TransportOptions {
  Limits limits;  // header checks; max_frame_bytes is also ZMQ_MAXMSGSIZE
  SocketSecurity security;
  int linger_ms = 100;              // how long close() may try to deliver queued frames
  int send_timeout_ms = 5000;       // a send that cannot be queued for this long fails
  int send_hwm = 64;                // frames queued per peer, outbound
  int recv_hwm = 64;                // frames queued per peer, inbound
  bool reply_to_bad_frames = true;  // answer bad frames with ERROR
  int heartbeat_ivl_ms = 300;       // ZMTP PING interval (0: no heartbeats)
  // A connection silent this long is closed (also the TTL asked of peers). At 1200 ms, live workers
  // were dropped now and then: in 5 of 15 prefills in 16-token micro-batches over `--local 2` on a
  // 2-vCPU machine both workers busy, the origin's link to one closed (none in 10 with heartbeats
  // off, none in 10 at 3000 ms). A cut link is noticed this much later; kill -9 at once.
  int heartbeat_timeout_ms = 3000;
};

struct LinkStats {
  uint64_t n_frames_in = 0;  // frames with a valid header
  uint64_t n_frames_out = 0;
  uint64_t bytes_in = 0;  // of all received frames, bad ones included
  uint64_t bytes_out = 0;
  uint64_t n_bad_frames = 0;     // received frames that failed header validation (or were multipart)
  uint64_t n_error_replies = 0;  // ERROR frames sent in answer to bad frames
};

// Counters behind LinkStats, safe to read from another thread.
class LinkCounters {
 public:
  void frame_in(size_t bytes) { add(n_frames_in_, 1), add(bytes_in_, bytes); }
  void bad_frame(size_t bytes) { add(n_bad_frames_, 1), add(bytes_in_, bytes); }
  void frame_out(size_t bytes) { add(n_frames_out_, 1), add(bytes_out_, bytes); }
  void error_reply() { add(n_error_replies_, 1); }
  LinkStats snapshot() const;

 private:
  static void add(std::atomic<uint64_t>& c, uint64_t v) { c.fetch_add(v, std::memory_order_relaxed); }
  std::atomic<uint64_t> n_frames_in_{0}, n_frames_out_{0}, bytes_in_{0}, bytes_out_{0}, n_bad_frames_{0},
      n_error_replies_{0};
};

class Link {
 public:
  virtual ~Link() = default;
  // Queues a frame for the peer (may wait up to send_timeout_ms when the peer's queue is full).
  // A frame larger than limits.max_frame_bytes is refused (ErrorCode::invalid_argument).
  virtual Expected<void> send(Frame frame) = 0;
  // Sends bytes as one frame without checking them (tests inject malformed frames this way).
  virtual Expected<void> send_bytes(std::vector<uint8_t> bytes) = 0;
  // The next frame with a valid header; nullopt when none arrived within `timeout` (0 = just poll)
  // or a signal interrupted the wait. A bad frame is counted, answered, and returned as its Error.
  virtual Expected<std::optional<Frame>> recv(Millis timeout) = 0;
  // Waits up to `timeout` (0 = just check) until recv() has something to return without waiting,
  // without consuming it: true when a frame (possibly a bad one, which recv() reports as an Error) is
  // queued; false on timeout or when a signal interrupted the wait.
  virtual Expected<bool> wait_readable(Millis timeout) = 0;
  virtual LinkStats stats() const = 0;
  // The address this link is connected to ("tcp://127.0.0.1:5601", "inproc://worker-1", ...).
  virtual std::string endpoint() const = 0;
  // Over CURVE: why the security handshake with the peer failed, when it did and none has succeeded
  // since ("the peer refused our public key", "the peer's key is not the expected server key or it
  // does not speak CURVE"). A failed handshake is final: nothing is delivered on this Link, so a
  // caller waiting for an answer can stop waiting. nullopt otherwise (and always for plain links).
  virtual std::optional<std::string> security_failure() { return std::nullopt; }
  // True once the peer is known to be gone: over ZeroMQ, a connection that was up has been closed
  // (the peer died, or was silent past heartbeat_timeout_ms); in-process, the peer's Listener was
  // destroyed. Sticky: a peer that comes back is a new process without our state. Never blocks.
  virtual bool peer_lost() { return false; }
};

// Waits up to `timeout` (0 = just check) until one of `links` has a frame ready for recv(), without
// consuming anything. Returns the lowest index of a ready link (a caller that must be fair to busy
// peers recv()s from every ready link before waiting again: wait_any(…, Millis(0)) finds the next),
// or nullopt on timeout or, over ZeroMQ, when a signal interrupted the wait (EINTR), so a loop can
// check its stop flag. With no links it sleeps for `timeout` and returns nullopt. The links must not
// be null (a bug: aborts), and no other thread may use them meanwhile (the Link threading rule).
//   - all ZeroMQ: one zmq_poll(ZMQ_POLLIN) over their sockets;
//   - all in-process: a notifier registered with each link's queue; a push wakes the waiter at once;
//   - mixed (or another Link implementation): checks every link with wait_readable(0) and sleeps
//     <= 1 ms between rounds, so it answers within about 1 ms of a frame's arrival.
Expected<std::optional<size_t>> wait_any(std::span<Link* const> links, Millis timeout);

// Identifies a peer of a Listener (the ZeroMQ routing id, or an in-process id); opaque bytes.
struct PeerId {
  std::string id;
  bool operator==(const PeerId&) const = default;
};
std::string peer_name(const PeerId& p);  // printable: hex of the id bytes

struct Incoming {
  PeerId peer;
  Frame frame;
  PeerTrust trust = PeerTrust::unauthenticated;  // over CURVE: how the sender's key was admitted
};

class Listener {
 public:
  virtual ~Listener() = default;
  // The address peers connect to, resolved ("tcp://127.0.0.1:*" becomes "tcp://127.0.0.1:41234").
  virtual std::string endpoint() const = 0;
  // ErrorCode::not_found when that peer is not (or no longer) connected.
  virtual Expected<void> send(const PeerId& peer, Frame frame) = 0;
  virtual Expected<void> send_bytes(const PeerId& peer, std::vector<uint8_t> bytes) = 0;
  // As Link::recv, from any peer.
  virtual Expected<std::optional<Incoming>> recv(Millis timeout) = 0;
  virtual LinkStats stats() const = 0;
};

class Network {
 public:
  virtual ~Network() = default;
  virtual Expected<std::unique_ptr<Listener>> listen(const std::string& endpoint) = 0;
  // `server_key`: with CURVE, the public key the Listener at `endpoint` must have (required);
  // ignored without CURVE.
  virtual Expected<std::unique_ptr<Link>> connect(const std::string& endpoint, const std::string& server_key = {}) = 0;
};

// ZeroMQ over tcp:// (any ZeroMQ endpoint works; only tcp:// is tested). connect() returns at once;
// ZeroMQ connects (and reconnects) in the background and queues frames until then.
std::unique_ptr<Network> make_zmq_network(TransportOptions options = {});

// In-process queues. listen(name) fails when the name is taken; connect(name) fails with
// ErrorCode::not_found when nobody listens on it. Queues are unbounded (it is our own process).
// Frames are checked exactly as over ZeroMQ, except that an oversized frame (only possible through
// send_bytes) arrives and is rejected as a bad frame instead of being dropped with the connection.
std::unique_ptr<Network> make_inproc_network(TransportOptions options = {});

// Two in-process Links connected to each other.
std::pair<std::unique_ptr<Link>, std::unique_ptr<Link>> make_inproc_pair(TransportOptions options = {});

}  // namespace ll::net
