// A loaded model: hyper-parameters, and views of its weights inside the mmapped GGUF file, or, on
// a worker, of the weights of its units only, whose bytes arrived over the network.
// Units: 0 = token embedding, 1..n_layer = transformer blocks, n_layer + 1 = final norm + output head.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
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

// A 2-D weight matrix (or a 1-D vector when n_rows == 1) inside the file or an external buffer.
struct Weight {
  const gguf::TensorInfo* info = nullptr;  // an entry of Model::tensors(), valid for the Model's life
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

// In a partial model (Model::from_parts) only the units in [unit_first, unit_last] are filled in:
// the others' weights are absent (null), layers[] still has n_layer entries.
struct Weights {
  Weight tok_embd;                  // [n_vocab x n_embd]; present when unit 0 is loaded
  std::vector<LayerWeights> layers;
  const float* output_norm = nullptr;  // F32 [n_embd]
  Weight output;                    // [n_vocab x n_embd]; the embedding when tied
  bool output_tied = false;         // known only when the head unit is loaded
};

// A tensor whose bytes live outside any GGUF file, e.g. received by a worker from the origin.
struct ExternalTensor {
  std::string name;
  DType type = DType::F32;
  std::vector<uint64_t> shape;  // ne[0] innermost (contiguous), as in GGUF
  const void* data = nullptr;   // owned by the caller; aligned as Model::required_alignment(type)
  uint64_t n_bytes = 0;         // must be exactly what type and shape take
};

class Model {
 public:
  static Expected<std::unique_ptr<Model>> load(const std::string& path);
  // Build from an already opened file (takes ownership). Holds every unit.
  static Expected<std::unique_ptr<Model>> from_file(gguf::File file);
  // A model holding only units [unit_first, unit_last], for a worker that received them. Takes
  // ownership of `metadata` (hyper-parameters only, no tensors: see segment_metadata() below);
  // the tensors' data stays owned by the caller and must outlive the Model (it is not copied).
  // Hyper-parameters are validated as by load(), and `tensors` must be exactly the tensors of the
  // range, each of the shape load() demands; n_vocab comes from token_embd.weight when given,
  // else from "<arch>.vocab_size". With a tied output (no output.weight) the head unit needs
  // token_embd.weight.
  // Errors: parse/unsupported for bad metadata; invalid_argument naming the tensor for a missing,
  // extra, duplicate or misshapen tensor, a byte count that does not match, or null/misaligned
  // data; invalid_argument for a range outside 0..n_layer + 1 or metadata holding tensors.
  static Expected<std::unique_ptr<Model>> from_parts(gguf::File metadata, std::vector<ExternalTensor> tensors,
                                                     int64_t unit_first, int64_t unit_last);

  // Alignment in bytes the kernels need for a weight's data: F32 vectors are read as float arrays,
  // quantized blocks and half-precision values through 16-bit fields (SIMD loads are unaligned).
  static size_t required_alignment(DType type);

  Model(const Model&) = delete;  // weights point into the tensor table
  Model& operator=(const Model&) = delete;

  const HParams& hparams() const { return hp_; }
  const Weights& weights() const { return w_; }
  // The GGUF the model was built from: for from_parts() the metadata file, without tensors.
  const gguf::File& file() const { return file_; }
  // The tensors the model holds (views of the file, or of the caller's buffers), in input order.
  const std::vector<gguf::TensorInfo>& tensors() const { return tensors_; }
  const gguf::TensorInfo* find_tensor(std::string_view name) const;
  int64_t n_units() const { return hp_.n_units(); }
  // The units whose weights this model holds: 0 and n_units() - 1 unless built by from_parts().
  int64_t unit_first() const { return unit_first_; }
  int64_t unit_last() const { return unit_last_; }
  bool holds_unit(int64_t unit) const { return unit >= unit_first_ && unit <= unit_last_; }
  // Bytes of weights a device must hold to run this unit (counting only tensors this model holds,
  // so 0 for units a partial model does not hold).
  uint64_t unit_weight_bytes(int64_t unit) const;
  // Human-readable unit name: "embed", "blk.3", "head".
  std::string unit_name(int64_t unit) const;
  // Names of the tensors a unit uses (for a unit a partial model does not hold: only what is
  // known without its tensors, i.e. nothing for a block, a guess of output.weight for the head).
  std::vector<std::string> unit_tensor_names(int64_t unit) const;

 private:
  Model(gguf::File file, std::vector<gguf::TensorInfo> tensors, ErrorCode tensor_error);
  // Reads and checks the hyper-parameters, then binds (and checks) the weights of the loaded
  // units: all of them, or for a partial model [unit_first, unit_last], whose tensors must then be
  // exactly the table (a file may carry tensors we do not use).
  Expected<void> init(int64_t unit_first, int64_t unit_last, bool partial);
  Expected<void> read_hparams();  // all but the weights, n_vocab included

  gguf::File file_;
  // The tensor table the weights point into; never resized after construction (Weight::info).
  std::vector<gguf::TensorInfo> tensors_;
  std::map<std::string_view, size_t, std::less<>> tensor_index_;  // views of tensors_[i].name
  int64_t unit_first_ = 0, unit_last_ = 0;
  ErrorCode tensor_error_;  // parse for a file's tensors, invalid_argument for the caller's
  HParams hp_;
  Weights w_;
  std::vector<std::vector<float>> converted_;  // small vectors stored in F16/BF16, converted to F32
};

// What the origin sends a worker, before its tensors, so that it can build its Model with
// from_parts(): a GGUF (bytes, no tensors) holding every metadata key/value of m's file except the
// "tokenizer.*" keys — workers need no vocabulary, and the tokens should not leave the origin —
// plus "<arch>.vocab_size" (u32) = n_vocab, so that a worker without token_embd.weight knows it.
// general.alignment is kept. gguf::File::from_bytes parses the result.
Expected<std::vector<uint8_t>> segment_metadata(const Model& m);

}  // namespace ll::model
