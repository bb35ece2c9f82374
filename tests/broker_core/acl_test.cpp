#include "broker/core/acl.hpp"

#include <gtest/gtest.h>

#include "core/config.hpp"

namespace ma {
namespace {

const char* example = R"(# who may do what
pattern send %u.*          # everyone may send to their own helpers
pattern group public-*

user alice
send *
broadcast
group ops

user bob
send alice
group team-%u
)";

TEST(Acl, RulesApplyToTheirUserAndPatternsToEveryone) {
  auto a = acl::parse(example, "acl");
  EXPECT_TRUE(a.may_send("alice", "anyone"));
  EXPECT_TRUE(a.may_send("bob", "alice"));
  EXPECT_FALSE(a.may_send("bob", "carol"));
  EXPECT_TRUE(a.may_send("bob", "bob.worker"));
  EXPECT_FALSE(a.may_send("bob", "alice.worker"));
  EXPECT_TRUE(a.may_send("carol", "carol.x")) << "a user without a block has the patterns";
  EXPECT_FALSE(a.may_send("carol", "alice"));
  EXPECT_TRUE(a.may_broadcast("alice"));
  EXPECT_FALSE(a.may_broadcast("bob"));
  EXPECT_TRUE(a.may_use_group("alice", "ops"));
  EXPECT_FALSE(a.may_use_group("bob", "ops"));
  EXPECT_TRUE(a.may_use_group("bob", "team-bob"));
  EXPECT_FALSE(a.may_use_group("bob", "team-alice"));
  EXPECT_TRUE(a.may_use_group("carol", "public-news"));
  EXPECT_EQ(a.users(), 2u);
}

TEST(Acl, GlobsMatchWholeNames) {
  EXPECT_TRUE(acl::matches("*", "", "u"));
  EXPECT_TRUE(acl::matches("a*c", "abbbc", "u"));
  EXPECT_FALSE(acl::matches("a*c", "abbbcd", "u"));
  EXPECT_FALSE(acl::matches("ops", "ops2", "u"));
  EXPECT_TRUE(acl::matches("*-%u-*", "x-bob-y", "bob"));
  EXPECT_FALSE(acl::matches("%u", "bo", "bob"));
}

TEST(Acl, WhatItDoesNotUnderstandIsRefusedNamingTheLine) {
  auto error_of = [](const char* text) {
    try {
      acl::parse(text, "acl");
    } catch (const config_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of("send *\n").find("line 1"), std::string::npos) << "a rule outside a block";
  EXPECT_NE(error_of("user alice\npattern send *\n").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("user alice\nsubscribe x\n").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("user bad name\n").find("line 1"), std::string::npos);
  EXPECT_NE(error_of("user alice\nbroadcast everyone\n").find("line 2"), std::string::npos);
  EXPECT_EQ(error_of("# nothing\n\n"), "");
}

}  // namespace
}  // namespace ma
