#include "runtime/model_source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

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

Expected<MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Error e = io_error("cannot stat", path);
    ::close(fd);
    return e;
  }
  MappedFile f;
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ > 0) {
    void* p = ::mmap(nullptr, static_cast<size_t>(f.size_), PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      Error e = io_error("cannot map", path);
      ::close(fd);
      return e;
    }
    f.data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return f;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
}

void drop_resident_pages(const void* data, uint64_t n_bytes) {
  const long page_size = ::sysconf(_SC_PAGESIZE);
  const uintptr_t page = static_cast<uintptr_t>(page_size > 0 ? page_size : 4096);
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + n_bytes) / page * page;
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
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
