// Where a segment's tensors come from, on either side of the wire: the identity of a model file,
// the tensors of a unit range, and read-only file mappings.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "net/sha256.h"

namespace ll::runtime {

// The identity of a model: SHA-256 of its GGUF header (everything before the tensor data: version,
// metadata, tensor names, types, shapes and offsets). Cheap, and together with each tensor's own
// SHA-256 (checked whenever tensor bytes are used) it tells two model files apart.
Expected<net::Sha256Digest> model_identity(const gguf::File& file);

// Names of the tensors units [unit_first, unit_last] use, each once, in unit order.
std::vector<std::string> segment_tensor_names(const model::Model& m, int64_t unit_first, int64_t unit_last);

// The weights of units [first, last] that `m` maps from its model file, held in memory in huge
// pages at the same addresses (gguf::File::hold_in_memory) when they fit in the memory available
// now, less a reserve of 256 MiB; otherwise they stay mapped and `log` (may be empty) says why.
// Nothing for a model built from parts (a worker's received tensors are in memory already).
// Returns the bytes newly held.
uint64_t hold_units_in_memory(const model::Model& m, int64_t first, int64_t last,
                              const std::function<void(const std::string&)>& log);
// Gives back what hold_units_in_memory() held of units [first, last] (and drops their file pages
// from the resident set). Returns the bytes no longer held.
uint64_t release_units_memory(const model::Model& m, int64_t first, int64_t last);

// Writes `bytes` to `path` atomically (a temporary file renamed into place); nothing is left behind
// on failure.
Expected<void> write_file_atomic(const std::string& path, const uint8_t* bytes, uint64_t n_bytes);

}  // namespace ll::runtime
