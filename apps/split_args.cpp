#include "apps/split_args.h"

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
  app.add_option("--split-units", a.split_units,
                 "Explicit unit ranges per stage, e.g. 0-0,1-3,4-6: the origin's first (and last with --ring), "
                 "then one per worker")->excludes(split)->group("Distributed");
}

Expected<ChosenSplit> choose_split(const SplitArgs& a, runtime::Coordinator& c, const model::Model& model,
                                   bool several, bool verbose, int profile_steps) {
  const int64_t n_units = model.hparams().n_units();
  ChosenSplit out;
  if (!a.split_units.empty()) {
    LL_ASSIGN_OR_RETURN(out.stages, runtime::parse_split_units(a.split_units, n_units, c.n_workers(), a.ring));
  } else if (a.split == "memory") {
    std::vector<uint64_t> unit_bytes, memory;
    for (int64_t u = 0; u < n_units; ++u) unit_bytes.push_back(model.unit_weight_bytes(u));
    for (int w = 1; w <= c.n_workers(); ++w) {
      const auto& h = c.worker_hello(w);
      memory.push_back(h.memory_limit_bytes > 0 ? h.memory_limit_bytes : h.free_memory_bytes);
    }
    LL_ASSIGN_OR_RETURN(out.stages, runtime::split_memory(unit_bytes, memory, a.ring));
  } else if (a.split == "optimal") {
    LL_ASSIGN_OR_RETURN(auto profile, c.measure_profile(profile_steps));
    plan::SolveOptions so;
    so.ring = a.ring;
    so.objective = a.objective.empty() ? (several ? plan::Objective::throughput : plan::Objective::latency)
                                       : *plan::parse_objective(a.objective);
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
