#include "model/synthetic.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>

#include "core/thread_pool.h"
#include "gguf/gguf.h"
#include "quant/quant.h"

namespace ll::model {

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> presets = {
      // Karpathy's TinyStories 260K shapes (as in ../shared/models/stories260K.gguf).
      {"stories-260k", 64, 5, 8, 4, 172, 512, 128, 1e-5f, 10000.0f},
      {"stories-15m", 288, 6, 6, 6, 768, 32000, 256, 1e-5f, 10000.0f},
      {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048, 1e-5f, 10000.0f},
      {"llama-2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 1e-5f, 10000.0f},
  };
  return presets;
}

const ModelPreset* find_preset(const std::string& name) {
  for (const auto& p : model_presets()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

namespace {

// SplitMix64: a tiny, fast, well-distributed generator; one stream per tensor row.
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float uniform() { return static_cast<float>(static_cast<int64_t>(next() >> 40) - (int64_t{1} << 23)) / 8388608.0f; }
};

uint64_t hash_name(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

// A built-in SentencePiece-style vocabulary: <unk>, <s>, </s>, the 256 byte tokens, printable
// characters and generated pieces, up to n_vocab tokens.
void add_builtin_vocab(gguf::Writer& w, int64_t n_vocab) {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  auto add = [&](std::string t, float score, int32_t type) {
    tokens.push_back(std::move(t));
    scores.push_back(score);
    types.push_back(type);
  };
  add("<unk>", 0, 2);
  add("<s>", 0, 3);
  add("</s>", 0, 3);
  char buf[16];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, 0, 6);
  }
  const std::string sp = "\xE2\x96\x81";  // U+2581, SentencePiece's space
  float score = -1.0f;
  for (char c = 33; c < 127 && static_cast<int64_t>(tokens.size()) < n_vocab; ++c) {
    add(std::string(1, c), score, 1);
    score -= 0.01f;
  }
  static const char* letters = "etaoinshrdlucmfwypvbgkjqxz";
  for (int64_t i = 0; static_cast<int64_t>(tokens.size()) < n_vocab; ++i) {
    // Even i: "▁" + word; odd i: a word of two or more letters (single letters exist already).
    std::string piece = (i % 2 == 0) ? sp : std::string();
    int64_t v = (i % 2 == 0) ? i / 2 : i / 2 + 26;
    do {
      piece += letters[v % 26];
      v /= 26;
    } while (v > 0);
    add(piece, score, 1);
    score -= 0.001f;
  }
  tokens.resize(static_cast<size_t>(n_vocab));
  scores.resize(static_cast<size_t>(n_vocab));
  types.resize(static_cast<size_t>(n_vocab));
  gguf::Array ta{gguf::ValueType::string, {}}, sa{gguf::ValueType::f32, {}}, ya{gguf::ValueType::i32, {}};
  for (size_t i = 0; i < tokens.size(); ++i) {
    ta.items.push_back(gguf::Value{tokens[i]});
    sa.items.push_back(gguf::Value{scores[i]});
    ya.items.push_back(gguf::Value{types[i]});
  }
  w.set_string("tokenizer.ggml.model", "llama");
  w.set("tokenizer.ggml.tokens", gguf::Value{std::move(ta)});
  w.set("tokenizer.ggml.scores", gguf::Value{std::move(sa)});
  w.set("tokenizer.ggml.token_type", gguf::Value{std::move(ya)});
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
}

uint32_t file_type_of(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q8_0: return 7;
    case DType::Q4_K: return 15;  // LLAMA_FTYPE_MOSTLY_Q4_K_M
    case DType::Q6_K: return 18;
    case DType::BF16: return 32;
    default: return 0;
  }
}

}  // namespace

Expected<void> write_random_model(const GenModelOptions& opts, const std::string& out_path,
                                  const std::function<void(uint64_t, uint64_t)>& progress) {
  const ModelPreset& p = opts.preset;
  if (p.n_embd % p.n_head != 0 || p.n_head % p.n_head_kv != 0) {
    return make_error(ErrorCode::invalid_argument, "preset " + p.name + " has inconsistent head counts");
  }
  if (opts.arch != "llama" && opts.arch != "qwen2") {
    return make_error(ErrorCode::invalid_argument, "gen-model: unknown architecture '" + opts.arch + "'");
  }
  const std::string a = opts.arch + ".";
  gguf::Writer w;
  w.set_string("general.architecture", opts.arch);
  w.set_string("general.name", "lingualinked-random-" + p.name);
  w.set_u32("general.file_type", file_type_of(opts.type));
  w.set_u32("general.quantization_version", 2);
  w.set_u32(a + "context_length", static_cast<uint32_t>(p.n_ctx));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(p.n_embd));
  w.set_u32(a + "block_count", static_cast<uint32_t>(p.n_layer));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(p.n_ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(p.n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(p.n_head_kv));
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(p.n_embd / p.n_head));
  w.set_f32(a + "attention.layer_norm_rms_epsilon", p.rms_eps);
  w.set_f32(a + "rope.freq_base", p.rope_freq_base);

  int64_t n_vocab = p.n_vocab;
  if (!opts.vocab_path.empty()) {
    auto vf = gguf::File::open(opts.vocab_path);
    if (!vf) return vf.error();
    bool any = false;
    for (const auto& [key, value] : vf->metadata()) {
      if (key.rfind("tokenizer.", 0) == 0) {
        w.set(key, value);
        any = true;
      }
    }
    auto toks = vf->get_string_array("tokenizer.ggml.tokens");
    if (!any || !toks) {
      return make_error(ErrorCode::parse, opts.vocab_path + ": no tokenizer.ggml.tokens (not a vocabulary file?)");
    }
    n_vocab = static_cast<int64_t>(toks->size());
  } else {
    add_builtin_vocab(w, n_vocab);
  }
  w.set_u32(a + "vocab_size", static_cast<uint32_t>(n_vocab));

  const int64_t E = p.n_embd, hd = p.n_embd / p.n_head, KV = hd * p.n_head_kv, FF = p.n_ff;
  const int n_threads = std::max(1u, std::thread::hardware_concurrency());
  auto pool = std::make_shared<ThreadPool>(n_threads);
  // A matrix [n_rows x n_cols] of uniform values scaled by 1/sqrt(n_cols), so activations stay
  // in a sane range through the layers. Rows whose length does not fit the block size use F16.
  auto add_matrix = [&](const std::string& name, int64_t n_cols, int64_t n_rows) -> Expected<void> {
    DType t = opts.type;
    if (n_cols % static_cast<int64_t>(dtype_block_elems(t)) != 0) t = DType::F16;
    const size_t row_bytes = *dtype_row_bytes(t, static_cast<uint64_t>(n_cols));
    const uint64_t seed = opts.seed ^ hash_name(name);
    const float scale = 1.0f / std::sqrt(static_cast<float>(n_cols));
    return w.add_tensor(name, t, {static_cast<uint64_t>(n_cols), static_cast<uint64_t>(n_rows)},
                        [=](std::span<uint8_t> dst) -> Expected<void> {
                          pool->run([&](int ith, int nth) {
                            std::vector<float> row(static_cast<size_t>(n_cols));
                            int64_t first, last;
                            split_range(n_rows, ith, nth, first, last);
                            for (int64_t r = first; r < last; ++r) {
                              SplitMix rng{seed + static_cast<uint64_t>(r) * 0x2545F4914F6CDD1Dull};
                              for (auto& v : row) v = rng.uniform() * scale;
                              quant::quantize_row(t, row.data(), dst.data() + static_cast<size_t>(r) * row_bytes, n_cols);
                            }
                          });
                          return {};
                        });
  };
  // F32 vectors: norm weights around 1 (center 1), biases around 0 (center 0).
  auto add_vector = [&](const std::string& name, int64_t n, float center) -> Expected<void> {
    const uint64_t seed = opts.seed ^ hash_name(name);
    return w.add_tensor(name, DType::F32, {static_cast<uint64_t>(n)}, [=](std::span<uint8_t> dst) -> Expected<void> {
      SplitMix rng{seed};
      for (int64_t i = 0; i < n; ++i) {
        const float v = center + 0.1f * rng.uniform();
        std::memcpy(dst.data() + i * 4, &v, 4);
      }
      return {};
    });
  };
  LL_TRY(add_matrix("token_embd.weight", E, n_vocab));
  for (int64_t l = 0; l < p.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    LL_TRY(add_vector(b + "attn_norm.weight", E, 1.0f));
    LL_TRY(add_matrix(b + "attn_q.weight", E, E));
    LL_TRY(add_matrix(b + "attn_k.weight", E, KV));
    LL_TRY(add_matrix(b + "attn_v.weight", E, KV));
    if (opts.arch == "qwen2") {
      LL_TRY(add_vector(b + "attn_q.bias", E, 0.0f));
      LL_TRY(add_vector(b + "attn_k.bias", KV, 0.0f));
      LL_TRY(add_vector(b + "attn_v.bias", KV, 0.0f));
    }
    LL_TRY(add_matrix(b + "attn_output.weight", E, E));
    LL_TRY(add_vector(b + "ffn_norm.weight", E, 1.0f));
    LL_TRY(add_matrix(b + "ffn_gate.weight", E, FF));
    LL_TRY(add_matrix(b + "ffn_up.weight", E, FF));
    LL_TRY(add_matrix(b + "ffn_down.weight", FF, E));
  }
  LL_TRY(add_vector("output_norm.weight", E, 1.0f));
  LL_TRY(add_matrix("output.weight", E, n_vocab));
  return w.write(out_path, progress);
}

}  // namespace ll::model
