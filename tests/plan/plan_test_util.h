// Profiles for planner tests: hand-made ones and seeded random ones.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "plan/plan.h"
#include "plan/profile.h"

namespace ll::plan::test {

// U units and D devices, everything zero except memory (plenty) and bandwidth (1e6 bytes/s).
inline Profile blank_profile(int n_units, int n_devices) {
  Profile p;
  for (int u = 0; u < n_units; ++u)
    p.units.push_back(UnitProfile{std::string("u") + std::to_string(u), 1, 0});
  for (int d = 0; d < n_devices; ++d) {
    p.devices.push_back(DeviceProfile{std::string("dev") + std::to_string(d), 1000000,
                                      std::vector<double>(static_cast<size_t>(n_units), 0.0)});
  }
  p.latency_ms.assign(static_cast<size_t>(n_devices),
                      std::vector<double>(static_cast<size_t>(n_devices), 0.0));
  p.bandwidth_bytes_per_s.assign(static_cast<size_t>(n_devices),
                                 std::vector<double>(static_cast<size_t>(n_devices), 1e6));
  p.origin = 0;
  p.token_bytes = 0;
  return p;
}

struct RandomSpec {
  int n_units = 6;
  int n_devices = 3;
  double memory_slack = 1.3;   // total device memory / total unit memory (roughly)
  bool integer_costs = false;  // ties galore
};

inline Profile random_profile(std::mt19937_64& rng, const RandomSpec& s) {
  auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Profile p = blank_profile(s.n_units, s.n_devices);
  uint64_t total = 0;
  for (auto& u : p.units) {
    u.memory_bytes = static_cast<uint64_t>(pick(1, 100));
    u.out_bytes = s.integer_costs ? pick(0, 3) * 1000.0 : uni(100, 1e5);
    total += u.memory_bytes;
  }
  for (auto& d : p.devices) {
    const double speed = uni(0.2, 3.0);
    for (auto& ms : d.unit_ms) ms = s.integer_costs ? pick(0, 5) : uni(0.1, 10.0) * speed;
    const double share = uni(0.4, 1.6) * s.memory_slack / static_cast<double>(s.n_devices);
    d.memory_bytes = static_cast<uint64_t>(share * static_cast<double>(total));
  }
  for (int a = 0; a < s.n_devices; ++a) {
    for (int b = 0; b < s.n_devices; ++b) {
      if (a == b) continue;
      p.latency_ms[a][b] = s.integer_costs ? pick(0, 3) : uni(0.5, 20.0);
      p.bandwidth_bytes_per_s[a][b] = s.integer_costs ? 1e6 : uni(1e5, 1e8);
    }
  }
  p.origin = pick(0, s.n_devices - 1);
  p.token_bytes = s.integer_costs ? 1000 : 4;
  return p;
}

// A model as measured profiles describe one: an embedding, identical blocks, an output head. Every
// block costs the same on a device, weighs the same and hands over the same bytes (as the embedding
// does); devices differ in speed, memory and links.
inline Profile block_profile(std::mt19937_64& rng, const RandomSpec& s) {
  auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Profile p = random_profile(rng, s);
  const int n_units = s.n_units;
  const uint64_t block_bytes = static_cast<uint64_t>(pick(1, 100));
  const double out = s.integer_costs ? pick(0, 3) * 1000.0 : uni(100, 1e5);
  uint64_t total = 0;
  for (int u = 0; u < n_units; ++u) {
    auto& unit = p.units[static_cast<size_t>(u)];
    if (u > 0 && u + 1 < n_units) unit.memory_bytes = block_bytes;
    if (u + 1 < n_units) unit.out_bytes = out;
    total += unit.memory_bytes;
  }
  for (auto& d : p.devices) {
    const double block_ms = s.integer_costs ? pick(0, 5) : uni(0.1, 10.0);
    for (int u = 1; u + 1 < n_units; ++u) d.unit_ms[static_cast<size_t>(u)] = block_ms;
    const double share = uni(0.4, 1.6) * s.memory_slack / static_cast<double>(s.n_devices);
    d.memory_bytes = static_cast<uint64_t>(share * static_cast<double>(total));
  }
  return p;
}

// Every plan there is, costed by evaluate(): tiny instances only.
inline bool brute_force(const Profile& p, const SolveOptions& o, double& best) {
  const int n_units = p.n_units(), n_dev = p.n_devices();
  bool found = false;
  for (uint32_t cuts = 0; cuts < (1u << (n_units - 1)); ++cuts) {
    std::vector<Stage> stages{Stage{0, 0, 0}};
    for (int u = 1; u < n_units; ++u) {
      if (cuts & (1u << (u - 1))) {
        stages.back().last_unit = u - 1;
        stages.push_back(Stage{0, u, u});
      }
    }
    stages.back().last_unit = n_units - 1;
    const size_t k = stages.size();
    uint64_t combos = 1;
    for (size_t i = 0; i < k; ++i) combos *= static_cast<uint64_t>(n_dev);
    for (uint64_t c = 0; c < combos; ++c) {
      uint64_t x = c;
      for (size_t i = 0; i < k; ++i) {
        stages[i].device = static_cast<int>(x % static_cast<uint64_t>(n_dev));
        x /= static_cast<uint64_t>(n_dev);
      }
      auto cost = evaluate(p, stages, o);
      if (cost && (!found || *cost < best)) {
        best = *cost;
        found = true;
      }
    }
  }
  return found;
}

}  // namespace ll::plan::test
