// The agent library against a real in-process broker on 127.0.0.1.
#include "message_agent/client.hpp"

#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <atomic>
#include <set>

#include "message_agent/discovery.hpp"
#include "tests/support/broker_harness.hpp"
#include "tests/support/run_coroutine.hpp"

namespace ma {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using agent::client;
using agent::outgoing;

client::settings for_user(std::uint16_t port, const std::string& name) {
  client::settings s;
  s.port = port;
  s.username = name;
  s.backoff_min = 20ms;
  s.backoff_max = 500ms;
  return s;
}

outgoing text(const std::string& t, const std::string& uuid = {}) {
  outgoing m;
  m.text = t;
  m.message_uuid = uuid;
  return m;
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

class AgentLibrary : public ::testing::Test {
 protected:
  test::temp_dir dir;
  broker_options o = test::test_options(dir);
  asio::io_context io;
};

TEST_F(AgentLibrary, SendReceiveWithManualAckAndDeliveryReport) {
  test::running_broker b(o);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    client alice(io.get_executor(), for_user(b.port(), "alice"));
    client bob(io.get_executor(), for_user(b.port(), "bob"));
    auto login = co_await alice.connect();
    EXPECT_EQ(login.broker_name, "test-broker");
    co_await bob.connect();
    auto r = co_await alice.send("bob", text("hi", "lib-1"));
    EXPECT_EQ(r.message_uuid, "lib-1");
    EXPECT_EQ(r.recipients.size(), 1u);
    if (!r.recipients.empty()) {
      EXPECT_EQ(r.recipients[0].status, "relayed");
    }
    auto m = co_await bob.receive(10s);
    EXPECT_TRUE(m);
    if (!m) co_return;
    EXPECT_EQ(*m->text, "hi");
    EXPECT_EQ(m->sender, "alice");
    // Not acknowledged yet: no report.
    auto early = co_await alice.delivered("lib-1", 200ms);
    EXPECT_FALSE(early);
    bob.acknowledge(*m);
    auto report = co_await alice.delivered("lib-1", 10s);
    EXPECT_TRUE(report);
    if (report) {
      EXPECT_EQ(report->receiver, "bob");
    }
    auto users = co_await bob.users();
    EXPECT_EQ(users, (std::vector<std::string>{"alice", "bob"}));
    co_await alice.close();
    co_await bob.close();
  }());
}

TEST_F(AgentLibrary, RefusalsAreBrokerErrors) {
  test::running_broker b(o);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    client first(io.get_executor(), for_user(b.port(), "same"));
    client second(io.get_executor(), for_user(b.port(), "same"));
    co_await first.connect();
    std::string code;
    try {
      co_await second.connect();
    } catch (const agent::broker_error& e) {
      code = e.code;
    }
    EXPECT_EQ(code, "username_taken");
    code.clear();
    try {
      co_await first.group_send("nowhere", text("x"));
    } catch (const agent::broker_error& e) {
      code = e.code;
    }
    EXPECT_EQ(code, "unknown_group");
    const std::vector<std::string> members{"other"};
    auto g = co_await first.create_group("ops", members);
    EXPECT_EQ(g.members, (std::vector<std::string>{"other", "same"}));
    co_await first.close();
  }());
}

TEST_F(AgentLibrary, HeartbeatsKeepAQuietAgentOnline) {
  o.heartbeat_interval_ms = 200;
  o.eviction_factor = 3;
  test::running_broker b(o);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    client quiet(io.get_executor(), for_user(b.port(), "quiet"));
    client watcher(io.get_executor(), for_user(b.port(), "watcher"));
    co_await quiet.connect();
    co_await watcher.connect();
    co_await sleep_for(1500ms);  // two and a half eviction times
    auto users = co_await watcher.users();
    EXPECT_EQ(users, (std::vector<std::string>{"quiet", "watcher"}));
    EXPECT_EQ(quiet.reconnects(), 0u);
    co_await quiet.close();
    co_await watcher.close();
  }());
}

// A receive that timed out while another receive was still waiting leaves no trace: the
// messages that come after go to the waiting one and to the next receive, none is swallowed.
TEST_F(AgentLibrary, AReceiveThatTimedOutTakesNoMessage) {
  test::running_broker b(o);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    client alice(io.get_executor(), for_user(b.port(), "alice"));
    client bob(io.get_executor(), for_user(b.port(), "bob"));
    co_await alice.connect();
    co_await bob.connect();
    std::optional<agent::message> first;
    bool first_done = false;
    auto wait_long = [&]() -> asio::awaitable<void> {
      first = co_await bob.receive(10s);
      first_done = true;
    };
    asio::co_spawn(io, wait_long(), asio::detached);
    co_await sleep_for(50ms);  // wait_long is waiting first
    auto none = co_await bob.receive(100ms);  // waits behind wait_long's receive, and times out
    EXPECT_FALSE(none);
    // Both in one burst, so that they reach bob in one read.
    auto send_one = [&]() -> asio::awaitable<void> { co_await alice.send("bob", text("one")); };
    asio::co_spawn(io, send_one(), asio::detached);
    co_await alice.send("bob", text("two"));
    auto second = co_await bob.receive(10s);
    for (int i = 0; i < 100 && !first_done; ++i) co_await sleep_for(100ms);
    EXPECT_TRUE(first);
    EXPECT_TRUE(second);
    if (first && second) {
      EXPECT_EQ((std::set<std::string>{*first->text, *second->text}), (std::set<std::string>{"one", "two"}));
    }
    co_await alice.close();
    co_await bob.close();
  }());
}

TEST_F(AgentLibrary, ConsumeAcknowledgesAfterTheHandlerReturns) {
  test::running_broker b(o);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    client alice(io.get_executor(), for_user(b.port(), "alice"));
    client bob(io.get_executor(), for_user(b.port(), "bob"));
    co_await alice.connect();
    co_await bob.connect();
    std::vector<std::string> seen;
    asio::co_spawn(io, bob.consume([&](const agent::message& m) { seen.push_back(*m.text); }), asio::detached);
    for (int i = 0; i < 5; ++i) {
      auto r = co_await alice.send("bob", text("m" + std::to_string(i)));
      auto report = co_await alice.delivered(r.message_uuid, 10s);
      EXPECT_TRUE(report);
    }
    EXPECT_EQ(seen.size(), 5u);
    co_await bob.close();
    co_await alice.close();
  }());
}

TEST_F(AgentLibrary, DiscoveryFindsTheBrokerOnLoopback) {
  o.discovery = true;
  o.discovery_port = 0;
  test::running_broker b(o);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    agent::discovery_settings d;
    d.port = b.discovery_port();
    d.timeout = 500ms;
    auto found = co_await agent::discover(d);
    EXPECT_EQ(found.size(), 1u);
    if (!found.empty()) {
      EXPECT_EQ(found[0].address, "127.0.0.1:" + std::to_string(b.port()));
      EXPECT_EQ(found[0].name, "test-broker");
    }
  }());
}

TEST_F(AgentLibrary, ReconnectAfterABrokerRestartMidStreamLosesNothingAndDuplicatesNothing) {
  o.port = test::free_port();  // a broker that must come back on the same port
  std::optional<test::running_broker> b(std::in_place, o);
  constexpr int n = 600;
  std::atomic<int> accepted{0};
  std::atomic<bool> restarted{false};
  std::thread restarter([&] {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (accepted < n / 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    b.reset();  // graceful: the unacknowledged go to the Dead Letter Channel
    b.emplace(o);
    restarted = true;
  });
  std::multiset<std::string> received;
  std::uint64_t alice_reconnects = 0, bob_reconnects = 0;
  test::run_coroutine(
      io,
      [&]() -> asio::awaitable<void> {
        client alice(io.get_executor(), for_user(o.port, "alice"));
        client bob(io.get_executor(), for_user(o.port, "bob"));
        co_await alice.connect();
        co_await bob.connect();
        asio::co_spawn(io, bob.consume([&](const agent::message& m) { received.insert(*m.text); }), asio::detached);
        int done = 0, failed = 0;
        for (int i = 0; i < n; ++i) {
          asio::co_spawn(
              io,
              [&, i]() -> asio::awaitable<void> {
                try {
                  co_await alice.send("bob", text("n" + std::to_string(i)));
                  ++accepted;
                } catch (const std::exception&) {
                  ++failed;
                }
                ++done;
              },
              asio::detached);
          if (i % 20 == 0) co_await sleep_for(5ms);  // a stream, not one burst
        }
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while ((done < n || received.size() < static_cast<std::size_t>(n)) && std::chrono::steady_clock::now() < deadline) {
          co_await sleep_for(10ms);
        }
        EXPECT_EQ(failed, 0);
        alice_reconnects = alice.reconnects();
        bob_reconnects = bob.reconnects();
        co_await sleep_for(300ms);  // late duplicates would show up here
        co_await alice.close();
        co_await bob.close();
      }(),
      120s);
  restarter.join();
  EXPECT_TRUE(restarted);
  EXPECT_GE(alice_reconnects, 1u);
  EXPECT_GE(bob_reconnects, 1u);
  EXPECT_EQ(accepted.load(), n);
  EXPECT_EQ(received.size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(received.count("n" + std::to_string(i)), 1u) << i;
}

// Issue 16 (agents fail over): a client given other brokers moves to the next when its broker
// dies, logs in there and sends on; a first connect to a broker that is down goes on to the next.
TEST_F(AgentLibrary, AClientGivenOtherBrokersMovesToTheNextWhenItsBrokerDies) {
  test::temp_dir dir2;
  broker_options o2 = test::test_options(dir2);
  std::optional<test::running_broker> b1(std::in_place, o);
  test::running_broker b2(o2);
  const std::uint16_t down = test::free_port();  // nothing listens there
  std::vector<std::string> received;
  std::uint64_t reconnects = 0;
  test::run_coroutine(
      io,
      [&]() -> asio::awaitable<void> {
        auto s = for_user(b1->port(), "alice");
        s.fallback_brokers = {{"127.0.0.1", down}, {"127.0.0.1", b2.port()}};
        client alice(io.get_executor(), s);
        client bob(io.get_executor(), for_user(b2.port(), "bob"));
        co_await alice.connect();
        co_await bob.connect();
        asio::co_spawn(io, bob.consume([&](const agent::message& m) { received.push_back(*m.text); }), asio::detached);
        b1.reset();  // alice's broker goes
        co_await alice.send("bob", text("after"));
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (received.empty() && std::chrono::steady_clock::now() < deadline) co_await sleep_for(10ms);
        reconnects = alice.reconnects();
        co_await alice.close();
        co_await bob.close();

        auto first = for_user(down, "carol");
        first.fallback_brokers = {{"127.0.0.1", b2.port()}};
        client carol(io.get_executor(), first);
        auto info = co_await carol.connect();
        EXPECT_EQ(info.broker_name, "test-broker") << "carol's first connect went on to b2";
        co_await carol.close();
      }(),
      60s);
  EXPECT_GE(reconnects, 1u);
  EXPECT_EQ(received, std::vector<std::string>{"after"});
}

// Issue item 11: a send of text that is not UTF-8 never returned; now it fails at once, and
// nothing reaches the broker.
TEST_F(AgentLibrary, TextThatIsNotUtf8FailsTheCallAtOnce) {
  test::running_broker b(o);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    client alice(io.get_executor(), for_user(b.port(), "alice"));
    co_await alice.connect();
    bool threw = false;
    try {
      co_await alice.send("bob", text("caf\xc3"));
    } catch (const agent::invalid_argument& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find("UTF-8"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(threw);
    threw = false;
    std::vector<std::string> members{"b\xff"};
    try {
      co_await alice.create_group("ops", members);
    } catch (const agent::invalid_argument&) {
      threw = true;
    }
    EXPECT_TRUE(threw);
    outgoing bad_payload;
    bad_payload.payload_json = "{\"k\":";
    threw = false;
    try {
      co_await alice.send("bob", bad_payload);
    } catch (const agent::invalid_argument&) {
      threw = true;
    }
    EXPECT_TRUE(threw);
    // The session is unharmed.
    auto r = co_await alice.send("bob", text("caf\xc3\xa9"));
    EXPECT_EQ(r.recipients.at(0).status, "dead_lettered");
    co_await alice.close();
  }());
}

// A peer that answers log_in and then nothing: every call ends with timeout_error in time.
TEST_F(AgentLibrary, NoCallWaitsForeverForAnAnswerThatDoesNotCome) {
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = silent.local_endpoint().port();
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    for (int peer = 0; peer < 2; ++peer) {
      auto sock = std::make_shared<asio::ip::tcp::socket>(co_await silent.async_accept(asio::use_awaitable));
      if (peer == 0) {  // the first answers log_in
        std::string line;
        co_await asio::async_read_until(*sock, asio::dynamic_buffer(line), '\n', asio::use_awaitable);
        const std::string ack =
            "{\"message_id\":\"acknowledge_log_in\",\"message_content\":{\"request_id\":\"c1\","
            "\"sender_username\":\"alice\",\"heartbeat_interval_ms\":10000}}\n";
        co_await asio::async_write(*sock, asio::buffer(ack), asio::use_awaitable);
      }
      asio::co_spawn(io, [sock]() -> asio::awaitable<void> {  // reads and never answers
        std::vector<char> buf(4096);
        for (;;) {
          auto [ec, n] = co_await sock->async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
        }
      }, asio::detached);
    }
  }, asio::detached);
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    auto s = for_user(port, "alice");
    s.request_timeout = 300ms;
    s.reconnect = false;
    client alice(io.get_executor(), s);
    co_await alice.connect();
    int timeouts = 0;
    try {
      co_await alice.users();
    } catch (const agent::timeout_error& e) {
      ++timeouts;
      EXPECT_NE(std::string(e.what()).find("get_user_list"), std::string::npos) << e.what();
    }
    try {
      co_await alice.send("bob", text("hi"));
    } catch (const agent::timeout_error&) {
      ++timeouts;
    }
    EXPECT_EQ(timeouts, 2);
    client bob(io.get_executor(), [&] {
      auto b = for_user(port, "bob");
      b.request_timeout = 300ms;
      return b;
    }());
    bool refused = false;
    try {
      co_await bob.connect();  // the second peer never answers log_in
    } catch (const agent::timeout_error&) {
      refused = true;
    }
    EXPECT_TRUE(refused);
  }(), 30s);
}

}  // namespace
}  // namespace ma
