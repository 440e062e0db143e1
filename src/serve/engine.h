// What the server's scheduler drives: something that generates a batch of requests. Two kinds —
// the distributed pipeline (a runtime::Coordinator over workers) and one process running every
// unit — and tests use their own. An Engine is used by one thread at a time (the scheduler's).
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "runtime/coordinator.h"
#include "serve/metrics.h"

namespace ll::serve {

struct EngineRequest {
  std::vector<int32_t> prompt_tokens;
  model::GenerateOptions options;  // its own limits, sampling (seed as given) and stop strings
  // True once nobody waits for the answer (a streaming client went away): the pipeline engine then
  // ends the request at its next token. The one-process engine runs it to the end.
  std::function<bool()> cancelled = {};
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Results in request order; on_text(i, text) streams request i's text as it is produced.
  virtual Expected<std::vector<model::GenerateResult>> generate(
      const std::vector<EngineRequest>& requests, const std::function<void(size_t, std::string_view)>& on_text) = 0;
  // Most requests worth running at once (the scheduler's batch size).
  virtual size_t max_batch() const = 0;
  // Devices and stages, with the stage timings of the last batch (may ask the workers).
  virtual Expected<ClusterInfo> describe() = 0;
};

// The pipeline over workers; `parallel` requests in flight at once.
std::unique_ptr<Engine> make_coordinator_engine(runtime::Coordinator& coordinator, const model::Tokenizer& tokenizer,
                                                size_t parallel, std::string model_name, std::string mode);

// One process running every unit; requests are generated one after another.
Expected<std::unique_ptr<Engine>> make_local_engine(const model::Model& model, const model::Tokenizer& tokenizer,
                                                    int n_threads, int64_t n_ctx, std::string model_name);

}  // namespace ll::serve
