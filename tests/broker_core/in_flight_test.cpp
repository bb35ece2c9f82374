#include "broker/core/in_flight.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

delivery of(const std::string& uuid, const std::string& sender, int mark) {
  auto m = std::make_shared<accepted_message>();
  m->rec.message_uuid = uuid;
  m->rec.sender = sender;
  return delivery{m, mark, 0, 1, {}};  // the slot marks which delivery it is
}

TEST(InFlight, AnAcknowledgementTakesTheDeliveryItNames) {
  in_flight_set s;
  s.add(of("u1", "alice", 1));
  s.add(of("u2", "alice", 2));
  EXPECT_EQ(s.size(), 2u);
  auto d = s.take("u2", "");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->slot, 2);
  EXPECT_FALSE(s.take("u2", ""));  // once
  EXPECT_FALSE(s.take("nope", ""));
  EXPECT_EQ(s.size(), 1u);
}

TEST(InFlight, TwoSendersWithTheSameUuidAreToldApartBySender) {
  in_flight_set s;
  s.add(of("same", "alice", 1));
  s.add(of("same", "bob", 2));
  s.add(of("same", "carol", 3));
  auto b = s.take("same", "bob");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->slot, 2);
  EXPECT_FALSE(s.take("same", "bob"));
  auto any = s.take("same", "");  // without a sender: the oldest
  ASSERT_TRUE(any);
  EXPECT_EQ(any->slot, 1);
  auto c = s.take("same", "carol");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->slot, 3);
  EXPECT_EQ(s.size(), 0u);
}

TEST(InFlight, ByIdForTimeoutsAndDrainedInTheOrderSent) {
  in_flight_set s;
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(s.add(of("u" + std::to_string(i), "alice", i)));
  ASSERT_TRUE(s.take(ids[10]));
  EXPECT_FALSE(s.take(ids[10]));
  EXPECT_FALSE(s.take("u10", ""));  // gone from both indexes
  auto rest = s.drain();
  ASSERT_EQ(rest.size(), 49u);
  for (std::size_t i = 1; i < rest.size(); ++i) EXPECT_LT(rest[i - 1].slot, rest[i].slot);
  EXPECT_EQ(s.size(), 0u);
  EXPECT_FALSE(s.take("u11", ""));
}

}  // namespace
}  // namespace ma
