#include "core/encode.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include "core/request.hpp"

namespace ma {
namespace {

TEST(Encode, JsonStringEscapes) {
  std::string out;
  append_json_string(out, "a\"b\\c\nd\x01\xc3\xa9");
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\"");
  EXPECT_EQ(boost::json::parse(out).as_string(), "a\"b\\c\nd\x01\xc3\xa9");
}

// The escape reads eight bytes at a time: every byte that needs escaping, at every position
// of strings of every length up to 40, comes out as Boost.JSON writes it.
TEST(Encode, JsonStringEscapesAnyByteAtAnyPositionAsBoostJsonDoes) {
  std::string specials = "\"\\\x7f ";
  for (int c = 0; c < 0x20; ++c) specials += static_cast<char>(c);
  for (std::size_t len = 1; len <= 40; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      for (char c : specials) {
        std::string s(len, 'x');
        s[at] = c;
        if (at + 3 < len) s[at + 3] = '"';  // a second one in the same word, sometimes
        std::string out = "prefix";
        append_json_string(out, s);
        ASSERT_EQ(out, "prefix" + boost::json::serialize(boost::json::string(s))) << len << " " << at << " " << int(c);
      }
    }
  }
  std::string out;
  append_json_string(out, "caf\xc3\xa9 \xe2\x82\xac and more than eight");  // UTF-8 stays as it is
  EXPECT_EQ(out, "\"caf\xc3\xa9 \xe2\x82\xac and more than eight\"");
}

// Sixteen bytes at a time, eight in shorter strings, the last ones overlapping: every byte value
// at every position of strings up to 48 bytes, alone or with a second special byte after it.
TEST(Encode, APlainRunEndsAtTheFirstByteThatNeedsEscapingOrAtAByteBeyondAscii) {
  auto special = [](unsigned char c, bool ascii) { return c < 0x20 || c == '"' || c == '\\' || (ascii && c >= 0x80); };
  for (std::size_t len = 1; len <= 48; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      for (int c = 0; c < 256; ++c) {
        std::string s(len, 'x');
        s[at] = static_cast<char>(c);
        if (at + 5 < len) s[at + 5] = '"';
        const auto u = static_cast<unsigned char>(c);
        const std::size_t later = at + 5 < len ? at + 5 : len;
        ASSERT_EQ(plain_json_run(s, true), special(u, true) ? at : later) << len << " " << at << " " << c;
        ASSERT_EQ(plain_json_run(s), special(u, false) ? at : later) << len << " " << at << " " << c;
      }
    }
    EXPECT_EQ(plain_json_run(std::string(len, 'x')), len);
  }
  EXPECT_EQ(plain_json_run(""), 0u);
}

TEST(Encode, EveryAgentKindSurvivesEncodeThenDecode) {
  request_decoder d(4096);
  boost::json::object content;
  content["sender_username"] = "alice";
  content["receiver_username"] = "bob";
  content["receiver_usernames"] = boost::json::array{"bob", "carol"};
  content["group_name"] = "ops";
  content["group_members"] = boost::json::array{"bob"};
  content["message_text"] = "hello\n";
  content["message_uuid"] = "u-1";
  for (kind k : all_kinds) {
    if (!is_agent_request(k)) continue;
    const std::string f = make_frame(k, content);
    ASSERT_EQ(f.back(), '\n');
    auto r = d.decode(std::string_view(f).substr(0, f.size() - 1));
    ASSERT_TRUE(r.ok()) << to_string(k) << ": " << r.error().text;
    EXPECT_EQ(r->k, k);
  }
}

}  // namespace
}  // namespace ma
