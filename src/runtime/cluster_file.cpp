#include "runtime/cluster_file.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <map>

#include "core/file_io.h"
#include "net/security.h"

namespace ll::runtime {

namespace {

// Strings here are built with append(): GCC 12 at -O3 warns falsely (-Wrestrict) about
// "literal" + std::string temporaries in this file.
std::string quote(std::string_view s) {
  std::string q;
  q.reserve(s.size() + 2);
  q.append(1, '"').append(s).append(1, '"');
  return q;
}

const char* type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::none:
      return "nothing";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
  }
  return "a value";
}

// Errors carry "source:line: " (line omitted when unknown, 0).
class Reporter {
 public:
  explicit Reporter(std::string_view source) : source_(source) {}

  Error at(ErrorCode code, const toml::source_region& where, const std::string& what) const {
    return at_line(code, where.begin.line, what);
  }
  Error at_line(ErrorCode code, toml::source_index line, const std::string& what) const {
    std::string msg(source_);
    if (line > 0) msg.append(1, ':').append(std::to_string(line));
    msg.append(": ").append(what);
    return make_error(code, std::move(msg));
  }

 private:
  std::string_view source_;
};

constexpr std::string_view k_device_keys[] = {"name", "address", "threads", "public_key"};

Expected<void> check_name(std::string_view name) {
  if (name.empty()) return make_error(ErrorCode::invalid_argument, "is empty");
  if (name.size() > k_max_device_name_bytes) {
    return make_error(ErrorCode::invalid_argument, "is " + std::to_string(name.size()) +
                                                       " bytes long (at most " +
                                                       std::to_string(k_max_device_name_bytes) + ")");
  }
  for (const char c : name) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    if (!ok) return make_error(ErrorCode::invalid_argument, "may only contain A-Z a-z 0-9 . _ -");
  }
  return {};
}

// The key under which two addresses are "the same": host names are case-insensitive.
std::string endpoint_key(const TcpEndpoint& e) {
  std::string host = e.host;
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return host + ":" + std::to_string(e.port);
}

}  // namespace

Expected<TcpEndpoint> parse_tcp_endpoint(std::string_view address) {
  const auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::invalid_argument, "address " + quote(address) + " " + why);
  };
  constexpr std::string_view scheme = "tcp://";
  if (address.substr(0, scheme.size()) != scheme) return bad("must start with tcp://");
  const std::string_view rest = address.substr(scheme.size());
  const size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos) return bad("has no :PORT (expected tcp://HOST:PORT)");
  const std::string_view host = rest.substr(0, colon);
  const std::string_view port_text = rest.substr(colon + 1);

  if (host.empty()) return bad("has an empty HOST (expected tcp://HOST:PORT)");
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad("has a malformed [IPv6] host");
    const std::string_view inner = host.substr(1, host.size() - 2);
    const bool ok =
        inner.find(':') != std::string_view::npos && std::all_of(inner.begin(), inner.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
        });
    if (!ok) return bad("has a malformed [IPv6] host");
  } else {
    if (host.find(':') != std::string_view::npos) return bad("has an IPv6 host without [brackets]");
    const bool ok = std::all_of(host.begin(), host.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
    });
    if (!ok) return bad("has a HOST with characters other than A-Z a-z 0-9 . - _");
  }

  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad("has a PORT that is not a number from 0 to 65535");
  }
  unsigned port = 0;
  std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port > 65535) return bad("has a PORT that is not a number from 0 to 65535");
  return TcpEndpoint{std::string(host), static_cast<uint16_t>(port)};
}

Expected<ClusterFile> parse_cluster_file(std::string_view text, std::string_view source_name) {
  const Reporter report(source_name);
  toml::table root;
  try {  // the one place toml++ (built with exceptions) may throw
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    return report.at(ErrorCode::parse, e.source(), "TOML syntax: " + std::string(e.description()));
  }

  for (auto&& [key, node] : root) {
    if (key.str() != "device") {
      return report.at(ErrorCode::parse, key.source(),
                       "unknown key " + quote(key.str()) + " (the file holds [[device]] tables only)");
    }
  }
  const toml::node* device_node = root.get("device");
  if (device_node == nullptr) return report.at_line(ErrorCode::invalid_argument, 0, "no [[device]] entries");
  const toml::array* devices = device_node->as_array();
  if (devices == nullptr) {
    return report.at(ErrorCode::parse, device_node->source(),
                     "device is " + std::string(type_name(device_node->type())) +
                         ", expected an array of tables: write each device as [[device]]");
  }
  if (devices->empty())
    return report.at(ErrorCode::invalid_argument, device_node->source(), "no [[device]] entries");

  ClusterFile out;
  std::map<std::string, toml::source_index> name_lines;     // name -> line of first use
  std::map<std::string, toml::source_index> address_lines;  // endpoint_key -> line of first use
  for (size_t i = 0; i < devices->size(); ++i) {
    const toml::node& entry = *devices->get(i);
    const std::string which = "device #" + std::to_string(i + 1);
    const toml::table* table = entry.as_table();
    if (table == nullptr) {
      return report.at(ErrorCode::parse, entry.source(),
                       which + " is " + type_name(entry.type()) + ", expected a table ([[device]])");
    }
    for (auto&& [key, node] : *table) {
      if (std::find(std::begin(k_device_keys), std::end(k_device_keys), key.str()) ==
          std::end(k_device_keys)) {
        return report.at(ErrorCode::parse, key.source(),
                         which + ": unknown key " + quote(key.str()) + " (known: name, address, threads, public_key)");
      }
    }

    ClusterDevice device;
    // name
    const toml::node* name = table->get("name");
    if (name == nullptr) return report.at(ErrorCode::parse, table->source(), which + ": missing name");
    if (!name->is_string()) {
      return report.at(ErrorCode::parse, name->source(),
                       which + ": name must be a string, not " + type_name(name->type()));
    }
    device.name = name->as_string()->get();
    if (auto ok = check_name(device.name); !ok) {
      return report.at(ErrorCode::invalid_argument, name->source(),
                       which + ": name " + quote(device.name) + " " + ok.error().message);
    }
    const std::string named = "device " + quote(device.name);
    if (auto [it, fresh] = name_lines.emplace(device.name, name->source().begin.line); !fresh) {
      return report.at(
          ErrorCode::invalid_argument, name->source(),
          "name " + quote(device.name) + " is used twice (first at line " + std::to_string(it->second) + ")");
    }

    // address
    const toml::node* address = table->get("address");
    if (address == nullptr) return report.at(ErrorCode::parse, table->source(), named + ": missing address");
    if (!address->is_string()) {
      return report.at(ErrorCode::parse, address->source(),
                       named + ": address must be a string, not " + type_name(address->type()));
    }
    device.address = address->as_string()->get();
    auto endpoint = parse_tcp_endpoint(device.address);
    if (!endpoint) {
      return report.at(ErrorCode::invalid_argument, address->source(),
                       named + ": " + endpoint.error().message);
    }
    if (endpoint->port == 0) {
      return report.at(ErrorCode::invalid_argument, address->source(),
                       named + ": address " + quote(device.address) + " has port 0 (must be 1-65535)");
    }
    if (auto [it, fresh] = address_lines.emplace(endpoint_key(*endpoint), address->source().begin.line);
        !fresh) {
      return report.at(ErrorCode::invalid_argument, address->source(),
                       named + ": address " + quote(device.address) + " is used twice (first at line " +
                           std::to_string(it->second) + ")");
    }

    // threads (optional)
    if (const toml::node* threads = table->get("threads")) {
      if (!threads->is_integer()) {
        return report.at(ErrorCode::parse, threads->source(),
                         named + ": threads must be an integer, not " + type_name(threads->type()));
      }
      const int64_t n = threads->as_integer()->get();
      if (n < 1 || n > 65536) {
        return report.at(ErrorCode::invalid_argument, threads->source(),
                         named + ": threads = " + std::to_string(n) + " is outside 1-65536");
      }
      device.threads = static_cast<int>(n);
    }

    // public_key (optional here; a secure run requires it: see ClusterDevice)
    if (const toml::node* key = table->get("public_key")) {
      if (!key->is_string()) {
        return report.at(ErrorCode::parse, key->source(),
                         named + ": public_key must be a string, not " + type_name(key->type()));
      }
      device.public_key = key->as_string()->get();
      if (auto ok = net::check_curve_key(device.public_key, "public_key"); !ok) {
        return report.at(ErrorCode::invalid_argument, key->source(), named + ": " + ok.error().message);
      }
    }
    out.devices.push_back(std::move(device));
  }
  return out;
}

Expected<ClusterFile> load_cluster_file(const std::string& path) {
  LL_ASSIGN_OR_RETURN(const std::string text, read_small_file(path, k_max_cluster_file_bytes, "a cluster file"));
  return parse_cluster_file(text, path);
}

}  // namespace ll::runtime
