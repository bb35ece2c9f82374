// One TCP connection: the socket, its line framer and its writes, on the broker's thread. The
// broker core (broker/core/) decides everything; the session reads frames into it, writes what
// the core queued in the peer's outbox, and tells the core how many bytes went out.
//
// Reading: while data comes in, a coroutine reads it and hands complete frames to the core; an
// idle connection has no coroutine, only a callback waiting for data (about 200 bytes instead
// of a coroutine frame's 1.5 KiB). Writing: what the core queued is written with one
// non-blocking call at the end of each burst of work (flush); only a socket that cannot take
// it all gets asynchronous writes, for as long as it stays full.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "broker/core/port.hpp"
#include "core/framer.hpp"

namespace ma {

class broker_core;

// The clocks read once, for the inputs of one burst of work.
moment moment_now();

// What a session needs of the broker around it.
class session_host {
 public:
  virtual ~session_host() = default;
  virtual broker_core& core() = 0;
  // The session is over and its socket closed.
  virtual void session_ended(peer_id id) = 0;
  // Keeps the host alive while a session's operation is pending.
  virtual std::shared_ptr<void> keep_alive() = 0;
};

// Where a coroutine sleeps until other code wakes it or a deadline passes. The timer lives in
// the sleeping coroutine's frame. One sleeper at a time; a wake with nobody asleep is lost, so
// sleepers test their condition first.
class wake_point {
 public:
  boost::asio::awaitable<void> sleep_until(steady_time deadline);
  void wake();

 private:
  boost::asio::steady_timer* timer_ = nullptr;
};

class session : public std::enable_shared_from_this<session> {
 public:
  enum class read_state {
    idle,     // no coroutine: a callback waits for data
    waiting,  // the coroutine waits for data (a busy connection keeps it)
    parking,  // the coroutine is told to give way to a callback
    reading,  // the coroutine reads and hands frames to the core
    held,     // the core holds this connection's frames; the coroutine sleeps
    closing,  // nothing more is read: what is queued is written, then the send side shuts
  };
  enum class write_state {
    direct,  // writes are made at once, non-blocking
    async,   // the socket was full: asynchronous writes are at work
  };

  session(session_host& host, boost::asio::ip::tcp::socket socket, peer_id id, std::size_t max_frame_bytes);

  peer_id id() const { return id_; }
  std::string remote_address();

  void start();  // waits for the first data without a coroutine or a read buffer
  void flush();  // writes what the core queued for this peer
  void hold();
  void resume();
  void set_frame_limit(std::size_t max_frame_bytes) { framer_.set_max_frame_bytes(max_frame_bytes); }
  void begin_close();
  // The broker's housekeeping: a busy coroutine silent for a while parks; a connection that
  // does not drain within the close limit is closed.
  void housekeeping(steady_time now);
  void close_socket();

 private:
  boost::asio::awaitable<bool> run();
  // Hands the buffered complete frames to the core, until one is missing, or the core holds
  // or closes the connection.
  void handle_buffered();
  boost::asio::awaitable<void> finish();
  void wait_for_data();
  void spawn();
  void write_rest();
  void ended();
  auto until_closing();

  session_host& host_;
  boost::asio::ip::tcp::socket socket_;
  line_framer framer_;
  peer_id id_;
  read_state reading_ = read_state::idle;
  write_state writing_ = write_state::direct;
  bool ending_ = false;  // the session is over once its asynchronous write completes
  bool busy_ = false;    // the last read came soon after the one before
  steady_time last_read_{};
  steady_time closing_since_{};
  boost::asio::cancellation_signal stop_reading_;  // begin_close and park end a wait for data
  wake_point resumed_;                             // a held reader sleeps here
  wake_point written_;                             // a closing reader waits here for the writer
};

}  // namespace ma
