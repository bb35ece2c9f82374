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

TEST(Utf8, ErasingTheLastCharacterTakesAllOfItsBytes) {
  std::string s = "caf\xc3\xa9";
  erase_last_utf8_char(s);
  EXPECT_EQ(s, "caf");
  s = "\xf0\x9f\x98\x80!";
  erase_last_utf8_char(s);
  EXPECT_EQ(s, "\xf0\x9f\x98\x80");
  erase_last_utf8_char(s);
  EXPECT_EQ(s, "");
  erase_last_utf8_char(s);
  EXPECT_EQ(s, "");
}

}  // namespace
}  // namespace ma
