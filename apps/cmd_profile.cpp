// lingua profile: measure the live devices (compute per unit, memory, links) into a profile for
// `lingua plan --profile`.
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/cluster_args.h"
#include "apps/commands.h"
#include "plan/profile.h"

namespace ll::apps {

Runner add_profile_command(CLI::App& app) {
  struct Opts {
    std::string model, out;
    int threads = 1, steps = 8;
    int64_t ctx_size = 512;
    bool json = false, verbose = false;
    ClusterArgs cluster;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("-o,--output", o->out, "Write the profile (JSON, the format of `lingua plan --profile`) here");
  app.add_option("-t,--threads", o->threads, "Threads of this process (the origin)")->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--steps", o->steps, "Single-token steps timed on each device")->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("-c,--ctx-size", o->ctx_size, "Context the plan must hold (sizes the KV cache per block)")
      ->capture_default_str()->check(CLI::Range(2, 1 << 24));
  app.add_flag("--json", o->json, "Print the profile JSON on stdout");
  app.add_flag("-v,--verbose", o->verbose, "Progress on stderr");
  add_cluster_options(app, o->cluster);
  app.footer(
      "Every device (this origin and each worker) runs the model's last block and its head on --steps\n"
      "single-token steps, three rounds in turn, each figure the median of its rounds; blocks share one\n"
      "shape, so one stands for all. Links: half the fastest HEARTBEAT round trip, and the rate at which\n"
      "the probe weights streamed. Needs --local N or --cluster FILE.");
  return [o]() -> int {
    if (o->out.empty() && !o->json) {
      return report_error(make_error(ErrorCode::invalid_argument, "give -o FILE and/or --json"));
    }
    auto profile = measure_live_profile(o->cluster, o->model, o->threads, o->steps, o->ctx_size, o->verbose);
    if (!profile) return report_error(profile.error());
    const std::string text = plan::profile_to_json(*profile);
    if (!o->out.empty()) {
      std::ofstream f(o->out, std::ios::binary | std::ios::trunc);
      f << text << "\n";
      if (!f) return report_error(make_error(ErrorCode::io, "cannot write " + o->out));
    }
    const plan::Profile& p = *profile;
    std::fprintf(stderr, "%-16s %12s %14s %14s %14s %12s\n", "device", "memory", "embed ms/tok", "block ms/tok",
                 "head ms/tok", "link ms");
    for (size_t d = 0; d < p.devices.size(); ++d) {
      const auto& dev = p.devices[d];
      std::fprintf(stderr, "%-16s %12s %14.3f %14.3f %14.3f %12.3f\n", dev.name.c_str(),
                   plan::format_bytes(dev.memory_bytes).c_str(), dev.unit_ms.front(), dev.unit_ms[1], dev.unit_ms.back(),
                   d == 0 ? 0.0 : p.latency_ms[0][d]);
    }
    if (!o->out.empty()) std::fprintf(stderr, "wrote %s (plan it: lingua plan --profile %s)\n", o->out.c_str(), o->out.c_str());
    if (o->json) std::printf("%s\n", text.c_str());
    return 0;
  };
}

}  // namespace ll::apps
