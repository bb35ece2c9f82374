// Sessions: login rules, presence, heartbeats and eviction, bad input, limits.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <random>
#include <thread>

#include "storage/sqlite.hpp"

#include "tests/support/broker_harness.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::client;
namespace json = boost::json;

class Sessions : public ::testing::Test {
 protected:
  test::temp_dir dir;
  broker_options o = test::test_options(dir);
};

std::vector<std::string> names(const json::value& v) {
  std::vector<std::string> out;
  for (auto& n : v.as_array()) out.emplace_back(n.as_string());
  return out;
}

TEST_F(Sessions, LogInPresenceAndLogOut) {
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  auto ack = alice.log_in("alice", {{"request_id", "r1"}});
  EXPECT_EQ(ack.at("sender_username").as_string(), "alice");
  EXPECT_EQ(names(ack.at("user_list")), std::vector<std::string>{"alice"});
  EXPECT_EQ(ack.at("heartbeat_interval_ms").as_int64(), 10000);
  EXPECT_EQ(ack.at("ack_timeout_ms").as_int64(), 10000);
  EXPECT_EQ(ack.at("max_frame_bytes").as_int64(), 1048576);
  EXPECT_EQ(ack.at("pending_dead_letters").as_int64(), 0);
  EXPECT_EQ(ack.at("broker_name").as_string(), "test-broker");
  EXPECT_EQ(ack.at("protocol_version").as_int64(), 1);
  EXPECT_EQ(ack.at("request_id").as_string(), "r1");

  auto bob_ack = bob.log_in("bob");
  EXPECT_EQ(names(bob_ack.at("user_list")), (std::vector<std::string>{"alice", "bob"}));
  auto joined = alice.expect_content("update_user_set");
  EXPECT_EQ(names(joined.at("joined")), std::vector<std::string>{"bob"});
  EXPECT_EQ(names(joined.at("user_list")), (std::vector<std::string>{"alice", "bob"}));

  client carol(b.port());
  carol.log_in("carol");
  bob.send("get_user_list", {{"request_id", "u"}});
  auto list = bob.expect_content("user_list");
  EXPECT_EQ(names(list.at("user_list")), (std::vector<std::string>{"alice", "bob", "carol"}));
  EXPECT_EQ(list.at("request_id").as_string(), "u");

  bob.send("log_out", {{"request_id", "bye"}});
  EXPECT_EQ(bob.expect_content("acknowledge_log_out").at("request_id").as_string(), "bye");
  EXPECT_TRUE(bob.closed_within(10s));
  json::object left;
  for (int i = 0; i < 3 && !left.contains("left"); ++i) left = alice.expect_content("update_user_set");
  EXPECT_EQ(names(left.at("left")), std::vector<std::string>{"bob"});
  EXPECT_EQ(names(left.at("user_list")), (std::vector<std::string>{"alice", "carol"}));
}

TEST_F(Sessions, OnlyLogInAndHeartbeatBeforeLogIn) {
  test::running_broker b(o);
  client c(b.port());
  c.send("heartbeat", {{"request_id", "h"}});
  EXPECT_EQ(c.expect_content("acknowledge_heartbeat").at("request_id").as_string(), "h");
  c.send("send_message", {{"receiver_username", "x"}, {"message_text", "hi"}, {"request_id", "s"}});
  EXPECT_EQ(c.expect_error("not_logged_in").at("request_id").as_string(), "s");
  c.send("get_user_list");
  c.expect_error("not_logged_in");
  c.log_in("ok");  // the session went on
}

TEST_F(Sessions, UsernameRules) {
  test::running_broker b(o);
  client a(b.port()), b2(b.port());
  a.send("log_in", {{"sender_username", "bad name"}});
  a.expect_error("invalid_username");
  a.log_in("alice");
  a.send("log_in", {{"sender_username", "alice2"}});
  a.expect_error("already_logged_in");
  b2.send("log_in", {{"sender_username", "alice"}, {"request_id", "t"}});
  EXPECT_EQ(b2.expect_error("username_taken").at("request_id").as_string(), "t");
  b2.log_in("bob");
}

TEST_F(Sessions, SenderIsStampedFromTheSession) {
  test::running_broker b(o);
  client mallory(b.port()), bob(b.port());
  mallory.log_in("mallory");
  bob.log_in("bob");
  mallory.send("send_message", {{"receiver_username", "bob"}, {"message_text", "trust me"}, {"sender_username", "alice"}});
  auto m = bob.expect_content("receive_message");
  EXPECT_EQ(m.at("sender_username").as_string(), "mallory");
}

TEST_F(Sessions, LoginTimeoutClosesTheConnection) {
  o.login_timeout_ms = 300;
  test::running_broker b(o);
  client c(b.port());
  const auto start = std::chrono::steady_clock::now();
  c.expect_error("login_timeout", 15s);
  EXPECT_TRUE(c.closed_within(10s));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 250ms);
}

TEST_F(Sessions, SilentAgentIsEvictedAndHeartbeatingOneStays) {
  o.heartbeat_interval_ms = 200;
  o.eviction_factor = 3;
  test::running_broker b(o);
  client quiet(b.port()), lively(b.port()), watcher(b.port());
  watcher.log_in("watcher");
  EXPECT_EQ(lively.log_in("lively").at("heartbeat_interval_ms").as_int64(), 200);
  const auto start = std::chrono::steady_clock::now();
  quiet.log_in("quiet");
  // lively heartbeats at the granted interval for well past the eviction time.
  while (std::chrono::steady_clock::now() - start < 1500ms) {
    lively.send("heartbeat");
    lively.expect("acknowledge_heartbeat");
    watcher.send("heartbeat");
    std::this_thread::sleep_for(100ms);
  }
  quiet.expect_error("heartbeat_timeout", 10s);
  EXPECT_TRUE(quiet.closed_within(10s));
  // The others were told; lively is still online.
  json::object left;
  for (int i = 0; i < 10 && !left.contains("left"); ++i) left = watcher.expect_content("update_user_set");
  EXPECT_EQ(names(left.at("left")), std::vector<std::string>{"quiet"});
  lively.send("get_user_list");
  EXPECT_EQ(names(lively.expect_content("user_list").at("user_list")),
            (std::vector<std::string>{"lively", "watcher"}));
}

TEST_F(Sessions, EvictionWaitsForTheWholeSilence) {
  o.heartbeat_interval_ms = 300;
  o.eviction_factor = 3;
  test::running_broker b(o);
  client quiet(b.port());
  const auto start = std::chrono::steady_clock::now();
  quiet.log_in("quiet");
  quiet.expect_error("heartbeat_timeout", 20s);
  const auto silent = std::chrono::steady_clock::now() - start;
  EXPECT_GE(silent, 850ms);  // 3 x 300 ms, less scheduling slack on the test's side
}

// A frame that arrives while the session's previous frame waits for the store is handled when
// that wait ends, though no more data comes to wake the session.
TEST_F(Sessions, AFrameThatArrivesWhileTheStoreIsBusyIsHandled) {
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  {
    sqlite::connection other(o.database, sqlite::connection::mode::existing_only);
    other.exec("BEGIN EXCLUSIVE");  // create_group's write waits for this lock
    alice.send("create_group", {{"group_name", "ops"}, {"request_id", "g"}});
    std::this_thread::sleep_for(300ms);
    alice.send("get_user_list", {{"request_id", "u"}});
    std::this_thread::sleep_for(300ms);
    other.exec("ROLLBACK");
  }
  EXPECT_EQ(alice.expect_content("acknowledge_group").at("request_id").as_string(), "g");
  EXPECT_EQ(alice.expect_content("user_list").at("request_id").as_string(), "u");
}

// A session that sends often keeps its reading coroutine between frames; once silent for a
// second the sweep parks it, and its next frame is read as before.
TEST_F(Sessions, ABusySessionThatFallsSilentStillAnswers) {
  test::running_broker b(o);
  client alice(b.port());
  alice.log_in("alice");
  for (int i = 0; i < 5; ++i) {
    alice.send("get_user_list", {{"request_id", "busy" + std::to_string(i)}});
    alice.expect_content("user_list");
  }
  std::this_thread::sleep_for(2500ms);  // the sweep (every second at most) parks it after 1 s
  alice.send("get_user_list", {{"request_id", "later"}});
  EXPECT_EQ(alice.expect_content("user_list").at("request_id").as_string(), "later");
  alice.send("log_out", {{"request_id", "bye"}});
  EXPECT_EQ(alice.expect_content("acknowledge_log_out").at("request_id").as_string(), "bye");
  EXPECT_TRUE(alice.closed_within(10s));
}

TEST_F(Sessions, BadInputGetsErrorsAndTheSessionGoesOn) {
  test::running_broker b(o);
  client c(b.port());
  c.log_in("c");
  c.send_raw("{oops\n");
  c.expect_error("malformed_json");
  c.send_raw("[1]\n");
  c.expect_error("invalid_envelope");
  c.send_raw("{\"message_id\":\"teleport\",\"message_content\":{\"request_id\":\"q\"}}\n");
  EXPECT_EQ(c.expect_error("unknown_message_id").at("request_id").as_string(), "q");
  c.send("send_message", {{"message_text", "x"}, {"request_id", "m"}, {"message_uuid", "u-1"}});
  auto missing = c.expect_error("missing_field");
  EXPECT_EQ(missing.at("request_id").as_string(), "m");
  EXPECT_EQ(missing.at("message_uuid").as_string(), "u-1");
  c.send("send_message", {{"receiver_username", "x"}, {"message_text", 5}});
  c.expect_error("invalid_field");
  c.send("send_message", {{"receiver_username", "x y"}, {"message_text", "x"}});
  c.expect_error("invalid_username");
  c.send_raw("\r\n\n");  // empty lines are ignored
  c.send("heartbeat", {{"request_id", "still"}});
  EXPECT_EQ(c.expect_content("acknowledge_heartbeat").at("request_id").as_string(), "still");
}

TEST_F(Sessions, MessageTooLarge) {
  o.max_message_bytes = 1000;
  test::running_broker b(o);
  client c(b.port());
  c.log_in("c");
  c.send("send_message", {{"receiver_username", "c"}, {"message_text", std::string(2000, 'x')}, {"message_uuid", "big"}});
  EXPECT_EQ(c.expect_error("message_too_large").at("message_uuid").as_string(), "big");
  c.send("heartbeat");
  c.expect("acknowledge_heartbeat");
}

TEST_F(Sessions, OversizedFrameAndRandomBytesCloseOnlyThatConnection) {
  o.max_frame_bytes = 4096;
  o.max_message_bytes = 2048;
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  alice.log_in("alice");
  bob.log_in("bob");
  {
    client noisy(b.port());
    std::mt19937 rng(7);
    std::string junk(3000, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng() % 256);
    noisy.send_raw(junk + "\n");
    for (int i = 0; i < 5; ++i) noisy.send_raw(std::string(100, 'z') + "\n");
    noisy.send("heartbeat", {{"request_id", "alive"}});
    EXPECT_EQ(noisy.expect_content("acknowledge_heartbeat").at("request_id").as_string(), "alive");
    noisy.send_raw(std::string(10000, 'a'));  // no newline, past the limit
    noisy.expect_error("frame_too_large");
    EXPECT_TRUE(noisy.closed_within(10s));
  }
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "still here"}});
  EXPECT_EQ(bob.expect_content("receive_message").at("message_text").as_string(), "still here");
}

TEST_F(Sessions, ServerBusyOverMaxConnections) {
  o.max_connections = 2;
  test::running_broker b(o);
  client one(b.port()), two(b.port());
  one.log_in("one");
  two.log_in("two");
  client three(b.port());
  three.expect_error("server_busy");
  EXPECT_TRUE(three.closed_within(10s));
  one.send("heartbeat");
  one.expect("acknowledge_heartbeat");
}

}  // namespace
}  // namespace ma
