#include "model/forward.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/ops.h"
#include "quant/quant.h"

namespace ll::model {

Expected<std::unique_ptr<UnitRunner>> UnitRunner::create(const Model& model, int64_t unit_first,
                                                         int64_t unit_last, ThreadPool& pool, int64_t n_ctx) {
  const int64_t n_units = model.n_units();
  if (unit_first < 0 || unit_last < unit_first || unit_last >= n_units) {
    return make_error(ErrorCode::invalid_argument, "unit range " + std::to_string(unit_first) + "-" +
                                                       std::to_string(unit_last) + " is not within 0-" +
                                                       std::to_string(n_units - 1));
  }
  if (unit_first < model.unit_first() || unit_last > model.unit_last()) {
    return make_error(ErrorCode::invalid_argument,
                      "unit range " + std::to_string(unit_first) + "-" + std::to_string(unit_last) +
                          " is not loaded: the model holds units " + std::to_string(model.unit_first()) +
                          "-" + std::to_string(model.unit_last()) + " only");
  }
  if (n_ctx < 1 || n_ctx > (int64_t{1} << 24)) {
    return make_error(ErrorCode::invalid_argument, "context size " + std::to_string(n_ctx) + " is out of range");
  }
  return std::unique_ptr<UnitRunner>(new UnitRunner(model, unit_first, unit_last, pool, n_ctx));
}

UnitRunner::UnitRunner(const Model& model, int64_t unit_first, int64_t unit_last, ThreadPool& pool, int64_t n_ctx)
    : model_(model),
      unit_first_(unit_first),
      unit_last_(unit_last),
      layer_first_(std::max<int64_t>(unit_first, 1) - 1),
      n_layers_here_(std::max<int64_t>(0, std::min(unit_last, model.hparams().n_layer) -
                                              std::max<int64_t>(unit_first, 1) + 1)),
      pool_(pool),
      kv_(n_layers_here_, n_ctx, model.hparams().kv_dim()) {
  reset_unit_timings();
}

void UnitRunner::reset_unit_timings() {
  timings_.clear();
  for (int64_t u = unit_first_; u <= unit_last_; ++u) timings_.push_back(UnitTiming{u, 0, 0.0});
}

Expected<UnitRunner::KvRows> UnitRunner::export_kv(int32_t seq_id, int64_t unit) const {
  const int64_t l = unit - 1 - layer_first_;
  if (unit < 1 || unit > model_.hparams().n_layer || l < 0 || l >= n_layers_here_) {
    return make_error(ErrorCode::invalid_argument, "unit " + std::to_string(unit) + " is not a block of units " +
                                                       std::to_string(unit_first_) + "-" + std::to_string(unit_last_));
  }
  const SequenceKv* s = kv_.find(seq_id);
  if (s == nullptr) return make_error(ErrorCode::not_found, "no KV cache for sequence " + std::to_string(seq_id));
  KvRows out;
  out.n_pos = s->n_filled;
  const size_t n = static_cast<size_t>(out.n_pos * s->kv_dim());
  out.k.assign(s->k_layer(l), s->k_layer(l) + n);
  out.v.assign(s->v_layer(l), s->v_layer(l) + n);
  return out;
}

Expected<void> UnitRunner::import_kv(int32_t seq_id, int64_t unit, int64_t n_pos, std::span<const uint16_t> k,
                                     std::span<const uint16_t> v) {
  const int64_t l = unit - 1 - layer_first_;
  if (unit < 1 || unit > model_.hparams().n_layer || l < 0 || l >= n_layers_here_) {
    return make_error(ErrorCode::invalid_argument, "unit " + std::to_string(unit) + " is not a block of units " +
                                                       std::to_string(unit_first_) + "-" + std::to_string(unit_last_));
  }
  if (seq_id < 0) return make_error(ErrorCode::invalid_argument, "negative sequence id");
  if (n_pos < 0 || n_pos > kv_.n_ctx()) {
    return make_error(ErrorCode::out_of_range, std::to_string(n_pos) + " positions do not fit the context of " +
                                                   std::to_string(kv_.n_ctx()));
  }
  const size_t n = static_cast<size_t>(n_pos * kv_dim());
  if (k.size() != n || v.size() != n) {
    return make_error(ErrorCode::invalid_argument, "KV rows of the wrong size: " + std::to_string(k.size()) + " and " +
                                                       std::to_string(v.size()) + " values for " +
                                                       std::to_string(n_pos) + " positions of width " +
                                                       std::to_string(kv_dim()));
  }
  SequenceKv* s = kv_.find(seq_id);
  if (s != nullptr && s->imported.empty()) {
    return make_error(ErrorCode::invalid_argument,
                      "sequence " + std::to_string(seq_id) + " already has a KV cache computed here");
  }
  if (s == nullptr) {
    s = &kv_.get_or_create(seq_id);
    s->imported.assign(static_cast<size_t>(n_layers_here_), -1);
  }
  if (n > 0) {
    std::memcpy(s->k(l, 0), k.data(), n * sizeof(uint16_t));
    std::memcpy(s->v(l, 0), v.data(), n * sizeof(uint16_t));
  }
  s->imported[static_cast<size_t>(l)] = n_pos;
  int64_t filled = n_pos;
  for (int64_t got : s->imported) filled = std::min(filled, got);
  s->n_filled = std::max<int64_t>(0, filled);
  return {};
}

namespace {

using Clock = std::chrono::steady_clock;

void add_timing(UnitTiming& t, int64_t n_tokens, Clock::time_point start) {
  t.n_tokens += static_cast<uint64_t>(n_tokens);
  t.compute_ms += std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

Expected<void> UnitRunner::forward(std::span<const BatchToken> batch, const float* hidden_in,
                                   std::vector<float>& out) {
  const HParams& hp = model_.hparams();
  const int64_t n = static_cast<int64_t>(batch.size());
  const int64_t E = hp.n_embd;
  if (n == 0) {
    out.clear();
    return {};
  }
  // Validate the batch before touching any state: ids, positions and order.
  std::vector<SequenceKv*> seqs(static_cast<size_t>(n), nullptr);
  if (n_layers_here_ > 0) {
    std::map<int32_t, int64_t> next_pos;
    for (int64_t i = 0; i < n; ++i) {
      const BatchToken& bt = batch[static_cast<size_t>(i)];
      if (bt.pos < 0 || bt.pos >= kv_.n_ctx()) {
        return make_error(ErrorCode::out_of_range, "position " + std::to_string(bt.pos) +
                                                       " is outside the context of " +
                                                       std::to_string(kv_.n_ctx()) + " tokens");
      }
      auto it = next_pos.find(bt.seq_id);
      int64_t filled;
      if (it == next_pos.end()) {
        SequenceKv* s = kv_.find(bt.seq_id);
        filled = s ? s->n_filled : 0;
      } else {
        filled = it->second;
      }
      if (bt.pos > filled) {
        return make_error(ErrorCode::invalid_argument,
                          "sequence " + std::to_string(bt.seq_id) + ": position " + std::to_string(bt.pos) +
                              " skips ahead of the " + std::to_string(filled) + " cached positions");
      }
      next_pos[bt.seq_id] = std::max<int64_t>(filled, bt.pos + 1);
    }
    for (int64_t i = 0; i < n; ++i) seqs[static_cast<size_t>(i)] = &kv_.get_or_create(batch[static_cast<size_t>(i)].seq_id);
  }

  x_.resize(static_cast<size_t>(n * E));
  if (unit_first_ == 0) {
    const Clock::time_point start = Clock::now();
    const Weight& emb = model_.weights().tok_embd;
    const size_t row_bytes = *dtype_row_bytes(emb.type, static_cast<uint64_t>(E));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t tok = batch[static_cast<size_t>(i)].token;
      if (tok < 0 || tok >= hp.n_vocab) {
        return make_error(ErrorCode::out_of_range, "token id " + std::to_string(tok) + " is outside the vocabulary of " +
                                                       std::to_string(hp.n_vocab));
      }
      quant::dequantize_row(emb.type, static_cast<const uint8_t*>(emb.data) + static_cast<size_t>(tok) * row_bytes,
                            x_.data() + i * E, E);
    }
    if (unit_hook_) unit_hook_(0, n);
    add_timing(timings_.front(), n, start);
  } else {
    if (hidden_in == nullptr) return make_error(ErrorCode::invalid_argument, "hidden state input missing");
    std::memcpy(x_.data(), hidden_in, static_cast<size_t>(n * E) * sizeof(float));
  }

  const size_t first_block_timing = unit_first_ == 0 ? 1 : 0;
  for (int64_t l = 0; l < n_layers_here_; ++l) {
    const Clock::time_point start = Clock::now();
    run_block(l, batch, seqs);
    if (unit_hook_) unit_hook_(layer_first_ + l + 1, n);
    add_timing(timings_[first_block_timing + static_cast<size_t>(l)], n, start);
  }
  for (int64_t i = 0; i < n && n_layers_here_ > 0; ++i) {
    SequenceKv* s = seqs[static_cast<size_t>(i)];
    s->n_filled = std::max<int64_t>(s->n_filled, batch[static_cast<size_t>(i)].pos + 1);
  }

  if (!has_head()) {
    out.swap(x_);
    return {};
  }
  // Head: final norm and output projection, only for the tokens that want logits.
  const Clock::time_point head_start = Clock::now();
  int64_t n_out = 0;
  for (const auto& bt : batch) n_out += bt.want_output ? 1 : 0;
  xn_.resize(static_cast<size_t>(std::max<int64_t>(n_out, 1) * E));
  int64_t j = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!batch[static_cast<size_t>(i)].want_output) continue;
    kernels::rms_norm(x_.data() + i * E, model_.weights().output_norm, xn_.data() + j * E, E, hp.rms_eps);
    ++j;
  }
  out.resize(static_cast<size_t>(n_out * hp.n_vocab));
  if (n_out > 0) {
    const Weight& w = model_.weights().output;
    kernels::matmul(pool_, w.type, w.data, w.n_rows, w.n_cols, xn_.data(), n_out, out.data(), mm_scratch_);
  }
  if (unit_hook_) unit_hook_(unit_last_, n_out);
  add_timing(timings_.back(), n_out, head_start);
  return {};
}

void UnitRunner::run_block(int64_t l, std::span<const BatchToken> batch, std::vector<SequenceKv*>& seqs) {
  const HParams& hp = model_.hparams();
  const LayerWeights& L = model_.weights().layers[static_cast<size_t>(layer_first_ + l)];
  const int64_t n = static_cast<int64_t>(batch.size());
  const int64_t E = hp.n_embd, QD = hp.q_dim(), KVD = hp.kv_dim(), FF = hp.n_ff;
  xn_.resize(static_cast<size_t>(n * E));
  q_.resize(static_cast<size_t>(n * QD));
  k_.resize(static_cast<size_t>(n * KVD));
  v_.resize(static_cast<size_t>(n * KVD));
  attn_.resize(static_cast<size_t>(n * QD));
  gate_.resize(static_cast<size_t>(n * FF));
  up_.resize(static_cast<size_t>(n * FF));
  ffn_.resize(static_cast<size_t>(n * E));

  // Per-token work is split over threads by token; each token's arithmetic is the same whatever
  // the split, so results are thread-invariant.
  auto per_token = [&](auto&& fn) {
    if (n == 1) {  // decode: not worth waking the pool for one token's vector ops
      fn(0);
      return;
    }
    pool_.run([&](int ith, int nth) {
      int64_t first, last;
      split_range(n, ith, nth, first, last);
      for (int64_t i = first; i < last; ++i) fn(i);
    });
  };
  auto mm = [&](const Weight& w, const float* x, float* y) {
    kernels::matmul(pool_, w.type, w.data, w.n_rows, w.n_cols, x, n, y, mm_scratch_);
  };

  // Attention.
  per_token([&](int64_t i) { kernels::rms_norm(x_.data() + i * E, L.attn_norm, xn_.data() + i * E, E, hp.rms_eps); });
  mm(L.wq, xn_.data(), q_.data());
  mm(L.wk, xn_.data(), k_.data());
  mm(L.wv, xn_.data(), v_.data());
  const int64_t layer_in_cache = l;
  per_token([&](int64_t i) {
    float* q = q_.data() + i * QD;
    float* k = k_.data() + i * KVD;
    float* v = v_.data() + i * KVD;
    if (L.bq) kernels::add_bias(q, L.bq, QD);
    if (L.bk) kernels::add_bias(k, L.bk, KVD);
    if (L.bv) kernels::add_bias(v, L.bv, KVD);
    const int64_t pos = batch[static_cast<size_t>(i)].pos;
    kernels::rope(q, hp.n_head, hp.head_dim, hp.n_rot, pos, hp.rope_freq_base, hp.arch->rope_neox);
    kernels::rope(k, hp.n_head_kv, hp.head_dim, hp.n_rot, pos, hp.rope_freq_base, hp.arch->rope_neox);
    SequenceKv* s = seqs[static_cast<size_t>(i)];
    kernels::fp32_to_fp16_row(k, s->k(layer_in_cache, pos), KVD);
    kernels::fp32_to_fp16_row(v, s->v(layer_in_cache, pos), KVD);
  });
  const float scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
  const int nth = pool_.n_threads();
  int64_t max_pos = 0;
  for (const auto& bt : batch) max_pos = std::max<int64_t>(max_pos, bt.pos + 1);
  const size_t per_thread = kernels::attention_scratch_floats(hp.n_head, max_pos);
  attn_scratch_.resize(per_thread * static_cast<size_t>(nth));
  // Work items are (token, kv head) pairs, so that a single decode token's attention is split over
  // threads too; heads are independent, so the bits do not depend on the split.
  const int64_t n_items = n * hp.n_head_kv;
  pool_.run([&](int ith, int nthr) {
    int64_t first, last;
    split_range(n_items, ith, nthr, first, last);
    for (int64_t item = first; item < last;) {
      const int64_t i = item / hp.n_head_kv;
      const int64_t kv_first = item % hp.n_head_kv;
      const int64_t kv_last = std::min<int64_t>(hp.n_head_kv, kv_first + (last - item));
      SequenceKv* s = seqs[static_cast<size_t>(i)];
      const int64_t n_kv = batch[static_cast<size_t>(i)].pos + 1;  // causal: itself and everything before
      kernels::attention_kv_heads(q_.data() + i * QD, s->k_layer(layer_in_cache), s->v_layer(layer_in_cache), n_kv,
                                  hp.n_head, hp.n_head_kv, hp.head_dim, scale, attn_.data() + i * QD,
                                  attn_scratch_.data() + per_thread * static_cast<size_t>(ith), kv_first, kv_last);
      item += kv_last - kv_first;
    }
  });
  mm(L.wo, attn_.data(), ffn_.data());
  per_token([&](int64_t i) {
    kernels::add(x_.data() + i * E, ffn_.data() + i * E, x_.data() + i * E, E);
    kernels::rms_norm(x_.data() + i * E, L.ffn_norm, xn_.data() + i * E, E, hp.rms_eps);
  });

  // Feed-forward (SwiGLU).
  mm(L.w_gate, xn_.data(), gate_.data());
  mm(L.w_up, xn_.data(), up_.data());
  per_token([&](int64_t i) { kernels::swiglu(gate_.data() + i * FF, up_.data() + i * FF, gate_.data() + i * FF, FF); });
  mm(L.w_down, gate_.data(), ffn_.data());
  per_token([&](int64_t i) { kernels::add(x_.data() + i * E, ffn_.data() + i * E, x_.data() + i * E, E); });
}

}  // namespace ll::model
