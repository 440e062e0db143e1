#include "net/transport.h"

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "net/channel.h"
#include "net/net_test_util.h"

namespace ll::net {
namespace {

using Bytes = std::vector<uint8_t>;
using testing::frame_bytes;

// Waiting for a real peer: generous, never asserted as a duration.
constexpr Millis k_wait{5000};
// Waiting for something that must NOT arrive.
constexpr Millis k_short{200};

Bytes to_bytes(std::span<const uint8_t> s) {
  return Bytes(s.begin(), s.end());
}

// Receives one frame that must arrive, with a valid header.
Frame must_recv(Link& link) {
  auto r = link.recv(k_wait);
  EXPECT_TRUE(r) << r.error().message;
  if (!r || !r->has_value()) {
    ADD_FAILURE() << "nothing received";
    return Frame();
  }
  return std::move(**r);
}

Incoming must_recv(Listener& l) {
  auto r = l.recv(k_wait);
  EXPECT_TRUE(r) << r.error().message;
  if (!r || !r->has_value()) {
    ADD_FAILURE() << "nothing received";
    return Incoming{};
  }
  return std::move(**r);
}

ErrorMessage as_error(const Frame& f) {
  EXPECT_EQ(f.type(), MessageType::error);
  auto e = decode_error(f.payload(), Limits{});
  EXPECT_TRUE(e) << e.error().message;
  return e ? *e : ErrorMessage{};
}

// ------------------------------------------------------------------------------------------ in-process

TEST(InProc, PairRoundTrip) {
  auto [a, b] = make_inproc_pair();
  const Frame f = encode(testing::sample_batch(WireDType::f16), 77);
  ASSERT_TRUE(a->send(encode(testing::sample_batch(WireDType::f16), 77)));
  const Frame got = must_recv(*b);
  EXPECT_EQ(to_bytes(got.bytes()), to_bytes(f.bytes()));
  EXPECT_EQ(got.request_id(), 77u);
  EXPECT_EQ(a->stats().n_frames_out, 1u);
  EXPECT_EQ(b->stats().n_frames_in, 1u);
  EXPECT_EQ(b->stats().bytes_in, f.size());
  ASSERT_TRUE(b->send(encode(Heartbeat{1, 2}, 78)));
  EXPECT_EQ(must_recv(*a).type(), MessageType::heartbeat);
}

TEST(InProc, OversizedFramesAreRefusedBySenderAndReceiver) {
  TransportOptions options;
  options.limits.max_frame_bytes = 100;
  auto [a, b] = make_inproc_pair(options);
  auto r = a->send(encode(testing::sample_batch(WireDType::f32), 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("exceeds max_frame_bytes 100"), std::string::npos) << r.error().message;
  // Pushed through unchecked, the receiver rejects it.
  ASSERT_TRUE(a->send_bytes(to_bytes(encode(testing::sample_batch(WireDType::f32), 1).bytes())));
  auto got = b->recv(k_wait);
  ASSERT_FALSE(got);
  EXPECT_NE(got.error().message.find("exceed the frame limit"), std::string::npos) << got.error().message;
}

TEST(InProc, ReceiveTimeoutIsAValue) {
  auto [a, b] = make_inproc_pair();
  auto r = a->recv(Millis(10));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->has_value());
  auto r0 = a->recv(Millis(0));
  ASSERT_TRUE(r0);
  EXPECT_FALSE(r0->has_value());
}

TEST(InProc, BadFrameIsCountedAndAnswered) {
  auto [a, b] = make_inproc_pair();
  Bytes bad = to_bytes(encode(Heartbeat{}, 4242).bytes());
  bad[20] = 99;  // payload length lies
  ASSERT_TRUE(a->send_bytes(bad));
  auto r = b->recv(k_wait);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::parse);
  EXPECT_EQ(b->stats().n_bad_frames, 1u);
  EXPECT_EQ(b->stats().n_error_replies, 1u);
  const Frame reply = must_recv(*a);
  EXPECT_EQ(reply.request_id(), 4242u);
  const ErrorMessage em = as_error(reply);
  EXPECT_EQ(em.code, WireError::malformed);
  EXPECT_EQ(em.in_reply_to, static_cast<uint16_t>(MessageType::heartbeat));
  EXPECT_NE(em.message.find("payload_bytes"), std::string::npos) << em.message;
  // The link still works.
  ASSERT_TRUE(a->send(encode(Heartbeat{}, 1)));
  EXPECT_EQ(must_recv(*b).type(), MessageType::heartbeat);
}

TEST(InProc, BadErrorFramesAreNotAnswered) {
  auto [a, b] = make_inproc_pair();
  ASSERT_TRUE(a->send_bytes(frame_bytes(static_cast<uint16_t>(MessageType::error), Bytes{1}, 0, 3)));
  EXPECT_FALSE(b->recv(k_wait));
  EXPECT_EQ(b->stats().n_bad_frames, 1u);
  EXPECT_EQ(b->stats().n_error_replies, 0u);
  auto none = a->recv(Millis(20));
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
}

TEST(InProc, SendToClosedPeerFails) {
  auto [a, b] = make_inproc_pair();
  b.reset();
  auto r = a->send(encode(Heartbeat{}, 0));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::io);
}

TEST(InProc, PeerLostWhenTheOtherEndOrTheListenerGoes) {
  auto [a, b] = make_inproc_pair();
  EXPECT_FALSE(a->peer_lost());
  b.reset();
  EXPECT_TRUE(a->peer_lost());

  auto net = make_inproc_network();
  auto listener = net->listen("inproc://worker-9");
  ASSERT_TRUE(listener);
  auto link = net->connect("inproc://worker-9");
  ASSERT_TRUE(link);
  EXPECT_FALSE((*link)->peer_lost());
  listener->reset();
  EXPECT_TRUE((*link)->peer_lost());
}

TEST(InProc, NetworkRoutesByPeer) {
  auto net = make_inproc_network();
  auto listener = net->listen("inproc://worker-1");
  ASSERT_TRUE(listener);
  EXPECT_FALSE(net->listen("inproc://worker-1"));  // taken
  auto nobody = net->connect("inproc://nobody");
  ASSERT_FALSE(nobody);
  EXPECT_EQ(nobody.error().code, ErrorCode::not_found);

  auto c1 = net->connect("inproc://worker-1");
  auto c2 = net->connect("inproc://worker-1");
  ASSERT_TRUE(c1 && c2);
  ASSERT_TRUE((*c1)->send(encode(Heartbeat{1, 1}, 1)));
  ASSERT_TRUE((*c2)->send(encode(Heartbeat{2, 2}, 2)));
  for (int i = 0; i < 2; ++i) {
    Incoming in = must_recv(**listener);
    // Echo back to whoever sent it.
    ASSERT_TRUE((*listener)->send(in.peer, encode(Heartbeat{}, in.frame.request_id())));
  }
  EXPECT_EQ(must_recv(**c1).request_id(), 1u);
  EXPECT_EQ(must_recv(**c2).request_id(), 2u);
  // A peer that left is not found.
  ASSERT_TRUE((*c1)->send(encode(Heartbeat{}, 3)));
  Incoming in = must_recv(**listener);
  c1->reset();
  auto gone = (*listener)->send(in.peer, encode(Heartbeat{}, 0));
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ErrorCode::not_found);
  // The name is free again once its listener is gone.
  listener->reset();
  EXPECT_TRUE(net->listen("inproc://worker-1"));
}

// -------------------------------------------------------------------------------------------- channels

Hello coordinator_hello() {
  Hello h;
  h.role = Role::coordinator;
  h.name = "origin";
  h.n_threads = 1;
  return h;
}

TEST(Channel, HelloMustComeFirst) {
  auto net = make_inproc_network();
  auto listener = net->listen("w");
  auto link = net->connect("w");
  ASSERT_TRUE(listener && link);
  ServerChannel server(**listener);
  Channel client(**link);

  ASSERT_TRUE(client.send(Heartbeat{}, 5));
  auto r = server.recv(k_wait);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("HEARTBEAT before HELLO"), std::string::npos) << r.error().message;
  EXPECT_EQ(server.n_bad_messages(), 1u);
  const Frame reply = must_recv(**link);
  EXPECT_EQ(reply.request_id(), 5u);
  EXPECT_EQ(as_error(reply).code, WireError::unexpected);

  // After HELLO the same message is fine.
  ASSERT_TRUE(client.send(coordinator_hello(), 6));
  auto hello = server.recv(k_wait);
  ASSERT_TRUE(hello && hello->has_value());
  EXPECT_TRUE(std::holds_alternative<Hello>((*hello)->message));
  EXPECT_TRUE(server.said_hello((*hello)->peer));
  ASSERT_TRUE(client.send(Heartbeat{}, 7));
  auto hb = server.recv(k_wait);
  ASSERT_TRUE(hb && hb->has_value());
  EXPECT_EQ((*hb)->request_id, 7u);
  server.forget((*hb)->peer);
  EXPECT_FALSE(server.said_hello((*hb)->peer));
}

TEST(Channel, BadPayloadIsCountedAndAnswered) {
  auto net = make_inproc_network();
  auto listener = net->listen("w");
  auto link = net->connect("w");
  ASSERT_TRUE(listener && link);
  ServerChannel server(**listener);
  Channel client(**link);
  ASSERT_TRUE(client.send(coordinator_hello(), 1));
  ASSERT_TRUE(server.recv(k_wait));

  // NaN in the hidden states.
  Writer w;
  w.u32(1);
  w.i32(0);
  w.i32(0);
  w.u8(0);
  w.u32(1);
  w.u8(0);
  w.u32(4);
  w.u32(0x7FC00000);
  ASSERT_TRUE((*link)->send_bytes(frame_bytes(MessageType::activation_batch, w.buffer(), 99)));
  auto r = server.recv(k_wait);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("hidden[0]: not finite"), std::string::npos) << r.error().message;
  EXPECT_EQ(server.n_bad_messages(), 1u);
  const ErrorMessage em = as_error(must_recv(**link));
  EXPECT_EQ(em.code, WireError::malformed);
  EXPECT_EQ(em.in_reply_to, static_cast<uint16_t>(MessageType::activation_batch));
  EXPECT_NE(em.message.find("not finite"), std::string::npos);

  // The server keeps serving.
  ASSERT_TRUE(client.send(ReleaseSequence{3}, 100));
  auto ok = server.recv(k_wait);
  ASSERT_TRUE(ok && ok->has_value());
  EXPECT_EQ(std::get<ReleaseSequence>((*ok)->message).seq_id, 3);
}

TEST(Channel, HandshakeAndVersionMismatch) {
  auto net = make_inproc_network();
  auto listener = net->listen("w");
  ASSERT_TRUE(listener);
  std::thread worker([&] {
    ServerChannel server(**listener);
    for (int served = 0; served < 2;) {
      auto r = server.recv(k_wait);
      if (!r) continue;  // the bad HELLO below: counted and answered by the channel
      if (!r->has_value()) break;
      Hello mine = testing::sample_hello();
      (void)server.send((*r)->peer, mine, (*r)->request_id);
      ++served;
    }
  });
  {
    auto link = net->connect("w");
    ASSERT_TRUE(link);
    Channel client(**link);
    auto peer = client.handshake(coordinator_hello(), Role::worker, k_wait);
    ASSERT_TRUE(peer) << peer.error().message;
    EXPECT_EQ(peer->name, "phone-a");
    EXPECT_TRUE(client.peer_said_hello());
  }
  {
    // A HELLO from "version 3" (frame header still v1): the worker answers version_mismatch.
    auto link = net->connect("w");
    ASSERT_TRUE(link);
    Bytes payload = to_bytes(encode(coordinator_hello(), 0).payload());
    payload[0] = 3;
    ASSERT_TRUE((*link)->send_bytes(frame_bytes(MessageType::hello, payload, 0)));
    const ErrorMessage em = as_error(must_recv(**link));
    EXPECT_EQ(em.code, WireError::version_mismatch);
    EXPECT_NE(em.message.find("version 3"), std::string::npos) << em.message;
    EXPECT_NE(em.message.find("version 1"), std::string::npos) << em.message;
    // A handshake that gets an ERROR answer returns it as the Error; a role mismatch is refused.
    Channel client(**link);
    auto peer = client.handshake(coordinator_hello(), Role::coordinator, k_wait);
    ASSERT_FALSE(peer);
    EXPECT_NE(peer.error().message.find("expected a coordinator"), std::string::npos) << peer.error().message;
  }
  worker.join();
}

TEST(Channel, HandshakeTimesOut) {
  auto [a, b] = make_inproc_pair();
  Channel client(*a);
  auto r = client.handshake(coordinator_hello(), Role::worker, Millis(20));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("no HELLO"), std::string::npos);
}

TEST(Channel, HandshakeEndsWhenAskedToStop) {
  auto [a, b] = make_inproc_pair();
  Channel client(*a);
  int asked = 0;
  // A peer that never answers, a 20 s timeout, and a stop asked for at the third check.
  auto r = client.handshake(coordinator_hello(), Role::worker, Millis(20000), [&] { return ++asked >= 3; });
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("interrupted"), std::string::npos) << r.error().message;
  EXPECT_EQ(asked, 3);
}

TEST(Channel, ErrorFromPeerBeforeHelloBecomesHandshakeError) {
  auto [a, b] = make_inproc_pair();
  Channel client(*a);
  ASSERT_TRUE(b->send(encode(make_error_message(WireError::unauthorized, "bad token", 0x0101), 0)));
  auto r = client.handshake(coordinator_hello(), Role::worker, k_wait);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("peer error (unauthorized): bad token"), std::string::npos)
      << r.error().message;
}

// ---------------------------------------------------------------------------------------------- ZeroMQ

class Zmq : public ::testing::Test {
 protected:
  void SetUp() override { start(TransportOptions{}); }

  void start(TransportOptions options) {
    net_ = make_zmq_network(options);
    auto l = net_->listen("tcp://127.0.0.1:*");
    ASSERT_TRUE(l) << l.error().message;
    listener_ = std::move(*l);
    auto c = net_->connect(listener_->endpoint());
    ASSERT_TRUE(c) << c.error().message;
    link_ = std::move(*c);
  }

  // A plain DEALER socket, outside our transport, connected to the listener.
  zmq::socket_t raw_socket() {
    zmq::socket_t s(raw_ctx_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(listener_->endpoint());
    return s;
  }

  static std::optional<Bytes> raw_recv(zmq::socket_t& s) {
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, k_wait) <= 0) return std::nullopt;
    zmq::message_t m;
    if (!s.recv(m, zmq::recv_flags::dontwait)) return std::nullopt;
    const auto* p = static_cast<const uint8_t*>(m.data());
    return Bytes(p, p + m.size());
  }

  zmq::context_t raw_ctx_;
  std::unique_ptr<Network> net_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<Link> link_;
};

TEST_F(Zmq, ListenerResolvesItsPort) {
  const std::string ep = listener_->endpoint();
  EXPECT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
  EXPECT_EQ(ep.find('*'), std::string::npos) << ep;
  EXPECT_EQ(link_->endpoint(), ep);
  auto busy = net_->listen(ep);  // same port again
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, ErrorCode::io);
  EXPECT_FALSE(net_->connect("no-such-transport://x"));
}

TEST_F(Zmq, HelloAndActivationBatchRoundTrip) {
  std::atomic<uint64_t> worker_bad{0};
  std::thread worker([&] {
    ServerChannel server(*listener_);
    for (int served = 0; served < 2;) {
      auto r = server.recv(k_wait);
      if (!r) continue;
      if (!r->has_value()) break;
      IncomingMessage& in = **r;
      if (std::holds_alternative<Hello>(in.message)) {
        (void)server.send(in.peer, testing::sample_hello(), in.request_id);
      } else if (auto* batch = std::get_if<ActivationBatch>(&in.message)) {
        Result out;
        out.kind = ResultKind::hidden;
        out.tokens = batch->tokens;
        out.width = batch->n_embd;
        out.dtype = WireDType::f32;
        out.values = batch->hidden;
        (void)server.send(in.peer, out, in.request_id);
      }
      ++served;
    }
    worker_bad = server.n_bad_messages();
  });

  Channel client(*link_);
  auto peer = client.handshake(coordinator_hello(), Role::worker, k_wait);
  ASSERT_TRUE(peer) << peer.error().message;
  EXPECT_EQ(*peer, testing::sample_hello());

  // A batch big enough to span many TCP segments: 64 tokens x 2048, as F16.
  ActivationBatch batch;
  batch.n_embd = 2048;
  batch.dtype = WireDType::f16;
  for (int t = 0; t < 64; ++t) batch.tokens.push_back({t % 3, t, t == 63});
  batch.hidden.resize(64 * 2048);
  for (size_t i = 0; i < batch.hidden.size(); ++i)
    batch.hidden[i] = static_cast<float>(static_cast<int>(i % 2001) - 1000) / 8;
  ASSERT_TRUE(client.send(batch, 1234));
  auto reply = client.recv(k_wait);
  ASSERT_TRUE(reply && reply->has_value()) << (reply ? "timeout" : reply.error().message);
  EXPECT_EQ((*reply)->request_id, 1234u);
  const auto* result = std::get_if<Result>(&(*reply)->message);
  ASSERT_NE(result, nullptr);
  EXPECT_EQ(result->tokens, batch.tokens);
  EXPECT_EQ(result->values, batch.hidden);  // exact: the values are representable in half
  worker.join();
  EXPECT_EQ(worker_bad, 0u);
  EXPECT_EQ(listener_->stats().n_frames_in, 2u);
  EXPECT_EQ(link_->stats().n_frames_in, 2u);
}

TEST_F(Zmq, ReceiveTimeoutIsAValue) {
  auto r = listener_->recv(Millis(50));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->has_value());
  auto r2 = link_->recv(Millis(50));
  ASSERT_TRUE(r2);
  EXPECT_FALSE(r2->has_value());
}

TEST_F(Zmq, GarbageFromARawSocketIsAnsweredAndCounted) {
  zmq::socket_t raw = raw_socket();
  const std::string garbage = "GET / HTTP/1.1\r\nHost: worker\r\n\r\n";
  ASSERT_TRUE(raw.send(zmq::buffer(garbage), zmq::send_flags::none));
  auto r = listener_->recv(k_wait);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bad magic"), std::string::npos) << r.error().message;
  EXPECT_EQ(listener_->stats().n_bad_frames, 1u);
  auto reply = raw_recv(raw);
  ASSERT_TRUE(reply.has_value());
  auto env = decode(*reply, Limits{});
  ASSERT_TRUE(env) << env.error().message;
  ASSERT_TRUE(std::holds_alternative<ErrorMessage>(env->message));
  EXPECT_EQ(std::get<ErrorMessage>(env->message).code, WireError::malformed);

  // A multipart message is bad too.
  ASSERT_TRUE(raw.send(zmq::buffer(std::string("a")), zmq::send_flags::sndmore));
  ASSERT_TRUE(raw.send(zmq::buffer(std::string("b")), zmq::send_flags::none));
  auto mp = listener_->recv(k_wait);
  ASSERT_FALSE(mp);
  EXPECT_NE(mp.error().message.find("multipart"), std::string::npos);
  EXPECT_EQ(listener_->stats().n_bad_frames, 2u);

  // A valid frame before HELLO, through the message layer: refused as unexpected.
  ServerChannel server(*listener_);
  const Frame hb = encode(Heartbeat{}, 31);
  ASSERT_TRUE(raw.send(zmq::buffer(hb.bytes().data(), hb.size()), zmq::send_flags::none));
  EXPECT_FALSE(server.recv(k_wait));
  auto unexpected = raw_recv(raw);
  ASSERT_TRUE(unexpected.has_value());
  auto uenv = decode(*unexpected, Limits{});
  ASSERT_TRUE(uenv);
  EXPECT_EQ(uenv->request_id, 31u);
  EXPECT_EQ(std::get<ErrorMessage>(uenv->message).code, WireError::unexpected);
  EXPECT_EQ(server.n_bad_messages(), 3u);

  // The listener still serves the real link.
  ASSERT_TRUE(link_->send(encode(coordinator_hello(), 1)));
  auto ok = server.recv(k_wait);
  ASSERT_TRUE(ok && ok->has_value()) << (ok ? "timeout" : ok.error().message);
  EXPECT_TRUE(std::holds_alternative<Hello>((*ok)->message));
}

TEST_F(Zmq, GarbageToALinkIsAnswered) {
  // The accepting side sends garbage to a connected Link: the Link counts it and answers.
  ASSERT_TRUE(link_->send(encode(coordinator_hello(), 1)));
  Incoming in = must_recv(*listener_);
  ASSERT_TRUE(listener_->send_bytes(in.peer, Bytes{1, 2, 3}));
  auto r = link_->recv(k_wait);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("truncated header"), std::string::npos) << r.error().message;
  EXPECT_EQ(link_->stats().n_bad_frames, 1u);
  Incoming answer = must_recv(*listener_);
  EXPECT_EQ(as_error(answer.frame).code, WireError::malformed);
}

TEST(ZmqLimits, OversizeMessageIsDroppedByMaxMsgSize) {
  TransportOptions options;
  options.limits.max_frame_bytes = 64 << 10;
  auto net = make_zmq_network(options);
  auto listener = net->listen("tcp://127.0.0.1:*");
  ASSERT_TRUE(listener) << listener.error().message;
  auto link = net->connect((*listener)->endpoint());
  ASSERT_TRUE(link);

  zmq::context_t ctx;
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect((*listener)->endpoint());
  // A well-formed header announcing 1 MiB, with the 1 MiB: more than the 64 KiB limit.
  const Bytes big = frame_bytes(MessageType::tensor_chunk, Bytes(1 << 20, 0), 1);
  ASSERT_TRUE(raw.send(zmq::buffer(big), zmq::send_flags::none));

  // The real link's frame arrives; the oversized one never does.
  ASSERT_TRUE((*link)->send(encode(Heartbeat{}, 2)));
  Incoming in = must_recv(**listener);
  EXPECT_EQ(in.frame.request_id(), 2u);
  auto none = (*listener)->recv(k_short);
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ((*listener)->stats().n_bad_frames, 0u);
  EXPECT_LT((*listener)->stats().bytes_in, 1000u);
}

TEST(ZmqLimits, SendToUnknownPeerIsNotFound) {
  auto net = make_zmq_network();
  auto listener = net->listen("tcp://127.0.0.1:*");
  ASSERT_TRUE(listener);
  auto r = (*listener)->send(PeerId{"nobody"}, encode(Heartbeat{}, 0));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::not_found);
}

TEST(ZmqLimits, CurveWithoutKeysIsRefused) {
  // CURVE itself is tested in security_test.cpp; asking for it without keys is an error, not a
  // silently plain socket.
  TransportOptions options;
  options.security.mode = SocketSecurity::Mode::curve;
  auto net = make_zmq_network(options);
  auto l = net->listen("tcp://127.0.0.1:*");
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(l.error().message.find("CURVE public key"), std::string::npos) << l.error().message;
  auto c = net->connect("tcp://127.0.0.1:1");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::invalid_argument);
}

// -------------------------------------------------------------------------------------------- wait_any

// Three listeners and one link connected to each; every listener has learned its link's PeerId (a
// listener can only address a peer that has sent something).
struct Fan {
  std::unique_ptr<Network> net;
  std::vector<std::unique_ptr<Listener>> listeners;
  std::vector<std::unique_ptr<Link>> links;
  std::vector<PeerId> peers;

  std::vector<Link*> link_ptrs() const {
    std::vector<Link*> out;
    for (const auto& l : links) out.push_back(l.get());
    return out;
  }
  // Listener i sends a HEARTBEAT with request id `rid` to its link.
  void send_to(size_t i, uint64_t rid) {
    ASSERT_TRUE(listeners[i]->send(peers[i], encode(Heartbeat{}, rid)));
  }
};

// `endpoint(i)` names the i-th listener ("tcp://127.0.0.1:*" or an in-process name).
Fan make_fan(std::unique_ptr<Network> net, const std::function<std::string(int)>& endpoint) {
  Fan f;
  f.net = std::move(net);
  for (int i = 0; i < 3; ++i) {
    auto l = f.net->listen(endpoint(i));
    EXPECT_TRUE(l) << l.error().message;
    if (!l) return f;
    auto c = f.net->connect((*l)->endpoint());
    EXPECT_TRUE(c) << c.error().message;
    if (!c) return f;
    EXPECT_TRUE((*c)->send(encode(Heartbeat{}, 100 + i)));
    f.peers.push_back(must_recv(**l).peer);
    f.listeners.push_back(std::move(*l));
    f.links.push_back(std::move(*c));
  }
  return f;
}

Fan zmq_fan() {
  return make_fan(make_zmq_network(), [](int) { return std::string("tcp://127.0.0.1:*"); });
}
Fan inproc_fan() {
  return make_fan(make_inproc_network(), [](int i) { return "inproc://stage-" + std::to_string(i); });
}

std::optional<size_t> must_wait_any(const std::vector<Link*>& links, Millis timeout) {
  auto r = wait_any(links, timeout);
  EXPECT_TRUE(r) << r.error().message;
  return r ? *r : std::nullopt;
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

// The behaviour every implementation shares.
void check_wait_any(Fan& f) {
  ASSERT_EQ(f.links.size(), 3u);
  const std::vector<Link*> links = f.link_ptrs();
  // Nothing queued: a timeout is a value, after about the timeout.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(must_wait_any(links, Millis(100)), std::nullopt);
  EXPECT_GE(elapsed_ms(t0), 90.0);
  EXPECT_LT(elapsed_ms(t0), 3000.0);
  EXPECT_EQ(must_wait_any(links, Millis(0)), std::nullopt);
  EXPECT_EQ(must_wait_any(links, Millis(-5)), std::nullopt);  // negative = just check

  // Only the 2nd link gets a frame.
  f.send_to(1, 7);
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(1));
  // Not consumed: asking again gives the same answer, and recv() then returns the frame at once.
  EXPECT_EQ(must_wait_any(links, Millis(0)), std::optional<size_t>(1));
  auto r = links[1]->wait_readable(Millis(0));
  ASSERT_TRUE(r);
  EXPECT_TRUE(*r);
  auto got = links[1]->recv(Millis(0));
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->request_id(), 7u);
  EXPECT_EQ(must_wait_any(links, Millis(20)), std::nullopt);
  auto none = links[1]->wait_readable(Millis(0));
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);

  // Two ready: the lowest index first; the other once the first is drained.
  f.send_to(2, 8);
  f.send_to(0, 9);
  ASSERT_TRUE(f.links[2]->wait_readable(k_wait).value());
  ASSERT_TRUE(f.links[0]->wait_readable(k_wait).value());
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(0));
  EXPECT_EQ(must_recv(*links[0]).request_id(), 9u);
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(2));
  EXPECT_EQ(must_recv(*links[2]).request_id(), 8u);

  // A frame that arrives while wait_any is blocked wakes it well before its timeout.
  t0 = std::chrono::steady_clock::now();
  std::thread sender([&] {
    std::this_thread::sleep_for(Millis(50));
    f.send_to(2, 10);
  });
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(2));
  sender.join();
  EXPECT_LT(elapsed_ms(t0), 2500.0);
  EXPECT_EQ(must_recv(*links[2]).request_id(), 10u);

  // A bad frame makes its link ready too; recv() reports it.
  ASSERT_TRUE(f.listeners[0]->send_bytes(f.peers[0], Bytes{1, 2, 3}));
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(0));
  EXPECT_FALSE(links[0]->recv(Millis(0)));
}

TEST(WaitAny, ZeroMq) {
  Fan f = zmq_fan();
  check_wait_any(f);
}

TEST(WaitAny, InProc) {
  Fan f = inproc_fan();
  check_wait_any(f);
}

TEST(WaitAny, InProcPairs) {
  auto [a, b] = make_inproc_pair();
  auto [c, d] = make_inproc_pair();
  const std::vector<Link*> links = {a.get(), c.get()};
  EXPECT_EQ(must_wait_any(links, Millis(10)), std::nullopt);
  ASSERT_TRUE(d->send(encode(Heartbeat{}, 1)));
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(1));
  // The same link twice is harmless.
  const std::vector<Link*> twice = {c.get(), c.get()};
  EXPECT_EQ(must_wait_any(twice, k_wait), std::optional<size_t>(0));
  EXPECT_EQ(must_recv(*c).request_id(), 1u);
  EXPECT_EQ(must_wait_any(twice, Millis(10)), std::nullopt);
}

TEST(WaitAny, MixedZeroMqAndInProc) {
  Fan z = zmq_fan();
  auto [a, b] = make_inproc_pair();
  const std::vector<Link*> links = {z.links[0].get(), a.get(), z.links[1].get()};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(must_wait_any(links, Millis(50)), std::nullopt);
  EXPECT_GE(elapsed_ms(t0), 45.0);
  ASSERT_TRUE(b->send(encode(Heartbeat{}, 3)));
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(1));
  EXPECT_EQ(must_recv(*a).request_id(), 3u);
  z.send_to(1, 4);
  EXPECT_EQ(must_wait_any(links, k_wait), std::optional<size_t>(2));
  EXPECT_EQ(must_recv(*z.links[1]).request_id(), 4u);
}

TEST(WaitAny, NoLinksWaitsForTheTimeout) {
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(must_wait_any({}, Millis(30)), std::nullopt);
  EXPECT_GE(elapsed_ms(t0), 25.0);
}

// ---------------------------------------------------------------------------------------------- chains

// A two-stage pipeline as the runtime wires it: the coordinator has a Link to each stage; stage U has
// next_endpoint = W's Listener, so it connects a forwarding Link there; W is the last stage and
// answers the coordinator. W's Listener thus serves two peers, and must tell them apart and answer
// each by its PeerId.
void check_chain(Network& net, const std::string& ep_u, const std::string& ep_w) {
  auto listen_u = net.listen(ep_u);
  auto listen_w = net.listen(ep_w);
  ASSERT_TRUE(listen_u && listen_w);
  ServerChannel stage_u(**listen_u);
  ServerChannel stage_w(**listen_w);
  auto co_u_link = net.connect((*listen_u)->endpoint());
  auto co_w_link = net.connect((*listen_w)->endpoint());
  auto u_w_link = net.connect((*listen_w)->endpoint());  // U's forwarding link
  ASSERT_TRUE(co_u_link && co_w_link && u_w_link);
  Channel co_u(**co_u_link), co_w(**co_w_link), u_w(**u_w_link);

  auto must_serve = [](ServerChannel& s) {
    auto r = s.recv(k_wait);
    EXPECT_TRUE(r && r->has_value()) << (r ? "timeout" : r.error().message);
    return r && r->has_value() ? std::move(**r) : IncomingMessage{};
  };
  auto must_get = [](Channel& c) {
    auto r = c.recv(k_wait);
    EXPECT_TRUE(r && r->has_value()) << (r ? "timeout" : r.error().message);
    return r && r->has_value() ? std::move(**r) : Envelope{};
  };

  // HELLOs: the coordinator to both stages, U to W as a worker.
  Hello upstream = testing::sample_hello();
  upstream.name = "stage-u";
  ASSERT_TRUE(co_u.send(coordinator_hello(), 1));
  ASSERT_TRUE(co_w.send(coordinator_hello(), 2));
  ASSERT_TRUE(u_w.send(upstream, 3));
  const IncomingMessage u_hello = must_serve(stage_u);
  ASSERT_TRUE(stage_u.send(u_hello.peer, testing::sample_hello(), u_hello.request_id));
  PeerId coordinator_at_w, upstream_at_w;
  for (int i = 0; i < 2; ++i) {
    IncomingMessage in = must_serve(stage_w);
    const auto* h = std::get_if<Hello>(&in.message);
    ASSERT_NE(h, nullptr);
    (h->role == Role::coordinator ? coordinator_at_w : upstream_at_w) = in.peer;
    ASSERT_TRUE(stage_w.send(in.peer, testing::sample_hello(), in.request_id));
  }
  ASSERT_FALSE(coordinator_at_w.id.empty());
  ASSERT_FALSE(upstream_at_w.id.empty());
  EXPECT_NE(coordinator_at_w, upstream_at_w);
  EXPECT_EQ(must_get(co_u).request_id, 1u);
  EXPECT_EQ(must_get(co_w).request_id, 2u);
  EXPECT_EQ(must_get(u_w).request_id, 3u);

  // The coordinator sends SAMPLING then a batch to U; U forwards both, in order, to W.
  const Sampling sampling = testing::sample_sampling();
  ActivationBatch batch = testing::sample_batch(WireDType::f32);
  ASSERT_TRUE(co_u.send(sampling, 41));
  ASSERT_TRUE(co_u.send(batch, 42));
  for (int i = 0; i < 2; ++i) {
    IncomingMessage in = must_serve(stage_u);
    ASSERT_TRUE(u_w.send(in.message, in.request_id));
  }
  IncomingMessage s_in = must_serve(stage_w);
  EXPECT_EQ(s_in.peer, upstream_at_w);
  EXPECT_EQ(s_in.request_id, 41u);
  EXPECT_TRUE(s_in.message == Message(sampling));
  IncomingMessage b_in = must_serve(stage_w);
  EXPECT_EQ(b_in.peer, upstream_at_w);
  EXPECT_EQ(b_in.request_id, 42u);
  EXPECT_TRUE(b_in.message == Message(batch));

  // W, the last stage, answers the coordinator (not the upstream peer that sent the batch) with a
  // RESULT, and an ERROR for another request; it can still address U separately.
  Result out;
  out.kind = ResultKind::token_ids;
  out.tokens = {batch.tokens.back()};
  out.token_ids = {17};
  ASSERT_TRUE(stage_w.send(coordinator_at_w, out, 42));
  ASSERT_TRUE(
      stage_w.send(coordinator_at_w, make_error_message(WireError::not_found, "no sequence 9", 0x0301), 43));
  ASSERT_TRUE(stage_w.send(upstream_at_w, Heartbeat{5, 6}, 44));

  const std::vector<Link*> co_links = {&co_u.link(), &co_w.link()};
  EXPECT_EQ(must_wait_any(co_links, k_wait), std::optional<size_t>(1));
  Envelope result = must_get(co_w);
  EXPECT_EQ(result.request_id, 42u);
  EXPECT_TRUE(result.message == Message(out));
  Envelope error = must_get(co_w);
  EXPECT_EQ(error.request_id, 43u);
  ASSERT_TRUE(std::holds_alternative<ErrorMessage>(error.message));
  EXPECT_EQ(must_get(u_w).request_id, 44u);
  // Nothing went astray.
  EXPECT_EQ(must_wait_any(co_links, k_short), std::nullopt);
  EXPECT_EQ(u_w.link().wait_readable(Millis(0)).value(), false);
  EXPECT_EQ(stage_u.n_bad_messages() + stage_w.n_bad_messages(), 0u);
}

TEST(Chain, ZeroMqListenerServesCoordinatorAndUpstreamWorker) {
  auto net = make_zmq_network();
  check_chain(*net, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
}

TEST(Chain, InProcListenerServesCoordinatorAndUpstreamWorker) {
  auto net = make_inproc_network();
  check_chain(*net, "inproc://u", "inproc://w");
}

}  // namespace
}  // namespace ll::net

// ------------------------------------------------------------------------------------------- peer_lost

namespace ll::net {
namespace {

bool becomes_lost(Link& link, Millis within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (link.peer_lost()) return true;
    std::this_thread::sleep_for(Millis(20));
  }
  return link.peer_lost();
}

// A round trip, so the connection is up (peer_lost only reports connections that were).
void round_trip(Link& link, Listener& listener) {
  ASSERT_TRUE(link.send(encode(Heartbeat{1, 2}, 7)));
  Incoming in = must_recv(listener);
  ASSERT_TRUE(listener.send(in.peer, encode(Heartbeat{1, 2}, 7)));
  must_recv(link);
}

TEST(ZmqPeerLost, AClosedListenerIsReportedAtOnce) {
  auto net = make_zmq_network();
  auto listener = net->listen("tcp://127.0.0.1:*");
  ASSERT_TRUE(listener) << listener.error().message;
  auto link = net->connect((*listener)->endpoint());
  ASSERT_TRUE(link) << link.error().message;
  EXPECT_FALSE((*link)->peer_lost()) << "not connected yet is not lost";
  round_trip(**link, **listener);
  EXPECT_FALSE(becomes_lost(**link, Millis(300)));
  listener->reset();  // as a killed process's socket: the TCP connection closes
  EXPECT_TRUE(becomes_lost(**link, Millis(2000)));
}

// A TCP relay between a Link and a Listener that can stop relaying while keeping both connections
// open: a cut link (or a frozen host) that no FIN or RST reveals; only the heartbeats can.
class FreezableRelay {
 public:
  explicit FreezableRelay(int target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~FreezableRelay() {
    stop_ = true;
    thread_.join();
    for (int fd : {listen_fd_, client_fd_, server_fd_}) {
      if (fd >= 0) ::close(fd);
    }
  }
  int port() const { return port_; }
  void freeze() { frozen_ = true; }

 private:
  void run() {
    pollfd lp{listen_fd_, POLLIN, 0};
    while (!stop_ && ::poll(&lp, 1, 50) <= 0) {
    }
    if (stop_) return;
    client_fd_ = ::accept(listen_fd_, nullptr, nullptr);
    server_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (::connect(server_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    char buf[65536];
    while (!stop_) {
      if (frozen_) {
        std::this_thread::sleep_for(Millis(20));
        continue;
      }
      pollfd fds[2] = {{client_fd_, POLLIN, 0}, {server_fd_, POLLIN, 0}};
      if (::poll(fds, 2, 20) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP)) == 0) continue;
        const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n <= 0) return;
        const int to = i == 0 ? server_fd_ : client_fd_;
        for (ssize_t off = 0; off < n;) {
          const ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
          if (w <= 0) return;
          off += w;
        }
      }
    }
  }
  int target_port_;
  int listen_fd_ = -1, client_fd_ = -1, server_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false}, frozen_{false};
  std::thread thread_;
};

TEST(ZmqPeerLost, ASilentPeerIsReportedAfterTheHeartbeatTimeout) {
  TransportOptions o;
  o.heartbeat_ivl_ms = 100;
  o.heartbeat_timeout_ms = 500;
  auto net = make_zmq_network(o);
  auto listener = net->listen("tcp://127.0.0.1:*");
  ASSERT_TRUE(listener) << listener.error().message;
  const std::string ep = (*listener)->endpoint();
  FreezableRelay relay(std::stoi(ep.substr(ep.rfind(':') + 1)));
  auto link = net->connect("tcp://127.0.0.1:" + std::to_string(relay.port()));
  ASSERT_TRUE(link) << link.error().message;
  round_trip(**link, **listener);
  // Heartbeats flow through the relay: idle is not lost.
  EXPECT_FALSE(becomes_lost(**link, Millis(1200)));
  relay.freeze();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(becomes_lost(**link, Millis(3000)));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(ms, 300.0) << "reported by the heartbeat timeout, not by a closed connection";
}

}  // namespace
}  // namespace ll::net
