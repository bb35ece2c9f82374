// TLS end to end: certificates made with openssl in the test's directory, the real broker
// binary with a TLS listener beside its plain one, the agent library and the CLI as clients.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
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

const std::string broker_binary = MA_BROKER_BINARY;
const std::string agent_binary = MA_AGENT_BINARY;
const std::string openssl = "/usr/bin/openssl";

class Tls : public ::testing::Test {
 protected:
  test::temp_dir dir;
  std::uint16_t port_ = 0, tls_port_ = 0;

  void SetUp() override {
    make_ca("ca");
    make_ca("other-ca");
    make_cert("server", "127.0.0.1", "ca", true);
    make_cert("alice", "alice", "ca", false);
    make_cert("mallory", "mallory", "other-ca", false);
  }
  void run(const std::vector<std::string>& args) {
    auto [status, out] = test::run_command(openssl, args);
    ASSERT_EQ(status, 0) << out;
  }
  void make_ca(const std::string& name) {
    run({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
         dir.file(name + ".key"), "-out", dir.file(name + ".pem"), "-days", "2", "-subj", "/CN=" + name});
  }
  void make_cert(const std::string& name, const std::string& cn, const std::string& ca, bool server) {
    run({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file(name + ".key"),
         "-out", dir.file(name + ".csr"), "-subj", "/CN=" + cn});
    std::vector<std::string> sign = {"x509", "-req", "-in", dir.file(name + ".csr"), "-CA", dir.file(ca + ".pem"),
                                     "-CAkey", dir.file(ca + ".key"), "-CAcreateserial", "-out",
                                     dir.file(name + ".pem"), "-days", "2"};
    if (server) {
      { std::ofstream(dir.file("san.ext")) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"; }
      sign.insert(sign.end(), {"-extfile", dir.file("san.ext")});
    }
    run(sign);
  }
  std::unique_ptr<test::child_process> start_broker(std::vector<std::string> extra = {}) {
    tls_port_ = test::free_port();
    auto args = test::broker_args(dir);
    args.insert(args.end(), {"--tls-port", std::to_string(tls_port_), "--tls-cert", dir.file("server.pem"),
                             "--tls-key", dir.file("server.key")});
    args.insert(args.end(), extra.begin(), extra.end());
    auto b = std::make_unique<test::child_process>(broker_binary, args, dir.file("broker.log"));
    port_ = test::listening_port(*b, 20s).value_or(0);
    EXPECT_NE(port_, 0) << b->log();
    EXPECT_TRUE(b->wait_for_log(std::regex("TLS listener on 127\\.0\\.0\\.1:(\\d+)"), 10s)) << b->log();
    return b;
  }
  agent::client::settings over_tls(const std::string& user, const std::string& cert = {}) {
    agent::client::settings s;
    s.port = tls_port_;
    s.username = user;
    s.tls = true;
    s.tls_ca = dir.file("ca.pem");
    if (!cert.empty()) {
      s.tls_cert = dir.file(cert + ".pem");
      s.tls_key = dir.file(cert + ".key");
    }
    s.reconnect = false;
    return s;
  }
  std::vector<std::string> cli_over_tls(const std::string& user, const std::string& cert = {}) {
    std::vector<std::string> a = {"--broker", "127.0.0.1:" + std::to_string(tls_port_), "--tls", "--tls-ca",
                                  dir.file("ca.pem"), "--user", user};
    if (!cert.empty()) a.insert(a.end(), {"--tls-cert", dir.file(cert + ".pem"), "--tls-key", dir.file(cert + ".key")});
    return a;
  }
};

// The same frames over TLS: a TLS agent and a plain one exchange messages, acknowledgements
// and receipts through one broker.
TEST_F(Tls, TheSameFramesFlowOverTlsAndPlainTcpAlike) {
  auto broker = start_broker();
  asio::io_context io;
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    agent::client alice(io.get_executor(), over_tls("alice"));
    SCOPED_TRACE(broker->log());
    agent::client::settings plain;
    plain.port = port_;
    plain.username = "bob";
    agent::client bob(io.get_executor(), plain);
    co_await alice.connect();
    co_await bob.connect();
    agent::outgoing m;
    m.text = "over TLS";
    const auto sent = co_await alice.send("bob", m);
    auto got = co_await bob.receive(10s);
    EXPECT_TRUE(got.has_value());
    if (got) {
      EXPECT_EQ(*got->text, "over TLS");
      bob.acknowledge(*got);
    }
    const auto report = co_await alice.delivered(sent.message_uuid, 10s);
    EXPECT_TRUE(report.has_value());
    m.text = std::string(200'000, 'y');  // many TLS records
    co_await bob.send("alice", m);
    auto back = co_await alice.receive(10s);
    EXPECT_TRUE(back.has_value() && back->text->size() == 200'000u);
    if (back) alice.acknowledge(*back);
    co_await alice.close();
    co_await bob.close();
  });
}

// With a CA, --tls-require-client-cert and --tls-identity-as-username: no certificate, or one
// another CA signed, is refused at the handshake; the certificate's name wins over the name the
// agent claims, and needs no password.
TEST_F(Tls, TheClientCertificateIsRequiredAndNamesTheUser) {
  const std::string passwords = dir.file("passwords");
  {
    auto [status, out] = test::run_command(broker_binary,
                                           {"passwd", "--password-file", passwords, "--password-hash-ops", "1",
                                            "--password-hash-mem-kib", "8", "bob"},
                                           std::string("b-secret\n"));
    ASSERT_EQ(status, 0) << out;
  }
  auto broker = start_broker({"--tls-ca", dir.file("ca.pem"), "--tls-require-client-cert", "on",
                              "--tls-identity-as-username", "on", "--password-file", passwords,
                              "--password-hash-ops", "1", "--password-hash-mem-kib", "8"});
  auto args = cli_over_tls("mallory", "alice");
  args.insert(args.end(), {"send", "bob", "signed by alice's certificate"});
  auto [s1, out1] = test::run_command(agent_binary, args);
  EXPECT_EQ(s1, 0) << out1;

  auto no_cert = cli_over_tls("alice");
  no_cert.insert(no_cert.end(), {"send", "bob", "x"});
  auto [s2, out2] = test::run_command(agent_binary, no_cert);
  EXPECT_NE(s2, 0) << out2;  // (TLS 1.3: the client hears of it after its own handshake is done)
  EXPECT_TRUE(broker->wait_for_log(std::regex("TLS handshake .* failed: (peer did not return a certificate)"), 10s))
      << broker->log();

  auto rogue = cli_over_tls("mallory", "mallory");
  rogue.insert(rogue.end(), {"send", "bob", "x"});
  auto [s3, out3] = test::run_command(agent_binary, rogue);
  EXPECT_NE(s3, 0) << out3;
  EXPECT_TRUE(broker->wait_for_log(std::regex("TLS handshake .* failed: (certificate verify failed)"), 10s))
      << broker->log();

  // bob reads on the plain port with his password: one message, from alice.
  auto [s4, out4] = test::run_command(agent_binary, {"--broker", "127.0.0.1:" + std::to_string(port_), "--user", "bob",
                                                     "--password", "b-secret", "--json", "listen", "--count", "1"});
  EXPECT_EQ(s4, 0) << out4 << broker->log();
  EXPECT_NE(out4.find("\"sender_username\":\"alice\""), std::string::npos) << out4;
  EXPECT_NE(out4.find("signed by alice's certificate"), std::string::npos) << out4;
}

// Plaintext on the TLS port fails its handshake and is closed, without a frame; a TLS agent
// logged in meanwhile goes on.
TEST_F(Tls, PlaintextOnTheTlsPortIsRefusedWithoutDisturbingOthers) {
  auto broker = start_broker();
  asio::io_context io;
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    agent::client alice(io.get_executor(), over_tls("alice"));
    co_await alice.connect();
    test::client plain(tls_port_);
    plain.send("log_in", {{"sender_username", "mallory"}});
    EXPECT_TRUE(plain.closed_within(10s));
    const auto users = co_await alice.users();
    EXPECT_EQ(users, std::vector<std::string>{"alice"});
    co_await alice.close();
  });
  EXPECT_TRUE(broker->wait_for_log(std::regex("TLS handshake from 127\\.0\\.0\\.1:(\\d+) failed"), 10s)) << broker->log();
}

// SIGHUP reads the certificate and key again for new connections: a certificate from another
// CA, which a client trusting only that CA accepts after the reload and not before.
TEST_F(Tls, SighupReloadsTheCertificate) {
  auto broker = start_broker();
  make_cert("server2", "127.0.0.1", "other-ca", true);
  asio::io_context io;
  auto trusting_other = [&] {
    auto s = over_tls("alice");
    s.tls_ca = dir.file("other-ca.pem");
    return s;
  };
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    agent::client before(io.get_executor(), trusting_other());
    bool refused = false;
    try {
      co_await before.connect();
    } catch (const agent::connection_error&) {
      refused = true;
    }
    EXPECT_TRUE(refused) << "the old certificate is not signed by other-ca";
  });
  std::filesystem::copy_file(dir.file("server2.pem"), dir.file("server.pem"), std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(dir.file("server2.key"), dir.file("server.key"), std::filesystem::copy_options::overwrite_existing);
  broker->signal(SIGHUP);
  ASSERT_TRUE(broker->wait_for_log(std::regex("TLS certificate, key and CA (read) again"), 10s)) << broker->log();
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    agent::client after(io.get_executor(), trusting_other());
    co_await after.connect();
    co_await after.close();
  });
}

}  // namespace
}  // namespace ma
