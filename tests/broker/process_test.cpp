// The real message-broker binary: options, SIGKILL in the middle of a stream, SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json/serialize.hpp>
#include <fstream>
#include <set>
#include <sys/socket.h>
#include <atomic>
#include <thread>

#include "storage/database.hpp"
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

}  // namespace
}  // namespace ma
