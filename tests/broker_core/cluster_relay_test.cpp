// The broker core as one broker of a cluster: users online at another broker are remote peers
// here, and what is sent to them is relayed there (and their acknowledgements back). Harnesses
// stand for brokers; the test moves the relays between them and says where names are held, as
// the backbone would. The real backbone (NATS) is in tests/cluster/.
#include <gtest/gtest.h>

#include "tests/broker_core/core_harness.hpp"

namespace ma {
namespace {

using test::clustered;
using test::core_harness;
namespace json = boost::json;

// Brokers "A", "B" and "C" of one cluster, with one registry of names.
struct cluster {
  cluster() {
    for (auto& [token, h] : brokers) h->registry = registry;
  }
  std::shared_ptr<core_harness::name_registry> registry = std::make_shared<core_harness::name_registry>();
  core_harness a{clustered()}, b{clustered()}, c{clustered()};
  std::map<std::string, core_harness*> brokers{{"A", &a}, {"B", &b}, {"C", &c}};

  std::string token_of(core_harness* h) {
    for (auto& [token, x] : brokers) {
      if (x == h) return token;
    }
    return {};
  }

  // As the backbone's watch: every other broker hears where user is held now (nowhere: "").
  void holder(const std::string& user, core_harness* at) {
    for (auto& [token, h] : brokers) {
      if (h != at) h->core().remote_holder(user, at ? token_of(at) : "", h->now());
    }
    settle();
  }
  peer_id online(core_harness& h, const std::string& user) {
    const peer_id id = h.online(user);
    holder(user, &h);
    return id;
  }
  void leave(core_harness& h, peer_id id, const std::string& user) {
    h.disconnect(id);
    h.run_claims();
    holder(user, nullptr);
  }

  // Runs stores, flushes remote peers, and carries relays, until nothing moves; returns how many
  // relays were carried.
  int settle() {
    int carried = 0;
    for (int round = 0; round < 100; ++round) {
      bool moved = false;
      for (auto& [token, h] : brokers) {
        if (h->run_store() > 0) moved = true;
        if (run_group_changes(*h) > 0) moved = true;
        auto flushes = h->port().flushes;
        for (peer_id id : flushes) {
          if (!broker_core::is_remote(id)) continue;
          h->port().flushes.erase(id);
          h->core().relay_outbox(id, h->now());
          moved = true;
        }
        auto relays = std::move(h->port().relays);
        h->port().relays.clear();
        for (auto& r : relays) {
          core_harness* to = brokers.at(r.broker);
          to->core().relayed(r.kind, token, r.user, r.frames, to->now());
          ++carried;
          moved = true;
        }
      }
      if (!moved) break;
    }
    return carried;
  }

  // The registry's groups: each change asked is made there, answered, and seen by every broker
  // (as through the watch), the one that asked included.
  std::map<std::string, std::set<std::string>> groups;
  int run_group_changes(core_harness& h) {
    auto asked = std::move(h.port().group_changes);
    h.port().group_changes.clear();
    for (auto& [change, done] : asked) {
      auto& members = groups[change.group];
      group_outcome outcome = group_outcome::done;
      using op = group_change::op;
      if (change.what == op::create) {
        if (!members.empty()) {
          outcome = group_outcome::exists;
        } else {
          members.insert(change.user);
          members.insert(change.members.begin(), change.members.end());
        }
      } else if (members.empty()) {
        outcome = group_outcome::unknown;
      } else if (change.what == op::join) {
        members.insert(change.user);
      } else if (!members.erase(change.user)) {
        outcome = group_outcome::not_member;
      }
      std::vector<std::string> after(members.begin(), members.end());
      done(outcome, after, h.now());
      if (outcome == group_outcome::done) {
        for (auto& [token, x] : brokers) x->core().remote_group(change.group, after);
      }
    }
    return static_cast<int>(asked.size());
  }

  // Every relay the brokers asked for since the last settle, without carrying it.
  std::vector<test::recording_port::relay_out> relays_of(core_harness& h) { return h.port().relays; }
};

void ack(core_harness& h, peer_id id, const json::object& delivery) {
  h.send(id, "acknowledge_message", {{"message_uuid", delivery.at("message_uuid")}});
}

TEST(ClusterRelay, ADirectMessageToAUserAtAnotherBrokerIsRelayedAndItsReceiptComesBack) {
  cluster c;
  const peer_id bob = c.online(c.b, "bob");
  const peer_id alice = c.online(c.a, "alice");
  c.a.send(alice, "send_message", {{"receiver_username", "bob"}, {"message_text", "hi"}, {"message_uuid", "m-1"}});
  c.a.run_store();
  auto accepted = c.a.take(alice, "message_accepted");
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0].at("status"), "relayed");

  EXPECT_GT(c.settle(), 0);
  auto got = c.b.take(bob, "receive_message");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].at("message_uuid"), "m-1");
  EXPECT_EQ(got[0].at("sender_username"), "alice");
  EXPECT_EQ(got[0].at("message_text"), "hi");
  EXPECT_EQ(got[0].at("redelivery"), false);
  EXPECT_TRUE(c.a.take(alice, "message_delivered").empty()) << "not before bob acknowledges";

  ack(c.b, bob, got[0]);
  c.settle();
  auto receipts = c.a.take(alice, "message_delivered");
  ASSERT_EQ(receipts.size(), 1u);
  EXPECT_EQ(receipts[0].at("receiver_username"), "bob");
  EXPECT_EQ(c.a.core().in_flight_count(), 0u);

  // Acknowledged once: nothing waits for bob at A, and A's ack timeout finds nothing.
  c.a.send(alice, "heartbeat");
  c.a.advance(std::chrono::seconds(11));
  c.settle();
  EXPECT_TRUE(c.a.take(alice, "message_dead_lettered").empty());
  EXPECT_EQ(c.a.db().count_pending("bob"), 0);
}

TEST(ClusterRelay, UsersAtOtherBrokersAreInUserListsPresenceAndBroadcasts) {
  cluster c;
  const peer_id alice = c.online(c.a, "alice");
  const peer_id bob = c.online(c.b, "bob");
  c.a.advance(std::chrono::seconds(1));  // presence goes out in batches
  auto presence = c.a.take(alice, "update_user_set");
  ASSERT_FALSE(presence.empty());
  EXPECT_EQ(presence.back().at("joined"), (json::array{"bob"}));

  c.a.send(alice, "get_user_list");
  auto users = c.a.take(alice, "user_list");
  ASSERT_EQ(users.size(), 1u);
  EXPECT_EQ(users[0].at("user_list"), (json::array{"alice", "bob"}));

  // A remote peer gets no presence of its own broker's: its broker tells it.
  for (auto& r : c.relays_of(c.a)) EXPECT_EQ(r.frames.find("update_user_set"), std::string::npos) << r.frames;

  c.a.send(alice, "broadcast_message", {{"message_text", "all"}});
  c.a.run_store();
  c.settle();
  auto got = c.b.take(bob, "receive_message");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].at("channel"), "broadcast");
}

TEST(ClusterRelay, LettersFromTwoBrokersAreRedeliveredWhenTheUserLogsInAtAThird) {
  cluster c;
  const peer_id alice = c.online(c.a, "alice");
  const peer_id bob = c.online(c.b, "bob");
  for (int i = 0; i < 3; ++i) {
    c.a.send(alice, "send_message", {{"receiver_username", "carol"}, {"message_text", "from a " + std::to_string(i)}});
    c.b.send(bob, "send_message", {{"receiver_username", "carol"}, {"message_text", "from b " + std::to_string(i)}});
  }
  c.settle();
  EXPECT_EQ(c.a.db().count_pending("carol"), 3);
  EXPECT_EQ(c.b.db().count_pending("carol"), 3);

  const peer_id carol = c.online(c.c, "carol");
  auto got = c.c.take(carol, "receive_message");
  ASSERT_EQ(got.size(), 6u);
  std::vector<std::string> from_a, from_b;
  for (auto& m : got) {
    EXPECT_EQ(m.at("redelivery"), true);
    (m.at("sender_username") == "alice" ? from_a : from_b).emplace_back(m.at("message_text").as_string());
    ack(c.c, carol, m);
  }
  EXPECT_EQ(from_a, (std::vector<std::string>{"from a 0", "from a 1", "from a 2"})) << "in order per origin";
  EXPECT_EQ(from_b, (std::vector<std::string>{"from b 0", "from b 1", "from b 2"}));
  c.settle();
  EXPECT_EQ(c.a.db().count_pending("carol"), 0);
  EXPECT_EQ(c.b.db().count_pending("carol"), 0);
  EXPECT_EQ(c.a.take(alice, "message_delivered").size(), 3u);
}

TEST(ClusterRelay, WhatTheUserDidNotAcknowledgeBeforeLeavingItsBrokerIsADeadLetterAtTheOrigin) {
  cluster c;
  const peer_id alice = c.online(c.a, "alice");
  const peer_id bob = c.online(c.b, "bob");
  c.a.send(alice, "send_message", {{"receiver_username", "bob"}, {"message_text", "unacked"}});
  c.settle();
  ASSERT_EQ(c.b.take(bob, "receive_message").size(), 1u);
  c.leave(c.b, bob, "bob");
  auto dead = c.a.take(alice, "message_dead_lettered");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].at("reason"), "recipient_disconnected");
  EXPECT_EQ(c.a.db().count_pending("bob"), 1);

  // bob comes back at A itself: a local session now, redelivered as on one broker.
  const peer_id bob_a = c.online(c.a, "bob");
  auto again = c.a.take(bob_a, "receive_message");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].at("redelivery"), true);
}

TEST(ClusterRelay, AnAcknowledgementTheUsersBrokerNeverRelaysTimesOutAtTheOrigin) {
  cluster c;
  const peer_id alice = c.online(c.a, "alice");
  const peer_id bob = c.online(c.b, "bob");
  c.a.send(alice, "send_message", {{"receiver_username", "bob"}, {"message_text", "lost"}});
  c.settle();
  ASSERT_EQ(c.b.take(bob, "receive_message").size(), 1u);
  // bob's broker dies before bob acknowledges: nothing comes back to A.
  c.a.send(alice, "heartbeat");
  c.a.advance(std::chrono::seconds(11));
  c.a.run_store();
  auto dead = c.a.take(alice, "message_dead_lettered");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].at("reason"), "ack_timeout");
  EXPECT_EQ(c.a.db().count_pending("bob"), 1);
}

// Two senders at two brokers may use one uuid: bob's acknowledgement names the sender, and goes
// back to that sender's broker only.
TEST(ClusterRelay, AnAcknowledgementNamingItsSenderGoesBackToThatSendersBroker) {
  cluster c;
  const peer_id bob = c.online(c.b, "bob");
  const peer_id alice = c.online(c.a, "alice");
  const peer_id carol = c.online(c.c, "carol");
  c.a.send(alice, "send_message", {{"receiver_username", "bob"}, {"message_text", "a"}, {"message_uuid", "same"}});
  c.c.send(carol, "send_message", {{"receiver_username", "bob"}, {"message_text", "c"}, {"message_uuid", "same"}});
  c.settle();
  ASSERT_EQ(c.b.take(bob, "receive_message").size(), 2u);
  c.b.send(bob, "acknowledge_message", {{"message_uuid", "same"}, {"sender_username", "carol"}});
  c.settle();
  EXPECT_EQ(c.c.take(carol, "message_delivered").size(), 1u);
  EXPECT_TRUE(c.a.take(alice, "message_delivered").empty());
  c.b.send(bob, "acknowledge_message", {{"message_uuid", "same"}, {"sender_username", "alice"}});
  c.settle();
  EXPECT_EQ(c.a.take(alice, "message_delivered").size(), 1u);
}

TEST(ClusterRelay, ALogInHereForANameHeldElsewhereLeavesItToTheClaim) {
  cluster c;
  const peer_id bob_b = c.online(c.b, "bob");
  // At A, bob is a remote peer; a log_in as bob at A is the registry's to decide.
  const peer_id bob_a = c.a.connect();
  EXPECT_TRUE(c.a.log_in(bob_a, "bob").empty());
  auto errors = c.a.take(bob_a, "error");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].at("error_code"), "username_taken");
  // Still at B: A sends to bob through B as before.
  const peer_id alice = c.online(c.a, "alice");
  c.a.send(alice, "send_message", {{"receiver_username", "bob"}, {"message_text", "still there"}});
  c.settle();
  EXPECT_EQ(c.b.take(bob_b, "receive_message").size(), 1u);
}

TEST(ClusterRelay, FramesForAUserNoLongerHereAreDroppedAndAnAckFromAStrangerIsIgnored) {
  cluster c;
  const peer_id alice = c.online(c.a, "alice");
  c.a.core().relayed(relay_kind::to_user, "B", "nobody", "{\"message_id\":\"receive_message\"}\n", c.a.now());
  c.a.core().relayed(relay_kind::from_user, "B", "alice", "{\"message_id\":\"acknowledge_message\"}\n", c.a.now());
  c.settle();
  EXPECT_TRUE(c.a.frames(alice).empty()) << "alice is local at A: B has no say for her";
}

// Groups are the cluster's: made in its registry, known at every broker, and a group message
// goes to its members wherever they are (a member offline everywhere: a dead letter at the
// sender's broker).
TEST(ClusterRelay, GroupsAreTheClustersAndTheirMessagesReachMembersAtEveryBroker) {
  cluster c;
  const peer_id alice = c.online(c.a, "alice");
  const peer_id bob = c.online(c.b, "bob");
  c.a.send(alice, "create_group", {{"group_name", "ops"}, {"group_members", {"bob"}}});
  EXPECT_TRUE(c.a.take(alice, "acknowledge_group").empty()) << "not before the registry answers";
  c.settle();
  auto made = c.a.take(alice, "acknowledge_group");
  ASSERT_EQ(made.size(), 1u);
  EXPECT_EQ(made[0].at("group_members"), (json::array{"alice", "bob"}));
  EXPECT_EQ(c.b.db().list_groups().size(), 0u) << "the registry holds it, not the store";

  // Created at A, known at B: bob sends to it; and carol, at C, joins it there.
  const peer_id carol = c.online(c.c, "carol");
  c.c.send(carol, "join_group", {{"group_name", "ops"}});
  c.settle();
  ASSERT_EQ(c.c.take(carol, "acknowledge_group").size(), 1u);
  c.c.send(carol, "create_group", {{"group_name", "ops"}});
  c.settle();
  auto errors = c.c.take(carol, "error");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].at("error_code"), "invalid_field") << "the group exists in the cluster";

  c.b.send(bob, "group_message", {{"group_name", "ops"}, {"message_text", "to the group"}});
  c.b.run_store();
  c.settle();
  for (auto [h, id] : {std::pair{&c.a, alice}, std::pair{&c.c, carol}}) {
    auto got = h->take(id, "receive_message");
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].at("channel"), "group");
    EXPECT_EQ(got[0].at("group_name"), "ops");
  }

  // carol leaves C: a group message from A keeps her letter at A.
  c.leave(c.c, carol, "carol");
  c.a.send(alice, "group_message", {{"group_name", "ops"}, {"message_text", "carol is away"}});
  c.a.run_store();
  c.settle();
  EXPECT_EQ(c.a.db().count_pending("carol"), 1);
  EXPECT_EQ(c.b.take(bob, "receive_message").size(), 1u);
}

}  // namespace
}  // namespace ma
