// Database errors an operator meets, said as sentences with what to do: a read-only folder, a
// read-only file, a full disk at the start and while running. The real binary runs in a mount
// namespace of its own (unshare) with its database on a 1 MiB tmpfs, so that the tests need
// neither a real full disk nor a user other than root (root writes any file that is merely
// not writable).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;

const std::string broker_binary = MA_BROKER_BINARY;
const std::string unshare = "/usr/bin/unshare";

// sh -c text that mounts a 1 MiB tmpfs on dir, runs setup, then runs the broker in its place.
std::vector<std::string> in_namespace(const std::string& dir, const std::string& setup,
                                      std::vector<std::string> more = {}) {
  std::string script = "set -e; mount -t tmpfs -o size=1m tmpfs '" + dir + "'; " + setup + "; exec '" +
                       broker_binary + "' --port 0 --discovery off --database '" + dir + "/broker.db'";
  for (auto& m : more) script += " '" + m + "'";
  return {"-rm", "sh", "-c", script};
}

bool namespaces_work() {
  static const bool work = test::run_command(unshare, {"-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"}).first == 0;
  return work;
}

TEST(DatabaseErrors, AtTheStartEachIsASentenceWithWhatToDo) {
  if (!namespaces_work()) GTEST_SKIP() << "unshare -rm (user and mount namespaces) is not allowed here";
  test::temp_dir dir;
  const std::string d = dir.file("db");
  std::filesystem::create_directories(d);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"mount -o remount,ro '" + d + "'",
       "its folder is on a read-only file system. Give --database a file on a writable one"},
      {": > '" + d + "/broker.db'; mount --bind '" + d + "/broker.db' '" + d + "/broker.db'; mount -o remount,ro,bind '" +
           d + "/broker.db'",
       "The database '" + d + "/broker.db' can not be written (attempt to write a readonly database"},
      {"head -c 2000000 /dev/zero > '" + d + "/fill' 2>/dev/null || true",
       "The disk holding the database '" + d + "/broker.db' is full"},
  };
  for (const auto& [setup, says] : cases) {
    auto [status, out] = test::run_command(unshare, in_namespace(d, setup));
    EXPECT_EQ(status, 1) << setup << "\n" << out;
    EXPECT_NE(out.find(says), std::string::npos) << setup << "\n" << out;
  }
}

// A disk that fills while the broker runs: the sends that can not be kept get internal_error,
// /healthz says why, others go on; once there is room again, everything works as before.
TEST(DatabaseErrors, ADiskThatFillsWhileRunningIsSaidAndOutlived) {
  if (!namespaces_work()) GTEST_SKIP() << "unshare -rm (user and mount namespaces) is not allowed here";
  test::temp_dir dir;
  const std::string d = dir.file("db");
  std::filesystem::create_directories(d);
  const auto http_port = test::free_port();
  test::child_process broker(unshare, in_namespace(d, "true", {"--http-port", std::to_string(http_port)}),
                             dir.file("broker.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  auto health = [&] {
    return test::run_command(MA_CURL, {"-s", "--max-time", "20", "http://127.0.0.1:" + std::to_string(http_port) +
                                                                    "/healthz"})
        .second;
  };
  EXPECT_EQ(health(), "ok\n");

  test::client alice(*port), carol(*port);
  alice.log_in("alice");
  carol.log_in("carol");
  // The broker's tmpfs, seen through its process (the same mount namespace).
  const std::string fill = "/proc/" + std::to_string(broker.pid()) + "/root" + d + "/fill";
  {
    std::ofstream out(fill, std::ios::binary);
    const std::string chunk(64 * 1024, 'x');
    for (int i = 0; i < 32 && out; ++i) out << chunk << std::flush;
  }
  const std::string big(200 * 1024, 'y');
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", big}, {"message_uuid", "full-1"}});
  auto refused = alice.expect_content("error", 20s);
  EXPECT_EQ(refused.at("error_code").as_string(), "internal_error") << refused;
  EXPECT_TRUE(broker.wait_for_log(std::regex("(is full)"), 20s)) << broker.log();
  const std::string said = health();
  EXPECT_NE(said.find("the store can not commit: The disk holding the database"), std::string::npos) << said;
  // Another agent is not disturbed: its session answers.
  carol.send("get_user_list", {});
  carol.expect("user_list");

  std::filesystem::remove(fill);
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "after"}, {"message_uuid", "full-2"}});
  EXPECT_EQ(alice.expect_content("message_accepted", 20s).at("message_uuid").as_string(), "full-2");
  EXPECT_EQ(health(), "ok\n");
  test::client bob(*port);
  bob.log_in("bob");
  EXPECT_EQ(bob.expect_content("receive_message", 20s).at("message_uuid").as_string(), "full-2");
}

}  // namespace
}  // namespace ma
