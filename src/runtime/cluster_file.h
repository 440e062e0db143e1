// The cluster file: which devices (worker processes) take part in a run, and where they listen.
// TOML, one [[device]] table per device, in pipeline order:
//
//   [[device]]
//   name = "phone-a"                  # required: 1-64 of [A-Za-z0-9._-], unique
//   address = "tcp://192.0.2.10:5601" # required: tcp://HOST:PORT, port 1-65535, unique;
//                                     #   HOST a name, an IPv4 address or a bracketed IPv6 one
//   threads = 4                       # optional, 1-65536, informational
//   public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//                                     # the worker's CURVE public key (its `lingua keygen` .pub):
//                                     #   40 Z85 characters; required unless the run is --insecure
//
// The file is read by people and written by hand, so it is strict: unknown keys (at the top level
// and in a [[device]]) are errors, to catch typos such as `adress`, and so are values of the wrong
// type. Errors name the file, the line and the field:
//   ErrorCode::parse             TOML syntax, wrong structure, unknown keys, wrong types, missing keys
//   ErrorCode::invalid_argument  well-typed values that are not allowed (bad name or address,
//                                duplicates, no devices)
//   ErrorCode::io                the file cannot be read (load_cluster_file)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ll::runtime {

struct ClusterDevice {
  std::string name;
  std::string address;         // as written: "tcp://HOST:PORT"
  std::optional<int> threads;  // informational
  // The worker's CURVE public key (Z85, 40 characters), checked by the CURVE handshake: a worker
  // that does not hold the matching secret key cannot complete it. Empty when the file has none (a
  // secure run then refuses the file; `--insecure` ignores keys).
  std::string public_key;
};

struct ClusterFile {
  std::vector<ClusterDevice> devices;  // in file order; never empty
};

// `source_name` is only used in messages (normally the path).
Expected<ClusterFile> parse_cluster_file(std::string_view text, std::string_view source_name);
// Reads at most k_max_cluster_file_bytes from `path` and parses it.
Expected<ClusterFile> load_cluster_file(const std::string& path);

inline constexpr size_t k_max_cluster_file_bytes = 1 << 20;
inline constexpr size_t k_max_device_name_bytes = 64;

// "tcp://HOST:PORT" split up; the brackets of an IPv6 host are kept ("[::1]"), as ZeroMQ wants them.
struct TcpEndpoint {
  std::string host;
  uint16_t port = 0;
};

// Checks the syntax only (no name resolution). Port 0 ("any", for listening) is accepted here; the
// cluster file rejects it. Errors are ErrorCode::invalid_argument, naming the address.
Expected<TcpEndpoint> parse_tcp_endpoint(std::string_view address);

}  // namespace ll::runtime
