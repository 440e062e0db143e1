// Local child processes: start, read their stdout line by line, stop them; and the process's own
// SIGINT/SIGTERM handling. Used to start local workers (`lingua worker --listen tcp://127.0.0.1:0`)
// and learn the address they bound from the first line they print.
//
// How a child is started (ChildProcess::spawn, fork + execve):
//   - argv[0] without a '/' is looked up in the parent's PATH before forking; with one it is used as is.
//   - environment: the parent's, with extra_env added (an existing name is overridden).
//   - stdin is /dev/null; stdout is a pipe read through read_line() (or inherited when
//     capture_stdout is false); stderr is inherited, so workers' logs land where ours do.
//   - every other descriptor is closed on exec (our pipes are O_CLOEXEC; close_range(CLOEXEC) in the
//     child catches descriptors that libraries opened without it, so a dead coordinator's listening
//     sockets are not kept alive by its workers).
//   - signal dispositions are reset to the default and the signal mask emptied.
//   - new_process_group: the child leads its own process group, so terminate() reaches the helpers
//     it starts too, and a terminal's Ctrl-C reaches only us, who then stop the workers in order.
//     Helpers that outlive a child which exited on its own are not tracked.
//   - kill_with_parent: PR_SET_PDEATHSIG(SIGTERM), so workers do not outlive a coordinator that
//     crashed or was SIGKILLed (checked against getppid() afterwards, for a parent that died before).
//     Linux sends it when the *thread* that spawned the child exits: spawn from a thread that lives
//     as long as the child should (the main thread).
//   - between fork and execve the child makes only async-signal-safe calls (the parent is
//     multi-threaded); everything it needs is prepared before fork. A failure there (execve's ENOENT,
//     EACCES, ...) is sent back through a close-on-exec pipe, so spawn() returns it as an Error
//     instead of the child exiting mysteriously with 127.
//
// read_line() must be called often enough that the child never blocks writing a full pipe (64 KiB):
// workers print a line or two on stdout and log to stderr.
//
// Exit statuses are reaped by this class only (waitpid on the child's pid, never on -1). If the
// application sets SIGCHLD to SIG_IGN the kernel reaps children itself and statuses are lost: don't.
//
// A ChildProcess is used by one thread at a time. TerminationSignals may be read from any thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ll::runtime {

using Millis = std::chrono::milliseconds;

struct SpawnOptions {
  std::vector<std::string> argv{};                               // argv[0] is the program
  std::vector<std::pair<std::string, std::string>> extra_env{};  // (name, value), added or overriding
  bool capture_stdout = true;     // false: the child writes to our stdout, read_line() is an error
  bool kill_with_parent = true;   // PR_SET_PDEATHSIG(SIGTERM)
  bool new_process_group = true;  // setpgid(0, 0); terminate() signals the whole group
};

// How a child ended: exited with `code`, or was killed by `signal` (then code is 0).
struct ExitStatus {
  int code = 0;
  int signal = 0;

  bool success() const { return signal == 0 && code == 0; }
  bool operator==(const ExitStatus&) const = default;
  // "exited with status 3", "killed by signal 15 (SIGTERM)"
  std::string describe() const;
};

class ChildProcess {
 public:
  static Expected<ChildProcess> spawn(const SpawnOptions& options);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;  // terminates the child it replaces
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Terminates a child still running (grace k_destructor_grace), reaps it, closes the pipe.
  ~ChildProcess();

  static constexpr Millis k_destructor_grace{250};
  static constexpr size_t k_max_line_bytes = 1 << 20;  // a longer line is returned in pieces
  static constexpr Millis k_exit_check_interval{25};   // read_line notices an exit this fast

  // The next line the child wrote to stdout, without its '\n' (a last line without one is returned
  // too). nullopt when none arrived within `timeout` (0: only what is already there), or when a
  // SIGINT/SIGTERM arrived meanwhile (TerminationSignals::requested(); other signals are retried).
  // An error when the child has closed its stdout and there are no lines left, or exited: the
  // message gives its exit status. ErrorCode::invalid_argument without capture_stdout.
  Expected<std::optional<std::string>> read_line(Millis timeout);

  // Non-blocking: has the child not exited yet? Reaps it when it has.
  bool running();
  // Non-blocking: how it ended, once it has (nullopt while running).
  std::optional<ExitStatus> exit_status();

  // SIGTERM (to the process group with new_process_group), up to `grace` for it to exit, then
  // SIGKILL; reaps the child and returns how it ended. Returns at once if it already has.
  Expected<ExitStatus> terminate(Millis grace);

  // -1 in a moved-from object (whose read_line() and terminate() are ErrorCode::invalid_argument)
  pid_t pid() const { return pid_; }
  // "child 1234 (/usr/bin/lingua)", for messages
  std::string describe() const;

 private:
  ChildProcess() = default;
  void release();             // terminate if running, close fds
  void try_reap(bool block);  // waitpid; records status_ / reaped_
  std::optional<ExitStatus> wait_until(std::chrono::steady_clock::time_point deadline);
  void signal_child(int signo) const;
  Error exited_error() const;

  pid_t pid_ = -1;
  bool own_group_ = false;
  bool reaped_ = false;  // waitpid has returned for it (or cannot: ECHILD)
  std::optional<ExitStatus> status_;
  int stdout_fd_ = -1;  // read end of the stdout pipe, O_NONBLOCK | O_CLOEXEC
  bool stdout_eof_ = false;
  std::string stdout_buf_;  // bytes read but not yet returned as lines
  std::string program_;
};

// The absolute path of the running executable (readlink /proc/self/exe), e.g. to start workers
// from the same binary. Where that cannot be had (no /proc/self/exe link target, or the binary was
// replaced or removed on disk since it started: Linux then appends " (deleted)"), it returns
// "/proc/self/exe" itself, which execve() in a child of ours still resolves to our binary.
std::string self_executable_path();

// SIGINT and SIGTERM set a flag instead of killing the process, so the main loop can shut down in
// order (stop workers, flush, exit). Handlers are installed without SA_RESTART: a blocking call
// (poll, read, sleep) in the thread that receives the signal returns EINTR, and the caller checks
// requested(). A second signal while one is pending restores the default action and re-raises it,
// so a hung shutdown is still one more Ctrl-C away from ending.
class TerminationSignals {
 public:
  static void install();       // idempotent
  static bool requested();     // a SIGINT/SIGTERM arrived since install() or clear()
  static int signal_number();  // which one (0 if none)
  static void clear();         // forget it (after handling it, or between tests)
};

}  // namespace ll::runtime
