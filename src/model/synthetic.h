// Models with deterministic random weights in real shapes (`lingua gen-model`), for benchmarks
// and large tests. The files carry full llama metadata and a vocabulary, so llama.cpp runs them too.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace ll::model {

struct ModelPreset {
  std::string name;
  int64_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
};

const std::vector<ModelPreset>& model_presets();  // stories-260k, tinyllama-1.1b, llama-2-7b, …
const ModelPreset* find_preset(const std::string& name);

struct GenModelOptions {
  ModelPreset preset;
  DType type = DType::Q8_0;      // matrices; norms stay F32
  std::string vocab_path;        // GGUF whose tokenizer.* metadata is copied; empty: a built-in vocabulary
  uint64_t seed = 42;
  std::string arch = "llama";    // "llama" or "qwen2" (adds Q/K/V biases; NeoX RoPE)
};

// progress(done_bytes, total_bytes) after each tensor.
Expected<void> write_random_model(const GenModelOptions& opts, const std::string& out_path,
                                  const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace ll::model
