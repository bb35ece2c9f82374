// Sessions: login rules, presence, heartbeats and eviction, bad input, limits.
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <memory>

#include <boost/json/serialize.hpp>
#include <random>
#include <thread>

#include "core/duration.hpp"
#include "storage/database.hpp"
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

// printf '...' | nc -N: the client half-closes right after its requests. The answers still due
// (here message_accepted, after its commit) go out before the broker closes the connection.
TEST_F(Sessions, AHalfClosedClientGetsTheAnswersDueThenTheClose) {
  test::running_broker b(o);
  client bob(b.port());
  bob.log_in("bob");
  client oneshot(b.port());
  oneshot.send_raw(
      "{\"message_id\":\"log_in\",\"message_content\":{\"sender_username\":\"oneshot\",\"send_only\":true}}\n"
      "{\"message_id\":\"send_message\",\"message_content\":{\"receiver_username\":\"bob\","
      "\"message_text\":\"hi\",\"message_uuid\":\"h1\"}}\n"
      "{\"message_id\":\"create_group\",\"message_content\":{\"group_name\":\"g1\"}}\n");
  oneshot.shutdown_send();
  oneshot.expect("acknowledge_log_in");
  EXPECT_EQ(oneshot.expect_content("message_accepted").at("message_uuid").as_string(), "h1");
  oneshot.expect("acknowledge_group");
  EXPECT_TRUE(oneshot.closed_within(10s));
  EXPECT_EQ(bob.expect_content("receive_message").at("message_uuid").as_string(), "h1");
}

// Only complete frames are activity: a line that never ends, a byte at a time, keeps nobody
// alive.
TEST_F(Sessions, ALineThatNeverEndsIsNoActivity) {
  o.heartbeat_interval_ms = 200;
  o.eviction_factor = 3;
  test::running_broker b(o);
  client trickle(b.port());
  trickle.log_in("trickle");
  trickle.send_raw("{\"message_id\":\"heartbeat\",\"message_content\":{\"request_id\":\"");
  const auto start = std::chrono::steady_clock::now();
  bool evicted = false;
  while (!evicted && std::chrono::steady_clock::now() - start < 10s) {
    trickle.send_raw("x");
    if (auto f = trickle.recv(100ms); f && f->at("message_id").as_string() == "error") {
      EXPECT_EQ(f->at("message_content").at("error_code").as_string(), "heartbeat_timeout");
      evicted = true;
    }
  }
  EXPECT_TRUE(evicted) << "a byte a second of an unfinished line kept the session alive";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
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
    std::this_thread::sleep_for(100ms);
    alice.send("get_user_list", {{"request_id", "u"}});
    std::this_thread::sleep_for(100ms);
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
  std::this_thread::sleep_for(2200ms);  // the housekeeping (every second) parks it after 1 s
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

// W5 in docs/performance.md: what an idle connection keeps of the broker's heap. The callback
// waiting for its data took the 240-byte block a read had given back to Asio's cache, plus a
// 48-byte cancellation slot: 1,139 bytes a connection then (in this test), 932 since.
TEST_F(Sessions, AnIdleConnectionKeepsLessThan1000BytesOfTheHeap) {
  const auto heap = [] { return static_cast<double>(::mallinfo2().uordblks); };
  if (heap() == 0) GTEST_SKIP() << "mallinfo2 does not see this allocator (a sanitizer's)";
  constexpr int n = 400;  // two descriptors each in this process: within the default limit of 1,024
  test::running_broker b(o);
  std::vector<int> fds;
  fds.reserve(n);
  ASSERT_EQ(b.status().connections, 0u);
  const double before = heap();
  for (int i = 0; i < n; ++i) fds.push_back(test::connect_loopback(b.port()));
  ASSERT_TRUE(test::eventually([&] { return b.status().connections == n; }));
  const double per_connection = (heap() - before) / n;
  std::printf("an idle connection keeps %.0f bytes of the heap\n", per_connection);
  EXPECT_LT(per_connection, 1000.0);
  for (int fd : fds) ::close(fd);
}

// Sockets that never log in can not lock real users out: when the broker is full, the oldest
// connection that has not logged in makes room; logged-in ones never do.
TEST_F(Sessions, IdleSocketsThatNeverLogInDoNotLockUsersOut) {
  o.max_connections = 10;
  test::running_broker b(o);
  client one(b.port());
  one.log_in("one");
  std::vector<std::unique_ptr<client>> idle;
  for (int i = 0; i < 9; ++i) idle.push_back(std::make_unique<client>(b.port()));
  ASSERT_TRUE(test::eventually([&] { return b.status().connections == 10; }));
  client alice(b.port());
  EXPECT_FALSE(alice.log_in("alice").empty()) << "a real user was locked out by idle sockets";
  idle.front()->expect_error("server_busy");
  EXPECT_TRUE(idle.front()->closed_within(10s)) << "the oldest idle socket made room";
  one.send("heartbeat");
  one.expect("acknowledge_heartbeat");
}

// Issue item 8: at the top of their ranges the durations wrapped: everyone evicted at the first
// sweep, every delivery timed out, every letter expired, duplicates let through.
TEST_F(Sessions, DurationsAtTheTopOfTheirRangeAreJustLong) {
  o.heartbeat_interval_ms = max_duration_ms;
  o.eviction_factor = std::numeric_limits<std::uint32_t>::max();
  o.ack_timeout_ms = max_duration_ms;
  o.login_timeout_ms = max_duration_ms;
  o.dead_letter_ttl_ms = max_duration_ms;
  o.dedupe_window_ms = max_duration_ms;
  test::running_broker b(o);
  client alice(b.port()), bob(b.port());
  EXPECT_EQ(alice.log_in("alice", {{"heartbeat_interval_ms", max_duration_ms}}).at("heartbeat_interval_ms").as_int64(),
            static_cast<std::int64_t>(max_duration_ms));
  bob.log_in("bob");
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "x"}, {"message_uuid", "long-1"}});
  EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "relayed");
  bob.expect("receive_message");
  alice.send("send_message", {{"receiver_username", "carol"}, {"message_text", "x"}, {"message_uuid", "long-2"}});
  EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "dead_lettered");
  // That the saturated deadlines never come is BrokerCore.SaturatedDurationsNeverFire; here
  // the wiring must not turn them into an immediate tick either.
  EXPECT_TRUE(bob.quiet_of("error", 200ms)) << "evicted";
  EXPECT_TRUE(alice.quiet_of("message_dead_lettered", 0ms)) << "the ack timeout fired";
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "x"}, {"message_uuid", "long-1"}});
  EXPECT_TRUE(alice.expect_content("message_accepted").at("duplicate").as_bool());
  database db({o.database, false, false});
  auto l = db.find("long-2");
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].state, dead_letter_state::pending);
  ASSERT_TRUE(parse_iso8601(l[0].expires_at)) << l[0].expires_at;
  EXPECT_GT(*parse_iso8601(l[0].expires_at), now_ms() + std::chrono::hours(24 * 365 * 50));
}

}  // namespace
}  // namespace ma
