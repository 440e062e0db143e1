#include "runtime/probe.h"

#include <algorithm>

#include "plan/balance.h"

namespace ll::runtime {

WorkerProbe combine_probe_rounds(const std::vector<WorkerProbe>& rounds) {
  WorkerProbe p;
  if (rounds.empty()) return p;
  std::vector<double> block, full, bw;
  double link = rounds.front().link_ms;
  for (const auto& r : rounds) {
    block.push_back(r.block_ms);
    full.push_back(r.full_ms);
    bw.push_back(r.link_bw);
    link = std::min(link, r.link_ms);
  }
  p.block_ms = plan::median_of(block);
  p.full_ms = plan::median_of(full);
  p.head_ms = std::max(0.0, p.full_ms - p.block_ms);
  p.link_bw = plan::median_of(bw);
  p.link_ms = link;
  return p;
}

double stage_block_ms(double timed_ms, double wall_ms, double step_transfer_ms) {
  if (!(wall_ms > timed_ms)) return timed_ms;
  if (step_transfer_ms >= 0.8 * wall_ms) return timed_ms;
  return (timed_ms + wall_ms) / 2;
}

bool fix_odd_split(WorkerProbe& p, double ratio) {
  if (!(ratio > 0)) return false;
  const bool odd =
      !(p.block_ms > 0) || !(p.head_ms > ratio / 4 * p.block_ms) || !(p.head_ms < ratio * 4 * p.block_ms);
  if (!odd || !(p.full_ms > 0)) return false;
  p.block_ms = p.full_ms / (1 + ratio);
  p.head_ms = p.full_ms - p.block_ms;
  return true;
}

}  // namespace ll::runtime
