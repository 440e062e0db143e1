// runtime::hold_units_in_memory / release_units_memory on live models: the weights move between
// the file mapping and memory under a model in use, and the tokens never change.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "model/synthetic.h"
#include "runtime/model_source.h"
#include "stories_fixture.h"

namespace ll::test {
namespace {

model::GenerateOptions greedy(int64_t n) {
  model::GenerateOptions gen;
  gen.n_predict = n;
  gen.sampling.temperature = 0;
  return gen;
}

TEST(HoldWeights, StoriesHeldAndReleasedGiveTheSameTokens) {
  LL_REQUIRE_SHARED(shared_path("models/stories260K.gguf"));
  StoriesFixture f = load_stories();
  ASSERT_TRUE(f.model);
  const auto gen = greedy(32);
  const int64_t n_ctx = 128, last = f.model->n_units() - 1;
  const auto want = single_process(f, gen, n_ctx);
  const gguf::File& file = f.model->file();
  ASSERT_EQ(file.held_bytes(), 0u);
  std::vector<std::string> said;
  const auto log = [&](const std::string& s) { said.push_back(s); };

  // Every unit: at least every byte of the file's data section.
  const uint64_t held = runtime::hold_units_in_memory(*f.model, 0, last, log);
  EXPECT_TRUE(said.empty()) << said.front();
  EXPECT_GE(held, file.file_size() - file.data_offset());
  EXPECT_EQ(file.held_bytes(), held);
  expect_same(single_process(f, gen, n_ctx), want);
  EXPECT_EQ(runtime::hold_units_in_memory(*f.model, 0, last, log), 0u);  // (held already)
  // The blocks given back (what of them lies in stretches of their own: where the small mapping
  // lies against 2 MiB boundaries decides how much); the tokens stay.
  const uint64_t released = runtime::release_units_memory(*f.model, 1, last - 1);
  EXPECT_EQ(file.held_bytes(), held - released);
  expect_same(single_process(f, gen, n_ctx), want);
}

// Blocks of 7 MiB (F32, n_embd 256, n_ff 2048): several stretches each.
TEST(HoldWeights, UnitsMoveBetweenFileAndMemoryWithoutChangingAToken) {
  const std::string path = ::testing::TempDir() + "/ll_hold_" + std::to_string(::getpid()) + ".gguf";
  model::GenModelOptions g;
  g.preset = model::ModelPreset{"hold-blocks", 256, 4, 4, 4, 2048, 256, 256};
  g.type = DType::F32;
  ASSERT_TRUE(model::write_random_model(g, path).has_value());
  StoriesFixture f;
  {
    auto m = model::Model::load(path);
    std::filesystem::remove(path);  // (the mapping keeps the file: nothing depends on its name)
    ASSERT_TRUE(m.has_value()) << m.error().message;
    f.model = std::move(*m);
    auto t = model::Tokenizer::from_gguf(f.model->file());
    ASSERT_TRUE(t.has_value()) << t.error().message;
    f.tok = std::make_unique<model::Tokenizer>(std::move(*t));
    f.requests.push_back(runtime::Request{{1, 17, 42, 99}});
    f.requests.push_back(runtime::Request{{1, 200, 3}});
  }
  const auto gen = greedy(24);
  const int64_t n_ctx = 64, last = f.model->n_units() - 1;
  ASSERT_GT(f.model->unit_weight_bytes(1), uint64_t{6} << 20);
  const auto want = single_process(f, gen, n_ctx);
  ASSERT_EQ(want[0].tokens.size(), 24u);
  const gguf::File& file = f.model->file();
  const std::function<void(const std::string&)> no_log;

  const uint64_t held = runtime::hold_units_in_memory(*f.model, 0, last, no_log);
  EXPECT_GE(held, file.file_size() - file.data_offset());
  expect_same(single_process(f, gen, n_ctx), want);

  // Blocks 2-3 given back (a worker's units): their stretches map the file again, all but the two
  // they share with their neighbours; the tokens stay.
  const uint64_t released = runtime::release_units_memory(*f.model, 2, 3);
  EXPECT_GT(released, 2 * f.model->unit_weight_bytes(2) - (uint64_t{4} << 20));
  EXPECT_EQ(file.held_bytes(), held - released);
  expect_same(single_process(f, gen, n_ctx), want);

  // Everything back (but the stretch the file's header shares with the embedding), then one block
  // held again.
  runtime::release_units_memory(*f.model, 0, last);
  EXPECT_LE(file.held_bytes(), uint64_t{2} << 20);
  file.release_memory(0, file.file_size());
  EXPECT_EQ(file.held_bytes(), 0u);
  expect_same(single_process(f, gen, n_ctx), want);
  const uint64_t one = runtime::hold_units_in_memory(*f.model, 2, 2, no_log);
  EXPECT_GE(one, f.model->unit_weight_bytes(2));
  EXPECT_LE(one, f.model->unit_weight_bytes(2) + (uint64_t{4} << 20));
  expect_same(single_process(f, gen, n_ctx), want);

  // Units outside the model, or an empty range: nothing.
  EXPECT_EQ(runtime::hold_units_in_memory(*f.model, last + 1, last + 5, no_log), 0u);
  EXPECT_EQ(runtime::hold_units_in_memory(*f.model, 3, 2, no_log), 0u);
  EXPECT_EQ(runtime::release_units_memory(*f.model, last + 1, last + 5), 0u);
}

}  // namespace
}  // namespace ll::test
