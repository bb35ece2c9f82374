// Brokers as one cluster over real nats-servers: three nats-servers routed into one NATS
// cluster with JetStream (each its own store, free ports on 127.0.0.1) and three real
// message-broker binaries joined to it. Every wait is for an event, with a deadline that leaves
// room for a loaded 2-core machine.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <array>
#include <set>
#include <atomic>
#include <latch>
#include <memory>
#include <thread>

#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::client;
using clock_type = std::chrono::steady_clock;

const std::string broker_binary = MA_BROKER_BINARY;
const std::string nats_server_binary = MA_NATS_SERVER;

// Three nats-servers, routed to each other, JetStream on.
class nats_cluster {
 public:
  explicit nats_cluster(const test::temp_dir& dir) : dir_(dir) {
    // A port found free may be taken by another test before the server binds it: new ports then.
    for (int attempt = 0; attempt < 3; ++attempt) {
      for (int i = 0; i < 3; ++i) {
        client_ports_[i] = test::free_port();
        route_ports_[i] = test::free_port();
      }
      if (start()) return;
    }
    ADD_FAILURE() << "the nats-servers did not start: " << servers_[0]->log();
  }
  // Starts the three servers (again: on the same ports and store directories); true once every
  // one is ready.
  bool start() {
    std::string routes;
    for (auto p : route_ports_) routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") + std::to_string(p);
    for (int i = 0; i < 3; ++i) {
      const std::string name = "n" + std::to_string(i + 1);
      servers_[i].reset();
      servers_[i] = std::make_unique<test::child_process>(
          nats_server_binary,
          std::vector<std::string>{"-a", "127.0.0.1", "-p", std::to_string(client_ports_[i]), "-n", name,
                                   "--cluster_name", "ma-test", "--cluster",
                                   "nats://127.0.0.1:" + std::to_string(route_ports_[i]), "--routes", routes, "-js",
                                   "-sd", dir_.file(name)},
          dir_.file(name + "-" + std::to_string(++starts_) + ".log"));
    }
    for (auto& s : servers_) {
      if (!s->wait_for_log(std::regex("(Server is ready)"), 30s)) return false;
    }
    return true;
  }
  // The --cluster-nats value: every server.
  std::string urls() const {
    std::string out;
    for (auto p : client_ports_) out += (out.empty() ? "" : ",") + std::string("nats://127.0.0.1:") + std::to_string(p);
    return out;
  }
  test::child_process& server(int i) { return *servers_[i]; }

 private:
  const test::temp_dir& dir_;
  std::array<std::uint16_t, 3> client_ports_{};
  std::array<std::uint16_t, 3> route_ports_{};
  std::array<std::unique_ptr<test::child_process>, 3> servers_;
  int starts_ = 0;
};

// A real broker of the cluster, on its own database.
class cluster_broker {
 public:
  cluster_broker(const test::temp_dir& dir, const nats_cluster& nats, const std::string& name,
                 const std::vector<std::string>& more = {}) {
    auto args = std::vector<std::string>{"--port", "0", "--discovery", "off", "--database", dir.file(name + ".db"),
                                         "--broker-name", name, "--cluster-nats", nats.urls(), "--cluster-name",
                                         "test"};
    args.insert(args.end(), more.begin(), more.end());
    static std::atomic<int> runs{0};  // a log per run: a restarted broker's port is in its own
    process_ = std::make_unique<test::child_process>(broker_binary, args,
                                                     dir.file(name + "-" + std::to_string(++runs) + ".log"));
    auto port = test::listening_port(*process_, 30s);
    EXPECT_TRUE(port) << process_->log();
    port_ = port.value_or(0);
    // Until then a log_in would get server_busy: the first JetStream buckets take a moment.
    EXPECT_TRUE(process_->wait_for_log(std::regex("(the registry is ready)"), 60s)) << process_->log();
  }
  std::uint16_t port() const { return port_; }
  test::child_process& process() { return *process_; }

 private:
  std::unique_ptr<test::child_process> process_;
  std::uint16_t port_ = 0;
};

// The message_id of the broker's first answer to a log_in, and its error_code if an error.
std::string log_in_answer(client& c, const std::string& name, std::chrono::milliseconds timeout = 20s) {
  c.send("log_in", {{"sender_username", name}});
  auto frame = c.recv(timeout);
  if (!frame) return "nothing";
  const std::string kind(frame->at("message_id").as_string());
  if (kind != "error") return kind;
  return std::string(frame->at("message_content").as_object().at("error_code").as_string());
}

// The content of the next receive_message, acknowledged; empty if none came in time.
boost::json::object receive_and_ack(client& c, std::chrono::milliseconds timeout = 20s) {
  auto m = c.expect_content("receive_message", timeout);
  if (!m.empty()) c.send("acknowledge_message", {{"message_uuid", m.at("message_uuid")}});
  return m;
}

// Waits until the broker of c lists name online (true), or the deadline passes. A user's
// presence reaches the other brokers through the registry's watch, a moment after its log_in.
bool listed(client& c, const std::string& name, bool online = true, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = clock_type::now() + timeout;
  while (clock_type::now() < deadline) {
    c.send("get_user_list");
    auto list = c.expect_content("user_list");
    const auto& users = list.at("user_list").as_array();
    const bool there = std::find(users.begin(), users.end(), boost::json::value(name)) != users.end();
    if (there == online) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

class Cluster : public ::testing::Test {
 protected:
  test::temp_dir dir;
  nats_cluster nats{dir};
};

// Issue 16: a name is held once in the whole cluster. Each round, three agents log in under one
// new name at the three brokers at the same moment: exactly one wins.
TEST_F(Cluster, ANameIsHeldOnceUnderAConcurrentLoginRaceAcrossThreeBrokers) {
  std::array<std::unique_ptr<cluster_broker>, 3> brokers;
  for (int i = 0; i < 3; ++i) brokers[i] = std::make_unique<cluster_broker>(dir, nats, "b" + std::to_string(i + 1));
  for (int round = 0; round < 20; ++round) {
    const std::string name = "racer-" + std::to_string(round);
    std::array<std::unique_ptr<client>, 3> clients;
    for (int i = 0; i < 3; ++i) clients[i] = std::make_unique<client>(brokers[i]->port());
    std::array<std::string, 3> answers;
    std::latch go(3);
    std::vector<std::thread> racers;
    for (int i = 0; i < 3; ++i) {
      racers.emplace_back([&, i] {
        go.arrive_and_wait();
        answers[i] = log_in_answer(*clients[i], name);
      });
    }
    for (auto& t : racers) t.join();
    int won = 0, taken = 0;
    for (const auto& a : answers) {
      won += a == "acknowledge_log_in";
      taken += a == "username_taken";
    }
    EXPECT_EQ(won, 1) << "round " << round << ": " << answers[0] << ", " << answers[1] << ", " << answers[2];
    EXPECT_EQ(taken, 2) << "round " << round << ": " << answers[0] << ", " << answers[1] << ", " << answers[2];
  }
}

// A name is free elsewhere once its session ends: at once after a log_out, and within 15 s of
// its broker being killed with -9 (its liveness entry expires; nobody releases anything).
TEST_F(Cluster, ANameIsFreeElsewhereAfterALogOutAndWithin15SecondsOfAKill) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2");
  {
    client alice(b1.port());
    ASSERT_EQ(log_in_answer(alice, "alice"), "acknowledge_log_in");
    client other(b2.port());
    EXPECT_EQ(log_in_answer(other, "alice"), "username_taken");
    alice.send("log_out");
    alice.expect("acknowledge_log_out");
  }
  // The release goes to the registry after the acknowledgement: a log_in right after it may
  // still find the name held, for a moment.
  const auto deadline = clock_type::now() + 10s;
  std::string answer;
  std::unique_ptr<client> alice;
  while (clock_type::now() < deadline) {
    alice = std::make_unique<client>(b2.port());
    answer = log_in_answer(*alice, "alice");
    if (answer != "username_taken") break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(answer, "acknowledge_log_in") << "alice could not log in at b2 after logging out at b1";

  // Now alice is at b2; b2 is killed with -9 and b1 takes her.
  client other(b1.port());
  EXPECT_EQ(log_in_answer(other, "alice"), "username_taken");
  b2.process().signal(SIGKILL);
  const auto killed = clock_type::now();
  answer.clear();
  while (clock_type::now() - killed < 25s) {
    client again(b1.port());
    answer = log_in_answer(again, "alice");
    if (answer == "acknowledge_log_in") break;
    EXPECT_EQ(answer, "username_taken");
    std::this_thread::sleep_for(250ms);
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - killed);
  EXPECT_EQ(answer, "acknowledge_log_in");
  EXPECT_LE(took, 15s) << "alice logged in at b1 " << took.count() << " ms after b2 was killed";
  std::printf("alice logged in at b1 %lld ms after b2 was killed with -9\n", static_cast<long long>(took.count()));
}

// A broker stopped gracefully frees its names at once (it deletes its liveness entry), not 6 s
// later as after a kill; it exits cleanly (under the sanitizers: no leak in the cluster part).
TEST_F(Cluster, AStoppedBrokersNamesAreFreeAtOnce) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2");
  client alice(b1.port());
  ASSERT_EQ(log_in_answer(alice, "alice"), "acknowledge_log_in");
  client carol(b1.port());
  ASSERT_EQ(log_in_answer(carol, "carol"), "acknowledge_log_in");
  b1.process().signal(SIGTERM);
  EXPECT_EQ(b1.process().wait(30s), 0) << b1.process().log();
  for (const char* name : {"alice", "carol"}) {
    client again(b2.port());
    EXPECT_EQ(log_in_answer(again, name), "acknowledge_log_in") << name << " is still held by the stopped broker";
  }
}

// With a password file (the same on every broker), a right password at one broker takes the
// name from the session at another, as on one broker; a wrong one takes nothing.
TEST_F(Cluster, ARightPasswordTakesANameOverFromAnotherBroker) {
  const std::string passwords = dir.file("passwords");
  const std::vector<std::string> cheap = {"--password-hash-ops", "1", "--password-hash-mem-kib", "8"};
  std::vector<std::string> passwd = {"passwd", "--password-file", passwords};
  passwd.insert(passwd.end(), cheap.begin(), cheap.end());
  passwd.push_back("alice");
  auto [status, out] = test::run_command(broker_binary, passwd, std::string("a-secret\n"));
  ASSERT_EQ(status, 0) << out;
  std::vector<std::string> with_passwords = {"--password-file", passwords};
  with_passwords.insert(with_passwords.end(), cheap.begin(), cheap.end());
  cluster_broker b1(dir, nats, "b1", with_passwords), b2(dir, nats, "b2", with_passwords);

  client first(b1.port());
  first.send("log_in", {{"sender_username", "alice"}, {"password", "a-secret"}});
  first.expect("acknowledge_log_in", 20s);
  client wrong(b2.port());
  wrong.send("log_in", {{"sender_username", "alice"}, {"password", "guess"}});
  wrong.expect_error("auth_failed", 20s);
  EXPECT_TRUE(first.quiet_of("error", 500ms)) << "a wrong password took the name";

  client second(b2.port());
  second.send("log_in", {{"sender_username", "alice"}, {"password", "a-secret"}});
  second.expect("acknowledge_log_in", 20s);
  first.expect_error("session_taken_over", 20s);
  EXPECT_TRUE(first.closed_within(20s));
  client third(b1.port());
  EXPECT_EQ(log_in_answer(third, "alice"), "auth_failed") << "no password: refused before the cluster is asked";
}

// The whole cluster killed and started again (nats-servers on their stores, brokers on their
// databases): the names held before are void (the brokers start in new epochs), and every
// name is held once again.
TEST_F(Cluster, TheWholeClusterRestartedConverges) {
  auto b1 = std::make_unique<cluster_broker>(dir, nats, "b1");
  auto b2 = std::make_unique<cluster_broker>(dir, nats, "b2");
  {
    client alice(b1->port()), bob(b2->port());
    ASSERT_EQ(log_in_answer(alice, "alice"), "acknowledge_log_in");
    ASSERT_EQ(log_in_answer(bob, "bob"), "acknowledge_log_in");
    b1->process().signal(SIGKILL);
    b2->process().signal(SIGKILL);
    for (int i = 0; i < 3; ++i) nats.server(i).signal(SIGKILL);
    b1->process().wait(10s);
    b2->process().wait(10s);
    for (int i = 0; i < 3; ++i) nats.server(i).wait(10s);
  }
  ASSERT_TRUE(nats.start()) << nats.server(0).log();
  b1 = std::make_unique<cluster_broker>(dir, nats, "b1");
  b2 = std::make_unique<cluster_broker>(dir, nats, "b2");
  // bob, who was at b2, at b1 now; alice, who was at b1, at b2: no need to wait for an expiry.
  client bob(b1->port()), alice(b2->port());
  EXPECT_EQ(log_in_answer(bob, "bob"), "acknowledge_log_in");
  EXPECT_EQ(log_in_answer(alice, "alice"), "acknowledge_log_in");
  client twin(b2->port());
  EXPECT_EQ(log_in_answer(twin, "bob"), "username_taken");
  // Presence converged too: alice, at b2, sees bob at b1 and reaches him.
  ASSERT_TRUE(listed(alice, "bob"));
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "after the restart"}});
  EXPECT_EQ(alice.expect_content("message_accepted").at("status"), "relayed");
  EXPECT_EQ(receive_and_ack(bob).at("message_text"), "after the restart");
  EXPECT_FALSE(alice.expect_content("message_delivered", 20s).empty());
}

// One nats-server of three down: names are still claimed and released (the buckets keep a
// quorum of two replicas; cnats reconnects to another server).
TEST_F(Cluster, LogInsGoOnWithOneNatsServerOfThreeDown) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2");
  nats.server(0).signal(SIGKILL);
  const auto killed = clock_type::now();
  // A broker whose nats-server died may answer server_busy while cnats moves to another one
  // and the buckets elect new leaders (a claim is retried for 7 s first): ask again then.
  // The answer, and the connection that got it (a session that won keeps its name while open).
  auto answer_at = [&](const cluster_broker& b, const std::string& name, std::unique_ptr<client>& c) {
    std::string answer;
    const auto deadline = clock_type::now() + 60s;
    while (clock_type::now() < deadline) {
      c = std::make_unique<client>(b.port());
      answer = log_in_answer(*c, name);
      if (answer != "server_busy" && answer != "nothing") break;
      std::this_thread::sleep_for(250ms);
    }
    return answer;
  };
  std::unique_ptr<client> bob, twin;
  EXPECT_EQ(answer_at(b1, "bob", bob), "acknowledge_log_in");
  std::printf("a log_in went through %lld ms after a nats-server was killed\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - killed).count()));
  EXPECT_EQ(answer_at(b2, "bob", twin), "username_taken") << "bob was let in twice";

  // Traffic goes on: a message from b2 to bob at b1, and its receipt.
  std::unique_ptr<client> alice;
  ASSERT_EQ(answer_at(b2, "alice", alice), "acknowledge_log_in");
  const auto asked = clock_type::now();
  ASSERT_TRUE(listed(*alice, "bob", true, 30s));
  std::printf("bob, at b1, listed at b2 %lld ms later\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - asked).count()));
  alice->send("send_message", {{"receiver_username", "bob"}, {"message_text", "still here"}});
  alice->expect("message_accepted", 20s);
  EXPECT_EQ(receive_and_ack(*bob, 30s).at("message_text"), "still here");
  EXPECT_FALSE(alice->expect_content("message_delivered", 30s).empty());
}

// Issue 16: a direct message from a user at one broker to a user at another, and its receipt;
// a multicast and a broadcast across three brokers.
TEST_F(Cluster, MessagesCrossBrokersWithTheirReceipts) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2"), b3(dir, nats, "b3");
  client alice(b1.port()), bob(b2.port()), carol(b3.port());
  alice.log_in("alice");
  bob.log_in("bob");
  carol.log_in("carol");
  ASSERT_TRUE(listed(alice, "bob"));
  ASSERT_TRUE(listed(alice, "carol"));
  ASSERT_TRUE(listed(bob, "carol"));

  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "hi bob"}, {"message_uuid", "d-1"}});
  EXPECT_EQ(alice.expect_content("message_accepted").at("status"), "relayed");
  auto got = receive_and_ack(bob);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.at("message_text"), "hi bob");
  EXPECT_EQ(got.at("sender_username"), "alice");
  EXPECT_EQ(got.at("redelivery"), false);
  auto receipt = alice.expect_content("message_delivered", 20s);
  EXPECT_EQ(receipt.at("message_uuid"), "d-1");
  EXPECT_EQ(receipt.at("receiver_username"), "bob");

  alice.send("multicast_message", {{"receiver_usernames", {"bob", "carol"}}, {"message_text", "to you two"}});
  alice.expect("message_accepted");
  EXPECT_EQ(receive_and_ack(bob).at("channel"), "multicast");
  EXPECT_EQ(receive_and_ack(carol).at("channel"), "multicast");

  carol.send("broadcast_message", {{"message_text", "to all"}});
  carol.expect("message_accepted");
  EXPECT_EQ(receive_and_ack(alice).at("message_text"), "to all");
  EXPECT_EQ(receive_and_ack(bob).at("message_text"), "to all");
  // Receipts from two brokers come back to carol's.
  int receipts = 0;
  while (receipts < 2 && !carol.expect_content("message_delivered", 20s).empty()) ++receipts;
  EXPECT_EQ(receipts, 2);
}

// Groups are the cluster's (held in its registry): a group made at one broker is joined at
// another, and its messages reach members at all three.
TEST_F(Cluster, GroupsAreTheClusters) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2"), b3(dir, nats, "b3");
  client alice(b1.port()), bob(b2.port()), carol(b3.port());
  alice.log_in("alice");
  bob.log_in("bob");
  carol.log_in("carol");
  alice.send("create_group", {{"group_name", "ops"}, {"group_members", {"bob"}}});
  EXPECT_EQ(alice.expect_content("acknowledge_group", 20s).at("group_members"), (boost::json::array{"alice", "bob"}));
  // carol's broker learns of the group through the registry's watch, a moment later.
  const auto deadline = clock_type::now() + 20s;
  boost::json::object joined;
  while (clock_type::now() < deadline) {
    carol.send("join_group", {{"group_name", "ops"}});
    auto frame = carol.recv(20s);
    ASSERT_TRUE(frame);
    if (frame->at("message_id") == "acknowledge_group") {
      joined = frame->at("message_content").as_object();
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(joined.at("group_members"), (boost::json::array{"alice", "bob", "carol"}));
  ASSERT_TRUE(listed(bob, "carol"));
  ASSERT_TRUE(listed(bob, "alice"));
  // bob's broker has seen carol's join once its group list says so.
  const auto seen_by = clock_type::now() + 20s;
  while (clock_type::now() < seen_by) {
    bob.send("get_group_list");
    auto list = bob.expect_content("group_list");
    if (boost::json::serialize(list).find("carol") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  bob.send("group_message", {{"group_name", "ops"}, {"message_text", "to ops"}});
  bob.expect("message_accepted");
  for (client* member : {&alice, &carol}) {
    auto m = receive_and_ack(*member);
    EXPECT_EQ(m.at("group_name"), "ops");
    EXPECT_EQ(m.at("message_text"), "to ops");
  }
}

// Relays stay within what a nats-server takes in one message (1 MB by default): eight letters of
// 200 KB, redelivered across brokers in one burst of the pump, all arrive.
TEST_F(Cluster, LargeLettersAreRedeliveredAcrossBrokers) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2");
  client alice(b1.port());
  alice.log_in("alice");
  const std::string big(200 * 1024, 'x');
  for (int i = 0; i < 8; ++i) {
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", big}, {"message_uuid", "big-" + std::to_string(i)}});
    EXPECT_EQ(alice.expect_content("message_accepted").at("status"), "dead_lettered");
  }
  client bob(b2.port());
  bob.log_in("bob");
  for (int i = 0; i < 8; ++i) {
    auto m = receive_and_ack(bob, 30s);
    ASSERT_FALSE(m.empty()) << "letter " << i << " did not arrive";
    EXPECT_EQ(std::string(m.at("message_uuid").as_string()), "big-" + std::to_string(i));
    EXPECT_EQ(m.at("message_text").as_string().size(), big.size());
  }
}

// Presence and user lists are the cluster's: a user at another broker is listed, announced when
// it logs in and when it leaves.
TEST_F(Cluster, PresenceAndUserListsAreClusterWide) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2");
  client alice(b1.port());
  alice.log_in("alice");
  {
    client bob(b2.port());
    bob.log_in("bob");
    auto update = alice.expect_content("update_user_set", 20s);
    EXPECT_EQ(update.at("joined"), (boost::json::array{"bob"}));
    EXPECT_TRUE(listed(alice, "bob"));
    EXPECT_TRUE(listed(bob, "alice"));
    bob.send("log_out");
    bob.expect("acknowledge_log_out");
  }
  auto update = alice.expect_content("update_user_set", 20s);
  EXPECT_EQ(update.at("left"), (boost::json::array{"bob"}));
  EXPECT_TRUE(listed(alice, "bob", false));
}

// Letters for a user who is offline, from senders at two brokers, wait in those brokers'
// Dead Letter Channels and are redelivered when the user logs in at a third, in order per sender.
TEST_F(Cluster, LettersFromTwoBrokersAreRedeliveredAtALogInToAThird) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2"), b3(dir, nats, "b3");
  client alice(b1.port()), bob(b2.port());
  alice.log_in("alice");
  bob.log_in("bob");
  for (int i = 0; i < 5; ++i) {
    alice.send("send_message", {{"receiver_username", "dave"}, {"message_text", "a" + std::to_string(i)}});
    bob.send("send_message", {{"receiver_username", "dave"}, {"message_text", "b" + std::to_string(i)}});
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(alice.expect_content("message_accepted").at("status"), "dead_lettered");
    EXPECT_EQ(bob.expect_content("message_accepted").at("status"), "dead_lettered");
  }
  client dave(b3.port());
  dave.log_in("dave");
  std::vector<std::string> from_alice, from_bob;
  for (int i = 0; i < 10; ++i) {
    auto m = receive_and_ack(dave, 30s);
    ASSERT_FALSE(m.empty()) << "after " << i << " letters";
    EXPECT_EQ(m.at("redelivery"), true);
    (m.at("sender_username") == "alice" ? from_alice : from_bob).emplace_back(m.at("message_text").as_string());
  }
  EXPECT_EQ(from_alice, (std::vector<std::string>{"a0", "a1", "a2", "a3", "a4"}));
  EXPECT_EQ(from_bob, (std::vector<std::string>{"b0", "b1", "b2", "b3", "b4"}));
  EXPECT_TRUE(dave.quiet_of("receive_message", 1s)) << "a letter came twice";
  for (auto* sender : {&alice, &bob}) {
    for (int i = 0; i < 5; ++i) EXPECT_FALSE(sender->expect_content("message_delivered", 20s).empty());
  }
}

// A broker killed with -9 in the middle of a stream to one of its users: the user logs in at
// another broker within 15 s, and every message the sender had accepted reaches it; what it gets
// twice comes marked as a redelivery.
TEST_F(Cluster, ARecipientsBrokerKilledMidStreamLosesNoAcceptedMessage) {
  cluster_broker b1(dir, nats, "b1"), b2(dir, nats, "b2"), b3(dir, nats, "b3");
  client alice(b1.port());
  alice.log_in("alice");
  auto bob = std::make_unique<client>(b2.port());
  bob->log_in("bob");
  ASSERT_TRUE(listed(alice, "bob"));

  constexpr int total = 200;
  std::set<std::string> accepted, received;
  int duplicates = 0, unmarked_duplicates = 0;
  auto take = [&](const boost::json::object& m) {
    const std::string uuid(m.at("message_uuid").as_string());
    if (!received.insert(uuid).second) {
      ++duplicates;
      if (m.at("redelivery") != true) ++unmarked_duplicates;
    }
  };
  for (int i = 0; i < total; ++i) {
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", std::to_string(i)}});
    if (i == total / 2) {
      // bob read half of it, and b2 dies.
      while (received.size() < total / 4) {
        auto m = receive_and_ack(*bob);
        if (m.empty()) break;
        take(m);
      }
      b2.process().signal(SIGKILL);
    }
  }
  for (int i = 0; i < total; ++i) {
    auto a = alice.expect_content("message_accepted", 20s);
    if (a.empty()) break;
    accepted.emplace(a.at("message_uuid").as_string());
  }
  EXPECT_EQ(accepted.size(), static_cast<std::size_t>(total));

  // bob's connection dropped with b2; bob logs in at b3 as soon as the cluster lets it.
  const auto killed = clock_type::now();
  std::string answer;
  while (clock_type::now() - killed < 25s) {
    bob = std::make_unique<client>(b3.port());
    answer = log_in_answer(*bob, "bob");
    if (answer == "acknowledge_log_in") break;
    std::this_thread::sleep_for(250ms);
  }
  ASSERT_EQ(answer, "acknowledge_log_in");
  EXPECT_LE(clock_type::now() - killed, 15s);
  const auto deadline = clock_type::now() + 60s;
  while (clock_type::now() < deadline &&
         !std::includes(received.begin(), received.end(), accepted.begin(), accepted.end())) {
    auto m = receive_and_ack(*bob, 5s);
    if (!m.empty()) take(m);
  }
  std::vector<std::string> lost;
  std::set_difference(accepted.begin(), accepted.end(), received.begin(), received.end(), std::back_inserter(lost));
  EXPECT_TRUE(lost.empty()) << lost.size() << " accepted messages never reached bob";
  EXPECT_EQ(unmarked_duplicates, 0) << "of " << duplicates << " duplicates";
  std::printf("%zu accepted, %zu received, %d duplicates (marked redeliveries)\n", accepted.size(), received.size(),
              duplicates);
}

// The sender's broker killed with -9 in the middle of a stream: what it accepted is in its
// database, and once it is started again it hands every such message to the recipient, at the
// broker the recipient is logged in to.
TEST_F(Cluster, ASendersBrokerKilledMidStreamDeliversWhatItAcceptedOnceRestarted) {
  auto b1 = std::make_unique<cluster_broker>(dir, nats, "b1");
  cluster_broker b2(dir, nats, "b2");
  client bob(b2.port());
  bob.log_in("bob");
  std::set<std::string> accepted, received;
  {
    client alice(b1->port());
    alice.log_in("alice");
    ASSERT_TRUE(listed(alice, "bob"));
    for (int i = 0; i < 200; ++i) {
      alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", std::to_string(i)}});
    }
    // Half of the answers, then the kill: the rest may or may not have been accepted.
    for (int i = 0; i < 100; ++i) {
      auto a = alice.expect_content("message_accepted", 20s);
      ASSERT_FALSE(a.empty());
      accepted.emplace(a.at("message_uuid").as_string());
    }
    b1->process().signal(SIGKILL);
    b1->process().wait(10s);
    while (auto frame = alice.recv(1s)) {
      if (frame->at("message_id") == "message_accepted") {
        accepted.emplace(frame->at("message_content").at("message_uuid").as_string());
      }
    }
  }
  b1 = std::make_unique<cluster_broker>(dir, nats, "b1");
  const auto deadline = clock_type::now() + 60s;
  while (clock_type::now() < deadline &&
         !std::includes(received.begin(), received.end(), accepted.begin(), accepted.end())) {
    auto m = receive_and_ack(bob, 5s);
    if (!m.empty()) received.emplace(m.at("message_uuid").as_string());
  }
  std::vector<std::string> lost;
  std::set_difference(accepted.begin(), accepted.end(), received.begin(), received.end(), std::back_inserter(lost));
  EXPECT_TRUE(lost.empty()) << lost.size() << " of " << accepted.size() << " accepted messages never reached bob";
}

}  // namespace
}  // namespace ma
