// Chat templates: recognising the families from GGUF Jinja sources, choosing one, rendering.
#include <gtest/gtest.h>

#include "serve/chat_template.h"

namespace ll::serve {
namespace {

// Abridged from the templates these families ship in their GGUF files.
constexpr const char* k_llama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}";
constexpr const char* k_chatml =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
constexpr const char* k_zephyr =
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token "
    "}}{% endif %}{% endfor %}";
constexpr const char* k_llama2 =
    "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + messages[0]['content'] | trim + "
    "'\\n<</SYS>>\\n\\n' %}{% endif %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}";
constexpr const char* k_mistral =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
    "' [/INST]' }}{% else %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";

TEST(ChatTemplate, RecognisesTheCommonFamilies) {
  EXPECT_EQ(detect_chat_template(k_llama3), ChatTemplate::llama3);
  EXPECT_EQ(detect_chat_template(k_chatml), ChatTemplate::chatml);
  EXPECT_EQ(detect_chat_template(k_zephyr), ChatTemplate::zephyr);
  EXPECT_EQ(detect_chat_template(k_llama2), ChatTemplate::llama2);
  EXPECT_EQ(detect_chat_template(k_mistral), ChatTemplate::mistral);
  EXPECT_FALSE(detect_chat_template("{{ messages | tojson }}").has_value());
  EXPECT_FALSE(detect_chat_template("").has_value());
}

TEST(ChatTemplate, NamesRoundTripAndUnknownNamesListTheKnownOnes) {
  for (auto t : {ChatTemplate::plain, ChatTemplate::llama2, ChatTemplate::llama3, ChatTemplate::chatml,
                 ChatTemplate::zephyr, ChatTemplate::mistral}) {
    auto back = chat_template_from_name(chat_template_name(t));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, t);
  }
  EXPECT_EQ(*chat_template_from_name("qwen"), ChatTemplate::chatml);
  auto bad = chat_template_from_name("vicuna");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("unknown chat template \"vicuna\""), std::string::npos);
  EXPECT_NE(bad.error().message.find("llama3"), std::string::npos);
}

TEST(ChatTemplate, ChoosesTheFlagThenTheModelsThenPlain) {
  EXPECT_EQ(*choose_chat_template("zephyr", std::string(k_chatml)), ChatTemplate::zephyr);
  EXPECT_EQ(*choose_chat_template("", std::string(k_chatml)), ChatTemplate::chatml);
  EXPECT_EQ(*choose_chat_template("", std::nullopt), ChatTemplate::plain);
  auto unknown = choose_chat_template("", std::string("{{ something else }}"));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.error().message.find("--chat-template"), std::string::npos);
  EXPECT_FALSE(choose_chat_template("nope", std::nullopt).has_value());
}

const std::vector<ChatMessage> k_conversation{
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};

TEST(ChatTemplate, RendersEachFamily) {
  EXPECT_EQ(render_chat(ChatTemplate::chatml, k_conversation),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "Hello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_chat(ChatTemplate::llama3, {{"user", "Hi"}}),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render_chat(ChatTemplate::zephyr, {{"system", "S"}, {"user", "Hi"}}),
            "<|system|>\nS</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
  EXPECT_EQ(render_chat(ChatTemplate::llama2, k_conversation),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello.</s><s>[INST] Bye [/INST]");
  EXPECT_EQ(render_chat(ChatTemplate::mistral, k_conversation),
            "[INST] Be brief.\n\nHi [/INST] Hello.</s>[INST] Bye [/INST]");
  EXPECT_EQ(render_chat(ChatTemplate::plain, k_conversation),
            "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:");
  // The end-of-sequence text is the model's.
  EXPECT_EQ(render_chat(ChatTemplate::zephyr, {{"user", "Hi"}}, "<|endoftext|>"), "<|user|>\nHi<|endoftext|>\n<|assistant|>\n");
}

}  // namespace
}  // namespace ll::serve
