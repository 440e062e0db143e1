#include "apps/split_args.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "runtime/split.h"

namespace ll::apps {

void add_split_options(CLI::App& app, SplitArgs& a) {
  app.add_flag("--ring", a.ring, "The origin also runs the output head: token ids and logits never leave it")
      ->group("Distributed");
  auto* split = app.add_option("--split", a.split,
                               "optimal: measure the devices (as `lingua profile`) and solve the assignment MILP "
                               "(may keep every unit here when the workers would only slow it down); even: blocks "
                               "spread evenly over the workers (head with the last; LinguaLinked's baseline); "
                               "memory: in proportion to their memory (as llama.cpp RPC and exo)")
                    ->check(CLI::IsMember({"even", "memory", "optimal"}))->capture_default_str()->group("Distributed");
  a.split_option = split;
  app.add_option("--objective", a.objective,
                 "For --split optimal: latency (one request's time per token) or throughput (the slowest stage); "
                 "default: throughput with several prompts and --parallel > 1, else latency")
      ->check(CLI::IsMember({"latency", "throughput"}))->group("Distributed");
  app.add_flag("--no-balance", a.no_balance,
               "With --split optimal: keep the first plan even when a device of it slows down or speeds up (by default "
               "the devices' timings are watched while generating and units move when a re-solved plan is "
               "faster by more than --balance-margin)")->group("Distributed");
  app.add_option("--balance-margin", a.balance_margin,
                 "Move units only when the running plan costs more than the optimum for the measured speeds by "
                 "this fraction, for 1 s on end")
      ->check(CLI::Range(0.0, 10.0))->capture_default_str()->group("Distributed");
  app.add_option("--split-units", a.split_units,
                 "Explicit unit ranges per stage, e.g. 0-0,1-3,4-6: the origin's first (and last with --ring), "
                 "then one per worker")->excludes(split)->group("Distributed");
}

namespace {

// Windows in which more than this share of the tokens were prompt tokens do not measure speed.
constexpr double kMaxPromptShare = 0.25;

// A split made for workers 1..workers.size(), moved onto `workers` (cluster indices).
std::vector<runtime::Stage> onto_workers(std::vector<runtime::Stage> stages, const std::vector<int>& workers) {
  for (auto& st : stages) {
    if (st.device != 0) st.device = workers[static_cast<size_t>(st.device - 1)];
  }
  return stages;
}

// --split memory over `workers`: in proportion to each one's --memory-limit or free memory.
Expected<std::vector<runtime::Stage>> split_by_memory(const runtime::Coordinator& c, const model::Model& model,
                                                      const std::vector<int>& workers, bool ring) {
  std::vector<uint64_t> unit_bytes, memory;
  for (int64_t u = 0; u < model.n_units(); ++u) unit_bytes.push_back(model.unit_weight_bytes(u));
  for (int w : workers) {
    const auto& h = c.worker_hello(w);
    memory.push_back(h.memory_limit_bytes > 0 ? h.memory_limit_bytes : h.free_memory_bytes);
  }
  LL_ASSIGN_OR_RETURN(auto stages, runtime::split_memory(unit_bytes, memory, ring));
  return onto_workers(std::move(stages), workers);
}

// `p` with only the devices in `keep` (indices, the origin first), in that order.
plan::Profile keep_devices(const plan::Profile& p, const std::vector<int>& keep) {
  plan::Profile out = p;
  out.devices.clear();
  out.latency_ms.assign(keep.size(), std::vector<double>(keep.size(), 0.0));
  out.bandwidth_bytes_per_s.assign(keep.size(), std::vector<double>(keep.size(), 1e12));
  for (size_t a = 0; a < keep.size(); ++a) {
    out.devices.push_back(p.devices[static_cast<size_t>(keep[a])]);
    for (size_t b = 0; b < keep.size(); ++b) {
      out.latency_ms[a][b] = p.latency_ms[static_cast<size_t>(keep[a])][static_cast<size_t>(keep[b])];
      out.bandwidth_bytes_per_s[a][b] = p.bandwidth_bytes_per_s[static_cast<size_t>(keep[a])][static_cast<size_t>(keep[b])];
    }
  }
  out.origin = 0;
  return out;
}

}  // namespace

Expected<void> Resplitter::take_joined() {
  if (!chosen.profile || coordinator == nullptr) return {};
  for (const runtime::JoinedDevice& j : coordinator->joined()) {
    if (j.device < chosen.profile->n_devices()) continue;  // taken already
    if (j.device != chosen.profile->n_devices()) {
      return make_error(ErrorCode::internal, "worker " + std::to_string(j.device) + " joined out of order");
    }
    LL_TRY(plan::add_device(*chosen.profile, j.profile, j.link_latency_ms, j.link_bandwidth_bytes_per_s));
  }
  return {};
}

Expected<std::vector<runtime::Stage>> Resplitter::operator()(const std::vector<int>& alive) {
  LL_TRY(take_joined());
  if (chosen.profile) {  // --split optimal
    std::vector<int> keep{0};
    keep.insert(keep.end(), alive.begin(), alive.end());
    LL_ASSIGN_OR_RETURN(plan::PlanResult solved, plan::solve(keep_devices(*chosen.profile, keep), chosen.solve));
    for (auto& stage : solved.stages) stage.device = keep[static_cast<size_t>(stage.device)];
    return solved.stages;
  }
  if (alive.empty()) {
    return make_error(ErrorCode::resource, "no worker is left to hold units 1-" + std::to_string(model->n_units() - 1));
  }
  if (args.split == "memory") return split_by_memory(*coordinator, *model, alive, args.ring);
  LL_ASSIGN_OR_RETURN(auto stages, runtime::split_even(model->n_units(), static_cast<int>(alive.size()), args.ring));
  return onto_workers(std::move(stages), alive);
}

Expected<runtime::BalanceDecision> Resplitter::rebalance(const runtime::MonitorSample& m) {
  if (!chosen.profile) return runtime::BalanceDecision{};  // even / memory / explicit: baselines
  LL_TRY(take_joined());
  std::vector<int> keep{0};
  keep.insert(keep.end(), m.alive_workers.begin(), m.alive_workers.end());
  const plan::Profile base = keep_devices(*chosen.profile, keep);
  auto index_of = [&](int device) {
    for (size_t k = 0; k < keep.size(); ++k) {
      if (keep[k] == device) return static_cast<int>(k);
    }
    return -1;
  };
  std::vector<plan::Stage> current = m.stages;
  for (auto& st : current) {
    st.device = index_of(st.device);
    if (st.device < 0) return make_error(ErrorCode::internal, "the running plan uses a worker that was dropped");
  }
  // Speed factors by cluster device (SpeedTracker: the last measured, else how the others first ran).
  // (The window's own timings: SpeedTracker's median of three is the smoothing; the moving estimate
  // on top of it would only delay a real change.)
  const std::vector<double> now =
      plan::speed_factors(base, current, m.window_unit_ms.empty() ? m.unit_ms : m.window_unit_ms);
  std::vector<double> by_device(chosen.profile->devices.size(), std::nan(""));
  for (size_t k = 0; k < keep.size(); ++k) by_device[static_cast<size_t>(keep[k])] = now[k];
  // (Windows right after a switch carry the replay's batches, and windows mostly of prompt batches
  // run far cheaper per token than decoding: no measure of speed. At the start of `run --local 2
  // --parallel 2` the two prompts' windows, rolling out of SpeedTracker's median at different
  // times on the two workers, made one look twice as fast as the other for a second and moved units.)
  if (policy.settling(m.steady_ms) || m.window_prompt_share > kMaxPromptShare) {
    std::fill(by_device.begin(), by_device.end(), std::nan(""));
  }
  // Devices out of the plan that were re-measured (idle probes): their block time against the
  // profile's, so one that recovered (or was profiled on a busy CPU) is seen as it runs now.
  std::vector<double> idle_ms(chosen.profile->devices.size(), std::nan(""));
  for (size_t d = 0; d < idle_ms.size() && d < m.idle_block_ms.size(); ++d) idle_ms[d] = m.idle_block_ms[d];
  const std::vector<bool> probed = plan::fill_idle_factors(*chosen.profile, idle_ms, by_device);
  const std::vector<double> tracked = speeds.update(by_device);
  std::vector<double> factors;
  for (int d : keep) factors.push_back(tracked[static_cast<size_t>(d)]);
  const plan::Profile fresh = plan::refresh_profile(base, factors);
  plan::MoveCost cost;
  // The live sequences' KV caches move through the origin (out of their old holders, into the new
  // ones): twice their bytes over the slowest link.
  double slowest_bw = 1e12;
  for (size_t k = 1; k < keep.size(); ++k) slowest_bw = std::min(slowest_bw, fresh.bandwidth_bytes_per_s[0][k]);
  const double kv_bytes = model == nullptr ? 0.0
                                          : static_cast<double>(m.n_replay_tokens) *
                                                static_cast<double>(model->hparams().n_layer) *
                                                static_cast<double>(model->hparams().kv_dim()) * 4;
  cost.kv_ms = 2 * kv_bytes * 1000 / slowest_bw;
  bool any_streamed = false;
  for (int d : keep) {
    const auto& b = m.bytes_streamed[static_cast<size_t>(d)];
    any_streamed = any_streamed || (b && *b > 0);
  }
  for (size_t k = 0; k < keep.size(); ++k) {
    const auto& b = m.bytes_streamed[static_cast<size_t>(keep[k])];
    // A worker never loaded yet is taken to be like the others.
    const bool streams = keep[k] != 0 && (b ? *b > 0 : any_streamed);
    cost.load_ms_per_byte.push_back(streams ? 1000.0 / fresh.bandwidth_bytes_per_s[0][k] : 0.0);
    const auto d = static_cast<size_t>(keep[k]);
    cost.preloaded.push_back(d < m.spare_units.size() ? m.spare_units[d] : std::vector<int>{});
  }
  // (The steady clock: `lingua serve` calls generate() once per batch, and the policy's windows and
  // cooldown run across them.)
  LL_ASSIGN_OR_RETURN(auto proposal, policy.observe(m.steady_ms, fresh, current, chosen.solve, m.remaining_tokens, cost));
  runtime::BalanceDecision out;
  out.note = "speed vs profile";
  for (size_t k = 0; k < keep.size(); ++k) {
    char part[64];
    std::snprintf(part, sizeof part, " %.2fx", factors[k]);
    out.note.append(k == 0 ? " " : ", ").append(base.devices[k].name);
    if (std::isnan(factors[k])) {
      out.note.append(" not measured yet");
      continue;
    }
    out.note.append(part);
    if (probed[static_cast<size_t>(keep[k])]) {
      out.note.append(" (re-measured out of the plan)");
    } else if (std::isnan(now[k])) {
      out.note.append(" (not measured now)");
    }
  }
  out.note.append("; ").append(policy.verdict());
  if (!proposal) return out;
  policy.switched(m.steady_ms);
  runtime::Rebalance next;
  next.stages = proposal->stages;
  for (auto& st : next.stages) st.device = keep[static_cast<size_t>(st.device)];
  next.reason = proposal->reason;
  out.next = std::move(next);
  return out;
}

void Resplitter::install(const std::shared_ptr<Resplitter>& self, runtime::CoordinatorOptions& co) {
  if (!self->args.split_units.empty()) return;
  co.replan = [self](const std::vector<int>& alive) { return (*self)(alive); };
  if (self->args.no_balance) return;
  self->policy = plan::BalancePolicy(plan::BalanceOptions{self->args.balance_margin, 1000, 3000});
  co.rebalance = [self](const runtime::MonitorSample& m) { return self->rebalance(m); };
}

Expected<ChosenSplit> choose_split(const SplitArgs& a, runtime::Coordinator& c, const model::Model& model,
                                   bool several, bool verbose, int profile_steps) {
  const int64_t n_units = model.hparams().n_units();
  ChosenSplit out;
  if (!a.split_units.empty()) {
    LL_ASSIGN_OR_RETURN(out.stages, runtime::parse_split_units(a.split_units, n_units, c.n_workers(), a.ring));
  } else if (a.split == "memory") {
    std::vector<int> all(static_cast<size_t>(c.n_workers()));
    for (int w = 1; w <= c.n_workers(); ++w) all[static_cast<size_t>(w - 1)] = w;
    LL_ASSIGN_OR_RETURN(out.stages, split_by_memory(c, model, all, a.ring));
  } else if (a.split == "optimal") {
    LL_ASSIGN_OR_RETURN(auto profile, c.measure_profile(profile_steps));
    plan::SolveOptions so;
    so.ring = a.ring;
    so.objective = a.objective.empty() ? (several ? plan::Objective::throughput : plan::Objective::latency)
                                       : *plan::parse_objective(a.objective);
    // The profile timed each device alone; pipelined, the origin's blocks would run on the cores the
    // local workers compute on. (One request at a time computes on one stage at a time: a latency
    // plan may still use the origin.)
    if (a.origin_shares_cores && so.objective == plan::Objective::throughput &&
        plan::keep_origin_to_ends(profile, a.ring) && verbose) {
      std::fprintf(stderr, "lingua: the origin and its --local workers have more threads than this machine has "
                           "cores: the origin keeps the %s only, the workers compute\n",
                   a.ring ? "embedding and the head" : "embedding");
    }
    so.time_limit_s = 10;
    LL_ASSIGN_OR_RETURN(auto solved, plan::solve(profile, so));
    if (verbose) {
      std::fprintf(stderr, "lingua: optimal plan by %s: %.3f ms per token (%s)\n", plan::objective_name(so.objective),
                   solved.cost_ms, solved.proven_optimal ? "proven optimal" : "best found in the time limit");
    }
    bool uses_workers = false;
    for (const auto& st : solved.stages) uses_workers = uses_workers || st.device != 0;
    if (!uses_workers && verbose) {
      std::fprintf(stderr, "lingua: the plan keeps every unit on this device: the workers would only slow it down\n");
    }
    out.stages = solved.stages;
    out.predicted = solved.reports;
    out.profile = std::move(profile);
    out.solve = so;
  } else {
    LL_ASSIGN_OR_RETURN(out.stages, runtime::split_even(n_units, c.n_workers(), a.ring));
  }
  return out;
}

}  // namespace ll::apps
