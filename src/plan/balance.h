// Runtime load balancing, the policy half: when to move units and where to (the mechanism, which
// moves them, is the coordinator's). Everything here is pure: measurements in, a decision out.
//
//   refresh_profile  the profile measured at the start, with what the devices of the running plan
//                    took per token since: each device's units scale by its factor (measured /
//                    profiled over the units it runs, speed_factors). Devices that
//                    hold no units have nothing to measure: the caller passes the factor last seen
//                    for them (so a device the plan left because it was slow is not taken back at
//                    once), or the median of the measured ones is used.
//   BalancePolicy    fed one refreshed profile per monitoring window. It proposes the optimum of the
//                    refreshed profile when the running plan costs more than that optimum by more
//                    than `margin` for at least `sustain_ms` — and only when the time saved over the
//                    tokens still to come exceeds what the switch costs (replaying the live
//                    sequences' tokens, streaming weights to devices that lack them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "plan/plan.h"
#include "plan/profile.h"

namespace ll::plan {

// Per device, measured / profiled time over the units it runs in `stages`. `measured_unit_ms[u]`:
// ms per token unit u took on the device that runs it over the last window (moving estimate);
// negative or NaN = not measured. NaN for devices without measured units, and for those whose
// measured units are a negligible share of the work (under `min_share` of all units' cost, each unit
// at its median over the devices; e.g. the embedding alone): their timings are too small to scale a
// block by.
std::vector<double> speed_factors(const Profile& base, const std::vector<Stage>& stages,
                                  const std::vector<double>& measured_unit_ms, double min_share = 0.02);

// The median of `v` (the mean of the middle two for an even count; 0 for none).
double median_of(std::vector<double> v);

// Per device, measured / profiled for devices out of the running plan that were re-measured on
// their own (block_ms[d]: ms per transformer block per token; NaN or missing: not measured), the
// profile's figure being the median of the device's unit_ms over units 1..U-2 (the blocks between
// the embedding and the head). NaN where not measured or the profile has no blocks.
std::vector<double> idle_factors(const Profile& base, const std::vector<double>& block_ms);
// The devices of `factors` (speed_factors of the running plan) not measured in it (NaN) that were
// re-measured out of it get their idle_factors; returns which ones did.
std::vector<bool> fill_idle_factors(const Profile& base, const std::vector<double>& block_ms,
                                    std::vector<double>& factors);

// `base` with each device's unit_ms scaled by factors[d] (NaN or missing: the median of the known
// factors, 1 without any). The whole device scales, not each unit by its own measurement: under a
// CPU quota the pauses land on whichever unit happens to run, so single units' figures are noise.
Profile refresh_profile(const Profile& base, const std::vector<double>& factors);

// Remembers each device's speed factor across windows: the median of its last three measured ones
// (one window's figure is noisy on a loaded machine, and a window that was mostly a replay's or a
// prompt's batches makes a device look several times faster than it runs while decoding; a real
// change shows in the median by the second window). A device the plan left because it was slow stays
// slow. The first factor of each device tells how the devices ran against their profile before
// anything changed (decode batches and prefill make every device faster per token than the
// single-token steps profiled): a device never measured is taken to run as the measured ones first
// did, the median of their first factors, or as profiled (1) if that is faster (a device that was
// already slow in the first window must not make the others look slow too).
class SpeedTracker {
 public:
  // `now`: this window's factors by device (speed_factors; NaN = not measured). Returns the factors
  // to refresh the profile with. All NaN: no new measurement (the factors as they stand).
  std::vector<double> update(const std::vector<double>& now);

 private:
  static constexpr size_t k_recent = 3;
  std::vector<double> first_;
  std::vector<std::vector<double>> recent_;
};

struct BalanceOptions {
  double margin = 0.15;       // propose when current cost > (1 + margin) x the refreshed optimum
  double sustain_ms = 1000;   // ... for this long without a break (the factors are already a
                              // median of three windows)
  double cooldown_ms = 3000;  // no new proposal this soon after a switch (measurements settle)
};

// What a switch would cost, for weighing it against the gain.
struct MoveCost {
  // Rebuilding the live sequences' KV caches, at the prefill rate measured on the running plan
  // (BalancePolicy scales it by the proposed plan's cost over the running one's).
  double replay_ms = 0;
  // Per device (profile order): ms per byte of weights it would have to receive (0: it maps a local
  // copy or holds them cached). Devices load in parallel: the slowest one counts.
  std::vector<double> load_ms_per_byte;
  // Moving the live sequences' KV caches over the links (instead of replaying them; not scaled).
  double kv_ms = 0;
  // Per device (profile order): units it holds besides its stage (spares next to it), which it
  // would not have to receive.
  std::vector<std::vector<int>> preloaded = {};
};

struct Proposal {
  std::vector<Stage> stages;
  double current_cost_ms = 0;  // the running plan under the refreshed profile
  double best_cost_ms = 0;     // the proposed plan under it
  double move_ms = 0;          // estimated cost of switching
  double gain_ms = 0;          // (current - best) x tokens still to come
  std::string reason;          // "stage on phone-c costs 41.2 ms against 12.0 ms profiled; ..."
};

// The estimated cost of switching from `from` to `to`: replay and KV moves plus the slowest device's
// weight load (units it neither runs in `from` nor holds as spares).
double move_cost_ms(const Profile& profile, const std::vector<Stage>& from, const std::vector<Stage>& to,
                    const MoveCost& cost);

class BalancePolicy {
 public:
  explicit BalancePolicy(BalanceOptions options = {}) : options_(options) {}

  // One monitoring window: `now_ms` on any steady clock, `refreshed` from refresh_profile(),
  // `current` the running plan, `remaining_tokens` still to be generated (over all sequences).
  // Errors only when the profile itself is unusable (the running plan does not evaluate).
  Expected<std::optional<Proposal>> observe(double now_ms, const Profile& refreshed, const std::vector<Stage>& current,
                                            const SolveOptions& solve, double remaining_tokens, const MoveCost& cost);

  // The coordinator switched plans at `now_ms` (a proposal of ours, or a failover).
  void switched(double now_ms);
  // Within the cooldown after a switch: the windows still carry the replay's batches, and are no
  // measure of the devices' speed.
  bool settling(double now_ms) const {
    return switched_at_ms_.has_value() && now_ms - *switched_at_ms_ < options_.cooldown_ms;
  }

  const BalanceOptions& options() const { return options_; }
  // What the last observe() decided and why, for the log ("running plan 3.10 ms, optimum 1.20 ms:
  // over the margin for 500.00 ms of 1000.00 ms").
  const std::string& verdict() const { return verdict_; }

 private:
  BalanceOptions options_;
  std::optional<double> over_since_ms_;  // start of the current run of windows over the margin
  std::optional<double> switched_at_ms_;
  std::string verdict_;
};

}  // namespace ll::plan
