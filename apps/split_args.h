// The options that say how a model is split over the devices (`run`, `serve`): --ring, --split,
// --objective, --split-units, and choosing the stages from them once the workers are connected.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "plan/plan.h"
#include "runtime/coordinator.h"

namespace ll::apps {

struct SplitArgs {
  std::string split = "even", split_units, objective;
  bool ring = false;
  bool custom() const { return ring || !split_units.empty() || split != "even"; }
};

void add_split_options(CLI::App& app, SplitArgs& a);

struct ChosenSplit {
  std::vector<runtime::Stage> stages;
  std::vector<plan::StageReport> predicted;  // --split optimal: the planner's figures per stage
};

// `several`: more than one request at a time is expected (the default objective is throughput).
Expected<ChosenSplit> choose_split(const SplitArgs& a, runtime::Coordinator& c, const model::Model& model,
                                   bool several, bool verbose);

}  // namespace ll::apps
