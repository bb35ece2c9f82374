// The broker core as one broker of a cluster: a log_in's name is claimed in the cluster's
// registry (through the port) before it is acknowledged, and released when its session ends.
// Two harnesses sharing one registry stand for two brokers; the registry here is the harness's
// fake, the real one (NATS) is in tests/cluster/.
#include <gtest/gtest.h>

#include "tests/broker_core/core_harness.hpp"

namespace ma {
namespace {

using test::clustered;
using test::core_harness;
namespace json = boost::json;

struct two_brokers {
  two_brokers() {
    a.registry = b.registry = registry;
  }
  std::shared_ptr<core_harness::name_registry> registry = std::make_shared<core_harness::name_registry>();
  core_harness a{clustered()}, b{clustered()};
};

std::string error_code(core_harness& h, peer_id id) {
  auto errors = h.take(id, "error");
  return errors.empty() ? std::string() : std::string(errors.front().at("error_code").as_string());
}

TEST(ClusterNames, ANameHeldAtOneBrokerIsTakenAtTheOtherUntilItsSessionEnds) {
  two_brokers c;
  const peer_id alice_a = c.a.online("alice");
  EXPECT_EQ(c.registry->at("alice"), &c.a);

  const peer_id alice_b = c.b.connect();
  EXPECT_TRUE(c.b.log_in(alice_b, "alice").empty());
  EXPECT_EQ(error_code(c.b, alice_b), "username_taken");
  EXPECT_TRUE(c.b.core().outbox_of(alice_b)) << "the connection stays open: it may log in under another name";

  // A refused claim leaves nothing behind at B: the same connection logs in as someone else,
  // and B does not release a name it never held.
  EXPECT_FALSE(c.b.log_in(alice_b, "alice2").empty());
  c.b.run_claims();
  EXPECT_EQ(c.registry->at("alice"), &c.a);

  c.a.disconnect(alice_a);
  EXPECT_EQ(c.a.port().releases, std::vector<std::string>{"alice"});
  c.a.run_claims();
  EXPECT_FALSE(c.b.log_in(c.b.connect(), "alice").empty()) << "released when the session ended";
  EXPECT_EQ(c.registry->at("alice"), &c.b);
}

// With a password file, a right password at one broker takes the name from the session at the
// other, as it would on one broker: that session hears session_taken_over and closes.
TEST(ClusterNames, ARightPasswordTakesTheNameOverFromTheOtherBroker) {
  core_settings s = clustered();
  s.password_file = "passwords";
  auto registry = std::make_shared<core_harness::name_registry>();
  core_harness a{s}, b{s};
  for (core_harness* h : {&a, &b}) {
    h->registry = registry;
    h->passwords = {{"alice", "a-secret"}};
  }
  const peer_id alice_a = a.online("alice", {{"password", "a-secret"}});
  const peer_id wrong = b.connect();
  EXPECT_TRUE(b.log_in(wrong, "alice", {{"password", "guess"}}).empty());
  EXPECT_EQ(error_code(b, wrong), "auth_failed");
  EXPECT_EQ(registry->at("alice"), &a) << "a wrong password takes nothing";

  const peer_id alice_b = b.connect();
  EXPECT_FALSE(b.log_in(alice_b, "alice", {{"password", "a-secret"}}).empty());
  EXPECT_EQ(registry->at("alice"), &b);
  EXPECT_EQ(error_code(a, alice_a), "session_taken_over");
  EXPECT_TRUE(a.port().closing.count(alice_a));
  EXPECT_EQ(a.port().releases, std::vector<std::string>{}) << "released, and the release applied";
}

TEST(ClusterNames, TheAcknowledgementWaitsForTheClaimAndTheConnectionIsReadNoFurther) {
  core_harness h{clustered()};
  const peer_id id = h.connect();
  h.send(id, "log_in", {{"sender_username", "alice"}, {"request_id", "r1"}});
  h.run_store();
  EXPECT_TRUE(h.take(id, "acknowledge_log_in").empty()) << "acknowledged before the cluster answered";
  EXPECT_TRUE(h.port().held.count(id)) << "its later frames must wait for the answer";
  ASSERT_EQ(h.port().claims.size(), 1u);
  EXPECT_EQ(h.port().claims.front().user, "alice");
  h.run_claims();
  h.run_store();
  auto acks = h.take(id, "acknowledge_log_in");
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks.front().at("request_id").as_string(), "r1");
  EXPECT_FALSE(h.port().held.count(id));
}

TEST(ClusterNames, AnUnreachableRegistryRefusesTheLogInWithServerBusy) {
  core_harness h{clustered()};
  h.registry_down = true;
  const peer_id id = h.connect();
  EXPECT_TRUE(h.log_in(id, "alice").empty());
  EXPECT_EQ(error_code(h, id), "server_busy");
  EXPECT_TRUE(h.port().closing.count(id)) << "server_busy closes the connection";
  EXPECT_TRUE(h.port().releases.empty());
  h.registry_down = false;
  EXPECT_FALSE(h.log_in(h.connect(), "alice").empty()) << "a new connection logs in once the cluster answers";
}

TEST(ClusterNames, AClaimThatAnswersAfterTheSessionWentIsReleased) {
  core_harness h{clustered()};
  const peer_id id = h.connect();
  h.send(id, "log_in", {{"sender_username", "alice"}});
  h.disconnect(id);
  EXPECT_TRUE(h.port().releases.empty()) << "nothing was claimed yet";
  h.run_claims();
  EXPECT_EQ(h.port().releases, std::vector<std::string>{"alice"});
}

TEST(ClusterNames, SendOnlySessionsClaimNothingAndASingleBrokerNeverAsks) {
  core_harness clustered_broker{clustered()};
  clustered_broker.online("alice", {{"send_only", true}});
  EXPECT_TRUE(clustered_broker.port().claims.empty());
  core_harness single;
  const peer_id id = single.online("alice");
  single.disconnect(id);
  EXPECT_TRUE(single.port().claims.empty());
  EXPECT_TRUE(single.port().releases.empty());
}

}  // namespace
}  // namespace ma
