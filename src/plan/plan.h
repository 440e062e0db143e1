// Plans and their cost: which device runs which contiguous range of units, and what that costs
// under the profile's cost model (docs/planner.md has the model and the MILP written out).
//
// A plan is an ordered list of stages (device, first_unit, last_unit), each non-empty, covering units
// 0..U-1 contiguously. The first stage is on the origin. A device hosts at most one stage, except with
// `ring`, where the last stage must also be on the origin (which then hosts two). A device's stages
// must fit in its memory.
//
//   hop(a, b, bytes) = 0 if a == b, else latency_ms[a][b] + 1000 * bytes / bandwidth_bytes_per_s[a][b]
//   stage cost       = sum of unit_ms[d][u] over its units + hop(d, next stage's device, out_bytes of
//                      its last unit); the last stage pays hop(d, origin, token_bytes) instead
//   latency          = sum of stage costs (one request's time per token)
//   throughput       = largest stage cost (time between tokens when the pipeline is full)
//
// With ring the origin's two stages may be adjacent (hop 0); under latency that costs what one stage
// costs and the solvers keep one stage, under throughput it can be cheaper (docs/planner.md).
//
// Everything here is a pure function of its arguments: no I/O, deterministic (up to where a time limit
// stops the search).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "plan/profile.h"

namespace ll::plan {

enum class Objective { latency, throughput };
const char* objective_name(Objective objective);
Expected<Objective> parse_objective(std::string_view name);

struct Stage {
  int device = 0;
  int first_unit = 0;
  int last_unit = 0;  // inclusive
  bool operator==(const Stage&) const = default;
};

struct SolveOptions {
  Objective objective = Objective::latency;
  bool ring = false;         // the last stage runs on the origin too (tokens never leave it)
  double time_limit_s = 10;  // wall-clock limit for the MILP; its best plan so far is returned
  // Start the MILP from the best cheap plan (baselines, device orders with their best split, local
  // search over orders). Tests turn it off to see the MILP find optima unaided.
  bool warm_start = true;
  // When every block (units 1..U-2) costs, weighs and hands over the same — as measured profiles do —
  // solve the compact model over device orders and block counts instead of the interval models.
  // Tests turn it off to hold one against the other.
  bool use_block_model = true;
};

// One stage's share of the cost, for tables and for comparing with measurements.
struct StageReport {
  Stage stage;
  double compute_ms = 0;                  // sum of unit_ms over the stage's units
  double transfer_ms = 0;                 // hop to the next stage (the last: token back to the origin)
  double cost_ms = 0;                     // compute_ms + transfer_ms
  uint64_t memory_bytes = 0;              // this stage's units
  uint64_t device_memory_used_bytes = 0;  // all stages on this device (the origin may host two)
  uint64_t device_memory_bytes = 0;       // what the device has
};

struct PlanResult {
  Objective objective = Objective::latency;
  bool ring = false;
  std::vector<Stage> stages;
  std::vector<StageReport> reports;  // one per stage
  double cost_ms = 0;                // by the objective; exactly evaluate(profile, stages, options)
  double latency_ms = 0;             // sum of stage costs
  double max_stage_ms = 0;           // largest stage cost
  bool proven_optimal = false;
  // For the record, what CBC itself reported before the exact re-costing: latency — its objective
  // (equal to cost_ms up to solver tolerances); throughput — the cost of the last plan a feasibility
  // MILP returned (>= cost_ms). NaN when CBC returned no plan (the warm start was already optimal).
  double solver_objective_ms = 0;
  // Which MILP found it: "blocks" (repeated blocks: device order and block counts), "intervals"
  // (latency), "bisection" (throughput); "" when not solved by a MILP.
  const char* solver_model = "";
};

// Checks that `stages` is a plan under the rules above (structure, then memory) and returns its cost
// by the objective. Structural faults are ErrorCode::invalid_argument, memory ErrorCode::resource.
Expected<double> evaluate(const Profile& profile, const std::vector<Stage>& stages,
                          const SolveOptions& options);

// evaluate() plus the per-stage breakdown; proven_optimal is false.
Expected<PlanResult> describe(const Profile& profile, std::vector<Stage> stages, const SolveOptions& options);

// Decoding several sequences at once in decode batches that follow each other through the stages
// (`batch_tokens[i]`: the sequences batch i carries, one token each per step). At each stage a batch
// of b tokens computes the stage's unit_ms times `batch_factor[b - 1]` (a step of b tokens against
// one: the weights are read once for all; past the end of the vector, the last factor grows in
// proportion to b) and hops the latency plus b tokens' bytes. A round — every batch once through
// every stage — takes as long as its busiest device (with ring the origin's two stages share it),
// or as its slowest batch's trip through all the stages, whichever is longer. Returns ms per token
// generated: the round over its tokens. One batch of one token gives the latency cost; one token in
// each of as many batches as stages, the throughput cost (when no batch's trip is longer).
Expected<double> batched_ms_per_token(const Profile& profile, const std::vector<Stage>& stages,
                                      const SolveOptions& options, const std::vector<int>& batch_tokens,
                                      const std::vector<double>& batch_factor);

// Baselines. Both take devices in profile order starting with the origin; with `ring` the last unit
// (the output head) is a stage of its own on the origin, as LinguaLinked's ring mode keeps it there.
// The plans may not fit in memory: evaluate() says so.
//
// plan_even: units spread evenly over the first n_devices devices (0 = all; fewer when there are fewer
// units), earlier stages taking the remainder — LinguaLinked's baseline.
Expected<std::vector<Stage>> plan_even(const Profile& profile, int n_devices, const SolveOptions& options);
// plan_memory: units in proportion to each device's memory_bytes, by cumulative share rounded to the
// nearest unit (as llama.cpp's RPC tensor split and exo's memory-weighted partitioning do); devices
// whose share rounds to nothing are skipped, but the origin always holds unit 0.
Expected<std::vector<Stage>> plan_memory(const Profile& profile, const SolveOptions& options);

// Optimal plan by MILPs solved with COIN-OR CBC (milp.cpp; latency: one MILP, throughput: bisection
// over feasibility MILPs). When the time limit stops the search the best plan so far is returned with
// proven_optimal = false. No feasible plan: ErrorCode::resource, with a message that says what is
// short. Safe to call from several threads (calls into CBC are serialised).
Expected<PlanResult> solve(const Profile& profile, const SolveOptions& options);

// Lowers the origin's memory_bytes to what the units it must hold take (the first, and with `ring`
// the last), so that a plan puts every other unit on the other devices: for an origin that shares its
// cores with them (--local workers on a machine with fewer cores than their threads), where the
// profile's figures, each device timed alone, do not hold while all stages compute at once. Returns
// whether it lowered anything.
bool keep_origin_to_ends(Profile& profile, bool ring);

// Optimal plan by enumerating device orders (ordered subsets starting at the origin) and, for each,
// an exact dynamic program over split points (exact.cpp). For cross-checking the MILP; at most
// kMaxExactDevices devices.
inline constexpr int kMaxExactDevices = 8;
Expected<PlanResult> solve_exact(const Profile& profile, const SolveOptions& options);

// The best split points for a fixed sequence of stage devices (order[0] is the origin; with ring,
// order.back() is the origin too; no other repeats). Returns false when no split fits.
struct SplitResult {
  std::vector<Stage> stages;
  double cost_ms = 0;
};
bool best_split_for_order(const Profile& profile, const std::vector<int>& order, const SolveOptions& options,
                          SplitResult& out);

// The reason no plan exists, as precisely as cheap checks allow ("the origin 'a' has 500 bytes but
// unit 0 'embed' needs 1000", "the model needs ... but all devices together have ..."). Used by both
// solvers once they know there is none; `precheck` returns an Error only when a cheap check proves it.
Error explain_infeasible(const Profile& profile, const SolveOptions& options);
Expected<void> precheck_feasible(const Profile& profile, const SolveOptions& options);

}  // namespace ll::plan
