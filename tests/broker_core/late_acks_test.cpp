#include "broker/core/late_acks.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

TEST(LateAcks, RemembersTheRecentOnesByRecipientAndForgetsTheOldest) {
  late_acks l(3);
  l.remember("bob", "m1");
  l.remember("bob", "m2");
  l.remember("carol", "m1");
  EXPECT_TRUE(l.may_be_late("bob", "m1"));
  EXPECT_TRUE(l.may_be_late("carol", "m1"));
  EXPECT_FALSE(l.may_be_late("carol", "m2")) << "by recipient";
  EXPECT_FALSE(l.may_be_late("bob", "m9"));
  l.remember("bob", "m2");  // again: no second entry
  EXPECT_EQ(l.size(), 3u);
  l.remember("dave", "m3");
  EXPECT_EQ(l.size(), 3u);
  EXPECT_FALSE(l.may_be_late("bob", "m1")) << "the oldest goes first";
  EXPECT_TRUE(l.may_be_late("dave", "m3"));
}

}  // namespace
}  // namespace ma
