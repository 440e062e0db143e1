// XXH64 (Yann Collet's xxHash, 64-bit variant), written from its published algorithm description:
// the fast, non-cryptographic checksum of each TENSOR_CHUNK's bytes (catches corruption and framing
// bugs per chunk; the whole tensor is then checked against its SHA-256). Seed 0 on the wire.
// Reads input bytes as little-endian words on any host, so the value is host-independent.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace ll::net {

uint64_t xxh64(std::span<const uint8_t> data, uint64_t seed = 0);
inline uint64_t xxh64(std::string_view s, uint64_t seed = 0) {
  return xxh64(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()), seed);
}

}  // namespace ll::net
