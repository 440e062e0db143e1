// CURVE over the ZeroMQ transport: keys and key files, and what a Listener lets through. A client
// without the right keys must get no frame to the Listener (its counters stay at zero) and no answer.
#include "net/security.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "net/channel.h"
#include "net/transport.h"

namespace ll::net {
namespace {

constexpr Millis k_wait{5000};   // for something that must arrive
constexpr Millis k_quiet{700};   // for something that must not

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

CurveKeyPair keys() {
  auto k = generate_curve_keypair();
  EXPECT_TRUE(k.has_value()) << k.error().message;
  return k ? *k : CurveKeyPair{};
}

std::string temp_base(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/ll_security_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

Frame heartbeat(uint64_t seq) { return encode(Heartbeat{123, seq}, seq); }

// A CURVE Listener that accepts `clients`, on a free loopback port.
struct Server {
  CurveKeyPair keys;
  std::shared_ptr<AuthorizedKeys> allowed;
  std::unique_ptr<Network> net;
  std::unique_ptr<Listener> listener;
};

Server curve_server(std::vector<std::string> clients) {
  Server s;
  s.keys = keys();
  s.allowed = std::make_shared<AuthorizedKeys>(std::move(clients));
  TransportOptions o;
  o.security.mode = SocketSecurity::Mode::curve;
  o.security.curve_public_key = s.keys.public_key;
  o.security.curve_secret_key = s.keys.secret_key;
  o.security.authorized_clients = s.allowed;
  s.net = make_zmq_network(o);
  auto l = s.net->listen("tcp://127.0.0.1:*");
  EXPECT_TRUE(l.has_value()) << l.error().message;
  if (l) s.listener = std::move(*l);
  return s;
}

std::unique_ptr<Network> curve_client(const CurveKeyPair& mine) {
  TransportOptions o;
  o.security.mode = SocketSecurity::Mode::curve;
  o.security.curve_public_key = mine.public_key;
  o.security.curve_secret_key = mine.secret_key;
  return make_zmq_network(o);
}

// Polls link.security_failure() until it reports, within `timeout`.
std::optional<std::string> wait_failure(Link& link, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto why = link.security_failure()) return why;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

// The attacker sent a frame; the Listener must not see it, nor anything else, and the attacker gets
// no answer.
void expect_nothing_got_through(Server& s, Link& attacker) {
  auto in = s.listener->recv(k_quiet);
  ASSERT_TRUE(in.has_value()) << in.error().message;
  EXPECT_FALSE(in->has_value()) << "a frame from an unauthenticated peer reached the listener";
  const LinkStats st = s.listener->stats();
  EXPECT_EQ(st.n_frames_in, 0u);
  EXPECT_EQ(st.n_bad_frames, 0u);
  EXPECT_EQ(st.bytes_in, 0u);
  auto reply = attacker.recv(Millis(100));
  ASSERT_TRUE(reply.has_value());
  EXPECT_FALSE(reply->has_value());
}

TEST(CurveKeys, GeneratedPairsAreValidAndDistinct) {
  ASSERT_TRUE(check_curve_available().has_value());
  const CurveKeyPair a = keys(), b = keys();
  EXPECT_EQ(a.public_key.size(), 40u);
  EXPECT_TRUE(check_curve_key(a.public_key, "k").has_value());
  EXPECT_TRUE(check_curve_key(a.secret_key, "k").has_value());
  EXPECT_NE(a.public_key, b.public_key);
  EXPECT_NE(a.secret_key, b.secret_key);
  auto derived = curve_public_key_of(a.secret_key);
  ASSERT_TRUE(derived.has_value());
  EXPECT_EQ(*derived, a.public_key);
}

TEST(CurveKeys, MalformedKeysAreRefusedByName) {
  EXPECT_CONTAINS(check_curve_key("", "--allow").error().message, "--allow: a CURVE key is 40 Z85 characters, not 0");
  EXPECT_CONTAINS(check_curve_key(std::string(39, 'a'), "k").error().message, "not 39");
  EXPECT_CONTAINS(check_curve_key(std::string(41, 'a'), "k").error().message, "not 41");
  std::string bad = keys().public_key;
  bad[7] = '"';  // not in the Z85 alphabet
  EXPECT_CONTAINS(check_curve_key(bad, "public_key").error().message, "not Z85");
  bad[7] = ' ';
  EXPECT_FALSE(check_curve_key(bad, "k").has_value());
  bad[7] = '\0';
  EXPECT_FALSE(check_curve_key(bad, "k").has_value());
}

TEST(CurveKeyFiles, WriteThenReadRoundTripsWithPrivateMode) {
  const std::string base = temp_base("node");
  std::filesystem::remove(base + ".key");
  std::filesystem::remove(base + ".pub");
  const CurveKeyPair k = keys();
  ASSERT_TRUE(write_key_files(base, k).has_value());
  struct stat st {};
  ASSERT_EQ(::stat((base + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = read_key_file(base + ".key");
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->public_key, k.public_key);
  EXPECT_EQ(back->secret_key, k.secret_key);
  // The .pub file is an authorized-keys file with one key.
  auto pub = read_authorized_keys(base + ".pub");
  ASSERT_TRUE(pub.has_value()) << pub.error().message;
  EXPECT_EQ(*pub, std::vector<std::string>{k.public_key});
  // Never overwrites a key.
  EXPECT_CONTAINS(write_key_files(base, keys()).error().message, "already exists");
  EXPECT_EQ(read_key_file(base + ".key")->secret_key, k.secret_key);
  // A secret key others may read is refused, saying how to fix it.
  ::chmod((base + ".key").c_str(), 0644);
  EXPECT_CONTAINS(read_key_file(base + ".key").error().message, "chmod 600");
  // A .pub file is not a key pair.
  ::chmod((base + ".pub").c_str(), 0600);
  EXPECT_CONTAINS(read_key_file(base + ".pub").error().message, "this is a .pub file");
  std::filesystem::remove(base + ".key");
  std::filesystem::remove(base + ".pub");
}

TEST(CurveKeyFiles, ParseErrorsNameTheLine) {
  const CurveKeyPair a = keys(), b = keys();
  EXPECT_TRUE(parse_key_file(format_key_file(a), "a.key").has_value());
  // The public key is optional (derived), but must match when given.
  auto only_secret = parse_key_file("secret-key = " + a.secret_key + "\n", "a.key");
  ASSERT_TRUE(only_secret.has_value());
  EXPECT_EQ(only_secret->public_key, a.public_key);
  EXPECT_CONTAINS(parse_key_file("public-key = " + b.public_key + "\nsecret-key = " + a.secret_key + "\n", "a.key")
                      .error()
                      .message,
                  "a.key: public-key does not belong to secret-key");
  EXPECT_CONTAINS(parse_key_file("public-key = " + a.public_key + "\n", "a.pub").error().message, "no secret-key");
  EXPECT_CONTAINS(parse_key_file("# c\n\nsecret-key = short\n", "x.key").error().message, "x.key:3:");
  EXPECT_CONTAINS(parse_key_file("secret = " + a.secret_key + "\n", "x.key").error().message,
                  "x.key:1: unknown field \"secret\"");
  EXPECT_CONTAINS(parse_key_file("garbage\n", "x.key").error().message, "x.key:1:");
  EXPECT_CONTAINS(
      parse_key_file("secret-key = " + a.secret_key + "\nsecret-key = " + a.secret_key + "\n", "x.key").error().message,
      "given twice");

  auto listed = parse_authorized_keys("# origin keys\n" + a.public_key + " laptop\n\n  " + b.public_key + "\n", "auth");
  ASSERT_TRUE(listed.has_value()) << listed.error().message;
  EXPECT_EQ(*listed, (std::vector<std::string>{a.public_key, b.public_key}));
  EXPECT_CONTAINS(parse_authorized_keys(a.public_key + "\nnot-a-key\n", "auth").error().message, "auth:2:");
  EXPECT_CONTAINS(parse_authorized_keys("# nothing\n", "auth").error().message, "holds no public key");
  // '#' is a Z85 character but cannot begin a key (its first 4 bytes would exceed 2^32), so a line
  // starting with it is always a comment.
  EXPECT_FALSE(check_curve_key("#" + a.public_key.substr(1), "k").has_value());
}

TEST(CurveTransport, AuthorizedClientTalksBothWays) {
  const CurveKeyPair client = keys();
  Server s = curve_server({client.public_key});
  ASSERT_TRUE(s.listener);
  auto net = curve_client(client);
  auto link = net->connect(s.listener->endpoint(), s.keys.public_key);
  ASSERT_TRUE(link.has_value()) << link.error().message;
  ASSERT_TRUE((*link)->send(heartbeat(7)).has_value());
  auto in = s.listener->recv(k_wait);
  ASSERT_TRUE(in.has_value() && in->has_value());
  EXPECT_EQ((*in)->frame.request_id(), 7u);
  EXPECT_EQ((*in)->trust, PeerTrust::authorized);  // a fixed key, stamped on the frame by the ZAP user id
  ASSERT_TRUE(s.listener->send((*in)->peer, heartbeat(8)).has_value());
  auto back = (*link)->recv(k_wait);
  ASSERT_TRUE(back.has_value() && back->has_value());
  EXPECT_EQ((*back)->request_id(), 8u);
  EXPECT_FALSE((*link)->security_failure().has_value());
}

TEST(CurveTransport, PlainClientGetsNothingThrough) {
  Server s = curve_server({keys().public_key});
  ASSERT_TRUE(s.listener);
  auto plain = make_zmq_network();
  auto link = plain->connect(s.listener->endpoint());
  ASSERT_TRUE(link.has_value());
  // The sends queue, or (when libzmq has just dropped the failed connection and not yet made the
  // next) time out: either way nothing may arrive. Not even a bad frame is seen.
  auto sent_frame = (*link)->send(heartbeat(1));
  auto sent_bytes = (*link)->send_bytes({1, 2, 3});
  for (auto* sent : {&sent_frame, &sent_bytes}) {
    if (!*sent) {
      EXPECT_CONTAINS(sent->error().message, "timed out");
    }
  }
  expect_nothing_got_through(s, **link);
}

TEST(CurveTransport, UnlistedClientKeyIsRefused) {
  Server s = curve_server({keys().public_key});
  ASSERT_TRUE(s.listener);
  auto net = curve_client(keys());  // a valid key pair, but not one the server lists
  auto link = net->connect(s.listener->endpoint(), s.keys.public_key);
  ASSERT_TRUE(link.has_value());
  ASSERT_TRUE((*link)->send(heartbeat(1)).has_value());
  expect_nothing_got_through(s, **link);
  auto why = wait_failure(**link, k_wait);
  ASSERT_TRUE(why.has_value());
  EXPECT_CONTAINS(*why, "refused our public key");
}

TEST(CurveTransport, WrongServerKeyFailsTheHandshake) {
  const CurveKeyPair client = keys();
  Server s = curve_server({client.public_key});
  ASSERT_TRUE(s.listener);
  auto net = curve_client(client);
  // The client expects another server: an impostor at that address cannot complete the handshake.
  auto link = net->connect(s.listener->endpoint(), keys().public_key);
  ASSERT_TRUE(link.has_value());
  ASSERT_TRUE((*link)->send(heartbeat(1)).has_value());
  expect_nothing_got_through(s, **link);
  auto why = wait_failure(**link, k_wait);
  ASSERT_TRUE(why.has_value());
  EXPECT_CONTAINS(*why, "handshake failed");
}

TEST(CurveTransport, ChannelHandshakeFailsFastWithAClearError) {
  Server s = curve_server({keys().public_key});
  ASSERT_TRUE(s.listener);
  auto net = curve_client(keys());
  auto link = net->connect(s.listener->endpoint(), s.keys.public_key);
  ASSERT_TRUE(link.has_value());
  Channel ch(**link);
  Hello mine;
  mine.role = Role::coordinator;
  const auto t0 = std::chrono::steady_clock::now();
  auto h = ch.handshake(mine, Role::worker, Millis(20000));
  ASSERT_FALSE(h.has_value());
  EXPECT_CONTAINS(h.error().message, "could not authenticate");
  // Well before the 20 s timeout: a refused handshake is final.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(CurveTransport, DelegatedKeysAreAcceptedFromThenOn) {
  const CurveKeyPair upstream = keys();
  Server s = curve_server({keys().public_key});
  ASSERT_TRUE(s.listener);
  auto net = curve_client(upstream);
  {
    auto early = net->connect(s.listener->endpoint(), s.keys.public_key);
    ASSERT_TRUE(early.has_value());
    ASSERT_TRUE((*early)->send(heartbeat(1)).has_value());
    EXPECT_TRUE(wait_failure(**early, k_wait).has_value());
  }
  s.allowed->set_delegated({upstream.public_key});
  auto link = net->connect(s.listener->endpoint(), s.keys.public_key);
  ASSERT_TRUE(link.has_value());
  ASSERT_TRUE((*link)->send(heartbeat(2)).has_value());
  auto in = s.listener->recv(k_wait);
  ASSERT_TRUE(in.has_value() && in->has_value());
  EXPECT_EQ((*in)->frame.request_id(), 2u);
  EXPECT_EQ((*in)->trust, PeerTrust::delegated);
  // Replaced by the next segment's delegation: refused again.
  s.allowed->set_delegated({});
  auto late = net->connect(s.listener->endpoint(), s.keys.public_key);
  ASSERT_TRUE(late.has_value());
  ASSERT_TRUE((*late)->send(heartbeat(3)).has_value());
  EXPECT_TRUE(wait_failure(**late, k_wait).has_value());
  auto none = s.listener->recv(Millis(300));
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
}

TEST(CurveTransport, MisconfiguredSocketsAreErrors) {
  const CurveKeyPair k = keys();
  TransportOptions o;
  o.security.mode = SocketSecurity::Mode::curve;
  o.security.curve_public_key = k.public_key;
  o.security.curve_secret_key = k.secret_key;
  // A CURVE listener without an allow-list would accept anyone: refused.
  EXPECT_CONTAINS(make_zmq_network(o)->listen("tcp://127.0.0.1:*").error().message, "authorized_clients");
  // A CURVE link must know its server's key.
  EXPECT_CONTAINS(make_zmq_network(o)->connect("tcp://127.0.0.1:9").error().message, "server's CURVE public key");
  o.security.curve_secret_key = "short";
  EXPECT_CONTAINS(make_zmq_network(o)->connect("tcp://127.0.0.1:9", k.public_key).error().message,
                  "CURVE secret key");
}

TEST(CurveTransport, ListenersComeAndGoWithTheirOwnAllowLists) {
  // Two listeners in one process (one ZAP handler) keep separate allow-lists; the handler survives
  // the context being freed and made again.
  for (int round = 0; round < 2; ++round) {
    const CurveKeyPair a = keys(), b = keys();
    Server sa = curve_server({a.public_key});
    Server sb = curve_server({b.public_key});
    ASSERT_TRUE(sa.listener && sb.listener);
    auto na = curve_client(a);
    auto to_b = na->connect(sb.listener->endpoint(), sb.keys.public_key);  // a is not listed by b
    auto to_a = na->connect(sa.listener->endpoint(), sa.keys.public_key);
    ASSERT_TRUE(to_a.has_value() && to_b.has_value());
    ASSERT_TRUE((*to_b)->send(heartbeat(1)).has_value());
    ASSERT_TRUE((*to_a)->send(heartbeat(2)).has_value());
    auto in = sa.listener->recv(k_wait);
    ASSERT_TRUE(in.has_value() && in->has_value());
    EXPECT_TRUE(wait_failure(**to_b, k_wait).has_value());
    EXPECT_EQ(sb.listener->stats().n_frames_in, 0u);
  }
}

}  // namespace
}  // namespace ll::net
