// Exact planner: every device order (ordered subsets of devices starting with the origin; in ring mode
// closed by the origin), and for each order a dynamic program over split points. Exponential in the
// number of devices, so it serves as the MILP's cross-check and as the MILP's final polish for the
// device order the MILP chose.
#include <algorithm>
#include <limits>

#include "plan/plan.h"

namespace ll::plan {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct SplitDp {
  const Profile& p;
  const std::vector<int>& order;
  Objective objective;
  std::vector<double> val;  // [(m + 1) * (n + 1)]
  std::vector<int> parent;  // start unit of the stage that ends just before column j
  int n = 0;

  double combine(double acc, double cost) const {
    return objective == Objective::latency ? acc + cost : std::max(acc, cost);
  }
  // Transfer after stage i (of the whole order) when its last unit is e: evaluate()'s rule.
  double transfer(int i, int e) const {
    return static_cast<size_t>(i) + 1 < order.size() ? p.hop_ms(order[i], order[i + 1], p.units[e].out_bytes)
                                                     : p.hop_ms(order[i], p.origin, p.token_bytes);
  }

  // Stages 0..m-1 of the order over units 0..n_units-1; stage 0 may hold at most cap0 bytes.
  double run(int m, int n_units, uint64_t cap0) {
    n = n_units;
    val.assign(static_cast<size_t>(m + 1) * (n + 1), kInf);
    parent.assign(val.size(), -1);
    val[0] = 0.0;
    for (int i = 0; i < m; ++i) {
      const int dev = order[i];
      const uint64_t cap = i == 0 ? cap0 : p.devices[dev].memory_bytes;
      const std::vector<double>& ms = p.devices[dev].unit_ms;
      const int last_end = n - 1 - (m - 1 - i);  // leave one unit for each later stage
      for (int j = i; j <= last_end; ++j) {
        const double acc = val[static_cast<size_t>(i) * (n + 1) + j];
        if (acc == kInf) continue;
        uint64_t mem = 0;
        double compute = 0.0;
        for (int e = j; e <= last_end; ++e) {
          mem = add_sat(mem, p.units[e].memory_bytes);
          if (mem > cap) break;  // sizes are non-negative: longer stages only get bigger
          compute += ms[e];
          const double v = combine(acc, compute + transfer(i, e));
          double& slot = val[static_cast<size_t>(i + 1) * (n + 1) + e + 1];
          if (v < slot) {
            slot = v;
            parent[static_cast<size_t>(i + 1) * (n + 1) + e + 1] = j;
          }
        }
      }
    }
    return val[static_cast<size_t>(m) * (n + 1) + n];
  }

  // Stages 0..m-1 of the last run(), which must have a finite result.
  std::vector<Stage> stages(int m) const {
    std::vector<Stage> out(static_cast<size_t>(m));
    int end = n;
    for (int i = m; i >= 1; --i) {
      const int start = parent[static_cast<size_t>(i) * (n + 1) + end];
      out[static_cast<size_t>(i - 1)] = Stage{order[i - 1], start, end - 1};
      end = start;
    }
    return out;
  }
};

}  // namespace

bool best_split_for_order(const Profile& p, const std::vector<int>& order, const SolveOptions& options,
                          SplitResult& out) {
  const int k = static_cast<int>(order.size()), n_units = p.n_units();
  if (k == 0 || k > n_units) return false;
  SplitDp dp{p, order, options.objective, {}, {}, 0};
  const bool shared_origin = options.ring && k >= 2;  // order[0] and order[k-1] are both the origin
  if (!shared_origin) {
    const double v = dp.run(k, n_units, p.devices[order[0]].memory_bytes);
    if (v == kInf) return false;
    out.stages = dp.stages(k);
    out.cost_ms = v;
    return true;
  }
  // The origin's two stages share its memory: fix where the last stage starts, then the first stage
  // gets what the last leaves.
  const int o = p.origin;
  const uint64_t cap = p.devices[o].memory_bytes;
  double best = kInf;
  for (int b = k - 1; b < n_units; ++b) {
    uint64_t mem_last = 0;
    double compute_last = 0.0;
    for (int u = b; u < n_units; ++u) {
      mem_last = add_sat(mem_last, p.units[u].memory_bytes);
      compute_last += p.devices[o].unit_ms[u];
    }
    if (mem_last > cap) continue;
    const double head = dp.run(k - 1, b, cap - mem_last);
    if (head == kInf) continue;
    const double v = dp.combine(head, compute_last + p.hop_ms(o, o, p.token_bytes));
    if (v < best) {
      best = v;
      out.stages = dp.stages(k - 1);
      out.stages.push_back(Stage{o, b, n_units - 1});
    }
  }
  if (best == kInf) return false;
  out.cost_ms = best;
  return true;
}

Expected<PlanResult> solve_exact(const Profile& profile, const SolveOptions& options) {
  LL_TRY(validate(profile));
  if (profile.n_devices() > kMaxExactDevices) {
    return make_error(ErrorCode::unsupported,
                      "the exact planner enumerates device orders and handles at most " +
                          std::to_string(kMaxExactDevices) + " devices, the profile has " +
                          std::to_string(profile.n_devices()));
  }
  LL_TRY(precheck_feasible(profile, options));
  const int n_dev = profile.n_devices(), n_units = profile.n_units(), o = profile.origin;
  bool found = false;
  SplitResult best, cur;
  auto consider = [&](const std::vector<int>& order) {
    if (best_split_for_order(profile, order, options, cur) && (!found || cur.cost_ms < best.cost_ms)) {
      best = cur;
      found = true;
    }
  };
  std::vector<int> prefix{o};
  std::vector<char> used(static_cast<size_t>(n_dev), 0);
  used[static_cast<size_t>(o)] = 1;
  // Depth-first over ordered subsets that start with the origin.
  auto visit = [&](auto&& self) -> void {
    if (!options.ring) {
      consider(prefix);
    } else {
      if (prefix.size() == 1) consider(prefix);  // everything on the origin, one stage
      // The origin twice in a row costs what one stage costs under latency: keep the one stage.
      if (prefix.size() > 1 || options.objective == Objective::throughput) {
        std::vector<int> closed = prefix;
        closed.push_back(o);
        consider(closed);
      }
    }
    const size_t max_len = static_cast<size_t>(options.ring ? n_units - 1 : n_units);
    if (prefix.size() >= max_len) return;
    for (int d = 0; d < n_dev; ++d) {
      if (used[static_cast<size_t>(d)]) continue;
      used[static_cast<size_t>(d)] = 1;
      prefix.push_back(d);
      self(self);
      prefix.pop_back();
      used[static_cast<size_t>(d)] = 0;
    }
  };
  visit(visit);
  if (!found) return explain_infeasible(profile, options);
  LL_ASSIGN_OR_RETURN(PlanResult r, describe(profile, std::move(best.stages), options));
  r.proven_optimal = true;
  return r;
}

}  // namespace ll::plan
