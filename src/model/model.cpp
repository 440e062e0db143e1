#include "model/model.h"

#include <cmath>
#include <limits>

#include "quant/quant.h"

namespace ll::model {

namespace {

Error bad(const gguf::File& f, const std::string& what) {
  return make_error(ErrorCode::parse, f.path() + ": " + what);
}

// Read an integer hyper-parameter that must lie in [lo, hi].
Expected<int64_t> get_int(const gguf::File& f, const std::string& key, int64_t lo, int64_t hi) {
  auto v = f.get_u64(key);
  if (!v) return v.error();
  if (*v < static_cast<uint64_t>(lo) || *v > static_cast<uint64_t>(hi)) {
    return bad(f, "metadata " + key + " = " + std::to_string(*v) + " is out of range [" + std::to_string(lo) +
                      ", " + std::to_string(hi) + "]");
  }
  return static_cast<int64_t>(*v);
}

Expected<int64_t> get_int_or(const gguf::File& f, const std::string& key, int64_t dflt, int64_t lo, int64_t hi) {
  if (f.find(key) == nullptr) return dflt;
  return get_int(f, key, lo, hi);
}

Expected<float> get_float_or(const gguf::File& f, const std::string& key, float dflt) {
  if (f.find(key) == nullptr) return dflt;
  auto v = f.get_f64(key);
  if (!v) return v.error();
  if (!std::isfinite(*v) || *v <= 0) return bad(f, "metadata " + key + " must be a positive number");
  return static_cast<float>(*v);
}

}  // namespace

Expected<std::unique_ptr<Model>> Model::load(const std::string& path) {
  auto file = gguf::File::open(path);
  if (!file) return file.error();
  return from_file(std::move(file).value());
}

Expected<std::unique_ptr<Model>> Model::from_file(gguf::File file) {
  std::unique_ptr<Model> m(new Model(std::move(file)));
  LL_TRY(m->init());
  return m;
}

Expected<void> Model::init() {
  const gguf::File& f = file_;
  auto arch_name = f.get_string("general.architecture");
  if (!arch_name) return bad(f, "missing general.architecture (is this a model file?)");
  hp_.arch = find_arch(*arch_name);
  if (hp_.arch == nullptr) {
    return make_error(ErrorCode::unsupported, f.path() + ": architecture '" + *arch_name +
                                                  "' is not supported (supported: " +
                                                  std::string(supported_arch_names()) + ")");
  }
  const std::string a = *arch_name + ".";
  constexpr int64_t k_big = int64_t{1} << 24;
  LL_ASSIGN_OR_RETURN(hp_.n_embd, get_int(f, a + "embedding_length", 1, k_big));
  LL_ASSIGN_OR_RETURN(hp_.n_layer, get_int(f, a + "block_count", 1, 4096));
  LL_ASSIGN_OR_RETURN(hp_.n_ff, get_int(f, a + "feed_forward_length", 1, k_big));
  LL_ASSIGN_OR_RETURN(hp_.n_head, get_int(f, a + "attention.head_count", 1, 4096));
  LL_ASSIGN_OR_RETURN(hp_.n_head_kv, get_int_or(f, a + "attention.head_count_kv", hp_.n_head, 1, hp_.n_head));
  LL_ASSIGN_OR_RETURN(hp_.n_ctx_train, get_int_or(f, a + "context_length", 2048, 1, k_big));
  if (hp_.n_head % hp_.n_head_kv != 0) {
    return bad(f, "attention.head_count (" + std::to_string(hp_.n_head) +
                      ") is not a multiple of attention.head_count_kv (" + std::to_string(hp_.n_head_kv) + ")");
  }
  if (hp_.n_embd % hp_.n_head != 0 && f.find(a + "attention.key_length") == nullptr) {
    return bad(f, "embedding_length is not a multiple of attention.head_count");
  }
  LL_ASSIGN_OR_RETURN(hp_.head_dim, get_int_or(f, a + "attention.key_length", hp_.n_embd / hp_.n_head, 2, 4096));
  if (hp_.head_dim % 2 != 0) return bad(f, "attention head size must be even for RoPE");
  LL_ASSIGN_OR_RETURN(hp_.n_rot, get_int_or(f, a + "rope.dimension_count", hp_.head_dim, 2, hp_.head_dim));
  if (hp_.n_rot % 2 != 0) return bad(f, "rope.dimension_count must be even");
  LL_ASSIGN_OR_RETURN(hp_.rms_eps, get_float_or(f, a + "attention.layer_norm_rms_epsilon", 1e-5f));
  LL_ASSIGN_OR_RETURN(hp_.rope_freq_base, get_float_or(f, a + "rope.freq_base", 10000.0f));

  // Weights: every shape is checked against the hyper-parameters.
  auto matrix = [&](const std::string& name, int64_t n_cols, int64_t n_rows, bool required,
                    Weight& out) -> Expected<void> {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (t == nullptr) {
      if (required) return bad(f, "missing tensor '" + name + "'");
      return {};
    }
    if (t->shape.empty() || t->shape.size() > 2 || static_cast<int64_t>(t->shape[0]) != n_cols ||
        static_cast<int64_t>(t->n_rows()) != n_rows) {
      std::string shape;
      for (auto d : t->shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
      return bad(f, "tensor '" + name + "' has shape [" + shape + "], expected [" + std::to_string(n_cols) +
                        (n_rows > 1 || t->shape.size() > 1 ? ", " + std::to_string(n_rows) : "") + "]");
    }
    out = Weight{t, t->type, t->data, n_cols, n_rows};
    return {};
  };
  // Norm weights and biases are used as F32; other float types are converted once at load.
  auto vector_f32 = [&](const std::string& name, int64_t n, bool required,
                        const float*& out) -> Expected<void> {
    Weight w;
    LL_TRY(matrix(name, n, 1, required, w));
    if (!w.present()) return {};
    if (w.type == DType::F32) {
      out = static_cast<const float*>(w.data);
      return {};
    }
    if (w.type != DType::F16 && w.type != DType::BF16) {
      return bad(f, "tensor '" + name + "' must be F32, F16 or BF16");
    }
    converted_.emplace_back(static_cast<size_t>(n));
    quant::dequantize_row(w.type, w.data, converted_.back().data(), n);
    out = converted_.back().data();
    return {};
  };

  const int64_t E = hp_.n_embd;
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr || emb->shape.size() != 2) return bad(f, "missing or malformed tensor 'token_embd.weight'");
  hp_.n_vocab = static_cast<int64_t>(emb->shape[1]);
  if (hp_.n_vocab < 1 || hp_.n_vocab > (int64_t{1} << 31) - 1) return bad(f, "bad vocabulary size");
  LL_TRY(matrix("token_embd.weight", E, hp_.n_vocab, true, w_.tok_embd));
  w_.layers.resize(static_cast<size_t>(hp_.n_layer));
  const bool bias = hp_.arch->qkv_bias;
  for (int64_t il = 0; il < hp_.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    LayerWeights& L = w_.layers[static_cast<size_t>(il)];
    LL_TRY(vector_f32(p + "attn_norm.weight", E, true, L.attn_norm));
    LL_TRY(matrix(p + "attn_q.weight", E, hp_.q_dim(), true, L.wq));
    LL_TRY(matrix(p + "attn_k.weight", E, hp_.kv_dim(), true, L.wk));
    LL_TRY(matrix(p + "attn_v.weight", E, hp_.kv_dim(), true, L.wv));
    LL_TRY(matrix(p + "attn_output.weight", hp_.q_dim(), E, true, L.wo));
    LL_TRY(vector_f32(p + "attn_q.bias", hp_.q_dim(), bias, L.bq));
    LL_TRY(vector_f32(p + "attn_k.bias", hp_.kv_dim(), bias, L.bk));
    LL_TRY(vector_f32(p + "attn_v.bias", hp_.kv_dim(), bias, L.bv));
    LL_TRY(vector_f32(p + "ffn_norm.weight", E, true, L.ffn_norm));
    LL_TRY(matrix(p + "ffn_gate.weight", E, hp_.n_ff, true, L.w_gate));
    LL_TRY(matrix(p + "ffn_up.weight", E, hp_.n_ff, true, L.w_up));
    LL_TRY(matrix(p + "ffn_down.weight", hp_.n_ff, E, true, L.w_down));
  }
  LL_TRY(vector_f32("output_norm.weight", E, true, w_.output_norm));
  LL_TRY(matrix("output.weight", E, hp_.n_vocab, false, w_.output));
  if (!w_.output.present()) {
    w_.output = w_.tok_embd;
    w_.output_tied = true;
  }
  return {};
}

uint64_t Model::unit_weight_bytes(int64_t unit) const {
  uint64_t total = 0;
  for (const auto& name : unit_tensor_names(unit)) {
    if (const auto* t = file_.find_tensor(name)) total += t->n_bytes;
  }
  return total;
}

std::string Model::unit_name(int64_t unit) const {
  if (unit == 0) return "embed";
  if (unit == hp_.n_layer + 1) return "head";
  return "blk." + std::to_string(unit - 1);
}

std::vector<std::string> Model::unit_tensor_names(int64_t unit) const {
  std::vector<std::string> names;
  if (unit == 0) {
    names.push_back("token_embd.weight");
  } else if (unit == hp_.n_layer + 1) {
    names.push_back("output_norm.weight");
    names.push_back(w_.output_tied ? "token_embd.weight" : "output.weight");
  } else if (unit > 0 && unit <= hp_.n_layer) {
    const std::string p = "blk." + std::to_string(unit - 1) + ".";
    for (const char* n : {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                          "attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias", "ffn_norm.weight",
                          "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}) {
      if (file_.find_tensor(p + n) != nullptr) names.push_back(p + n);
    }
  }
  return names;
}

}  // namespace ll::model
