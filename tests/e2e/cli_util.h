// Running the lingua binary from tests: quoting, capturing stdout, the JSON last line.
#pragma once

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ll::test {

// The child processes of `pid` (e.g. the workers `lingua run --local N` started), as Linux lists them.
inline std::vector<int> children_of(int pid) {
  std::vector<int> out;
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  int c;
  while (f >> c) out.push_back(c);
  return out;
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

// Runs a command; returns its exit status and stdout.
inline int run_command(const std::string& cmd, std::string& out) {
  out.clear();
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  return pclose(p);
}

// The shell words that start the lingua under test: its path, behind the emulator when the tests
// were cross-compiled (e.g. "qemu-aarch64-static build-arm64/lingua"),
// since the build machine cannot execute the target's binaries by itself.
inline std::string lingua() {
#ifdef LL_LINGUA_EMULATOR
  const std::string emulator = LL_LINGUA_EMULATOR;
#else
  const std::string emulator;
#endif
  return emulator.empty() ? shell_quote(LL_LINGUA_BIN) : emulator + " " + shell_quote(LL_LINGUA_BIN);
}

inline std::string last_line(const std::string& s) {
  size_t end = s.find_last_not_of('\n');
  if (end == std::string::npos) return {};
  size_t start = s.rfind('\n', end);
  return s.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}


// llama.cpp's greedy continuations of stories260K (call after LL_REQUIRE_SHARED on the path).
inline nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

}  // namespace ll::test
