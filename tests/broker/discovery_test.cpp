// Discovery by UDP multicast on 127.0.0.1: query to the group, unicast reply.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json/parse.hpp>

#include "broker/discovery.hpp"
#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

// A UDP socket that sends to the discovery group over loopback only (TTL 1).
class asker {
 public:
  asker() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    in_addr lo{};
    lo.s_addr = htonl(INADDR_LOOPBACK);
    ::setsockopt(fd_, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof lo);
    unsigned char ttl = 1;
    ::setsockopt(fd_, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&any), sizeof any);
  }
  ~asker() { ::close(fd_); }

  std::uint16_t port() const {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  }

  void send_to(const std::string& group, std::uint16_t port, const std::string& payload) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, group.c_str(), &to.sin_addr);
    ::sendto(fd_, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  }

  std::optional<json::object> receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    char buf[2048];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    return json::parse(std::string_view(buf, static_cast<std::size_t>(n))).as_object();
  }

 private:
  int fd_;
};

class Discovery : public ::testing::Test {
 protected:
  test::temp_dir dir;
  broker_options o = test::test_options(dir);
  void SetUp() override {
    o.discovery = true;
    o.discovery_port = 0;  // a free port: parallel tests do not collide
    o.discovery_group = "239.255.77.77";
    o.discovery_interface = "127.0.0.1";
  }
};

TEST_F(Discovery, QueryToTheGroupGetsAnAnnounceWithAReachableAddress) {
  test::running_broker b(o);
  test::client alice(b.port());
  alice.log_in("alice");
  asker a;
  a.send_to("239.255.77.77", b.discovery_port(),
            R"({"message_id":"discover_broker","message_content":{"request_id":"q1"}})");
  auto reply = a.receive(10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->at("message_id").as_string(), "broker_announce");
  auto& c = reply->at("message_content").as_object();
  EXPECT_EQ(c.at("broker_name").as_string(), "test-broker");
  EXPECT_EQ(c.at("broker_address").as_string(), "127.0.0.1:" + std::to_string(b.port()));
  EXPECT_EQ(c.at("protocol_version").as_int64(), 1);
  EXPECT_EQ(c.at("online_users").as_int64(), 1);
  EXPECT_EQ(c.at("request_id").as_string(), "q1");
  EXPECT_FALSE(c.contains("tls_address")) << "no TLS listener, no tls_address";
  // The announced address works.
  test::client bob(b.port());
  bob.log_in("bob");
}

// With a TLS listener the announce names it too, as an address the asker can reach.
TEST_F(Discovery, AnAnnounceCarriesTheTlsAddressWhenThereIsOne) {
  auto [status, out] = test::run_command(
      "/usr/bin/openssl", {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                           dir.file("key.pem"), "-out", dir.file("cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"});
  ASSERT_EQ(status, 0) << out;
  o.tls_port = test::free_port();
  o.tls_cert = dir.file("cert.pem");
  o.tls_key = dir.file("key.pem");
  test::running_broker b(o);
  asker a;
  a.send_to("239.255.77.77", b.discovery_port(), R"({"message_id":"discover_broker","message_content":{}})");
  auto reply = a.receive(10s);
  ASSERT_TRUE(reply);
  auto& c = reply->at("message_content").as_object();
  EXPECT_EQ(c.at("broker_address").as_string(), "127.0.0.1:" + std::to_string(b.port()));
  EXPECT_EQ(c.at("tls_address").as_string(), "127.0.0.1:" + std::to_string(o.tls_port));
}

TEST_F(Discovery, TheOriginalLogInDatagramIsAnsweredOnlyWhenAskedFor) {
  test::running_broker b(o);
  asker a, listener;
  a.send_to("127.0.0.1", b.discovery_port(),
            R"({"message_id":"log_in","message_content":{"sender_username":"old","sender_port":)" +
                std::to_string(listener.port()) + "}}");
  EXPECT_FALSE(listener.receive(300ms)) << "a reply aimed at a port the asker chose";
  a.send_to("127.0.0.1", b.discovery_port(), R"({"message_id":"discover_broker","message_content":{}})");
  EXPECT_TRUE(a.receive(10s));
}

TEST_F(Discovery, ALongRequestIdIsNotEchoed) {
  test::running_broker b(o);
  asker a;
  a.send_to("127.0.0.1", b.discovery_port(),
            R"({"message_id":"discover_broker","message_content":{"request_id":")" + std::string(200, 'r') + "\"}}");
  auto reply = a.receive(10s);
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply->at("message_content").as_object().contains("request_id"));
  a.send_to("127.0.0.1", b.discovery_port(),
            R"({"message_id":"discover_broker","message_content":{"request_id":"short"}})");
  reply = a.receive(10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->at("message_content").at("request_id").as_string(), "short");
}

TEST_F(Discovery, UnicastQueryAndTheOriginalLogInDatagram) {
  o.discovery_legacy_login = true;
  test::running_broker b(o);
  asker a, listener;
  a.send_to("127.0.0.1", b.discovery_port(), R"({"message_id":"discover_broker","message_content":{}})");
  ASSERT_TRUE(a.receive(10s));
  a.send_to("239.255.77.77", b.discovery_port(),
            R"({"message_id":"log_in","message_content":{"sender_username":"old","sender_port":)" +
                std::to_string(listener.port()) + "}}");
  auto reply = listener.receive(10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->at("message_id").as_string(), "acknowledge_log_in");
  EXPECT_EQ(reply->at("message_content").at("broker_address").as_string(), "127.0.0.1:" + std::to_string(b.port()));
}

TEST_F(Discovery, MalformedOrOversizedDatagramsAreNeverAnswered) {
  test::running_broker b(o);
  asker a;
  a.send_to("239.255.77.77", b.discovery_port(), "not json");
  a.send_to("239.255.77.77", b.discovery_port(), R"({"message_id":"heartbeat","message_content":{}})");
  a.send_to("239.255.77.77", b.discovery_port(),
            R"({"message_id":"discover_broker","message_content":{"request_id":")" + std::string(1500, 'x') + "\"}}");
  EXPECT_FALSE(a.receive(500ms));
  // Still answering proper queries.
  a.send_to("239.255.77.77", b.discovery_port(), R"({"message_id":"discover_broker","message_content":{}})");
  EXPECT_TRUE(a.receive(10s));
}

TEST_F(Discovery, RepliesToOneSourceAreBounded) {
  test::running_broker b(o);
  asker a;
  for (int i = 0; i < 100; ++i) {
    a.send_to("127.0.0.1", b.discovery_port(), R"({"message_id":"discover_broker","message_content":{}})");
  }
  int replies = 0;
  while (a.receive(300ms)) ++replies;
  EXPECT_GT(replies, 0);
  EXPECT_LE(replies, 40);  // 20 a second, and the burst may straddle two seconds
}

TEST_F(Discovery, OffMeansNoUdpSocket) {
  o.discovery = false;
  test::running_broker b(o);
  EXPECT_EQ(b.discovery_port(), 0);
}

}  // namespace
}  // namespace ma

namespace ma {
namespace {

TEST(DiscoveryRules, TheAnnouncedAddressIsConfiguredElseListenedElseFacing) {
  EXPECT_EQ(announce_address("broker.example", "127.0.0.1", false, "10.0.0.5", 10000), "broker.example:10000");
  EXPECT_EQ(announce_address("", "127.0.0.1", false, "10.0.0.5", 10000), "127.0.0.1:10000");
  EXPECT_EQ(announce_address("", "0.0.0.0", true, "10.0.0.5", 10000), "10.0.0.5:10000");
  EXPECT_EQ(announce_address("", "::", true, "fe80::1", 7), "[fe80::1]:7");
}

TEST(DiscoveryRules, ManySourcesDoNotResetTheLimitOfOne) {
  reply_rate_limit limit;
  const auto t0 = std::chrono::steady_clock::time_point(std::chrono::hours(1));
  for (int i = 0; i < reply_rate_limit::per_second; ++i) EXPECT_TRUE(limit.allow("10.0.0.1", t0));
  for (int i = 0; i < 50'000; ++i) limit.allow("10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256), t0);
  EXPECT_FALSE(limit.allow("10.0.0.1", t0 + std::chrono::milliseconds(500))) << "the limit was forgotten";
  EXPECT_TRUE(limit.allow("10.0.0.1", t0 + std::chrono::milliseconds(1500)));
}

TEST(DiscoveryRules, RepliesPerSourceArePerSecond) {
  reply_rate_limit limit;
  const auto t0 = std::chrono::steady_clock::time_point(std::chrono::hours(1));
  for (int i = 0; i < reply_rate_limit::per_second; ++i) EXPECT_TRUE(limit.allow("10.0.0.1", t0));
  EXPECT_FALSE(limit.allow("10.0.0.1", t0));
  EXPECT_TRUE(limit.allow("10.0.0.2", t0)) << "another source has its own budget";
  EXPECT_FALSE(limit.allow("10.0.0.1", t0 + std::chrono::milliseconds(1000)));
  EXPECT_TRUE(limit.allow("10.0.0.1", t0 + std::chrono::milliseconds(1001)));
}

}  // namespace
}  // namespace ma
