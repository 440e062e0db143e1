#include "runtime/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string_view>
#include <thread>

#if __has_include(<linux/close_range.h>)
#include <linux/close_range.h>
#endif

extern char** environ;  // NOLINT: POSIX

namespace ll::runtime {

namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int e) {
  return std::strerror(e);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// A pipe whose both ends are O_CLOEXEC and >= 3, so that setting up fds 0 and 1 in the child can
// never clobber one of them, whatever the parent had closed.
Expected<std::pair<int, int>> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    const int e = errno;
    return make_error(ErrorCode::resource, "cannot create a pipe: " + errno_text(e));
  }
  for (int& fd : fds) {
    if (fd >= 3) continue;
    const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    const int e = errno;
    ::close(fd);
    fd = moved;
    if (moved < 0) {
      for (int& other : fds) close_fd(other);
      return make_error(ErrorCode::resource, "cannot create a pipe: " + errno_text(e));
    }
  }
  return std::pair{fds[0], fds[1]};
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// execvp's search, done in the parent (execvp is not async-signal-safe).
Expected<std::string> resolve_program(const std::string& name) {
  if (name.empty()) return make_error(ErrorCode::invalid_argument, "spawn: argv[0] is empty");
  if (name.find('/') != std::string::npos) return name;
  const char* path_env = ::getenv("PATH");
  const std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    const std::string dir = end > start ? path.substr(start, end - start) : ".";
    const std::string candidate = dir + "/" + name;
    if (is_executable_file(candidate)) return candidate;
    start = end + 1;
  }
  return make_error(ErrorCode::not_found, "spawn " + name + ": not found in PATH");
}

// The parent's environment with `extra` added; a name in `extra` replaces the inherited entry.
std::vector<std::string> build_environment(const std::vector<std::pair<std::string, std::string>>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    const bool overridden =
        std::any_of(extra.begin(), extra.end(), [&](const auto& kv) { return kv.first == name; });
    if (!overridden) env.emplace_back(entry);
  }
  for (const auto& [name, value] : extra) env.push_back(name + "=" + value);
  return env;
}

ExitStatus decode_wait_status(int status) {
  if (WIFSIGNALED(status)) return ExitStatus{0, WTERMSIG(status)};
  return ExitStatus{WEXITSTATUS(status), 0};
}

const char* signal_name(int signo) {
  switch (signo) {
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGILL:
      return "SIGILL";
    case SIGTRAP:
      return "SIGTRAP";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGKILL:
      return "SIGKILL";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGALRM:
      return "SIGALRM";
    case SIGTERM:
      return "SIGTERM";
    case SIGXCPU:
      return "SIGXCPU";
    case SIGSYS:
      return "SIGSYS";
    default:
      return nullptr;
  }
}

// What the child reports through the error pipe when a step before (or of) execve fails.
enum class ChildStep : int { stdout_pipe = 1, stdin_null, process_group, parent_death_signal, exec };

struct ChildFailure {
  int step = 0;
  int error = 0;
};

const char* child_step_text(int step) {
  switch (static_cast<ChildStep>(step)) {
    case ChildStep::stdout_pipe:
      return "cannot redirect stdout";
    case ChildStep::stdin_null:
      return "cannot open /dev/null as stdin";
    case ChildStep::process_group:
      return "cannot create a process group";
    case ChildStep::parent_death_signal:
      return "cannot set the parent-death signal";
    case ChildStep::exec:
      return "cannot execute";
  }
  return "failed";
}

// Between fork and execve: async-signal-safe calls only, no allocation, no locks.
[[noreturn]] void run_child(const char* program, char* const* argv, char* const* envp, int stdout_fd,
                            int error_fd, bool kill_with_parent, pid_t parent_pid, bool new_group) {
  const auto fail = [error_fd](ChildStep step) {
    const ChildFailure f{static_cast<int>(step), errno};
    ssize_t n;
    do {
      n = ::write(error_fd, &f, sizeof f);  // <= PIPE_BUF: atomic
    } while (n < 0 && errno == EINTR);
    ::_exit(127);
  };

  // Dispositions back to default (ignored ones would survive execve), then, just before exec, an
  // empty mask (the parent blocked everything around fork so no handler of its runs here).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);  // fails harmlessly for KILL/STOP

  if (stdout_fd >= 0 && ::dup2(stdout_fd, STDOUT_FILENO) < 0) fail(ChildStep::stdout_pipe);
  const int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd < 0) fail(ChildStep::stdin_null);
  if (null_fd != STDIN_FILENO) {
    if (::dup2(null_fd, STDIN_FILENO) < 0) fail(ChildStep::stdin_null);
    ::close(null_fd);
  }
  if (new_group && ::setpgid(0, 0) != 0) fail(ChildStep::process_group);
  if (kill_with_parent) {
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) fail(ChildStep::parent_death_signal);
    if (::getppid() != parent_pid) ::_exit(128 + SIGTERM);  // the parent died before prctl
  }
#if defined(SYS_close_range) && defined(CLOSE_RANGE_CLOEXEC)
  ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);  // best effort (ENOSYS before Linux 5.11)
#endif
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(program, argv, envp);
  fail(ChildStep::exec);
  ::_exit(127);  // not reached
}

// --- termination signals ---

std::atomic<std::sig_atomic_t> g_termination_signal{0};
static_assert(std::atomic<std::sig_atomic_t>::is_always_lock_free, "must be usable in a signal handler");

extern "C" void on_termination_signal(int signo) {
  const int saved_errno = errno;
  std::sig_atomic_t expected = 0;
  if (!g_termination_signal.compare_exchange_strong(expected, signo)) {
    // Second signal: the orderly shutdown is not wanted any more, or hangs.
    ::signal(signo, SIG_DFL);
    ::raise(signo);
  }
  errno = saved_errno;
}

}  // namespace

std::string ExitStatus::describe() const {
  if (signal == 0) return "exited with status " + std::to_string(code);
  std::string s = "killed by signal " + std::to_string(signal);
  if (const char* name = signal_name(signal)) s += std::string(" (") + name + ")";
  return s;
}

Expected<ChildProcess> ChildProcess::spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return make_error(ErrorCode::invalid_argument, "spawn: argv is empty");
  LL_ASSIGN_OR_RETURN(const std::string program, resolve_program(options.argv[0]));

  // Everything the child touches is built here, before fork.
  std::vector<std::string> env = build_environment(options.extra_env);
  std::vector<char*> argv_ptrs;
  for (const std::string& a : options.argv) argv_ptrs.push_back(const_cast<char*>(a.c_str()));
  argv_ptrs.push_back(nullptr);
  std::vector<char*> env_ptrs;
  for (std::string& e : env) env_ptrs.push_back(e.data());
  env_ptrs.push_back(nullptr);

  ChildProcess child;
  child.program_ = program;
  child.own_group_ = options.new_process_group;
  int stdout_write = -1;
  if (options.capture_stdout) {
    LL_ASSIGN_OR_RETURN(auto out_pipe, make_pipe());
    child.stdout_fd_ = out_pipe.first;
    stdout_write = out_pipe.second;
    // Our end only: read() after poll() must never block (see read_line's drain after an exit).
    if (::fcntl(child.stdout_fd_, F_SETFL, ::fcntl(child.stdout_fd_, F_GETFL) | O_NONBLOCK) != 0) {
      const int e = errno;
      close_fd(stdout_write);
      return make_error(ErrorCode::resource,
                        "spawn: cannot make the stdout pipe non-blocking: " + errno_text(e));
    }
  }
  auto error_pipe = make_pipe();
  if (!error_pipe) {
    close_fd(stdout_write);
    return error_pipe.error();
  }
  auto [error_read, error_write] = *error_pipe;

  sigset_t all, saved;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  const pid_t parent_pid = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    run_child(program.c_str(), argv_ptrs.data(), env_ptrs.data(), stdout_write, error_write,
              options.kill_with_parent, parent_pid, options.new_process_group);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  close_fd(stdout_write);
  close_fd(error_write);
  if (pid < 0) {
    close_fd(error_read);
    return make_error(ErrorCode::resource, "spawn " + program + ": fork failed: " + errno_text(fork_errno));
  }
  child.pid_ = pid;

  // EOF: execve succeeded (the pipe closed on exec). A record: the step that failed and its errno.
  ChildFailure failure;
  size_t got = 0;
  while (got < sizeof failure) {
    const ssize_t n = ::read(error_read, reinterpret_cast<char*>(&failure) + got, sizeof failure - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close_fd(error_read);
  if (got == sizeof failure) {
    child.try_reap(/*block=*/true);  // it _exit()s right after writing
    const ErrorCode code = failure.error == ENOENT                              ? ErrorCode::not_found
                           : failure.error == ENOMEM || failure.error == EAGAIN ? ErrorCode::resource
                                                                                : ErrorCode::io;
    return make_error(
        code, "spawn " + program + ": " + child_step_text(failure.step) + ": " + errno_text(failure.error));
  }
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      own_group_(other.own_group_),
      reaped_(other.reaped_),
      status_(other.status_),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      stdout_eof_(other.stdout_eof_),
      stdout_buf_(std::move(other.stdout_buf_)),
      program_(std::move(other.program_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this == &other) return *this;
  release();
  pid_ = std::exchange(other.pid_, -1);
  own_group_ = other.own_group_;
  reaped_ = other.reaped_;
  status_ = other.status_;
  stdout_fd_ = std::exchange(other.stdout_fd_, -1);
  stdout_eof_ = other.stdout_eof_;
  stdout_buf_ = std::move(other.stdout_buf_);
  program_ = std::move(other.program_);
  return *this;
}

ChildProcess::~ChildProcess() {
  release();
}

void ChildProcess::release() {
  if (pid_ > 0 && !reaped_) (void)terminate(k_destructor_grace);
  close_fd(stdout_fd_);
  pid_ = -1;
}

std::string ChildProcess::describe() const {
  return "child " + std::to_string(pid_) + " (" + program_ + ")";
}

void ChildProcess::try_reap(bool block) {
  if (pid_ <= 0 || reaped_) return;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = decode_wait_status(status);
      return;
    }
    if (r == 0) return;  // still running
    if (errno == EINTR) continue;
    reaped_ = true;  // ECHILD: reaped by someone else (SIGCHLD ignored?); the status is lost
    return;
  }
}

std::optional<ExitStatus> ChildProcess::wait_until(Clock::time_point deadline) {
  auto step = std::chrono::microseconds(200);
  for (;;) {
    try_reap(/*block=*/false);
    if (reaped_) return status_;
    const auto now = Clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min<Clock::duration>(step, deadline - now));
    step = std::min(step * 2, std::chrono::microseconds(20000));
  }
}

bool ChildProcess::running() {
  try_reap(/*block=*/false);
  return pid_ > 0 && !reaped_;
}

std::optional<ExitStatus> ChildProcess::exit_status() {
  try_reap(/*block=*/false);
  return status_;
}

void ChildProcess::signal_child(int signo) const {
  // The group id is the child's pid, which stays ours until we reap it.
  if (own_group_ && ::kill(-pid_, signo) == 0) return;
  ::kill(pid_, signo);
}

Error ChildProcess::exited_error() const {
  if (status_) return make_error(ErrorCode::io, describe() + " " + status_->describe());
  return make_error(ErrorCode::io, describe() + " exited (status unknown: reaped elsewhere)");
}

Expected<ExitStatus> ChildProcess::terminate(Millis grace) {
  if (pid_ <= 0) return make_error(ErrorCode::invalid_argument, "terminate: no child process");
  try_reap(/*block=*/false);
  if (!reaped_) {
    signal_child(SIGTERM);
    if (!wait_until(Clock::now() + grace) && !reaped_) {
      signal_child(SIGKILL);
      try_reap(/*block=*/true);
    }
  }
  if (!status_) return exited_error();
  return *status_;
}

Expected<std::optional<std::string>> ChildProcess::read_line(Millis timeout) {
  if (pid_ <= 0) return make_error(ErrorCode::invalid_argument, "read_line: no child process");
  if (stdout_fd_ < 0 && !stdout_eof_) {
    return make_error(ErrorCode::invalid_argument,
                      "read_line: " + describe() + " was spawned without capture_stdout");
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (const size_t nl = stdout_buf_.find('\n'); nl != std::string::npos) {
      std::string line = stdout_buf_.substr(0, nl);
      stdout_buf_.erase(0, nl + 1);
      return std::optional(std::move(line));
    }
    if (stdout_buf_.size() >= k_max_line_bytes) {
      std::string piece = stdout_buf_.substr(0, k_max_line_bytes);
      stdout_buf_.erase(0, k_max_line_bytes);
      return std::optional(std::move(piece));
    }
    if (stdout_eof_) {
      if (!stdout_buf_.empty()) return std::optional(std::exchange(stdout_buf_, {}));
      // The pipe closes as the child exits, a moment before it can be reaped.
      wait_until(std::max(deadline, Clock::now() + Millis(50)));
      if (reaped_) return exited_error();
      return make_error(ErrorCode::io, describe() + " closed its stdout (still running)");
    }

    // Waits in slices, so that the child's exit is noticed even when no EOF comes (a helper it
    // started holds the pipe open). pidfd_open would avoid the wake-ups but is missing from the
    // older kernels of many phones.
    const auto left = std::chrono::ceil<Millis>(deadline - Clock::now());
    const Millis::rep slice = std::clamp<Millis::rep>(left.count(), 0, k_exit_check_interval.count());
    // SIGINT / SIGTERM are blocked from the check of the flag until ppoll waits (which unblocks
    // them atomically): one that comes in between interrupts the wait instead of going unnoticed.
    sigset_t termination, old_mask;
    ::sigemptyset(&termination);
    ::sigaddset(&termination, SIGINT);
    ::sigaddset(&termination, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &termination, &old_mask);
    if (TerminationSignals::requested()) {
      ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
      return std::optional<std::string>();
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    const timespec wait{static_cast<time_t>(slice / 1000), static_cast<long>((slice % 1000) * 1000000)};
    const int r = ::ppoll(&p, 1, &wait, &old_mask);
    const int poll_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    errno = poll_errno;
    if (r < 0) {
      if (errno == EINTR) {
        if (TerminationSignals::requested()) return std::optional<std::string>();
        continue;
      }
      const int e = errno;
      return make_error(ErrorCode::io, "read_line: poll on " + describe() + " stdout: " + errno_text(e));
    }
    const bool exited_meanwhile = r == 0 && !running();
    if (r == 0 && !exited_meanwhile) {
      if (Clock::now() >= deadline) return std::optional<std::string>();  // timeout
      continue;
    }
    // Readable; or nothing came in time but the child has exited, perhaps after poll returned and
    // while a helper it started keeps the pipe open: all it wrote is in the pipe now, so drain that
    // without waiting, then report the exit.
    char chunk[65536];
    const ssize_t n = ::read(stdout_fd_, chunk, sizeof chunk);
    if (exited_meanwhile && n < 0 && errno == EAGAIN) {
      if (!stdout_buf_.empty()) return std::optional(std::exchange(stdout_buf_, {}));
      return exited_error();
    }
    if (n > 0) {
      stdout_buf_.append(chunk, static_cast<size_t>(n));
    } else if (n == 0) {
      stdout_eof_ = true;
      close_fd(stdout_fd_);
    } else if (errno != EAGAIN && errno != EINTR) {
      const int e = errno;
      return make_error(ErrorCode::io, "read_line: reading " + describe() + " stdout: " + errno_text(e));
    }
  }
}

std::string self_executable_path() {
  constexpr const char* k_self = "/proc/self/exe";
  std::string buf(4096, '\0');
  const ssize_t n = ::readlink(k_self, buf.data(), buf.size());
  if (n <= 0 || static_cast<size_t>(n) >= buf.size()) return k_self;
  buf.resize(static_cast<size_t>(n));
  struct stat st {};
  if (::stat(buf.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return k_self;  // e.g. "... (deleted)"
  return buf;
}

void TerminationSignals::install() {
  struct sigaction sa {};
  sa.sa_handler = on_termination_signal;
  ::sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

bool TerminationSignals::requested() {
  return g_termination_signal.load() != 0;
}

int TerminationSignals::signal_number() {
  return g_termination_signal.load();
}

void TerminationSignals::clear() {
  g_termination_signal.store(0);
}

}  // namespace ll::runtime
