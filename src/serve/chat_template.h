// Chat templates: how a list of chat messages becomes one prompt for the model.
//
// GGUF files carry their template as Jinja source (tokenizer.chat_template). We do not run Jinja:
// the common families are recognised by their markers and rendered by hand, as llama.cpp's
// llama_chat_apply_template does for its built-in list.
//
//   family   recognised by                        one user turn, then the assistant's cue
//   llama3   <|start_header_id|>                  <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>
//                                                 <|start_header_id|>assistant<|end_header_id|>\n\n
//   chatml   <|im_start|>   (Qwen, many others)   <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n
//   zephyr   <|user|>                             <|user|>\nHi</s>\n<|assistant|>\n
//   llama2   [INST] and <<SYS>>                   [INST] <<SYS>>\nsys\n<</SYS>>\n\nHi [/INST]
//   mistral  [INST] without <<SYS>>               [INST] sys\n\nHi [/INST]
//   plain    (the fallback for models without a template, e.g. stories260K)
//                                                 User: Hi\nAssistant:
//
// The BOS token is not part of the rendering: the tokenizer adds it where the model asks for it.
// The rendered text is tokenized with special tokens recognised (so "<|im_start|>" becomes its
// control token), like llama.cpp's server does.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ll::serve {

enum class ChatTemplate { plain, llama2, llama3, chatml, zephyr, mistral };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

const char* chat_template_name(ChatTemplate t);
// "llama2", "llama3", "chatml" (alias "qwen"), "zephyr", "mistral", "plain". Unknown names give an
// error listing the known ones.
Expected<ChatTemplate> chat_template_from_name(std::string_view name);
// The family of a GGUF tokenizer.chat_template (Jinja source); nullopt when it is none we know.
std::optional<ChatTemplate> detect_chat_template(std::string_view jinja);

// The template a server uses: --chat-template NAME when given (error if unknown); else the GGUF's
// template if recognised (error naming --chat-template if not); else, when the model has none,
// `plain`.
Expected<ChatTemplate> choose_chat_template(std::string_view requested_name,
                                            const std::optional<std::string>& gguf_template);

// The prompt for the messages, ending with the assistant's cue (generation starts right after it).
// `eos_text` is the end-of-sequence token's text ("</s>"), which llama2/mistral/zephyr put after
// each assistant turn.
std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, std::string_view eos_text = "</s>");

}  // namespace ll::serve
