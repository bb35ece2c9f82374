#include "core/encode.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "core/request.hpp"

namespace ma {
namespace {

TEST(Encode, JsonStringEscapes) {
  std::string out;
  append_json_string(out, "a\"b\\c\nd\x01\xc3\xa9");
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\"");
  EXPECT_EQ(boost::json::parse(out).as_string(), "a\"b\\c\nd\x01\xc3\xa9");
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
