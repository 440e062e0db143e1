// Subcommands of the `lingua` CLI. Each registers its options on the CLI11 app and returns the
// function that runs it (exit code).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "core/error.h"

namespace ll::apps {

using Runner = std::function<int()>;

Runner add_run_command(CLI::App& app);
Runner add_tokenize_command(CLI::App& app);
Runner add_gen_model_command(CLI::App& app);
Runner add_inspect_command(CLI::App& app);
Runner add_plan_command(CLI::App& app);
Runner add_worker_command(CLI::App& app);
Runner add_profile_command(CLI::App& app);
Runner add_keygen_command(CLI::App& app);
Runner add_serve_command(CLI::App& app);

// Prints "lingua: error: <message>" to stderr and returns the exit code for the error.
int report_error(const Error& e);

}  // namespace ll::apps
