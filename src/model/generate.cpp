#include "model/generate.h"

#include <chrono>

namespace ll::model {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::length: return "length";
    case StopReason::eog: return "eog";
    case StopReason::stop_string: return "stop";
    case StopReason::context: return "context";
  }
  return "?";
}

namespace {

// Length of the longest suffix of `s` that is an incomplete UTF-8 sequence.
size_t incomplete_utf8_tail(std::string_view s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

std::string TextStreamer::push(std::string_view piece, bool& stopped) {
  stopped = false;
  if (stopped_) {
    stopped = true;
    return {};
  }
  text_.append(piece);
  // A stop string may start in text already shown only if it was held back, so search from the
  // first byte not yet emitted minus the longest stop string.
  size_t longest = 0;
  for (const auto& s : stop_) longest = std::max(longest, s.size());
  const size_t search_from = emitted_ >= longest ? emitted_ - longest : 0;
  size_t cut = std::string::npos;
  for (const auto& s : stop_) {
    if (s.empty()) continue;
    const size_t at = text_.find(s, search_from);
    if (at != std::string::npos && at < cut) cut = at;
  }
  if (cut != std::string::npos) {
    stopped_ = stopped = true;
    text_.resize(cut);
    std::string out = cut > emitted_ ? text_.substr(emitted_) : std::string();
    emitted_ = text_.size();
    return out;
  }
  // Hold back a suffix that is a prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stop_) {
    if (s.empty()) continue;
    for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k) {
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  size_t end = text_.size() - hold;
  end -= incomplete_utf8_tail(std::string_view(text_).substr(0, end));
  if (end <= emitted_) return {};
  std::string out = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string TextStreamer::flush() {
  std::string out = text_.size() > emitted_ ? text_.substr(emitted_) : std::string();
  emitted_ = text_.size();
  return out;
}

Expected<GenerateResult> generate(UnitRunner& runner, const Tokenizer& tokenizer,
                                  const std::vector<int32_t>& prompt_tokens, const GenerateOptions& opts,
                                  const std::function<void(std::string_view)>& on_text) {
  using clock = std::chrono::steady_clock;
  GenerateResult res;
  res.n_prompt = static_cast<int64_t>(prompt_tokens.size());
  if (prompt_tokens.empty()) return make_error(ErrorCode::invalid_argument, "the prompt is empty");
  if (res.n_prompt >= runner.n_ctx()) {
    return make_error(ErrorCode::invalid_argument, "the prompt has " + std::to_string(res.n_prompt) +
                                                       " tokens, which does not fit a context of " +
                                                       std::to_string(runner.n_ctx()));
  }
  const int64_t n_batch = std::max<int64_t>(1, opts.n_batch);
  Sampler sampler(opts.sampling);
  res.seed = sampler.seed();
  TextStreamer streamer(opts.stop);
  std::vector<int32_t> history = prompt_tokens;
  std::vector<float> logits;
  std::vector<BatchToken> batch;

  // Prefill in micro-batches; only the last prompt token needs logits.
  const auto t0 = clock::now();
  for (int64_t first = 0; first < res.n_prompt; first += n_batch) {
    const int64_t last = std::min(res.n_prompt, first + n_batch);
    batch.clear();
    for (int64_t i = first; i < last; ++i) {
      batch.push_back(BatchToken{opts.seq_id, static_cast<int32_t>(i), prompt_tokens[static_cast<size_t>(i)],
                                 i == res.n_prompt - 1});
    }
    LL_TRY(runner.forward(batch, nullptr, logits));
  }
  const auto t1 = clock::now();
  res.prefill_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();

  const int64_t n_vocab = tokenizer.n_vocab();
  const int64_t logits_vocab = static_cast<int64_t>(logits.size());
  if (logits_vocab < n_vocab) {
    return make_error(ErrorCode::internal, "model produced fewer logits than the vocabulary size");
  }
  int64_t pos = res.n_prompt;
  res.stop_reason = StopReason::length;
  for (int64_t i = 0; opts.n_predict < 0 || i < opts.n_predict; ++i) {
    const int32_t tok = sampler.sample(logits.data(), n_vocab, history);
    if (tokenizer.is_eog(tok)) {
      res.stop_reason = StopReason::eog;
      break;
    }
    res.tokens.push_back(tok);
    history.push_back(tok);
    bool stopped = false;
    std::string shown = streamer.push(tokenizer.decode_token(tok), stopped);
    if (on_text && !shown.empty()) on_text(shown);
    if (stopped) {
      res.stop_reason = StopReason::stop_string;
      break;
    }
    if (opts.n_predict >= 0 && i + 1 >= opts.n_predict) break;
    if (pos >= runner.n_ctx()) {
      res.stop_reason = StopReason::context;
      break;
    }
    BatchToken bt{opts.seq_id, static_cast<int32_t>(pos), tok, true};
    LL_TRY(runner.forward(std::span<const BatchToken>(&bt, 1), nullptr, logits));
    ++pos;
  }
  res.decode_ms = std::chrono::duration<double, std::milli>(clock::now() - t1).count();
  std::string rest = streamer.flush();
  if (on_text && !rest.empty()) on_text(rest);
  res.text = streamer.text();
  return res;
}

}  // namespace ll::model
