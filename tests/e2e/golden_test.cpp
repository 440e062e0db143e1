// Golden end-to-end test: `lingua run` reproduces llama.cpp's greedy continuations of
// stories260K token for token, with 1 and with 2 threads.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/shared_files.h"
#include "e2e/cli_util.h"

using ll::test::last_line;
using ll::test::run_command;
using ll::test::shell_quote;

TEST(GoldenStories260K, GreedyMatchesLlamaCppWithOneAndTwoThreads) {
  const std::string model = ll::test::shared_path("models/stories260K.gguf");
  const std::string expected_path = ll::test::shared_path("expected/stories260K-greedy.json");
  LL_REQUIRE_SHARED(model);
  LL_REQUIRE_SHARED(expected_path);
  const nlohmann::json cases = ll::test::load_json(expected_path);
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    for (int threads : {1, 2}) {
      const std::string cmd = ll::test::lingua() + " run -m " + shell_quote(model) + " -p " +
                              shell_quote(c["prompt"].get<std::string>()) + " -n " +
                              std::to_string(c["n_predict"].get<int>()) + " --temp 0 --json -t " +
                              std::to_string(threads);
      std::string out;
      ASSERT_EQ(run_command(cmd, out), 0) << cmd << "\n" << out;
      const nlohmann::json got = nlohmann::json::parse(last_line(out));
      EXPECT_EQ(got["prompt_tokens"], c["prompt_tokens"]) << c["prompt"] << " threads " << threads;
      EXPECT_EQ(got["tokens"], c["tokens"]) << c["prompt"] << " threads " << threads;
      EXPECT_EQ(got["text"], c["text"]) << c["prompt"] << " threads " << threads;
      // The streamed text precedes the JSON line and is the same text.
      EXPECT_EQ(out.rfind(c["text"].get<std::string>() + "\n", 0), 0u) << out;
    }
  }
}

TEST(Cli, ErrorsAreClearAndNonZero) {
  std::string out;
  const std::string bin = ll::test::lingua();
  EXPECT_NE(run_command(bin + " run -m /nonexistent.gguf -p hi 2>&1", out), 0);
  EXPECT_NE(out.find("nonexistent.gguf"), std::string::npos) << out;
  const std::string bad = testing::TempDir() + "/not_a_model.gguf";
  { std::ofstream(bad) << "this is not a gguf file at all"; }
  EXPECT_NE(run_command(bin + " run -m " + bad + " -p hi 2>&1", out), 0);
  EXPECT_NE(out.find("magic"), std::string::npos) << out;
  EXPECT_EQ(run_command(bin + " run --help", out), 0);
  EXPECT_NE(out.find("--temp"), std::string::npos);
}

TEST(Cli, GenModelInspectAndRunRandomModel) {
  const std::string bin = ll::test::lingua();
  const std::string path = testing::TempDir() + "/gen_stories_q8.gguf";
  std::string out;
  ASSERT_EQ(run_command(bin + " gen-model --preset stories-260k --type q8_0 -q -o " + path + " 2>&1", out), 0) << out;
  ASSERT_EQ(run_command(bin + " inspect " + path + " --json", out), 0) << out;
  const auto j = nlohmann::json::parse(last_line(out));
  EXPECT_EQ(j["metadata"]["general.architecture"], "llama");
  EXPECT_EQ(j["units"].size(), 7u);  // embed + 5 blocks + head
  ASSERT_EQ(run_command(bin + " inspect " + path + " --tensor blk.0.attn_q.weight --json", out), 0) << out;
  const auto t = nlohmann::json::parse(last_line(out));
  EXPECT_EQ(t["type"], "Q8_0");
  EXPECT_EQ(t["first8"].size(), 8u);
  ASSERT_EQ(run_command(bin + " run -m " + path + " -p 'hello world' -n 8 --temp 0 --json", out), 0) << out;
  const auto r = nlohmann::json::parse(last_line(out));
  EXPECT_EQ(r["prompt_tokens"][0], 1);  // BOS
  EXPECT_LE(r["tokens"].size(), 8u);
  // Same seed, same file: gen-model is deterministic.
  const std::string path2 = testing::TempDir() + "/gen_stories_q8_again.gguf";
  ASSERT_EQ(run_command(bin + " gen-model --preset stories-260k --type q8_0 -q -o " + path2, out), 0);
  ASSERT_EQ(run_command("cmp " + path + " " + path2, out), 0);
}
