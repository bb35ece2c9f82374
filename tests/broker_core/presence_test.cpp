#include "broker/core/presence.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

namespace ma {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

json::object content_of(const std::string& frame) {
  return json::parse(frame).as_object().at("message_content").as_object();
}

TEST(Presence, FewUsersAtOnceManyInOneBatch) {
  presence_changes p;
  const auto t0 = std::chrono::steady_clock::time_point(1h);
  EXPECT_TRUE(p.add("a", true, presence_changes::immediate_up_to, t0));
  EXPECT_FALSE(p.due());
  auto c = content_of(p.take_frame({"a"}));
  EXPECT_EQ(c.at("joined").as_array(), (json::array{"a"}));
  EXPECT_FALSE(c.contains("left"));
  EXPECT_TRUE(p.empty());

  EXPECT_FALSE(p.add("b", true, presence_changes::immediate_up_to + 1, t0));
  EXPECT_FALSE(p.add("c", false, presence_changes::immediate_up_to + 1, t0 + 50ms));
  ASSERT_TRUE(p.due());
  EXPECT_EQ(*p.due(), t0 + presence_changes::batch_interval) << "the first change of a batch sets its time";
  c = content_of(p.take_frame({"a", "b"}));
  EXPECT_EQ(c.at("joined").as_array(), (json::array{"b"}));
  EXPECT_EQ(c.at("left").as_array(), (json::array{"c"}));
  EXPECT_EQ(c.at("user_count").as_int64(), 2);
  EXPECT_FALSE(p.due());
}

TEST(Presence, PastTheListLimitOnlyTheCount) {
  presence_changes p;
  std::vector<std::string> names;
  for (std::size_t i = 0; i <= presence_changes::max_listed; ++i) names.push_back("u" + std::to_string(i));
  std::vector<std::string_view> online(names.begin(), names.end());
  p.add("u0", true, online.size(), {});
  auto c = content_of(p.take_frame(online));
  EXPECT_FALSE(c.contains("user_list"));
  EXPECT_EQ(c.at("user_count").as_int64(), static_cast<std::int64_t>(online.size()));
}

}  // namespace
}  // namespace ma
