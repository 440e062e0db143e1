// SHA-256 (FIPS 180-4): the content hash of whole tensors and models on the wire.
//
// Backed by OpenSSL libcrypto's EVP interface (EVP_MD_CTX + EVP_sha256), which picks SHA-NI on x86
// and the ARMv8 crypto extensions on arm at run time: ~1.4 GB/s on one SHA-NI x86 core (see the
// LargeBufferChunkedEqualsOneShot test's output) against ~130 MB/s for the portable C it replaced,
// which matters when multi-GB models are hashed before streaming them to workers. OpenSSL's own
// scalar code covers CPUs without those instructions. A one-shot sha256() of a short input costs
// ~1.3 us (context allocation and digest set-up); reusing one Sha256 halves that.
//
// No OpenSSL header leaks out of this one: the context is an opaque pointer. EVP calls cannot fail
// with a valid context and the built-in SHA-256, so a failure (out of memory, broken provider) is
// treated as a bug: a message on stderr, then std::abort().
//
// A Sha256 is copyable (the copy continues from the same intermediate state, e.g. to hash a shared
// prefix once) and cheaply movable; a moved-from object behaves like a freshly reset one.
// One object is used by one thread at a time; distinct objects are independent.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace ll::net {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  Sha256(const Sha256& other);
  Sha256& operator=(const Sha256& other);
  Sha256(Sha256&&) noexcept = default;
  Sha256& operator=(Sha256&&) noexcept = default;
  ~Sha256() = default;

  // Forget everything updated so far.
  void reset();
  void update(std::span<const uint8_t> data);
  void update(std::string_view s) { update(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size())); }
  // The digest of everything updated since the last reset; the object is reset afterwards.
  Sha256Digest finish();

 private:
  struct CtxDeleter {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  // Null only in a moved-from object; update()/finish()/reset() recreate it on demand.
  evp_md_ctx_st* ctx();

  std::unique_ptr<evp_md_ctx_st, CtxDeleter> ctx_;
};

Sha256Digest sha256(std::span<const uint8_t> data);
Sha256Digest sha256(std::string_view s);

// Lower-case hex of a digest (64 characters).
std::string to_hex(const Sha256Digest& d);

}  // namespace ll::net
