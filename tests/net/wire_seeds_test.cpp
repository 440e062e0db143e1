// The fuzz seeds (fuzz/make_wire_seeds.sh) are written by a shell script straight from the layout in
// docs/wire-protocol.md, independently of the C++ encoder: every seed must decode, and re-encode to
// the same bytes. This keeps the script, the document and the code in agreement.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "net/protocol.h"

namespace ll::net {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(WireSeeds, EverySeedDecodesAndReencodes) {
  const fs::path script = fs::path(LL_SOURCE_DIR) / "fuzz" / "make_wire_seeds.sh";
  if (!fs::exists(script) || std::system("command -v bash >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no bash or script";
  const fs::path dir = fs::temp_directory_path() / ("ll-wire-seeds-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string cmd = "bash '" + script.string() + "' '" + dir.string() + "' >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  std::set<MessageType> seen;
  int n_frames = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".frame") continue;
    ++n_frames;
    SCOPED_TRACE(entry.path().filename().string());
    const std::vector<uint8_t> bytes = read_file(entry.path());
    auto env = decode(bytes, Limits{});
    ASSERT_TRUE(env) << env.error().message;
    seen.insert(message_type(env->message));
    const Frame again = encode(env->message, env->request_id);
    EXPECT_TRUE(std::equal(again.bytes().begin(), again.bytes().end(), bytes.begin(), bytes.end()));
    fs::path payload = entry.path();
    payload.replace_extension(".payload");
    const std::vector<uint8_t> p = read_file(payload);
    EXPECT_TRUE(std::equal(again.payload().begin(), again.payload().end(), p.begin(), p.end()));
  }
  EXPECT_GE(n_frames, static_cast<int>(k_message_types.size()));
  EXPECT_EQ(seen.size(), k_message_types.size()) << "a message type has no seed";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ll::net
