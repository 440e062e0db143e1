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
  // What block_ms was made of (stage_block_ms): the worker's compute timers per step, and the wall
  // time per step of the pipelined block-only steps at the coordinator.
  double block_timed_ms = 0, block_wall_ms = 0;
};

// A worker's block time from one round. Its compute timers (`timed_ms` per step) miss what happens
// between the steps: under a CPU quota (a phone that throttles, a cgroup) a step shorter than the
// quota's slice often runs whole, and the pause falls while the worker waits on its socket, so a
// burst of single-block steps looks faster than the device is. The steps are sent back to back, so
// their wall time per step at the coordinator (`wall_ms`, latency both ways taken off) is what the
// worker sustains when it never idles. A stage in a run comes between the two: it takes the pauses
// inside its one long step, but the device idles while the other stages work and starts each stage
// on a fresh slice (phones-3, phone-b at 60 %: timers 4.7-5.1 ms, wall 6.3-6.4, in a run 5.3-5.7 ms
// per block). Returns the mean of the two, or `timed_ms` when the wall time is not longer, or when
// the link is what bounds the steps (one step's hidden state takes `step_transfer_ms` ≥ 80 % of
// `wall_ms`: then it says nothing about compute).
double stage_block_ms(double timed_ms, double wall_ms, double step_transfer_ms);

// The median (plan::median_of) of each figure over the rounds; the head is what the median full step takes
// beyond the median block; a link's latency is its best round's, as within a round.
WorkerProbe combine_probe_rounds(const std::vector<WorkerProbe>& rounds);

// A worker's block and head are the difference of two sets of steps; when its CPU is shared (other
// programs, a quota) that split can come out absurd: a head that costs nothing, a block a hundredth
// of the head. Then the full step, the sturdier figure, is split as the origin's is (`ratio`: the
// origin's head / block; same model, same kernels). Returns whether it did.
bool fix_odd_split(WorkerProbe& p, double ratio);

}  // namespace ll::runtime
