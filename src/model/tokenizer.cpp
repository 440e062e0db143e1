#include "model/tokenizer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "model/tokenizer_unicode.h"

namespace ll::model {

namespace td = tokenizer_detail;

namespace {

// Token attributes (bit flags, as llama.cpp's llama_token_attr).
enum : uint8_t {
  attr_undefined = 0,
  attr_unknown = 1 << 0,
  attr_unused = 1 << 1,
  attr_normal = 1 << 2,
  attr_control = 1 << 3,
  attr_user_defined = 1 << 4,
  attr_byte = 1 << 5,
};

// tokenizer.ggml.token_type values.
uint8_t attr_from_type(int64_t type) {
  switch (type) {
    case 1:
      return attr_normal;
    case 2:
      return attr_unknown;
    case 3:
      return attr_control;
    case 4:
      return attr_user_defined;
    case 5:
      return attr_unused;
    case 6:
      return attr_byte;
    default:
      return attr_undefined;
  }
}

// An open-addressing hash index over strings kept elsewhere (a vector<std::string>): maps a
// string to its position. Lookups take a string_view and allocate nothing.
class StringIndex {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n + n / 2) cap <<= 1;
    slots_.assign(cap, 0);
    mask_ = cap - 1;
  }
  // Adds keys[i]; returns the index already holding an equal string, or -1 if it was new.
  // reserve() must have been called for at least all keys.
  int32_t insert(const std::vector<std::string>& keys, int32_t i) {
    const uint64_t h = hash(keys[static_cast<size_t>(i)]);
    for (size_t pos = h & mask_;; pos = (pos + 1) & mask_) {
      const uint64_t slot = slots_[pos];
      if (slot == 0) {
        slots_[pos] = (h & k_tag_mask) | (static_cast<uint64_t>(i) + 1);
        return -1;
      }
      const auto j = static_cast<int32_t>((slot & k_index_mask) - 1);
      const bool same = (slot & k_tag_mask) == (h & k_tag_mask) &&
                        keys[static_cast<size_t>(j)] == keys[static_cast<size_t>(i)];
      if (same) return j;
    }
  }
  int32_t find(const std::vector<std::string>& keys, std::string_view key) const {
    if (slots_.empty()) return -1;
    const uint64_t h = hash(key);
    for (size_t pos = h & mask_;; pos = (pos + 1) & mask_) {
      const uint64_t slot = slots_[pos];
      if (slot == 0) return -1;
      const auto j = static_cast<int32_t>((slot & k_index_mask) - 1);
      if ((slot & k_tag_mask) == (h & k_tag_mask) && keys[static_cast<size_t>(j)] == key) return j;
    }
  }

 private:
  // A slot holds the upper 32 bits of the hash and index + 1 (0: empty).
  static constexpr uint64_t k_tag_mask = 0xFFFFFFFF00000000ull;
  static constexpr uint64_t k_index_mask = 0x00000000FFFFFFFFull;
  static uint64_t hash(std::string_view s) {
    uint64_t h = std::hash<std::string_view>{}(s);
    return h ^ (h >> 29);  // mix so that both the low (bucket) and high (tag) bits vary
  }
  std::vector<uint64_t> slots_;
  size_t mask_ = 0;
};

const std::string k_escaped_space = "\xE2\x96\x81";  // U+2581, SentencePiece's space

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// "<0xNN>" -> NN, or -1.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(text[3]), lo = hex(text[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

// Token texts that end generation (llama.cpp marks them EOG and forces them to control type).
constexpr std::string_view k_eog_texts[] = {
    "<|eot_id|>",  "<|im_end|>",   "<|end|>",       "<end_of_turn>",   "<|endoftext|>",
    "<|eom_id|>",  "<EOT>",        "_<EOT>",        "<|end_of_text|>", "<end_of_utterance>",
    "<|fim_pad|>", "<|fim_repo|>", "<|repo_name|>", "<|file_sep|>",
};
// Texts llama.cpp takes as the EOT token when tokenizer.ggml.eot_token_id is absent.
constexpr std::string_view k_eot_texts[] = {
    "<|eot_id|>",    "<|im_end|>",      "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<|end_of_text|>", "<EOT>",   "_<EOT>",
};

struct PreConfig {
  td::PreTokenizer split;
  bool ignore_merges;  // a word that is itself a token is taken whole (llama3)
  bool clean_spaces;   // clean_up_tokenization_spaces when detokenizing
  bool add_bos;        // default for tokenizer.ggml.add_bos_token
};

// tokenizer.ggml.pre values we know, as llama.cpp maps them.
bool lookup_pre(std::string_view name, PreConfig& cfg) {
  using P = td::PreTokenizer;
  if (name.empty() || name == "default" || name == "gpt-2" || name == "phi-2" || name == "mpt" ||
      name == "olmo" || name == "jais") {
    cfg = {P::gpt2, false, true, false};
  } else if (name == "llama3" || name == "llama-v3" || name == "llama-bpe" || name == "falcon3") {
    cfg = {P::llama3, true, true, true};
  } else if (name == "dbrx" || name == "smaug-bpe") {
    cfg = {P::llama3, false, true, false};
  } else if (name == "qwen2" || name == "deepseek-r1-qwen") {
    cfg = {P::qwen2, false, false, false};
  } else if (name == "stablelm2" || name == "megrez") {
    cfg = {P::qwen2, false, true, false};
  } else {
    return false;
  }
  return true;
}

Error meta_error(ErrorCode code, const std::string& msg) {
  return make_error(code, "tokenizer metadata: " + msg);
}

Error wrap(const Error& e) {
  return make_error(e.code, "tokenizer metadata: " + e.message);
}

}  // namespace

struct Tokenizer::Impl {
  VocabType type = VocabType::spm;
  std::string pre_name;
  PreConfig pre{td::PreTokenizer::gpt2, false, false, false};
  bool add_space_prefix = false;
  bool add_bos = false;
  bool add_eos = false;

  std::vector<std::string> texts;
  std::vector<float> scores;
  std::vector<uint8_t> attrs;
  std::vector<std::string> pieces;      // rendering of each token with special tokens shown
  std::vector<uint8_t> eog;             // 1 if the token ends generation
  StringIndex token_index;              // text -> id
  std::vector<std::string> merges;      // "left right", in rank order
  StringIndex merge_index;              // "left right" -> rank
  std::vector<int32_t> special_ids;     // control/user-defined/unknown, longest text first
  std::array<int32_t, 256> byte_ids{};  // SPM byte fallback: token of each byte, or -1
  bool spm_split_words = false;         // see spm_tokenize

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1;

  int32_t find_token(std::string_view text) const { return token_index.find(texts, text); }

  struct Fragment {
    int32_t token;  // >= 0: a special token; -1: raw text [offset, offset + length)
    size_t offset, length;
  };
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  struct SpmWork {  // scratch space reused across the segments of one text
    struct Symbol {
      int32_t prev, next;
      uint32_t offset, n;
    };
    struct Bigram {
      float score;
      int32_t left, right;
      uint32_t size;
    };
    std::vector<Symbol> symbols;
    std::vector<Bigram> heap;
  };
  void spm_segment(std::string_view text, std::vector<int32_t>& out, SpmWork& work) const;
  void spm_tokenize(std::string_view text, std::vector<int32_t>& out) const;
  void bpe_tokenize(std::string_view text, std::vector<int32_t>& out) const;
  struct BpeWork {  // scratch space reused across the words of one text
    struct Symbol {
      int32_t prev, next;
      uint32_t offset, n;
    };
    struct Bigram {
      int32_t rank, left, right;
      uint32_t size;
    };
    std::vector<Symbol> symbols;
    std::vector<Bigram> heap;
    std::string key;
  };
  void bpe_word(std::string_view word, std::vector<int32_t>& out, BpeWork& work) const;
  std::string render_piece(int32_t id) const;
};

// Cut special tokens out of the raw text, longest token first, each occurrence left to right
// (llama.cpp's tokenizer_st_partition).
std::vector<Tokenizer::Impl::Fragment> Tokenizer::Impl::partition(std::string_view text,
                                                                  bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  for (const int32_t id : special_ids) {
    if (!parse_special && (attrs[static_cast<size_t>(id)] & (attr_control | attr_unknown))) continue;
    const std::string& special = texts[static_cast<size_t>(id)];
    next.clear();
    bool changed = false;
    for (const Fragment& fr : frags) {
      if (fr.token >= 0 || fr.length < special.size()) {
        next.push_back(fr);
        continue;
      }
      const std::string_view raw = text.substr(fr.offset, fr.length);
      size_t base = 0;
      for (size_t hit; (hit = raw.find(special, base)) != std::string_view::npos;
           base = hit + special.size()) {
        if (hit > base) next.push_back({-1, fr.offset + base, hit - base});
        next.push_back({id, fr.offset + hit, special.size()});
        changed = true;
      }
      if (base < raw.size()) next.push_back({-1, fr.offset + base, raw.size() - base});
    }
    if (changed) frags.swap(next);
  }
  return frags;
}

namespace {

// Greedy pair merging over a linked list of symbols (SentencePiece and BPE alike): seed the heap with
// every adjacent pair that try_add accepts, then repeatedly merge the best pair (by `lower`),
// skipping pairs that earlier merges made stale, and offer the merged symbol's new neighbours.
template <class Symbols, class Heap, class Lower, class TryAdd>
void merge_symbols(Symbols& symbols, Heap& heap, Lower lower, TryAdd try_add) {
  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), lower);
    const auto b = heap.back();
    heap.pop_back();
    auto& l = symbols[static_cast<size_t>(b.left)];
    auto& r = symbols[static_cast<size_t>(b.right)];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale: one side already merged
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[static_cast<size_t>(r.next)].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
}

}  // namespace

// SentencePiece-style: start from characters, repeatedly merge the adjacent pair whose
// concatenation is the vocabulary token with the highest score (ties: leftmost pair).
void Tokenizer::Impl::spm_segment(std::string_view text, std::vector<int32_t>& out, SpmWork& w) const {
  if (text.empty()) return;
  auto& symbols = w.symbols;
  auto& heap = w.heap;
  symbols.clear();
  heap.clear();
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(td::utf8_len(static_cast<uint8_t>(text[off])), text.size() - off);
    const auto idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({idx - 1, off + n == text.size() ? -1 : idx + 1, static_cast<uint32_t>(off),
                       static_cast<uint32_t>(n)});
    off += n;
  }
  // Heap order: higher score first, then the leftmost pair.
  auto lower = [](const SpmWork::Bigram& l, const SpmWork::Bigram& r) {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  };
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const auto& l = symbols[static_cast<size_t>(left)];
    const auto& r = symbols[static_cast<size_t>(right)];
    const int32_t id = find_token(text.substr(l.offset, l.n + r.n));
    if (id < 0) return;
    heap.push_back({scores[static_cast<size_t>(id)], left, right, l.n + r.n});
    std::push_heap(heap.begin(), heap.end(), lower);
  };
  merge_symbols(symbols, heap, lower, try_add);
  // Symbols that are not tokens (only single characters can be) fall back to byte tokens.
  for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
    const auto& s = symbols[static_cast<size_t>(i)];
    const std::string_view piece = text.substr(s.offset, s.n);
    const int32_t id = find_token(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (const char c : piece) {
      const int32_t bid = byte_ids[static_cast<uint8_t>(c)];
      if (bid >= 0) {
        out.push_back(bid);
      } else if (unk >= 0) {
        out.push_back(unk);
      }
    }
  }
}

// The merge loop keeps every pair of a text in one heap, which gets slow (cache misses) on long
// texts. When no token has a "▁" after a non-"▁" character (true of Llama's vocabulary), no pair
// can ever join the symbols on both sides of such a boundary, so the pieces between boundaries
// are tokenized independently with exactly the same result.
void Tokenizer::Impl::spm_tokenize(std::string_view text, std::vector<int32_t>& out) const {
  SpmWork work;
  if (!spm_split_words) {
    spm_segment(text, out, work);
    return;
  }
  const std::string_view space = k_escaped_space;
  size_t seg_start = 0;
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(td::utf8_len(static_cast<uint8_t>(text[off])), text.size() - off);
    if (off > seg_start && text.substr(off, n) == space && off >= 3 && text.substr(off - 3, 3) != space) {
      spm_segment(text.substr(seg_start, off - seg_start), out, work);
      seg_start = off;
    }
    off += n;
  }
  spm_segment(text.substr(seg_start), out, work);
}

// Byte-level BPE on one pre-tokenized word (already in the GPT-2 alphabet): start from
// characters, repeatedly merge the adjacent pair with the lowest merge rank (ties: leftmost).
void Tokenizer::Impl::bpe_word(std::string_view word, std::vector<int32_t>& out, BpeWork& w) const {
  if (word.empty()) return;
  if (pre.ignore_merges) {
    const int32_t id = find_token(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  auto& symbols = w.symbols;
  auto& heap = w.heap;
  symbols.clear();
  heap.clear();
  for (size_t off = 0; off < word.size();) {
    const size_t n = std::min(td::utf8_len(static_cast<uint8_t>(word[off])), word.size() - off);
    const auto idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({idx - 1, off + n == word.size() ? -1 : idx + 1, static_cast<uint32_t>(off),
                       static_cast<uint32_t>(n)});
    off += n;
  }
  // Heap order: lowest rank first, then the leftmost pair.
  auto lower = [](const BpeWork::Bigram& l, const BpeWork::Bigram& r) {
    return l.rank > r.rank || (l.rank == r.rank && l.left > r.left);
  };
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const auto& l = symbols[static_cast<size_t>(left)];
    const auto& r = symbols[static_cast<size_t>(right)];
    w.key.assign(word.substr(l.offset, l.n));
    w.key.push_back(' ');
    w.key.append(word.substr(r.offset, r.n));
    const int32_t rank = merge_index.find(merges, w.key);
    if (rank < 0) return;
    heap.push_back({rank, left, right, l.n + r.n});
    std::push_heap(heap.begin(), heap.end(), lower);
  };
  merge_symbols(symbols, heap, lower, try_add);
  for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
    const auto& s = symbols[static_cast<size_t>(i)];
    const std::string_view piece = word.substr(s.offset, s.n);
    const int32_t id = find_token(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // As llama.cpp: try each byte as a one-byte token, drop those that are not.
    for (const char c : piece) {
      const int32_t bid = find_token(std::string_view(&c, 1));
      if (bid >= 0) out.push_back(bid);
    }
  }
}

void Tokenizer::Impl::bpe_tokenize(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<uint32_t> cpts;
  td::decode_utf8(text, cpts);
  std::vector<uint32_t> word_lengths;
  td::split_words(cpts, pre.split, word_lengths);
  BpeWork work;
  std::string word, utf8;
  size_t start = 0;
  for (const uint32_t len : word_lengths) {
    word.clear();
    for (size_t i = start; i < start + len; ++i) {
      utf8.clear();
      td::append_utf8(utf8, cpts[i]);
      for (const char c : utf8) word += td::byte_to_unicode(static_cast<uint8_t>(c));
    }
    start += len;
    bpe_word(word, out, work);
  }
}

// The token's text with special tokens shown (llama.cpp's token-to-piece cache).
std::string Tokenizer::Impl::render_piece(int32_t id) const {
  const std::string& text = texts[static_cast<size_t>(id)];
  const uint8_t attr = attrs[static_cast<size_t>(id)];
  if (attr & (attr_unknown | attr_control | attr_user_defined)) return text;
  if (attr & attr_normal) {
    if (type == VocabType::spm) {
      std::string s = text;
      replace_all(s, k_escaped_space, " ");
      return s;
    }
    std::string s;
    std::vector<uint32_t> cpts;
    td::decode_utf8(text, cpts);
    for (const uint32_t cpt : cpts) {
      const int b = td::unicode_to_byte(cpt);
      if (b >= 0) {
        s.push_back(static_cast<char>(b));
        continue;
      }
      // Not in the byte alphabet: llama.cpp shows the character's bytes and the token.
      std::string utf8;
      td::append_utf8(utf8, cpt);
      s += "[UNK_BYTE_0x";
      for (const char c : utf8) {
        char hex[3];
        std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned>(static_cast<uint8_t>(c)));
        s += hex;
      }
      s += text + "]";
    }
    return s;
  }
  if (attr & attr_byte) {
    const int b = parse_byte_token(text);
    return b < 0 ? std::string() : std::string(1, static_cast<char>(b));
  }
  return {};  // unused / undefined tokens render as nothing
}

namespace {

// Reads a special-token id. Absent: keeps `id`. -1 or 0xFFFFFFFF: none. Out of range: an error
// if `strict`, otherwise none.
Expected<void> read_token_id(const gguf::File& f, std::string_view key, int64_t n_vocab, bool strict,
                             int32_t& id) {
  const gguf::Value* v = f.find(key);
  if (v == nullptr) return {};
  uint64_t u = 0;
  int64_t x = 0;
  std::string shown;
  if (v->type() != gguf::ValueType::boolean && v->as_u64(u)) {
    if (u == 0xFFFFFFFFull || u == std::numeric_limits<uint64_t>::max()) {
      id = -1;
      return {};
    }
    if (u < static_cast<uint64_t>(n_vocab)) {
      id = static_cast<int32_t>(u);
      return {};
    }
    shown = std::to_string(u);
  } else if (v->type() != gguf::ValueType::boolean && v->as_i64(x)) {  // negative
    if (x == -1) {
      id = -1;
      return {};
    }
    shown = std::to_string(x);
  } else {
    return meta_error(ErrorCode::parse, std::string(key) + " is not an integer");
  }
  if (!strict) {
    id = -1;
    return {};
  }
  return meta_error(ErrorCode::out_of_range, std::string(key) + " = " + shown +
                                                 " is outside the vocabulary of " + std::to_string(n_vocab) +
                                                 " tokens");
}

Expected<void> read_bool(const gguf::File& f, std::string_view key, bool& out) {
  if (f.find(key) == nullptr) return {};
  auto v = f.get_bool(key);
  if (!v) return wrap(v.error());
  out = *v;
  return {};
}

}  // namespace

Expected<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
  auto impl = std::make_shared<Impl>();
  Impl& t = *impl;

  // Vocabulary type and pre-tokenizer.
  auto model = file.get_string("tokenizer.ggml.model");
  if (!model) return wrap(model.error());
  if (*model == "llama") {
    t.type = VocabType::spm;
  } else if (*model == "gpt2") {
    t.type = VocabType::bpe;
  } else {
    return meta_error(ErrorCode::unsupported,
                      "tokenizer.ggml.model '" + *model + "' is not supported (only 'llama' and 'gpt2')");
  }
  if (t.type == VocabType::bpe) {
    if (file.find("tokenizer.ggml.pre") != nullptr) {
      auto pre = file.get_string("tokenizer.ggml.pre");
      if (!pre) return wrap(pre.error());
      t.pre_name = *pre;
    }
    if (!lookup_pre(t.pre_name, t.pre)) {
      return meta_error(ErrorCode::unsupported,
                        "unknown pre-tokenizer type tokenizer.ggml.pre = '" + t.pre_name + "'");
    }
    t.add_space_prefix = false;
    t.add_bos = t.pre.add_bos;
    t.add_eos = false;
  } else {
    t.pre.clean_spaces = false;
    t.add_space_prefix = true;
    t.add_bos = true;
    t.add_eos = false;
  }
  LL_TRY(read_bool(file, "tokenizer.ggml.add_space_prefix", t.add_space_prefix));

  // Tokens, scores, types.
  auto tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return wrap(tokens.error());
  t.texts = std::move(*tokens);
  const size_t n = t.texts.size();
  if (n == 0) return meta_error(ErrorCode::parse, "tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return meta_error(ErrorCode::out_of_range, "tokenizer.ggml.tokens has too many entries");
  }
  const auto n_vocab = static_cast<int64_t>(n);
  t.scores.assign(n, 0.0f);
  if (file.find("tokenizer.ggml.scores") != nullptr) {
    auto scores = file.get_f32_array("tokenizer.ggml.scores");
    if (!scores) return wrap(scores.error());
    if (scores->size() != n) {
      return meta_error(ErrorCode::parse, "tokenizer.ggml.scores has " + std::to_string(scores->size()) +
                                              " entries but tokenizer.ggml.tokens has " + std::to_string(n));
    }
    for (size_t i = 0; i < n; ++i) {
      const float s = (*scores)[i];
      t.scores[i] = std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
    }
  }
  t.attrs.assign(n, attr_normal);
  if (file.find("tokenizer.ggml.token_type") != nullptr) {
    auto types = file.get_i64_array("tokenizer.ggml.token_type");
    if (!types) return wrap(types.error());
    if (types->size() != n) {
      return meta_error(ErrorCode::parse, "tokenizer.ggml.token_type has " + std::to_string(types->size()) +
                                              " entries but tokenizer.ggml.tokens has " + std::to_string(n));
    }
    for (size_t i = 0; i < n; ++i) t.attrs[i] = attr_from_type((*types)[i]);
  }
  t.token_index.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string& text = t.texts[i];
    if (text.empty()) text = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp
    const int32_t dup = t.token_index.insert(t.texts, static_cast<int32_t>(i));
    if (dup >= 0) {
      return meta_error(ErrorCode::parse, "duplicate token in tokenizer.ggml.tokens: ids " +
                                              std::to_string(dup) + " and " + std::to_string(i) +
                                              " have the same text");
    }
  }

  // Merges (BPE only): "left right", rank = position; the first of duplicates wins.
  if (t.type == VocabType::bpe) {
    if (file.find("tokenizer.ggml.merges") == nullptr) {
      return meta_error(ErrorCode::not_found,
                        "tokenizer.ggml.merges is missing (required for a gpt2 vocabulary)");
    }
    auto merges = file.get_string_array("tokenizer.ggml.merges");
    if (!merges) return wrap(merges.error());
    if (merges->size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return meta_error(ErrorCode::out_of_range, "tokenizer.ggml.merges has too many entries");
    }
    t.merges = std::move(*merges);
    t.merge_index.reserve(t.merges.size());
    for (size_t i = 0; i < t.merges.size(); ++i) {
      const std::string& m = t.merges[i];
      const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      if (sp == std::string::npos || sp + 1 >= m.size()) {
        return meta_error(ErrorCode::parse, "tokenizer.ggml.merges[" + std::to_string(i) + "] = '" + m +
                                                "' is not of the form 'left right'");
      }
      t.merge_index.insert(t.merges, static_cast<int32_t>(i));  // a duplicate keeps the first rank
    }
  }

  // Special token ids: llama.cpp's defaults, then the metadata.
  if (t.type == VocabType::spm) {
    t.bos = 1;
    t.eos = 2;
    t.unk = 0;
  } else {
    t.bos = 11;
    t.eos = 11;
  }
  for (int32_t* id : {&t.bos, &t.eos, &t.unk}) {
    if (*id >= n_vocab) *id = -1;
  }
  LL_TRY(read_token_id(file, "tokenizer.ggml.bos_token_id", n_vocab, true, t.bos));
  LL_TRY(read_token_id(file, "tokenizer.ggml.eos_token_id", n_vocab, true, t.eos));
  LL_TRY(read_token_id(file, "tokenizer.ggml.unknown_token_id", n_vocab, true, t.unk));
  LL_TRY(read_token_id(file, "tokenizer.ggml.eot_token_id", n_vocab, true, t.eot));
  LL_TRY(read_token_id(file, "tokenizer.ggml.eom_token_id", n_vocab, true, t.eom));
  LL_TRY(read_token_id(file, "tokenizer.ggml.padding_token_id", n_vocab, false, t.pad));
  LL_TRY(read_bool(file, "tokenizer.ggml.add_bos_token", t.add_bos));
  LL_TRY(read_bool(file, "tokenizer.ggml.add_eos_token", t.add_eos));
  if (t.bos < 0) t.add_bos = false;
  if (t.eos < 0) t.add_eos = false;

  // End-of-generation tokens. Tokens recognised by their text become control tokens.
  t.eog.assign(n, 0);
  if (t.eot < 0) {
    for (const std::string_view text : k_eot_texts) {  // the first one present, in list order
      t.eot = t.find_token(text);
      if (t.eot >= 0) break;
    }
    if (t.eot >= 0) t.attrs[static_cast<size_t>(t.eot)] |= attr_control;
  }
  for (const std::string_view text : k_eog_texts) {
    const int32_t id = t.find_token(text);
    if (id < 0) continue;
    t.eog[static_cast<size_t>(id)] = 1;
    t.attrs[static_cast<size_t>(id)] |= attr_control;
  }
  for (const int32_t id : {t.eos, t.eot, t.eom}) {
    if (id >= 0) t.eog[static_cast<size_t>(id)] = 1;
  }

  // Special tokens for partitioning, longest first (equal lengths: lower id first).
  for (size_t i = 0; i < n; ++i) {
    if (t.attrs[i] & (attr_control | attr_user_defined | attr_unknown))
      t.special_ids.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(t.special_ids.begin(), t.special_ids.end(), [&](int32_t a, int32_t b) {
    return t.texts[static_cast<size_t>(a)].size() > t.texts[static_cast<size_t>(b)].size();
  });

  // SentencePiece byte fallback: "<0xNN>", else the one-byte token.
  for (int b = 0; b < 256; ++b) {
    char name[7];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    int32_t id = t.find_token(name);
    if (id < 0) {
      const char c = static_cast<char>(b);
      id = t.find_token(std::string_view(&c, 1));
    }
    t.byte_ids[static_cast<size_t>(b)] = id;
  }

  // Can SentencePiece texts be cut before each "▁" that follows another character? Only if every
  // "▁" inside a token follows another "▁".
  if (t.type == VocabType::spm) {
    t.spm_split_words = true;
    for (const std::string& text : t.texts) {
      for (size_t k = text.find(k_escaped_space, 1); k != std::string::npos;
           k = text.find(k_escaped_space, k + 1)) {
        if (k < 3 || text.compare(k - 3, 3, k_escaped_space) != 0) {
          t.spm_split_words = false;
          break;
        }
      }
      if (!t.spm_split_words) break;
    }
  }

  t.pieces.resize(n);
  for (size_t i = 0; i < n; ++i) t.pieces[i] = t.render_piece(static_cast<int32_t>(i));

  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const Impl& t = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  const auto frags = t.partition(text, parse_special);
  if (add_special && t.add_bos) out.push_back(t.bos);
  if (t.type == VocabType::spm) {
    bool prev_special = true;  // a leading space is added at the start and after special tokens
    std::string piece;
    for (const auto& fr : frags) {
      if (fr.token >= 0) {
        out.push_back(fr.token);
        prev_special = true;
        continue;
      }
      piece.clear();
      if (t.add_space_prefix && prev_special) piece.push_back(' ');
      piece.append(text.substr(fr.offset, fr.length));
      replace_all(piece, " ", k_escaped_space);
      t.spm_tokenize(piece, out);
      prev_special = false;
    }
  } else {
    for (const auto& fr : frags) {
      if (fr.token >= 0) {
        out.push_back(fr.token);
      } else {
        t.bpe_tokenize(text.substr(fr.offset, fr.length), out);
      }
    }
  }
  if (add_special && t.add_eos) out.push_back(t.eos);
  return out;
}

std::string Tokenizer::decode_token(int32_t id, bool unparse_special) const {
  const Impl& t = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= t.texts.size()) return {};
  if (!unparse_special && (t.attrs[static_cast<size_t>(id)] & (attr_control | attr_unknown))) return {};
  return t.pieces[static_cast<size_t>(id)];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& opts) const {
  const Impl& t = *impl_;
  bool remove_space = t.add_space_prefix;
  if (opts.remove_special && t.add_bos && !ids.empty() && ids.front() == t.bos) {
    remove_space = false;
    ids = ids.subspan(1);
  }
  if (opts.remove_special && t.add_eos && !ids.empty() && ids.back() == t.eos)
    ids = ids.first(ids.size() - 1);
  std::string text;
  for (const int32_t id : ids) {
    const std::string piece = decode_token(id, opts.unparse_special);
    // Only the first token's piece loses a leading space (llama.cpp: lstrip on the first piece).
    const size_t skip = (remove_space && !piece.empty() && piece[0] == ' ') ? 1 : 0;
    remove_space = false;
    text.append(piece, skip, std::string::npos);
  }
  if (!t.pre.clean_spaces || text.empty()) return text;

  // clean_up_tokenization_spaces, pass for pass as llama.cpp.
  std::string& s = text;
  // 1: " ?", " !", " .", " ," lose the space.
  size_t total = 1;
  for (size_t i = 1; i < s.size(); ++i) {
    const char x = s[i];
    if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
    s[total++] = x;
  }
  s.resize(total);
  // 2: " ' " becomes "'".
  total = 1;
  for (size_t i = 1; i < s.size(); ++i) {
    const char x = s[i];
    if (x == '\'' && i + 1 < s.size() && s[i - 1] == ' ' && s[i + 1] == ' ') {
      --total;
      s[++i] = '\0';  // drop the next space too (llama.cpp blanks it, which later checks see)
    }
    s[total++] = x;
  }
  s.resize(total);
  // 3: " 's", " 'm", " 're", " 've" lose the space.
  total = 1;
  for (size_t i = 1; i < s.size(); ++i) {
    const char x = s[i];
    if (s[i - 1] == ' ' && x == '\'' && i + 1 < s.size()) {
      const char x1 = s[i + 1];
      if (x1 == 's' || x1 == 'm') {
        --total;
      } else if (i + 2 < s.size()) {
        const char x2 = s[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --total;
      }
    }
    s[total++] = x;
  }
  s.resize(total);
  return text;
}

int32_t Tokenizer::n_vocab() const {
  return static_cast<int32_t>(impl_->texts.size());
}
int32_t Tokenizer::bos_id() const {
  return impl_->bos;
}
int32_t Tokenizer::eos_id() const {
  return impl_->eos;
}
int32_t Tokenizer::eot_id() const {
  return impl_->eot;
}
int32_t Tokenizer::unk_id() const {
  return impl_->unk;
}
int32_t Tokenizer::pad_id() const {
  return impl_->pad;
}
bool Tokenizer::add_bos_token() const {
  return impl_->add_bos;
}
bool Tokenizer::add_eos_token() const {
  return impl_->add_eos;
}

bool Tokenizer::is_eog(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->eog.size() && impl_->eog[static_cast<size_t>(id)] != 0;
}

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->attrs.size() &&
         (impl_->attrs[static_cast<size_t>(id)] & attr_control) != 0;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  static const std::string empty;
  if (id < 0 || static_cast<size_t>(id) >= impl_->texts.size()) return empty;
  return impl_->texts[static_cast<size_t>(id)];
}

VocabType Tokenizer::type() const {
  return impl_->type;
}
const std::string& Tokenizer::pre_tokenizer() const {
  return impl_->pre_name;
}

}  // namespace ll::model
