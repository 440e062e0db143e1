// Qwen2 / Qwen2.5: the Llama block with biases on Q, K and V, and NeoX-order RoPE.
#include "model/arch.h"

namespace ll::model {

const ArchSpec k_arch_qwen2{.name = "qwen2", .rope_neox = true, .qkv_bias = true};

}  // namespace ll::model
