// Llama 2/3, TinyLlama, Mistral, TinyStories: RMSNorm, GQA, RoPE on adjacent pairs (the GGUF converter
// permutes Q/K for this order), SwiGLU feed-forward, tied or separate output head.
#include "model/arch.h"

namespace ll::model {

const ArchSpec k_arch_llama{.name = "llama", .rope_neox = false, .qkv_bias = false};

}  // namespace ll::model
