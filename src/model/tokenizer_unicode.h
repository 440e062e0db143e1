// Unicode helpers for the tokenizer: lenient UTF-8 decoding, character classes (via ICU), the
// BPE pre-tokenizers (regex splitting, written by hand as llama.cpp does) and the GPT-2
// byte-to-unicode alphabet. Internal to src/model/tokenizer*.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ll::model::tokenizer_detail {

constexpr uint32_t k_replacement_char = 0xFFFD;

// Length of a UTF-8 sequence from its first byte, as llama.cpp counts it: continuation and
// invalid lead bytes count as 1, 0xF8..0xFF as 4. The caller clips to the bytes left.
inline size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t k_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return k_len[lead >> 4];
}

// Decode UTF-8 into code points. Structurally invalid bytes (a stray continuation byte, a lead
// byte without its continuation bytes, 0xF8..0xFF, or a value above U+10FFFF) become one U+FFFD
// each and decoding resumes at the next byte. Overlong forms and surrogates are accepted, as in
// llama.cpp's decoder, so that valid text round-trips byte for byte.
void decode_utf8(std::string_view text, std::vector<uint32_t>& out);

// Append the UTF-8 encoding of a code point (<= U+10FFFF).
void append_utf8(std::string& out, uint32_t cpt);

// The character classes the pre-tokenizer regexes use.
struct CharClass {
  bool letter = false;      // \p{L}
  bool number = false;      // \p{N}
  bool whitespace = false;  // \s (Unicode White_Space)
};
CharClass char_class(uint32_t cpt);

enum class PreTokenizer {
  gpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  llama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
           // ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  qwen2,   // as llama3, but \p{N} (one digit per word)
};

// Split code points into words; appends the length (in code points) of each word, in order.
// Every code point ends up in exactly one word.
void split_words(std::span<const uint32_t> cpts, PreTokenizer kind, std::vector<uint32_t>& word_lengths);

// GPT-2 byte-level alphabet: byte -> UTF-8 of its stand-in character.
const std::string& byte_to_unicode(uint8_t byte);
// Inverse: stand-in code point -> byte, or -1 if the code point is not in the alphabet.
int unicode_to_byte(uint32_t cpt);

}  // namespace ll::model::tokenizer_detail
