#include "runtime/process.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace ll::runtime {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

ChildProcess spawn_sh(const std::string& script, SpawnOptions options = {}) {
  options.argv = {"/bin/sh", "-c", script};
  auto child = ChildProcess::spawn(options);
  EXPECT_TRUE(child) << child.error().message;
  if (!child) std::abort();
  return std::move(child).value();
}

std::string read_one(ChildProcess& child) {
  auto line = child.read_line(2s);
  EXPECT_TRUE(line) << line.error().message;
  if (!line || !*line) return "<none>";
  return **line;
}

// Alive and not a zombie (an orphan's zombie may linger if no one reaps it).
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  const size_t paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] != 'Z';
}

bool dies_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (alive(pid)) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

TEST(ChildProcess, ReadsReadyLineThenTerminates) {
  ChildProcess child = spawn_sh("echo ready; sleep 30");
  EXPECT_GT(child.pid(), 0);
  EXPECT_EQ(read_one(child), "ready");
  EXPECT_TRUE(child.running());
  EXPECT_EQ(child.exit_status(), std::nullopt);

  const auto t0 = Clock::now();
  auto status = child.terminate(2s);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_LT(Clock::now() - t0, 1s);  // SIGTERM works: no waiting for the grace
  EXPECT_EQ(status->signal, SIGTERM);
  EXPECT_EQ(status->describe(), "killed by signal 15 (SIGTERM)");
  EXPECT_FALSE(child.running());
  EXPECT_EQ(child.exit_status(), *status);
  auto again = child.terminate(2s);  // already reaped: same answer, no signal
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *status);
}

TEST(ChildProcess, TerminateEscalatesToSigkillAfterGrace) {
  ChildProcess child = spawn_sh("trap '' TERM; echo ready; sleep 30");
  EXPECT_EQ(read_one(child), "ready");
  const auto t0 = Clock::now();
  auto status = child.terminate(100ms);
  const auto elapsed = Clock::now() - t0;
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_EQ(status->signal, SIGKILL);
  EXPECT_GE(elapsed, 100ms);
  EXPECT_LT(elapsed, 1s);
}

TEST(ChildProcess, ExitStatusReportedByReadLine) {
  ChildProcess child = spawn_sh("echo one; printf two; exit 3");
  EXPECT_EQ(read_one(child), "one");
  EXPECT_EQ(read_one(child), "two");  // a last line without '\n'
  auto line = child.read_line(2s);
  ASSERT_FALSE(line);
  EXPECT_EQ(line.error().code, ErrorCode::io);
  EXPECT_NE(line.error().message.find("exited with status 3"), std::string::npos) << line.error().message;
  EXPECT_NE(line.error().message.find("/bin/sh"), std::string::npos) << line.error().message;
  EXPECT_EQ(child.exit_status(), (ExitStatus{3, 0}));
  auto status = child.terminate(1s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 3);
  EXPECT_FALSE(child.read_line(0ms));  // stays an error
}

TEST(ChildProcess, ExitWithoutOutputIsAnErrorNotATimeout) {
  ChildProcess child = spawn_sh("exit 0");
  const auto t0 = Clock::now();
  auto line = child.read_line(5s);
  ASSERT_FALSE(line);
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_NE(line.error().message.find("exited with status 0"), std::string::npos) << line.error().message;
}

// The shell exits while the helper it started keeps the stdout pipe open: no EOF comes, but
// read_line still reports the exit once the lines are drained.
TEST(ChildProcess, ExitReportedWhileAHelperHoldsStdout) {
  ChildProcess child = spawn_sh("sleep 30 & echo $!; printf bye; exit 4");
  const pid_t helper = std::stoi(read_one(child));
  EXPECT_EQ(read_one(child), "bye");
  auto line = child.read_line(2s);
  ASSERT_FALSE(line);
  EXPECT_NE(line.error().message.find("exited with status 4"), std::string::npos) << line.error().message;
  EXPECT_TRUE(alive(helper));  // helpers outliving the child are not ours to stop
  ::kill(helper, SIGKILL);
  EXPECT_TRUE(dies_within(helper, 1s));
}

TEST(ChildProcess, ReadLineTimeoutReturnsNullopt) {
  ChildProcess child = spawn_sh("exec sleep 30");
  auto now = child.read_line(0ms);
  ASSERT_TRUE(now) << now.error().message;
  EXPECT_EQ(*now, std::nullopt);
  const auto t0 = Clock::now();
  auto line = child.read_line(50ms);
  const auto elapsed = Clock::now() - t0;
  ASSERT_TRUE(line) << line.error().message;
  EXPECT_EQ(*line, std::nullopt);
  EXPECT_GE(elapsed, 50ms);
  EXPECT_LT(elapsed, 1s);
  EXPECT_TRUE(child.running());
}

TEST(ChildProcess, SeveralLinesInOneWriteAndLongLines) {
  ChildProcess child = spawn_sh("printf 'a\\nb\\n\\nc\\n'; head -c 1500000 /dev/zero | tr '\\0' x; echo");
  EXPECT_EQ(read_one(child), "a");
  EXPECT_EQ(read_one(child), "b");
  EXPECT_EQ(read_one(child), "");
  EXPECT_EQ(read_one(child), "c");
  const std::string first = read_one(child);
  const std::string rest = read_one(child);
  EXPECT_EQ(first.size(), ChildProcess::k_max_line_bytes);
  EXPECT_EQ(first.size() + rest.size(), 1500000u);
  EXPECT_EQ(first.find_first_not_of('x'), std::string::npos);
}

TEST(ChildProcess, MissingProgramFailsSpawn) {
  auto by_path = ChildProcess::spawn({.argv = {"/nonexistent/lingua-no-such-program", "x"}});
  ASSERT_FALSE(by_path);
  EXPECT_EQ(by_path.error().code, ErrorCode::not_found);
  EXPECT_NE(by_path.error().message.find("/nonexistent/lingua-no-such-program"), std::string::npos);
  EXPECT_NE(by_path.error().message.find("cannot execute: No such file or directory"), std::string::npos)
      << by_path.error().message;

  auto by_name = ChildProcess::spawn({.argv = {"lingua-no-such-program"}});
  ASSERT_FALSE(by_name);
  EXPECT_EQ(by_name.error().code, ErrorCode::not_found);
  EXPECT_NE(by_name.error().message.find("lingua-no-such-program: not found in PATH"), std::string::npos)
      << by_name.error().message;

  auto empty = ChildProcess::spawn({});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::invalid_argument);
}

TEST(ChildProcess, NonExecutableFileFailsSpawn) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("ll_not_executable_" + std::to_string(::getpid()))).string();
  std::ofstream(path) << "#!/bin/sh\necho hi\n";
  std::filesystem::permissions(path,
                               std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto child = ChildProcess::spawn({.argv = {path}});
  std::filesystem::remove(path);
  ASSERT_FALSE(child);
  EXPECT_EQ(child.error().code, ErrorCode::io);
  EXPECT_NE(child.error().message.find("Permission denied"), std::string::npos) << child.error().message;
}

TEST(ChildProcess, PathLookup) {
  auto child = ChildProcess::spawn({.argv = {"sh", "-c", "echo found"}});
  ASSERT_TRUE(child) << child.error().message;
  EXPECT_EQ(read_one(*child), "found");
}

TEST(ChildProcess, DestructorKillsChild) {
  pid_t pid = -1;
  const auto t0 = Clock::now();
  {
    ChildProcess child = spawn_sh("echo ready; sleep 30");
    pid = child.pid();
    EXPECT_EQ(read_one(child), "ready");
  }
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_FALSE(alive(pid));
  EXPECT_NE(::kill(pid, 0), 0);  // reaped, not a zombie of ours
}

TEST(ChildProcess, TerminateReachesTheWholeProcessGroup) {
  ChildProcess child = spawn_sh("sleep 30 & echo $!; wait");
  const pid_t grandchild = std::stoi(read_one(child));
  EXPECT_TRUE(alive(grandchild));
  ASSERT_TRUE(child.terminate(1s));
  EXPECT_TRUE(dies_within(grandchild, 1s));

  // Without its own group only the shell gets the signal, and its helper lives on.
  ChildProcess shared = spawn_sh("sleep 30 & echo $!; wait", {.new_process_group = false});
  const pid_t helper = std::stoi(read_one(shared));
  auto status = shared.terminate(1s);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_EQ(status->signal, SIGTERM);
  EXPECT_TRUE(alive(helper));
  ::kill(helper, SIGKILL);
  EXPECT_TRUE(dies_within(helper, 1s));
}

TEST(ChildProcess, MovesTransferOwnership) {
  ChildProcess a = spawn_sh("echo a; sleep 30");
  const pid_t pid_a = a.pid();
  ChildProcess b = std::move(a);
  EXPECT_EQ(a.pid(), -1);  // NOLINT(bugprone-use-after-move)
  EXPECT_FALSE(a.read_line(0ms));
  EXPECT_FALSE(a.terminate(0ms));
  EXPECT_EQ(b.pid(), pid_a);
  EXPECT_EQ(read_one(b), "a");

  ChildProcess c = spawn_sh("echo c; sleep 30");
  const pid_t pid_c = c.pid();
  b = std::move(c);  // terminates and reaps child a
  EXPECT_FALSE(alive(pid_a));
  EXPECT_EQ(b.pid(), pid_c);
  EXPECT_EQ(read_one(b), "c");
}

TEST(ChildProcess, EnvironmentAndStdin) {
  ::setenv("LL_PROCESS_TEST_INHERITED", "inherited", 1);
  ChildProcess child = spawn_sh(
      "echo \"$LL_PROCESS_TEST_INHERITED\"; echo \"$LL_PROCESS_TEST_EXTRA\"; echo \"$HOME\"; cat; echo eof",
      {.extra_env = {{"LL_PROCESS_TEST_EXTRA", "hello world"}, {"HOME", "/override"}}});
  ::unsetenv("LL_PROCESS_TEST_INHERITED");
  EXPECT_EQ(read_one(child), "inherited");
  EXPECT_EQ(read_one(child), "hello world");
  EXPECT_EQ(read_one(child), "/override");
  EXPECT_EQ(read_one(child), "eof");  // stdin is /dev/null: cat ends at once
}

TEST(ChildProcess, WithoutCaptureReadLineIsAnError) {
  auto child = ChildProcess::spawn({.argv = {"/bin/sh", "-c", "exit 0"}, .capture_stdout = false});
  ASSERT_TRUE(child) << child.error().message;
  auto line = child->read_line(0ms);
  ASSERT_FALSE(line);
  EXPECT_EQ(line.error().code, ErrorCode::invalid_argument);
  auto status = child->terminate(1s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success() || status->signal == SIGTERM);
}

// A process that spawns a child and dies without cleaning up (as on SIGKILL): with kill_with_parent
// the child gets SIGTERM from the kernel; without it, it lives on.
pid_t spawn_from_dying_process(bool kill_with_parent) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  std::fflush(nullptr);  // or the copy of our stdio buffers may be written twice
  const pid_t mid = ::fork();
  if (mid == 0) {
    ::close(fds[0]);
    auto child = ChildProcess::spawn({.argv = {"/bin/sleep", "30"}, .kill_with_parent = kill_with_parent});
    const pid_t pid = child ? child->pid() : -1;
    (void)!::write(fds[1], &pid, sizeof pid);
    ::_exit(0);  // no destructors
  }
  ::close(fds[1]);
  pid_t pid = -1;
  if (::read(fds[0], &pid, sizeof pid) != sizeof pid) pid = -1;
  ::close(fds[0]);
  ::waitpid(mid, nullptr, 0);
  return pid;
}

TEST(ChildProcess, KillWithParent) {
  const pid_t killed = spawn_from_dying_process(true);
  ASSERT_GT(killed, 0);
  EXPECT_TRUE(dies_within(killed, 2s));

  const pid_t orphan = spawn_from_dying_process(false);
  ASSERT_GT(orphan, 0);
  std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(alive(orphan));
  ::kill(orphan, SIGKILL);
  EXPECT_TRUE(dies_within(orphan, 2s));
}

TEST(ExitStatus, Describe) {
  EXPECT_EQ((ExitStatus{3, 0}).describe(), "exited with status 3");
  EXPECT_EQ((ExitStatus{0, SIGKILL}).describe(), "killed by signal 9 (SIGKILL)");
  EXPECT_EQ((ExitStatus{0, 63}).describe(), "killed by signal 63");
  EXPECT_TRUE((ExitStatus{0, 0}).success());
  EXPECT_FALSE((ExitStatus{1, 0}).success());
}

TEST(SelfExecutablePath, NamesThisTestBinary) {
  const std::string path = self_executable_path();
  EXPECT_EQ(path.front(), '/');
  EXPECT_NE(path, "/proc/self/exe");
  EXPECT_TRUE(std::filesystem::is_regular_file(path));
  EXPECT_TRUE(std::filesystem::equivalent(path, "/proc/self/exe"));
}

TEST(SelfExecutablePath, ProcSelfExeStartsThisBinary) {
  auto child = ChildProcess::spawn(
      {.argv = {"/proc/self/exe", "--gtest_list_tests", "--gtest_filter=SelfExecutablePath.*"}});
  ASSERT_TRUE(child) << child.error().message;
  bool listed = false;
  for (int i = 0; i < 5 && !listed; ++i) listed = read_one(*child) == "SelfExecutablePath.";
  EXPECT_TRUE(listed);
}

TEST(TerminationSignals, FlagInsteadOfDeathAndEintr) {
  TerminationSignals::install();
  TerminationSignals::install();  // idempotent
  TerminationSignals::clear();
  EXPECT_FALSE(TerminationSignals::requested());
  EXPECT_EQ(TerminationSignals::signal_number(), 0);

  ::raise(SIGTERM);
  EXPECT_TRUE(TerminationSignals::requested());
  EXPECT_EQ(TerminationSignals::signal_number(), SIGTERM);
  TerminationSignals::clear();

  // A blocking read_line returns early (nullopt) when SIGINT interrupts it, or comes just before it
  // waits. The signal is repeated until one has been handled (a second one would end the process:
  // that is what a second Ctrl-C is for).
  ChildProcess child = spawn_sh("exec sleep 30");
  const pthread_t self = ::pthread_self();
  std::atomic<bool> returned{false};
  std::thread sender([self, &returned] {
    for (int i = 0; i < 20 && !returned.load(); ++i) {
      std::this_thread::sleep_for(50ms);
      if (!returned.load() && !TerminationSignals::requested()) ::pthread_kill(self, SIGINT);
    }
  });
  const auto t0 = Clock::now();
  auto line = child.read_line(5s);
  const auto elapsed = Clock::now() - t0;
  returned.store(true);
  sender.join();
  ASSERT_TRUE(line) << line.error().message;
  EXPECT_EQ(*line, std::nullopt);
  EXPECT_LT(elapsed, 2s);
  EXPECT_TRUE(TerminationSignals::requested());
  EXPECT_EQ(TerminationSignals::signal_number(), SIGINT);
  TerminationSignals::clear();
}

}  // namespace
}  // namespace ll::runtime
