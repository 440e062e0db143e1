#include <cstdio>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "gguf/gguf.h"
#include "model/tokenizer.h"

namespace ll::apps {

Runner add_tokenize_command(CLI::App& app) {
  struct Opts {
    std::string model, prompt;
    bool ids = false, no_bos = false, parse_special = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("-m,--model", o->model, "GGUF model or vocabulary file")->required();
  app.add_option("-p,--prompt", o->prompt, "Text to tokenize")->required();
  app.add_flag("--ids", o->ids, "Print only the ids, as a JSON array");
  app.add_flag("--no-bos", o->no_bos, "Do not prepend BOS even if the model asks for it");
  app.add_flag("--parse-special", o->parse_special, "Recognise special tokens such as <s> in the text");
  return [o]() -> int {
    auto file = gguf::File::open(o->model);
    if (!file) return report_error(file.error());
    auto tok = model::Tokenizer::from_gguf(*file);
    if (!tok) return report_error(tok.error());
    const auto ids = tok->encode(o->prompt, !o->no_bos, o->parse_special);
    if (o->ids) {
      std::printf("%s\n", nlohmann::json(ids).dump().c_str());
    } else {
      for (int32_t id : ids) {
        std::printf("%6d -> %s\n", id, nlohmann::json(tok->token_text(id)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      }
    }
    return 0;
  };
}

}  // namespace ll::apps
