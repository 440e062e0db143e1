#include "serve/chat_template.h"

#include <array>

namespace ll::serve {

namespace {

struct Named {
  const char* name;
  ChatTemplate t;
};
constexpr std::array<Named, 7> k_names{{{"plain", ChatTemplate::plain},
                                        {"llama2", ChatTemplate::llama2},
                                        {"llama3", ChatTemplate::llama3},
                                        {"chatml", ChatTemplate::chatml},
                                        {"qwen", ChatTemplate::chatml},
                                        {"zephyr", ChatTemplate::zephyr},
                                        {"mistral", ChatTemplate::mistral}}};

bool has(std::string_view s, std::string_view what) { return s.find(what) != std::string_view::npos; }

}  // namespace

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::plain: return "plain";
    case ChatTemplate::llama2: return "llama2";
    case ChatTemplate::llama3: return "llama3";
    case ChatTemplate::chatml: return "chatml";
    case ChatTemplate::zephyr: return "zephyr";
    case ChatTemplate::mistral: return "mistral";
  }
  return "?";
}

Expected<ChatTemplate> chat_template_from_name(std::string_view name) {
  std::string known;
  for (const auto& n : k_names) {
    if (name == n.name) return n.t;
    if (!known.empty()) known += ", ";
    known += n.name;
  }
  return make_error(ErrorCode::invalid_argument,
                    std::string("unknown chat template \"").append(name).append("\" (known: ").append(known).append(")"));
}

std::optional<ChatTemplate> detect_chat_template(std::string_view jinja) {
  if (has(jinja, "<|start_header_id|>")) return ChatTemplate::llama3;
  if (has(jinja, "<|im_start|>")) return ChatTemplate::chatml;
  if (has(jinja, "<|user|>")) return ChatTemplate::zephyr;
  if (has(jinja, "[INST]")) return has(jinja, "<<SYS>>") ? ChatTemplate::llama2 : ChatTemplate::mistral;
  return std::nullopt;
}

Expected<ChatTemplate> choose_chat_template(std::string_view requested_name,
                                            const std::optional<std::string>& gguf_template) {
  if (!requested_name.empty()) return chat_template_from_name(requested_name);
  if (!gguf_template) return ChatTemplate::plain;
  if (auto t = detect_chat_template(*gguf_template)) return *t;
  return make_error(ErrorCode::unsupported,
                    "the model's chat template (tokenizer.chat_template) is not one of the known families "
                    "(llama2, llama3, chatml, zephyr, mistral); choose one with --chat-template NAME");
}

std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, std::string_view eos_text) {
  std::string out;
  switch (t) {
    case ChatTemplate::llama3:
      for (const auto& m : messages) {
        out.append("<|start_header_id|>").append(m.role).append("<|end_header_id|>\n\n").append(m.content);
        out.append("<|eot_id|>");
      }
      out.append("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    case ChatTemplate::chatml:
      for (const auto& m : messages) {
        out.append("<|im_start|>").append(m.role).append("\n").append(m.content).append("<|im_end|>\n");
      }
      out.append("<|im_start|>assistant\n");
      break;
    case ChatTemplate::zephyr:
      for (const auto& m : messages) {
        out.append("<|").append(m.role).append("|>\n").append(m.content).append(eos_text).append("\n");
      }
      out.append("<|assistant|>\n");
      break;
    case ChatTemplate::llama2:
    case ChatTemplate::mistral: {
      // A system message is folded into the next user turn: <<SYS>> blocks for llama2, a plain
      // paragraph for mistral. Every turn after the first starts a new sequence (eos, then bos).
      std::string system;
      bool first_turn = true;
      for (const auto& m : messages) {
        if (m.role == "system") {
          system = m.content;
        } else if (m.role == "user") {
          if (!first_turn && t == ChatTemplate::llama2) out.append("<s>");
          out.append("[INST] ");
          if (!system.empty()) {
            if (t == ChatTemplate::llama2) {
              out.append("<<SYS>>\n").append(system).append("\n<</SYS>>\n\n");
            } else {
              out.append(system).append("\n\n");
            }
            system.clear();
          }
          out.append(m.content).append(" [/INST]");
          first_turn = false;
        } else {
          out.append(" ").append(m.content).append(eos_text);
        }
      }
      break;
    }
    case ChatTemplate::plain:
      for (const auto& m : messages) {
        std::string role = m.role;
        if (!role.empty() && role[0] >= 'a' && role[0] <= 'z') role[0] = static_cast<char>(role[0] - 'a' + 'A');
        out.append(role).append(": ").append(m.content).append("\n");
      }
      out.append("Assistant:");
      break;
  }
  return out;
}

}  // namespace ll::serve
