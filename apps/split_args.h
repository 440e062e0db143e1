// The options that say how a model is split over the devices (`run`, `serve`): --ring, --split,
// --objective, --split-units, and choosing the stages from them once the workers are connected.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "plan/balance.h"
#include "plan/plan.h"
#include "runtime/coordinator.h"

namespace ll::apps {

struct SplitArgs {
  std::string split = "optimal", split_units, objective;
  bool ring = false;
  bool no_balance = false;      // --no-balance
  double balance_margin = 0.15;  // --balance-margin
  CLI::Option* split_option = nullptr;  // set by add_split_options: whether --split was given
  // --local with more threads (the origin's and its workers') than this machine has cores: they share
  // them, so a throughput plan (every stage computing at once) keeps the origin to the units it must
  // hold (the embedding, and the head with --ring). Set by the command
  // (runtime::oversubscribes_cores).
  bool origin_shares_cores = false;
  // Any split option given (they need --local or --cluster).
  bool custom() const {
    return ring || !split_units.empty() || (split_option != nullptr && split_option->count() > 0);
  }
};

void add_split_options(CLI::App& app, SplitArgs& a);

struct ChosenSplit {
  std::vector<runtime::Stage> stages;
  std::vector<plan::StageReport> predicted;  // --split optimal: the planner's figures per stage
  std::optional<plan::Profile> profile;      // --split optimal: what was measured (for re-plans)
  plan::SolveOptions solve;                  // --split optimal: how it was solved
};

// `several`: more than one request at a time is expected (the default objective is throughput).
// `profile_steps`: timed steps of each kind per device for --split optimal (two warm-up steps come
// first, so the context must hold 2 * profile_steps + 3 tokens).
Expected<ChosenSplit> choose_split(const SplitArgs& a, runtime::Coordinator& c, const model::Model& model,
                                   bool several, bool verbose, int profile_steps = 8);

// A failover's new plan, by the rule that chose the first one: even / memory re-split over the
// surviving workers, optimal re-solves the measured profile without the lost devices. An explicit
// --split-units is kept as given, so there is none (install() leaves CoordinatorOptions::replan empty).
// Fill `chosen`, `coordinator` and `model` once the first split is loaded.
struct Resplitter {
  SplitArgs args;
  ChosenSplit chosen;
  const runtime::Coordinator* coordinator = nullptr;
  const model::Model* model = nullptr;

  // Balancing (--split optimal, unless --no-balance): the profile measured at the start, refreshed
  // with each monitoring window's timings, judged by plan::BalancePolicy.
  plan::BalancePolicy policy;
  plan::SpeedTracker speeds;  // by device of the cluster

  // `alive`: the surviving workers' indices (1-based, ascending).
  Expected<std::vector<runtime::Stage>> operator()(const std::vector<int>& alive);
  // Adds the workers that joined since (Coordinator::joined) to the measured profile, so plans can
  // use them (optimal only; even and memory read the coordinator's workers as they are).
  Expected<void> take_joined();
  // One monitoring window: a better plan for the measured speeds, when the policy says so.
  Expected<runtime::BalanceDecision> rebalance(const runtime::MonitorSample& m);
  // Sets co.replan to call *self (unless the split is explicit), and co.rebalance unless --no-balance
  // (it proposes nothing unless the split is optimal).
  static void install(const std::shared_ptr<Resplitter>& self, runtime::CoordinatorOptions& co);
};

}  // namespace ll::apps
