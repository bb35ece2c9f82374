// The operator's HTTP endpoint of the real binary (--http-port): /metrics read with curl and
// checked by Prometheus' promtool, /healthz, and what else an HTTP client may send.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <string>
#include <thread>

#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
using test::client;

const std::string broker_binary = MA_BROKER_BINARY;

struct http_broker {
  explicit http_broker(test::temp_dir& dir)
      : http_port(test::free_port()), process(broker_binary, args(dir, http_port), dir.file("broker.log")) {
    port = test::listening_port(process, 20s);
  }
  static std::vector<std::string> args(test::temp_dir& dir, std::uint16_t http_port) {
    auto a = test::broker_args(dir);
    a.insert(a.end(), {"--http-port", std::to_string(http_port)});
    return a;
  }
  // curl's exit status and what it printed: the status code on the first line, then the body.
  std::pair<int, std::string> get(const std::string& path, std::vector<std::string> more = {}) {
    std::vector<std::string> a = {"-s", "--max-time", "20", "-w", "%{http_code}\n", "-o", "-"};
    a.insert(a.end(), more.begin(), more.end());
    a.push_back("http://127.0.0.1:" + std::to_string(http_port) + path);
    auto [status, out] = test::run_command(MA_CURL, a);
    // -w prints after the body: move the code to the front.
    auto cut = out.find_last_of('\n', out.size() >= 2 ? out.size() - 2 : 0);
    cut = cut == std::string::npos ? 0 : cut + 1;
    return {status, out.substr(cut) + out.substr(0, cut)};
  }
  std::uint16_t http_port;
  test::child_process process;
  std::optional<std::uint16_t> port;
};

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(HttpEndpoint, MetricsCountWhatHappenedAndPassPromtool) {
  test::temp_dir dir;
  http_broker b(dir);
  ASSERT_TRUE(b.port) << b.process.log();
  {
    client alice(*b.port);
    alice.log_in("alice");
    alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "for later"}});
    alice.expect("message_accepted");
  }
  client bad(*b.port);
  bad.send("log_in", {{"sender_username", "no spaces allowed"}});
  EXPECT_EQ(bad.expect_content("error").at("error_code").as_string(), "invalid_username");
  client bob(*b.port);
  bob.log_in("bob");
  auto again = bob.expect_content("receive_message");
  bob.send("acknowledge_message", {{"message_uuid", again.at("message_uuid")}});
  client carol(*b.port);
  carol.log_in("carol");
  carol.send("send_message", {{"receiver_username", "bob"}, {"message_text", "live"}, {"message_uuid", "live-1"}});
  bob.expect("receive_message");
  bob.send("acknowledge_message", {{"message_uuid", "live-1"}});
  carol.expect("message_delivered");

  auto [status, metrics] = b.get("/metrics");
  ASSERT_EQ(status, 0) << metrics;
  EXPECT_EQ(metrics.substr(0, 4), "200\n") << metrics;
  for (const char* line : {"message_broker_messages_accepted_total 2",
                           "message_broker_dead_lettered_total{reason=\"recipient_offline\"} 1",
                           "message_broker_redeliveries_total 1", "message_broker_deliveries_relayed_total 1",
                           "message_broker_deliveries_acknowledged_total 2", "message_broker_dead_letters_pending 0",
                           "message_broker_agents_online 2", "message_broker_in_flight 0",
                           "message_broker_log_ins_refused_total{code=\"invalid_username\"} 1",
                           "message_broker_build_info{version=\"" MA_VERSION "\"} 1"}) {
    EXPECT_TRUE(has_line(metrics, line)) << line << "\n" << metrics;
  }
  EXPECT_TRUE(std::regex_search(metrics, std::regex("\nmessage_broker_store_commit_seconds_count [1-9]")));
  EXPECT_TRUE(std::regex_search(metrics, std::regex("\nmessage_broker_received_bytes_total [1-9]")));
  auto [lint, said] = test::run_command(MA_PROMTOOL, {"check", "metrics"}, metrics.substr(4));
  EXPECT_EQ(lint, 0) << said;
}

TEST(HttpEndpoint, HealthzSaysOkWhileTheStoreCommitsAndWhyNotOtherwise) {
  test::temp_dir dir;
  http_broker b(dir);
  ASSERT_TRUE(b.port) << b.process.log();
  auto [s1, ok] = b.get("/healthz");
  EXPECT_EQ(ok, "200\nok\n");
  // The database file deleted under the broker: the store refuses to commit to a file that is
  // no longer where it was opened.
  std::filesystem::remove(dir.file("broker.db"));
  auto [s2, gone] = b.get("/healthz");
  EXPECT_EQ(gone.substr(0, 4), "503\n") << gone;
  EXPECT_NE(gone.find("the database file '" + dir.file("broker.db") + "' is missing"), std::string::npos) << gone;
  auto [s3, metrics] = b.get("/metrics");
  EXPECT_TRUE(has_line(metrics, "message_broker_database_file_present 0")) << metrics;
}

TEST(HttpEndpoint, AnswersGetAndHeadOnlyAndNeverHoldsTheBrokersStop) {
  test::temp_dir dir;
  http_broker b(dir);
  ASSERT_TRUE(b.port) << b.process.log();
  EXPECT_EQ(b.get("/nothing").second.substr(0, 4), "404\n");
  EXPECT_EQ(b.get("/metrics", {"-X", "POST"}).second.substr(0, 4), "405\n");
  EXPECT_EQ(b.get("/healthz", {"-I"}).second.substr(0, 4), "200\n");
  // Headers past 8 KiB: refused, and the broker goes on.
  auto [s, big] = b.get("/metrics", {"-H", "X-Big: " + std::string(10'000, 'x')});
  EXPECT_EQ(big.substr(0, 4), "400\n") << big;
  client alice(*b.port);
  alice.log_in("alice");

  // A kept-alive HTTP connection does not hold the broker's stop.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(b.http_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  char reply[512];
  EXPECT_GT(::read(fd, reply, sizeof reply), 0);
  b.process.signal(SIGTERM);
  EXPECT_EQ(b.process.wait(8s), 0) << b.process.log();
  ::close(fd);
}

// Out of file descriptors, an accept fails and leaves the connection queued: a loop that tried
// again at once spun on a core and wrote the same warning a million times in seconds (the HTTP
// endpoint did). Both accept loops pause after a failure, and the broker serves again once
// descriptors are free.
TEST(HttpEndpoint, AcceptingWithoutFileDescriptorsNeitherSpinsNorFloodsTheLog) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "a broker built with the sanitizers can not run out of file descriptors: their runtime needs some "
                  "(UBSan's vptr check opens a pipe, and reports an invalid object when it can not)";
#endif
  test::temp_dir dir;
  const std::uint16_t http_port = test::free_port();
  auto args = http_broker::args(dir, http_port);
  args.insert(args.begin(), {"--nofile=48:48", "--", broker_binary});
  test::child_process broker("/usr/bin/prlimit", args, dir.file("broker.log"));
  const auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  std::vector<int> fds;
  for (int i = 0; i < 60; ++i) fds.push_back(test::connect_loopback(*port));  // the last ones wait, queued
  // Once no descriptor is left, an HTTP scrape waits queued too.
  ASSERT_TRUE(broker.wait_for_log(std::regex("port: accept failed: (Too many open files)"), 20s)) << broker.log();
  for (int i = 0; i < 2; ++i) fds.push_back(test::connect_loopback(http_port));
  ASSERT_TRUE(broker.wait_for_log(std::regex("http: accept failed: (Too many open files)"), 20s)) << broker.log();

  const auto failures = [&] {
    const std::string log = broker.log();
    std::size_t n = 0;
    for (auto at = log.find("accept failed"); at != std::string::npos; at = log.find("accept failed", at + 1)) ++n;
    return n;
  };
  const std::size_t failures_before = failures();
  const double cpu_before = bench::proc_cpu_s(broker.pid());
  std::this_thread::sleep_for(2s);
  // A pause of 100 ms per loop: some 40 lines and little CPU in 2 s; spinning, a core and
  // hundreds of thousands of lines.
  EXPECT_LT(bench::proc_cpu_s(broker.pid()) - cpu_before, 0.5);
  EXPECT_LT(failures() - failures_before, 200u);

  for (int fd : fds) ::close(fd);
  client alice(*port);
  alice.log_in("alice");
  auto [status, out] = test::run_command(MA_CURL, {"-s", "--max-time", "20", "http://127.0.0.1:" + std::to_string(http_port) + "/healthz"});
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "ok\n");
}

}  // namespace
}  // namespace ma
