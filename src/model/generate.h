// Text generation on one device: prefill in micro-batches, then decode token by token, streaming
// the text and stopping at end-of-generation, a stop string, the token limit or the context end.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "model/forward.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

namespace ll::model {

struct GenerateOptions {
  int64_t n_predict = 128;           // < 0: until end of generation or context end
  int64_t n_batch = 64;              // prefill micro-batch size
  SamplingParams sampling;
  std::vector<std::string> stop;     // stop strings (not included in the text)
  int32_t seq_id = 0;
};

enum class StopReason { length, eog, stop_string, context };
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (without the end-of-generation id that stopped it)
  std::string text;             // their text, cut before a stop string
  StopReason stop_reason = StopReason::length;
  int64_t n_prompt = 0;
  uint64_t seed = 0;            // the sampler's seed (drawn at random unless one was given)
  double prefill_ms = 0;
  double decode_ms = 0;
  double prefill_tok_s() const { return prefill_ms > 0 ? n_prompt * 1000.0 / prefill_ms : 0; }
  double decode_tok_s() const {
    // The first generated token comes from the prefill's logits; decode time covers the rest.
    const double n = static_cast<double>(tokens.size()) - 1;
    return decode_ms > 0 && n > 0 ? n * 1000.0 / decode_ms : 0;
  }
};

// Holds back text that may still become a stop string or is an incomplete UTF-8 sequence, and
// releases the rest for streaming.
class TextStreamer {
 public:
  explicit TextStreamer(std::vector<std::string> stop) : stop_(std::move(stop)) {}
  // Adds a piece; returns the text that is now safe to show. Sets `stopped` when a stop string
  // appeared (the text before it is returned, and nothing after it ever is).
  std::string push(std::string_view piece, bool& stopped);
  // The rest at the end of generation (a held-back prefix that did not become a stop string).
  std::string flush();
  const std::string& text() const { return text_; }  // everything accepted so far

 private:
  std::vector<std::string> stop_;
  std::string text_;
  size_t emitted_ = 0;
  bool stopped_ = false;
};

// runner must run every unit of the model (0 .. n_layer + 1).
Expected<GenerateResult> generate(UnitRunner& runner, const Tokenizer& tokenizer,
                                  const std::vector<int32_t>& prompt_tokens, const GenerateOptions& opts,
                                  const std::function<void(std::string_view)>& on_text = {});

}  // namespace ll::model
