// A loaded model: hyper-parameters, and views of its weights inside the mmapped GGUF file.
// Units: 0 = token embedding, 1..n_layer = transformer blocks, n_layer + 1 = final norm + output head.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "gguf/gguf.h"
#include "model/arch.h"

namespace ll::model {

struct HParams {
  const ArchSpec* arch = nullptr;
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t n_rot = 0;
  int64_t n_ff = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;

  int64_t n_units() const { return n_layer + 2; }
  int64_t q_dim() const { return n_head * head_dim; }
  int64_t kv_dim() const { return n_head_kv * head_dim; }
};

// A 2-D weight matrix (or a 1-D vector when n_rows == 1) inside the file.
struct Weight {
  const gguf::TensorInfo* info = nullptr;
  DType type = DType::F32;
  const void* data = nullptr;
  int64_t n_cols = 0;  // ne[0], contiguous
  int64_t n_rows = 0;
  bool present() const { return data != nullptr; }
};

struct LayerWeights {
  const float* attn_norm = nullptr;  // F32 [n_embd]
  Weight wq, wk, wv, wo;             // [q_dim x n_embd], [kv_dim x n_embd] x2, [n_embd x q_dim]
  const float* bq = nullptr;         // F32 [q_dim], qwen2 only
  const float* bk = nullptr;         // F32 [kv_dim]
  const float* bv = nullptr;         // F32 [kv_dim]
  const float* ffn_norm = nullptr;   // F32 [n_embd]
  Weight w_gate, w_up, w_down;       // [n_ff x n_embd] x2, [n_embd x n_ff]
};

struct Weights {
  Weight tok_embd;                  // [n_vocab x n_embd]
  std::vector<LayerWeights> layers;
  const float* output_norm = nullptr;  // F32 [n_embd]
  Weight output;                    // [n_vocab x n_embd]; the embedding when tied
  bool output_tied = false;
};

class Model {
 public:
  static Expected<std::unique_ptr<Model>> load(const std::string& path);
  // Build from an already opened file (takes ownership).
  static Expected<std::unique_ptr<Model>> from_file(gguf::File file);

  const HParams& hparams() const { return hp_; }
  const Weights& weights() const { return w_; }
  const gguf::File& file() const { return file_; }
  int64_t n_units() const { return hp_.n_units(); }
  // Bytes of weights a device must hold to run this unit.
  uint64_t unit_weight_bytes(int64_t unit) const;
  // Human-readable unit name: "embed", "blk.3", "head".
  std::string unit_name(int64_t unit) const;
  // Names of the tensors a unit uses.
  std::vector<std::string> unit_tensor_names(int64_t unit) const;

 private:
  explicit Model(gguf::File file) : file_(std::move(file)) {}
  Expected<void> init();

  gguf::File file_;
  HParams hp_;
  Weights w_;
  std::vector<std::vector<float>> converted_;  // small vectors stored in F16/BF16, converted to F32
};

}  // namespace ll::model
