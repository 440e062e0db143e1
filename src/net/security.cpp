#include "net/security.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/file_io.h"

namespace ll::net {

namespace {

constexpr std::string_view k_z85_alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
constexpr size_t k_max_key_file_bytes = 1 << 20;

std::string quoted(std::string_view s) {
  std::string q;
  q.append(1, '"').append(s).append(1, '"');
  return q;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Splits text into lines; calls f(line_number, line) until it returns an error.
template <class F>
Expected<void> for_each_line(std::string_view text, F&& f) {
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    LL_TRY(f(++line_no, trim(line)));
  }
  return {};
}

Error at_line(ErrorCode code, std::string_view source, size_t line, const std::string& what) {
  std::string msg(source);
  msg.append(1, ':').append(std::to_string(line)).append(": ").append(what);
  return make_error(code, std::move(msg));
}

Expected<void> write_new_file(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    const int e = errno;
    if (e == EEXIST) return make_error(ErrorCode::io, path + ": already exists (not overwriting a key)");
    return make_error(ErrorCode::io, path + ": cannot create: " + std::strerror(e));
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return make_error(ErrorCode::io, path + ": cannot write: " + std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  // The umask may have narrowed the mode; the secret file must be 0600 whatever it is.
  if (::fchmod(fd, mode) != 0 || ::close(fd) != 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return make_error(ErrorCode::io, path + ": cannot finish: " + std::strerror(e));
  }
  return {};
}

}  // namespace

Expected<void> check_curve_available() {
  if (zmq_has("curve") == 0) {
    int major = 0, minor = 0, patch = 0;
    zmq_version(&major, &minor, &patch);
    return make_error(ErrorCode::unsupported,
                      "this libzmq (" + std::to_string(major) + "." + std::to_string(minor) + "." +
                          std::to_string(patch) +
                          ") was built without CURVE security (zmq_has(\"curve\") is false): install a libzmq "
                          "built with libsodium, or run with --insecure on a trusted network");
  }
  return {};
}

Expected<CurveKeyPair> generate_curve_keypair() {
  LL_TRY(check_curve_available());
  char pub[k_curve_key_chars + 1] = {};
  char sec[k_curve_key_chars + 1] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    return make_error(ErrorCode::internal, std::string("zmq_curve_keypair failed: ").append(zmq_strerror(zmq_errno())));
  }
  return CurveKeyPair{pub, sec};
}

Expected<void> check_curve_key(std::string_view key, std::string_view what) {
  std::string prefix(what);
  prefix.append(": ");
  if (key.size() != k_curve_key_chars) {
    return make_error(ErrorCode::invalid_argument,
                      prefix + "a CURVE key is 40 Z85 characters, not " + std::to_string(key.size()));
  }
  for (const char c : key) {
    if (c == '\0' || k_z85_alphabet.find(c) == std::string_view::npos) {
      return make_error(ErrorCode::invalid_argument, prefix + quoted(key) + " has a character that is not Z85");
    }
  }
  uint8_t raw[32];
  const std::string z(key);
  if (zmq_z85_decode(raw, z.c_str()) == nullptr) {
    return make_error(ErrorCode::invalid_argument, prefix + quoted(key) + " is not valid Z85");
  }
  return {};
}

Expected<std::string> curve_public_key_of(std::string_view secret_key) {
  LL_TRY(check_curve_available());
  LL_TRY(check_curve_key(secret_key, "secret key"));
  char pub[k_curve_key_chars + 1] = {};
  const std::string sec(secret_key);
  if (zmq_curve_public(pub, sec.c_str()) != 0) {
    return make_error(ErrorCode::invalid_argument, std::string("secret key: ").append(zmq_strerror(zmq_errno())));
  }
  return std::string(pub);
}

std::string format_key_file(const CurveKeyPair& keys) {
  std::string s = "# lingua CURVE key pair: keep this file secret\n";
  s.append("public-key = ").append(keys.public_key).append("\n");
  s.append("secret-key = ").append(keys.secret_key).append("\n");
  return s;
}

Expected<CurveKeyPair> parse_key_file(std::string_view text, std::string_view source_name) {
  CurveKeyPair keys;
  LL_TRY(for_each_line(text, [&](size_t n, std::string_view line) -> Expected<void> {
    // Z85 has '=' in its alphabet: look for a bare key (a .pub line) before splitting at the '='.
    if (check_curve_key(line.substr(0, line.find_first_of(" \t")), "key")) {
      return at_line(ErrorCode::parse, source_name, n,
                     "a bare public key: this is a .pub file; give the key pair (the .key file)");
    }
    if (line.empty() || line.front() == '#') return {};
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      return at_line(ErrorCode::parse, source_name, n, "expected 'public-key = KEY' or 'secret-key = KEY'");
    }
    const std::string_view name = trim(line.substr(0, eq));
    const std::string_view value = trim(line.substr(eq + 1));
    std::string* slot = name == "public-key" ? &keys.public_key : name == "secret-key" ? &keys.secret_key : nullptr;
    if (slot == nullptr) return at_line(ErrorCode::parse, source_name, n, "unknown field " + quoted(name));
    if (!slot->empty()) return at_line(ErrorCode::parse, source_name, n, quoted(name) + " is given twice");
    if (auto ok = check_curve_key(value, name); !ok) return at_line(ErrorCode::parse, source_name, n, ok.error().message);
    slot->assign(value);
    return {};
  }));
  if (keys.secret_key.empty()) {
    return make_error(ErrorCode::parse, std::string(source_name).append(": no secret-key (is this a .pub file?)"));
  }
  LL_ASSIGN_OR_RETURN(std::string derived, curve_public_key_of(keys.secret_key));
  if (keys.public_key.empty()) keys.public_key = derived;
  if (keys.public_key != derived) {
    return make_error(ErrorCode::parse,
                      std::string(source_name).append(": public-key does not belong to secret-key"));
  }
  return keys;
}

Expected<CurveKeyPair> read_key_file(const std::string& path) {
  LL_ASSIGN_OR_RETURN(std::string text, read_small_file(path, k_max_key_file_bytes, "a key file", /*private_only=*/true));
  return parse_key_file(text, path);
}

Expected<void> write_key_files(const std::string& base, const CurveKeyPair& keys) {
  LL_TRY(check_curve_key(keys.public_key, "public key"));
  LL_TRY(check_curve_key(keys.secret_key, "secret key"));
  const std::string key_path = base + ".key";
  const std::string pub_path = base + ".pub";
  struct stat st {};
  if (::stat(pub_path.c_str(), &st) == 0) {
    return make_error(ErrorCode::io, pub_path + ": already exists (not overwriting a key)");
  }
  LL_TRY(write_new_file(key_path, format_key_file(keys), 0600));
  std::string pub = keys.public_key;
  pub.append("\n");
  if (auto ok = write_new_file(pub_path, pub, 0644); !ok) {
    ::unlink(key_path.c_str());
    return ok.error();
  }
  return {};
}

Expected<std::vector<std::string>> parse_authorized_keys(std::string_view text, std::string_view source_name) {
  std::vector<std::string> keys;
  LL_TRY(for_each_line(text, [&](size_t n, std::string_view line) -> Expected<void> {
    const size_t blank = line.find_first_of(" \t");
    const std::string_view key = line.substr(0, blank);
    // '#' is a Z85 character, but never a key's first: that one encodes at most 82 ('%'), as the
    // first 4 bytes are < 2^32 (zmq_z85_decode, and so check_curve_key, refuse more).
    if (line.empty() || line.front() == '#') return {};
    if (auto ok = check_curve_key(key, "public key"); !ok) {
      return at_line(ErrorCode::parse, source_name, n, ok.error().message);
    }
    keys.emplace_back(key);
    return {};
  }));
  if (keys.empty()) {
    return make_error(ErrorCode::parse, std::string(source_name).append(": holds no public key"));
  }
  return keys;
}

Expected<std::vector<std::string>> read_authorized_keys(const std::string& path) {
  LL_ASSIGN_OR_RETURN(std::string text, read_small_file(path, k_max_key_file_bytes, "a key file"));
  return parse_authorized_keys(text, path);
}

AuthorizedKeys::AuthorizedKeys(std::vector<std::string> fixed) : fixed_(fixed.begin(), fixed.end()) {}

void AuthorizedKeys::set_delegated(std::vector<std::string> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  delegated_ = std::set<std::string, std::less<>>(keys.begin(), keys.end());
}

const char* peer_trust_name(PeerTrust t) {
  switch (t) {
    case PeerTrust::unauthenticated:
      return "unauthenticated";
    case PeerTrust::authorized:
      return "authorized";
    case PeerTrust::delegated:
      return "delegated";
  }
  return "unknown";
}

std::optional<PeerTrust> AuthorizedKeys::trust(std::string_view key) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (fixed_.find(key) != fixed_.end()) return PeerTrust::authorized;
  if (delegated_.find(key) != delegated_.end()) return PeerTrust::delegated;
  return std::nullopt;
}

}  // namespace ll::net
