// lingua: the LinguaLinked command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>

#include "apps/commands.h"

namespace ll::apps {

int report_error(const Error& e) {
  std::fprintf(stderr, "lingua: error: %s\n", e.message.c_str());
  switch (e.code) {
    case ErrorCode::invalid_argument: return 2;
    case ErrorCode::not_found:
    case ErrorCode::io: return 3;
    case ErrorCode::parse:
    case ErrorCode::unsupported: return 4;
    default: return 1;
  }
}

}  // namespace ll::apps

int main(int argc, char** argv) {
  CLI::App app{
      "lingua — run a large language model across your own devices (LinguaLinked).\n"
      "One process (`lingua run`), or a pipeline over worker processes on your devices\n"
      "(`lingua worker` on each, `lingua run --cluster FILE` or `--local N`); see `lingua SUBCOMMAND --help`."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lingua 0.1.0");
  std::map<CLI::App*, ll::apps::Runner> runners;
  auto add = [&](const char* name, const char* help, ll::apps::Runner (*fn)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, help);
    runners[sub] = fn(*sub);
  };
  add("run", "Generate text from a prompt", ll::apps::add_run_command);
  add("worker", "Serve this device's share of a model for a coordinator", ll::apps::add_worker_command);
  add("tokenize", "Show how a text is split into tokens", ll::apps::add_tokenize_command);
  add("gen-model", "Write a model with deterministic random weights in real shapes", ll::apps::add_gen_model_command);
  add("inspect", "Show a GGUF file's metadata, tensors and units", ll::apps::add_inspect_command);
  add("profile", "Measure the devices (compute, memory, links) into a profile for `plan`",
      ll::apps::add_profile_command);
  add("plan", "Assign model units to devices (MILP over a profile)", ll::apps::add_plan_command);
  add("keygen", "Write a CURVE key pair (NAME.key, NAME.pub) for secure links", ll::apps::add_keygen_command);
  add("serve", "Serve the model over an OpenAI-compatible HTTP API", ll::apps::add_serve_command);
  CLI11_PARSE(app, argc, argv);
  for (auto& [sub, run] : runners) {
    if (sub->parsed()) return run();
  }
  return 1;
}
