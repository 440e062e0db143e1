// Reading the real GGUF files under ../shared (written by llama.cpp's tools).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/shared_files.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace ll::gguf::test {
namespace {

using ll::test::shared_path;

TEST(GgufRealFiles, Stories260K) {
  const std::string path = shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(path);
  auto f = File::open(path);
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(*f->get_string("general.architecture"), "llama");
  EXPECT_EQ(*f->get_u64("llama.block_count"), 5u);
  EXPECT_EQ(*f->get_u64("llama.embedding_length"), 64u);
  EXPECT_EQ(*f->get_u64("llama.attention.head_count"), 8u);
  EXPECT_EQ(*f->get_u64("tokenizer.ggml.seperator_token_id"), 0xffffffffu);
  EXPECT_NEAR(*f->get_f64("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);
  const auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value());
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ(f->get_f32_array("tokenizer.ggml.scores")->size(), 512u);
  EXPECT_EQ(f->get_i64_array("tokenizer.ggml.token_type")->size(), 512u);
  EXPECT_EQ(f->metadata().size(), 19u);

  ASSERT_EQ(f->tensors().size(), 48u);  // 3 + 5 layers x 9
  for (const auto& t : f->tensors()) EXPECT_EQ(t.type, DType::F32) << t.name;
  const TensorInfo* emb = f->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->shape, (std::vector<uint64_t>{64, 512}));
  EXPECT_EQ(emb->n_bytes, 64u * 512u * 4u);
  EXPECT_EQ(emb->n_rows(), 512u);
  EXPECT_NE(f->find_tensor("blk.4.ffn_down.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.5.ffn_down.weight"), nullptr);
  const TensorInfo& last = f->tensors().back();
  EXPECT_LE(f->data_offset() + last.offset + last.n_bytes, f->file_size());
  touch_file(*f);

  // The same bytes through from_bytes give the same structure.
  auto g = File::from_bytes(read_all(path), "copy");
  ASSERT_TRUE(g.has_value()) << g.error().message;
  ASSERT_EQ(g->tensors().size(), f->tensors().size());
  for (size_t i = 0; i < f->tensors().size(); ++i) {
    const auto& a = f->tensors()[i];
    const auto& b = g->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.n_bytes), 0) << a.name;
  }
}

TEST(GgufRealFiles, TinyRandomModels) {
  const std::map<std::string, DType> embd_type = {
      {"f16", DType::F16},   {"bf16", DType::BF16},   {"q8_0", DType::Q8_0},
      {"q4_0", DType::Q4_0}, {"q4_k_m", DType::Q4_K}, {"q6_k", DType::Q6_K},
  };
  for (const auto& [suffix, type] : embd_type) {
    SCOPED_TRACE(suffix);
    const std::string path = shared_path("models/tiny-random-" + suffix + ".gguf");
    LL_REQUIRE_SHARED(path);
    auto f = File::open(path);
    ASSERT_TRUE(f.has_value()) << f.error().message;
    EXPECT_EQ(*f->get_string("general.architecture"), "llama");
    EXPECT_EQ(*f->get_u64("llama.embedding_length"), 256u);
    EXPECT_EQ(*f->get_u64("llama.block_count"), 2u);
    EXPECT_EQ(*f->get_bool("tokenizer.ggml.add_bos_token"), true);
    EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens")->size(), 512u);
    ASSERT_EQ(f->tensors().size(), 21u);  // 3 + 2 layers x 9
    const TensorInfo* emb = f->find_tensor("token_embd.weight");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(emb->type, type);
    EXPECT_EQ(emb->shape, (std::vector<uint64_t>{256, 512}));
    const TensorInfo* norm = f->find_tensor("output_norm.weight");
    ASSERT_NE(norm, nullptr);
    EXPECT_EQ(norm->type, DType::F32);
    uint64_t total = 0;
    size_t n_f32 = 0;
    for (const auto& t : f->tensors()) {
      total += t.n_bytes;
      if (t.type == DType::F32) ++n_f32;
      EXPECT_EQ(t.n_bytes, *dtype_row_bytes(t.type, t.row_elems()) * t.n_rows()) << t.name;
    }
    EXPECT_EQ(n_f32, 5u);  // the norms stay F32
    EXPECT_LE(total, f->file_size() - f->data_offset());
    touch_file(*f);
  }
}

TEST(GgufRealFiles, VocabFiles) {
  for (const char* name : {"gpt-2", "llama-bpe", "llama-spm", "qwen2"}) {
    SCOPED_TRACE(name);
    const std::string path = shared_path(std::string("vocab/ggml-vocab-") + name + ".gguf");
    LL_REQUIRE_SHARED(path);
    auto f = File::open(path);
    ASSERT_TRUE(f.has_value()) << f.error().message;
    EXPECT_TRUE(f->tensors().empty());
    EXPECT_TRUE(f->get_string("general.architecture").has_value());
    EXPECT_TRUE(f->get_string("tokenizer.ggml.model").has_value());
    auto tokens = f->get_string_array("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.has_value()) << tokens.error().message;
    EXPECT_GT(tokens->size(), 1000u);
    EXPECT_EQ(f->get_i64_array("tokenizer.ggml.token_type")->size(), tokens->size());
  }
}

}  // namespace
}  // namespace ll::gguf::test
