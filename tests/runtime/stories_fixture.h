// stories260K with three prompts as coordinator requests, and its single-process greedy reference:
// what the failover and balancing tests hold a disturbed pipeline against.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "common/shared_files.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "runtime/coordinator.h"

namespace ll::test {

struct StoriesFixture {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::Tokenizer> tok;
  std::vector<runtime::Request> requests;
};

inline StoriesFixture load_stories() {
  StoriesFixture f;
  auto m = model::Model::load(shared_path("models/stories260K.gguf"));
  EXPECT_TRUE(m.has_value());
  if (!m) return f;
  f.model = std::move(*m);
  auto t = model::Tokenizer::from_gguf(f.model->file());
  EXPECT_TRUE(t.has_value());
  f.tok = std::make_unique<model::Tokenizer>(std::move(*t));
  for (const char* p : {"Once upon a time", "The cat sat", "Lily and Ben went to the park. They saw a big"}) {
    f.requests.push_back(runtime::Request{f.tok->encode(p, true)});
  }
  return f;
}

// One process, every unit, each request on its own with `gen` as is.
inline std::vector<model::GenerateResult> single_process(const StoriesFixture& f, const model::GenerateOptions& gen,
                                                         int64_t n_ctx) {
  ThreadPool pool(1);
  std::vector<model::GenerateResult> out;
  for (const auto& r : f.requests) {
    auto runner = model::UnitRunner::create(*f.model, 0, f.model->n_units() - 1, pool, n_ctx);
    EXPECT_TRUE(runner.has_value());
    auto res = model::generate(**runner, *f.tok, r.prompt_tokens, gen);
    EXPECT_TRUE(res.has_value()) << res.error().message;
    out.push_back(std::move(*res));
  }
  return out;
}

// The same tokens and texts, request by request.
inline void expect_same(const std::vector<model::GenerateResult>& got, const std::vector<model::GenerateResult>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
    EXPECT_EQ(got[i].text, want[i].text) << "request " << i;
  }
}

// How many units `device` runs in `stages`.
inline int units_on(const std::vector<runtime::Stage>& stages, int device) {
  int n = 0;
  for (const auto& st : stages) {
    if (st.device == device) n += static_cast<int>(st.last_unit - st.first_unit + 1);
  }
  return n;
}

}  // namespace ll::test
