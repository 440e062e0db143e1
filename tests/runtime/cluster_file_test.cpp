#include "runtime/cluster_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace ll::runtime {
namespace {

// Parses `text` as "cluster.toml" and expects an error of `code` whose message contains each of
// `parts` (the first is normally "cluster.toml:LINE:").
void expect_error(const std::string& text, ErrorCode code, std::initializer_list<std::string_view> parts) {
  auto parsed = parse_cluster_file(text, "cluster.toml");
  ASSERT_FALSE(parsed) << text;
  EXPECT_EQ(parsed.error().code, code)
      << error_code_name(parsed.error().code) << ": " << parsed.error().message;
  for (std::string_view part : parts) {
    EXPECT_NE(parsed.error().message.find(part), std::string::npos)
        << "missing \"" << part << "\" in: " << parsed.error().message;
  }
}

TEST(ClusterFile, ValidFile) {
  const char* text = R"(# three devices, in pipeline order
[[device]]
name = "phone-a"
address = "tcp://192.0.2.10:5601"
threads = 4

[[device]]
name = "Tablet_2.local"
address = "tcp://tablet.example:65535"

[[device]]
name = "v6"
address = "tcp://[2001:db8::1]:1"
)";
  auto parsed = parse_cluster_file(text, "cluster.toml");
  ASSERT_TRUE(parsed) << parsed.error().message;
  ASSERT_EQ(parsed->devices.size(), 3u);
  EXPECT_EQ(parsed->devices[0].name, "phone-a");
  EXPECT_EQ(parsed->devices[0].address, "tcp://192.0.2.10:5601");
  EXPECT_EQ(parsed->devices[0].threads, 4);
  EXPECT_EQ(parsed->devices[1].name, "Tablet_2.local");
  EXPECT_EQ(parsed->devices[1].threads, std::nullopt);
  EXPECT_EQ(parsed->devices[2].address, "tcp://[2001:db8::1]:1");
}

TEST(ClusterFile, PublicKeys) {
  // A Z85 public key as `lingua keygen` writes it (40 characters).
  const std::string key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  auto parsed = parse_cluster_file("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\npublic_key = \"" + key +
                                       "\"\n[[device]]\nname = \"b\"\naddress = \"tcp://h:2\"\n",
                                   "cluster.toml");
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->devices[0].public_key, key);
  EXPECT_EQ(parsed->devices[1].public_key, "");  // optional here; a secure run asks for it
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\npublic_key = \"short\"\n",
               ErrorCode::invalid_argument, {"cluster.toml:4:", "device \"a\": public_key: a CURVE key is 40 Z85"});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\npublic_key = \"" + key.substr(0, 39) +
                   " \"\n",
               ErrorCode::invalid_argument, {"cluster.toml:4:", "not Z85"});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\npublic_key = 5\n", ErrorCode::parse,
               {"cluster.toml:4:", "public_key must be a string, not an integer"});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\npublickey = \"x\"\n", ErrorCode::parse,
               {"cluster.toml:4:", "unknown key \"publickey\"", "public_key"});
}

TEST(ClusterFile, SyntaxError) {
  expect_error("[[device]]\nname = \"a\"\naddress = tcp://x:1\n", ErrorCode::parse,
               {"cluster.toml:3:", "TOML syntax"});
}

TEST(ClusterFile, NoDevices) {
  expect_error("", ErrorCode::invalid_argument, {"cluster.toml", "no [[device]] entries"});
  expect_error("# nothing\n", ErrorCode::invalid_argument, {"no [[device]] entries"});
  expect_error("device = []\n", ErrorCode::invalid_argument, {"cluster.toml:1:", "no [[device]] entries"});
}

TEST(ClusterFile, WrongStructure) {
  expect_error("[device]\nname = \"a\"\naddress = \"tcp://h:1\"\n", ErrorCode::parse,
               {"cluster.toml:1:", "device is a table", "[[device]]"});
  expect_error("device = \"phone\"\n", ErrorCode::parse, {"cluster.toml:1:", "device is a string"});
  expect_error("device = [1, 2]\n", ErrorCode::parse, {"cluster.toml:1:", "device #1 is an integer"});
}

TEST(ClusterFile, UnknownKeys) {
  expect_error("title = \"x\"\n[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\n", ErrorCode::parse,
               {"cluster.toml:1:", "unknown key \"title\""});
  expect_error("[[devices]]\nname = \"a\"\n", ErrorCode::parse,
               {"cluster.toml:1:", "unknown key \"devices\""});
  expect_error("[[device]]\nname = \"a\"\nadress = \"tcp://h:1\"\n", ErrorCode::parse,
               {"cluster.toml:3:", "device #1", "unknown key \"adress\""});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\n[device.extra]\nx = 1\n", ErrorCode::parse,
               {"cluster.toml:4:", "unknown key \"extra\""});
}

TEST(ClusterFile, MissingFields) {
  expect_error("[[device]]\naddress = \"tcp://h:1\"\n", ErrorCode::parse,
               {"cluster.toml:1:", "device #1: missing name"});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\n\n[[device]]\nname = \"b\"\n",
               ErrorCode::parse, {"cluster.toml:5:", "device \"b\": missing address"});
}

TEST(ClusterFile, WrongTypes) {
  expect_error("[[device]]\nname = 7\naddress = \"tcp://h:1\"\n", ErrorCode::parse,
               {"cluster.toml:2:", "name must be a string, not an integer"});
  expect_error("[[device]]\nname = \"a\"\naddress = [\"tcp://h:1\"]\n", ErrorCode::parse,
               {"cluster.toml:3:", "device \"a\": address must be a string, not an array"});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\nthreads = \"4\"\n", ErrorCode::parse,
               {"cluster.toml:4:", "threads must be an integer, not a string"});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\nthreads = 4.0\n", ErrorCode::parse,
               {"cluster.toml:4:", "threads must be an integer, not a float"});
}

TEST(ClusterFile, ThreadsRange) {
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\nthreads = 0\n",
               ErrorCode::invalid_argument, {"cluster.toml:4:", "threads = 0 is outside 1-65536"});
  expect_error("[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\nthreads = 9999999999\n",
               ErrorCode::invalid_argument, {"cluster.toml:4:", "threads = 9999999999"});
}

TEST(ClusterFile, BadNames) {
  const auto with_name = [](const std::string& name) {
    return "[[device]]\nname = \"" + name + "\"\naddress = \"tcp://h:1\"\n";
  };
  expect_error(with_name(""), ErrorCode::invalid_argument,
               {"cluster.toml:2:", "device #1: name \"\" is empty"});
  expect_error(with_name(std::string(65, 'n')), ErrorCode::invalid_argument,
               {"cluster.toml:2:", "65 bytes long"});
  expect_error(with_name("phone a"), ErrorCode::invalid_argument, {"cluster.toml:2:", "may only contain"});
  expect_error(with_name("phone/a"), ErrorCode::invalid_argument, {"may only contain"});
  expect_error(with_name("t\\u00e9l\\u00e9phone"), ErrorCode::invalid_argument, {"may only contain"});
  auto ok = parse_cluster_file(with_name(std::string(64, 'n')), "cluster.toml");
  EXPECT_TRUE(ok) << ok.error().message;
}

TEST(ClusterFile, DuplicateNames) {
  expect_error(
      "[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\n[[device]]\nname = \"a\"\naddress = "
      "\"tcp://h:2\"\n",
      ErrorCode::invalid_argument, {"cluster.toml:5:", "name \"a\" is used twice (first at line 2)"});
}

TEST(ClusterFile, BadAddresses) {
  const auto with_address = [](const std::string& address) {
    return "[[device]]\nname = \"a\"\naddress = \"" + address + "\"\n";
  };
  const std::pair<const char*, const char*> cases[] = {
      {"", "must start with tcp://"},
      {"udp://h:1", "must start with tcp://"},
      {"192.0.2.1:5601", "must start with tcp://"},
      {"tcp://host", "has no :PORT"},
      {"tcp://:5601", "empty HOST"},
      {"tcp://h:", "PORT that is not a number"},
      {"tcp://h:65536", "PORT that is not a number"},
      {"tcp://h:123456", "PORT that is not a number"},
      {"tcp://h:-1", "PORT that is not a number"},
      {"tcp://h:+1", "PORT that is not a number"},
      {"tcp://h:1x", "PORT that is not a number"},
      {"tcp://h:0", "port 0"},
      {"tcp://2001:db8::1:5601", "IPv6 host without [brackets]"},
      {"tcp://[]:1", "malformed [IPv6]"},
      {"tcp://[2001:db8::1:1", "malformed [IPv6]"},
      {"tcp://[hostname]:1", "malformed [IPv6]"},
      {"tcp://h/x:1", "characters other than"},
      {"tcp://h x:1", "characters other than"},
      {"tcp://*:1", "characters other than"},
  };
  for (const auto& [address, why] : cases) {
    SCOPED_TRACE(address);
    expect_error(with_address(address), ErrorCode::invalid_argument,
                 {"cluster.toml:3:", "device \"a\": address", why});
  }
}

TEST(ClusterFile, DuplicateAddresses) {
  expect_error(
      "[[device]]\nname = \"a\"\naddress = \"tcp://Host:1\"\n[[device]]\nname = \"b\"\naddress = "
      "\"tcp://host:1\"\n",
      ErrorCode::invalid_argument, {"cluster.toml:6:", "device \"b\"", "is used twice (first at line 3)"});
  // Same host, other port: fine.
  auto ok = parse_cluster_file(
      "[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\n[[device]]\nname = \"b\"\naddress = "
      "\"tcp://h:2\"\n",
      "cluster.toml");
  EXPECT_TRUE(ok) << ok.error().message;
}

TEST(ClusterFile, ParseTcpEndpoint) {
  auto e = parse_tcp_endpoint("tcp://[::1]:0");
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->host, "[::1]");
  EXPECT_EQ(e->port, 0);
  e = parse_tcp_endpoint("tcp://127.0.0.1:5601");
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 5601);
}

TEST(ClusterFile, LoadFromDisk) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string path = (dir / ("ll_cluster_" + std::to_string(::getpid()) + ".toml")).string();
  std::ofstream(path) << "[[device]]\nname = \"a\"\naddress = \"tcp://h:1\"\nthreads = 2\n";
  auto loaded = load_cluster_file(path);
  ASSERT_TRUE(loaded) << loaded.error().message;
  ASSERT_EQ(loaded->devices.size(), 1u);
  EXPECT_EQ(loaded->devices[0].threads, 2);

  std::ofstream(path) << "[[device]]\nname = \"a\"\nadress = \"tcp://h:1\"\n";
  auto bad = load_cluster_file(path);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message.rfind(path + ":3:", 0), 0u) << bad.error().message;
  std::filesystem::remove(path);

  auto missing = load_cluster_file(path);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::io);
  EXPECT_NE(missing.error().message.find(path), std::string::npos);
  EXPECT_NE(missing.error().message.find("No such file or directory"), std::string::npos)
      << missing.error().message;

  auto directory = load_cluster_file(dir.string());
  ASSERT_FALSE(directory);
  EXPECT_EQ(directory.error().code, ErrorCode::io);

  {
    std::ofstream big(path);
    big << std::string(k_max_cluster_file_bytes + 1, '#');
  }
  auto too_big = load_cluster_file(path);
  std::filesystem::remove(path);
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code, ErrorCode::parse);  // readable, but no cluster file is that large
  EXPECT_NE(too_big.error().message.find("not a cluster file"), std::string::npos) << too_big.error().message;
}

}  // namespace
}  // namespace ll::runtime
