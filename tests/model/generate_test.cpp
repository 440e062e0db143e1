#include "model/generate.h"

#include <gtest/gtest.h>

namespace ll::model {

TEST(TextStreamer, HoldsBackPossibleStopStringsAndCutsAtThem) {
  TextStreamer s({"END", "xy"});
  bool stopped = false;
  std::string shown = s.push("hello E", stopped);
  EXPECT_FALSE(stopped);
  EXPECT_EQ(shown, "hello ");  // "E" may start "END"
  shown = s.push("N", stopped);
  EXPECT_EQ(shown, "");
  shown = s.push("Dafter", stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(shown, "");
  EXPECT_EQ(s.text(), "hello ");
  EXPECT_EQ(s.flush(), "");
}

TEST(TextStreamer, ReleasesHeldTextThatDidNotStop) {
  TextStreamer s({"END"});
  bool stopped = false;
  EXPECT_EQ(s.push("abc EN", stopped), "abc ");
  EXPECT_EQ(s.push("Z", stopped), "ENZ");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(s.push("tail E", stopped), "tail ");
  EXPECT_EQ(s.flush(), "E");
  EXPECT_EQ(s.text(), "abc ENZtail E");
}

TEST(TextStreamer, HoldsIncompleteUtf8) {
  TextStreamer s({});
  bool stopped = false;
  EXPECT_EQ(s.push("a\xE2\x96", stopped), "a");
  EXPECT_EQ(s.push("\x81", stopped), "\xE2\x96\x81");
  EXPECT_EQ(s.push("\xF0\x9F", stopped), "");
  EXPECT_EQ(s.flush(), "\xF0\x9F");
}

TEST(TextStreamer, EmptyStopStringIsIgnored) {
  TextStreamer s({""});
  bool stopped = false;
  EXPECT_EQ(s.push("abc", stopped), "abc");
  EXPECT_FALSE(stopped);
}

TEST(TextStreamer, StopStringSpanningPieces) {
  TextStreamer s({"\n\n"});
  bool stopped = false;
  EXPECT_EQ(s.push("line\n", stopped), "line");
  EXPECT_EQ(s.push("\nmore", stopped), "");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(s.text(), "line");
}

}  // namespace ll::model
