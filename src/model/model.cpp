#include "model/model.h"

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <variant>

#include "quant/blocks.h"
#include "quant/quant.h"

namespace ll::model {

namespace {

constexpr int64_t k_max_vocab = (int64_t{1} << 31) - 1;  // token ids are int32

// The per-layer tensors, in the order unit_tensor_names() lists them.
constexpr const char* k_block_tensors[] = {"attn_norm.weight", "attn_q.weight",   "attn_k.weight",
                                           "attn_v.weight",    "attn_output.weight", "attn_q.bias",
                                           "attn_k.bias",      "attn_v.bias",     "ffn_norm.weight",
                                           "ffn_gate.weight",  "ffn_up.weight",   "ffn_down.weight"};

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

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s;
  for (auto d : shape) s += (s.empty() ? "" : ", ") + std::to_string(d);
  return "[" + s + "]";
}

// Bytes (and elements) of a tensor of `type` and `shape`; nullopt when a row is not a whole number
// of blocks or a size overflows. Dimensions are >= 1.
std::optional<uint64_t> tensor_bytes(DType type, const std::vector<uint64_t>& shape, uint64_t& n_elements) {
  constexpr uint64_t k_max_elements = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  const std::optional<size_t> row_bytes = dtype_row_bytes(type, shape[0]);
  if (!row_bytes) return std::nullopt;
  uint64_t n_rows = 1;
  for (size_t i = 1; i < shape.size(); ++i) {
    if (shape[i] > k_max_elements / n_rows) return std::nullopt;
    n_rows *= shape[i];
  }
  if (shape[0] > k_max_elements / n_rows) return std::nullopt;
  if (n_rows > 0 && *row_bytes > std::numeric_limits<uint64_t>::max() / n_rows) return std::nullopt;
  n_elements = shape[0] * n_rows;
  return static_cast<uint64_t>(*row_bytes) * n_rows;
}

}  // namespace

size_t Model::required_alignment(DType type) {
  switch (type) {
    case DType::F32:
      return alignof(float);
    case DType::F16:
    case DType::BF16:
      return alignof(uint16_t);
    case DType::Q4_0:
      return alignof(quant::BlockQ4_0);
    case DType::Q8_0:
      return alignof(quant::BlockQ8_0);
    case DType::Q4_K:
      return alignof(quant::BlockQ4_K);
    case DType::Q6_K:
      return alignof(quant::BlockQ6_K);
    case DType::Q8_K:
      return alignof(quant::BlockQ8_K);
  }
  return alignof(std::max_align_t);
}

Model::Model(gguf::File file, std::vector<gguf::TensorInfo> tensors, ErrorCode tensor_error)
    : file_(std::move(file)), tensors_(std::move(tensors)), tensor_error_(tensor_error) {
  for (size_t i = 0; i < tensors_.size(); ++i) tensor_index_.emplace(tensors_[i].name, i);
}

Expected<std::unique_ptr<Model>> Model::load(const std::string& path) {
  auto file = gguf::File::open(path);
  if (!file) return file.error();
  return from_file(std::move(file).value());
}

Expected<std::unique_ptr<Model>> Model::from_file(gguf::File file) {
  // The table copies the infos; their data pointers stay valid as the File moves into the Model.
  std::vector<gguf::TensorInfo> table = file.tensors();
  std::unique_ptr<Model> m(new Model(std::move(file), std::move(table), ErrorCode::parse));
  LL_TRY(m->init(0, 0, false));
  return m;
}

Expected<std::unique_ptr<Model>> Model::from_parts(gguf::File metadata, std::vector<ExternalTensor> tensors,
                                                   int64_t unit_first, int64_t unit_last) {
  const std::string source = metadata.path();
  auto fault = [&](const std::string& what) { return make_error(ErrorCode::invalid_argument, source + ": " + what); };
  if (!metadata.tensors().empty()) {
    return fault("the metadata holds " + std::to_string(metadata.tensors().size()) +
                 " tensors; a segment's tensors must be passed separately");
  }
  // Everything about a tensor that does not depend on the hyper-parameters: init() checks shapes.
  std::vector<gguf::TensorInfo> table;
  table.reserve(tensors.size());
  std::set<std::string> names;
  for (ExternalTensor& t : tensors) {
    const std::string quoted = "tensor '" + t.name + "'";
    if (t.name.empty()) return fault("a tensor has an empty name");
    if (!names.insert(t.name).second) return fault(quoted + " is given twice");
    const uint32_t type_id = static_cast<uint32_t>(t.type);
    if (!dtype_from_id(type_id)) {
      return fault(quoted + " has type " + std::string(ggml_type_id_name(type_id)) + " (id " +
                   std::to_string(type_id) + "), which is not a weight type we support");
    }
    if (t.shape.empty() || t.shape.size() > gguf::k_max_dims) {
      return fault(quoted + " has " + std::to_string(t.shape.size()) + " dimensions, expected 1 to " +
                   std::to_string(gguf::k_max_dims));
    }
    for (uint64_t d : t.shape) {
      if (d == 0) return fault(quoted + " has an empty dimension in shape " + shape_string(t.shape));
    }
    uint64_t n_elements = 0;
    const std::optional<uint64_t> n_bytes = tensor_bytes(t.type, t.shape, n_elements);
    if (!n_bytes) {
      return fault(quoted + " of type " + std::string(dtype_name(t.type)) + " cannot have shape " +
                   shape_string(t.shape) + " (rows must be whole blocks; sizes must fit in 64 bits)");
    }
    if (*n_bytes != t.n_bytes) {
      return fault(quoted + " has " + std::to_string(t.n_bytes) + " bytes, but " + std::string(dtype_name(t.type)) +
                   " " + shape_string(t.shape) + " takes " + std::to_string(*n_bytes));
    }
    if (t.data == nullptr) return fault(quoted + " has no data");
    gguf::TensorInfo info;
    info.name = std::move(t.name);
    info.type = t.type;
    info.shape = std::move(t.shape);
    info.n_elements = n_elements;
    info.offset = 0;  // not in a file
    info.n_bytes = t.n_bytes;
    info.data = static_cast<const uint8_t*>(t.data);
    table.push_back(std::move(info));
  }
  std::unique_ptr<Model> m(new Model(std::move(metadata), std::move(table), ErrorCode::invalid_argument));
  LL_TRY(m->init(unit_first, unit_last, true));
  return m;
}

const gguf::TensorInfo* Model::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Expected<void> Model::read_hparams() {
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

  // The vocabulary size: from the embedding when we have it (its rows are the vocabulary), else
  // from the standard key, which segment metadata carries for workers without the embedding.
  const std::string vocab_key = a + "vocab_size";
  if (const gguf::TensorInfo* emb = find_tensor("token_embd.weight")) {
    if (emb->shape.size() != 2) {
      return make_error(tensor_error_, f.path() + ": tensor 'token_embd.weight' has shape " +
                                           shape_string(emb->shape) + ", expected [n_embd, n_vocab]");
    }
    if (emb->shape[1] < 1 || emb->shape[1] > static_cast<uint64_t>(k_max_vocab)) {
      return bad(f, "bad vocabulary size " + std::to_string(emb->shape[1]));
    }
    hp_.n_vocab = static_cast<int64_t>(emb->shape[1]);
    if (f.find(vocab_key) != nullptr) {
      LL_ASSIGN_OR_RETURN(const int64_t n_vocab_key, get_int(f, vocab_key, 1, k_max_vocab));
      if (n_vocab_key != hp_.n_vocab) {
        return bad(f, "metadata " + vocab_key + " = " + std::to_string(n_vocab_key) +
                          " disagrees with the " + std::to_string(hp_.n_vocab) + " rows of token_embd.weight");
      }
    }
  } else if (f.find(vocab_key) != nullptr) {
    LL_ASSIGN_OR_RETURN(hp_.n_vocab, get_int(f, vocab_key, 1, k_max_vocab));
  } else {
    return bad(f, "no vocabulary size: neither tensor 'token_embd.weight' nor metadata " + vocab_key);
  }
  return {};
}

Expected<void> Model::init(int64_t unit_first, int64_t unit_last, bool partial) {
  LL_TRY(read_hparams());
  const gguf::File& f = file_;
  const int64_t head = hp_.n_layer + 1;
  if (!partial) {
    unit_first = 0;
    unit_last = head;
  } else if (unit_first < 0 || unit_last < unit_first || unit_last > head) {
    return make_error(ErrorCode::invalid_argument, f.path() + ": unit range " + std::to_string(unit_first) + "-" +
                                                       std::to_string(unit_last) + " is not within 0-" +
                                                       std::to_string(head));
  }
  unit_first_ = unit_first;
  unit_last_ = unit_last;

  // Weights: every shape is checked against the hyper-parameters, and every pointer against the
  // alignment the kernels read it with. `used` marks the table entries the loaded units take.
  std::vector<bool> used(tensors_.size(), false);
  auto bad_tensor = [&](const std::string& what) { return make_error(tensor_error_, f.path() + ": " + what); };
  auto matrix = [&](const std::string& name, int64_t n_cols, int64_t n_rows, bool required,
                    Weight& out) -> Expected<void> {
    auto it = tensor_index_.find(name);
    if (it == tensor_index_.end()) {
      if (required) return bad_tensor("missing tensor '" + name + "'");
      return {};
    }
    used[it->second] = true;
    const gguf::TensorInfo* t = &tensors_[it->second];
    if (t->shape.empty() || t->shape.size() > 2 || static_cast<int64_t>(t->shape[0]) != n_cols ||
        static_cast<int64_t>(t->n_rows()) != n_rows) {
      return bad_tensor("tensor '" + name + "' has shape " + shape_string(t->shape) + ", expected [" +
                        std::to_string(n_cols) +
                        (n_rows > 1 || t->shape.size() > 1 ? ", " + std::to_string(n_rows) : "") + "]");
    }
    const size_t align = required_alignment(t->type);
    if (reinterpret_cast<uintptr_t>(t->data) % align != 0) {
      return bad_tensor("tensor '" + name + "' (" + std::string(dtype_name(t->type)) + ") data is not " +
                        std::to_string(align) + "-byte aligned");
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
      return bad_tensor("tensor '" + name + "' must be F32, F16 or BF16");
    }
    converted_.emplace_back(static_cast<size_t>(n));
    quant::dequantize_row(w.type, w.data, converted_.back().data(), n);
    out = converted_.back().data();
    return {};
  };

  const int64_t E = hp_.n_embd;
  if (holds_unit(0)) LL_TRY(matrix("token_embd.weight", E, hp_.n_vocab, true, w_.tok_embd));
  w_.layers.resize(static_cast<size_t>(hp_.n_layer));
  const bool bias = hp_.arch->qkv_bias;
  for (int64_t il = std::max<int64_t>(unit_first_, 1) - 1; il < std::min(unit_last_, hp_.n_layer); ++il) {
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
  if (holds_unit(head)) {
    LL_TRY(vector_f32("output_norm.weight", E, true, w_.output_norm));
    LL_TRY(matrix("output.weight", E, hp_.n_vocab, false, w_.output));
    if (!w_.output.present()) {
      // Tied output: the head projects with the embedding matrix, so a segment holding the head
      // holds the embedding too, even without unit 0.
      if (find_tensor("token_embd.weight") == nullptr) {
        return bad_tensor("missing tensor 'output.weight' (or, for a tied output, 'token_embd.weight')");
      }
      LL_TRY(matrix("token_embd.weight", E, hp_.n_vocab, true, w_.output));
      w_.output_tied = true;
    }
  }
  if (partial) {
    // A worker gets exactly its own tensors; anything else is a bug on the sending side.
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (!used[i]) {
        return bad_tensor("tensor '" + tensors_[i].name + "' does not belong to units " +
                          std::to_string(unit_first_) + "-" + std::to_string(unit_last_));
      }
    }
  }
  return {};
}

uint64_t Model::unit_weight_bytes(int64_t unit) const {
  uint64_t total = 0;
  for (const auto& name : unit_tensor_names(unit)) {
    if (const auto* t = find_tensor(name)) total += t->n_bytes;
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
    for (const char* n : k_block_tensors) {
      if (find_tensor(p + n) != nullptr) names.push_back(p + n);
    }
  }
  return names;
}

Expected<std::vector<uint8_t>> segment_metadata(const Model& m) {
  constexpr std::string_view k_tokenizer_prefix = "tokenizer.";
  gguf::Writer w;
  for (const auto& [key, value] : m.file().metadata()) {
    if (std::string_view(key).substr(0, k_tokenizer_prefix.size()) == k_tokenizer_prefix) continue;
    if (key == "general.alignment") {
      // The reader accepts only a u32 power of two here; the writer insists that the key and the
      // alignment it lays the file out with agree.
      const auto* a = std::get_if<uint32_t>(&value.v);
      if (a == nullptr) return make_error(ErrorCode::internal, m.file().path() + ": general.alignment is not a u32");
      w.alignment = *a;
    }
    w.set(key, value);
  }
  // set() replaces a key the file already had, in place; a valid model's n_vocab fits in u32.
  const HParams& hp = m.hparams();
  w.set_u32(std::string(hp.arch->name) + ".vocab_size", static_cast<uint32_t>(hp.n_vocab));
  return w.to_bytes();
}

}  // namespace ll::model
