#include "broker/core/groups.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

TEST(Groups, MembersRecipientsAndTheLastToLeave) {
  group_table g;
  g.load({{"ops", {"alice", "bob"}}});
  EXPECT_TRUE(g.exists("ops"));
  EXPECT_TRUE(g.is_member("ops", "bob"));
  EXPECT_FALSE(g.is_member("ops", "carol"));
  EXPECT_FALSE(g.is_member("dev", "bob"));
  EXPECT_EQ(g.recipients("ops", "alice"), std::vector<std::string>{"bob"});

  g.create("dev", "carol", {"bob", "alice"});
  ASSERT_NE(g.members("dev"), nullptr);
  EXPECT_EQ(std::vector<std::string>(g.members("dev")->begin(), g.members("dev")->end()),
            (std::vector<std::string>{"alice", "bob", "carol"}));
  g.join("ops", "carol");
  EXPECT_TRUE(g.is_member("ops", "carol"));

  g.leave("ops", "alice");
  g.leave("ops", "bob");
  EXPECT_TRUE(g.exists("ops"));
  EXPECT_EQ(g.groups_of("carol"), 2u);
  EXPECT_EQ(g.of("carol").size(), 2u);
  EXPECT_EQ(g.of("nobody").size(), 0u);
  g.leave("ops", "carol");
  EXPECT_EQ(g.groups_of("carol"), 1u);
  EXPECT_FALSE(g.exists("ops")) << "a group whose last member leaves is gone";
  EXPECT_EQ(g.members("ops"), nullptr);
  EXPECT_TRUE(g.recipients("ops", "alice").empty());
}

}  // namespace
}  // namespace ma
