#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "apps/commands.h"
#include "model/synthetic.h"

namespace ll::apps {

Runner add_gen_model_command(CLI::App& app) {
  struct Opts {
    std::string preset, type = "q8_0", vocab, out, arch = "llama";
    uint64_t seed = 42;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  std::vector<std::string> names;
  for (const auto& p : model::model_presets()) names.push_back(p.name);
  app.add_option("--preset", o->preset, "Model shape")->required()->check(CLI::IsMember(names));
  app.add_option("--type", o->type, "Type of the weight matrices (norms stay F32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"}, CLI::ignore_case));
  app.add_option("--vocab", o->vocab, "Copy the vocabulary of this GGUF file (default: a built-in one)")
      ->check(CLI::ExistingFile);
  app.add_option("--arch", o->arch, "Architecture (qwen2 adds Q/K/V biases and NeoX RoPE)")
      ->capture_default_str()
      ->check(CLI::IsMember({"llama", "qwen2"}));
  app.add_option("--seed", o->seed, "Seed of the random weights")->capture_default_str();
  app.add_option("-o,--output", o->out, "Output GGUF file")->required();
  app.add_flag("-q,--quiet", o->quiet, "No progress output");
  return [o]() -> int {
    model::GenModelOptions g;
    g.preset = *model::find_preset(o->preset);
    g.type = *dtype_from_name(o->type);
    g.vocab_path = o->vocab;
    g.seed = o->seed;
    g.arch = o->arch;
    const auto t0 = std::chrono::steady_clock::now();
    const bool tty = isatty(STDERR_FILENO) != 0;
    int last_pct = -1;
    auto progress = [&](uint64_t done, uint64_t total) {
      if (o->quiet || total == 0) return;
      const int pct = static_cast<int>(done * 100 / total);
      if (pct == last_pct) return;
      if (!tty && pct % 10 != 0 && done != total) return;
      last_pct = pct;
      std::fprintf(stderr, "%swriting %s: %3d%% (%.1f / %.1f MiB)%s", tty ? "\r" : "", o->out.c_str(), pct,
                   static_cast<double>(done) / (1 << 20), static_cast<double>(total) / (1 << 20),
                   tty && done != total ? "" : "\n");
    };
    auto r = model::write_random_model(g, o->out, progress);
    if (!r) return report_error(r.error());
    if (!o->quiet) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "wrote %s: preset %s, type %s, random weights (seed %llu) in %.1f s\n", o->out.c_str(),
                   o->preset.c_str(), std::string(dtype_name(g.type)).c_str(),
                   static_cast<unsigned long long>(o->seed), s);
    }
    return 0;
  };
}

}  // namespace ll::apps
