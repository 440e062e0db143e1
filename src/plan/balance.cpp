#include "plan/balance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace ll::plan {

namespace {

bool measured(double v) { return std::isfinite(v) && v >= 0; }

std::string fmt_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", ms);
  return buf;
}

}  // namespace

std::vector<double> speed_factors(const Profile& base, const std::vector<Stage>& stages,
                                  const std::vector<double>& measured_unit_ms, double min_share) {
  const int n_dev = base.n_devices();
  // Each unit's typical cost, the median over the devices: whether a device's units are a
  // negligible share of the work is a matter of the units, not of one device's profile (which a
  // busy CPU can make absurd).
  std::vector<double> typical(base.units.size(), 0.0);
  double total_typical = 0;
  for (size_t u = 0; u < base.units.size(); ++u) {
    std::vector<double> col;
    for (const auto& dev : base.devices) col.push_back(dev.unit_ms[u]);
    std::sort(col.begin(), col.end());
    typical[u] = col.size() % 2 == 1 ? col[col.size() / 2] : 0.5 * (col[col.size() / 2 - 1] + col[col.size() / 2]);
    total_typical += typical[u];
  }
  std::vector<double> factor(static_cast<size_t>(n_dev), std::nan(""));
  for (int d = 0; d < n_dev; ++d) {
    double prof = 0, meas = 0, share = 0;
    for (const Stage& st : stages) {
      if (st.device != d) continue;
      for (int u = st.first_unit; u <= st.last_unit; ++u) {
        const double m = static_cast<size_t>(u) < measured_unit_ms.size() ? measured_unit_ms[static_cast<size_t>(u)]
                                                                            : std::nan("");
        if (!measured(m)) continue;
        prof += base.devices[static_cast<size_t>(d)].unit_ms[static_cast<size_t>(u)];
        share += typical[static_cast<size_t>(u)];
        meas += m;
      }
    }
    if (prof > 0 && share > 0 && share >= min_share * total_typical) factor[static_cast<size_t>(d)] = meas / prof;
  }
  return factor;
}

Profile refresh_profile(const Profile& base, const std::vector<double>& factors) {
  Profile out = base;
  const int n_dev = base.n_devices();
  std::vector<double> known;
  for (int d = 0; d < n_dev && static_cast<size_t>(d) < factors.size(); ++d) {
    if (measured(factors[static_cast<size_t>(d)])) known.push_back(factors[static_cast<size_t>(d)]);
  }
  double median = 1.0;
  if (!known.empty()) {
    std::sort(known.begin(), known.end());
    const size_t n = known.size();
    median = n % 2 == 1 ? known[n / 2] : 0.5 * (known[n / 2 - 1] + known[n / 2]);
  }
  for (int d = 0; d < n_dev; ++d) {
    double f = static_cast<size_t>(d) < factors.size() ? factors[static_cast<size_t>(d)] : std::nan("");
    if (!measured(f)) f = median;
    for (double& v : out.devices[static_cast<size_t>(d)].unit_ms) v *= f;
  }
  return out;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  if (n == 0) return 0;
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<double> idle_factors(const Profile& base, const std::vector<double>& block_ms) {
  std::vector<double> out(base.devices.size(), std::nan(""));
  const int U = base.n_units();
  if (U < 3) return out;
  for (size_t d = 0; d < out.size() && d < block_ms.size(); ++d) {
    const double ms = block_ms[d];
    if (!(ms > 0) || !std::isfinite(ms)) continue;
    std::vector<double> blocks(base.devices[d].unit_ms.begin() + 1, base.devices[d].unit_ms.begin() + (U - 1));
    std::nth_element(blocks.begin(), blocks.begin() + static_cast<std::ptrdiff_t>(blocks.size() / 2), blocks.end());
    const double profiled = blocks[blocks.size() / 2];
    if (profiled > 0) out[d] = ms / profiled;
  }
  return out;
}

std::vector<bool> fill_idle_factors(const Profile& base, const std::vector<double>& block_ms,
                                    std::vector<double>& factors) {
  const std::vector<double> idle = idle_factors(base, block_ms);
  std::vector<bool> filled(factors.size(), false);
  for (size_t d = 0; d < factors.size() && d < idle.size(); ++d) {
    if (std::isnan(factors[d]) && !std::isnan(idle[d])) {
      factors[d] = idle[d];
      filled[d] = true;
    }
  }
  return filled;
}

std::vector<double> SpeedTracker::update(const std::vector<double>& now) {
  if (first_.size() < now.size()) {
    first_.resize(now.size(), std::nan(""));
    recent_.resize(now.size());
  }
  for (size_t d = 0; d < now.size(); ++d) {
    if (!measured(now[d])) continue;
    auto& r = recent_[d];
    r.push_back(now[d]);
    if (r.size() > k_recent) r.erase(r.begin());
    if (!measured(first_[d])) first_[d] = now[d];
  }
  std::vector<double> firsts;
  for (double f : first_) {
    if (measured(f)) firsts.push_back(f);
  }
  double typical = std::nan("");
  // ... but never slower than profiled: a device slowed before the first window must not make
  // the others look slow too.
  if (!firsts.empty()) typical = std::min(median_of(firsts), 1.0);
  std::vector<double> out(now.size());
  for (size_t d = 0; d < now.size(); ++d) {
    out[d] = d < recent_.size() && !recent_[d].empty() ? median_of(recent_[d]) : typical;
  }
  return out;
}

double move_cost_ms(const Profile& profile, const std::vector<Stage>& from, const std::vector<Stage>& to,
                    const MoveCost& cost) {
  auto holds = [&cost](const std::vector<Stage>& stages, int device, int unit) {
    for (const Stage& st : stages) {
      if (st.device == device && unit >= st.first_unit && unit <= st.last_unit) return true;
    }
    const auto d = static_cast<size_t>(device);
    return d < cost.preloaded.size() &&
           std::find(cost.preloaded[d].begin(), cost.preloaded[d].end(), unit) != cost.preloaded[d].end();
  };
  double slowest = 0;
  for (int d = 0; d < profile.n_devices(); ++d) {
    const double per_byte =
        static_cast<size_t>(d) < cost.load_ms_per_byte.size() ? cost.load_ms_per_byte[static_cast<size_t>(d)] : 0.0;
    if (per_byte <= 0) continue;
    double bytes = 0;
    for (const Stage& st : to) {
      if (st.device != d) continue;
      for (int u = st.first_unit; u <= st.last_unit; ++u) {
        if (!holds(from, d, u)) bytes += static_cast<double>(profile.units[static_cast<size_t>(u)].memory_bytes);
      }
    }
    slowest = std::max(slowest, bytes * per_byte);
  }
  return cost.replay_ms + cost.kv_ms + slowest;
}

Expected<std::optional<Proposal>> BalancePolicy::observe(double now_ms, const Profile& refreshed,
                                                         const std::vector<Stage>& current, const SolveOptions& solve,
                                                         double remaining_tokens, const MoveCost& cost) {
  verdict_.clear();
  LL_ASSIGN_OR_RETURN(const double current_cost, evaluate(refreshed, current, solve));
  if (switched_at_ms_ && now_ms - *switched_at_ms_ < options_.cooldown_ms) {
    over_since_ms_.reset();
    verdict_ = "settling after a switch (" + fmt_ms(now_ms - *switched_at_ms_) + " of " + fmt_ms(options_.cooldown_ms) +
               ")";
    return std::optional<Proposal>{};
  }
  auto best = plan::solve(refreshed, solve);
  if (!best) {  // no plan fits the refreshed profile: the running one is all there is
    over_since_ms_.reset();
    verdict_ = "no plan for the measured speeds: " + best.error().message;
    return std::optional<Proposal>{};
  }
  const std::string costs = "running plan " + fmt_ms(current_cost) + ", optimum " + fmt_ms(best->cost_ms);
  if (best->stages == current) {
    over_since_ms_.reset();
    verdict_ = costs + ": the running plan is the optimum";
    return std::optional<Proposal>{};
  }
  if (!(current_cost > (1.0 + options_.margin) * best->cost_ms)) {
    over_since_ms_.reset();
    verdict_ = costs + ": within the margin";
    return std::optional<Proposal>{};
  }
  if (!over_since_ms_) over_since_ms_ = now_ms;
  if (now_ms - *over_since_ms_ < options_.sustain_ms) {
    verdict_ = costs + ": over the margin for " + fmt_ms(now_ms - *over_since_ms_) + " of " +
               fmt_ms(options_.sustain_ms);
    return std::optional<Proposal>{};
  }
  Proposal p;
  p.stages = best->stages;
  p.current_cost_ms = current_cost;
  p.best_cost_ms = best->cost_ms;
  // The replay was measured on the running plan (its prefill) and runs on the proposed one, which
  // is faster by best / current: a prefill timed on a device that has since been throttled must not
  // make every move look too dear.
  MoveCost scaled = cost;
  scaled.replay_ms *= std::min(1.0, best->cost_ms / current_cost);
  p.move_ms = move_cost_ms(refreshed, current, best->stages, scaled);
  p.gain_ms = (current_cost - best->cost_ms) * std::max(0.0, remaining_tokens);
  if (!(p.gain_ms > p.move_ms)) {  // (still over: asked again next window)
    verdict_ = costs + ": a switch would cost about " + fmt_ms(p.move_ms) + " and save about " + fmt_ms(p.gain_ms) +
               " over the " + std::to_string(static_cast<long long>(std::lround(remaining_tokens))) +
               " tokens to come";
    return std::optional<Proposal>{};
  }
  // Why: the stages whose cost moved most from what the plan was made for.
  auto now = describe(refreshed, current, solve);
  p.reason = std::string("the running plan costs ") + fmt_ms(current_cost) + " per token by " +
             objective_name(solve.objective) + ", the optimum for the measured speeds " + fmt_ms(best->cost_ms) +
             " (over the " + std::to_string(static_cast<int>(std::lround(options_.margin * 100))) + "% margin for " +
             fmt_ms(now_ms - *over_since_ms_) + "); switching costs about " + fmt_ms(p.move_ms) + ", saves about " +
             fmt_ms(p.gain_ms);
  if (now) {
    std::string stages;
    for (const auto& r : now->reports) {
      stages.append(stages.empty() ? "" : ", ")
          .append(refreshed.devices[static_cast<size_t>(r.stage.device)].name)
          .append(" ")
          .append(fmt_ms(r.cost_ms));
    }
    p.reason += "; measured stage costs: " + stages;
  }
  over_since_ms_.reset();
  verdict_ = costs + ": switch";
  return std::optional<Proposal>{std::move(p)};
}

void BalancePolicy::switched(double now_ms) {
  switched_at_ms_ = now_ms;
  over_since_ms_.reset();
}

}  // namespace ll::plan
