// Where a segment's tensors come from, on either side of the wire: the identity of a model file,
// the tensors of a unit range, and read-only file mappings.
#pragma once

#include <cstdint>
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

// A read-only, shared mapping of a whole file (empty files map to nothing).
class MappedFile {
 public:
  static Expected<MappedFile> open(const std::string& path);
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Tells the kernel this process no longer needs the pages of a read-only file mapping inside
// [data, data + n_bytes) (whole pages only): they leave our resident set and are read again from the
// file if touched. The coordinator hashes and streams the workers' tensors out of its own mapping of
// the model; without this its RSS would grow to the whole model.
void drop_resident_pages(const void* data, uint64_t n_bytes);

// Writes `bytes` to `path` atomically (a temporary file renamed into place); nothing is left behind
// on failure.
Expected<void> write_file_atomic(const std::string& path, const uint8_t* bytes, uint64_t n_bytes);

}  // namespace ll::runtime
