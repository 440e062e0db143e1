// A cluster of two architectures (cross builds only): the build machine's own lingua (x86-64) is the
// origin, and the worker is the cross-compiled lingua (arm64) run by the emulator. Hidden states
// cross between the two in both directions, and the greedy tokens must be exactly those of one
// x86-64 process — and those of llama.cpp in ../shared/expected.
//
// This test binary itself runs under the emulator; the host's lingua it starts through the shell
// runs natively (the emulator passes execve to the host kernel).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "e2e/cli_util.h"
#include "runtime/process.h"

#if defined(LL_HOST_LINGUA_BIN) && defined(LL_LINGUA_EMULATOR) && defined(LL_DIST_DIR)

namespace {

using ll::test::last_line;
using ll::test::run_command;
using ll::test::shell_quote;

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The emulator, then `lingua`: build-arm64/lingua as built.
std::vector<std::string> emulated_lingua() {
  std::vector<std::string> argv = split_words(LL_LINGUA_EMULATOR);
  argv.push_back(LL_LINGUA_BIN);
  return argv;
}

// The emulator alone (its first word, no library prefix), then
// dist/'s glibc loader with only dist/'s libraries: how dist/lingua-glibc starts it on a phone.
std::vector<std::string> emulated_dist_lingua() {
  const std::vector<std::string> emulator = split_words(LL_LINGUA_EMULATOR);
  const std::string dist = LL_DIST_DIR;
  return {emulator.at(0),  dist + "/glibc/ld-linux-aarch64.so.1", "--inhibit-cache", "--library-path",
          dist + "/glibc:" + dist, dist + "/lingua"};
}

std::string shell_words(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& w : argv) {
    if (!out.empty()) out.append(" ");
    out.append(shell_quote(w));
  }
  return out;
}

// Starts an emulated worker (argv: how to start lingua) on a free loopback port; returns its endpoint.
std::string start_emulated_worker(std::optional<ll::runtime::ChildProcess>& worker, std::vector<std::string> lingua,
                                  const std::string& name) {
  ll::runtime::SpawnOptions so;
  so.argv = std::move(lingua);
  // Plain TCP on loopback (CURVE is tested in secure_cluster_test; here the architectures must agree).
  so.argv.insert(so.argv.end(), {"worker", "--listen", "tcp://127.0.0.1:0", "--name", name, "-t", "1", "--insecure"});
  auto child = ll::runtime::ChildProcess::spawn(so);
  EXPECT_TRUE(child.has_value()) << (child ? "" : child.error().message);
  if (!child) return {};
  worker.emplace(std::move(*child));
  // Under emulation the worker takes a moment to start: allow it 60 s to print its address.
  for (int i = 0; i < 120; ++i) {
    auto line = worker->read_line(std::chrono::milliseconds(500));
    if (!line) {
      ADD_FAILURE() << "emulated worker: " << line.error().message;
      return {};
    }
    const std::string prefix = "listening on ";
    if (*line && line->value().find(prefix) != std::string::npos) {
      return line->value().substr(line->value().find(prefix) + prefix.size());
    }
  }
  ADD_FAILURE() << "the emulated worker printed no address within 60 s";
  return {};
}

TEST(MixedArchCluster, X86OriginWithEmulatedArm64WorkerMatchesOneX86Process) {
  const std::string host_lingua = LL_HOST_LINGUA_BIN;
  const std::string model = ll::test::shared_path("models/stories260K.gguf");
  const std::string expected_path = ll::test::shared_path("expected/stories260K-greedy.json");
  LL_REQUIRE_SHARED(model);
  LL_REQUIRE_SHARED(expected_path);
  if (host_lingua.empty() || !std::filesystem::exists(host_lingua)) {
    const std::string why = "no host lingua (configure the cross build with -DLL_HOST_LINGUA=build/lingua): '" +
                            host_lingua + "'";
    if (ll::test::under_ci()) FAIL() << why;
    GTEST_SKIP() << why;
  }
  const nlohmann::json cases = ll::test::load_json(expected_path);
  ASSERT_FALSE(cases.empty());

  std::optional<ll::runtime::ChildProcess> worker;
  const std::string endpoint = start_emulated_worker(worker, emulated_lingua(), "arm64-a");
  ASSERT_FALSE(endpoint.empty());
  const std::string cluster = ::testing::TempDir() + "/ll_mixed_" + std::to_string(::getpid()) + ".toml";
  {
    std::ofstream f(cluster);
    f << "[[device]]\nname = \"arm64-a\"\naddress = \"" << endpoint << "\"\n";
  }

  for (const auto& c : cases) {
    const std::string base = shell_quote(host_lingua) + " run -m " + shell_quote(model) + " -p " +
                             shell_quote(c["prompt"].get<std::string>()) + " -n " +
                             std::to_string(c["n_predict"].get<int>()) + " --temp 0 --json";
    std::string out;
    ASSERT_EQ(run_command(base, out), 0) << base << "\n" << out;
    const nlohmann::json single = nlohmann::json::parse(last_line(out));
    EXPECT_EQ(single["tokens"], c["tokens"]) << "the x86-64 process itself: " << c["prompt"];

    // --split even: the one worker runs every block and the head (hidden states x86 -> arm64, the
    // token back); --ring: the origin keeps the head (hidden states both ways).
    for (const char* mode : {"", " --ring"}) {
      const std::string cmd = base + " --cluster " + shell_quote(cluster) + " --insecure --split even --connect-timeout 60" + mode;
      ASSERT_EQ(run_command(cmd, out), 0) << cmd << "\n" << out;
      const nlohmann::json mixed = nlohmann::json::parse(last_line(out));
      EXPECT_EQ(mixed["prompt_tokens"], single["prompt_tokens"]) << cmd;
      EXPECT_EQ(mixed["tokens"], single["tokens"]) << cmd;
      EXPECT_EQ(mixed["text"], single["text"]) << cmd;
      ASSERT_EQ(mixed["devices"].size(), 2u) << out;
      EXPECT_EQ(mixed["devices"][1]["name"], "arm64-a");
      EXPECT_GE(mixed["devices"][1]["units"][1].get<int>(), 1) << "the arm64 worker ran blocks: " << out;
    }
  }
  std::filesystem::remove(cluster);
  auto st = worker->terminate(std::chrono::seconds(5));
  ASSERT_TRUE(st.has_value());
}

// dist/ is self-contained: its loader resolves every library inside dist/, `--help` runs, and a
// worker started the way docs/android.md starts it on a phone serves an x86-64 coordinator.
TEST(MixedArchCluster, DistWorkerUsesOnlyItsBundledLibraries) {
  const std::string host_lingua = LL_HOST_LINGUA_BIN;
  const std::string model = ll::test::shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(model);
  if (host_lingua.empty() || !std::filesystem::exists(host_lingua)) {
    const std::string why = "no host lingua (configure the cross build with -DLL_HOST_LINGUA=build/lingua)";
    if (ll::test::under_ci()) FAIL() << why;
    GTEST_SKIP() << why;
  }
  const std::string dist = std::filesystem::canonical(LL_DIST_DIR).string();
  std::vector<std::string> list = emulated_dist_lingua();
  list.pop_back();  // the loader lists the libraries of the binary that follows --list
  list.insert(list.end(), {"--list", dist + "/lingua"});
  std::string out;
  ASSERT_EQ(run_command(shell_words(list), out), 0) << shell_words(list) << "\n" << out;
  std::istringstream lines(out);
  int n_libraries = 0;
  for (std::string line; std::getline(lines, line);) {
    const size_t arrow = line.find("=> ");
    if (arrow == std::string::npos) continue;
    const std::string path = line.substr(arrow + 3, line.find(" (") - arrow - 3);
    EXPECT_EQ(path.rfind(dist + "/", 0), 0u) << "loaded from outside dist/: " << line;
    ++n_libraries;
  }
  EXPECT_GE(n_libraries, 10) << out;  // libzmq, libCbc, libicuuc, libcrypto, libstdc++, libc, ...

  ASSERT_EQ(run_command(shell_words(emulated_dist_lingua()) + " --help", out), 0) << out;
  EXPECT_NE(out.find("worker"), std::string::npos) << out;

  std::optional<ll::runtime::ChildProcess> worker;
  const std::string endpoint = start_emulated_worker(worker, emulated_dist_lingua(), "phone-a");
  ASSERT_FALSE(endpoint.empty());
  const std::string cluster = ::testing::TempDir() + "/ll_dist_" + std::to_string(::getpid()) + ".toml";
  {
    std::ofstream f(cluster);
    f << "[[device]]\nname = \"phone-a\"\naddress = \"" << endpoint << "\"\n";
  }
  const std::string base = shell_quote(host_lingua) + " run -m " + shell_quote(model) +
                           " -p 'Once upon a time' -n 24 --temp 0 --json";
  ASSERT_EQ(run_command(base, out), 0) << out;
  const nlohmann::json single = nlohmann::json::parse(last_line(out));
  ASSERT_EQ(run_command(base + " --cluster " + shell_quote(cluster) + " --insecure --split even --connect-timeout 60", out), 0)
      << out;
  const nlohmann::json mixed = nlohmann::json::parse(last_line(out));
  EXPECT_EQ(mixed["tokens"], single["tokens"]);
  EXPECT_EQ(mixed["devices"][1]["name"], "phone-a");
  std::filesystem::remove(cluster);
  ASSERT_TRUE(worker->terminate(std::chrono::seconds(5)).has_value());
}

}  // namespace

#endif  // LL_HOST_LINGUA_BIN && LL_LINGUA_EMULATOR && LL_DIST_DIR
