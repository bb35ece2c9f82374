// Relay: direct, multicast, broadcast and group messages, acknowledgements, dedupe, order.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

#include "storage/database.hpp"
#include "tests/support/broker_harness.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::client;
namespace json = boost::json;

class Relay : public ::testing::Test {
 protected:
  test::temp_dir dir;
  broker_options o = test::test_options(dir);
};

std::map<std::string, std::string> statuses(const json::object& accepted) {
  std::map<std::string, std::string> out;
  for (auto& r : accepted.at("recipients").as_array()) {
    out[std::string(r.at("receiver_username").as_string())] = std::string(r.at("status").as_string());
  }
  return out;
}

TEST_F(Relay, DirectMessageIsAcceptedReceivedAcknowledgedAndReported) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  alice.send("send_message", {{"receiver_username", "bob"},
                              {"message_text", "hello"},
                              {"payload", {{"n", 1}}},
                              {"message_uuid", "m-1"},
                              {"request_id", "r"}});
  auto accepted = alice.expect_content("message_accepted");
  EXPECT_EQ(accepted.at("message_uuid").as_string(), "m-1");
  EXPECT_EQ(accepted.at("status").as_string(), "relayed");
  EXPECT_FALSE(accepted.at("duplicate").as_bool());
  EXPECT_EQ(accepted.at("request_id").as_string(), "r");

  auto m = bob.expect_content("receive_message");
  EXPECT_EQ(m.at("message_uuid").as_string(), "m-1");
  EXPECT_EQ(m.at("sender_username").as_string(), "alice");
  EXPECT_EQ(m.at("receiver_username").as_string(), "bob");
  EXPECT_EQ(m.at("message_text").as_string(), "hello");
  EXPECT_EQ(m.at("payload").at("n").as_int64(), 1);
  EXPECT_EQ(m.at("channel").as_string(), "direct");
  EXPECT_FALSE(m.at("redelivery").as_bool());
  EXPECT_EQ(m.at("attempt").as_int64(), 1);
  EXPECT_TRUE(parse_iso8601(m.at("sent_at").as_string()));

  bob.send("acknowledge_message", {{"message_uuid", "m-1"}});
  auto delivered = alice.expect_content("message_delivered");
  EXPECT_EQ(delivered.at("message_uuid").as_string(), "m-1");
  EXPECT_EQ(delivered.at("receiver_username").as_string(), "bob");
  EXPECT_TRUE(parse_iso8601(delivered.at("delivered_at").as_string()));
}

TEST_F(Relay, BrokerMakesAUuidWhereTheSenderGaveNone) {
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  alice.send("send_message", {{"receiver_username", "alice"}, {"message_text", "note to self"}});
  auto accepted = alice.expect_content("message_accepted");
  EXPECT_EQ(accepted.at("message_uuid").as_string().size(), 36u);
  auto m = alice.expect_content("receive_message");
  EXPECT_EQ(m.at("message_uuid"), accepted.at("message_uuid"));
}

TEST_F(Relay, DuplicateUuidIsAcknowledgedAgainAndNotDeliveredTwice) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  for (int i = 0; i < 3; ++i) {
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "once"}, {"message_uuid", "dup"},
                                {"request_id", std::to_string(i)}});
  }
  for (int i = 0; i < 3; ++i) {
    auto a = alice.expect_content("message_accepted");
    EXPECT_EQ(a.at("duplicate").as_bool(), i > 0) << json::serialize(a);
    EXPECT_EQ(a.at("status").as_string(), "relayed");
  }
  bob.expect("receive_message");
  EXPECT_TRUE(bob.quiet_of("receive_message", 300ms));
  // Another sender may use the same uuid: it is another message.
  client carol(b.port());
  carol.log_in("carol");
  carol.send("send_message", {{"receiver_username", "bob"}, {"message_text", "mine"}, {"message_uuid", "dup"}});
  EXPECT_FALSE(carol.expect_content("message_accepted").at("duplicate").as_bool());
  bob.expect("receive_message");
}

// A fan-out's statuses are kept compactly in memory and as JSON in the database: the duplicate
// of a multicast gets the first statuses, from memory and after a restart alike.
TEST_F(Relay, AMulticastsDuplicateGetsItsFirstStatusesAlsoAfterARestart) {
  std::map<std::string, std::string> first;
  {
    test::running_broker b(o);
    client alice(b.port()), bob(b.port());
    alice.log_in("alice");
    bob.log_in("bob");
    for (int i = 0; i < 2; ++i) {
      alice.send("multicast_message", {{"receiver_usernames", json::array{"bob", "carol"}},
                                       {"message_text", "hi"}, {"message_uuid", "fan"}});
      auto a = alice.expect_content("message_accepted");
      EXPECT_EQ(a.at("duplicate").as_bool(), i > 0);
      if (i == 0) first = statuses(a);
      EXPECT_EQ(statuses(a), first);
    }
  }
  EXPECT_EQ(first, (std::map<std::string, std::string>{{"bob", "relayed"}, {"carol", "dead_lettered"}}));
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  alice.send("multicast_message", {{"receiver_usernames", json::array{"bob", "carol"}},
                                   {"message_text", "hi"}, {"message_uuid", "fan"}});
  auto a = alice.expect_content("message_accepted");
  EXPECT_TRUE(a.at("duplicate").as_bool());
  EXPECT_EQ(statuses(a), first);
}

TEST_F(Relay, PerPairOrderHoldsUnderPipelining) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  constexpr int n = 2000;
  std::string burst;
  for (int i = 0; i < n; ++i) {
    burst += "{\"message_id\":\"send_message\",\"message_content\":{\"receiver_username\":\"bob\",\"message_text\":\"" +
             std::to_string(i) + "\",\"message_uuid\":\"p" + std::to_string(i) + "\"}}\n";
  }
  alice.send_raw(burst);
  std::vector<std::string> acks;
  for (int i = 0; i < n; ++i) {
    auto m = bob.expect_content("receive_message");
    ASSERT_EQ(m.at("message_text").as_string(), std::to_string(i));
    acks.emplace_back(m.at("message_uuid").as_string());
    if (acks.size() == 100) {
      json::array a;
      for (auto& u : acks) a.emplace_back(u);
      bob.send("acknowledge_message", {{"message_uuids", a}});
      acks.clear();
    }
  }
  for (int i = 0; i < n; ++i) alice.expect("message_accepted");
  for (int i = 0; i < n; ++i) alice.expect("message_delivered");
  EXPECT_EQ(b.status().in_flight, 0u);
}

TEST_F(Relay, MulticastReachesOnlineAndDeadLettersOffline) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port()), carol(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  carol.log_in("carol");
  alice.send("multicast_message", {{"receiver_usernames", {"bob", "carol", "dave", "bob"}}, {"message_text", "team"}});
  auto a = alice.expect_content("message_accepted");
  EXPECT_EQ(statuses(a), (std::map<std::string, std::string>{
                             {"bob", "relayed"}, {"carol", "relayed"}, {"dave", "dead_lettered"}}));
  EXPECT_EQ(bob.expect_content("receive_message").at("channel").as_string(), "multicast");
  EXPECT_EQ(carol.expect_content("receive_message").at("receiver_username").as_string(), "carol");
  EXPECT_TRUE(bob.quiet_of("receive_message", 200ms));  // bob was named twice, gets it once
  client dave(b.port());
  EXPECT_EQ(dave.log_in("dave").at("pending_dead_letters").as_int64(), 1);
  auto m = dave.expect_content("receive_message");
  EXPECT_TRUE(m.at("redelivery").as_bool());
  EXPECT_EQ(m.at("dead_letter_reason").as_string(), "recipient_offline");
}

TEST_F(Relay, BroadcastGoesToEveryOnlineUserButTheSender) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port()), carol(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  carol.log_in("carol");
  alice.send("broadcast_message", {{"message_text", "all hands"}});
  auto a = alice.expect_content("message_accepted");
  EXPECT_EQ(statuses(a), (std::map<std::string, std::string>{{"bob", "relayed"}, {"carol", "relayed"}}));
  auto m = bob.expect_content("receive_message");
  EXPECT_EQ(m.at("channel").as_string(), "broadcast");
  bob.send("acknowledge_message", {{"message_uuid", m.at("message_uuid")}});
  carol.send("acknowledge_message", {{"message_uuid", carol.expect_content("receive_message").at("message_uuid")}});
  alice.expect("message_delivered");
  alice.expect("message_delivered");
  EXPECT_TRUE(alice.quiet_of("receive_message", 200ms));
  // Nobody else online: accepted, with no recipients; offline users never get it.
  bob.send("log_out");
  carol.send("log_out");
  EXPECT_TRUE(bob.closed_within(10s));
  EXPECT_TRUE(carol.closed_within(10s));
  alice.send("broadcast_message", {{"message_text", "anyone?"}});
  auto none = alice.expect_content("message_accepted");
  EXPECT_TRUE(none.at("recipients").as_array().empty());
  client bob2(b.port());
  EXPECT_EQ(bob2.log_in("bob").at("pending_dead_letters").as_int64(), 0);
}

TEST_F(Relay, Groups) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port()), carol(b.port()), eve(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  carol.log_in("carol");
  eve.log_in("eve");
  alice.send("create_group", {{"group_name", "ops"}, {"group_members", {"bob"}}, {"request_id", "g"}});
  auto created = alice.expect_content("acknowledge_group");
  EXPECT_EQ(created.at("group_name").as_string(), "ops");
  EXPECT_EQ(created.at("group_members").as_array().size(), 2u);  // the creator is added
  EXPECT_EQ(created.at("request_id").as_string(), "g");
  bob.send("create_group", {{"group_name", "ops"}});
  bob.expect_error("invalid_field");
  carol.send("join_group", {{"group_name", "ops"}});
  EXPECT_EQ(carol.expect_content("acknowledge_group").at("group_members").as_array().size(), 3u);
  carol.send("join_group", {{"group_name", "nope"}});
  carol.expect_error("unknown_group");

  bob.send("group_message", {{"group_name", "ops"}, {"message_text", "deploy"}});
  auto a = bob.expect_content("message_accepted");
  EXPECT_EQ(statuses(a), (std::map<std::string, std::string>{{"alice", "relayed"}, {"carol", "relayed"}}));
  auto m = alice.expect_content("receive_message");
  EXPECT_EQ(m.at("channel").as_string(), "group");
  EXPECT_EQ(m.at("group_name").as_string(), "ops");
  carol.expect("receive_message");
  EXPECT_TRUE(bob.quiet_of("receive_message", 200ms));

  eve.send("group_message", {{"group_name", "ops"}, {"message_text", "let me in"}});
  eve.expect_error("not_group_member");
  eve.send("group_message", {{"group_name", "ghosts"}, {"message_text", "boo"}});
  eve.expect_error("unknown_group");
  eve.send("leave_group", {{"group_name", "ops"}});
  eve.expect_error("not_group_member");

  carol.send("leave_group", {{"group_name", "ops"}});
  EXPECT_EQ(carol.expect_content("acknowledge_group").at("group_members").as_array().size(), 2u);
  // Each user lists the groups they are in: the list is bounded by max-groups-per-user.
  bob.send("get_group_list", {{"request_id", "l"}});
  auto list = bob.expect_content("group_list");
  ASSERT_EQ(list.at("groups").as_array().size(), 1u);
  EXPECT_EQ(list.at("groups").as_array()[0].at("group_name").as_string(), "ops");
  EXPECT_EQ(list.at("request_id").as_string(), "l");
  eve.send("get_group_list");
  EXPECT_TRUE(eve.expect_content("group_list").at("groups").as_array().empty()) << "eve is in no group";
}

TEST_F(Relay, GroupsSurviveARestart) {
  {
    test::running_broker b(o);
    client alice(b.port());
    alice.log_in("alice");
    alice.send("create_group", {{"group_name", "keep"}, {"group_members", {"bob"}}});
    alice.expect("acknowledge_group");
  }
  test::running_broker b(o);
  client bob(b.port());
  bob.log_in("bob");
  bob.send("get_group_list");
  auto list = bob.expect_content("group_list");
  ASSERT_EQ(list.at("groups").as_array().size(), 1u);
  EXPECT_EQ(list.at("groups").as_array()[0].at("group_members").as_array().size(), 2u);
  bob.send("group_message", {{"group_name", "keep"}, {"message_text", "hi"}});
  bob.expect("message_accepted");
}

TEST_F(Relay, PersistOffRelaysTooAndStillDeadLettersOffline) {
  o.persist_accepted = false;
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "fast"}, {"message_uuid", "f"}});
  EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "relayed");
  bob.expect("receive_message");
  bob.send("acknowledge_message", {{"message_uuids", {"f"}}});
  alice.expect("message_delivered");
  alice.send("send_message", {{"receiver_username", "zed"}, {"message_text", "later"}});
  EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "dead_lettered");
}

}  // namespace
}  // namespace ma
