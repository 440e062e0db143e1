// Planner benchmark: how long solve() takes to a proven optimum as devices and units grow, for both
// objectives, on seeded 70B-class profiles (embedding + identical blocks + head, heterogeneous
// devices and links) and, for comparison, on profiles whose every unit costs something different.
//
// usage: bench_planner [--quick] [--cold] [--dump DIR] [--time-limit S] [--reps N]
//   Prints a Markdown table: median solve seconds over N seeds (default 3), "*" when any seed was not
//   proven optimal within the time limit (default 10 s), and the MILP model that was used.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "plan/plan.h"
#include "plan/profile.h"

namespace {

using ll::plan::Profile;

// A 70B-class model in Q4_0: 0.55 GB embedding, 0.87 GB per block, 0.55 GB head; hidden state 8192
// floats. Devices between a Raspberry Pi and a laptop; Wi-Fi-like links.
Profile seventy_b_class(int n_devices, int n_units, uint64_t seed, bool repeated_blocks) {
  std::mt19937_64 rng(seed);
  auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  Profile p;
  const double hidden = 8192.0 * 4;
  uint64_t total = 0;
  for (int u = 0; u < n_units; ++u) {
    ll::plan::UnitProfile unit;
    const bool end = u == 0 || u + 1 == n_units;
    unit.name = u == 0 ? "embed" : u + 1 == n_units ? "head" : "blk" + std::to_string(u - 1);
    unit.memory_bytes = end ? 550000000ull : repeated_blocks ? 870000000ull : static_cast<uint64_t>(uni(6e8, 1.1e9));
    unit.out_bytes = u + 1 == n_units ? 4 : hidden;
    total += unit.memory_bytes;
    p.units.push_back(unit);
  }
  for (int d = 0; d < n_devices; ++d) {
    ll::plan::DeviceProfile dev;
    dev.name = "dev" + std::to_string(d);
    const double block_ms = uni(4.0, 40.0);  // per block
    for (int u = 0; u < n_units; ++u) {
      const double ms = u == 0 ? 0.05 : u + 1 == n_units ? block_ms * 1.3 : block_ms;
      dev.unit_ms.push_back(repeated_blocks ? ms : ms * uni(0.8, 1.2));
    }
    // Together 1.5x what the model needs, but spread over no more devices than a third of the units.
    const int sharing = std::min(n_devices, std::max(2, n_units / 3));
    dev.memory_bytes = static_cast<uint64_t>(uni(0.6, 1.4) * 1.5 * static_cast<double>(total) / sharing);
    p.devices.push_back(dev);
  }
  p.latency_ms.assign(static_cast<size_t>(n_devices), std::vector<double>(static_cast<size_t>(n_devices), 0));
  p.bandwidth_bytes_per_s = p.latency_ms;
  for (int a = 0; a < n_devices; ++a) {
    for (int b = 0; b < n_devices; ++b) {
      if (a == b) continue;
      p.latency_ms[a][b] = uni(1.0, 15.0);
      p.bandwidth_bytes_per_s[a][b] = uni(2.5e6, 1.25e8);
    }
  }
  p.origin = 0;
  p.token_bytes = 4;
  return p;
}

struct Cell {
  double median_s = 0;
  bool all_proven = true;
  bool any_failed = false;
  std::string model;
};

bool g_cold = false;      // --cold: no warm start (the MILP alone)
std::string g_dump_dir;  // --dump DIR: write every profile solved, for `lingua plan --profile`

Cell run(int n_devices, int n_units, bool repeated, ll::plan::Objective objective, int reps, double limit) {
  std::vector<double> times;
  Cell cell;
  for (int r = 0; r < reps; ++r) {
    const Profile p = seventy_b_class(n_devices, n_units, 1000 * n_devices + n_units + 7919 * r, repeated);
    if (!g_dump_dir.empty()) {
      const std::string path = g_dump_dir + "/" + (repeated ? "blocks" : "mixed") + "-d" +
                               std::to_string(n_devices) + "-u" + std::to_string(n_units) + "-" +
                               std::to_string(r) + ".json";
      if (std::FILE* f = std::fopen(path.c_str(), "w")) {
        const std::string json = ll::plan::profile_to_json(p);
        std::fwrite(json.data(), 1, json.size(), f);
        std::fclose(f);
      }
    }
    ll::plan::SolveOptions o;
    o.objective = objective;
    o.time_limit_s = limit;
    o.warm_start = !g_cold;
    const auto t0 = std::chrono::steady_clock::now();
    auto res = ll::plan::solve(p, o);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!res) {
      cell.any_failed = true;
      std::fprintf(stderr, "D=%d U=%d: %s\n", n_devices, n_units, res.error().message.c_str());
      continue;
    }
    cell.all_proven = cell.all_proven && res->proven_optimal;
    cell.model = res->solver_model;
  }
  std::sort(times.begin(), times.end());
  cell.median_s = times[times.size() / 2];
  return cell;
}

std::string format(const Cell& c) {
  char buf[64];
  if (c.any_failed) return "failed";
  std::snprintf(buf, sizeof buf, "%.3f%s", c.median_s, c.all_proven ? "" : "*");
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  double limit = 10;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--dump") == 0 && i + 1 < argc) {
      g_dump_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--cold") == 0) {
      g_cold = true;
    } else if (std::strcmp(argv[i], "--time-limit") == 0 && i + 1 < argc) {
      limit = std::atof(argv[++i]);
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_planner [--quick] [--cold] [--dump DIR] [--time-limit S] [--reps N]\n");
      return 2;
    }
  }
  const std::vector<int> devices = quick ? std::vector<int>{2, 8, 16} : std::vector<int>{2, 4, 8, 16, 24, 32};
  const std::vector<int> units = quick ? std::vector<int>{10, 82} : std::vector<int>{10, 42, 82, 130};
  for (bool repeated : {true, false}) {
    std::printf("\n%s: median solve seconds over %d seeds (* = not proven optimal within %g s)\n\n",
                repeated ? "70B-class profiles (identical blocks, as `lingua profile` measures)"
                         : "every unit different (unit times and sizes jittered +-20%)",
                reps, limit);
    std::printf("| devices | units | latency | throughput | model |\n|---|---|---|---|---|\n");
    for (int d : devices) {
      for (int u : units) {
        if (!repeated && (d > 16 || u > 82)) continue;  // the interval models: minutes, not seconds
        const Cell lat = run(d, u, repeated, ll::plan::Objective::latency, reps, limit);
        const Cell thr = run(d, u, repeated, ll::plan::Objective::throughput, reps, limit);
        std::printf("| %d | %d | %s | %s | %s / %s |\n", d, u, format(lat).c_str(), format(thr).c_str(),
                    lat.model.c_str(), thr.model.c_str());
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
