// Partial models (Model::from_parts): a worker builds a Model from segment metadata and just its
// units' tensors, received over the network. Its forward pass must be bit-identical to the same
// range run on the fully loaded model, and malformed parts must be refused with a clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/synthetic.h"

namespace ll::model {
namespace {

constexpr size_t k_buffer_alignment = 64;

struct FreeDeleter {
  void operator()(uint8_t* p) const noexcept { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

// A 64-byte aligned heap copy of `n` bytes at `src`, placed `shift` bytes past the alignment.
AlignedBuffer aligned_copy(const void* src, size_t n, size_t shift = 0) {
  const size_t size = (n + shift + k_buffer_alignment - 1) / k_buffer_alignment * k_buffer_alignment;
  AlignedBuffer buf(static_cast<uint8_t*>(std::aligned_alloc(k_buffer_alignment, size)));
  if (!buf) std::abort();
  std::memcpy(buf.get() + shift, src, n);
  return buf;
}

// What a worker holds: the received tensor bytes (which must outlive its Model) and the Model.
struct Worker {
  std::vector<AlignedBuffer> buffers;
  std::unique_ptr<Model> model;
};

// The names of the tensors of units [first, last], each once, in unit order.
std::vector<std::string> range_tensor_names(const Model& full, int64_t first, int64_t last) {
  std::vector<std::string> names;
  for (int64_t u = first; u <= last; ++u) {
    for (auto& name : full.unit_tensor_names(u)) {
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
  }
  return names;
}

// Copies the named tensors out of the full model into separate aligned buffers, as a worker
// would receive them.
std::vector<ExternalTensor> copy_tensors(const Model& full, const std::vector<std::string>& names,
                                         std::vector<AlignedBuffer>& buffers) {
  std::vector<ExternalTensor> out;
  for (const auto& name : names) {
    const gguf::TensorInfo* t = full.find_tensor(name);
    EXPECT_NE(t, nullptr) << name;
    if (t == nullptr) continue;
    buffers.push_back(aligned_copy(t->data, t->n_bytes));
    out.push_back(ExternalTensor{t->name, t->type, t->shape, buffers.back().get(), t->n_bytes});
  }
  return out;
}

gguf::File segment_file(const Model& full) {
  auto bytes = segment_metadata(full);
  EXPECT_TRUE(bytes.has_value()) << (bytes ? "" : bytes.error().message);
  auto f = gguf::File::from_bytes(*bytes, "segment metadata");
  EXPECT_TRUE(f.has_value()) << (f ? "" : f.error().message);
  return std::move(f).value();
}

Worker make_worker(const Model& full, int64_t first, int64_t last) {
  Worker w;
  auto tensors = copy_tensors(full, range_tensor_names(full, first, last), w.buffers);
  auto m = Model::from_parts(segment_file(full), std::move(tensors), first, last);
  EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().message);
  if (m) w.model = std::move(m).value();
  return w;
}

std::unique_ptr<Model> load_or_fail(const std::string& path) {
  auto m = Model::load(path);
  EXPECT_TRUE(m.has_value()) << path << ": " << (m ? "" : m.error().message);
  return m ? std::move(m).value() : nullptr;
}

std::string temp_path(const std::string& name) {
  return testing::TempDir() + "/ll_partial_" + std::to_string(::getpid()) + "_" + name;
}

// A small random model with several layers: Q8_0 matrices; qwen2 adds Q/K/V biases.
std::string write_synthetic(const std::string& arch, DType type, const std::string& name) {
  GenModelOptions g;
  g.preset = ModelPreset{"tiny", 64, 4, 4, 2, 96, 300, 32};
  g.type = type;
  g.arch = arch;
  const std::string path = temp_path(name);
  auto r = write_random_model(g, path);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return path;
}

// The same model without output.weight (the head then uses the embedding), laid out with a
// non-default alignment so that segment_metadata() has a general.alignment to keep.
std::string write_tied(const std::string& src, const std::string& name) {
  auto f = gguf::File::open(src);
  EXPECT_TRUE(f.has_value());
  gguf::Writer w;
  w.alignment = 64;
  for (const auto& [key, value] : f->metadata()) w.set(key, value);
  for (const auto& t : f->tensors()) {
    if (t.name == "output.weight") continue;
    EXPECT_TRUE(w.add_tensor_bytes(t.name, t.type, t.shape, {t.data, t.n_bytes}).has_value()) << t.name;
  }
  const std::string path = temp_path(name);
  EXPECT_TRUE(w.write(path).has_value());
  return path;
}

// Runs units [first, last] on the full model and on a worker holding just those units, over a
// prefill batch and two decode steps, and checks the outputs are bit-identical. Hidden-state
// inputs come from units [0, first - 1] of the full model. Also checks the worker's timings.
void expect_same_as_full(const Model& full, int64_t first, int64_t last) {
  SCOPED_TRACE("units " + std::to_string(first) + "-" + std::to_string(last));
  Worker worker = make_worker(full, first, last);
  ASSERT_TRUE(worker.model);
  const Model& part = *worker.model;
  EXPECT_EQ(part.unit_first(), first);
  EXPECT_EQ(part.unit_last(), last);
  EXPECT_EQ(part.hparams().n_vocab, full.hparams().n_vocab);
  EXPECT_EQ(part.n_units(), full.n_units());
  for (int64_t u = first; u <= last; ++u) {
    EXPECT_EQ(part.unit_weight_bytes(u), full.unit_weight_bytes(u)) << "unit " << u;
    EXPECT_EQ(part.unit_tensor_names(u), full.unit_tensor_names(u)) << "unit " << u;
  }
  EXPECT_EQ(part.weights().tok_embd.present(), first == 0);
  if (first > 1) {
    EXPECT_EQ(part.weights().layers[0].wq.data, nullptr);
  }

  ThreadPool pool(2);
  std::unique_ptr<UnitRunner> feeder;
  if (first > 0) feeder = UnitRunner::create(full, 0, first - 1, pool, 32).value();
  auto ref = UnitRunner::create(full, first, last, pool, 32).value();
  auto run = UnitRunner::create(part, first, last, pool, 32);
  ASSERT_TRUE(run.has_value()) << run.error().message;
  auto& runner = *run;

  const std::vector<int32_t> prompt = {1, 45, 210, 7, 99, 128};
  std::vector<std::vector<BatchToken>> steps;
  steps.emplace_back();
  for (size_t i = 0; i < prompt.size(); ++i) {
    // Logits for two of the prefill tokens only: the head skips the others.
    steps.back().push_back({3, static_cast<int32_t>(i), prompt[i], i == 2 || i + 1 == prompt.size()});
  }
  steps.push_back({{3, 6, 17, true}});
  steps.push_back({{3, 7, 250, true}});

  uint64_t n_run = 0, n_out = 0;
  for (size_t s = 0; s < steps.size(); ++s) {
    const auto& batch = steps[s];
    std::vector<float> hidden, want, got;
    if (feeder) {
      ASSERT_TRUE(feeder->forward(batch, nullptr, hidden).has_value());
    }
    const float* in = feeder ? hidden.data() : nullptr;
    ASSERT_TRUE(ref->forward(batch, in, want).has_value());
    auto r = runner->forward(batch, in, got);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    ASSERT_EQ(got.size(), want.size()) << "step " << s;
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << "step " << s;
    n_run += batch.size();
    for (const auto& bt : batch) n_out += bt.want_output ? 1 : 0;
  }

  // One timing per unit, counting the tokens each unit computed.
  const auto timings = runner->unit_timings();
  ASSERT_EQ(timings.size(), static_cast<size_t>(last - first + 1));
  double total_ms = 0;
  for (size_t i = 0; i < timings.size(); ++i) {
    const int64_t unit = first + static_cast<int64_t>(i);
    EXPECT_EQ(timings[i].unit, unit);
    EXPECT_EQ(timings[i].n_tokens, unit == full.n_units() - 1 ? n_out : n_run) << "unit " << unit;
    EXPECT_GE(timings[i].compute_ms, 0.0);
    total_ms += timings[i].compute_ms;
  }
  EXPECT_GT(total_ms, 0.0);
  runner->reset_unit_timings();
  for (const auto& t : runner->unit_timings()) {
    EXPECT_EQ(t.n_tokens, 0u);
    EXPECT_EQ(t.compute_ms, 0.0);
  }
}

void expect_all_ranges_match(const Model& full) {
  const int64_t head = full.n_units() - 1;
  const std::vector<std::pair<int64_t, int64_t>> ranges = {{0, 0},    {1, 2},       {3, head}, {1, head},
                                                           {0, head}, {head, head}, {0, 2},    {2, 2}};
  for (auto [first, last] : ranges) expect_same_as_full(full, first, last);
}

TEST(PartialModel, StoriesEveryRangeIsBitIdentical) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto full = load_or_fail(test::shared_path("models/stories260K.gguf"));
  ASSERT_TRUE(full);
  EXPECT_EQ(full->unit_first(), 0);
  EXPECT_EQ(full->unit_last(), full->n_units() - 1);
  EXPECT_FALSE(full->weights().output_tied);
  expect_all_ranges_match(*full);
}

TEST(PartialModel, Qwen2WithBiasesIsBitIdentical) {
  const std::string path = write_synthetic("qwen2", DType::Q8_0, "qwen2.gguf");
  auto full = load_or_fail(path);
  ASSERT_TRUE(full);
  ASSERT_NE(full->find_tensor("blk.2.attn_k.bias"), nullptr);
  expect_all_ranges_match(*full);
  std::remove(path.c_str());
}

TEST(PartialModel, TiedOutputIsBitIdentical) {
  const std::string src = write_synthetic("llama", DType::Q4_0, "llama_untied.gguf");
  const std::string path = write_tied(src, "llama_tied.gguf");
  auto full = load_or_fail(path);
  ASSERT_TRUE(full);
  ASSERT_TRUE(full->weights().output_tied);
  EXPECT_EQ(full->unit_tensor_names(full->n_units() - 1),
            (std::vector<std::string>{"output_norm.weight", "token_embd.weight"}));
  expect_all_ranges_match(*full);
  // A head-only worker of a tied model holds the embedding, used as the output matrix.
  Worker head = make_worker(*full, full->n_units() - 1, full->n_units() - 1);
  ASSERT_TRUE(head.model);
  EXPECT_TRUE(head.model->weights().output_tied);
  EXPECT_FALSE(head.model->weights().tok_embd.present());
  EXPECT_NE(head.model->find_tensor("token_embd.weight"), nullptr);
  std::remove(src.c_str());
  std::remove(path.c_str());
}

TEST(SegmentMetadata, DropsTheVocabularyAndAddsItsSize) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  auto full = load_or_fail(test::shared_path("models/stories260K.gguf"));
  ASSERT_TRUE(full);
  ASSERT_EQ(full->file().find("llama.vocab_size"), nullptr);  // the real file has no such key
  gguf::File meta = segment_file(*full);
  EXPECT_TRUE(meta.tensors().empty());
  size_t n_kept = 0;
  for (const auto& [key, value] : full->file().metadata()) {
    if (key.rfind("tokenizer.", 0) == 0) {
      EXPECT_EQ(meta.find(key), nullptr) << key;
    } else {
      const gguf::Value* again = meta.find(key);
      ASSERT_NE(again, nullptr) << key;
      EXPECT_EQ(again->type(), value.type()) << key;
      ++n_kept;
    }
  }
  EXPECT_GT(n_kept, 5u);
  EXPECT_EQ(meta.metadata().size(), n_kept + 1);
  EXPECT_EQ(std::get<uint32_t>(meta.find("llama.vocab_size")->v), 512u);
  EXPECT_EQ(*meta.get_string("general.architecture"), "llama");
  EXPECT_EQ(meta.find("general.alignment"), nullptr);

  // general.alignment survives; an existing vocab_size key is replaced, not duplicated.
  const std::string src = write_synthetic("llama", DType::Q8_0, "meta_src.gguf");
  const std::string tied = write_tied(src, "meta_tied.gguf");
  auto aligned = load_or_fail(tied);
  ASSERT_TRUE(aligned);
  gguf::File meta2 = segment_file(*aligned);
  EXPECT_EQ(*meta2.get_u64("general.alignment"), 64u);
  EXPECT_EQ(meta2.alignment(), 64u);
  EXPECT_EQ(*meta2.get_u64("llama.vocab_size"), 300u);
  size_t n_vocab_keys = 0;
  for (const auto& kv : meta2.metadata()) n_vocab_keys += kv.first == "llama.vocab_size" ? 1 : 0;
  EXPECT_EQ(n_vocab_keys, 1u);
  // A worker's own metadata gives the same segment metadata again.
  Worker w = make_worker(*aligned, 1, 2);
  ASSERT_TRUE(w.model);
  auto again = segment_metadata(*w.model);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *segment_metadata(*aligned));
  std::remove(src.c_str());
  std::remove(tied.c_str());
}

// ---- errors ----

class PartialModelErrors : public testing::Test {
 protected:
  void SetUp() override {
    path_ = write_synthetic("qwen2", DType::Q8_0, "errors.gguf");
    full_ = load_or_fail(path_);
    ASSERT_TRUE(full_);
  }
  void TearDown() override { std::remove(path_.c_str()); }

  std::vector<ExternalTensor> parts(int64_t first, int64_t last) {
    return copy_tensors(*full_, range_tensor_names(*full_, first, last), buffers_);
  }
  ExternalTensor copy_of(const std::string& name) { return copy_tensors(*full_, {name}, buffers_).at(0); }
  static void erase(std::vector<ExternalTensor>& ts, const std::string& name) {
    auto it = std::find_if(ts.begin(), ts.end(), [&](const ExternalTensor& t) { return t.name == name; });
    ASSERT_NE(it, ts.end()) << name;
    ts.erase(it);
  }
  static ExternalTensor& find(std::vector<ExternalTensor>& ts, const std::string& name) {
    auto it = std::find_if(ts.begin(), ts.end(), [&](const ExternalTensor& t) { return t.name == name; });
    if (it == ts.end()) std::abort();
    return *it;
  }
  // from_parts must fail with invalid_argument, and the message must contain every `needle`.
  void expect_refused(std::vector<ExternalTensor> ts, int64_t first, int64_t last,
                      const std::vector<std::string>& needles, gguf::File* meta = nullptr,
                      ErrorCode code = ErrorCode::invalid_argument) {
    auto m = Model::from_parts(meta ? std::move(*meta) : segment_file(*full_), std::move(ts), first, last);
    ASSERT_FALSE(m.has_value());
    EXPECT_EQ(m.error().code, code) << m.error().message;
    for (const auto& n : needles)
      EXPECT_NE(m.error().message.find(n), std::string::npos) << m.error().message;
  }

  std::string path_;
  std::unique_ptr<Model> full_;
  std::vector<AlignedBuffer> buffers_;
};

TEST_F(PartialModelErrors, TheExactPartsAreAccepted) {
  auto m = Model::from_parts(segment_file(*full_), parts(1, 2), 1, 2);
  ASSERT_TRUE(m.has_value()) << m.error().message;
}

TEST_F(PartialModelErrors, MissingTensorInRange) {
  auto ts = parts(1, 2);
  erase(ts, "blk.1.attn_q.weight");
  expect_refused(ts, 1, 2, {"missing", "'blk.1.attn_q.weight'"});
  // qwen2 requires the biases.
  ts = parts(1, 2);
  erase(ts, "blk.0.attn_v.bias");
  expect_refused(ts, 1, 2, {"missing", "'blk.0.attn_v.bias'"});
  ts = parts(0, 0);
  erase(ts, "token_embd.weight");
  expect_refused(ts, 0, 0, {"token_embd.weight"}, nullptr);
  ts = parts(5, 5);
  erase(ts, "output.weight");  // not tied: so the head needs output.weight or token_embd.weight
  expect_refused(ts, 5, 5, {"output.weight"});
}

TEST_F(PartialModelErrors, WrongShape) {
  auto ts = parts(1, 2);
  ExternalTensor& up = find(ts, "blk.1.ffn_up.weight");  // [64, 96] in Q8_0
  up.shape = {64, 48};
  up.n_bytes /= 2;
  expect_refused(ts, 1, 2, {"'blk.1.ffn_up.weight'", "shape [64, 48]", "expected [64, 96]"});
  ts = parts(1, 2);
  ExternalTensor& norm = find(ts, "blk.0.attn_norm.weight");  // F32 [64]
  norm.shape = {32, 2};
  expect_refused(ts, 1, 2, {"'blk.0.attn_norm.weight'", "shape [32, 2]"});
  ts = parts(1, 2);
  find(ts, "blk.0.ffn_down.weight").shape = {96, 32, 2};  // same bytes, too many dimensions
  expect_refused(ts, 1, 2, {"'blk.0.ffn_down.weight'", "shape [96, 32, 2]"});
  ts = parts(1, 2);
  find(ts, "blk.0.ffn_down.weight").shape = {};
  expect_refused(ts, 1, 2, {"'blk.0.ffn_down.weight'", "0 dimensions"});
  ts = parts(1, 2);
  find(ts, "blk.0.ffn_down.weight").shape = {48, 128};  // a Q8_0 row must be whole 32-blocks
  expect_refused(ts, 1, 2, {"'blk.0.ffn_down.weight'", "whole blocks"});
  ts = parts(1, 2);
  find(ts, "blk.0.ffn_down.weight").shape = {96, 0};
  expect_refused(ts, 1, 2, {"'blk.0.ffn_down.weight'", "empty dimension"});
}

TEST_F(PartialModelErrors, WrongByteCountTypeOrData) {
  auto ts = parts(1, 2);
  find(ts, "blk.1.attn_k.weight").n_bytes -= 1;
  expect_refused(ts, 1, 2, {"'blk.1.attn_k.weight'", "bytes"});
  ts = parts(1, 2);
  find(ts, "blk.1.attn_k.weight").n_bytes += 34;
  expect_refused(ts, 1, 2, {"'blk.1.attn_k.weight'", "bytes"});
  ts = parts(1, 2);
  find(ts, "blk.1.attn_k.weight").type = DType::Q8_K;  // activations only, never a weight
  expect_refused(ts, 1, 2, {"'blk.1.attn_k.weight'", "Q8_K"});
  ts = parts(1, 2);
  find(ts, "blk.1.attn_k.weight").type = static_cast<DType>(77);
  expect_refused(ts, 1, 2, {"'blk.1.attn_k.weight'", "id 77"});
  ts = parts(1, 2);
  find(ts, "blk.1.attn_k.weight").data = nullptr;
  expect_refused(ts, 1, 2, {"'blk.1.attn_k.weight'", "no data"});
  // Misaligned for what the kernels read: F32 norms as floats, Q8_0 blocks through u16 scales.
  ts = parts(1, 2);
  ExternalTensor& norm = find(ts, "blk.1.ffn_norm.weight");
  buffers_.push_back(aligned_copy(norm.data, norm.n_bytes, 2));
  norm.data = buffers_.back().get() + 2;
  expect_refused(ts, 1, 2, {"'blk.1.ffn_norm.weight'", "4-byte aligned"});
  ts = parts(1, 2);
  ExternalTensor& q = find(ts, "blk.1.attn_q.weight");
  buffers_.push_back(aligned_copy(q.data, q.n_bytes, 1));
  q.data = buffers_.back().get() + 1;
  expect_refused(ts, 1, 2, {"'blk.1.attn_q.weight'", "2-byte aligned"});
  EXPECT_EQ(Model::required_alignment(DType::F32), 4u);
  EXPECT_EQ(Model::required_alignment(DType::Q4_0), 2u);
}

TEST_F(PartialModelErrors, ExtraOrDuplicateTensor) {
  auto ts = parts(1, 2);
  ts.push_back(copy_of("blk.3.attn_norm.weight"));
  expect_refused(ts, 1, 2, {"'blk.3.attn_norm.weight'", "does not belong to units 1-2"});
  ts = parts(1, 2);
  ts.push_back(copy_of("token_embd.weight"));  // not tied, and unit 0 is not in the range
  expect_refused(ts, 1, 2, {"'token_embd.weight'", "does not belong"});
  ts = parts(1, 2);
  ExternalTensor odd = copy_of("blk.0.attn_norm.weight");
  odd.name = "rope_freqs.weight";
  ts.push_back(odd);
  expect_refused(ts, 1, 2, {"'rope_freqs.weight'", "does not belong"});
  ts = parts(1, 2);
  ts.push_back(copy_of("blk.0.attn_norm.weight"));
  expect_refused(ts, 1, 2, {"'blk.0.attn_norm.weight'", "twice"});
  ts = parts(1, 2);
  ts.back().name.clear();
  expect_refused(ts, 1, 2, {"empty name"});
}

TEST_F(PartialModelErrors, VocabularySizeAndMetadata) {
  // Metadata without "<arch>.vocab_size" (as the original stories file) and no embedding.
  auto without_vocab_size = [&] {
    gguf::Writer w;
    for (const auto& [key, value] : full_->file().metadata()) {
      if (key != "qwen2.vocab_size") w.set(key, value);
    }
    return gguf::File::from_bytes(*w.to_bytes(), "no vocab size").value();
  };
  gguf::File meta = without_vocab_size();
  expect_refused(parts(1, 2), 1, 2, {"vocab_size", "token_embd.weight"}, &meta, ErrorCode::parse);
  // With the embedding, its rows give n_vocab.
  auto with_embd = Model::from_parts(without_vocab_size(), parts(0, 1), 0, 1);
  ASSERT_TRUE(with_embd.has_value()) << with_embd.error().message;
  EXPECT_EQ((*with_embd)->hparams().n_vocab, 300);
  // A vocab_size that disagrees with the embedding.
  gguf::Writer w;
  for (const auto& [key, value] : full_->file().metadata()) w.set(key, value);
  w.set_u32("qwen2.vocab_size", 301);
  gguf::File wrong = gguf::File::from_bytes(*w.to_bytes(), "wrong vocab size").value();
  expect_refused(parts(0, 0), 0, 0, {"vocab_size = 301", "300"}, &wrong, ErrorCode::parse);
  // Hyper-parameters are validated as by load().
  gguf::Writer bad_hp;
  for (const auto& [key, value] : full_->file().metadata()) bad_hp.set(key, value);
  bad_hp.set_u32("qwen2.attention.head_count_kv", 3);
  gguf::File bad_meta = gguf::File::from_bytes(*bad_hp.to_bytes(), "bad hparams").value();
  expect_refused(parts(1, 2), 1, 2, {"head_count_kv"}, &bad_meta, ErrorCode::parse);
  // The full file is not segment metadata: it holds tensors.
  gguf::File whole = gguf::File::open(path_).value();
  expect_refused(parts(1, 2), 1, 2, {"tensors"}, &whole);
}

TEST_F(PartialModelErrors, UnitRanges) {
  expect_refused(parts(1, 2), 2, 1, {"unit range 2-1", "0-5"});
  expect_refused({}, 0, 6, {"unit range 0-6"});
  expect_refused({}, -1, 0, {"unit range -1-0"});

  // A runner can only run what the model holds.
  auto m = Model::from_parts(segment_file(*full_), parts(1, 3), 1, 3).value();
  ThreadPool pool(1);
  for (auto [first, last] : std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 4}, {0, 5}, {4, 4}}) {
    auto r = UnitRunner::create(*m, first, last, pool, 16);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("holds units 1-3"), std::string::npos) << r.error().message;
  }
  EXPECT_TRUE(UnitRunner::create(*m, 2, 3, pool, 16).has_value());
  EXPECT_TRUE(UnitRunner::create(*m, 1, 3, pool, 16).has_value());
  // Units it does not hold report no weights.
  EXPECT_EQ(m->unit_weight_bytes(4), 0u);
  EXPECT_EQ(m->unit_weight_bytes(0), 0u);
  EXPECT_GT(m->unit_weight_bytes(2), 0u);
}

}  // namespace
}  // namespace ll::model
