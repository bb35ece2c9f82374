// The real message-agent and message-broker binaries.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <fstream>
#include <regex>
#include <thread>

#include "core/clock.hpp"
#include "storage/database.hpp"
#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

const std::string broker_binary = MA_BROKER_BINARY;
const std::string agent_binary = MA_AGENT_BINARY;

class AgentCli : public ::testing::Test {
 protected:
  test::temp_dir dir;
  std::unique_ptr<test::child_process> broker;
  std::string address;
  std::string discovery_port;

  void SetUp() override {
    broker = std::make_unique<test::child_process>(
        broker_binary,
        std::vector<std::string>{"--port", "0", "--discovery-port", "0", "--database", dir.file("broker.db"),
                                 "--broker-name", "cli-test"},
        dir.file("broker.log"));
    auto port = test::listening_port(*broker, 20s);
    ASSERT_TRUE(port) << broker->log();
    address = "127.0.0.1:" + std::to_string(*port);
    auto dport = broker->wait_for_log(std::regex(R"(discovery on 239\.255\.77\.77:(\d+))"), 20s);
    ASSERT_TRUE(dport) << broker->log();
    discovery_port = *dport;
  }

  std::pair<int, std::string> agent(std::vector<std::string> args) {
    args.insert(args.begin(), {"--broker", address});
    return test::run_command(agent_binary, args);
  }

  // Starts a listener and waits until it is logged in (the broker's log says so).
  std::unique_ptr<test::child_process> listener(const std::string& user, std::vector<std::string> extra) {
    std::vector<std::string> args{"--broker", address, "--user", user};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = std::make_unique<test::child_process>(agent_binary, args, dir.file(user + ".out"));
    EXPECT_TRUE(broker->wait_for_log(std::regex("'" + user + "' logged in"), 20s)) << broker->log();
    return p;
  }
};

TEST_F(AgentCli, SendAndListenAsText) {
  auto bob = listener("bob", {"listen", "--count", "2", "--timeout-ms", "20000"});
  auto [s1, out1] = agent({"--user", "alice", "send", "bob", "hello there"});
  EXPECT_EQ(s1, 0) << out1;
  EXPECT_TRUE(std::regex_search(out1, std::regex(R"([0-9a-f-]{36} relayed)"))) << out1;
  auto [s2, out2] = agent({"--user", "alice", "send", "bob", "second", "--uuid", "cli-2", "--payload", "{\"k\":[1,2]}"});
  EXPECT_EQ(s2, 0) << out2;
  EXPECT_EQ(out2, "cli-2 relayed\n");
  EXPECT_EQ(bob->wait(20s), 0);
  const std::string got = bob->log();
  EXPECT_NE(got.find("alice -> bob (direct): hello there"), std::string::npos) << got;
  EXPECT_NE(got.find("second  {\"k\":[1,2]}"), std::string::npos) << got;
}

// Issue 17: short flags (-b, -u), the environment (MESSAGE_AGENT_BROKER, MESSAGE_AGENT_USER),
// --ttl-ms with a unit, and listen --raw, which prints only the body, for jq.
TEST_F(AgentCli, ShortFlagsTheEnvironmentTtlAndRawBodies) {
  auto bob = std::make_unique<test::child_process>(
      agent_binary, std::vector<std::string>{"listen", "--count", "2", "--raw", "--timeout-ms", "20s"},
      dir.file("bob-raw.out"), std::vector<std::string>{"MESSAGE_AGENT_BROKER=" + address, "MESSAGE_AGENT_USER=bob"});
  ASSERT_TRUE(broker->wait_for_log(std::regex("'bob' logged in"), 20s)) << broker->log();
  auto [s1, out1] = test::run_command(agent_binary, {"-b", address, "-u", "alice", "send", "bob", "--payload", "{\"k\":1}"});
  EXPECT_EQ(s1, 0) << out1;
  auto [s2, out2] = test::run_command(agent_binary, {"-u", "alice", "send", "bob", "just text"}, std::nullopt,
                                      {"MESSAGE_AGENT_BROKER=" + address});
  EXPECT_EQ(s2, 0) << out2;
  EXPECT_EQ(bob->wait(20s), 0);
  EXPECT_EQ(bob->log(), "{\"k\":1}\njust text\n");

  auto [s3, out3] = agent({"-u", "alice", "send", "carol", "expires in an hour", "--uuid", "ttl-1", "--ttl-ms", "1h"});
  EXPECT_EQ(s3, 0) << out3;
  database db({dir.file("broker.db"), false, false});
  const auto letters = db.find("ttl-1");
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(parse_iso8601(letters[0].expires_at).value() - parse_iso8601(letters[0].accepted_at).value(),
            std::chrono::hours(1));
}

// Issue 17: the body from standard input ('-', or no TEXT with a pipe) or a file (--payload @FILE).
TEST_F(AgentCli, TheBodyComesFromStandardInputOrAFile) {
  auto bob = listener("bob", {"listen", "--count", "3", "--raw", "--timeout-ms", "20s"});
  auto [s1, out1] = test::run_command(agent_binary, {"-b", address, "-u", "alice", "send", "bob", "-"},
                                      std::string("from a pipe\n"));
  EXPECT_EQ(s1, 0) << out1;
  auto [s2, out2] = test::run_command(agent_binary, {"-b", address, "-u", "alice", "send", "bob"},
                                      std::string("no text given\n"));
  EXPECT_EQ(s2, 0) << out2;
  const std::string file = dir.file("body.json");
  std::ofstream(file) << "{\"from\":\"a file\"}";
  auto [s3, out3] = agent({"-u", "alice", "send", "bob", "--payload", "@" + file});
  EXPECT_EQ(s3, 0) << out3;
  EXPECT_EQ(bob->wait(20s), 0);
  EXPECT_EQ(bob->log(), "from a pipe\nno text given\n{\"from\":\"a file\"}\n");
  auto [s4, out4] = agent({"-u", "alice", "send", "bob", "--payload", "@" + dir.file("missing.json")});
  EXPECT_EQ(s4, 1) << out4;
  EXPECT_NE(out4.find("missing.json"), std::string::npos) << out4;
}

TEST_F(AgentCli, AMistypedCommandOrOptionGetsTheNearestOne) {
  auto [s1, out1] = agent({"-u", "alice", "sned", "bob", "hi"});
  EXPECT_EQ(s1, 1) << out1;
  EXPECT_NE(out1.find("'sned' is not a command; did you mean send?"), std::string::npos) << out1;
  auto [s2, out2] = agent({"-u", "alice", "send", "bob", "hi", "--wait-delivred"});
  EXPECT_EQ(s2, 1) << out2;
  EXPECT_NE(out2.find("did you mean --wait-delivered?"), std::string::npos) << out2;
  auto [s3, out3] = agent({"--log-level", "loud", "users"});
  EXPECT_EQ(s3, 1) << out3;
  EXPECT_NE(out3.find("--log-level: 'loud' is not one of: trace, debug, info, warn, error, critical, off."),
            std::string::npos)
      << out3;
}

TEST_F(AgentCli, SendAndListenAsJsonAndWaitDelivered) {
  auto bob = listener("bob", {"--json", "listen", "--count", "1", "--timeout-ms", "20000"});
  auto [status, out] = agent({"--user", "alice", "--json", "send", "bob", "ack me", "--uuid", "w1", "--wait-delivered",
                              "--timeout-ms", "20000"});
  EXPECT_EQ(status, 0) << out;
  std::istringstream lines(out);
  std::string accepted, delivered;
  std::getline(lines, accepted);
  std::getline(lines, delivered);
  auto a = json::parse(accepted).as_object();
  EXPECT_EQ(a.at("message_uuid").as_string(), "w1");
  EXPECT_EQ(a.at("status").as_string(), "relayed");
  auto d = json::parse(delivered).as_object();
  EXPECT_EQ(d.at("receiver_username").as_string(), "bob");
  EXPECT_EQ(bob->wait(20s), 0);
  auto m = json::parse(bob->log()).as_object();
  EXPECT_EQ(m.at("message_uuid").as_string(), "w1");
  EXPECT_EQ(m.at("message_text").as_string(), "ack me");
  EXPECT_EQ(m.at("sender_username").as_string(), "alice");
}

// --wait-delivered: 4 when no acknowledgement came in time; 5 as soon as the message went to
// the Dead Letter Channel, with the reason: at once for a recipient offline, or when a recipient
// that had it disconnects without acknowledging.
TEST_F(AgentCli, WaitDeliveredTimesOutWithFourAndEndsAtADeadLetterWithFive) {
  const auto port = static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
  auto mute = std::make_unique<test::client>(port);
  mute->log_in("mute");
  auto [status, out] = agent({"--user", "alice", "send", "mute", "x", "--uuid", "wd-4", "--wait-delivered",
                              "--timeout-ms", "300"});
  EXPECT_EQ(status, 4) << out;
  EXPECT_EQ(mute->expect_content("receive_message").at("message_uuid"), "wd-4");
  mute->send("acknowledge_message", {{"message_uuid", "wd-4"}});

  auto [s2, out2] = agent({"--user", "alice", "send", "nobody", "x", "--wait-delivered", "--timeout-ms", "20s"});
  EXPECT_EQ(s2, 5) << out2;
  EXPECT_NE(out2.find("recipient_offline"), std::string::npos) << out2;

  test::child_process waiting(agent_binary,
                              {"--broker", address, "--user", "alice", "send", "mute", "y", "--uuid", "wd-5",
                               "--wait-delivered", "--timeout-ms", "20s"},
                              dir.file("waiting.out"));
  EXPECT_EQ(mute->expect_content("receive_message", 20s).at("message_uuid"), "wd-5");
  // Gone without acknowledging (shutdown: the agent's process holds a copy of the socket, forked
  // with it).
  ::shutdown(mute->fd(), SHUT_RDWR);
  mute.reset();
  EXPECT_EQ(waiting.wait(20s), 5) << waiting.log();
  EXPECT_NE(waiting.log().find("recipient_disconnected"), std::string::npos) << waiting.log();
}

TEST_F(AgentCli, DiscoverOnLoopbackAndSendWithoutBroker) {
  auto [status, out] = test::run_command(agent_binary, {"discover", "--discovery-port", discovery_port, "--json"});
  EXPECT_EQ(status, 0) << out;
  auto b = json::parse(out).as_object();
  EXPECT_EQ(b.at("broker_name").as_string(), "cli-test");
  EXPECT_EQ(b.at("broker_address").as_string(), address);
  // Without --broker, send finds it by discovery, and goes on at the first answer: not at the
  // end of a 30 s discovery timeout.
  const auto start = std::chrono::steady_clock::now();
  auto [s2, out2] = test::run_command(agent_binary, {"--discovery-port", discovery_port, "--discovery-timeout-ms", "30s",
                                                     "--user", "alice", "send", "bob", "via discovery"});
  EXPECT_EQ(s2, 0) << out2;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s) << "send waited for the discovery timeout";
}

// --broker takes the brokers of a cluster, comma-separated: one that is down is passed over.
TEST_F(AgentCli, SeveralBrokersAreTriedInTurn) {
  auto [status, out] = test::run_command(
      agent_binary, {"--broker", "127.0.0.1:1," + address, "--user", "alice", "send", "bob", "hello", "--uuid", "many-1"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out, "many-1 dead_lettered\n");
  auto [bad, why] = test::run_command(agent_binary, {"--broker", ",", "--user", "alice", "users"});
  EXPECT_EQ(bad, 1) << why;
  auto [none, said] = test::run_command(agent_binary, {"--broker", "127.0.0.1:1,127.0.0.1:2", "--user", "a", "users"});
  EXPECT_EQ(none, 2) << said;
  EXPECT_NE(said.find("nor at the 1 other broker given"), std::string::npos) << said;
}

TEST_F(AgentCli, ExitCodes) {
  // 1: bad usage, refused before anything is sent.
  auto [s1, out1] = agent({"--user", "bad name", "send", "bob", "x"});
  EXPECT_EQ(s1, 1);
  EXPECT_NE(out1.find("1 to 64 characters"), std::string::npos) << out1;
  auto [s1b, out1b] = agent({"--user", "alice", "send", "bob"});
  EXPECT_EQ(s1b, 1) << out1b;
  auto [s1c, out1c] = agent({"--user", "alice", "teleport"});
  EXPECT_EQ(s1c, 1) << out1c;
  // 2: no broker.
  auto [s2, out2] = test::run_command(agent_binary, {"--discovery-port", "9", "--discovery-timeout-ms", "200", "--user", "a",
                                                     "send", "b", "x"});
  EXPECT_EQ(s2, 2);
  EXPECT_NE(out2.find("239.255.77.77"), std::string::npos) << out2;
  EXPECT_NE(out2.find("--broker"), std::string::npos) << out2;
  auto [s2b, out2b] = test::run_command(agent_binary, {"--broker", "127.0.0.1:1", "--user", "a", "users"});
  EXPECT_EQ(s2b, 2) << out2b;
  // 3: refused by the broker, its code and sentence on stderr.
  auto [s3, out3] = agent({"--user", "eve", "group", "send", "nothere", "x"});
  EXPECT_EQ(s3, 3);
  EXPECT_NE(out3.find("unknown_group"), std::string::npos) << out3;
}

TEST_F(AgentCli, UsersGroupsMulticastBroadcast) {
  auto bob = listener("bob", {"--json", "listen", "--count", "3", "--timeout-ms", "20000"});
  auto [s1, users] = agent({"--user", "alice", "users"});
  EXPECT_EQ(s1, 0);
  EXPECT_EQ(users, "bob\n");  // a one-shot command logs in send-only: it is not online itself
  auto [s2, created] = agent({"--user", "alice", "group", "create", "ops", "bob"});
  EXPECT_EQ(s2, 0) << created;
  EXPECT_EQ(created, "ops: alice bob\n");
  auto [s3, list] = agent({"--user", "bob", "--json", "group", "list"});  // the groups bob is in
  EXPECT_EQ(s3, 0);
  EXPECT_EQ(json::parse(list).at("group_members").as_array().size(), 2u);
  auto [s4, sent] = agent({"--user", "alice", "group", "send", "ops", "to the group"});
  EXPECT_EQ(s4, 0) << sent;
  EXPECT_NE(sent.find("bob=relayed"), std::string::npos) << sent;
  auto [s5, multi] = agent({"--user", "alice", "multicast", "bob,zed", "to some"});
  EXPECT_EQ(s5, 0) << multi;
  EXPECT_NE(multi.find("zed=dead_lettered"), std::string::npos) << multi;
  auto [s6, all] = agent({"--user", "alice", "broadcast", "to all"});
  EXPECT_EQ(s6, 0) << all;
  EXPECT_EQ(bob->wait(20s), 0);
  const std::string got = bob->log();
  EXPECT_NE(got.find("\"channel\":\"group\""), std::string::npos) << got;
  EXPECT_NE(got.find("\"channel\":\"multicast\""), std::string::npos) << got;
  EXPECT_NE(got.find("\"channel\":\"broadcast\""), std::string::npos) << got;
}

TEST_F(AgentCli, ListenEndsCleanlyOnSigint) {
  auto bob = listener("bob", {"listen"});
  bob->signal(SIGINT);
  EXPECT_EQ(bob->wait(20s), 0) << bob->log();
  EXPECT_TRUE(broker->wait_for_log(std::regex("'bob' logged out"), 20s));
}

// message-agent chat in a pseudo-terminal: what it shows, keys typed into it.
struct chat_terminal {
  chat_terminal(const std::string& address, const std::string& user) {
    pid = ::forkpty(&master, nullptr, nullptr, nullptr);
    if (pid == 0) {
      ::execl(agent_binary.c_str(), agent_binary.c_str(), "--broker", address.c_str(), "--user", user.c_str(), "chat",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~chat_terminal() {
    if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
    if (master >= 0) ::close(master);
  }
  // Reads what the chat writes until needle has appeared since `from` (an offset in screen).
  bool read_until(const std::string& needle, std::chrono::milliseconds timeout, std::size_t from = 0) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (screen.find(needle, from) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{master, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) break;
      screen.append(buf, static_cast<std::size_t>(n));
    }
    return screen.find(needle, from) != std::string::npos;
  }
  void type(const std::string& keys) { (void)!::write(master, keys.data(), keys.size()); }
  // The exit status once the chat has ended, or -1 if it did not within the timeout.
  int wait(std::chrono::milliseconds timeout) {
    int st = 0;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    pid_t done = 0;
    while ((done = ::waitpid(pid, &st, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
      read_until("\x01", 50ms);  // keep the terminal drained
    }
    if (done != pid) return -1;
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  int master = -1;
  pid_t pid = -1;
  std::string screen;
};

// chat in a pseudo-terminal: type a message, see one arrive.
TEST_F(AgentCli, ChatThroughAPseudoTerminal) {
  chat_terminal chat(address, "alice");
  ASSERT_GT(chat.pid, 0);
  EXPECT_TRUE(chat.read_until("connected to cli-test as alice", 20s)) << chat.screen;
  auto bob = listener("bob", {"listen", "--count", "1", "--timeout-ms", "20000"});
  EXPECT_TRUE(chat.read_until("* bob joined", 20s)) << chat.screen;
  // Half a line typed when a message arrives: the message shows, the half line survives.
  chat.type("/to bob hel");
  auto [status, out] = agent({"--user", "carol", "send", "alice", "hi alice"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(chat.read_until("carol: hi alice", 20s)) << chat.screen;
  EXPECT_TRUE(chat.read_until("/to bob hel", 5s)) << chat.screen;
  chat.type("lo from chat\r");
  EXPECT_TRUE(chat.read_until("(relayed to bob)", 20s)) << chat.screen;
  EXPECT_EQ(bob->wait(20s), 0);
  EXPECT_NE(bob->log().find("alice -> bob (direct): hello from chat"), std::string::npos) << bob->log();
  chat.type("/users\r");
  EXPECT_TRUE(chat.read_until("online: alice", 20s)) << chat.screen;
  // Issue item 11: one backspace over "é" deleted one of its two bytes; the line was no longer
  // UTF-8 and its send never returned.
  chat.type("/to carol caf\xc3\xa9\x7f" "e\r");
  EXPECT_TRUE(chat.read_until("(dead_lettered to carol)", 20s)) << chat.screen;
  {
    database db({dir.file("broker.db"), false, false});
    auto letters = db.list({std::string("carol"), std::nullopt, std::nullopt, 10});
    ASSERT_EQ(letters.size(), 1u);
    EXPECT_EQ(letters[0].body, "{\"message_text\":\"cafe\"}");
  }
  chat.type("/quit\r");
  EXPECT_EQ(chat.wait(20s), 0);
}

// Issue 17: the chat edits a line at its cursor and recalls earlier ones; a message that
// arrives while a line is half typed does not change where that line goes; groups are made,
// joined and left from it; a dropped connection is said, and so is the reconnect; Ctrl-C ends
// it cleanly.
TEST_F(AgentCli, ChatEditsLinesKeepsTheirRecipientAndSaysWhenTheConnectionDrops) {
  chat_terminal chat(address, "alice");
  ASSERT_GT(chat.pid, 0);
  ASSERT_TRUE(chat.read_until("connected to cli-test as alice", 20s)) << chat.screen;
  auto bob = listener("bob", {"listen", "--count", "2", "--timeout-ms", "30000"});
  // Typed with a mistake, mended with the arrows and Home/End.
  chat.type("/to bob helo\x1b[Dl\x1b[H\x1b[C\x1b[F!\r");
  EXPECT_TRUE(chat.read_until("(relayed to bob)", 20s)) << chat.screen;
  // Half a line to bob, then carol writes: the line still goes to bob, and the prompt follows
  // carol only after it.
  chat.type("still for bo");
  auto [status, out] = agent({"--user", "carol", "send", "alice", "it is carol"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(chat.read_until("carol: it is carol", 20s)) << chat.screen;
  const std::size_t mark = chat.screen.size();
  chat.type("b\r");
  EXPECT_TRUE(chat.read_until("(relayed to bob)", 20s, mark)) << chat.screen;
  EXPECT_TRUE(chat.read_until("to carol> ", 20s, mark)) << chat.screen;
  EXPECT_EQ(bob->wait(20s), 0);
  EXPECT_NE(bob->log().find("alice -> bob (direct): hello!"), std::string::npos) << bob->log();
  EXPECT_NE(bob->log().find("alice -> bob (direct): still for bob"), std::string::npos) << bob->log();
  // Up recalls the line sent before, to be sent again.
  chat.type("/users\r");
  EXPECT_TRUE(chat.read_until("online: alice", 20s)) << chat.screen;
  std::size_t at = chat.screen.size();
  chat.type("\x1b[A\r");
  EXPECT_TRUE(chat.read_until("online: alice", 20s, at)) << chat.screen;
  // Groups.
  chat.type("/create ops alice bob\r");
  EXPECT_TRUE(chat.read_until("(group ops: alice bob)", 20s)) << chat.screen;
  chat.type("/leave ops\r");
  EXPECT_TRUE(chat.read_until("(group ops: bob)", 20s)) << chat.screen;
  chat.type("/join ops\r");
  EXPECT_TRUE(chat.read_until("(group ops: ", 20s, chat.screen.find("(group ops: bob)") + 16)) << chat.screen;
  EXPECT_TRUE(chat.read_until("alice", 20s, chat.screen.find("(group ops: bob)") + 16)) << chat.screen;

  // The broker stops and comes back on the same port and file.
  const std::string port = address.substr(address.rfind(':') + 1);
  broker->signal(SIGTERM);
  ASSERT_EQ(broker->wait(20s), 0) << broker->log();
  EXPECT_TRUE(chat.read_until("! connection lost, reconnecting", 20s)) << chat.screen;
  broker = std::make_unique<test::child_process>(
      broker_binary,
      std::vector<std::string>{"--port", port, "--discovery", "off", "--database", dir.file("broker.db"),
                               "--broker-name", "cli-test"},
      dir.file("broker2.log"));
  EXPECT_TRUE(chat.read_until("* reconnected to cli-test", 30s)) << chat.screen << broker->log();

  chat.type("half a line");
  ::kill(chat.pid, SIGINT);  // Ctrl-C
  EXPECT_EQ(chat.wait(20s), 0) << chat.screen;
  EXPECT_TRUE(broker->wait_for_log(std::regex("'alice' logged out"), 20s)) << broker->log();
}

// Issue item 11: text that is not UTF-8 got malformed_json from the broker, which could not
// be matched to the send, and the command never returned.
TEST_F(AgentCli, TextThatIsNotUtf8IsRefusedAtOnce) {
  const auto start = std::chrono::steady_clock::now();
  auto [status, out] = agent({"--user", "alice", "send", "bob", "caf\xc3"});
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("not valid UTF-8"), std::string::npos) << out;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  database db({dir.file("broker.db"), false, false});
  EXPECT_EQ(db.count_all_pending(), 0);  // nothing was sent
}

// Issue item 6: send, users, group and listen --count logged in as full agents, were handed the
// user's pending letters and left without reading them: five sends parked a letter.
TEST_F(AgentCli, OneShotCommandsUseNoDeliveryAttempts) {
  for (int i = 0; i < 3; ++i) {
    auto [s, out] = agent({"--user", "alice", "send", "bob", "waiting " + std::to_string(i), "--uuid", "wait-" + std::to_string(i)});
    EXPECT_EQ(s, 0) << out;
    EXPECT_EQ(out, "wait-" + std::to_string(i) + " dead_lettered\n");
  }
  for (int i = 0; i < 5; ++i) {
    auto [s, out] = agent({"--user", "bob", "send", "alice", "hello"});
    EXPECT_EQ(s, 0) << out;
  }
  EXPECT_EQ(agent({"--user", "bob", "users"}).first, 0);
  EXPECT_EQ(agent({"--user", "bob", "group", "list"}).first, 0);
  {
    database db({dir.file("broker.db"), false, false});
    for (auto& d : db.list({std::string("bob"), std::nullopt, std::nullopt, 10})) {
      EXPECT_EQ(d.attempts, 0) << d.message_uuid;
      EXPECT_EQ(d.state, dead_letter_state::pending) << d.message_uuid;
    }
  }
  // listen --count 1 takes one: the two others are not handed to it.
  auto [s, out] = agent({"--user", "bob", "listen", "--count", "1", "--timeout-ms", "20000"});
  EXPECT_EQ(s, 0) << out;
  EXPECT_NE(out.find("redelivery 1, recipient_offline): waiting 0"), std::string::npos) << out;
  EXPECT_EQ(out.find("waiting 1"), std::string::npos) << out;
  EXPECT_TRUE(broker->wait_for_log(std::regex("'bob' (logged out|disconnected)"), 20s));
  database db({dir.file("broker.db"), false, false});
  EXPECT_TRUE(test::eventually([&] { return db.find("wait-0")[0].state == dead_letter_state::delivered; }));
  EXPECT_EQ(db.find("wait-1")[0].attempts, 0);
  EXPECT_EQ(db.find("wait-2")[0].attempts, 0);
}

}  // namespace
}  // namespace ma
