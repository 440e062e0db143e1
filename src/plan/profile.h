// Model and device profile: what the planner knows about a model split into units and the devices
// that could run them. It is read from an untrusted JSON file:
//
//   { "units":   [{"name": "embed", "memory_bytes": 1000, "out_bytes": 256}, ...],        // U entries
//     "devices": [{"name": "dev0", "memory_bytes": 5000, "unit_ms": [0.1, 2.0, ...]}, ...], // D entries
//     "latency_ms":            [[0, 5.0, ...], ...],   // D x D, ms, diagonal unused
//     "bandwidth_bytes_per_s": [[0, 1.25e7, ...], ...], // D x D, > 0 off the diagonal
//     "origin": "dev0",                                  // the device the user talks to
//     "token_bytes": 4 }                                 // what the last stage sends back to the origin
//
// `memory_bytes` are whole numbers of bytes (at most 2^53); every other number is finite and >= 0.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ll::plan {

struct UnitProfile {
  std::string name;
  uint64_t memory_bytes = 0;  // weights (and whatever else the unit keeps resident)
  double out_bytes = 0;       // size of the hidden state the unit hands to the next one
};

struct DeviceProfile {
  std::string name;
  uint64_t memory_bytes = 0;    // memory available for units
  std::vector<double> unit_ms;  // [n_units] time to run each unit on this device
};

struct Profile {
  std::vector<UnitProfile> units;
  std::vector<DeviceProfile> devices;
  std::vector<std::vector<double>> latency_ms;             // [n_devices][n_devices] from row to column
  std::vector<std::vector<double>> bandwidth_bytes_per_s;  // [n_devices][n_devices] from row to column
  int origin = 0;                                          // index into devices
  double token_bytes = 0;

  int n_units() const { return static_cast<int>(units.size()); }
  int n_devices() const { return static_cast<int>(devices.size()); }
  // Time to send `bytes` from device a to device b: 0 on the same device, else latency + transfer.
  double hop_ms(int a, int b, double bytes) const {
    if (a == b) return 0.0;
    return latency_ms[a][b] + 1000.0 * bytes / bandwidth_bytes_per_s[a][b];
  }
  // Index of the device with this name, or -1.
  int find_device(std::string_view name) const;
};

// Limits that keep a hostile file from asking for absurd allocations.
inline constexpr int kMaxUnits = 100000;
inline constexpr int kMaxDevices = 1024;
inline constexpr uint64_t kMaxMemoryBytes = uint64_t{1} << 53;  // exactly representable as a double

// Checks sizes, numbers, names and the origin; the message names the offending field, e.g.
// "devices[2].unit_ms has 30 entries, expected 24".
Expected<void> validate(const Profile& profile);

// Appends a device that joined later: `link_latency_ms` and `link_bandwidth_bytes_per_s` are its
// link to the origin; to every other device it is reached through the origin's network, as the
// coordinator's own profiles assume (latency: both links' one-way latencies; bandwidth: the slower
// link's). Fails (leaving `profile` as it was) when the result does not validate, e.g. unit_ms of
// the wrong length or a name already taken.
Expected<void> add_device(Profile& profile, DeviceProfile device, double link_latency_ms,
                          double link_bandwidth_bytes_per_s);

// Parses and validates a profile from JSON text (no I/O). Errors are ErrorCode::parse.
Expected<Profile> parse_profile(std::string_view json_text);

// The JSON form above (numbers round-trip exactly).
std::string profile_to_json(const Profile& profile);

// a + b, saturating at UINT64_MAX (memory sums over untrusted sizes).
inline uint64_t add_sat(uint64_t a, uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

// "812 bytes", "5.0 KiB", "1.30 GiB".
std::string format_bytes(uint64_t bytes);
// "812 bytes", "5.0 KiB (5120 bytes)": for messages where the exact figure matters.
std::string format_bytes_exact(uint64_t bytes);

}  // namespace ll::plan
