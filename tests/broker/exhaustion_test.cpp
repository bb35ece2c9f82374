// The real message-broker binary under a client that tries to exhaust it: disk by fan-out,
// the broker's thread by acknowledgement floods, the store by one sender's flood, and the
// store locked by an operator. Each test measures the bound (database size, another agent's
// latency, what the broker read) with slack for a loaded 2-core machine.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
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

// A raw connection that logs in and, once that is acknowledged and go() was called, sends
// frame(0), frame(1), ... as fast as the broker reads them, on its own thread, until count or
// until; another thread reads what comes back, keeps the error frames and counts the accepts.
class flooder {
 public:
  flooder(std::uint16_t port, const std::string& name, std::function<std::string(int)> frame, int count,
          std::chrono::steady_clock::time_point until)
      : fd_(test::connect_loopback(port)) {
    timeval tv{0, 100'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    reader_ = std::thread([this] { read_all(); });
    writer_ = std::thread([this, name, frame = std::move(frame), count, until] {
      std::string out = R"({"message_id":"log_in","message_content":{"sender_username":")" + name + "\"}}\n";
      if (!write_all(out, until) || !test::eventually([this] { return (logged_in_ && go_) || stop_; }, 30s)) return;
      out.clear();
      for (int i = 0; i < count && std::chrono::steady_clock::now() < until && !stop_;) {
        for (int j = 0; j < 64 && i < count; ++j) out += frame(i++);
        if (!write_all(out, until)) break;
        out.clear();
      }
    });
  }
  ~flooder() {
    stop();
    ::close(fd_);
  }
  bool logged_in() const { return logged_in_; }
  void go() { go_ = true; }
  void stop() {
    stop_ = true;
    if (writer_.joinable()) writer_.join();
    if (reader_.joinable()) reader_.join();
  }
  std::size_t bytes_sent() const { return sent_; }
  std::size_t accepted() const { return accepted_; }
  std::vector<json::object> errors() const {
    std::lock_guard lock(mutex_);
    return errors_;
  }

 private:
  bool write_all(const std::string& out, std::chrono::steady_clock::time_point until) {
    std::size_t off = 0;
    while (off < out.size()) {
      if (stop_ || std::chrono::steady_clock::now() >= until) return false;
      const ssize_t n = ::send(fd_, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
        sent_ += static_cast<std::size_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return false;
      }
    }
    return true;
  }
  void read_all() {
    std::string buf;
    char chunk[65536];
    while (!stop_) {
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n == 0) return;
      if (n < 0) continue;  // the timeout: look at stop_ again
      buf.append(chunk, static_cast<std::size_t>(n));
      std::size_t start = 0;
      for (std::size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string_view line(buf.data() + start, nl - start);
        if (line.find("\"message_accepted\"") != std::string_view::npos) {
          ++accepted_;
        } else if (line.find("\"acknowledge_log_in\"") != std::string_view::npos) {
          logged_in_ = true;
        } else if (line.find("\"error\"") != std::string_view::npos) {
          std::lock_guard lock(mutex_);
          errors_.push_back(json::parse(line).as_object()["message_content"].as_object());
        }
      }
      buf.erase(0, start);
    }
  }

  int fd_;
  std::atomic<bool> stop_{false}, logged_in_{false}, go_{false};
  std::atomic<std::size_t> sent_{0}, accepted_{0};
  mutable std::mutex mutex_;
  std::vector<json::object> errors_;
  std::thread reader_, writer_;
};

std::string send_frame(const std::string& to, const std::string& uuid, std::size_t text_bytes) {
  return R"({"message_id":"send_message","message_content":{"receiver_username":")" + to +
         R"(","message_uuid":")" + uuid + R"(","message_text":")" + std::string(text_bytes, 'x') + "\"}}\n";
}

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

// Acknowledgement floods of invented uuids cost no database lookups, so another agent's
// messages are accepted as fast as ever meanwhile. The flood lasts until the last message is
// accepted (bounded in frames and time). A broker that looked each uuid up would queue the
// lookups ahead of alice's commits, a delay that grows with the flood: with the lookups put
// back, alice's first message_accepted did not come within 30 s. Without them alice waits for a
// few frames of 1,000 uuids and a commit: tens of ms, a few hundred under the sanitizers on a
// loaded machine.
TEST(Exhaustion, AcknowledgementFloodsDoNotDelayOthers) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client alice(*port), bob(*port);
  alice.log_in("alice");
  bob.log_in("bob");
  std::string ack_frame = R"({"message_id":"acknowledge_message","message_content":{"message_uuids":[)";
  for (int i = 0; i < 1'000; ++i) ack_frame += (i ? ",\"b" : "\"b") + std::to_string(i) + "\"";
  ack_frame += "]}}\n";
  constexpr int frames = 50'000;
  const auto until = std::chrono::steady_clock::now() + 20s;
  flooder mallory(*port, "mallory", [&ack_frame](int) { return ack_frame; }, frames, until);
  mallory.go();
  ASSERT_TRUE(test::eventually([&] { return mallory.bytes_sent() >= ack_frame.size(); }, 30s))
      << "the flood is under way";
  std::chrono::steady_clock::duration worst{};
  for (int i = 0; i < 20; ++i) {
    const auto sent = std::chrono::steady_clock::now();
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "hi"},
                                {"message_uuid", "a" + std::to_string(i)}});
    alice.expect("message_accepted", 5s);
    worst = std::max(worst, std::chrono::steady_clock::now() - sent);
    if (worst >= 1500ms) break;  // failed: no need to wait out the flood
    std::this_thread::sleep_for(20ms);
  }
  // Still flooding: neither all its frames sent nor its time up.
  EXPECT_LT(mallory.bytes_sent(), frames * ack_frame.size()) << "the flood ended before the last message";
  EXPECT_LT(std::chrono::steady_clock::now(), until) << "the flood ended before the last message";
  mallory.stop();
  EXPECT_LT(worst, 1500ms) << "an acknowledgement flood delayed another agent's message_accepted";
  std::printf("worst message_accepted latency during a flood of %zu frames of 1,000 uuids: %lld ms\n",
              mallory.bytes_sent() / ack_frame.size(),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(worst).count()));
}

// One sender floods the store with 200,000 messages for an offline user (each a dead letter to
// write); another agent's message_accepted does not wait behind the whole flood: a session may
// have --max-pending-accepts messages waiting for the store, then it is read no further until
// half of them are committed. The test sets 256 (the default is 4,096), so that the bound below
// tells the two apart on a loaded machine under the sanitizers too. Measured with both cores
// busy besides: 170 to 230 ms at 256 there, 1.0 to 1.4 s at 4,096; in a release build 51 ms at
// 256, and 1.9 s with no bound (1,000,000).
TEST(Exhaustion, OneSendersFloodDoesNotStarveOthersAtTheStore) {
  test::temp_dir dir;
  auto args = test::broker_args(dir);
  args.insert(args.end(), {"--max-pending-accepts", "256"});
  test::child_process broker(broker_binary, args, dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client alice(*port), bob(*port);
  alice.log_in("alice");
  bob.log_in("bob");
  flooder mallory(
      *port, "mallory", [](int i) { return send_frame("nobody", "f" + std::to_string(i), 200); }, 200'000,
      std::chrono::steady_clock::now() + 30s);
  mallory.go();
  ASSERT_TRUE(test::eventually([&] { return mallory.accepted() > 1000; }, 30s)) << "the flood is under way";
  std::chrono::steady_clock::duration worst{};
  for (int i = 0; i < 20 && mallory.accepted() < 190'000; ++i) {
    const auto sent = std::chrono::steady_clock::now();
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "hi"},
                                {"message_uuid", "a" + std::to_string(i)}});
    alice.expect("message_accepted", 60s);
    worst = std::max(worst, std::chrono::steady_clock::now() - sent);
    std::this_thread::sleep_for(20ms);
  }
  mallory.stop();
  const auto worst_ms = std::chrono::duration_cast<std::chrono::milliseconds>(worst).count();
  std::printf("worst message_accepted latency beside a flood of %zu accepts: %lld ms\n", mallory.accepted(),
              static_cast<long long>(worst_ms));
  // Before the bound: 2.2 to 2.8 s.
  EXPECT_LT(worst, 1000ms) << "one sender's flood delayed another agent's message_accepted";
}

// An operator's sqlite3 holds the write lock for 6 s while a sender floods: the broker stops
// reading that sender once --max-pending-accepts wait for the store (its own TCP window then
// stops it) instead of reading and queueing everything; the messages that waited get
// internal_error saying the database is locked; once the lock is gone the store commits again.
TEST(Exhaustion, ALockedDatabaseHoldsSendersAndTellsThemWhy) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("run.log"), test::small_quarantine);
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  client alice(*port);
  alice.log_in("alice");
  const long before = bench::proc_rss_kib(broker.pid());

  flooder mallory(
      *port, "mallory", [](int i) { return send_frame("nobody", "f" + std::to_string(i), 1000); }, 40'000,
      std::chrono::steady_clock::now() + 36s);
  ASSERT_TRUE(test::eventually([&] { return mallory.logged_in(); }, 30s));
  sqlite3* op = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("broker.db").c_str(), &op), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(op, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  mallory.go();
  std::this_thread::sleep_for(6s);  // the operator's lock is held this long: what the test is about
  const long grown = bench::proc_rss_kib(broker.pid()) - before;
  const std::size_t through = mallory.bytes_sent();
  sqlite3_exec(op, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(op);
  std::printf("against a locked database in 6 s: %zu KiB taken from the sender, broker grew %ld KiB\n",
              through / 1024, grown);
  // Before: all 40 MB of the flood, and +197 MB for 100,000 messages.
  EXPECT_LT(through, 24u * 1024 * 1024) << "bytes the broker let in while it could not commit";
  EXPECT_LT(grown, 64 * 1024) << "KiB the broker grew while it could not commit";

  ASSERT_TRUE(test::eventually([&] { return !mallory.errors().empty(); }, 30s)) << "no internal_error came";
  mallory.stop();
  auto e = mallory.errors().front();
  EXPECT_EQ(e["error_code"], "internal_error");
  EXPECT_NE(std::string(e["error_text"].as_string()).find("locked"), std::string::npos) << json::serialize(e);
  EXPECT_NE(std::string(e["error_text"].as_string()).find("send it again"), std::string::npos);
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "after"}});
  EXPECT_EQ(alice.expect_content("message_accepted", 30s)["status"], "dead_lettered");
}

}  // namespace
}  // namespace ma
