// What a session receives: send-only sessions and the receive window (log_in fields).
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

#include "storage/database.hpp"
#include "tests/support/broker_harness.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::client;
namespace json = boost::json;

class Receiving : public ::testing::Test {
 protected:
  test::temp_dir dir;
  broker_options o = test::test_options(dir);

  dead_letter letter(const std::string& uuid) {
    database db({o.database, false, false});
    auto l = db.find(uuid);
    return l.empty() ? dead_letter{} : l[0];
  }
};

void send_to(client& c, const std::string& to, const std::string& uuid) {
  c.send("send_message", {{"receiver_username", to}, {"message_text", uuid}, {"message_uuid", uuid}});
}

TEST_F(Receiving, ASendOnlySessionSitsBesideTheUsersReceivingOneAndGetsItsOwnReceipts) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port()), bob_sender(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  alice.expect("update_user_set");  // bob joined
  auto ack = bob_sender.log_in("bob", {{"send_only", true}});  // no username_taken
  EXPECT_TRUE(ack.at("send_only").as_bool());
  EXPECT_TRUE(alice.quiet_of("update_user_set", 200ms)) << "a send-only session is not presence";
  alice.send("get_user_list");
  EXPECT_EQ(json::serialize(alice.expect_content("user_list").at("user_list")), R"(["alice","bob"])");

  send_to(alice, "bob", "to-bob");
  EXPECT_EQ(bob.expect_content("receive_message").at("message_uuid").as_string(), "to-bob");
  alice.send("broadcast_message", {{"message_text", "all"}, {"message_uuid", "all-1"}});
  EXPECT_EQ(bob.expect_content("receive_message").at("message_uuid").as_string(), "all-1");
  EXPECT_TRUE(bob_sender.quiet_of("receive_message", 200ms));

  // Its own send: the receipt comes to it, not to bob's receiving session.
  send_to(bob_sender, "alice", "from-bob");
  EXPECT_EQ(bob_sender.expect_content("message_accepted").at("status").as_string(), "relayed");
  alice.expect("receive_message");
  alice.send("acknowledge_message", {{"message_uuid", "from-bob"}});
  EXPECT_EQ(bob_sender.expect_content("message_delivered").at("message_uuid").as_string(), "from-bob");
  EXPECT_TRUE(bob.quiet_of("message_delivered", 200ms));

  client carol(b.port());
  carol.log_in("carol");
  bob.expect("update_user_set");
  EXPECT_TRUE(bob_sender.quiet_of("update_user_set", 200ms));
}

// Issue item 6: one-shot commands logged in as full agents were handed the user's pending
// letters and left without reading them: five of them parked a letter its user never saw.
TEST_F(Receiving, SendOnlySessionsGetNoRedeliveriesAndUseNoAttempts) {
  o.max_delivery_attempts = 5;
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  send_to(alice, "dave", "waiting");
  EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "dead_lettered");
  for (int i = 0; i < 5; ++i) {
    client once(b.port());
    EXPECT_EQ(once.log_in("dave", {{"send_only", true}}).at("pending_dead_letters").as_int64(), 1);
    send_to(once, "alice", "hi-" + std::to_string(i));
    once.expect("message_accepted");
    EXPECT_TRUE(once.quiet_of("receive_message", 50ms));
    once.send("log_out");
    EXPECT_TRUE(once.closed_within(10s));
  }
  EXPECT_EQ(letter("waiting").attempts, 0);
  EXPECT_EQ(letter("waiting").state, dead_letter_state::pending);
  client dave(b.port());
  dave.log_in("dave");
  auto m = dave.expect_content("receive_message");
  EXPECT_EQ(m.at("message_uuid").as_string(), "waiting");
  EXPECT_EQ(m.at("attempt").as_int64(), 1);
}

TEST_F(Receiving, TheWindowBoundsWhatIsUnacknowledgedAndWhatWaitsCountsNoAttempt) {
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  {
    client carol(b.port());
    EXPECT_EQ(carol.log_in("carol", {{"receive_window", 2}}).at("receive_window").as_int64(), 2);
    for (int i = 0; i < 5; ++i) send_to(alice, "carol", "w" + std::to_string(i));
    for (int i = 0; i < 5; ++i) alice.expect("message_accepted");
    EXPECT_EQ(carol.expect_content("receive_message").at("message_uuid").as_string(), "w0");
    EXPECT_EQ(carol.expect_content("receive_message").at("message_uuid").as_string(), "w1");
    EXPECT_TRUE(carol.quiet_of("receive_message", 50ms)) << "more than the window was handed out";
    carol.send("acknowledge_message", {{"message_uuid", "w0"}});
    EXPECT_EQ(carol.expect_content("receive_message").at("message_uuid").as_string(), "w2");
    EXPECT_TRUE(carol.quiet_of("receive_message", 100ms));
  }  // gone with w1, w2 in flight and w3, w4 never handed to it
  ASSERT_TRUE(test::eventually([&] { return letter("w4").id != 0; }));
  EXPECT_EQ(letter("w1").attempts, 1);
  EXPECT_EQ(letter("w2").attempts, 1);
  EXPECT_EQ(letter("w3").attempts, 0);
  EXPECT_EQ(letter("w4").attempts, 0);

  // The backlog too comes through the window, in order.
  client carol(b.port());
  EXPECT_EQ(carol.log_in("carol", {{"receive_window", 1}}).at("pending_dead_letters").as_int64(), 4);
  for (const char* uuid : {"w1", "w2", "w3", "w4"}) {
    auto m = carol.expect_content("receive_message");
    EXPECT_EQ(m.at("message_uuid").as_string(), uuid);
    EXPECT_TRUE(carol.quiet_of("receive_message", 50ms));
    carol.send("acknowledge_message", {{"message_uuid", uuid}});
  }
}

// listen --count N: the acknowledgements and log_out go in one write; the room they make in the
// window hands nothing more to a session that is leaving.
TEST_F(Receiving, AcknowledgementsFollowedByLogOutGetNothingMoreHanded) {
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  for (int i = 0; i < 3; ++i) send_to(alice, "erin", "c" + std::to_string(i));
  for (int i = 0; i < 3; ++i) alice.expect("message_accepted");
  client erin(b.port());
  erin.log_in("erin", {{"receive_window", 1}});
  EXPECT_EQ(erin.expect_content("receive_message").at("message_uuid").as_string(), "c0");
  erin.send_raw(
      "{\"message_id\":\"acknowledge_message\",\"message_content\":{\"message_uuids\":[\"c0\"]}}\n"
      "{\"message_id\":\"log_out\",\"message_content\":{}}\n");
  EXPECT_TRUE(erin.closed_within(10s));
  EXPECT_TRUE(test::eventually([&] { return letter("c0").state == dead_letter_state::delivered; }));
  EXPECT_EQ(letter("c1").attempts, 0);
  EXPECT_EQ(letter("c2").attempts, 0);
}

// An ack timeout makes room in the window too, and what waited comes next, in order.
TEST_F(Receiving, AnAckTimeoutMakesRoomInTheWindow) {
  o.ack_timeout_ms = 300;
  test::running_broker b(o);
  client alice(b.port()), frank(b.port());
  alice.log_in("alice");
  frank.log_in("frank", {{"receive_window", 1}});
  send_to(alice, "frank", "t0");
  send_to(alice, "frank", "t1");
  EXPECT_EQ(frank.expect_content("receive_message").at("message_uuid").as_string(), "t0");
  // t0 is never acknowledged: at its timeout it goes to the Dead Letter Channel, and t1 follows.
  auto next = frank.expect_content("receive_message", 15s);
  EXPECT_EQ(next.at("message_uuid").as_string(), "t1");
  EXPECT_FALSE(next.at("redelivery").as_bool());
  EXPECT_EQ(alice.expect_content("message_dead_lettered", 15s).at("message_uuid").as_string(), "t0");
  frank.send("acknowledge_message", {{"message_uuid", "t1"}});
  EXPECT_EQ(alice.expect_content("message_delivered").at("message_uuid").as_string(), "t1");
}

}  // namespace
}  // namespace ma
