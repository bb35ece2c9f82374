// The broker core with a password file: every log_in checked (off its thread, through the
// port), the same answer for every refusal, failures spaced out per source address, and the
// takeover of a name that is online.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

#include "tests/broker_core/core_harness.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::core_harness;
namespace json = boost::json;

core_settings with_passwords() {
  core_settings s;
  s.password_file = "passwords";
  s.ack_timeout_ms = 60'000;
  return s;
}

struct identity : core_harness {
  identity() : core_harness(with_passwords()) { passwords = {{"alice", "a-secret"}, {"bob", "b-secret"}}; }
  // A log_in on a new connection from host; returns the connection.
  peer_id try_log_in(const std::string& name, std::optional<std::string> password, const std::string& host = "127.0.0.1") {
    const peer_id id = connect(host);
    json::object content{{"sender_username", name}};
    if (password) content["password"] = *password;
    send(id, "log_in", content);
    run_password_checks();
    run_store();
    return id;
  }
};

TEST(Identity, ARightPasswordLogsInAndEveryRefusalHasTheSameSentenceAndCloses) {
  identity h;
  const peer_id ok = h.try_log_in("alice", "a-secret");
  EXPECT_EQ(h.take(ok, "acknowledge_log_in").size(), 1u);
  std::vector<std::string> sentences;
  for (auto [name, password] : std::vector<std::pair<std::string, std::optional<std::string>>>{
           {"bob", "wrong"}, {"bob", std::nullopt}, {"nobody", "b-secret"}}) {
    const peer_id id = h.try_log_in(name, password, "127.0.0." + std::to_string(10 + sentences.size()));
    auto errors = h.take(id, "error");
    ASSERT_EQ(errors.size(), 1u) << name;
    EXPECT_EQ(errors[0].at("error_code").as_string(), "auth_failed");
    sentences.emplace_back(errors[0].at("error_text").as_string());
    EXPECT_TRUE(h.port().closing.count(id)) << "the connection closes after auth_failed";
    EXPECT_TRUE(h.take(id, "acknowledge_log_in").empty());
  }
  EXPECT_EQ(sentences[0], sentences[1]);
  EXPECT_EQ(sentences[0], sentences[2]);
}

TEST(Identity, FramesAfterALogInWaitForItsPasswordCheck) {
  identity h;
  const peer_id id = h.connect();
  h.send(id, "log_in", {{"sender_username", "alice"}, {"password", "a-secret"}});
  EXPECT_TRUE(h.port().held.count(id)) << "later frames wait while the password is checked";
  EXPECT_EQ(h.port().checks.size(), 1u);
  EXPECT_TRUE(h.take(id, "acknowledge_log_in").empty());
  h.run_password_checks();
  h.run_store();
  EXPECT_EQ(h.take(id, "acknowledge_log_in").size(), 1u);
  EXPECT_FALSE(h.port().held.count(id));
}

// After three failures from an address each check from there waits its turn, doubling; a user
// from another address is checked at once, and a right password from there starts it over.
TEST(Identity, FailuresSlowDownTheirOwnAddressOnly) {
  identity h;
  for (int i = 0; i < 3; ++i) h.try_log_in("alice", "guess", "10.0.0.66");
  const peer_id fourth = h.connect("10.0.0.66");
  h.send(fourth, "log_in", {{"sender_username", "alice"}, {"password", "guess"}});
  EXPECT_TRUE(h.port().checks.empty()) << "the fourth guess is checked at once";
  const peer_id user = h.try_log_in("alice", "a-secret", "10.0.0.7");
  EXPECT_EQ(h.take(user, "acknowledge_log_in").size(), 1u) << "another address waits for nothing";
  h.advance(249ms);
  EXPECT_TRUE(h.port().checks.empty());
  h.advance(1ms);
  EXPECT_EQ(h.run_password_checks(), 1);
  // The fifth waits 500 ms after the fourth failure.
  const peer_id fifth = h.connect("10.0.0.66");
  h.send(fifth, "log_in", {{"sender_username", "alice"}, {"password", "guess"}});
  h.advance(499ms);
  EXPECT_TRUE(h.port().checks.empty());
  h.advance(1ms);
  EXPECT_EQ(h.run_password_checks(), 1);
  EXPECT_EQ(login_failures::delay_after(20), login_failures::max_delay);
}

// A flood of log_ins from many addresses does not queue checks without bound: past
// max_checks_in_flight the next log_in gets server_busy at once, and once checks are answered
// log_ins are checked again.
TEST(Identity, PasswordChecksInFlightAreBounded) {
  identity h;
  for (std::size_t i = 0; i < broker_core::max_checks_in_flight; ++i) {
    const peer_id id = h.connect("10.1.0." + std::to_string(i));
    h.send(id, "log_in", {{"sender_username", "alice"}, {"password", "guess"}});
  }
  EXPECT_EQ(h.port().checks.size(), broker_core::max_checks_in_flight);
  const peer_id late = h.connect("10.2.0.1");
  h.send(late, "log_in", {{"sender_username", "alice"}, {"password", "a-secret"}});
  auto busy = h.take(late, "error");
  ASSERT_EQ(busy.size(), 1u);
  EXPECT_EQ(busy[0].at("error_code").as_string(), "server_busy");
  EXPECT_TRUE(h.port().closing.count(late));
  h.run_password_checks();
  const peer_id again = h.try_log_in("alice", "a-secret", "10.2.0.1");
  EXPECT_EQ(h.take(again, "acknowledge_log_in").size(), 1u);
}

// The takeover: the old session hears session_taken_over and closes; what it had not
// acknowledged is redelivered to the new one at once, which acknowledges it, and the sender
// gets its receipt. Presence sees no one leave.
TEST(Identity, ARightPasswordTakesTheNameOverWithItsUnacknowledgedMessages) {
  identity h;
  const peer_id old = h.try_log_in("alice", "a-secret");
  const peer_id bob = h.try_log_in("bob", "b-secret");
  h.frames(old);
  h.send(bob, "send_message", {{"receiver_username", "alice"}, {"message_text", "hi"}, {"message_uuid", "m1"}});
  h.run_store();
  ASSERT_EQ(h.take(old, "receive_message").size(), 1u);  // not acknowledged
  h.frames(bob);

  const peer_id fresh = h.try_log_in("alice", "a-secret");
  auto errors = h.take(old, "error");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].at("error_code").as_string(), "session_taken_over");
  EXPECT_TRUE(h.port().closing.count(old));
  auto ack = h.take(fresh, "acknowledge_log_in");
  ASSERT_EQ(ack.size(), 1u);
  EXPECT_EQ(ack[0].at("pending_dead_letters").as_int64(), 1);
  h.run_store();
  auto again = h.take(fresh, "receive_message");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].at("message_uuid").as_string(), "m1");
  EXPECT_TRUE(again[0].at("redelivery").as_bool());
  h.send(fresh, "acknowledge_message", {{"message_uuid", "m1"}});
  h.run_store();
  EXPECT_EQ(h.take(bob, "message_delivered").size(), 1u);
  for (auto& u : h.take(bob, "update_user_set")) EXPECT_FALSE(u.contains("left")) << json::serialize(u);
  h.core().disconnected(old, h.now());  // its socket closes later: nothing more happens
  h.run_store();
  EXPECT_TRUE(h.take(fresh, "receive_message").empty());
}

TEST(Identity, AWrongPasswordLeavesTheOnlineSessionAlone) {
  identity h;
  const peer_id alice = h.try_log_in("alice", "a-secret");
  h.frames(alice);
  h.try_log_in("alice", "wrong");
  EXPECT_TRUE(h.take(alice, "error").empty());
  EXPECT_FALSE(h.port().closing.count(alice));
}

// Two agents with the same credentials do not take the name from each other forever: a name
// taken over is not taken over again within takeover_guard.
TEST(Identity, ANameTakenOverIsNotTakenOverAgainAtOnce) {
  identity h;
  h.try_log_in("alice", "a-secret");
  const peer_id second = h.try_log_in("alice", "a-secret");
  EXPECT_EQ(h.take(second, "acknowledge_log_in").size(), 1u);
  const peer_id third = h.try_log_in("alice", "a-secret");
  auto errors = h.take(third, "error");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].at("error_code").as_string(), "username_taken");
  EXPECT_FALSE(h.port().closing.count(second));
  h.advance(broker_core::takeover_guard);
  const peer_id fourth = h.try_log_in("alice", "a-secret");
  EXPECT_EQ(h.take(fourth, "acknowledge_log_in").size(), 1u);
  auto taken = h.take(second, "error");
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].at("error_code").as_string(), "session_taken_over");
}

// Permissions, decided at accept time: not_authorized with a sentence naming what was refused,
// nothing stored, and the session goes on.
TEST(Identity, TheAclRefusesWhatNoRuleAllowsAndTheSessionGoesOn) {
  core_harness h;
  h.core().set_acl(std::make_shared<const acl>(acl::parse("user alice\nsend bob\ngroup ops\n", "acl")));
  const peer_id alice = h.online("alice"), bob = h.online("bob");
  h.frames(alice);
  auto refused = [&](std::string_view kind, json::object content) {
    content["request_id"] = "r";
    h.send(alice, kind, content);
    h.run_store();
    auto errors = h.take(alice, "error");
    if (errors.size() != 1) return std::string("no error");
    EXPECT_EQ(errors[0].at("error_code").as_string(), "not_authorized");
    EXPECT_EQ(errors[0].at("request_id").as_string(), "r");
    return std::string(errors[0].at("error_text").as_string());
  };
  EXPECT_NE(refused("send_message", {{"receiver_username", "carol"}, {"message_text", "x"}}).find("'carol'"),
            std::string::npos);
  EXPECT_NE(refused("multicast_message", {{"receiver_usernames", json::array{"bob", "carol"}}, {"message_text", "x"}})
                .find("whole"),
            std::string::npos);
  EXPECT_NE(refused("broadcast_message", {{"message_text", "x"}}).find("broadcast"), std::string::npos);
  EXPECT_NE(refused("create_group", {{"group_name", "secret"}, {"group_members", json::array{}}}).find("'secret'"),
            std::string::npos);
  EXPECT_NE(refused("join_group", {{"group_name", "secret"}}).find("'group' rule"), std::string::npos);
  EXPECT_TRUE(h.take(bob, "receive_message").empty()) << "nothing of a refused multicast went out";
  EXPECT_EQ(h.db().count_all_pending(), 0) << "nothing of it was stored";

  h.send(alice, "send_message", {{"receiver_username", "bob"}, {"message_text", "allowed"}});
  h.send(alice, "create_group", {{"group_name", "ops"}, {"group_members", json::array{"bob"}}});
  h.run_store();
  EXPECT_EQ(h.take(alice, "message_accepted").size(), 1u);
  EXPECT_EQ(h.take(alice, "acknowledge_group").size(), 1u);
  EXPECT_EQ(h.take(bob, "receive_message").size(), 1u);
  // Bob has no rules: he may not even answer, but he may leave a group.
  h.send(bob, "send_message", {{"receiver_username", "alice"}, {"message_text", "x"}});
  h.send(bob, "leave_group", {{"group_name", "ops"}});
  h.run_store();
  EXPECT_EQ(h.take(bob, "error").size(), 1u);
  EXPECT_EQ(h.take(bob, "acknowledge_group").size(), 1u);
  h.core().set_acl(nullptr);
  h.send(bob, "send_message", {{"receiver_username", "alice"}, {"message_text", "x"}});
  h.run_store();
  EXPECT_EQ(h.take(bob, "message_accepted").size(), 1u) << "without a file everything is allowed";
}

}  // namespace
}  // namespace ma
