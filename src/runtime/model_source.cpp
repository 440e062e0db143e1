#include "runtime/model_source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "runtime/sysinfo.h"

namespace ll::runtime {

namespace {

Error io_error(const std::string& what, const std::string& path) {
  return make_error(ErrorCode::io, what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

Expected<net::Sha256Digest> model_identity(const gguf::File& file) {
  const int fd = ::open(file.path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open", file.path());
  net::Sha256 h;
  std::vector<uint8_t> buf(1 << 20);
  uint64_t left = file.data_offset(), off = 0;
  while (left > 0) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
    const ssize_t got = ::pread(fd, buf.data(), want, static_cast<off_t>(off));
    if (got <= 0) {
      Error e = got < 0 ? io_error("cannot read", file.path())
                        : make_error(ErrorCode::io, file.path() + ": file shrank while hashing it");
      ::close(fd);
      return e;
    }
    h.update(std::span<const uint8_t>(buf.data(), static_cast<size_t>(got)));
    left -= static_cast<uint64_t>(got);
    off += static_cast<uint64_t>(got);
  }
  ::close(fd);
  return h.finish();
}

std::vector<std::string> segment_tensor_names(const model::Model& m, int64_t unit_first, int64_t unit_last) {
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (int64_t u = unit_first; u <= unit_last; ++u) {
    for (auto& n : m.unit_tensor_names(u)) {
      if (seen.insert(n).second) names.push_back(std::move(n));
    }
  }
  return names;
}

namespace {

// The file's own entries for the tensors of units [first, last] (none for a model built from parts).
std::vector<const gguf::TensorInfo*> mapped_unit_tensors(const model::Model& m, int64_t first, int64_t last) {
  std::vector<const gguf::TensorInfo*> out;
  first = std::max(first, m.unit_first());
  last = std::min(last, m.unit_last());
  if (first > last) return out;
  for (const std::string& name : segment_tensor_names(m, first, last)) {
    const gguf::TensorInfo* t = m.file().find_tensor(name);
    if (t != nullptr) out.push_back(t);
  }
  return out;
}

}  // namespace

uint64_t hold_units_in_memory(const model::Model& m, int64_t first, int64_t last,
                              const std::function<void(const std::string&)>& log) {
  const auto tensors = mapped_unit_tensors(m, first, last);
  uint64_t need = 0;
  for (const auto* t : tensors) need += t->n_bytes;
  if (need == 0) return 0;
  constexpr uint64_t k_reserve = uint64_t{256} << 20;
  const uint64_t available = available_memory_bytes();
  // (MemAvailable counts the page cache the file is in; what is held already is not asked again.)
  if (available != 0 && need > m.file().held_bytes() && need - m.file().held_bytes() + k_reserve > available) {
    if (log) {
      log("weights of units " + std::to_string(first) + "-" + std::to_string(last) + " stay mapped from " +
          m.file().path() + ": " + std::to_string(need >> 20) + " MiB do not fit in the " +
          std::to_string(available >> 20) + " MiB available");
    }
    return 0;
  }
  uint64_t held = 0;
  for (const auto* t : tensors) {
    auto n = m.file().hold_in_memory(m.file().data_offset() + t->offset, t->n_bytes);
    if (!n) {
      if (log) log(n.error().message + " (they stay mapped from the file)");
      break;
    }
    held += *n;
  }
  return held;
}

uint64_t release_units_memory(const model::Model& m, int64_t first, int64_t last) {
  // The units' tensors as runs of the file (a unit's tensors lie next to each other, with at most
  // the file's alignment between them), so that stretches across two of them go back too.
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // [begin, end) in the file
  for (const auto* t : mapped_unit_tensors(m, first, last)) {
    runs.emplace_back(m.file().data_offset() + t->offset, m.file().data_offset() + t->offset + t->n_bytes);
  }
  std::sort(runs.begin(), runs.end());
  uint64_t released = 0;
  for (size_t i = 0; i < runs.size();) {
    uint64_t end = runs[i].second;
    size_t j = i + 1;
    for (; j < runs.size() && runs[j].first <= end + m.file().alignment(); ++j) end = std::max(end, runs[j].second);
    released += m.file().release_memory(runs[i].first, end - runs[i].first);
    i = j;
  }
  return released;
}

Expected<void> write_file_atomic(const std::string& path, const uint8_t* bytes, uint64_t n_bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create", tmp);
  uint64_t done = 0;
  while (done < n_bytes) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n_bytes - done, 64u << 20));
    const ssize_t w = ::write(fd, bytes + done, chunk);
    if (w <= 0) {
      Error e = io_error("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return e;
    }
    done += static_cast<uint64_t>(w);
  }
  if (::close(fd) != 0) {
    Error e = io_error("cannot write", tmp);
    ::unlink(tmp.c_str());
    return e;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = io_error("cannot rename into", path);
    ::unlink(tmp.c_str());
    return e;
  }
  return {};
}

}  // namespace ll::runtime
