// The real message-broker binary: options, SIGKILL in the middle of a stream, SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <fstream>
#include <set>
#include <sys/socket.h>
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <thread>

#include "storage/database.hpp"
#include "storage/sqlite.hpp"
#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::client;
namespace json = boost::json;

const std::string broker_binary = MA_BROKER_BINARY;
using test::broker_args;

TEST(BrokerBinary, CheckConfigPrintsEveryOptionAndItsSource) {
  auto [status, out] = test::run_command(broker_binary, {"--check-config", "--port", "12345"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("port = 12345"), std::string::npos) << out;
  EXPECT_NE(out.find("(command line)"), std::string::npos);
  EXPECT_NE(out.find("ack-timeout-ms = 10000"), std::string::npos);
  EXPECT_NE(out.find("(default)"), std::string::npos);
  for (const char* option : {"password-file = ", "acl-file = ", "tls-port = 0", "tls-require-client-cert = off",
                             "tls-identity-as-username = off", "max-pending-accepts = 4096",
                             "accept-delay-us = 10000"}) {
    EXPECT_NE(out.find(option), std::string::npos) << option << " missing from --check-config:\n" << out;
  }
}

// Listening beyond loopback without a password file is worth a warning: anyone who reaches the
// port can log in under any name. (0.0.0.0 with port 0: nothing else can reach it in a test.)
TEST(BrokerBinary, ListeningBeyondLoopbackWithoutPasswordsWarns) {
  test::temp_dir dir;
  auto args = broker_args(dir);
  args.insert(args.end(), {"--listen-address", "0.0.0.0"});
  test::child_process broker(broker_binary, args, dir.file("run.log"));
  EXPECT_TRUE(broker.wait_for_log(std::regex("listening on (0\\.0\\.0\\.0) without --password-file"), 20s))
      << broker.log();
}

// Every binary says its version (--version, and at the top of --help); the benchmarks print
// their usage for --help and start no run.
TEST(BrokerBinary, EveryBinaryPrintsItsVersionAndItsUsage) {
  const std::string bin = std::string(MA_BUILD_DIR) + "/bin/";
  for (const char* name : {"message-broker", "message-agent", "message-bench", "storage-bench", "compare-bench"}) {
    auto [status, out] = test::run_command(bin + name, {"--version"});
    EXPECT_EQ(status, 0) << name << ": " << out;
    EXPECT_EQ(out, std::string(name) + " " MA_VERSION "\n");
    auto [help_status, help] = test::run_command(bin + name, {"--help"});
    EXPECT_EQ(help_status, 0) << name << ": " << help;
    EXPECT_NE(help.find("sage: "), std::string::npos) << name << ": " << help;  // Usage: or usage:
    EXPECT_NE(help.find("--version"), std::string::npos) << name << ": " << help;
  }
  auto [status, help] = test::run_command(broker_binary, {"--help"});
  EXPECT_NE(help.find("message-broker " MA_VERSION), std::string::npos) << help;
  EXPECT_NE(help.find("message-broker dead-letters"), std::string::npos) << "the subcommands are listed: " << help;
  EXPECT_NE(help.find("message-broker passwd"), std::string::npos) << help;
}

// Issue 17: the startup line names the version and the database; counts read as sentences
// ("1 pending dead letter"); a session that logs out gets one line, not a second
// "disconnected" one.
TEST(BrokerBinary, TheLogIsPlainForAnOperator) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, broker_args(dir), dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  EXPECT_NE(broker.log().find("message-broker " MA_VERSION " "), std::string::npos) << broker.log();
  EXPECT_NE(broker.log().find("database " + dir.file("broker.db")), std::string::npos) << broker.log();
  {
    test::client alice(*port);
    alice.log_in("alice");
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "for later"}});
    alice.expect("message_accepted");
  }
  test::client bob(*port);
  bob.log_in("bob");
  EXPECT_TRUE(broker.wait_for_log(std::regex("'bob' logged in from .*\\((1 pending dead letter)\\)"), 20s))
      << broker.log();
  bob.send("log_out");
  bob.expect("acknowledge_log_out");
  EXPECT_TRUE(broker.wait_for_log(std::regex("'bob' (logged out) \\("), 20s)) << broker.log();
  EXPECT_EQ(broker.log().find("'bob' disconnected"), std::string::npos) << broker.log();
}

// The broker runs with glibc's per-thread cache of freed blocks raised: it starts itself again
// with GLIBC_TUNABLES set, unless the operator set GLIBC_TUNABLES (to anything).
TEST(BrokerBinary, RunsWithALargerMallocCacheUnlessGlibcTunablesIsSet) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's malloc has no such cache";
#endif
  if (std::getenv("GLIBC_TUNABLES")) GTEST_SKIP() << "the test itself runs with GLIBC_TUNABLES";
  // GLIBC_TUNABLES in the environment the broker's process image started with.
  auto tunables_of = [](pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    std::string var;
    while (std::getline(f, var, '\0')) {
      if (var.starts_with("GLIBC_TUNABLES=")) return var.substr(15);
    }
    return std::string("(none)");
  };
  test::temp_dir dir;
  {
    test::child_process broker(broker_binary, broker_args(dir), dir.file("first.log"));
    ASSERT_TRUE(test::listening_port(broker, 20s)) << broker.log();
    EXPECT_EQ(tunables_of(broker.pid()), "glibc.malloc.tcache_count=512");
    // Run again as itself: ps and pgrep still know it by its name.
    std::ifstream comm("/proc/" + std::to_string(broker.pid()) + "/comm");
    std::string name;
    std::getline(comm, name);
    EXPECT_EQ(name, "message-broker");
  }
  test::child_process broker(broker_binary, broker_args(dir), dir.file("second.log"),
                             {"GLIBC_TUNABLES=glibc.malloc.mxfast=64"});
  ASSERT_TRUE(test::listening_port(broker, 20s)) << broker.log();
  EXPECT_EQ(tunables_of(broker.pid()), "glibc.malloc.mxfast=64");
}

// Issue 17: a database folder that can not be made is said in a sentence, with what to do
// (/proc takes no new folder, even from root).
TEST(BrokerBinary, AFolderThatCanNotBeMadeIsSaidInASentence) {
  auto [status, out] = test::run_command(broker_binary, {"--port", "0", "--discovery", "off", "--database",
                                                         "/proc/message-agent-test/broker.db"});
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("Cannot create the folder '/proc/message-agent-test' of the database"), std::string::npos) << out;
  EXPECT_NE(out.find("give --database a file in a folder it can write"), std::string::npos) << out;
}

TEST(BrokerBinary, BadOptionsExitTwoNamingTheOption) {
  auto [s1, out1] = test::run_command(broker_binary, {"--port", "70000"});
  EXPECT_EQ(s1, 2);
  EXPECT_NE(out1.find("--port"), std::string::npos) << out1;
  auto [s2, out2] = test::run_command(broker_binary, {"--frobnicate"});
  EXPECT_EQ(s2, 2);
  EXPECT_NE(out2.find("--frobnicate"), std::string::npos) << out2;
}

TEST(BrokerBinary, RefusesACorruptDatabaseAndLeavesItAlone) {
  test::temp_dir dir;
  { std::ofstream(dir.file("broker.db")) << std::string(5000, 'x'); }
  auto [status, out] = test::run_command(broker_binary, broker_args(dir));
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find(dir.file("broker.db")), std::string::npos) << out;
  std::ifstream in(dir.file("broker.db"));
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), {}), std::string(5000, 'x'));
}

TEST(BrokerBinary, SigkillMidStreamLosesNoAcceptedMessage) {
  constexpr int stream = 40000;
  test::temp_dir dir;
  std::set<std::string> accepted;
  {
    test::child_process broker(broker_binary, broker_args(dir), dir.file("run1.log"));
    auto port = test::listening_port(broker, 20s);
    ASSERT_TRUE(port) << broker.log();
    client alice(*port);
    client bob(*port);
    alice.log_in("alice");
    bob.log_in("bob");  // receives, never acknowledges
    // A stream of 40,000 messages in bursts of 100, 1 ms apart: it lasts long enough that the
    // kill lands in the middle of it on any machine.
    std::atomic<bool> stop{false};
    std::thread sender([&] {
      for (int i = 0; i < stream && !stop; i += 100) {
        std::string burst;
        for (int j = i; j < i + 100; ++j) {
          burst += "{\"message_id\":\"send_message\",\"message_content\":{\"receiver_username\":\"" +
                   std::string(j % 2 ? "bob" : "carol") + "\",\"message_uuid\":\"k" + std::to_string(j) +
                   "\",\"message_text\":\"payload " + std::to_string(j) + "\"}}\n";
        }
        alice.send_raw(burst);
        std::this_thread::sleep_for(1ms);
      }
    });
    // Kill once a good part of the stream was accepted, while the rest is still arriving.
    while (accepted.size() < 2000) {
      auto f = alice.recv(20s);
      ASSERT_TRUE(f) << "the broker stopped answering";
      if (f->at("message_id").as_string() == "message_accepted") {
        accepted.insert(std::string(f->at("message_content").at("message_uuid").as_string()));
      }
    }
    broker.signal(SIGKILL);
    EXPECT_EQ(broker.wait(20s), 128 + SIGKILL);
    // Accepts already on the wire count too: the broker said them.
    while (auto f = alice.recv(200ms)) {
      if (f->at("message_id").as_string() == "message_accepted") {
        accepted.insert(std::string(f->at("message_content").at("message_uuid").as_string()));
      }
    }
    stop = true;
    ::shutdown(alice.fd(), SHUT_RDWR);
    sender.join();
  }
  ASSERT_GE(accepted.size(), 2000u);
  ASSERT_LT(accepted.size(), static_cast<std::size_t>(stream)) << "the kill came after the whole stream";

  test::child_process broker(broker_binary, broker_args(dir), dir.file("run2.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  std::set<std::string> redelivered;
  for (const char* name : {"bob", "carol"}) {
    client c(*port);
    const auto pending = c.log_in(name).at("pending_dead_letters").as_int64();
    json::array acks;
    for (std::int64_t i = 0; i < pending; ++i) {
      auto m = c.expect_content("receive_message", 30s);
      ASSERT_FALSE(m.empty());
      redelivered.insert(std::string(m.at("message_uuid").as_string()));
      acks.emplace_back(m.at("message_uuid"));
      if (acks.size() == 500) {
        c.send("acknowledge_message", {{"message_uuids", acks}});
        acks.clear();
      }
    }
    if (!acks.empty()) c.send("acknowledge_message", {{"message_uuids", acks}});
  }
  for (const auto& uuid : accepted) {
    ASSERT_TRUE(redelivered.count(uuid)) << uuid << " was accepted before the kill and is lost";
  }
  // The sender's retry of an accepted message after the restart is a duplicate, not a new one.
  client alice(*port);
  alice.log_in("alice");
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "again"}, {"message_uuid", *accepted.begin()}});
  EXPECT_TRUE(alice.expect_content("message_accepted").at("duplicate").as_bool());
}

// Issue #15: live deliveries go out before their commit. A W1-style stream (one sender, one
// receiver that acknowledges everything, slowly) on one database, the broker killed at a random
// point 20 times; the sender resends what was not accepted under the same uuid, as the agent
// library does. Counted by uuid: every accepted message reaches the receiver, nothing arrives
// that was not sent, and in each run the redeliveries and then the live messages come in the
// order sent. (A message may arrive twice with the same uuid, as the protocol allows after a
// crash: the agent library drops the second.) With live deliveries not journaled, 43,022 of
// 63,000 accepted messages were lost.
TEST(BrokerBinary, KilledTwentyTimesAtRandomPointsOfAStreamLosesNoAcceptedMessage) {
  test::temp_dir dir;
  const unsigned seed = std::random_device{}();
  std::mt19937 random(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::set<int> accepted, unaccepted;  // by message number; the uuid is "s<number>"
  std::map<int, int> received;         // number -> times received
  int next = 0;
  auto number_of = [](const json::value& uuid) { return std::stoi(std::string(uuid.as_string()).substr(1)); };
  auto run = [&](int round, bool kill) {
    test::child_process broker(broker_binary, broker_args(dir), dir.file("run" + std::to_string(round) + ".log"));
    auto port = test::listening_port(broker, 20s);
    ASSERT_TRUE(port) << broker.log();
    // bob reads slowly through a small buffer: at the kill, deliveries wait in the broker's
    // memory, and only what was journaled survives.
    client alice(*port), bob(*port, 4096);
    alice.log_in("alice");
    bob.log_in("bob");
    std::mutex mutex;
    std::vector<std::pair<int, bool>> got;  // (number, redelivery) in arrival order
    std::atomic<bool> stop{false};
    std::thread receiver([&] {
      while (!stop) {
        auto f = bob.recv(50ms);
        if (!f || f->at("message_id").as_string() != "receive_message") continue;
        const auto& c = f->at("message_content").as_object();
        {
          std::lock_guard lock(mutex);
          got.emplace_back(number_of(c.at("message_uuid")), c.contains("redelivery") && c.at("redelivery").as_bool());
        }
        bob.send("acknowledge_message", {{"message_uuid", c.at("message_uuid")}});
        std::this_thread::sleep_for(100us);
      }
    });
    // First what was not accepted before (same uuid), then new ones: bursts of 50, 1 ms apart.
    std::vector<int> to_send(unaccepted.begin(), unaccepted.end());
    for (int i = 0; i < 2000; ++i) to_send.push_back(next++);
    for (int n : to_send) unaccepted.insert(n);
    std::thread sender([&] {
      for (std::size_t i = 0; i < to_send.size() && !stop; i += 50) {
        std::string burst;
        for (std::size_t j = i; j < std::min(i + 50, to_send.size()); ++j) {
          burst += R"({"message_id":"send_message","message_content":{"receiver_username":"bob","message_uuid":"s)" +
                   std::to_string(to_send[j]) + R"(","message_text":"payload"}})" "\n";
        }
        alice.send_raw(burst);
        std::this_thread::sleep_for(1ms);
      }
    });
    auto count_accepts = [&](std::chrono::milliseconds for_how_long) {
      const auto until = std::chrono::steady_clock::now() + for_how_long;
      while (std::chrono::steady_clock::now() < until) {
        auto f = alice.recv(10ms);
        if (f && f->at("message_id").as_string() == "message_accepted") {
          const int n = number_of(f->at("message_content").at("message_uuid"));
          accepted.insert(n);
          unaccepted.erase(n);
        }
      }
    };
    if (kill) {
      count_accepts(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 100)(random)));
      broker.signal(SIGKILL);
      EXPECT_EQ(broker.wait(20s), 128 + SIGKILL);
      count_accepts(100ms);  // accepts already on the wire count: the broker said them
    } else {
      // Until everything was accepted and received.
      auto all_there = [&] {
        std::lock_guard lock(mutex);
        std::set<int> now_received;
        for (auto& g : got) now_received.insert(g.first);
        return unaccepted.empty() && std::all_of(accepted.begin(), accepted.end(), [&](int n) {
                 return received.count(n) || now_received.count(n);
               });
      };
      const auto deadline = std::chrono::steady_clock::now() + 60s;
      while (std::chrono::steady_clock::now() < deadline && !all_there()) count_accepts(100ms);
    }
    stop = true;
    ::shutdown(alice.fd(), SHUT_RDWR);
    ::shutdown(bob.fd(), SHUT_RDWR);
    sender.join();
    receiver.join();
    // Order within the run: redeliveries first, in the order accepted, then the live ones.
    std::vector<int> redelivered, live;
    for (auto& [n, redelivery] : got) {
      EXPECT_TRUE(live.empty() || !redelivery) << "round " << round << ": redelivery of " << n << " after a live one";
      (redelivery ? redelivered : live).push_back(n);
      ++received[n];
    }
    EXPECT_TRUE(std::is_sorted(redelivered.begin(), redelivered.end())) << "round " << round;
    EXPECT_TRUE(std::is_sorted(live.begin(), live.end())) << "round " << round;
  };
  for (int round = 0; round < 20; ++round) run(round, true);
  run(20, false);
  EXPECT_TRUE(unaccepted.empty()) << unaccepted.size() << " never accepted";
  int lost = 0, duplicates = 0;
  for (int n : accepted) lost += received.count(n) ? 0 : 1;
  for (auto& [n, times] : received) {
    EXPECT_LT(n, next) << "s" << n << " was never sent";
    duplicates += times - 1;
  }
  EXPECT_EQ(lost, 0) << "of " << accepted.size() << " accepted";
  std::printf("%zu accepted, %d lost, %d received again with the same uuid\n", accepted.size(), lost, duplicates);
}

TEST(BrokerBinary, SigtermFlushesAndExitsZeroWithTheUnacknowledgedKept) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, broker_args(dir), dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client alice(*port);
  client bob(*port);
  alice.log_in("alice");
  bob.log_in("bob");
  for (int i = 0; i < 10; ++i) {
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "m"}, {"message_uuid", "t" + std::to_string(i)}});
  }
  for (int i = 0; i < 10; ++i) alice.expect("message_accepted");
  for (int i = 0; i < 10; ++i) bob.expect("receive_message");
  const auto start = std::chrono::steady_clock::now();
  broker.signal(SIGTERM);
  EXPECT_EQ(broker.wait(20s), 0) << broker.log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_TRUE(bob.closed_within(5s));
  database db({dir.file("broker.db"), false, false});
  EXPECT_EQ(db.count_journal(), 0);
  EXPECT_EQ(db.count_pending("bob"), 10);
  for (auto& d : db.list({})) EXPECT_EQ(d.reason, dead_letter_reason::broker_restart);
}

// Issue items 1 and 12: letters replayed by the admin command while the broker runs are
// redelivered and their acknowledgements stored (they used to stay pending forever: the next
// attempt hit the UNIQUE constraint on delivery_attempts), and parking is logged.
TEST(BrokerBinary, LettersReplayedWhileTheBrokerRunsAreDeliveredOnceAndParkingIsLogged) {
  constexpr int n = 20;
  test::temp_dir dir;
  auto args = broker_args(dir);
  args.insert(args.end(), {"--max-delivery-attempts", "1"});
  test::child_process broker(broker_binary, args, dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client alice(*port);
  alice.log_in("alice");
  for (int i = 0; i < n; ++i) {
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "r"}, {"message_uuid", "rp" + std::to_string(i)}});
  }
  for (int i = 0; i < n; ++i) EXPECT_EQ(alice.expect_content("message_accepted").at("status").as_string(), "dead_lettered");
  {
    client bob(*port);
    EXPECT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), n);
    for (int i = 0; i < n; ++i) bob.expect("receive_message");
  }  // gone without acknowledging: the one attempt allowed is used, every letter parks
  EXPECT_TRUE(broker.wait_for_log(std::regex(R"(20 dead letters for 'bob' parked)"), 20s)) << broker.log();

  auto [status, out] = test::run_command(broker_binary, {"dead-letters", "--database", dir.file("broker.db"), "replay"});
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(out, "replayed 20 dead letters\n");
  for (int login = 0; login < 2; ++login) {
    client bob(*port);
    const auto pending = bob.log_in("bob").at("pending_dead_letters").as_int64();
    if (login == 1) {
      EXPECT_EQ(pending, 0) << "acknowledged replayed letters came back";
      break;
    }
    EXPECT_EQ(pending, n);
    json::array acks;
    for (int i = 0; i < n; ++i) {
      auto m = bob.expect_content("receive_message");
      EXPECT_EQ(m.at("attempt").as_int64(), 2);  // numbering goes on after the replay
      acks.emplace_back(m.at("message_uuid"));
    }
    bob.send("acknowledge_message", {{"message_uuids", acks}});
    for (int i = 0; i < n; ++i) alice.expect("message_delivered");
    bob.send("log_out");
    EXPECT_TRUE(bob.closed_within(10s));
  }
  database db({dir.file("broker.db"), false, false});
  for (auto& d : db.list({})) EXPECT_EQ(d.state, dead_letter_state::delivered) << d.message_uuid;
  EXPECT_EQ(broker.log().find("UNIQUE constraint"), std::string::npos) << broker.log();
}

// Issue #15, W6: an acknowledged redelivery is a narrow row in `redelivered`, folded into its
// letter a second after the redelivery's last acknowledgement. Killed in between, the broker
// folds it at its next start: what was acknowledged is not sent again, the rest is.
TEST(BrokerBinary, SigkillBeforeAcknowledgedRedeliveriesAreFoldedSendsOnlyTheRestAgain) {
  constexpr int n = 3000, acknowledged = 1000;
  test::temp_dir dir;
  auto delivered_now = [&] {
    database::settings reader{dir.file("broker.db")};
    reader.create = false;
    reader.read_only = true;
    reader.schema_required = true;
    database db(reader);
    return db.list({std::string("bob"), std::nullopt, dead_letter_state::delivered, n}).size();
  };
  {
    test::child_process broker(broker_binary, broker_args(dir), dir.file("run1.log"));
    auto port = test::listening_port(broker, 20s);
    ASSERT_TRUE(port) << broker.log();
    client alice(*port);
    alice.log_in("alice");
    for (int i = 0; i < n; i += 100) {
      std::string burst;
      for (int j = i; j < i + 100; ++j) {
        burst += R"({"message_id":"send_message","message_content":{"receiver_username":"bob","message_uuid":"f)" +
                 std::to_string(j) + R"(","message_text":"x"}})" "\n";
      }
      alice.send_raw(burst);
      for (int j = i; j < i + 100; ++j) {
        ASSERT_EQ(alice.expect_content("message_accepted", 30s).at("status").as_string(), "dead_lettered");
      }
    }
    client bob(*port);
    ASSERT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), n);
    json::array acks;
    for (int i = 0; i < acknowledged; ++i) {
      auto m = bob.expect_content("receive_message", 30s);
      ASSERT_EQ(m.at("message_uuid").as_string(), "f" + std::to_string(i));
      acks.emplace_back(m.at("message_uuid"));
      if (acks.size() == 100) {
        bob.send("acknowledge_message", {{"message_uuids", acks}});
        acks.clear();
      }
    }
    // Committed (the view counts the narrow rows), then killed at once: most likely before the fold.
    ASSERT_TRUE(test::eventually([&] { return delivered_now() == static_cast<std::size_t>(acknowledged); }));
    broker.signal(SIGKILL);
    EXPECT_EQ(broker.wait(20s), 128 + SIGKILL);
  }
  test::child_process broker(broker_binary, broker_args(dir), dir.file("run2.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client bob(*port);
  // Those in flight at the kill (sent, not acknowledged) are pending again: the rest of the backlog.
  ASSERT_EQ(bob.log_in("bob").at("pending_dead_letters").as_int64(), n - acknowledged);
  json::array acks;
  for (int i = acknowledged; i < n; ++i) {
    auto m = bob.expect_content("receive_message", 30s);
    ASSERT_EQ(m.at("message_uuid").as_string(), "f" + std::to_string(i));
    acks.emplace_back(m.at("message_uuid"));
    if (acks.size() == 100) {  // (past its window of 1,000 unacknowledged, the redelivery would wait)
      bob.send("acknowledge_message", {{"message_uuids", acks}});
      acks.clear();
    }
  }
  EXPECT_TRUE(bob.quiet_of("receive_message", 300ms)) << "more than the backlog came";
  database::settings reader{dir.file("broker.db")};
  reader.read_only = true;
  database db(reader);
  // The start folded what the killed broker had not (this run's own may not be folded yet).
  sqlite::statement folded(db.connection(), "SELECT count(*) FROM dead_letters WHERE state = 'delivered' "
                                            "AND CAST(substr(message_uuid, 2) AS INTEGER) < ?");
  folded.bind(1, std::int64_t{acknowledged});
  ASSERT_TRUE(folded.step());
  EXPECT_EQ(folded.column_int(0), acknowledged);
  EXPECT_TRUE(test::eventually([&] { return delivered_now() == static_cast<std::size_t>(n); }));
}

// Issue item 5: a second broker on the same database used to start and turn the first one's
// live journal into broker_restart dead letters.
TEST(BrokerBinary, ASecondBrokerOnTheSameDatabaseIsRefusedNamingTheFileAndThePid) {
  test::temp_dir dir;
  test::child_process first(broker_binary, broker_args(dir), dir.file("first.log"));
  auto port = test::listening_port(first, 20s);
  ASSERT_TRUE(port) << first.log();
  client alice(*port), bob(*port);
  alice.log_in("alice");
  bob.log_in("bob");
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "live"}, {"message_uuid", "live-1"}});
  alice.expect("message_accepted");
  bob.expect("receive_message");  // journaled, in flight, unacknowledged

  auto [status, out] = test::run_command(broker_binary, broker_args(dir));
  EXPECT_NE(status, 0) << out;
  EXPECT_NE(out.find(dir.file("broker.db")), std::string::npos) << out;
  EXPECT_NE(out.find("pid " + std::to_string(first.pid())), std::string::npos) << out;
  {
    database db({dir.file("broker.db"), false, false});
    EXPECT_EQ(db.count_journal(), 1);
    EXPECT_EQ(db.count_all_pending(), 0);
  }
  bob.send("acknowledge_message", {{"message_uuid", "live-1"}});
  EXPECT_EQ(alice.expect_content("message_delivered").at("message_uuid").as_string(), "live-1");
  // Once the first has stopped, the lock is free (also after kill -9).
  first.signal(SIGKILL);
  EXPECT_EQ(first.wait(20s), 128 + SIGKILL);
  test::child_process second(broker_binary, broker_args(dir), dir.file("second.log"));
  EXPECT_TRUE(test::listening_port(second, 20s)) << second.log();
}

// Issue item 3: after kill -9 the broker remembered only the pairs still held as dead letters,
// so a sender resending what it had not seen accepted got it delivered again as new. Every pair
// committed before the kill is a duplicate now. (A message delivered before its commit that the
// kill cut off was never accepted: its resend is fresh, and may reach bob a second time with
// the same uuid, as the protocol says.)
TEST(BrokerBinary, SigkillWhileTheSenderHasNotReadItsAcceptsDeliversNothingTwice) {
  constexpr int total = 5000;
  std::optional<test::temp_dir> attempt_dir;
  std::set<std::string> received;  // by bob before the kill, as new deliveries
  std::set<std::string> accepted;  // what alice saw accepted before the kill
  std::vector<std::string> uuids;
  for (int i = 0; i < total; ++i) uuids.push_back("once-" + std::to_string(i));
  auto burst_of = [](const std::vector<std::string>& list, std::size_t from, std::size_t to) {
    std::string burst;
    for (std::size_t i = from; i < to && i < list.size(); ++i) {
      burst += "{\"message_id\":\"send_message\",\"message_content\":{\"receiver_username\":\"bob\","
               "\"message_uuid\":\"" + list[i] + "\",\"message_text\":\"x\"}}\n";
    }
    return burst;
  };
  // The kill must find messages that bob got and alice was not yet told of. It usually does
  // (their commits are under way); when the machine stalls alice's sender long enough for the
  // broker to commit everything it delivered (seen once in 2026-12: 1,000 received, 1,000
  // accepted), the scenario is run again on a fresh database.
  for (int attempt = 0; attempt < 5 && (attempt == 0 || accepted.size() >= received.size()); ++attempt) {
    received.clear();
    accepted.clear();
    attempt_dir.emplace();
    const test::temp_dir& dir = *attempt_dir;
    test::child_process broker(broker_binary, broker_args(dir), dir.file("run1.log"));
    auto port = test::listening_port(broker, 20s);
    ASSERT_TRUE(port) << broker.log();
    client alice(*port);
    alice.log_in("alice");
    client bob(*port);
    bob.log_in("bob");
    std::mutex m;
    std::atomic<bool> stop{false};
    std::thread bob_reader([&] {
      while (!stop) {
        auto f = bob.recv(200ms);
        if (!f) {
          if (bob.closed_within(0ms)) return;
          continue;
        }
        if (f->at("message_id").as_string() != "receive_message") continue;
        const auto& c = f->at("message_content").as_object();
        {
          std::lock_guard lock(m);
          received.insert(std::string(c.at("message_uuid").as_string()));
        }
        bob.send("acknowledge_message", {{"message_uuid", c.at("message_uuid")}});
      }
    });
    // alice pipelines and does not read: her accepts wait in her socket.
    std::thread sender([&] {
      for (std::size_t i = 0; i < uuids.size() && !stop; i += 50) {
        alice.send_raw(burst_of(uuids, i, i + 50));
        std::this_thread::sleep_for(1ms);
      }
    });
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      {
        std::lock_guard lock(m);
        if (received.size() >= 1000) break;
      }
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "bob got too little";
      std::this_thread::sleep_for(1ms);
    }
    broker.signal(SIGKILL);
    EXPECT_EQ(broker.wait(20s), 128 + SIGKILL);
    stop = true;
    sender.join();
    bob_reader.join();
    while (auto f = alice.recv(500ms)) {
      if (f->at("message_id").as_string() == "message_accepted") {
        accepted.insert(std::string(f->at("message_content").at("message_uuid").as_string()));
      }
    }
  }
  ASSERT_LT(accepted.size(), received.size()) << "the sender read its accepts in five tries: the test proves nothing";
  const test::temp_dir& dir = *attempt_dir;

  test::child_process broker(broker_binary, broker_args(dir), dir.file("run2.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client bob(*port);
  const auto pending = bob.log_in("bob").at("pending_dead_letters").as_int64();
  client alice(*port);
  alice.log_in("alice");
  std::vector<std::string> resend;
  for (auto& u : uuids) {
    if (!accepted.count(u)) resend.push_back(u);
  }
  for (std::size_t i = 0; i < resend.size(); i += 200) alice.send_raw(burst_of(resend, i, i + 200));
  std::set<std::string> fresh;  // not committed before the kill
  for (std::size_t i = 0; i < resend.size(); ++i) {
    auto a = alice.expect_content("message_accepted", 30s);
    ASSERT_FALSE(a.empty());
    if (!a.at("duplicate").as_bool()) fresh.insert(std::string(a.at("message_uuid").as_string()));
  }
  // bob gets the broker_restart letters as redeliveries, then every fresh one once.
  int duplicates = 0;
  std::set<std::string> after;
  json::array acks;
  for (std::int64_t i = 0; i < pending + static_cast<std::int64_t>(fresh.size()); ++i) {
    auto m = bob.expect_content("receive_message", 30s);
    ASSERT_FALSE(m.empty()) << "bob got " << i << " of " << pending + fresh.size();
    const std::string uuid(m.at("message_uuid").as_string());
    const bool again = after.count(uuid) || (received.count(uuid) && !fresh.count(uuid));
    if (!m.at("redelivery").as_bool() && again) ++duplicates;
    after.insert(uuid);
    acks.emplace_back(m.at("message_uuid"));
    if (acks.size() == 200) {
      bob.send("acknowledge_message", {{"message_uuids", acks}});
      acks.clear();
    }
  }
  EXPECT_EQ(duplicates, 0);
  EXPECT_TRUE(bob.quiet_of("receive_message", 300ms));
  for (auto& u : uuids) {
    EXPECT_TRUE(received.count(u) || after.count(u)) << u << " was never delivered";
  }
}

}  // namespace
}  // namespace ma

namespace ma {
namespace {

using bench::proc_rss_kib;
using test::small_quarantine;

// A client with a tiny receive buffer that sends request after request and never reads: once
// its unsent replies pass --max-outbound-bytes the broker stops reading from it, so its own
// TCP window stops it, and the broker's memory stays bounded. Others go on meanwhile.
TEST(BrokerBinary, RepliesToAClientThatNeverReadsAreBounded) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, broker_args(dir), dir.file("run.log"), small_quarantine);
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  const long before = proc_rss_kib(broker.pid());

  const int fd = test::connect_loopback(*port, 4096);
  ASSERT_GE(fd, 0);
  std::string chunk;
  while (chunk.size() < 64 * 1024) chunk += "x\n";
  const std::size_t sent =
      test::send_without_blocking(fd, chunk, 4u * 1024 * 1024, std::chrono::steady_clock::now() + 5s);
  std::this_thread::sleep_for(500ms);
  const long grown = proc_rss_kib(broker.pid()) - before;
  EXPECT_LT(grown, 64 * 1024) << "KiB after " << sent << " bytes of frames whose replies were never read";

  client alice(*port);
  EXPECT_FALSE(alice.log_in("alice").empty()) << "another client is served meanwhile";
  ::close(fd);
}

// Sockets that never log in and send a line that never ends: before log_in a frame may be
// 16 KiB, so each costs the broker that much at most, and is closed with frame_too_large.
TEST(BrokerBinary, UnfinishedLinesBeforeLogInCostLittle) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, broker_args(dir), dir.file("run.log"), small_quarantine);
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  const long before = proc_rss_kib(broker.pid());
  const std::string chunk(64 * 1024, 'x');
  std::vector<int> fds;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 300 && std::chrono::steady_clock::now() - start < 20s; ++i) {
    const int fd = test::connect_loopback(*port);
    if (fd < 0) continue;
    fds.push_back(fd);
    test::send_without_blocking(fd, chunk, 512 * 1024, std::chrono::steady_clock::now() + 200ms);
  }
  std::this_thread::sleep_for(300ms);
  const long grown = proc_rss_kib(broker.pid()) - before;
  EXPECT_LT(grown, 48 * 1024) << "KiB for " << fds.size() << " sockets with an unfinished line each";
  for (int fd : fds) ::close(fd);
  client alice(*port);
  EXPECT_FALSE(alice.log_in("alice").empty());
}

// Past its memory budget the broker refuses new connections with server_busy (and a sentence
// naming the budget) instead of growing until the system kills it.
TEST(BrokerBinary, PastItsMemoryBudgetNewConnectionsGetServerBusy) {
  test::temp_dir dir;
  auto args = broker_args(dir);
  args.insert(args.end(), {"--max-memory-mb", "1"});  // less than it holds from the start
  test::child_process broker(broker_binary, args, dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client refused(*port);
  auto e = refused.expect_error("server_busy");
  EXPECT_NE(std::string(e.at("error_text").as_string()).find("memory budget"), std::string::npos);
  EXPECT_TRUE(refused.closed_within(10s));
  EXPECT_NE(broker.log().find("refused a connection"), std::string::npos);
}

// Agents that never read while others log in and out: each gets one pending presence state,
// not a frame per change, so the broker's memory stays bounded.
TEST(BrokerBinary, PresenceToAgentsThatDoNotReadIsBounded) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, broker_args(dir), dir.file("run.log"), small_quarantine);
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  std::vector<std::unique_ptr<client>> sleepers;
  for (int i = 0; i < 60; ++i) {
    sleepers.push_back(std::make_unique<client>(*port, 4096));
    sleepers.back()->log_in("sleeper-" + std::to_string(i));
  }
  const long before = proc_rss_kib(broker.pid());
  const auto start = std::chrono::steady_clock::now();
  int cycles = 0;
  for (; cycles < 4000 && std::chrono::steady_clock::now() - start < 60s; ++cycles) {
    client churn(*port);
    churn.log_in("churn-" + std::to_string(cycles % 40));
    churn.send("log_out");
    churn.closed_within(10s);
  }
  std::this_thread::sleep_for(300ms);
  const long grown = proc_rss_kib(broker.pid()) - before;
  EXPECT_LT(grown, 16 * 1024) << "KiB after " << cycles << " log_in/log_out with 60 agents that do not read";
  std::printf("presence: the broker grew by %ld KiB over %d log_in/log_out\n", grown, cycles);
  client alice(*port);
  EXPECT_FALSE(alice.log_in("alice").empty());
}

// The broker stands still (SIGSTOP) longer than the eviction time while an agent goes on
// heartbeating: its frames wait in the socket, and on SIGCONT it is not evicted for the
// broker's pause.
TEST(BrokerBinary, APauseOfTheBrokerEvictsNobody) {
  test::temp_dir dir;
  auto args = broker_args(dir);
  // Eviction after 3 s of silence: slack for a loaded machine between the test's heartbeats.
  args.insert(args.end(), {"--heartbeat-interval-ms", "1000", "--eviction-factor", "3"});
  test::child_process broker(broker_binary, args, dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  std::vector<std::unique_ptr<client>> agents;
  for (int i = 0; i < 40; ++i) {
    agents.push_back(std::make_unique<client>(*port));
    agents.back()->log_in("agent-" + std::to_string(i));
  }
  auto beat_for = [&](std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
      for (auto& a : agents) a->send("heartbeat");
      std::this_thread::sleep_for(150ms);
    }
  };
  beat_for(300ms);
  broker.signal(SIGSTOP);
  beat_for(4500ms);  // one and a half eviction times
  broker.signal(SIGCONT);
  beat_for(1000ms);
  ASSERT_EQ(broker.log().find("evicted"), std::string::npos) << broker.log();
  for (auto& a : agents) {
    a->send("get_user_list", {{"request_id", "still"}});
    EXPECT_EQ(a->expect_content("user_list").at("request_id").as_string(), "still");
  }
}

// At --log-level debug every frame is logged: its control bytes and broken UTF-8 come out
// escaped, so a client can not write terminal escapes or fake lines into the log.
TEST(BrokerBinary, FramesInTheDebugLogCanNotInjectControlBytes) {
  test::temp_dir dir;
  auto args = broker_args(dir);
  args.insert(args.end(), {"--log-level", "debug"});
  test::child_process broker(broker_binary, args, dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client mallory(*port);
  mallory.send_raw(std::string("{\"message_id\":\"x\x1b[2J\x07\r fake: 'admin' logged in\xff\"}\n"));
  mallory.expect("error");
  mallory.send("log_in", {{"sender_username", "mallory"}});
  mallory.expect("acknowledge_log_in");  // after the bad frame: its log line is written
  broker.signal(SIGTERM);
  EXPECT_EQ(broker.wait(20s), 0);
  const std::string log = broker.log();
  EXPECT_NE(log.find("\\x1b[2J\\x07\\x0d fake"), std::string::npos) << log;
  for (char c : log) {
    const auto u = static_cast<unsigned char>(c);
    ASSERT_TRUE(u >= 0x20 || u == '\n') << "a raw control byte " << int(u) << " in the log";
  }
  EXPECT_EQ(log.find('\xff'), std::string::npos);
}

}  // namespace
}  // namespace ma
