#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ll {

namespace {

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Error errno_error(const std::string& path, const char* doing, int e) {
  std::string msg = path;
  msg.append(": ").append(doing).append(": ").append(std::strerror(e));
  return make_error(ErrorCode::io, std::move(msg));
}

}  // namespace

Expected<std::string> read_small_file(const std::string& path, size_t max_bytes, std::string_view what,
                                      bool private_only) {
  const Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return errno_error(path, "cannot open", errno);
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return make_error(ErrorCode::io, path + ": not a regular file");
  }
  if (private_only && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    std::string msg = path;
    msg.append(": permissions ").append(mode).append(" let others read this file; make it private with: chmod 600 ");
    msg.append(path);
    return make_error(ErrorCode::invalid_argument, std::move(msg));
  }
  std::string text;
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::read(f.fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(path, "cannot read", errno);
    if (n == 0) return text;
    text.append(chunk, static_cast<size_t>(n));
    if (text.size() > max_bytes) {
      std::string msg = path;
      msg.append(": larger than ").append(std::to_string(max_bytes)).append(" bytes: not ").append(what);
      return make_error(ErrorCode::parse, std::move(msg));
    }
  }
}

}  // namespace ll
