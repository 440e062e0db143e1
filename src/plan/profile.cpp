#include "plan/profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

namespace ll::plan {

namespace {

using nlohmann::json;

Error parse_error(std::string message) {
  return make_error(ErrorCode::parse, "profile: " + std::move(message));
}

std::string fmt_num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

Expected<void> check_number(double v, const std::string& field) {
  if (!std::isfinite(v)) return parse_error(field + " is not a finite number");
  if (v < 0) return parse_error(field + " is negative (" + fmt_num(v) + ")");
  return {};
}

Expected<void> check_matrix(const std::vector<std::vector<double>>& m, size_t n, const std::string& field,
                            bool positive_off_diagonal) {
  if (m.size() != n) {
    return parse_error(field + " has " + std::to_string(m.size()) + " rows, expected " + std::to_string(n) +
                       " (one per device)");
  }
  for (size_t a = 0; a < n; ++a) {
    if (m[a].size() != n) {
      return parse_error(field + "[" + std::to_string(a) + "] has " + std::to_string(m[a].size()) +
                         " entries, expected " + std::to_string(n));
    }
    for (size_t b = 0; b < n; ++b) {
      const std::string f = field + "[" + std::to_string(a) + "][" + std::to_string(b) + "]";
      LL_TRY(check_number(m[a][b], f));
      if (positive_off_diagonal && a != b && !(m[a][b] > 0)) return parse_error(f + " must be > 0");
    }
  }
  return {};
}

// JSON readers: each names the field in its error.
const json* member(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

Expected<const json*> require(const json& obj, const char* key, const std::string& where) {
  const json* v = member(obj, key);
  if (v == nullptr) return parse_error(where + (where.empty() ? "" : ".") + key + " is missing");
  return v;
}

Expected<double> read_number(const json& v, const std::string& field) {
  if (!v.is_number()) return parse_error(field + " must be a number");
  const double d = v.get<double>();
  LL_TRY(check_number(d, field));
  return d;
}

Expected<uint64_t> read_bytes(const json& v, const std::string& field) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > kMaxMemoryBytes) return parse_error(field + " is too large (at most 2^53 bytes)");
    return u;
  }
  if (v.is_number_integer())
    return parse_error(field + " is negative (" + std::to_string(v.get<int64_t>()) + ")");
  if (!v.is_number()) return parse_error(field + " must be a number of bytes");
  const double d = v.get<double>();
  LL_TRY(check_number(d, field));
  if (d != std::floor(d)) return parse_error(field + " must be a whole number of bytes (" + fmt_num(d) + ")");
  if (d > static_cast<double>(kMaxMemoryBytes))
    return parse_error(field + " is too large (at most 2^53 bytes)");
  return static_cast<uint64_t>(d);
}

Expected<std::string> read_name(const json& v, const std::string& field) {
  if (!v.is_string()) return parse_error(field + " must be a string");
  std::string s = v.get<std::string>();
  if (s.empty()) return parse_error(field + " is empty");
  return s;
}

Expected<std::vector<double>> read_numbers(const json& v, const std::string& field) {
  if (!v.is_array()) return parse_error(field + " must be an array of numbers");
  std::vector<double> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    LL_ASSIGN_OR_RETURN(double d, read_number(v[i], field + "[" + std::to_string(i) + "]"));
    out.push_back(d);
  }
  return out;
}

Expected<std::vector<std::vector<double>>> read_matrix(const json& v, const std::string& field, size_t n) {
  if (!v.is_array()) return parse_error(field + " must be an array of " + std::to_string(n) + " rows");
  if (v.size() != n) {
    return parse_error(field + " has " + std::to_string(v.size()) + " rows, expected " + std::to_string(n) +
                       " (one per device)");
  }
  std::vector<std::vector<double>> m;
  m.reserve(n);
  for (size_t a = 0; a < n; ++a) {
    LL_ASSIGN_OR_RETURN(auto row, read_numbers(v[a], field + "[" + std::to_string(a) + "]"));
    m.push_back(std::move(row));
  }
  return m;
}

Expected<Profile> from_json(const json& j) {
  if (!j.is_object()) return parse_error("the top level must be a JSON object");
  Profile p;

  LL_ASSIGN_OR_RETURN(const json* units, require(j, "units", ""));
  if (!units->is_array()) return parse_error("units must be an array");
  if (units->empty()) return parse_error("units is empty (a model has at least one unit)");
  if (units->size() > static_cast<size_t>(kMaxUnits)) {
    return parse_error("units has " + std::to_string(units->size()) + " entries, at most " +
                       std::to_string(kMaxUnits) + " are supported");
  }
  for (size_t i = 0; i < units->size(); ++i) {
    const std::string where = "units[" + std::to_string(i) + "]";
    const json& u = (*units)[i];
    if (!u.is_object()) return parse_error(where + " must be an object");
    UnitProfile up;
    LL_ASSIGN_OR_RETURN(const json* name, require(u, "name", where));
    LL_ASSIGN_OR_RETURN(up.name, read_name(*name, where + ".name"));
    LL_ASSIGN_OR_RETURN(const json* mem, require(u, "memory_bytes", where));
    LL_ASSIGN_OR_RETURN(up.memory_bytes, read_bytes(*mem, where + ".memory_bytes"));
    LL_ASSIGN_OR_RETURN(const json* out, require(u, "out_bytes", where));
    LL_ASSIGN_OR_RETURN(up.out_bytes, read_number(*out, where + ".out_bytes"));
    p.units.push_back(std::move(up));
  }

  LL_ASSIGN_OR_RETURN(const json* devices, require(j, "devices", ""));
  if (!devices->is_array()) return parse_error("devices must be an array");
  if (devices->empty()) return parse_error("devices is empty (at least one device is needed)");
  if (devices->size() > static_cast<size_t>(kMaxDevices)) {
    return parse_error("devices has " + std::to_string(devices->size()) + " entries, at most " +
                       std::to_string(kMaxDevices) + " are supported");
  }
  for (size_t i = 0; i < devices->size(); ++i) {
    const std::string where = "devices[" + std::to_string(i) + "]";
    const json& d = (*devices)[i];
    if (!d.is_object()) return parse_error(where + " must be an object");
    DeviceProfile dp;
    LL_ASSIGN_OR_RETURN(const json* name, require(d, "name", where));
    LL_ASSIGN_OR_RETURN(dp.name, read_name(*name, where + ".name"));
    LL_ASSIGN_OR_RETURN(const json* mem, require(d, "memory_bytes", where));
    LL_ASSIGN_OR_RETURN(dp.memory_bytes, read_bytes(*mem, where + ".memory_bytes"));
    LL_ASSIGN_OR_RETURN(const json* ms, require(d, "unit_ms", where));
    if (ms->is_array() && ms->size() != p.units.size()) {
      return parse_error(where + ".unit_ms has " + std::to_string(ms->size()) + " entries, expected " +
                         std::to_string(p.units.size()) + " (one per unit)");
    }
    LL_ASSIGN_OR_RETURN(dp.unit_ms, read_numbers(*ms, where + ".unit_ms"));
    p.devices.push_back(std::move(dp));
  }
  const size_t n_dev = p.devices.size();

  LL_ASSIGN_OR_RETURN(const json* lat, require(j, "latency_ms", ""));
  LL_ASSIGN_OR_RETURN(p.latency_ms, read_matrix(*lat, "latency_ms", n_dev));
  LL_ASSIGN_OR_RETURN(const json* bw, require(j, "bandwidth_bytes_per_s", ""));
  LL_ASSIGN_OR_RETURN(p.bandwidth_bytes_per_s, read_matrix(*bw, "bandwidth_bytes_per_s", n_dev));

  LL_ASSIGN_OR_RETURN(const json* origin, require(j, "origin", ""));
  LL_ASSIGN_OR_RETURN(std::string origin_name, read_name(*origin, "origin"));
  LL_ASSIGN_OR_RETURN(const json* tok, require(j, "token_bytes", ""));
  LL_ASSIGN_OR_RETURN(p.token_bytes, read_number(*tok, "token_bytes"));

  // Names must be unique before the origin can be looked up by name.
  std::set<std::string> seen;
  for (size_t i = 0; i < n_dev; ++i) {
    if (!seen.insert(p.devices[i].name).second) {
      return parse_error("devices[" + std::to_string(i) + "].name '" + p.devices[i].name + "' is used twice");
    }
  }
  p.origin = p.find_device(origin_name);
  if (p.origin < 0) return parse_error("origin '" + origin_name + "' is not one of the devices");
  LL_TRY(validate(p));
  return p;
}

}  // namespace

int Profile::find_device(std::string_view name) const {
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

Expected<void> validate(const Profile& p) {
  const size_t n_units = p.units.size(), n_dev = p.devices.size();
  if (n_units == 0) return parse_error("units is empty (a model has at least one unit)");
  if (n_dev == 0) return parse_error("devices is empty (at least one device is needed)");
  if (n_units > static_cast<size_t>(kMaxUnits)) {
    return parse_error("units has " + std::to_string(n_units) + " entries, at most " +
                       std::to_string(kMaxUnits) + " are supported");
  }
  if (n_dev > static_cast<size_t>(kMaxDevices)) {
    return parse_error("devices has " + std::to_string(n_dev) + " entries, at most " +
                       std::to_string(kMaxDevices) + " are supported");
  }
  std::set<std::string> unit_names, device_names;
  for (size_t u = 0; u < n_units; ++u) {
    const std::string where = "units[" + std::to_string(u) + "]";
    const UnitProfile& up = p.units[u];
    if (up.name.empty()) return parse_error(where + ".name is empty");
    if (!unit_names.insert(up.name).second)
      return parse_error(where + ".name '" + up.name + "' is used twice");
    if (up.memory_bytes > kMaxMemoryBytes)
      return parse_error(where + ".memory_bytes is too large (at most 2^53 bytes)");
    LL_TRY(check_number(up.out_bytes, where + ".out_bytes"));
  }
  for (size_t d = 0; d < n_dev; ++d) {
    const std::string where = "devices[" + std::to_string(d) + "]";
    const DeviceProfile& dp = p.devices[d];
    if (dp.name.empty()) return parse_error(where + ".name is empty");
    if (!device_names.insert(dp.name).second)
      return parse_error(where + ".name '" + dp.name + "' is used twice");
    if (dp.memory_bytes > kMaxMemoryBytes)
      return parse_error(where + ".memory_bytes is too large (at most 2^53 bytes)");
    if (dp.unit_ms.size() != n_units) {
      return parse_error(where + ".unit_ms has " + std::to_string(dp.unit_ms.size()) + " entries, expected " +
                         std::to_string(n_units) + " (one per unit)");
    }
    for (size_t u = 0; u < n_units; ++u) {
      LL_TRY(check_number(dp.unit_ms[u], where + ".unit_ms[" + std::to_string(u) + "]"));
    }
  }
  LL_TRY(check_matrix(p.latency_ms, n_dev, "latency_ms", false));
  LL_TRY(check_matrix(p.bandwidth_bytes_per_s, n_dev, "bandwidth_bytes_per_s", true));
  if (p.origin < 0 || static_cast<size_t>(p.origin) >= n_dev) {
    return parse_error("origin index " + std::to_string(p.origin) + " is not one of the " +
                       std::to_string(n_dev) + " devices");
  }
  LL_TRY(check_number(p.token_bytes, "token_bytes"));
  // Transfer times must stay finite: a huge payload over a tiny (but positive) bandwidth could overflow.
  // hop_ms grows with the payload, so the largest one decides.
  double max_bytes = p.token_bytes;
  for (const auto& u : p.units) max_bytes = std::max(max_bytes, u.out_bytes);
  for (size_t a = 0; a < n_dev; ++a) {
    for (size_t b = 0; b < n_dev; ++b) {
      if (a != b && !std::isfinite(p.hop_ms(static_cast<int>(a), static_cast<int>(b), max_bytes))) {
        return parse_error("sending " + fmt_num(max_bytes) + " bytes from '" + p.devices[a].name + "' to '" +
                           p.devices[b].name + "' would take an infinite time (bandwidth_bytes_per_s[" +
                           std::to_string(a) + "][" + std::to_string(b) + "] is too small)");
      }
    }
  }
  return {};
}

Expected<Profile> parse_profile(std::string_view json_text) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return parse_error(std::string("not valid JSON: ") + e.what());
  }
  try {
    return from_json(j);
  } catch (const json::exception& e) {  // a type check missed above; still the file's fault
    return parse_error(e.what());
  }
}

std::string profile_to_json(const Profile& p) {
  nlohmann::ordered_json j;
  auto& units = j["units"] = nlohmann::ordered_json::array();
  for (const auto& u : p.units) {
    units.push_back({{"name", u.name}, {"memory_bytes", u.memory_bytes}, {"out_bytes", u.out_bytes}});
  }
  auto& devices = j["devices"] = nlohmann::ordered_json::array();
  for (const auto& d : p.devices) {
    devices.push_back({{"name", d.name}, {"memory_bytes", d.memory_bytes}, {"unit_ms", d.unit_ms}});
  }
  j["latency_ms"] = p.latency_ms;
  j["bandwidth_bytes_per_s"] = p.bandwidth_bytes_per_s;
  j["origin"] = (p.origin >= 0 && p.origin < p.n_devices()) ? p.devices[p.origin].name : std::string();
  j["token_bytes"] = p.token_bytes;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string format_bytes(uint64_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes < 10 * 1024) {
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  } else if (bytes < 1024ull * 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  } else if (bytes < 1024ull * 1024 * 1024) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024.0));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
  }
  return buf;
}

std::string format_bytes_exact(uint64_t bytes) {
  if (bytes < 10 * 1024) return format_bytes(bytes);
  return format_bytes(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

Expected<void> add_device(Profile& profile, DeviceProfile device, double link_latency_ms,
                          double link_bandwidth_bytes_per_s) {
  if (profile.n_devices() == 0 || profile.origin < 0 || profile.origin >= profile.n_devices()) {
    return make_error(ErrorCode::invalid_argument, "a device can only join a profile that has an origin");
  }
  Profile p = profile;
  const size_t o = static_cast<size_t>(p.origin);
  const size_t n = p.devices.size();
  p.devices.push_back(std::move(device));
  for (size_t a = 0; a < n; ++a) {
    const double lat = a == o ? link_latency_ms : link_latency_ms + p.latency_ms[o][a];
    const double bw = a == o ? link_bandwidth_bytes_per_s : std::min(link_bandwidth_bytes_per_s, p.bandwidth_bytes_per_s[o][a]);
    p.latency_ms[a].push_back(lat);
    p.bandwidth_bytes_per_s[a].push_back(bw);
  }
  p.latency_ms.emplace_back();
  p.bandwidth_bytes_per_s.emplace_back();
  for (size_t a = 0; a < n; ++a) {
    p.latency_ms[n].push_back(p.latency_ms[a][n]);
    p.bandwidth_bytes_per_s[n].push_back(p.bandwidth_bytes_per_s[a][n]);
  }
  p.latency_ms[n].push_back(0.0);
  p.bandwidth_bytes_per_s[n].push_back(1e12);  // (the diagonal is unused)
  LL_TRY(validate(p));
  profile = std::move(p);
  return {};
}

}  // namespace ll::plan
