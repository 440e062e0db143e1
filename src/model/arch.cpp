#include "model/arch.h"

namespace ll::model {

const ArchSpec* find_arch(std::string_view name) {
  for (const ArchSpec* a : {&k_arch_llama, &k_arch_qwen2}) {
    if (a->name == name) return a;
  }
  return nullptr;
}

std::string_view supported_arch_names() { return "llama, qwen2"; }

}  // namespace ll::model
