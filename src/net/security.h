// CURVE keys and who may connect: what the ZeroMQ transport needs to authenticate and encrypt links.
//
// ZeroMQ's CURVE mechanism (CurveZMQ: Curve25519 key exchange, XSalsa20-Poly1305 boxes) encrypts
// every frame and authenticates both ends of a link:
//   - a client (Link) must know the server's (Listener's) long-term public key in advance; a server
//     with another key cannot complete the handshake, so the client never talks to an impostor;
//   - the server learns the client's long-term public key during the handshake and asks a ZAP handler
//     (RFC 27, net/zap.h, run inside the transport) whether to accept it; the handler checks it
//     against the Listener's AuthorizedKeys. A refused client gets no frame through: the connection
//     is closed before any message reaches the Listener.
// Keys are 32 bytes, written in Z85 (ZeroMQ's base-85 text encoding): 40 printable characters.
//
// Key files (written by `lingua keygen -o NAME`):
//   NAME.key  mode 0600, the key pair; refused when group or others may read it:
//               # lingua CURVE key pair: keep this file secret
//               public-key = <40 Z85 characters>
//               secret-key = <40 Z85 characters>
//   NAME.pub  the public key alone, on one line (optionally followed by blanks and a comment)
// Authorized-keys files (`lingua worker --authorized-keys FILE`): one public key per line, optionally
// followed by blanks and a comment; empty lines and lines starting with '#' are skipped. A .pub file
// is therefore an authorized-keys file with one key.
#pragma once

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ll::net {

inline constexpr size_t k_curve_key_chars = 40;  // Z85 of 32 bytes

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// ErrorCode::unsupported, saying so clearly, when the libzmq we run on was built without CURVE
// (zmq_has("curve") is false: no libsodium/tweetnacl).
Expected<void> check_curve_available();

// A fresh key pair (zmq_curve_keypair).
Expected<CurveKeyPair> generate_curve_keypair();

// The public key that belongs to a secret key (zmq_curve_public).
Expected<std::string> curve_public_key_of(std::string_view secret_key);

// Whether `key` is a 40-character Z85 key. `what` names it in the error ("--allow", "public_key").
Expected<void> check_curve_key(std::string_view key, std::string_view what);

// Parses the text of a .key file (see above); checks both keys and that they belong together.
Expected<CurveKeyPair> parse_key_file(std::string_view text, std::string_view source_name);
// Reads a .key file: must be a regular file that only its owner may read (mode 0600 or 0400).
Expected<CurveKeyPair> read_key_file(const std::string& path);
// Writes BASE.key (mode 0600) and BASE.pub; refuses to overwrite either.
Expected<void> write_key_files(const std::string& base, const CurveKeyPair& keys);
std::string format_key_file(const CurveKeyPair& keys);

// Parses an authorized-keys text (see above; also what a .pub file holds). Errors name the line.
Expected<std::vector<std::string>> parse_authorized_keys(std::string_view text, std::string_view source_name);
Expected<std::vector<std::string>> read_authorized_keys(const std::string& path);

// How a Listener's peer was admitted (Incoming::trust): plain links authenticate nobody; over CURVE a
// peer's key is one of the Listener's fixed keys (a coordinator) or a delegated one (the previous
// pipeline stage). The ZAP handler passes it to libzmq as the connection's user id, and libzmq
// attaches that to every frame the peer sends, so it is known per frame.
enum class PeerTrust { unauthenticated, authorized, delegated };
const char* peer_trust_name(PeerTrust t);  // "unauthenticated", "authorized", "delegated"

// The client keys a CURVE Listener accepts; thread-safe (the ZAP handler reads it from its own
// thread). Two sets: `fixed` keys given at start (the coordinators a worker trusts), and `delegated`
// keys that the trusted coordinator adds at run time (the previous pipeline stage, which forwards
// hidden states to this worker) and replaces with every new segment.
class AuthorizedKeys {
 public:
  AuthorizedKeys() = default;
  explicit AuthorizedKeys(std::vector<std::string> fixed);

  void set_delegated(std::vector<std::string> keys);
  // authorized (a fixed key, also when delegated too), delegated, or nullopt (refused).
  std::optional<PeerTrust> trust(std::string_view key) const;

 private:
  mutable std::mutex mu_;
  std::set<std::string, std::less<>> fixed_, delegated_;
};

}  // namespace ll::net
