#include "runtime/split.h"

#include <gtest/gtest.h>

namespace ll::runtime {
namespace {

TEST(Split, EvenKeepsTheEmbeddingOnTheOriginAndSpreadsTheRest) {
  auto s = split_even(24, 2, false);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(format_split(*s), "0-0,1-11,12-23");  // 11 blocks each; the head with the last
  s = split_even(24, 3, true);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(format_split(*s), "0-0,1-8,9-15,16-22,23-23");
  EXPECT_EQ(s->back().device, 0);
  EXPECT_EQ((*s)[2].device, 2);
  s = split_even(7, 2, false);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(format_split(*s), "0-0,1-3,4-6");
  s = split_even(7, 6, false);  // more workers than blocks: one unit each, the head alone
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(format_split(*s), "0-0,1-1,2-2,3-3,4-4,5-5,6-6");
  auto bad = split_even(7, 7, false);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("fewer than the 7 workers"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(split_even(7, 0, false).has_value());
}

TEST(Split, MemoryFollowsEachWorkersShareOfTheWeights) {
  // Embedding 10, six blocks of 10, head 10.
  std::vector<uint64_t> bytes(8, 10);
  auto s = split_memory(bytes, {100, 200}, false);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  // 70 bytes for the workers: about 23 and 47.
  EXPECT_EQ(format_split(*s), "0-0,1-2,3-7");
  s = split_memory(bytes, {100, 100, 100}, true);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(format_split(*s), "0-0,1-2,3-4,5-6,7-7");
  // Every worker gets at least one unit, however small its share.
  s = split_memory(bytes, {1, 1000000}, false);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(format_split(*s), "0-0,1-1,2-7");
  EXPECT_FALSE(split_memory(bytes, {0, 100}, false).has_value());
}

TEST(Split, ExplicitRangesAreCheckedWithClearMessages) {
  auto s = parse_split_units("0-0,1-3,4-6", 7, 2, false);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ((*s)[1].device, 1);
  EXPECT_EQ((*s)[2].device, 2);
  s = parse_split_units("0-1,2-3,4,5-6", 7, 2, true);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(s->back().device, 0);
  EXPECT_EQ((*s)[2].first_unit, 4);
  struct Bad {
    const char* text;
    const char* says;
  };
  for (const Bad& b : {Bad{"0-0,1-3,5-6", "should start at unit 4"}, Bad{"1-3,4-5,6-6", "should start at unit 0"},
                       Bad{"0-0,1-3", "ranges, expected 3"}, Bad{"0-0,1-3,4-9", "past the model's last unit"},
                       Bad{"0-0,1-3,4-5", "the model's last unit is 6"}, Bad{"0-0,3-1,4-6", "not a list of unit ranges"},
                       Bad{"0-0,a-3,4-6", "not a list of unit ranges"}, Bad{"0-0,,4-6", "not a list of unit ranges"},
                       Bad{"0--1,1-3,4-6", "not a list of unit ranges"}, Bad{"", "not a list of unit ranges"}}) {
    auto r = parse_split_units(b.text, 7, 2, false);
    ASSERT_FALSE(r.has_value()) << b.text;
    EXPECT_NE(r.error().message.find(b.says), std::string::npos) << b.text << ": " << r.error().message;
  }
}

}  // namespace
}  // namespace ll::runtime
