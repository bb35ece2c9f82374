// Integration-test helpers: a real broker in-process on 127.0.0.1 (its own thread, a
// temporary SQLite file) and a blocking line-JSON client over a real socket.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "bench/processes.hpp"
#include "broker/broker.hpp"
#include "broker/options.hpp"
#include "storage/store.hpp"
#include "tests/support/temp_dir.hpp"

namespace ma::test {

using namespace std::chrono_literals;

// Polls cond every few milliseconds until it holds; false if it did not within limit.
template <class Cond>
bool eventually(Cond cond, std::chrono::milliseconds limit = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Options for tests: loopback, ephemeral ports, discovery off, a temporary database.
broker_options test_options(const temp_dir& dir);

class running_broker {
 public:
  // busy_timeout_ms: how long the broker's SQLite waits for another connection's lock.
  explicit running_broker(broker_options o, int busy_timeout_ms = 5000);
  ~running_broker();  // graceful stop, then the store drains
  std::uint16_t port() const { return port_; }
  std::uint16_t discovery_port() const { return discovery_port_; }
  const broker_options& options() const { return o_; }
  // Runs fn on the broker's thread and waits for it.
  void on_broker_thread(std::function<void()> fn);
  broker_status status();
  // Store operations waiting to be retried after a failed transaction.
  std::size_t store_retrying() const { return store_->retrying(); }

 private:
  broker_options o_;
  std::unique_ptr<store> store_;
  boost::asio::io_context io_;
  std::unique_ptr<broker> broker_;
  std::thread thread_;
  std::uint16_t port_ = 0;
  std::uint16_t discovery_port_ = 0;
};

// A TCP port on 127.0.0.1 that was free a moment ago (for options where 0 means "off").
using bench::free_port;
// A TCP socket connected to 127.0.0.1:port (receive_buffer > 0 shrinks SO_RCVBUF first) from
// the loopback address from (another one of 127/8 looks like another host), or -1.
int connect_loopback(std::uint16_t port, int receive_buffer = 0, const char* from = "127.0.0.1");
// Sends chunk again and again without blocking, until max_bytes went out, until, or the peer
// closed; waits a millisecond whenever the socket is full. Returns the bytes sent.
std::size_t send_without_blocking(int fd, std::string_view chunk, std::size_t max_bytes,
                                  std::chrono::steady_clock::time_point until);

class client {
 public:
  // receive_buffer > 0 shrinks SO_RCVBUF before connecting (a slow consumer fills up sooner).
  explicit client(std::uint16_t port, int receive_buffer = 0, const char* from = "127.0.0.1");
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  void send(std::string_view kind, boost::json::object content = {});
  void send_raw(std::string_view bytes);
  // Shuts down the sending side (a half-close, like `nc -N` at the end of its input).
  void shutdown_send();
  // The next frame (envelope object), from the backlog first; nullopt on timeout or close.
  std::optional<boost::json::object> recv(std::chrono::milliseconds timeout = 10s);
  // The next frame of this kind; others read on the way wait in the backlog. Fails the test
  // (and returns {}) when none comes in time.
  boost::json::object expect(std::string_view kind, std::chrono::milliseconds timeout = 10s);
  // The content of expect(kind).
  boost::json::object expect_content(std::string_view kind, std::chrono::milliseconds timeout = 10s);
  // The content of the next error frame with this code (errors with other codes are skipped).
  boost::json::object expect_error(std::string_view code, std::chrono::milliseconds timeout = 10s);
  // True if no frame of this kind arrives within the time (others go to the backlog).
  bool quiet_of(std::string_view kind, std::chrono::milliseconds wait);
  // True once the broker closed the connection (frames before that go to the backlog).
  bool closed_within(std::chrono::milliseconds timeout);
  // log_in and its acknowledge_log_in content.
  boost::json::object log_in(const std::string& name, boost::json::object extra = {});
  // Reads no more for a while: the socket buffers fill up (slow consumer).
  int fd() const { return fd_; }

 private:
  bool read_frame(std::chrono::milliseconds timeout, boost::json::object& out);
  int fd_ = -1;
  std::string buf_;
  std::deque<boost::json::object> backlog_;
  bool eof_ = false;
};

}  // namespace ma::test
