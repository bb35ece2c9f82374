// Identity end to end: a password file made with `message-broker passwd`, the real broker
// binary on it, raw clients, the agent library and the CLI.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "message_agent/client.hpp"
#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"
#include "tests/support/run_coroutine.hpp"

namespace ma {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using test::client;

const std::string broker_binary = MA_BROKER_BINARY;
const std::string agent_binary = MA_AGENT_BINARY;
// The lowest cost libsodium takes: these tests are about behaviour, not strength.
const std::vector<std::string> cheap = {"--password-hash-ops", "1", "--password-hash-mem-kib", "8"};

class Identity : public ::testing::Test {
 protected:
  test::temp_dir dir;
  std::string passwords = dir.file("passwords");

  void set_password(const std::string& user, const std::string& password) {
    std::vector<std::string> args = {"passwd", "--password-file", passwords, user};
    args.insert(args.end(), cheap.begin(), cheap.end());
    auto [status, out] = test::run_command(broker_binary, args, password + "\n");
    ASSERT_EQ(status, 0) << out;
  }
  std::unique_ptr<test::child_process> start_broker() {
    auto args = test::broker_args(dir);
    args.insert(args.end(), {"--password-file", passwords});
    args.insert(args.end(), cheap.begin(), cheap.end());
    auto b = std::make_unique<test::child_process>(broker_binary, args, dir.file("broker.log"));
    port_ = test::listening_port(*b, 20s).value_or(0);
    EXPECT_NE(port_, 0) << b->log();
    return b;
  }
  std::uint16_t port_ = 0;

  agent::client::settings as(const std::string& user, std::optional<std::string> password) {
    agent::client::settings s;
    s.port = port_;
    s.username = user;
    s.password = std::move(password);
    s.backoff_min = 20ms;
    return s;
  }
};

TEST_F(Identity, TheRightPasswordLogsInAndEveryRefusalIsTheSameSentenceThenTheClose) {
  set_password("alice", "a-secret");
  set_password("bob", "b-secret");
  auto broker = start_broker();
  client alice(port_);
  EXPECT_FALSE(alice.log_in("alice", {{"password", "a-secret"}}).empty());

  std::vector<std::string> sentences;
  const std::vector<std::pair<std::string, std::optional<std::string>>> refused = {
      {"bob", "wrong"}, {"bob", std::nullopt}, {"nobody", "b-secret"}};
  for (auto& [name, password] : refused) {
    client c(port_);
    boost::json::object content{{"sender_username", name}};
    if (password) content["password"] = *password;
    c.send("log_in", content);
    auto e = c.expect_error("auth_failed");
    sentences.emplace_back(e["error_text"].as_string());
    EXPECT_TRUE(c.closed_within(10s)) << "the connection stays open after auth_failed";
  }
  EXPECT_EQ(sentences[0], sentences[1]);
  EXPECT_EQ(sentences[1], sentences[2]);
  EXPECT_TRUE(broker->wait_for_log(std::regex("log_in as 'nobody' from 127\\.0\\.0\\.1:\\d+ refused"), 10s))
      << broker->log();
}

// Guessing from one address is slowed down there; a user from another address is not held up:
// her log_in is answered while the guesser's next one still waits for its turn.
TEST_F(Identity, GuessingIsSlowedDownForTheGuessersAddressOnly) {
  set_password("alice", "a-secret");
  auto broker = start_broker();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 7; ++i) {
    client mallory(port_);
    mallory.send("log_in", {{"sender_username", "alice"}, {"password", "guess" + std::to_string(i)}});
    mallory.expect_error("auth_failed", 30s);
  }
  // Turns of 250, 500, 1,000 and 2,000 ms after the third failure.
  EXPECT_GE(std::chrono::steady_clock::now() - start, 3750ms) << "seven guesses were not slowed down";
  client guess(port_);
  guess.send("log_in", {{"sender_username", "alice"}, {"password", "guess-8"}});  // waits 4 s for its turn
  client alice(port_, 0, "127.0.0.2");
  EXPECT_FALSE(alice.log_in("alice", {{"password", "a-secret"}}).empty());
  EXPECT_TRUE(guess.quiet_of("error", 0ms)) << "the guess was answered before the user from elsewhere";
  guess.expect_error("auth_failed", 30s);
}

// A right password takes the name over: the old session hears session_taken_over and does not
// reconnect; what it had not acknowledged is redelivered to the new one, whose acknowledgement
// reaches the sender. A wrong password leaves the session alone.
TEST_F(Identity, ATakeoverMovesTheUnacknowledgedToTheNewSession) {
  set_password("alice", "a-secret");
  set_password("bob", "b-secret");
  auto broker = start_broker();
  asio::io_context io;
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    agent::client old(io.get_executor(), as("alice", "a-secret"));
    agent::client bob(io.get_executor(), as("bob", "b-secret"));
    co_await old.connect();
    co_await bob.connect();
    agent::outgoing m;
    m.text = "for alice";
    const auto sent = co_await bob.send("alice", m);
    auto got = co_await old.receive(10s);
    EXPECT_TRUE(got.has_value());  // and not acknowledged

    client wrong(port_);
    wrong.send("log_in", {{"sender_username", "alice"}, {"password", "nope"}});
    wrong.expect_error("auth_failed");

    agent::client fresh(io.get_executor(), as("alice", "a-secret"));
    const auto info = co_await fresh.connect();
    EXPECT_EQ(info.pending_dead_letters, 1);
    auto again = co_await fresh.receive(10s);
    EXPECT_TRUE(again.has_value());
    if (again) {
      EXPECT_EQ(again->message_uuid, sent.message_uuid);
      EXPECT_TRUE(again->redelivery);
      fresh.acknowledge(*again);
    }
    auto report = co_await bob.delivered(sent.message_uuid, 10s);
    EXPECT_TRUE(report.has_value());

    std::string code;
    try {
      co_await old.receive(10s);
    } catch (const agent::broker_error& e) {
      code = e.code;
    }
    EXPECT_EQ(code, "session_taken_over");
    EXPECT_EQ(old.reconnects(), 0u) << "a session taken over must not take the name back";
    auto users = co_await bob.users();
    EXPECT_EQ(users, (std::vector<std::string>{"alice", "bob"}));
    co_await fresh.close();
    co_await bob.close();
  });
}

TEST_F(Identity, TheCliTakesThePasswordFromItsOptionOrTheEnvironment) {
  set_password("alice", "a-secret");
  set_password("bob", "b-secret");
  auto broker = start_broker();
  const std::string at = "127.0.0.1:" + std::to_string(port_);
  auto [s1, out1] = test::run_command(agent_binary, {"--broker", at, "--user", "alice", "--password", "a-secret",
                                                     "send", "bob", "hello"});
  EXPECT_EQ(s1, 0) << out1;
  auto [s2, out2] = test::run_command(agent_binary, {"--broker", at, "--user", "bob", "listen", "--count", "1"},
                                      std::nullopt, {"MESSAGE_AGENT_PASSWORD=b-secret"});
  EXPECT_EQ(s2, 0) << out2;
  EXPECT_NE(out2.find("hello"), std::string::npos) << out2;
  auto [s3, out3] = test::run_command(agent_binary, {"--broker", at, "--user", "alice", "--password", "wrong",
                                                     "send", "bob", "hello"});
  EXPECT_NE(s3, 0);
  EXPECT_NE(out3.find("auth_failed"), std::string::npos) << out3;
}

// SIGHUP rereads the file: a user added meanwhile can log in, a user deleted no longer can,
// and the sessions already logged in stay.
TEST_F(Identity, SighupRereadsThePasswordFile) {
  set_password("alice", "a-secret");
  auto broker = start_broker();
  client alice(port_);
  EXPECT_FALSE(alice.log_in("alice", {{"password", "a-secret"}}).empty());
  set_password("carol", "c-secret");
  {
    auto [status, out] = test::run_command(broker_binary, {"passwd", "--password-file", passwords, "--delete", "alice"});
    ASSERT_EQ(status, 0) << out;
  }
  broker->signal(SIGHUP);
  ASSERT_TRUE(broker->wait_for_log(std::regex("password-file '.*' read again: (1) users"), 10s)) << broker->log();
  client carol(port_);
  EXPECT_FALSE(carol.log_in("carol", {{"password", "c-secret"}}).empty());
  client again(port_, 0, "127.0.0.3");
  again.send("log_in", {{"sender_username", "alice"}, {"password", "a-secret"}});
  again.expect_error("auth_failed");
  alice.send("heartbeat");
  alice.expect("acknowledge_heartbeat");
}

TEST_F(Identity, PasswdRefusesAMalformedFileNamingTheLine) {
  { std::ofstream(passwords) << "# ops\nalice:$argon2id$broken\n"; }
  std::vector<std::string> args = {"passwd", "--password-file", passwords, "bob"};
  auto [status, out] = test::run_command(broker_binary, args, std::string("pw\n"));
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("line 2"), std::string::npos) << out;
  auto [s2, out2] = test::run_command(broker_binary, {"--password-file", passwords, "--port", "0", "--discovery", "off",
                                                      "--database", dir.file("b.db")});
  EXPECT_NE(s2, 0) << "a broker must not start on a broken password file";
  EXPECT_NE(out2.find("line 2"), std::string::npos) << out2;
}

// The ACL on the real binary: a denial names what was refused and the session goes on; SIGHUP
// rereads the file, and a file that does not parse keeps the rules the broker had.
TEST_F(Identity, TheAclFileIsEnforcedAndRereadOnSighup) {
  set_password("alice", "a-secret");
  const std::string rules = dir.file("acl");
  { std::ofstream(rules) << "user alice\nsend bob\n"; }
  auto args = test::broker_args(dir);
  args.insert(args.end(), {"--password-file", passwords, "--acl-file", rules});
  args.insert(args.end(), cheap.begin(), cheap.end());
  test::child_process broker(broker_binary, args, dir.file("broker.log"));
  port_ = test::listening_port(broker, 20s).value_or(0);
  ASSERT_NE(port_, 0) << broker.log();
  client alice(port_);
  ASSERT_FALSE(alice.log_in("alice", {{"password", "a-secret"}}).empty());
  alice.send("send_message", {{"receiver_username", "carol"}, {"message_text", "x"}});
  auto e = alice.expect_error("not_authorized");
  EXPECT_NE(std::string(e["error_text"].as_string()).find("'carol'"), std::string::npos);
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "x"}});
  EXPECT_EQ(alice.expect_content("message_accepted")["status"], "dead_lettered");

  { std::ofstream(rules) << "user alice\nsend *\n"; }
  broker.signal(SIGHUP);
  ASSERT_TRUE(broker.wait_for_log(std::regex("acl-file '.*' read again: rules for (1) users"), 10s)) << broker.log();
  alice.send("send_message", {{"receiver_username", "carol"}, {"message_text", "x"}});
  EXPECT_EQ(alice.expect_content("message_accepted")["status"], "dead_lettered");

  { std::ofstream(rules) << "user alice\nsend-to *\n"; }
  broker.signal(SIGHUP);
  ASSERT_TRUE(broker.wait_for_log(std::regex("acl-file not reloaded.*line (2)"), 10s)) << broker.log();
  alice.send("send_message", {{"receiver_username", "dave"}, {"message_text", "x"}});
  EXPECT_EQ(alice.expect_content("message_accepted")["status"], "dead_lettered") << "the old rules stay";
}

}  // namespace
}  // namespace ma
