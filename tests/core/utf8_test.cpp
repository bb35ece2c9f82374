#include "core/utf8.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

TEST(Utf8, FindsTheFirstByteThatIsNotUtf8) {
  EXPECT_FALSE(first_invalid_utf8("plain ascii"));
  EXPECT_FALSE(first_invalid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_EQ(first_invalid_utf8("caf\xc3"), 3u);           // cut short: the case of the issue
  EXPECT_EQ(first_invalid_utf8("a\xc3(b"), 1u);            // no continuation byte
  EXPECT_EQ(first_invalid_utf8("\xc0\xaf"), 0u);           // overlong
  EXPECT_EQ(first_invalid_utf8("x\xed\xa0\x80"), 1u);      // a surrogate
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);   // past U+10FFFF
  EXPECT_EQ(first_invalid_utf8("ok\xff"), 2u);
}

TEST(Utf8, APrefixNeverEndsInsideACharacter) {
  const std::string s = "ab\xe2\x82\xac";  // ab€
  EXPECT_EQ(utf8_prefix(s, 10), s);
  EXPECT_EQ(utf8_prefix(s, 5), s);
  EXPECT_EQ(utf8_prefix(s, 4), "ab");
  EXPECT_EQ(utf8_prefix(s, 3), "ab");
  EXPECT_EQ(utf8_prefix(s, 2), "ab");
  EXPECT_EQ(utf8_prefix(s, 0), "");
}

TEST(Utf8, LogTextEscapesControlAndInvalidBytes) {
  EXPECT_EQ(escape_for_log("plain text", 100), "plain text");
  EXPECT_EQ(escape_for_log(std::string("a\0b\x07\r\n\x1b[2J", 10), 100), "a\\x00b\\x07\\x0d\\x0a\\x1b[2J");
  EXPECT_EQ(escape_for_log("caf\xc3\xa9", 100), "caf\xc3\xa9") << "whole characters pass";
  EXPECT_EQ(escape_for_log("\xff\xc3", 100), "\\xff\\xc3") << "invalid and cut bytes are escaped";
  EXPECT_EQ(escape_for_log("abcdef", 3), "abc...");
  EXPECT_EQ(escape_for_log("\x7f", 10), "\\x7f");
}

}  // namespace
}  // namespace ma
