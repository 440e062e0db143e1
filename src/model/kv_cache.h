// Per-sequence KV cache for the layers a device runs. K and V are F16 (as llama.cpp's default),
// layout per layer [n_ctx][n_head_kv * head_dim] (position-major), allocated lazily so that
// untouched context costs no resident memory.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "core/error.h"

namespace ll::model {

class SequenceKv {
 public:
  SequenceKv(int64_t n_layers, int64_t n_ctx, int64_t kv_dim);
  uint16_t* k(int64_t layer_index, int64_t pos) { return k_.get() + offset(layer_index, pos); }
  uint16_t* v(int64_t layer_index, int64_t pos) { return v_.get() + offset(layer_index, pos); }
  const uint16_t* k_layer(int64_t layer_index) const { return k_.get() + offset(layer_index, 0); }
  const uint16_t* v_layer(int64_t layer_index) const { return v_.get() + offset(layer_index, 0); }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_layers() const { return n_layers_; }
  int64_t kv_dim() const { return kv_dim_; }
  int64_t n_filled = 0;  // positions 0..n_filled-1 hold valid entries
  // A cache moved in from another device (UnitRunner::import_kv), one layer at a time: positions
  // each layer received (-1: none yet). n_filled is their minimum, so a batch cannot run on layers
  // still missing. Empty for a cache computed here.
  std::vector<int64_t> imported;

 private:
  size_t offset(int64_t layer_index, int64_t pos) const {
    return static_cast<size_t>((layer_index * n_ctx_ + pos) * kv_dim_);
  }
  int64_t n_layers_, n_ctx_, kv_dim_;
  std::unique_ptr<uint16_t[]> k_, v_;
};

class KvCache {
 public:
  KvCache(int64_t n_layers, int64_t n_ctx, int64_t kv_dim) : n_layers_(n_layers), n_ctx_(n_ctx), kv_dim_(kv_dim) {}
  SequenceKv& get_or_create(int32_t seq_id);
  SequenceKv* find(int32_t seq_id);
  const SequenceKv* find(int32_t seq_id) const;
  void release(int32_t seq_id) { seqs_.erase(seq_id); }
  int64_t n_ctx() const { return n_ctx_; }

 private:
  int64_t n_layers_, n_ctx_, kv_dim_;
  std::map<int32_t, std::unique_ptr<SequenceKv>> seqs_;
};

}  // namespace ll::model
