#include "model/tokenizer_unicode.h"

#include <unicode/uchar.h>

#include <array>

namespace ll::model::tokenizer_detail {

void decode_utf8(std::string_view text, std::vector<uint32_t>& out) {
  out.clear();
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  auto cont = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const uint8_t b0 = s[i];
    if (b0 < 0x80) {
      out.push_back(b0);
      i += 1;
      continue;
    }
    if ((b0 & 0xE0) == 0xC0 && cont(i + 1)) {
      out.push_back((uint32_t{b0 & 0x1Fu} << 6) | (s[i + 1] & 0x3Fu));
      i += 2;
      continue;
    }
    if ((b0 & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      out.push_back((uint32_t{b0 & 0x0Fu} << 12) | (uint32_t{s[i + 1] & 0x3Fu} << 6) | (s[i + 2] & 0x3Fu));
      i += 3;
      continue;
    }
    if ((b0 & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      const uint32_t cpt = (uint32_t{b0 & 0x07u} << 18) | (uint32_t{s[i + 1] & 0x3Fu} << 12) |
                           (uint32_t{s[i + 2] & 0x3Fu} << 6) | (s[i + 3] & 0x3Fu);
      if (cpt <= 0x10FFFF) {
        out.push_back(cpt);
        i += 4;
        continue;
      }
    }
    out.push_back(k_replacement_char);
    i += 1;
  }
}

void append_utf8(std::string& out, uint32_t cpt) {
  if (cpt <= 0x7F) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt <= 0x7FF) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | ((cpt >> 18) & 0x07)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

namespace {

enum : uint8_t { k_letter = 1, k_number = 2, k_space = 4 };

uint8_t classify_icu(uint32_t cpt) {
  // llama.cpp's tables are Unicode 15.1; ICU 72 is 15.0. The one difference that matters here:
  // CJK Unified Ideographs Extension I (15.1) are letters.
  if (cpt >= 0x2EBF0 && cpt <= 0x2EE5D) return k_letter;
  const auto c = static_cast<UChar32>(cpt);
  const uint32_t mask = U_GET_GC_MASK(c);
  uint8_t bits = 0;
  if (mask & U_GC_L_MASK) bits |= k_letter;
  if (mask & U_GC_N_MASK) bits |= k_number;
  if (u_isUWhiteSpace(c)) bits |= k_space;
  return bits;
}

// The Basic Multilingual Plane is looked up in a table built once; the rest asks ICU directly.
const std::array<uint8_t, 0x10000>& bmp_classes() {
  static const auto table = [] {
    std::array<uint8_t, 0x10000> t{};
    for (uint32_t c = 0; c < t.size(); ++c) t[c] = classify_icu(c);
    return t;
  }();
  return table;
}

uint8_t class_bits(uint32_t cpt) {
  if (cpt < 0x10000) return bmp_classes()[cpt];
  if (cpt > 0x10FFFF) return 0;
  return classify_icu(cpt);
}

// Character classes of the code point at pos; `in_range` is false past the end (llama.cpp's
// "no flags at all" for out-of-range positions, which stops the [^\s\p{L}\p{N}]+ loops).
struct Flags {
  bool letter = false, number = false, space = false, in_range = false;
};

class Scanner {
 public:
  Scanner(std::span<const uint32_t> cpts, std::vector<uint32_t>& lens) : cpts_(cpts), lens_(lens) {}
  size_t size() const { return cpts_.size(); }
  uint32_t cpt(size_t pos) const { return pos < cpts_.size() ? cpts_[pos] : 0xFFFFFFFFu; }
  Flags flags(size_t pos) const {
    Flags f;
    if (pos >= cpts_.size()) return f;
    const uint8_t b = class_bits(cpts_[pos]);
    f.letter = b & k_letter;
    f.number = b & k_number;
    f.space = b & k_space;
    f.in_range = true;
    return f;
  }
  // Close the current word at `end` (no-op for an empty word).
  void emit(size_t end) {
    if (end > prev_end_) lens_.push_back(static_cast<uint32_t>(end - prev_end_));
    prev_end_ = end;
  }

 private:
  std::span<const uint32_t> cpts_;
  std::vector<uint32_t>& lens_;
  size_t prev_end_ = 0;
};

uint32_t ascii_lower(uint32_t c) {
  return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

bool is_rn(uint32_t c) {
  return c == '\r' || c == '\n';
}

// Length of a contraction ('s 't 're 've 'm 'll 'd) starting at pos, or 0.
size_t contraction_len(const Scanner& sc, size_t pos, bool ignore_case) {
  if (sc.cpt(pos) != '\'' || pos + 1 >= sc.size()) return 0;
  auto fold = [&](uint32_t c) { return ignore_case ? ascii_lower(c) : c; };
  const uint32_t c1 = fold(sc.cpt(pos + 1));
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 < sc.size()) {
    const uint32_t c2 = fold(sc.cpt(pos + 2));
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  }
  return 0;
}

void split_gpt2(Scanner& sc) {
  const size_t n = sc.size();
  size_t pos = 0;
  while (pos < n) {
    const uint32_t c = sc.cpt(pos);
    const Flags f = sc.flags(pos);
    if (const size_t len = contraction_len(sc, pos, /*ignore_case=*/false)) {
      pos += len;
      sc.emit(pos);
      continue;
    }
    // Optional single ASCII space, then a run of one class.
    Flags f2 = c == ' ' ? sc.flags(pos + 1) : f;
    if (f2.letter) {  // ' ?\p{L}+'
      pos += (c == ' ');
      while (f2.letter) f2 = sc.flags(++pos);
      sc.emit(pos);
      continue;
    }
    if (f2.number) {  // ' ?\p{N}+'
      pos += (c == ' ');
      while (f2.number) f2 = sc.flags(++pos);
      sc.emit(pos);
      continue;
    }
    if (!(f2.space || f2.letter || f2.number) && f2.in_range) {  // ' ?[^\s\p{L}\p{N}]+'
      pos += (c == ' ');
      while (!(f2.space || f2.letter || f2.number) && f2.in_range) f2 = sc.flags(++pos);
      sc.emit(pos);
      continue;
    }
    size_t n_space = 0;
    while (sc.flags(pos + n_space).space) ++n_space;
    if (n_space > 1 && pos + n_space < n) {  // '\s+(?!\S)': leave the last space for the next word
      pos += n_space - 1;
      sc.emit(pos);
      continue;
    }
    if (n_space > 0) {  // '\s+'
      pos += n_space;
      sc.emit(pos);
      continue;
    }
    sc.emit(++pos);  // unreachable for valid input; keeps the loop total
  }
}

void split_llama3(Scanner& sc, size_t max_digits) {
  const size_t n = sc.size();
  size_t pos = 0;
  while (pos < n) {
    const uint32_t c = sc.cpt(pos);
    const Flags f = sc.flags(pos);
    if (const size_t len = contraction_len(sc, pos, /*ignore_case=*/true)) {
      pos += len;
      sc.emit(pos);
      continue;
    }
    // '[^\r\n\p{L}\p{N}]?\p{L}+'
    if (!(is_rn(c) || f.number) && (f.letter || sc.flags(pos + 1).letter)) {
      ++pos;
      while (sc.flags(pos).letter) ++pos;
      sc.emit(pos);
      continue;
    }
    // '\p{N}{1,3}' (llama3) or '\p{N}' (qwen2)
    if (f.number) {
      size_t ini = pos;
      while (sc.flags(pos).number) {
        if (++pos - ini >= max_digits) {
          sc.emit(pos);
          ini = pos;
        }
      }
      sc.emit(pos);
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    Flags f2 = c == ' ' ? sc.flags(pos + 1) : f;
    if (!(f2.space || f2.letter || f2.number) && f.in_range) {
      pos += (c == ' ');
      while (!(f2.space || f2.letter || f2.number) && f2.in_range) f2 = sc.flags(++pos);
      while (pos < n && is_rn(sc.cpt(pos))) ++pos;
      sc.emit(pos);
      continue;
    }
    size_t n_space = 0;
    size_t end_after_last_rn = 0;
    while (sc.flags(pos + n_space).space) {
      if (is_rn(sc.cpt(pos + n_space))) end_after_last_rn = pos + n_space + 1;
      ++n_space;
    }
    if (end_after_last_rn > 0) {  // '\s*[\r\n]+'
      pos = end_after_last_rn;
      sc.emit(pos);
      continue;
    }
    if (n_space > 1 && pos + n_space < n) {  // '\s+(?!\S)'
      pos += n_space - 1;
      sc.emit(pos);
      continue;
    }
    if (n_space > 0) {  // '\s+'
      pos += n_space;
      sc.emit(pos);
      continue;
    }
    sc.emit(++pos);
  }
}

struct ByteAlphabet {
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 0x200> from_cpt;  // every stand-in is below U+0200
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    a.from_cpt.fill(-1);
    auto printable = [](int b) {
      return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cpt = printable(b) ? static_cast<uint32_t>(b) : next++;
      append_utf8(a.to_utf8[static_cast<size_t>(b)], cpt);
      a.from_cpt[cpt] = static_cast<int16_t>(b);
    }
    return a;
  }();
  return alphabet;
}

}  // namespace

CharClass char_class(uint32_t cpt) {
  const uint8_t b = class_bits(cpt);
  return CharClass{(b & k_letter) != 0, (b & k_number) != 0, (b & k_space) != 0};
}

void split_words(std::span<const uint32_t> cpts, PreTokenizer kind, std::vector<uint32_t>& word_lengths) {
  Scanner sc(cpts, word_lengths);
  switch (kind) {
    case PreTokenizer::gpt2:
      split_gpt2(sc);
      break;
    case PreTokenizer::llama3:
      split_llama3(sc, 3);
      break;
    case PreTokenizer::qwen2:
      split_llama3(sc, 1);
      break;
  }
}

const std::string& byte_to_unicode(uint8_t byte) {
  return byte_alphabet().to_utf8[byte];
}

int unicode_to_byte(uint32_t cpt) {
  return cpt < byte_alphabet().from_cpt.size() ? byte_alphabet().from_cpt[cpt] : -1;
}

}  // namespace ll::model::tokenizer_detail
