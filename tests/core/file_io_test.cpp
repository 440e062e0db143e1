// read_small_file: the bounded reader of untrusted small files (keys, cluster files, profiles).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/file_io.h"

namespace ll {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/ll_file_io_" + std::to_string(::getpid()) + "_" + name;
}

TEST(ReadSmallFile, ReadsAWholeFileUpToItsLimit) {
  const std::string path = temp_path("ok");
  const std::string content(100000, 'x');  // more than one read chunk
  std::ofstream(path) << content;
  auto got = read_small_file(path, content.size(), "a test file");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(*got, content);
  std::filesystem::remove(path);
}

TEST(ReadSmallFile, RefusesWhatIsTooLargeMissingOrNotAFile) {
  const std::string path = temp_path("big");
  std::ofstream(path) << std::string(1001, 'x');
  auto big = read_small_file(path, 1000, "a test file");
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code, ErrorCode::parse);
  EXPECT_EQ(big.error().message, path + ": larger than 1000 bytes: not a test file");
  std::filesystem::remove(path);
  auto missing = read_small_file(path, 1000, "a test file");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, ErrorCode::io);
  EXPECT_NE(missing.error().message.find("cannot open"), std::string::npos) << missing.error().message;
  auto dir = read_small_file(::testing::TempDir(), 1000, "a test file");
  ASSERT_FALSE(dir.has_value());
  EXPECT_NE(dir.error().message.find("not a regular file"), std::string::npos) << dir.error().message;
}

TEST(ReadSmallFile, PrivateOnlyRefusesAFileOthersMayRead) {
  const std::string path = temp_path("key");
  std::ofstream(path) << "secret";
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto open = read_small_file(path, 100, "a key file", /*private_only=*/true);
  ASSERT_FALSE(open.has_value());
  EXPECT_NE(open.error().message.find("chmod 600"), std::string::npos) << open.error().message;
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  auto ok = read_small_file(path, 100, "a key file", /*private_only=*/true);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_EQ(*ok, "secret");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace ll
