#include "broker/core/dedupe.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

using namespace std::chrono_literals;
using time_point = dedupe_table::time_point;

const time_point t0 = time_point{} + 1h;
constexpr auto window = 10min;

dedupe_table::entry& accepted(dedupe_table& d, const std::string& key, time_point at) {
  auto& e = d.remember(key, at, window);
  e.done = true;
  e.at = at;
  e.status = "relayed";
  return e;
}

TEST(Dedupe, APairIsKnownForTheWindowAndForgottenAfter) {
  dedupe_table d(1000);
  accepted(d, dedupe_table::key_of("alice", "u1"), t0);
  ASSERT_NE(d.find(dedupe_table::key_of("alice", "u1")), nullptr);
  EXPECT_EQ(d.find(dedupe_table::key_of("bob", "u1")), nullptr);  // another sender's uuid
  d.forget_old(t0 + window - 1ms, window);
  EXPECT_NE(d.find(dedupe_table::key_of("alice", "u1")), nullptr);
  d.forget_old(t0 + window, window);
  EXPECT_EQ(d.find(dedupe_table::key_of("alice", "u1")), nullptr);
  EXPECT_EQ(d.size(), 0u);
}

TEST(Dedupe, AnAcceptStillBeingCommittedIsNeverForgotten) {
  dedupe_table d(1000);
  auto& pending = d.remember("a\npending", t0, window);  // not done: its commit is under way
  accepted(d, "a\nlater", t0);
  d.forget_old(t0 + 2 * window, window);
  EXPECT_EQ(d.find("a\npending"), &pending);  // the address the commit's completion holds
  EXPECT_NE(d.find("a\nlater"), nullptr);     // behind it, so kept too
  pending.done = true;
  pending.at = t0;
  d.forget_old(t0 + 2 * window, window);
  EXPECT_EQ(d.size(), 0u);
}

TEST(Dedupe, PastTheCapTheOldestGoFirst) {
  dedupe_table d(3);
  for (int i = 0; i < 5; ++i) accepted(d, "a\n" + std::to_string(i), t0 + std::chrono::seconds(i));
  d.forget_old(t0 + 10s, window);
  EXPECT_EQ(d.size(), 2u);  // forgetting stops once below the cap
  EXPECT_EQ(d.find("a\n0"), nullptr);
  EXPECT_NE(d.find("a\n4"), nullptr);
}

TEST(Dedupe, AFailedAcceptLeavesTheUuidFreeAndIsReusedInPlace) {
  dedupe_table d(1000);
  auto& first = d.remember("a\nu", t0, window);
  first.done = first.failed = true;
  first.at = t0;
  first.status = "x";
  auto& again = d.remember("a\nu", t0 + 1s, window);
  EXPECT_EQ(&again, &first);
  EXPECT_FALSE(again.failed);
  EXPECT_TRUE(again.status.empty());
  EXPECT_EQ(d.find("a\nu"), &again);  // the map's view of the key still holds
  EXPECT_EQ(d.size(), 1u);
}

TEST(Dedupe, TheAnswerSaysDuplicateAndTheFirstStatuses) {
  dedupe_table d(10);
  auto& e = accepted(d, "a\nm", t0);
  e.many = true;
  e.status = R"([{"receiver_username":"bob","status":"relayed"}])";
  std::string frame;
  e.append_accepted(frame, "m", true, "r1");
  EXPECT_NE(frame.find(R"("duplicate":true)"), std::string::npos) << frame;
  EXPECT_NE(frame.find(R"("recipients":[{"receiver_username":"bob")"), std::string::npos) << frame;
  EXPECT_NE(frame.find(R"("request_id":"r1")"), std::string::npos) << frame;
}

}  // namespace
}  // namespace ma
