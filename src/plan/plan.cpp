#include "plan/plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ll::plan {

namespace {

std::string unit_label(const Profile& p, int u) {
  return "unit " + std::to_string(u) + " '" + p.units[u].name + "'";
}
std::string device_label(const Profile& p, int d) {
  return "'" + p.devices[d].name + "'";
}

// Stage i's compute and transfer, summed in unit order (best_split_for_order sums the same way, so
// both give bit-identical costs).
void stage_cost(const Profile& p, const std::vector<Stage>& stages, size_t i, double& compute_ms,
                double& transfer_ms) {
  const Stage& s = stages[i];
  double c = 0.0;
  for (int u = s.first_unit; u <= s.last_unit; ++u) c += p.devices[s.device].unit_ms[u];
  compute_ms = c;
  transfer_ms = i + 1 < stages.size()
                    ? p.hop_ms(s.device, stages[i + 1].device, p.units[s.last_unit].out_bytes)
                    : p.hop_ms(s.device, p.origin, p.token_bytes);
}

Expected<void> check_structure(const Profile& p, const std::vector<Stage>& stages, const SolveOptions& o) {
  const int n_units = p.n_units(), n_dev = p.n_devices();
  if (stages.empty()) return make_error(ErrorCode::invalid_argument, "the plan has no stages");
  int next = 0;
  std::vector<int> count(static_cast<size_t>(n_dev), 0);
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& s = stages[i];
    const std::string where = "stage " + std::to_string(i);
    if (s.device < 0 || s.device >= n_dev) {
      return make_error(ErrorCode::invalid_argument, where + ": no device " + std::to_string(s.device));
    }
    if (s.first_unit != next) {
      return make_error(
          ErrorCode::invalid_argument,
          where + " starts at unit " + std::to_string(s.first_unit) + ", expected " + std::to_string(next));
    }
    if (s.last_unit < s.first_unit) return make_error(ErrorCode::invalid_argument, where + " is empty");
    if (s.last_unit >= n_units) {
      return make_error(ErrorCode::invalid_argument, where + " ends at unit " + std::to_string(s.last_unit) +
                                                         " but the model has " + std::to_string(n_units) +
                                                         " units (0.." + std::to_string(n_units - 1) + ")");
    }
    next = s.last_unit + 1;
    ++count[static_cast<size_t>(s.device)];
  }
  if (next != n_units) {
    return make_error(ErrorCode::invalid_argument, "the plan covers units 0.." + std::to_string(next - 1) +
                                                       " of " + std::to_string(n_units));
  }
  if (stages.front().device != p.origin) {
    return make_error(ErrorCode::invalid_argument, "the first stage must be on the origin " +
                                                       device_label(p, p.origin) + ", not " +
                                                       device_label(p, stages.front().device));
  }
  if (o.ring && stages.back().device != p.origin) {
    return make_error(ErrorCode::invalid_argument, "in ring mode the last stage must be on the origin " +
                                                       device_label(p, p.origin) + ", not " +
                                                       device_label(p, stages.back().device));
  }
  for (int d = 0; d < n_dev; ++d) {
    const int allowed = (o.ring && d == p.origin) ? 2 : 1;
    if (count[static_cast<size_t>(d)] > allowed) {
      return make_error(ErrorCode::invalid_argument,
                        "device " + device_label(p, d) + " hosts " +
                            std::to_string(count[static_cast<size_t>(d)]) + " stages" +
                            (o.ring && d == p.origin ? " (the origin may host only the first and the last)"
                                                     : " (at most one)"));
    }
  }
  return {};
}

std::vector<uint64_t> device_memory_use(const Profile& p, const std::vector<Stage>& stages) {
  std::vector<uint64_t> used(static_cast<size_t>(p.n_devices()), 0);
  for (const Stage& s : stages) {
    for (int u = s.first_unit; u <= s.last_unit; ++u) {
      used[static_cast<size_t>(s.device)] =
          add_sat(used[static_cast<size_t>(s.device)], p.units[u].memory_bytes);
    }
  }
  return used;
}

Expected<void> check_memory(const Profile& p, const std::vector<Stage>& stages) {
  const std::vector<uint64_t> used = device_memory_use(p, stages);
  for (int d = 0; d < p.n_devices(); ++d) {
    if (used[static_cast<size_t>(d)] <= p.devices[d].memory_bytes) continue;
    std::string units;
    for (const Stage& s : stages) {
      if (s.device != d) continue;
      if (!units.empty()) units += " and ";
      units += std::to_string(s.first_unit) + ".." + std::to_string(s.last_unit);
    }
    return make_error(ErrorCode::resource, "device " + device_label(p, d) + " would hold " +
                                               format_bytes(used[static_cast<size_t>(d)]) + " (units " +
                                               units + ") but has " +
                                               format_bytes(p.devices[d].memory_bytes));
  }
  return {};
}

// Devices in profile order starting with the origin.
std::vector<int> origin_first_order(const Profile& p) {
  std::vector<int> order{p.origin};
  for (int d = 0; d < p.n_devices(); ++d) {
    if (d != p.origin) order.push_back(d);
  }
  return order;
}

// Units 0..n_body-1 cut at `bounds` (bounds[i] = first unit of piece i+1, non-decreasing) onto `order`;
// empty pieces are dropped; with ring the last unit follows as a stage on the origin.
std::vector<Stage> assemble(const Profile& p, const std::vector<int>& order, const std::vector<int>& bounds,
                            int n_body, bool ring) {
  std::vector<Stage> stages;
  int first = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const int end = i + 1 < order.size() ? bounds[i] : n_body;  // exclusive
    if (end > first) stages.push_back(Stage{order[i], first, end - 1});
    first = std::max(first, end);
  }
  if (ring && n_body < p.n_units()) {
    if (stages.size() == 1 && stages[0].device == p.origin) {
      stages[0].last_unit = p.n_units() - 1;  // only the origin: one stage, not two side by side
    } else {
      stages.push_back(Stage{p.origin, n_body, p.n_units() - 1});
    }
  }
  return stages;
}

}  // namespace

const char* objective_name(Objective objective) {
  switch (objective) {
    case Objective::latency:
      return "latency";
    case Objective::throughput:
      return "throughput";
  }
  return "?";
}

Expected<Objective> parse_objective(std::string_view name) {
  if (name == "latency") return Objective::latency;
  if (name == "throughput") return Objective::throughput;
  return make_error(ErrorCode::invalid_argument,
                    "unknown objective '" + std::string(name) + "' (expected latency or throughput)");
}

Expected<double> evaluate(const Profile& profile, const std::vector<Stage>& stages,
                          const SolveOptions& options) {
  LL_TRY(validate(profile));
  LL_TRY(check_structure(profile, stages, options));
  LL_TRY(check_memory(profile, stages));
  double total = 0.0;
  for (size_t i = 0; i < stages.size(); ++i) {
    double compute = 0, transfer = 0;
    stage_cost(profile, stages, i, compute, transfer);
    const double cost = compute + transfer;
    total = options.objective == Objective::latency ? total + cost : std::max(total, cost);
  }
  return total;
}

Expected<PlanResult> describe(const Profile& profile, std::vector<Stage> stages,
                              const SolveOptions& options) {
  LL_ASSIGN_OR_RETURN(double cost, evaluate(profile, stages, options));
  PlanResult r;
  r.objective = options.objective;
  r.ring = options.ring;
  r.cost_ms = cost;
  r.proven_optimal = false;
  r.solver_objective_ms = std::numeric_limits<double>::quiet_NaN();
  const std::vector<uint64_t> used = device_memory_use(profile, stages);
  for (size_t i = 0; i < stages.size(); ++i) {
    StageReport rep;
    rep.stage = stages[i];
    stage_cost(profile, stages, i, rep.compute_ms, rep.transfer_ms);
    rep.cost_ms = rep.compute_ms + rep.transfer_ms;
    for (int u = stages[i].first_unit; u <= stages[i].last_unit; ++u) {
      rep.memory_bytes = add_sat(rep.memory_bytes, profile.units[u].memory_bytes);
    }
    rep.device_memory_used_bytes = used[static_cast<size_t>(stages[i].device)];
    rep.device_memory_bytes = profile.devices[stages[i].device].memory_bytes;
    r.latency_ms += rep.cost_ms;
    r.max_stage_ms = std::max(r.max_stage_ms, rep.cost_ms);
    r.reports.push_back(rep);
  }
  r.stages = std::move(stages);
  return r;
}

Expected<double> batched_ms_per_token(const Profile& profile, const std::vector<Stage>& stages,
                                      const SolveOptions& options, const std::vector<int>& batch_tokens,
                                      const std::vector<double>& batch_factor) {
  LL_TRY(evaluate(profile, stages, options));
  if (batch_tokens.empty()) return make_error(ErrorCode::invalid_argument, "no decode batches");
  for (int b : batch_tokens) {
    if (b < 1) return make_error(ErrorCode::invalid_argument, "a decode batch carries no tokens");
  }
  for (double f : batch_factor) {
    if (!(f > 0) || !std::isfinite(f)) return make_error(ErrorCode::invalid_argument, "a batch factor is not positive");
  }
  auto factor = [&](int b) {
    if (b == 1) return 1.0;
    if (batch_factor.empty()) return static_cast<double>(b);
    if (static_cast<size_t>(b) <= batch_factor.size()) return batch_factor[static_cast<size_t>(b) - 1];
    return batch_factor.back() * b / static_cast<double>(batch_factor.size());
  };
  // (Per device: with ring the origin's two stages share its time.)
  std::vector<double> device_busy(static_cast<size_t>(profile.n_devices()), 0.0);
  double longest_trip = 0, n_tokens = 0;
  for (int b : batch_tokens) {
    double trip = 0;
    for (size_t i = 0; i < stages.size(); ++i) {
      double compute = 0, transfer = 0;
      stage_cost(profile, stages, i, compute, transfer);
      const int from = stages[i].device, to = i + 1 < stages.size() ? stages[i + 1].device : profile.origin;
      const double latency = from == to ? 0.0 : profile.latency_ms[from][to];
      const double cost = compute * factor(b) + latency + (transfer - latency) * b;
      device_busy[static_cast<size_t>(from)] += cost;
      trip += cost;
    }
    longest_trip = std::max(longest_trip, trip);
    n_tokens += b;
  }
  const double round = std::max(*std::max_element(device_busy.begin(), device_busy.end()), longest_trip);
  return round / n_tokens;
}

Expected<std::vector<Stage>> plan_even(const Profile& profile, int n_devices, const SolveOptions& options) {
  LL_TRY(validate(profile));
  const int n_dev = profile.n_devices(), n_units = profile.n_units();
  if (n_devices < 0 || n_devices > n_dev) {
    return make_error(ErrorCode::invalid_argument, "plan_even: " + std::to_string(n_devices) +
                                                       " devices asked for, the profile has " +
                                                       std::to_string(n_dev));
  }
  const int n_body = (options.ring && n_units > 1) ? n_units - 1 : n_units;
  const int k = std::min(n_devices == 0 ? n_dev : n_devices, n_body);
  std::vector<int> order = origin_first_order(profile);
  order.resize(static_cast<size_t>(k));
  std::vector<int> bounds;
  int first = 0;
  for (int i = 0; i + 1 < k; ++i) {
    first += n_body / k + (i < n_body % k ? 1 : 0);
    bounds.push_back(first);
  }
  return assemble(profile, order, bounds, n_body, options.ring);
}

Expected<std::vector<Stage>> plan_memory(const Profile& profile, const SolveOptions& options) {
  LL_TRY(validate(profile));
  const int n_units = profile.n_units();
  const int n_body = (options.ring && n_units > 1) ? n_units - 1 : n_units;
  const std::vector<int> order = origin_first_order(profile);
  double total = 0;
  for (int d : order) total += static_cast<double>(profile.devices[d].memory_bytes);
  std::vector<int> bounds;
  double cum = 0;
  int prev = 0;
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    cum += static_cast<double>(profile.devices[order[i]].memory_bytes);
    int b = total > 0 ? static_cast<int>(std::llround(static_cast<double>(n_body) * cum / total)) : n_body;
    b = std::clamp(b, prev, n_body);
    if (i == 0) b = std::max(b, 1);  // the origin holds unit 0 in any plan
    bounds.push_back(b);
    prev = b;
  }
  return assemble(profile, order, bounds, n_body, options.ring);
}

Expected<void> precheck_feasible(const Profile& p, const SolveOptions& o) {
  const int n_units = p.n_units(), o_dev = p.origin;
  const uint64_t origin_mem = p.devices[o_dev].memory_bytes;
  if (p.units[0].memory_bytes > origin_mem) {
    return make_error(ErrorCode::resource, "no plan fits: the origin " + device_label(p, o_dev) + " has " +
                                               format_bytes_exact(origin_mem) + " but " + unit_label(p, 0) +
                                               " needs " + format_bytes_exact(p.units[0].memory_bytes) +
                                               " (the first stage is always on the origin)");
  }
  if (o.ring && n_units > 1) {
    const uint64_t both = add_sat(p.units[0].memory_bytes, p.units[n_units - 1].memory_bytes);
    if (both > origin_mem) {
      return make_error(ErrorCode::resource, "no plan fits: in ring mode the origin " +
                                                 device_label(p, o_dev) + " must hold " + unit_label(p, 0) +
                                                 " and " + unit_label(p, n_units - 1) + ", " +
                                                 format_bytes_exact(both) + " together, but has " +
                                                 format_bytes_exact(origin_mem));
    }
  }
  int largest = 0;
  uint64_t total_cap = 0, total_need = 0;
  for (int d = 0; d < p.n_devices(); ++d) {
    if (p.devices[d].memory_bytes > p.devices[largest].memory_bytes) largest = d;
    total_cap = add_sat(total_cap, p.devices[d].memory_bytes);
  }
  for (int u = 0; u < n_units; ++u) {
    total_need = add_sat(total_need, p.units[u].memory_bytes);
    if (p.units[u].memory_bytes > p.devices[largest].memory_bytes) {
      return make_error(ErrorCode::resource, "no plan fits: " + unit_label(p, u) + " needs " +
                                                 format_bytes_exact(p.units[u].memory_bytes) +
                                                 " but the largest device " + device_label(p, largest) +
                                                 " has " +
                                                 format_bytes_exact(p.devices[largest].memory_bytes));
    }
  }
  if (total_need > total_cap) {
    return make_error(ErrorCode::resource, "no plan fits: the model needs " + format_bytes_exact(total_need) +
                                               " but all " + std::to_string(p.n_devices()) +
                                               " devices together have " + format_bytes_exact(total_cap) +
                                               ", " + format_bytes_exact(total_need - total_cap) + " short");
  }
  return {};
}

Error explain_infeasible(const Profile& p, const SolveOptions& o) {
  auto pre = precheck_feasible(p, o);
  if (!pre) return pre.error();
  uint64_t total_cap = 0, total_need = 0;
  for (const auto& d : p.devices) total_cap = add_sat(total_cap, d.memory_bytes);
  for (const auto& u : p.units) total_need = add_sat(total_need, u.memory_bytes);
  return make_error(
      ErrorCode::resource,
      "no plan fits: the model needs " + format_bytes(total_need) + " and the " +
          std::to_string(p.n_devices()) + " devices have " + format_bytes(total_cap) +
          " together, but each device holds one contiguous range of units (the origin the first" +
          std::string(o.ring ? " and the last" : "") + ") and no such split of the " +
          std::to_string(p.n_units()) + " units fits their memory");
}

bool keep_origin_to_ends(Profile& profile, bool ring) {
  if (profile.units.empty() || profile.origin < 0 || profile.origin >= profile.n_devices()) return false;
  uint64_t must_hold = profile.units.front().memory_bytes;
  if (ring && profile.units.size() > 1) must_hold += profile.units.back().memory_bytes;
  auto& origin = profile.devices[static_cast<size_t>(profile.origin)];
  if (must_hold >= origin.memory_bytes) return false;
  origin.memory_bytes = must_hold;
  return true;
}

}  // namespace ll::plan
