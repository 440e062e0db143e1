// Locating ../shared/ (read-only models, vocabularies, expected outputs) from tests.
// Outside CI a test skips with a clear message when a file is absent; under CI=true it fails.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace ll::test {

inline std::string source_dir() {
#ifdef LL_SOURCE_DIR
  return LL_SOURCE_DIR;
#else
  return ".";
#endif
}

// Path of a file under ../shared/ (relative to the repository; the environment variable
// LL_SHARED_DIR overrides the directory), e.g. shared_path("models/stories260K.gguf").
inline std::string shared_path(const std::string& rel) {
  const char* dir = std::getenv("LL_SHARED_DIR");
  return (dir != nullptr && *dir != 0 ? std::string(dir) : source_dir() + "/../shared") + "/" + rel;
}

inline bool under_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

}  // namespace ll::test

// Use at the top of a test: skips (or fails under CI=true) if the shared file is missing.
#define LL_REQUIRE_SHARED(path_expr)                                                              \
  do {                                                                                            \
    const std::string ll_req_path_ = (path_expr);                                                 \
    if (!std::filesystem::exists(ll_req_path_)) {                                                 \
      if (::ll::test::under_ci()) FAIL() << "missing shared test file under CI: " << ll_req_path_; \
      GTEST_SKIP() << "shared test file not found (skipping): " << ll_req_path_;                  \
    }                                                                                             \
  } while (0)
