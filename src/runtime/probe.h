// What profiling measures on one device, and how rounds of it are combined (pure functions, used
// by Coordinator::measure_profile and tested on their own).
#pragma once

#include <vector>

namespace ll::runtime {

// One device's figures from one profiling round, before the corrections relative to the origin.
struct WorkerProbe {
  double block_ms = 0, head_ms = 0;
  double full_ms = 0;  // block and head, one step
  double link_ms = 0;  // one way
  double link_bw = 1e12;
};

// The median (plan::median_of) of each figure over the rounds; the head is what the median full step takes
// beyond the median block; a link's latency is its best round's, as within a round.
WorkerProbe combine_probe_rounds(const std::vector<WorkerProbe>& rounds);

// A worker's block and head are the difference of two sets of steps; when its CPU is shared (other
// programs, a quota) that split can come out absurd: a head that costs nothing, a block a hundredth
// of the head. Then the full step, the sturdier figure, is split as the origin's is (`ratio`: the
// origin's head / block; same model, same kernels). Returns whether it did.
bool fix_odd_split(WorkerProbe& p, double ratio);

}  // namespace ll::runtime
