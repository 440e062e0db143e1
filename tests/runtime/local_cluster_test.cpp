#include "runtime/local_cluster.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>

#include "e2e/cli_util.h"
#include "runtime/process.h"

namespace ll::runtime {
namespace {

using namespace std::chrono_literals;

// A stand-in for `lingua worker` that never says "listening on".
std::string silent_worker_script() {
  const std::string path = ::testing::TempDir() + "/ll_silent_worker_" + std::to_string(::getpid()) + ".sh";
  std::ofstream f(path);
  f << "#!/bin/sh\nexec sleep 30\n";
  f.close();
  ::chmod(path.c_str(), 0755);
  return path;
}

// Ctrl-C while the workers start: start() stops at once with an error and takes its workers down,
// instead of waiting out its 30 s for a "listening on" line that read_line no longer reads.
TEST(LocalCluster, ASignalWhileTheWorkersStartStopsThemAndFails) {
  LocalClusterOptions o;
  o.n_workers = 2;
  o.insecure = true;
  o.lingua_binary = silent_worker_script();
  TerminationSignals::install();
  TerminationSignals::clear();
  ::raise(SIGINT);
  ASSERT_TRUE(TerminationSignals::requested());
  const auto t0 = std::chrono::steady_clock::now();
  auto cl = LocalCluster::start(o);
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  TerminationSignals::clear();
  std::signal(SIGINT, SIG_DFL);
  ASSERT_FALSE(cl.has_value()) << "started although interrupted";
  EXPECT_NE(cl.error().message.find("interrupted"), std::string::npos) << cl.error().message;
  EXPECT_LT(elapsed, 10s);
  // Both workers were spawned, and are stopped and reaped again: no child of ours is left.
  EXPECT_TRUE(ll::test::children_of(::getpid()).empty());
  std::filesystem::remove(o.lingua_binary);
}

}  // namespace
}  // namespace ll::runtime
