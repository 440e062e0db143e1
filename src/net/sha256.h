// SHA-256 (FIPS 180-4), written from the standard: the content hash of whole tensors and models on
// the wire. Portable scalar code (about 200-400 MB/s); a SHA-NI / ARMv8 path can come later behind
// the same interface.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ll::net {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256() { reset(); }
  void reset();
  void update(std::span<const uint8_t> data);
  void update(std::string_view s) { update(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size())); }
  // The digest of everything updated since the last reset; the object is reset afterwards.
  Sha256Digest finish();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_{};
  std::array<uint8_t, 64> block_{};
  size_t block_len_ = 0;
  uint64_t total_bytes_ = 0;
};

Sha256Digest sha256(std::span<const uint8_t> data);
Sha256Digest sha256(std::string_view s);

// Lower-case hex of a digest (64 characters).
std::string to_hex(const Sha256Digest& d);

}  // namespace ll::net
