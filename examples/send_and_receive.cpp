// Two agents on one broker: bob waits for messages, alice sends him one and waits for the
// receipt that says bob acknowledged it.
//
//   send_and_receive [HOST [PORT]]        (default 127.0.0.1 10000)
//
// Exit status 0 when the receipt came, 1 otherwise.
#include <message_agent/client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using ma::agent::client;

asio::awaitable<int> run(std::string host, std::uint16_t port) {
  auto ex = co_await asio::this_coro::executor;
  client::settings s;
  s.host = host;
  s.port = port;
  s.log = [](ma::agent::log_level, const std::string& line) { std::cerr << "client: " << line << "\n"; };

  s.username = "example-bob";
  client bob(ex, s);
  co_await bob.connect();
  s.username = "example-alice";
  client alice(ex, s);
  co_await alice.connect();

  // message_accepted: the broker has the message (in its database, or already acknowledged).
  ma::agent::outgoing hello;
  hello.text = "hello, bob";
  auto accepted = co_await alice.send("example-bob", hello);
  std::cout << "alice sent " << accepted.message_uuid << ": " << accepted.recipients.at(0).status << "\n";

  auto m = co_await bob.receive(5s);
  if (!m) {
    std::cout << "bob received nothing\n";
    co_return 1;
  }
  std::cout << "bob received from " << m->sender << ": " << m->text.value_or("") << "\n";
  bob.acknowledge(*m);  // the broker tells alice it was delivered

  auto receipt = co_await alice.delivered(accepted.message_uuid, 5s);
  if (!receipt || !receipt->delivered()) {
    std::cout << "alice got no receipt\n";
    co_return 1;
  }
  std::cout << "alice's receipt: delivered to " << receipt->receiver << " at " << receipt->delivered_at << "\n";
  co_await alice.close();
  co_await bob.close();
  co_return 0;
}

int main(int argc, char** argv) {
  const std::string host = argc > 1 ? argv[1] : "127.0.0.1";
  const auto port = static_cast<std::uint16_t>(argc > 2 ? std::atoi(argv[2]) : 10000);
  asio::io_context io;
  int status = 1;
  asio::co_spawn(io, run(host, port), [&](std::exception_ptr e, int r) {
    status = r;
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "send_and_receive: " << ex.what() << "\n";
      }
      status = 1;
    }
  });
  io.run();
  return status;
}
