// lingua plan: assign model units to devices from a profile file (planner in src/plan).
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/cluster_args.h"
#include "apps/commands.h"
#include "core/file_io.h"
#include "plan/plan.h"
#include "plan/profile.h"

namespace ll::apps {

namespace {

// Profiles are small; anything this big is not one.
constexpr size_t kMaxProfileBytes = 64u << 20;

std::string units_label(const plan::Profile& p, const plan::Stage& s) {
  if (s.first_unit == s.last_unit)
    return std::to_string(s.first_unit) + " (" + p.units[s.first_unit].name + ")";
  return std::to_string(s.first_unit) + "-" + std::to_string(s.last_unit) + " (" +
         p.units[s.first_unit].name + ".." + p.units[s.last_unit].name + ")";
}

// "30.20 ms (1.36x)" or "infeasible: <why>".
std::string baseline_label(const plan::Profile& p, const Expected<std::vector<plan::Stage>>& stages,
                           const plan::SolveOptions& o, double best_ms) {
  if (!stages) return "not available: " + stages.error().message;
  auto cost = plan::evaluate(p, *stages, o);
  if (!cost) return "infeasible: " + cost.error().message;
  char buf[96];
  if (best_ms > 0) {
    std::snprintf(buf, sizeof buf, "%.3f ms (%.2fx the plan's), %zu stages", *cost, *cost / best_ms,
                  stages->size());
  } else {
    std::snprintf(buf, sizeof buf, "%.3f ms, %zu stages", *cost, stages->size());
  }
  return buf;
}

void print_table(const std::string& path, const plan::Profile& p, const plan::PlanResult& r,
                 const plan::SolveOptions& o, double solve_s) {
  std::printf("plan for %s: %d units over %zu stages on %d devices; objective %s%s\n", path.c_str(),
              p.n_units(), r.stages.size(), p.n_devices(), plan::objective_name(o.objective),
              o.ring ? ", ring" : "");
  const char* model = std::string_view(r.solver_model) == "blocks"
                          ? "; repeated blocks: MILP over device orders and block counts"
                          : "";
  if (r.proven_optimal) {
    std::printf("proven optimal (%.2f s%s)\n\n", solve_s, model);
  } else {
    std::printf(
        "NOT proven optimal: the time limit of %g s ran out; this is the best plan found (%.2f s)\n\n",
        o.time_limit_s, solve_s);
  }
  size_t w_dev = 6, w_units = 5;
  std::vector<std::string> units;
  for (const auto& s : r.stages) {
    w_dev = std::max(w_dev, p.devices[s.device].name.size());
    units.push_back(units_label(p, s));
    w_units = std::max(w_units, units.back().size());
  }
  std::printf("%-5s  %-*s  %-*s  %11s  %11s  %11s  %s\n", "stage", static_cast<int>(w_dev), "device",
              static_cast<int>(w_units), "units", "compute ms", "transfer ms", "stage ms",
              "memory: stage, device used / available");
  for (size_t i = 0; i < r.stages.size(); ++i) {
    const plan::StageReport& rep = r.reports[i];
    const std::string mem = plan::format_bytes(rep.memory_bytes) + ", " +
                            plan::format_bytes(rep.device_memory_used_bytes) + " / " +
                            plan::format_bytes(rep.device_memory_bytes);
    std::printf("%5zu  %-*s  %-*s  %11.3f  %11.3f  %11.3f  %s\n", i, static_cast<int>(w_dev),
                p.devices[rep.stage.device].name.c_str(), static_cast<int>(w_units), units[i].c_str(),
                rep.compute_ms, rep.transfer_ms, rep.cost_ms, mem.c_str());
  }
  std::printf("\n");
  if (o.objective == plan::Objective::latency) {
    std::printf("latency (sum of stage costs): %.3f ms per token; slowest stage %.3f ms\n", r.cost_ms,
                r.max_stage_ms);
  } else {
    std::printf(
        "throughput (slowest stage): %.3f ms per token when pipelined (%.2f tokens/s); one request's latency "
        "%.3f ms\n",
        r.cost_ms, r.cost_ms > 0 ? 1000.0 / r.cost_ms : 0.0, r.latency_ms);
  }
  std::printf("baseline even:   %s\n", baseline_label(p, plan::plan_even(p, 0, o), o, r.cost_ms).c_str());
  std::printf("baseline memory: %s\n", baseline_label(p, plan::plan_memory(p, o), o, r.cost_ms).c_str());
}

}  // namespace

Runner add_plan_command(CLI::App& app) {
  struct Opts {
    std::string profile, model, objective = "latency";
    bool ring = false, json = false, verbose = false;
    double time_limit_s = 10;
    int threads = 1, steps = 8;
    int64_t ctx_size = 512;
    ClusterArgs cluster;
  };
  auto o = std::make_shared<Opts>();
  auto* prof = app.add_option("--profile", o->profile,
                               "Profile JSON: units (memory, output size), devices (memory, ms per unit), links "
                               "(latency, bandwidth), origin; format in docs/planner.md")
                   ->check(CLI::ExistingFile);
  auto* model = app.add_option("-m,--model", o->model,
                               "Instead of --profile: measure this model on live devices (with --local N or "
                               "--cluster FILE), as `lingua profile` does")
                    ->check(CLI::ExistingFile);
  prof->excludes(model);
  app.add_option("-t,--threads", o->threads, "With -m: threads of this process (the origin)")
      ->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("-c,--ctx-size", o->ctx_size, "With -m: context the plan must hold (KV cache per block)")
      ->check(CLI::Range(2, 1 << 24))->capture_default_str();
  app.add_flag("-v,--verbose", o->verbose, "With -m: progress on stderr");
  add_cluster_options(app, o->cluster);
  app.add_option("--objective", o->objective,
                 "latency: minimise one request's time per token (sum of stage costs); throughput: minimise "
                 "the slowest stage (tokens per second with the pipeline full)")
      ->check(CLI::IsMember({"latency", "throughput"}))
      ->capture_default_str();
  app.add_flag("--ring", o->ring,
               "The last stage runs on the origin too, so tokens and logits never leave it");
  app.add_option("--time-limit", o->time_limit_s,
                 "Seconds for the MILP solver (CBC); when they run out, the best plan so far is printed and "
                 "marked not proven optimal")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            double s = 0;
            try {
              s = std::stod(v);
            } catch (const std::exception&) {
              return "not a number of seconds: " + v;
            }
            return s > 0 && s <= 1e6 ? "" : "must be more than 0 and at most 1e6 seconds";
          },
          "SECONDS"))
      ->capture_default_str();
  app.add_flag(
      "--json", o->json,
      "One JSON line: {\"objective\",\"cost_ms\",\"stages\":[{\"device\",\"first_unit\",\"last_unit\"}],"
      "\"proven_optimal\"}");
  app.footer("Give --profile FILE (e.g. written by `lingua profile`), or -m MODEL with --local N / --cluster FILE.");

  return [o]() -> int {
    Expected<plan::Profile> profile = Error{};
    std::string source = o->profile;
    if (!o->model.empty()) {
      profile = measure_live_profile(o->cluster, o->model, o->threads, o->steps, o->ctx_size, o->verbose);
      if (!profile) return report_error(profile.error());
      source = o->model + " on " + (o->cluster.local > 0 ? std::to_string(o->cluster.local) + " local workers" : o->cluster.cluster);
    } else {
      if (o->profile.empty()) {
        return report_error(make_error(ErrorCode::invalid_argument, "give --profile FILE, or -m MODEL with --local N "
                                                                    "or --cluster FILE"));
      }
      auto text = read_small_file(o->profile, kMaxProfileBytes, "a profile");
      if (!text) return report_error(text.error());
      profile = plan::parse_profile(*text);
      if (!profile)
        return report_error(make_error(profile.error().code, o->profile + ": " + profile.error().message));
    }
    plan::SolveOptions opt;
    auto objective = plan::parse_objective(o->objective);
    if (!objective) return report_error(objective.error());
    opt.objective = *objective;
    opt.ring = o->ring;
    opt.time_limit_s = o->time_limit_s;
    const auto t0 = std::chrono::steady_clock::now();
    auto result = plan::solve(*profile, opt);
    const double solve_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!result) return report_error(result.error());
    if (o->json) {
      nlohmann::ordered_json j;
      j["objective"] = plan::objective_name(opt.objective);
      j["cost_ms"] = result->cost_ms;
      j["stages"] = nlohmann::ordered_json::array();
      for (const auto& s : result->stages) {
        j["stages"].push_back({{"device", profile->devices[s.device].name},
                               {"first_unit", s.first_unit},
                               {"last_unit", s.last_unit}});
      }
      j["proven_optimal"] = result->proven_optimal;
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return 0;
    }
    print_table(source, *profile, *result, opt, solve_s);
    return 0;
  };
}

}  // namespace ll::apps
