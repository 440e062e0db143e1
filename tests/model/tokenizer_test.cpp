#include "model/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "gguf/gguf.h"

namespace ll::model {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// llama.cpp's test-tokenizer-0: texts are separated by "\n__ggml_vocab_test__\n" (the file ends
// with one); the expected ids are one line per text.
struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<VocabCase> read_vocab_cases(const std::string& gguf_path) {
  const std::string raw = read_file(gguf_path + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      texts.push_back(raw.substr(pos));
      break;
    }
    texts.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(gguf_path + ".out");
  std::vector<VocabCase> cases;
  size_t i = 0;
  for (std::string line; std::getline(out, line); ++i) {
    VocabCase c;
    if (i < texts.size()) c.text = texts[i];
    std::istringstream ss(line);
    for (int32_t id; ss >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  EXPECT_EQ(cases.size(), texts.size()) << gguf_path << ": .inp and .out disagree on the number of texts";
  return cases;
}

std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

Tokenizer load(const std::string& path) {
  auto file = gguf::File::open(path);
  EXPECT_TRUE(file.has_value()) << (file ? "" : file.error().message);
  if (!file) std::abort();
  auto tok = Tokenizer::from_gguf(*file);
  EXPECT_TRUE(tok.has_value()) << (tok ? "" : tok.error().message);
  if (!tok) std::abort();
  return std::move(tok).value();
}

// True if llama.cpp's clean_up_tokenization_spaces would change the text, so that it cannot
// round-trip through a vocabulary that cleans spaces (gpt-2, llama3).
bool cleaning_changes(const std::string& s) {
  for (const char* p : {" ?", " !", " .", " ,", " ' ", " 's", " 'm", " 're", " 've"}) {
    if (s.find(p) != std::string::npos) return true;
  }
  return false;
}

void check_vocab_file(const std::string& name, bool cleans_spaces) {
  const std::string path = test::shared_path("vocab/" + name);
  const Tokenizer tok = load(path);
  const auto cases = read_vocab_cases(path);
  ASSERT_FALSE(cases.empty());
  int passed = 0;
  for (const auto& c : cases) {
    const auto got = tok.encode(c.text, /*add_special=*/false, /*parse_special=*/false);
    if (got == c.ids) {
      ++passed;
    } else {
      ADD_FAILURE() << name << ": text '" << c.text << "'\n expected " << show_ids(c.ids) << "\n got      "
                    << show_ids(got);
    }
    // Round trip, where llama.cpp round-trips too.
    if (!(cleans_spaces && cleaning_changes(c.text))) {
      EXPECT_EQ(tok.decode(got), c.text) << name << ": ids " << show_ids(got);
    }
  }
  EXPECT_EQ(passed, static_cast<int>(cases.size()));
  std::printf("[ %s: %d/%zu vectors ]\n", name.c_str(), passed, cases.size());
}

TEST(TokenizerVocab, LlamaSpm) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-llama-spm.gguf"));
  check_vocab_file("ggml-vocab-llama-spm.gguf", false);
}

TEST(TokenizerVocab, LlamaBpe) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-llama-bpe.gguf"));
  check_vocab_file("ggml-vocab-llama-bpe.gguf", true);
}

TEST(TokenizerVocab, Qwen2) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-qwen2.gguf"));
  check_vocab_file("ggml-vocab-qwen2.gguf", false);
}

TEST(TokenizerVocab, Gpt2) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-gpt-2.gguf"));
  check_vocab_file("ggml-vocab-gpt-2.gguf", true);
}

TEST(TokenizerStories, EncodesWithBos) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  const Tokenizer tok = load(test::shared_path("models/stories260K.gguf"));
  EXPECT_EQ(tok.n_vocab(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.add_bos_token());
  EXPECT_EQ(tok.pad_id(), -1);  // stored as 0xFFFFFFFF: none
  EXPECT_EQ(tok.encode("Once upon a time", true), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("The little dog", true), (std::vector<int32_t>{1, 291, 376, 400, 428}));
  EXPECT_EQ(tok.encode("Once upon a time", false), (std::vector<int32_t>{403, 407, 261, 378}));
  EXPECT_TRUE(tok.is_eog(2));
  EXPECT_FALSE(tok.is_eog(1));
  EXPECT_FALSE(tok.is_eog(-1));
  EXPECT_FALSE(tok.is_eog(512));
}

TEST(TokenizerStories, DecodesLikeLlamaCpp) {
  LL_REQUIRE_SHARED(test::shared_path("models/stories260K.gguf"));
  const Tokenizer tok = load(test::shared_path("models/stories260K.gguf"));
  // Without BOS the leading space that encode() added is dropped again.
  EXPECT_EQ(tok.decode(tok.encode("Once upon a time", false)), "Once upon a time");
  // llama.cpp strips the space from the first piece only; a leading BOS is that first piece, so
  // the space of " Once" stays (llama_detokenize with remove_special off or on).
  const auto with_bos = tok.encode("Once upon a time", true);
  EXPECT_EQ(tok.decode(with_bos), " Once upon a time");
  EXPECT_EQ(tok.decode(with_bos, {.remove_special = true}), " Once upon a time");
  EXPECT_EQ(tok.decode(with_bos, {.unparse_special = true}), "<s> Once upon a time");
  // Streaming pieces keep their spaces; control tokens are empty unless asked for.
  EXPECT_EQ(tok.decode_token(403), " Once");
  EXPECT_EQ(tok.decode_token(1), "");
  EXPECT_EQ(tok.decode_token(2), "");
  EXPECT_EQ(tok.decode_token(0), "");
  EXPECT_EQ(tok.decode_token(1, true), "<s>");
  EXPECT_EQ(tok.decode_token(-5), "");
  EXPECT_EQ(tok.decode_token(100000), "");
  EXPECT_EQ(tok.token_text(100000), "");
  // Byte tokens give their raw byte.
  EXPECT_EQ(tok.decode_token(3 + 0x0A), "\n");
  EXPECT_EQ(tok.decode_token(3 + 0xE2), "\xE2");
}

TEST(TokenizerSpm, ByteFallbackAndSpecialTokens) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-llama-spm.gguf"));
  const Tokenizer tok = load(test::shared_path("vocab/ggml-vocab-llama-spm.gguf"));
  // A character missing from the vocabulary falls back to its UTF-8 bytes (<0xNN> = id NN + 3).
  const auto ids = tok.encode("\xF0\x9F\xA6\x99", false);  // U+1F999 (llama)
  EXPECT_EQ(ids, (std::vector<int32_t>{29871, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99}));
  EXPECT_EQ(tok.decode(ids), "\xF0\x9F\xA6\x99");
  // Control tokens are text unless parse_special; after one, a space prefix is added again.
  EXPECT_EQ(tok.encode("<s>Hello", false, true), (std::vector<int32_t>{1, 15043}));
  EXPECT_NE(tok.encode("<s>Hello", false, false)[0], 1);
  EXPECT_EQ(tok.encode("Hello</s>", true, true), (std::vector<int32_t>{1, 15043, 2}));
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{1}));
  EXPECT_TRUE(tok.encode("", false).empty());
  // Invalid UTF-8 is kept byte for byte.
  const std::string bad = "a\xFF\x80z";
  EXPECT_EQ(tok.decode(tok.encode(bad, false)), bad);
}

TEST(TokenizerBpe, SpecialTokensAndEog) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-qwen2.gguf"));
  const Tokenizer qwen = load(test::shared_path("vocab/ggml-vocab-qwen2.gguf"));
  EXPECT_FALSE(qwen.add_bos_token());
  EXPECT_EQ(qwen.encode("Hello", true), qwen.encode("Hello", false));
  const auto chat = qwen.encode("<|im_start|>user\nHi<|im_end|>", false, true);
  ASSERT_GE(chat.size(), 3u);
  EXPECT_EQ(chat.front(), 151644);
  EXPECT_EQ(chat.back(), 151645);
  EXPECT_TRUE(qwen.is_eog(151645));  // <|im_end|>
  EXPECT_TRUE(qwen.is_eog(151643));  // <|endoftext|>
  EXPECT_FALSE(qwen.is_eog(151644));
  EXPECT_EQ(qwen.decode(chat), "user\nHi");
  EXPECT_EQ(qwen.decode(chat, {.unparse_special = true}), "<|im_start|>user\nHi<|im_end|>");
  // Without parse_special the control token is plain text...
  EXPECT_NE(qwen.encode("<|im_start|>", false, false).front(), 151644);
  // ...but user-defined tokens are always matched.
  EXPECT_EQ(qwen.encode("a[PAD151646]b", false), (std::vector<int32_t>{64, 151646, 65}));
  // Invalid UTF-8 becomes U+FFFD, as in llama.cpp.
  EXPECT_EQ(qwen.decode(qwen.encode("x\xFFy", false)), "x\xEF\xBF\xBDy");

  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-llama-bpe.gguf"));
  const Tokenizer llama3 = load(test::shared_path("vocab/ggml-vocab-llama-bpe.gguf"));
  EXPECT_TRUE(llama3.add_bos_token());
  EXPECT_EQ(llama3.bos_id(), 128000);
  EXPECT_EQ(llama3.encode("Hello world", true), (std::vector<int32_t>{128000, 9906, 1917}));
  EXPECT_EQ(llama3.encode("<|begin_of_text|>Hello", false, true), (std::vector<int32_t>{128000, 9906}));
  EXPECT_TRUE(llama3.is_eog(128001));
  EXPECT_EQ(llama3.decode_token(1917), " world");
  // clean_up_tokenization_spaces, as llama.cpp does for llama3 and gpt-2 vocabularies.
  EXPECT_EQ(llama3.decode(llama3.encode("Hi , you ! ok ' x", false)), "Hi, you! ok'x");
}

TEST(TokenizerBpe, Gpt2Basics) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-gpt-2.gguf"));
  const Tokenizer tok = load(test::shared_path("vocab/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(tok.type(), VocabType::bpe);
  EXPECT_EQ(tok.pre_tokenizer(), "gpt-2");
  EXPECT_FALSE(tok.add_bos_token());
  EXPECT_TRUE(tok.is_eog(50256));
  EXPECT_EQ(tok.decode_token(50256), "");
  EXPECT_EQ(tok.encode("<|endoftext|>", false, true), (std::vector<int32_t>{50256}));
}

TEST(TokenizerPerf, LongTextsAreFast) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-llama-spm.gguf"));
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-llama-bpe.gguf"));
  std::string prose;
  const std::string para =
      "Once upon a time, in a small village by the sea, there lived an old fisherman named Tom. "
      "Every morning he rowed out past the rocks (3 km, maybe 4) and cast his nets; \"patience\", he said.\n";
  while (prose.size() < 100 * 1024) prose += para;
  for (const char* name : {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-llama-bpe.gguf"}) {
    const Tokenizer tok = load(test::shared_path(name));
    for (const std::string* text : {&prose}) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = tok.encode(*text, false);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_GT(ids.size(), text->size() / 10);
      EXPECT_EQ(tok.decode(ids), *text);
      EXPECT_LT(ms, 2000.0) << name;  // well under a second in a release build
      std::printf("[ %s: %zu bytes -> %zu tokens in %.1f ms ]\n", name, text->size(), ids.size(), ms);
    }
    // Degenerate inputs: one 100 KB word, one 100 KB run of spaces.
    for (const std::string& text : {std::string(100 * 1024, 'a'), std::string(100 * 1024, ' ')}) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = tok.encode(text, false);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_EQ(tok.decode(ids), text);
      EXPECT_LT(ms, 2000.0) << name;
    }
  }
}

// ---- Properties on pseudo-random input ----

struct Rng {  // xorshift64*, deterministic
  uint64_t s;
  uint32_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return static_cast<uint32_t>((s * 2685821657736338717ull) >> 32);
  }
  uint32_t below(uint32_t n) { return next() % n; }
};

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// Valid UTF-8 drawn from ASCII, whitespace of all kinds, Latin, CJK, combining marks, emoji.
std::string random_text(Rng& rng, size_t max_cpts) {
  static const uint32_t k_picks[] = {' ', ' ', '\n', '\t', '\r', 0x0B, 0x85,  0xA0,   0x3000, 0x2028, '\'',
                                     's', 'S', '1',  '.',  '!',  '?',  0x301, 0x200D, 0xFE0F, 0xFEFF, 0xFFFD};
  std::string out;
  const size_t n = rng.below(static_cast<uint32_t>(max_cpts) + 1);
  for (size_t i = 0; i < n; ++i) {
    uint32_t c = 0;
    switch (rng.below(6)) {
      case 0:
        c = 0x20 + rng.below(0x5F);
        break;
      case 1:
        c = k_picks[rng.below(sizeof(k_picks) / sizeof(k_picks[0]))];
        break;
      case 2:
        c = 0xA0 + rng.below(0x500);
        break;
      case 3:
        c = 0x4E00 + rng.below(0x100);
        break;
      case 4:
        c = 0x1F300 + rng.below(0x300);
        break;
      default:
        c = 1 + rng.below(0x2FFFF);
        break;
    }
    if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
    append_utf8(out, c);
  }
  return out;
}

TEST(TokenizerProperties, SpmRoundTripsArbitraryBytes) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-llama-spm.gguf"));
  const Tokenizer tok = load(test::shared_path("vocab/ggml-vocab-llama-spm.gguf"));
  Rng rng{0x1234567};
  for (int iter = 0; iter < 2000; ++iter) {
    std::string text;
    const size_t n = rng.below(48);
    // Stray continuation bytes are one-byte symbols that fall back to byte tokens. (A lead byte
    // would swallow the bytes after it into one symbol -- e.g. "\xCC " becomes "\xCC\xE2" "\x96"
    // "\x81" after escaping the space -- and, as in llama.cpp, not round-trip.)
    for (size_t i = 0; i < n; ++i) text += static_cast<char>(rng.below(0xC0));
    if (iter % 2) text = random_text(rng, 24);
    if (text.find("\xE2\x96\x81") != std::string::npos) continue;  // U+2581 decodes to a space
    std::string any_bytes;
    for (size_t i = 0; i < n; ++i) any_bytes += static_cast<char>(rng.below(256));
    for (int32_t id : tok.encode(any_bytes, true, true)) ASSERT_TRUE(id >= 0 && id < tok.n_vocab());
    const auto ids = tok.encode(text, false);
    ASSERT_EQ(tok.decode(ids), text) << "ids " << show_ids(ids);
    const auto with_special = tok.encode(text, true, true);  // must not crash
    EXPECT_EQ(with_special.front(), 1);
    std::string streamed;
    for (int32_t id : ids) streamed += tok.decode_token(id);
    EXPECT_EQ(streamed.substr(streamed.empty() || streamed[0] != ' ' ? 0 : 1), text);
  }
}

TEST(TokenizerProperties, BpeRoundTripsValidUtf8) {
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-qwen2.gguf"));
  LL_REQUIRE_SHARED(test::shared_path("vocab/ggml-vocab-gpt-2.gguf"));
  const Tokenizer qwen = load(test::shared_path("vocab/ggml-vocab-qwen2.gguf"));
  const Tokenizer gpt2 = load(test::shared_path("vocab/ggml-vocab-gpt-2.gguf"));
  Rng rng{0xabcdef};
  for (int iter = 0; iter < 2000; ++iter) {
    const std::string text = random_text(rng, 40);
    const auto ids = qwen.encode(text, false);
    ASSERT_EQ(qwen.decode(ids), text) << "ids " << show_ids(ids);
    std::string streamed;
    for (int32_t id : ids) streamed += qwen.decode_token(id);
    EXPECT_EQ(streamed, text);
    const auto ids2 = gpt2.encode(text, false);
    std::string streamed2;
    for (int32_t id : ids2) streamed2 += gpt2.decode_token(id);
    EXPECT_EQ(streamed2, text);  // pieces are exact; only decode() cleans spaces
  }
  // Arbitrary bytes: invalid sequences become U+FFFD, nothing crashes.
  for (int iter = 0; iter < 1000; ++iter) {
    std::string bytes;
    const size_t n = rng.below(40);
    for (size_t i = 0; i < n; ++i) bytes += static_cast<char>(rng.below(256));
    for (bool special : {false, true}) {
      const auto ids = qwen.encode(bytes, special, special);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < qwen.n_vocab());
      (void)qwen.decode(ids);
    }
  }
}

// ---- Broken vocabulary metadata ----

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("ll_tokenizer_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

gguf::Value string_array(const std::vector<std::string>& v) {
  gguf::Array a;
  a.elem_type = gguf::ValueType::string;
  for (const auto& s : v) a.items.push_back(gguf::Value{s});
  return gguf::Value{std::move(a)};
}

gguf::Value f32_array(const std::vector<float>& v) {
  gguf::Array a;
  a.elem_type = gguf::ValueType::f32;
  for (float x : v) a.items.push_back(gguf::Value{x});
  return gguf::Value{std::move(a)};
}

gguf::Value i32_array(const std::vector<int32_t>& v) {
  gguf::Array a;
  a.elem_type = gguf::ValueType::i32;
  for (int32_t x : v) a.items.push_back(gguf::Value{x});
  return gguf::Value{std::move(a)};
}

// A tiny but complete SentencePiece vocabulary.
gguf::Writer tiny_spm() {
  gguf::Writer w;
  w.set_string("tokenizer.ggml.model", "llama");
  w.set("tokenizer.ggml.tokens", string_array({"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b",
                                               "\xE2\x96\x81"
                                               "a",
                                               "ab"}));
  w.set("tokenizer.ggml.scores", f32_array({0, 0, 0, -1, -2, -2, -0.5f, -0.1f}));
  w.set("tokenizer.ggml.token_type", i32_array({2, 3, 3, 1, 1, 1, 1, 1}));
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  return w;
}

// A tiny byte-level BPE vocabulary ("a", "b", "ab", "Ġ", "Ġab").
gguf::Writer tiny_bpe() {
  gguf::Writer w;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "gpt-2");
  w.set("tokenizer.ggml.tokens", string_array({"a", "b", "ab", "\xC4\xA0",
                                               "\xC4\xA0"
                                               "ab",
                                               "<|endoftext|>"}));
  w.set("tokenizer.ggml.merges", string_array({"a b", "\xC4\xA0 ab"}));
  w.set("tokenizer.ggml.token_type", i32_array({1, 1, 1, 1, 1, 3}));
  w.set_u32("tokenizer.ggml.bos_token_id", 5);
  w.set_u32("tokenizer.ggml.eos_token_id", 5);
  return w;
}

Expected<Tokenizer> load_written(const gguf::Writer& w, const TempDir& dir, const std::string& name) {
  const std::string path = (dir.path / name).string();
  auto written = w.write(path);
  if (!written) return written.error();
  auto file = gguf::File::open(path);
  if (!file) return file.error();
  return Tokenizer::from_gguf(*file);
}

TEST(TokenizerMetadata, TinyVocabulariesWork) {
  TempDir dir;
  auto spm = load_written(tiny_spm(), dir, "spm.gguf");
  ASSERT_TRUE(spm.has_value()) << spm.error().message;
  // "ab" (-0.1) merges before "▁a" (-0.5): ▁ ab ▁a
  EXPECT_EQ(spm->encode("ab a", true), (std::vector<int32_t>{1, 3, 7, 6}));
  EXPECT_EQ(spm->decode(spm->encode("ab a", false)), "ab a");
  auto bpe = load_written(tiny_bpe(), dir, "bpe.gguf");
  ASSERT_TRUE(bpe.has_value()) << bpe.error().message;
  EXPECT_EQ(bpe->encode("ab ab", false), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(bpe->decode(std::vector<int32_t>{2, 4}), "ab ab");
  // A character outside the vocabulary: its bytes are not one-byte tokens either, so it is dropped.
  EXPECT_EQ(bpe->encode("a\xC3\xA9", false), (std::vector<int32_t>{0}));
}

TEST(TokenizerMetadata, BrokenVocabulariesGiveErrors) {
  TempDir dir;
  struct Case {
    const char* what;
    gguf::Writer w;
    ErrorCode code;
  };
  std::vector<Case> cases;
  auto add = [&](const char* what, gguf::Writer w, ErrorCode code) {
    cases.push_back({what, std::move(w), code});
  };
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "llama");
    add("no tokens", std::move(w), ErrorCode::not_found);
  }
  {
    gguf::Writer w;
    w.set("tokenizer.ggml.tokens", string_array({"a"}));
    add("no model", std::move(w), ErrorCode::not_found);
  }
  {
    auto w = tiny_spm();
    w.set_string("tokenizer.ggml.model", "bert");
    add("unsupported model", std::move(w), ErrorCode::unsupported);
  }
  {
    auto w = tiny_spm();
    w.set("tokenizer.ggml.tokens", string_array({}));
    add("empty token list", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_spm();
    w.set("tokenizer.ggml.tokens", gguf::Value{uint32_t{7}});
    add("tokens not an array", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_spm();
    w.set("tokenizer.ggml.scores", f32_array({0, 0, 0}));
    add("scores too short", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_spm();
    w.set("tokenizer.ggml.token_type", i32_array({1, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
    add("token types too long", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_spm();
    w.set("tokenizer.ggml.scores", string_array({"x", "y", "z", "x", "y", "z", "x", "y"}));
    add("scores not numbers", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_spm();
    w.set_u32("tokenizer.ggml.bos_token_id", 8);
    add("bos id out of range", std::move(w), ErrorCode::out_of_range);
  }
  {
    auto w = tiny_spm();
    w.set_u32("tokenizer.ggml.eos_token_id", 1000000);
    add("eos id out of range", std::move(w), ErrorCode::out_of_range);
  }
  {
    auto w = tiny_spm();
    w.set_string("tokenizer.ggml.bos_token_id", "1");
    add("bos id not a number", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_spm();
    w.set_u32("tokenizer.ggml.add_bos_token", 1);
    add("add_bos_token not a bool", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_spm();
    w.set("tokenizer.ggml.tokens", string_array({"<unk>", "<s>", "</s>", "a", "b", "a", "c", "d"}));
    add("duplicate token", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_bpe();
    w.set("tokenizer.ggml.merges", string_array({"a b", "ab"}));
    add("merge without a space", std::move(w), ErrorCode::parse);
  }
  {
    auto w = tiny_bpe();
    w.set("tokenizer.ggml.merges", string_array({"a "}));
    add("merge with an empty side", std::move(w), ErrorCode::parse);
  }
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string("tokenizer.ggml.pre", "gpt-2");
    w.set("tokenizer.ggml.tokens", string_array({"a", "b"}));
    add("bpe without merges", std::move(w), ErrorCode::not_found);
  }
  {
    auto w = tiny_bpe();
    w.set_string("tokenizer.ggml.pre", "no-such-pre-tokenizer");
    add("unknown pre-tokenizer", std::move(w), ErrorCode::unsupported);
  }
  int i = 0;
  for (auto& c : cases) {
    auto tok = load_written(c.w, dir, "case" + std::to_string(i++) + ".gguf");
    ASSERT_FALSE(tok.has_value()) << c.what;
    EXPECT_EQ(tok.error().code, c.code) << c.what << ": " << tok.error().message;
    EXPECT_NE(tok.error().message.find("tokenizer"), std::string::npos)
        << c.what << ": " << tok.error().message;
  }
}

TEST(TokenizerMetadata, SentinelIdsMeanNone) {
  TempDir dir;
  auto w = tiny_spm();
  w.set_u32("tokenizer.ggml.bos_token_id", 0xFFFFFFFFu);
  w.set("tokenizer.ggml.eos_token_id", gguf::Value{int32_t{-1}});
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  auto tok = load_written(w, dir, "sentinel.gguf");
  ASSERT_TRUE(tok.has_value()) << tok.error().message;
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), -1);
  EXPECT_FALSE(tok->add_bos_token());  // nothing to add
  EXPECT_EQ(tok->encode("a", true), (std::vector<int32_t>{6}));
}

}  // namespace
}  // namespace ll::model
