// Issue 6, item 3 through the CLI: `lingua keygen`, workers that accept only the coordinators they
// were given, an origin that checks each worker's public key from the cluster file, and plain TCP only
// with --insecure on both sides. Every run here is bounded by --connect-timeout or a short -n.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "e2e/cli_util.h"
#include "net/security.h"
#include "runtime/process.h"

namespace {

using ll::test::last_line;
using ll::test::run_command;
using ll::test::shell_quote;

const std::string k_bin = LL_LINGUA_BIN;

std::string temp_dir() {
  const std::string d = ::testing::TempDir() + "/ll_secure_e2e_" + std::to_string(::getpid());
  std::filesystem::create_directories(d);
  return d;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// `lingua keygen -o BASE`; returns the public key it printed.
std::string keygen(const std::string& base) {
  std::filesystem::remove(base + ".key");
  std::filesystem::remove(base + ".pub");
  std::string out;
  EXPECT_EQ(run_command(k_bin + " keygen -o " + shell_quote(base) + " 2>/dev/null", out), 0) << out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A `lingua worker` on a free loopback port; its endpoint once it listens.
struct WorkerProcess {
  ll::runtime::ChildProcess child;
  std::string endpoint;
};

std::optional<WorkerProcess> start_worker(std::vector<std::string> extra) {
  ll::runtime::SpawnOptions so;
  so.argv = {k_bin, "worker", "--listen", "tcp://127.0.0.1:0", "-q"};
  so.argv.insert(so.argv.end(), extra.begin(), extra.end());
  auto child = ll::runtime::ChildProcess::spawn(so);
  if (!child) {
    ADD_FAILURE() << child.error().message;
    return std::nullopt;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    auto line = child->read_line(std::chrono::milliseconds(500));
    if (!line) break;  // exited
    if (*line && (*line)->find("listening on ") != std::string::npos) {
      const std::string& l = **line;
      return WorkerProcess{std::move(*child), l.substr(l.find("listening on ") + 13)};
    }
  }
  ADD_FAILURE() << "worker did not start";
  return std::nullopt;
}

TEST(SecureCli, KeygenWritesAPrivateKeyPairAndNeverOverwrites) {
  const std::string base = temp_dir() + "/kg";
  const std::string pub = keygen(base);
  ASSERT_EQ(pub.size(), 40u);
  struct stat st {};
  ASSERT_EQ(::stat((base + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(read_file(base + ".pub"), pub + "\n");
  const std::string key = read_file(base + ".key");
  EXPECT_NE(key.find("public-key = " + pub), std::string::npos) << key;
  EXPECT_NE(key.find("secret-key = "), std::string::npos);
  std::string out;
  EXPECT_NE(run_command(k_bin + " keygen -o " + shell_quote(base) + " 2>&1", out), 0);
  EXPECT_NE(out.find("already exists"), std::string::npos) << out;
  EXPECT_EQ(read_file(base + ".key"), key);
}

TEST(SecureCli, WorkerIsSecureByDefault) {
  std::string out;
  EXPECT_NE(run_command(k_bin + " worker --listen tcp://127.0.0.1:0 2>&1 </dev/null", out), 0);
  EXPECT_NE(out.find("--insecure"), std::string::npos) << out;
  EXPECT_NE(out.find("--key"), std::string::npos) << out;
  // A key but nobody to accept.
  const std::string base = temp_dir() + "/lonely";
  keygen(base);
  EXPECT_NE(run_command(k_bin + " worker --listen tcp://127.0.0.1:0 --key " + shell_quote(base + ".key") + " 2>&1",
                        out),
            0);
  EXPECT_NE(out.find("--authorized-keys"), std::string::npos) << out;
  // A bad --allow key.
  EXPECT_NE(run_command(k_bin + " worker --listen tcp://127.0.0.1:0 --key " + shell_quote(base + ".key") +
                            " --allow nope 2>&1",
                        out),
            0);
  EXPECT_NE(out.find("--allow: a CURVE key is 40 Z85 characters"), std::string::npos) << out;
  // A secret key others may read.
  ::chmod((base + ".key").c_str(), 0644);
  EXPECT_NE(run_command(k_bin + " worker --listen tcp://127.0.0.1:0 --key " + shell_quote(base + ".key") +
                            " --allow=" + shell_quote(read_file(base + ".pub").substr(0, 40)) + " 2>&1",
                        out),
            0);
  EXPECT_NE(out.find("chmod 600"), std::string::npos) << out;
  // Keys and --insecure contradict each other.
  EXPECT_NE(run_command(k_bin + " worker --insecure --key " + shell_quote(base + ".key") + " 2>&1", out), 0);
}

// Z85 has '[' and ']': a key that begins and ends with them is still one key of 40 characters (CLI11
// would otherwise read it as a bracketed list and cut it to 38).
TEST(SecureCli, AnAllowedKeyInBracketsIsTakenAsItIs) {
  const std::string dir = temp_dir();
  keygen(dir + "/bw");
  auto w = start_worker({"--name", "bw", "--key", dir + "/bw.key", "--allow=[bcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM]",
                         "--allow=[bcdefghijklmnopq]rstuvwxyzABCDEFGHIJKLM"});
  EXPECT_TRUE(w.has_value()) << "a worker with a bracketed --allow key did not start";
}

TEST(SecureCli, ClusterFileWithKeysRunsAndAWrongKeyIsRefused) {
  const std::string model = ll::test::shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(model);
  const std::string dir = temp_dir();
  const std::string origin_pub = keygen(dir + "/origin");
  const std::string w1_pub = keygen(dir + "/w1");
  const std::string w2_pub = keygen(dir + "/w2");
  ASSERT_EQ(origin_pub.size(), 40u);
  // Worker 1 reads the origin's key from an authorized-keys file (its .pub), worker 2 from --allow.
  auto w1 = start_worker({"--name", "w1", "--key", dir + "/w1.key", "--authorized-keys", dir + "/origin.pub"});
  auto w2 = start_worker({"--name", "w2", "--key", dir + "/w2.key", "--allow=" + origin_pub});
  ASSERT_TRUE(w1 && w2);
  auto cluster_file = [&](const std::string& path, const std::string& key1, const std::string& key2) {
    std::ofstream f(path);
    f << "[[device]]\nname = \"w1\"\naddress = \"" << w1->endpoint << "\"\npublic_key = \"" << key1 << "\"\n"
      << "[[device]]\nname = \"w2\"\naddress = \"" << w2->endpoint << "\"\npublic_key = \"" << key2 << "\"\n";
  };
  const std::string good = dir + "/good.toml";
  cluster_file(good, w1_pub, w2_pub);
  const std::string run = k_bin + " run -m " + shell_quote(model) + " -p 'Once upon a time' -n 12 --temp 0 --json";
  std::string out, local_out;
  ASSERT_EQ(run_command(run + " --cluster " + shell_quote(good) + " --key " + shell_quote(dir + "/origin.key") +
                            " --connect-timeout 10 2>&1",
                        out),
            0)
      << out;
  // The same tokens as a --local run (ephemeral keys).
  ASSERT_EQ(run_command(run + " --local 2 2>&1", local_out), 0) << local_out;
  EXPECT_EQ(nlohmann::json::parse(last_line(out))["tokens"], nlohmann::json::parse(last_line(local_out))["tokens"]);

  // The cluster file names another key for w2: the origin refuses it, naming the device.
  const std::string wrong = dir + "/wrong.toml";
  cluster_file(wrong, w1_pub, keygen(dir + "/other"));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(run_command(run + " --cluster " + shell_quote(wrong) + " --key " + shell_quote(dir + "/origin.key") +
                            " --connect-timeout 8 2>&1",
                        out),
            0);
  EXPECT_NE(out.find("device \"w2\": could not authenticate worker at " + w2->endpoint), std::string::npos) << out;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));

  // An origin the workers do not know is refused by them.
  keygen(dir + "/stranger");
  EXPECT_NE(run_command(run + " --cluster " + shell_quote(good) + " --key " + shell_quote(dir + "/stranger.key") +
                            " --connect-timeout 8 2>&1",
                        out),
            0);
  EXPECT_NE(out.find("refused our public key"), std::string::npos) << out;

  // Without a key, --cluster asks for one; --insecure cannot reach CURVE workers either.
  EXPECT_NE(run_command(run + " --cluster " + shell_quote(good) + " 2>&1", out), 0);
  EXPECT_NE(out.find("--key ORIGIN.key"), std::string::npos) << out;
  EXPECT_NE(run_command(run + " --cluster " + shell_quote(good) + " --insecure --connect-timeout 1 2>&1", out), 0);
  // A secure run needs every device's public key.
  const std::string keyless = dir + "/keyless.toml";
  {
    std::ofstream f(keyless);
    f << "[[device]]\nname = \"w1\"\naddress = \"" << w1->endpoint << "\"\n";
  }
  EXPECT_NE(run_command(run + " --cluster " + shell_quote(keyless) + " --key " + shell_quote(dir + "/origin.key") +
                            " 2>&1",
                        out),
            0);
  EXPECT_NE(out.find("device \"w1\" has no public_key"), std::string::npos) << out;
  (void)w1->child.terminate(std::chrono::milliseconds(2000));
  (void)w2->child.terminate(std::chrono::milliseconds(2000));
}

TEST(SecureCli, AnOriginKeyThatBeginsWithADashIsAKeyNotAnOption) {
  const std::string model = ll::test::shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(model);
  // About one key in 85 begins with '-' (Z85 digit 63): find one.
  ll::net::CurveKeyPair origin;
  for (int i = 0; i < 5000 && (origin.public_key.empty() || origin.public_key[0] != '-'); ++i) {
    auto k = ll::net::generate_curve_keypair();
    ASSERT_TRUE(k.has_value());
    origin = *k;
  }
  ASSERT_EQ(origin.public_key[0], '-');
  const std::string dir = temp_dir();
  std::filesystem::remove(dir + "/dash.key");
  std::filesystem::remove(dir + "/dash.pub");
  ASSERT_TRUE(ll::net::write_key_files(dir + "/dash", origin).has_value());
  const std::string w_pub = keygen(dir + "/dw");
  auto w = start_worker({"--name", "dw", "--key", dir + "/dw.key", "--allow=" + origin.public_key});
  ASSERT_TRUE(w);
  const std::string cluster = dir + "/dash.toml";
  {
    std::ofstream f(cluster);
    f << "[[device]]\nname = \"dw\"\naddress = \"" << w->endpoint << "\"\npublic_key = \"" << w_pub << "\"\n";
  }
  std::string out;
  EXPECT_EQ(run_command(k_bin + " run -m " + shell_quote(model) + " -p hi -n 4 --cluster " + shell_quote(cluster) +
                            " --key " + shell_quote(dir + "/dash.key") + " --connect-timeout 10 2>&1",
                        out),
            0)
      << out;
  (void)w->child.terminate(std::chrono::milliseconds(2000));
}

TEST(SecureCli, PlainTcpNeedsInsecureOnBothSides) {
  const std::string model = ll::test::shared_path("models/stories260K.gguf");
  LL_REQUIRE_SHARED(model);
  const std::string dir = temp_dir();
  auto w = start_worker({"--name", "plain", "--insecure"});
  ASSERT_TRUE(w);
  const std::string cluster = dir + "/plain.toml";
  {
    std::ofstream f(cluster);
    f << "[[device]]\nname = \"plain\"\naddress = \"" << w->endpoint << "\"\n";
  }
  const std::string run = k_bin + " run -m " + shell_quote(model) + " -p 'Once upon a time' -n 6 --temp 0 --json";
  std::string out;
  EXPECT_EQ(run_command(run + " --cluster " + shell_quote(cluster) + " --insecure 2>&1", out), 0) << out;
  // A secure origin cannot use a plain worker: the CURVE handshake fails.
  const std::string origin_pub = keygen(dir + "/o");
  {
    std::ofstream f(cluster);
    f << "[[device]]\nname = \"plain\"\naddress = \"" << w->endpoint << "\"\npublic_key = \"" << origin_pub
      << "\"\n";
  }
  EXPECT_NE(run_command(run + " --cluster " + shell_quote(cluster) + " --key " + shell_quote(dir + "/o.key") +
                            " --connect-timeout 3 2>&1",
                        out),
            0);
  EXPECT_NE(out.find("plain"), std::string::npos) << out;
  // --local --insecure: plain workers started with --insecure.
  EXPECT_EQ(run_command(run + " --local 2 --insecure 2>&1", out), 0) << out;
  (void)w->child.terminate(std::chrono::milliseconds(2000));
}

}  // namespace
