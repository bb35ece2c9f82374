// The Dead Letter Channel as agents see it: ack timeouts, late acks, disconnects, redelivery
// in order, slow consumers, shutdown.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

#include "storage/database.hpp"
#include "tests/support/broker_harness.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::client;
namespace json = boost::json;

class DeadLetters : public ::testing::Test {
 protected:
  test::temp_dir dir;
  broker_options o = test::test_options(dir);

  std::vector<dead_letter> letters(const std::string& uuid) {
    database db({o.database, false, false});
    return db.find(uuid);
  }
};

void send_to(client& c, const std::string& to, const std::string& text, const std::string& uuid) {
  c.send("send_message", {{"receiver_username", to}, {"message_text", text}, {"message_uuid", uuid}});
}

TEST_F(DeadLetters, AckTimeoutThenLateAckCountsAsDelivered) {
  o.ack_timeout_ms = 300;
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  send_to(alice, "bob", "ack me", "slow-1");
  EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "relayed");
  bob.expect("receive_message");
  auto dl = alice.expect_content("message_dead_lettered", 15s);
  EXPECT_EQ(dl.at("message_uuid").as_string(), "slow-1");
  EXPECT_EQ(dl.at("receiver_username").as_string(), "bob");
  EXPECT_EQ(dl.at("reason").as_string(), "ack_timeout");
  auto before = letters("slow-1");
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].state, dead_letter_state::pending);
  EXPECT_EQ(before[0].attempts, 1);

  bob.send("acknowledge_message", {{"message_uuid", "slow-1"}});
  auto delivered = alice.expect_content("message_delivered");
  EXPECT_EQ(delivered.at("message_uuid").as_string(), "slow-1");
  EXPECT_EQ(letters("slow-1")[0].state, dead_letter_state::delivered);
  // Delivered: bob's next login does not get it again.
  bob.send("log_out");
  EXPECT_TRUE(bob.closed_within(10s));
  client bob2(b.port());
  EXPECT_EQ(bob2.log_in("bob").at("pending_dead_letters").as_int64(), 0);
}

TEST_F(DeadLetters, DisconnectWithUnacknowledgedMessagesAndRedeliveryAtLogin) {
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  {
    client bob(b.port());
    bob.log_in("bob");
    send_to(alice, "bob", "one", "d1");
    send_to(alice, "bob", "two", "d2");
    bob.expect("receive_message");
    bob.expect("receive_message");
    alice.expect("message_accepted");
    alice.expect("message_accepted");
  }  // bob's connection drops without acknowledging
  auto first = alice.expect_content("message_dead_lettered");
  EXPECT_EQ(first.at("reason").as_string(), "recipient_disconnected");
  alice.expect("message_dead_lettered");
  send_to(alice, "bob", "three", "d3");  // offline now
  EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "dead_lettered");

  client bob(b.port());
  EXPECT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), 3);
  const std::vector<std::string> order{"one", "two", "three"};
  const std::vector<std::string> reasons{"recipient_disconnected", "recipient_disconnected", "recipient_offline"};
  const std::vector<int> attempts{2, 2, 1};
  for (int i = 0; i < 3; ++i) {
    auto m = bob.expect_content("receive_message");
    EXPECT_EQ(m.at("message_text").as_string(), order[i]);
    EXPECT_TRUE(m.at("redelivery").as_bool());
    EXPECT_EQ(m.at("dead_letter_reason").as_string(), reasons[i]);
    EXPECT_EQ(m.at("attempt").as_int64(), attempts[i]);
    bob.send("acknowledge_message", {{"message_uuid", m.at("message_uuid")}});
  }
  for (int i = 0; i < 3; ++i) alice.expect("message_delivered");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (letters("d3")[0].state != dead_letter_state::delivered && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  auto d1 = letters("d1");
  ASSERT_EQ(d1.size(), 1u);
  EXPECT_EQ(d1[0].state, dead_letter_state::delivered);
  database db({o.database, false, false});
  auto attempts_d1 = db.attempts_of(d1[0].id);
  ASSERT_EQ(attempts_d1.size(), 2u);
  EXPECT_EQ(attempts_d1[0].outcome, "recipient_disconnected");
  EXPECT_EQ(attempts_d1[1].outcome, "acknowledged");
  EXPECT_EQ(letters("d3")[0].state, dead_letter_state::delivered);
}

TEST_F(DeadLetters, UnacknowledgedRedeliveryStaysPendingAndParksAfterMaxAttempts) {
  o.max_delivery_attempts = 2;
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  send_to(alice, "bob", "stubborn", "s1");
  alice.expect("message_accepted");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    client bob(b.port());
    EXPECT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), 1);
    auto m = bob.expect_content("receive_message");
    EXPECT_EQ(m.at("attempt").as_int64(), attempt);
  }  // drops without acknowledging
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (letters("s1")[0].state != dead_letter_state::parked && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(letters("s1")[0].state, dead_letter_state::parked);
  client bob(b.port());
  EXPECT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), 0);
}

TEST_F(DeadLetters, LiveMessagesWaitBehindTheBacklogSoOrderHolds) {
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  constexpr int backlog = 1500;
  std::string burst;
  for (int i = 0; i < backlog; ++i) {
    burst += "{\"message_id\":\"send_message\",\"message_content\":{\"receiver_username\":\"bob\",\"message_text\":\"" +
             std::to_string(i) + "\"}}\n";
  }
  alice.send_raw(burst);
  for (int i = 0; i < backlog; ++i) alice.expect("message_accepted");
  client bob(b.port());
  EXPECT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), backlog);
  // Sent while the backlog drains: must come after it.
  for (int i = backlog; i < backlog + 50; ++i) send_to(alice, "bob", std::to_string(i), "live" + std::to_string(i));
  json::array acks;
  for (int i = 0; i < backlog + 50; ++i) {
    auto m = bob.expect_content("receive_message");
    ASSERT_EQ(m.at("message_text").as_string(), std::to_string(i));
    EXPECT_EQ(m.at("redelivery").as_bool(), i < backlog);
    acks.emplace_back(m.at("message_uuid"));
    if (acks.size() == 200) {
      bob.send("acknowledge_message", {{"message_uuids", acks}});
      acks.clear();
    }
  }
}

TEST_F(DeadLetters, SlowConsumerLosesNothing) {
  o.max_outbound_bytes = 64 * 1024;
  o.ack_timeout_ms = 120'000;
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  int total = 6000;
  {
    client bob(b.port(), 4096);
    bob.log_in("bob");
    // bob reads nothing while alice sends ~12 MB: the socket buffers fill, then the broker's
    // queue for bob passes max_outbound_bytes.
    const std::string text(2000, 'x');
    std::string burst;
    for (int i = 0; i < total; ++i) {
      burst += "{\"message_id\":\"send_message\",\"message_content\":{\"receiver_username\":\"bob\",\"message_uuid\":\"q" +
               std::to_string(i) + "\",\"message_text\":\"" + text + "\"}}\n";
    }
    alice.send_raw(burst);
    int relayed = 0, overflow = 0;
    for (int i = 0; i < total; ++i) {
      auto a = alice.expect_content("message_accepted");
      (a.at("status").as_string() == "relayed" ? relayed : overflow)++;
    }
    EXPECT_GT(overflow, 0);
    EXPECT_GT(relayed, 0);
    // bob is still connected; now it reads everything that was relayed.
    bob.send("heartbeat");
    std::set<std::string> got;
    for (int i = 0; i < relayed; ++i) {
      auto m = bob.expect_content("receive_message", 30s);
      got.insert(std::string(m.at("message_uuid").as_string()));
      bob.send("acknowledge_message", {{"message_uuid", m.at("message_uuid")}});
    }
    EXPECT_EQ(static_cast<int>(got.size()), relayed);
    database db({o.database, false, false});
    EXPECT_EQ(db.count_pending("bob"), overflow);
    for (auto& d : db.list({std::string("bob"), std::nullopt, std::nullopt, 100000})) {
      EXPECT_EQ(d.reason, dead_letter_reason::queue_overflow);
    }
  }
}

TEST_F(DeadLetters, GracefulStopMovesTheUnacknowledgedToTheChannel) {
  {
    std::optional<test::running_broker> b(std::in_place, o);
    client alice(b->port()), bob(b->port());
    alice.log_in("alice");
    bob.log_in("bob");
    send_to(alice, "bob", "in flight", "g1");
    bob.expect("receive_message");
    alice.expect("message_accepted");
    b.reset();  // stopped gracefully with g1 unacknowledged and bob still connected
    EXPECT_TRUE(bob.closed_within(10s));
  }
  auto l = letters("g1");
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].reason, dead_letter_reason::broker_restart);
  EXPECT_EQ(l[0].state, dead_letter_state::pending);
  database db({o.database, false, false});
  EXPECT_EQ(db.count_journal(), 0);
}

}  // namespace
}  // namespace ma

namespace ma {
namespace {

TEST_F(DeadLetters, AStorageFailureIsInternalErrorNeverAFalseAccept) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  {
    // An operator's mistake from another connection: the journal disappears under the broker.
    sqlite::connection other(o.database, sqlite::connection::mode::existing_only);
    other.exec("ALTER TABLE journal RENAME TO journal_gone");
  }
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "x"}, {"message_uuid", "e1"},
                              {"request_id", "r"}});
  auto e = alice.expect_error("internal_error");
  EXPECT_EQ(e.at("message_uuid").as_string(), "e1");
  EXPECT_EQ(e.at("request_id").as_string(), "r");
  EXPECT_TRUE(alice.quiet_of("message_accepted", 200ms));
  // Delivered before its commit (as a message may be): bob had it, and nothing of it was kept.
  EXPECT_EQ(bob.expect_content("receive_message").at("message_uuid").as_string(), "e1");
  bob.send("acknowledge_message", {{"message_uuid", "e1"}});
  EXPECT_TRUE(alice.quiet_of("message_delivered", 200ms));  // the receipt of a message never accepted
  {
    sqlite::connection other(o.database, sqlite::connection::mode::existing_only);
    other.exec("ALTER TABLE journal_gone RENAME TO journal");
  }
  // The next batch works again, and the same uuid is not taken for a duplicate.
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "x"}, {"message_uuid", "e1"}});
  auto a = alice.expect_content("message_accepted");
  EXPECT_FALSE(a.at("duplicate").as_bool());
  // The same uuid again: an agent drops what it has handled.
  EXPECT_EQ(bob.expect_content("receive_message").at("message_uuid").as_string(), "e1");
}

// An operator's sqlite3 session holds the write lock past the broker's busy timeout while a
// recipient disconnects: the deliveries used to be neither in flight nor pending until the next
// restart. Now their move is retried until it commits, and the next login gets them.
TEST_F(DeadLetters, DeliveriesMovedWhileTheDatabaseIsLockedAreRedeliveredAtTheNextLogin) {
  test::running_broker b(o, 50);
  client alice(b.port());
  alice.log_in("alice");
  std::optional<client> bob(std::in_place, b.port());
  bob->log_in("bob");
  for (int i = 0; i < 10; ++i) send_to(alice, "bob", "m" + std::to_string(i), "lock" + std::to_string(i));
  for (int i = 0; i < 10; ++i) alice.expect("message_accepted");
  for (int i = 0; i < 10; ++i) bob->expect("receive_message");
  {
    database operator_session({o.database, false, false});
    operator_session.begin();  // BEGIN IMMEDIATE, held
    bob.reset();               // disconnects with 10 unacknowledged
    ASSERT_TRUE(test::eventually([&] { return b.store_retrying() > 0; })) << "the move never failed: was the lock held?";
    operator_session.rollback();
  }
  for (int i = 0; i < 10; ++i) alice.expect("message_dead_lettered", 20s);
  client bob2(b.port());
  EXPECT_EQ(bob2.log_in("bob").at("pending_dead_letters").as_int64(), 10);
  for (int i = 0; i < 10; ++i) {
    auto m = bob2.expect_content("receive_message");
    EXPECT_EQ(m.at("message_uuid").as_string(), "lock" + std::to_string(i));
    EXPECT_TRUE(m.at("redelivery").as_bool());
    EXPECT_EQ(m.at("dead_letter_reason").as_string(), "recipient_disconnected");
  }
}

TEST_F(DeadLetters, AcknowledgementsSentWhileTheDatabaseIsLockedAreStoredAfterIt) {
  test::running_broker b(o, 50);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  for (int i = 0; i < 5; ++i) send_to(alice, "bob", "m", "ack-lock" + std::to_string(i));
  for (int i = 0; i < 5; ++i) alice.expect("message_accepted");
  json::array acks;
  for (int i = 0; i < 5; ++i) acks.emplace_back(bob.expect_content("receive_message").at("message_uuid"));
  {
    database operator_session({o.database, false, false});
    operator_session.begin();
    bob.send("acknowledge_message", {{"message_uuids", acks}});
    for (int i = 0; i < 5; ++i) alice.expect("message_delivered");
    ASSERT_TRUE(test::eventually([&] { return b.store_retrying() > 0; }));
    operator_session.rollback();
  }
  database db({o.database, false, false});
  EXPECT_TRUE(test::eventually([&] { return db.count_journal() == 0; })) << "the acknowledgements were lost";
  bob.send("log_out");
  EXPECT_TRUE(bob.closed_within(10s));
  client bob2(b.port());
  EXPECT_EQ(bob2.log_in("bob").at("pending_dead_letters").as_int64(), 0);
}

TEST_F(DeadLetters, ExpiredLettersAreNotRedelivered) {
  {
    test::running_broker b(o);
    client alice(b.port());
    alice.log_in("alice");
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "soon stale"}, {"ttl_ms", 1},
                                {"message_uuid", "x1"}});
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "fresh"}, {"message_uuid", "x2"}});
    alice.expect("message_accepted");
    alice.expect("message_accepted");
  }
  std::this_thread::sleep_for(20ms);
  test::running_broker b(o);  // the sweep runs at start (and every minute)
  client bob(b.port());
  EXPECT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), 1);
  EXPECT_EQ(bob.expect_content("receive_message").at("message_uuid").as_string(), "x2");
  EXPECT_EQ(letters("x1")[0].state, dead_letter_state::expired);
}

}  // namespace
}  // namespace ma
