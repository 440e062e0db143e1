#include "net/xxh64.h"

#include "net/codec.h"

namespace ll::net {

namespace {

constexpr uint64_t k_p1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t k_p2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t k_p3 = 0x165667B19E3779F9ull;
constexpr uint64_t k_p4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t k_p5 = 0x27D4EB2F165667C5ull;

inline uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

inline uint64_t round(uint64_t acc, uint64_t input) {
  acc += input * k_p2;
  acc = rotl(acc, 31);
  return acc * k_p1;
}

inline uint64_t merge_round(uint64_t acc, uint64_t val) {
  acc ^= round(0, val);
  return acc * k_p1 + k_p4;
}

}  // namespace

uint64_t xxh64(std::span<const uint8_t> data, uint64_t seed) {
  const uint8_t* p = data.data();
  const size_t len = data.size();
  const uint8_t* const end = p + len;
  uint64_t h;
  if (len >= 32) {
    // Four lanes over 32-byte stripes.
    uint64_t v1 = seed + k_p1 + k_p2, v2 = seed + k_p2, v3 = seed, v4 = seed - k_p1;
    const uint8_t* const limit = end - 32;
    do {
      v1 = round(v1, load_u64_le(p));
      v2 = round(v2, load_u64_le(p + 8));
      v3 = round(v3, load_u64_le(p + 16));
      v4 = round(v4, load_u64_le(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge_round(h, v1);
    h = merge_round(h, v2);
    h = merge_round(h, v3);
    h = merge_round(h, v4);
  } else {
    h = seed + k_p5;
  }
  h += static_cast<uint64_t>(len);
  while (end - p >= 8) {
    h ^= round(0, load_u64_le(p));
    h = rotl(h, 27) * k_p1 + k_p4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= static_cast<uint64_t>(load_u32_le(p)) * k_p1;
    h = rotl(h, 23) * k_p2 + k_p3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * k_p5;
    h = rotl(h, 11) * k_p1;
    ++p;
  }
  // Avalanche.
  h ^= h >> 33;
  h *= k_p2;
  h ^= h >> 29;
  h *= k_p3;
  h ^= h >> 32;
  return h;
}

}  // namespace ll::net
