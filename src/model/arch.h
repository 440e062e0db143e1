// Architectures are data: what differs between the Llama-family models we run.
// Each architecture is described in its own file (arch_<name>.cpp) and registered here.
#pragma once

#include <string_view>

namespace ll::model {

struct ArchSpec {
  std::string_view name;    // general.architecture value, also the metadata key prefix
  bool rope_neox = false;   // rotate pairs (i, i + n_rot/2) instead of (2i, 2i+1)
  bool qkv_bias = false;    // attn_q/k/v have bias tensors
};

const ArchSpec* find_arch(std::string_view name);  // nullptr if we do not support it
std::string_view supported_arch_names();            // for error messages

extern const ArchSpec k_arch_llama;
extern const ArchSpec k_arch_qwen2;

}  // namespace ll::model
