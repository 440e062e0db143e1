#include "model/kv_cache.h"

namespace ll::model {

SequenceKv::SequenceKv(int64_t n_layers, int64_t n_ctx, int64_t kv_dim)
    : n_layers_(n_layers), n_ctx_(n_ctx), kv_dim_(kv_dim) {
  const size_t n = static_cast<size_t>(n_layers_ * n_ctx_ * kv_dim_);
  // Default-initialised (not zeroed): pages become resident only when written.
  k_.reset(new uint16_t[n == 0 ? 1 : n]);
  v_.reset(new uint16_t[n == 0 ? 1 : n]);
}

SequenceKv& KvCache::get_or_create(int32_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    it = seqs_.emplace(seq_id, std::make_unique<SequenceKv>(n_layers_, n_ctx_, kv_dim_)).first;
  }
  return *it->second;
}

SequenceKv* KvCache::find(int32_t seq_id) {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

const SequenceKv* KvCache::find(int32_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

}  // namespace ll::model
