// Tokenizer built from a GGUF file's tokenizer.ggml.* metadata, reproducing llama.cpp's
// llama-vocab.cpp token for token.
//
// Supported:
//   tokenizer.ggml.model = "llama"  SentencePiece-style BPE over characters: spaces escaped to
//                                  U+2581, an optional leading space, pairs merged by highest
//                                  score (ties: leftmost), <0xNN> byte fallback.
//   tokenizer.ggml.model = "gpt2"   byte-level BPE: a pre-tokenizer splits the text into words
//                                  (tokenizer.ggml.pre: "gpt-2"/"default", "llama-bpe"/"llama3",
//                                  "qwen2", and a few aliases), bytes are mapped to GPT-2's
//                                  printable alphabet, pairs merged by rank (lowest first).
// Special tokens (control, user-defined, unknown) are cut out of the raw text first, longest
// first: user-defined ones always, control/unknown ones only when parse_special is set.
//
// Metadata is untrusted: missing keys, arrays whose lengths disagree with the token list,
// out-of-range special ids, duplicate tokens and malformed merges give an Error.
//
// A Tokenizer is immutable after construction; copies share the vocabulary, and all const
// members may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "gguf/gguf.h"

namespace ll::model {

enum class VocabType { spm, bpe };

struct DecodeOptions {
  // Drop a leading BOS / trailing EOS when the model adds them (llama.cpp's remove_special).
  bool remove_special = false;
  // Render control/unknown tokens as their text (e.g. "<s>") instead of as nothing.
  bool unparse_special = false;
};

class Tokenizer {
 public:
  static Expected<Tokenizer> from_gguf(const gguf::File& file);

  // add_special: add BOS/EOS where the model asks for it (add_bos_token()/add_eos_token()).
  // parse_special: also recognise control tokens (e.g. "<s>", "<|im_start|>") in the text;
  // user-defined tokens are always recognised.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special = false) const;

  // The text of one token, for streaming. Byte tokens give their single raw byte (possibly part
  // of a UTF-8 sequence); control/unknown tokens give "" unless unparse_special. Out-of-range
  // ids give "".
  std::string decode_token(int32_t id, bool unparse_special = false) const;

  // Whole text, as llama.cpp's llama_detokenize: for SentencePiece vocabularies the leading space
  // of the first piece is dropped (it is the space encode() prefixed); byte tokens are joined
  // into UTF-8; for GPT-2-style vocabularies with clean_up_tokenization_spaces semantics
  // (gpt-2, llama3) " ." " ," " !" " ?" " 's" etc. are cleaned as llama.cpp does.
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& opts = {}) const;

  int32_t n_vocab() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  int32_t eot_id() const;  // -1 if none
  int32_t unk_id() const;  // -1 if none
  int32_t pad_id() const;  // -1 if none
  bool add_bos_token() const;
  bool add_eos_token() const;
  // End of generation: eos, eot, eom and tokens such as <|im_end|>, <|eot_id|>, <|endoftext|>.
  bool is_eog(int32_t id) const;
  bool is_control(int32_t id) const;
  // The token's text as stored in the vocabulary ("" for out-of-range ids).
  const std::string& token_text(int32_t id) const;

  VocabType type() const;
  const std::string& pre_tokenizer() const;  // tokenizer.ggml.pre as read ("" for SPM)

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ll::model
