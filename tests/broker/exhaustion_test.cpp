// The real message-broker binary under a client that tries to exhaust it: disk by fan-out,
// the store by one sender's flood, and the store locked by an operator. Each test measures the
// bound (database size, another agent's latency, what the broker read) with slack for a loaded
// 2-core machine.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>

#include <atomic>
#include <filesystem>
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

std::uintmax_t size_or_zero(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

// The database file and its write-ahead log: what the broker has written.
std::uintmax_t database_bytes(const test::temp_dir& dir) {
  return size_or_zero(dir.file("broker.db")) + size_or_zero(dir.file("broker.db-wal"));
}

// A group of 1,000 invented names, all offline, and three 100 KiB messages to it: each is
// stored once, not once per recipient (before: some 100 MB per message).
TEST(Exhaustion, AFanOutStoresItsBodyOnce) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client alice(*port);
  alice.log_in("alice");
  json::array members;
  for (int i = 0; i < 999; ++i) members.emplace_back("member-" + std::to_string(i));
  alice.send("create_group", {{"group_name", "crowd"}, {"group_members", members}});
  alice.expect("acknowledge_group", 30s);
  const auto before = database_bytes(dir);
  const std::string text(100 * 1024, 'x');
  for (int i = 0; i < 3; ++i) {
    alice.send("group_message",
               {{"group_name", "crowd"}, {"message_text", text}, {"message_uuid", "fan-" + std::to_string(i)}});
    auto accepted = alice.expect_content("message_accepted", 60s);
    ASSERT_EQ(accepted["recipients"].as_array().size(), 999u) << json::serialize(accepted);
  }
  const auto grown = database_bytes(dir) - before;
  std::printf("database growth for 3 x 100 KiB to 999 offline members: %ju KiB\n", grown / 1024);
  EXPECT_LT(grown, 8u * 1024 * 1024) << "bytes written for three fan-outs of 100 KiB";

  database db({dir.file("broker.db"), false, false, true});
  auto letters = db.find("fan-1");
  ASSERT_EQ(letters.size(), 999u);
  EXPECT_EQ(letters.back().body.size(), text.size() + std::string(R"({"message_text":""})").size());
}

}  // namespace
}  // namespace ma
