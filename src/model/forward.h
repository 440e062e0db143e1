// Runs any contiguous range of a model's units on a batch of tokens from one or several
// sequences. This is what a device of the pipeline executes; results do not depend on how the
// units are grouped, on the batch composition, or on the thread count (the kernels are batch-
// and thread-invariant), so a pipeline of segments reproduces the single-process output exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace ll::model {

// Work done by one unit of a runner since it was created (or since reset_unit_timings()).
struct UnitTiming {
  int64_t unit = 0;
  // Tokens the unit computed: every batch token for the embedding and the blocks; for the head,
  // only those with want_output (the others skip it).
  uint64_t n_tokens = 0;
  double compute_ms = 0.0;  // wall time inside the unit's work (steady clock)
};

struct BatchToken {
  int32_t seq_id = 0;
  int32_t pos = 0;            // position in its sequence
  int32_t token = 0;          // used only when the segment starts at unit 0
  bool want_output = false;   // produce logits for this token (only matters for the head unit)
};

class UnitRunner {
 public:
  // Runs units [unit_first, unit_last] of `model`, which must hold them (Model::unit_first() ..
  // unit_last(): invalid_argument otherwise); each sequence may hold up to n_ctx positions.
  static Expected<std::unique_ptr<UnitRunner>> create(const Model& model, int64_t unit_first, int64_t unit_last,
                                                      ThreadPool& pool, int64_t n_ctx);

  // hidden_in: F32 [batch.size()][n_embd], ignored when unit_first == 0 (tokens are embedded).
  // out: when the range ends with the head unit, logits F32 [n_want][n_vocab] for the tokens with
  // want_output, in batch order; otherwise the hidden states F32 [batch.size()][n_embd].
  Expected<void> forward(std::span<const BatchToken> batch, const float* hidden_in, std::vector<float>& out);

  void release_sequence(int32_t seq_id) { kv_.release(seq_id); }
  int64_t unit_first() const { return unit_first_; }
  int64_t unit_last() const { return unit_last_; }
  bool has_head() const { return unit_last_ == model_.hparams().n_layer + 1; }
  int64_t n_ctx() const { return kv_.n_ctx(); }
  const KvCache& kv_cache() const { return kv_; }
  int64_t kv_dim() const { return model_.hparams().kv_dim(); }
  // Moving a sequence's KV cache between devices (load balancing). `unit` must be a transformer
  // block of this range. export_kv: positions 0..n-1 of that block for `seq_id`, K then V, F16 bits
  // [n][kv_dim] (not_found for a sequence this runner does not hold). import_kv: stores them for a
  // sequence this runner has not computed anything for (a new id); the sequence can run once
  // every block of the range has received its positions.
  struct KvRows {
    int64_t n_pos = 0;
    std::vector<uint16_t> k, v;
  };
  Expected<KvRows> export_kv(int32_t seq_id, int64_t unit) const;
  Expected<void> import_kv(int32_t seq_id, int64_t unit, int64_t n_pos, std::span<const uint16_t> k,
                           std::span<const uint16_t> v);
  // One entry per unit of the range, in order: where forward() spends its time, for profiling
  // and balancing. Timing does not touch the arithmetic, so results stay bit-identical.
  std::vector<UnitTiming> unit_timings() const { return timings_; }
  void reset_unit_timings();
  // Called inside each unit's timed work, after it (unit, tokens it computed). Tests and device
  // emulation slow a device down with it; the arithmetic is untouched.
  using UnitHook = std::function<void(int64_t unit, int64_t n_tokens)>;
  void set_unit_hook(UnitHook hook) { unit_hook_ = std::move(hook); }

 private:
  UnitRunner(const Model& model, int64_t unit_first, int64_t unit_last, ThreadPool& pool, int64_t n_ctx);
  void run_block(int64_t layer, std::span<const BatchToken> batch, std::vector<SequenceKv*>& seqs);

  const Model& model_;
  int64_t unit_first_, unit_last_;
  int64_t layer_first_, n_layers_here_;  // transformer blocks in this range
  ThreadPool& pool_;
  KvCache kv_;
  std::vector<UnitTiming> timings_;  // [unit_last - unit_first + 1]
  UnitHook unit_hook_;
  kernels::MatmulScratch mm_scratch_;
  // Activations, reused between calls: F32 [n_tokens][...].
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, ffn_, attn_scratch_;
};

}  // namespace ll::model
