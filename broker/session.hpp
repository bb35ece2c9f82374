// One connection, plain TCP or TLS: the socket (with a TLS stream over it on the TLS port), its
// line framer and its writes, on the broker's thread. The broker core (broker/core/) decides
// everything; the session reads frames into it, writes what the core queued in the peer's
// outbox, and tells the core how many bytes went out. The same code serves both transports:
// only the calls that touch bytes go through the TLS stream when there is one.
//
// Reading: while data comes in, a coroutine reads it and hands complete frames to the core; an
// idle connection has no coroutine, only a callback waiting for data (120 bytes instead of a
// coroutine frame's 1.5 KiB). Writing: what the core queued is written with one
// non-blocking call at the end of each burst of work (flush); only a socket that cannot take
// it all gets asynchronous writes, for as long as it stays full. A TLS session differs in three
// places: it shakes hands first (within the login timeout: a close then cuts the handshake
// short), it always writes asynchronously (OpenSSL may need to write while reading), and it
// keeps its reading coroutine while idle (decrypted bytes may wait inside the TLS stream, where
// a wait for the socket to become readable would not see them).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "broker/core/port.hpp"
#include "core/framer.hpp"

namespace ma {

class broker_core;

// The clocks read once, for the inputs of one burst of work.
moment moment_now();

// What a session needs of the broker around it.
struct transport_counters;

class session_host {
 public:
  virtual ~session_host() = default;
  virtual broker_core& core() = 0;
  // The session is over and its socket closed.
  virtual void session_ended(peer_id id) = 0;
  // Keeps the host alive while a session's operation is pending.
  virtual std::shared_ptr<void> keep_alive() = 0;
  // A TLS session's handshake is done; name is its client certificate's common name when the
  // certificate is to name the user (--tls-identity-as-username), else empty.
  virtual void tls_established(peer_id id, const std::string& name) = 0;
  // Where the sessions count the bytes they read and write.
  virtual transport_counters& traffic() = 0;
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

// A connection's socket, on the broker's io_context itself rather than a polymorphic executor:
// every operation waiting on an idle connection is smaller by that (docs/performance.md, W5).
using socket_type = boost::asio::basic_stream_socket<boost::asio::ip::tcp, boost::asio::io_context::executor_type>;

class session : public std::enable_shared_from_this<session> {
 public:
  enum class read_state : std::uint8_t {
    idle,     // no coroutine: a callback waits for data
    waiting,  // the coroutine waits for data (a busy connection keeps it)
    parking,  // the coroutine is told to give way to a callback
    reading,  // the coroutine reads and hands frames to the core
    held,     // the core holds this connection's frames; the coroutine sleeps
    closing,  // nothing more is read: what is queued is written, then the send side shuts
  };
  enum class write_state : std::uint8_t {
    direct,  // writes are made at once, non-blocking
    async,   // the socket was full: asynchronous writes are at work
  };

  // With tls, the session speaks TLS (as the server) over socket with that context.
  session(session_host& host, socket_type socket, peer_id id, std::size_t max_frame_bytes,
          std::shared_ptr<boost::asio::ssl::context> tls = nullptr, bool identity_from_certificate = false);

  peer_id id() const { return id_; }
  std::string remote_address();

  void start();  // waits for the first data without a coroutine or a read buffer (TLS: shakes hands)
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
  boost::asio::awaitable<void> handshake();
  boost::asio::awaitable<void> shutdown_send();
  // Hands the buffered complete frames to the core, until one is missing, or the core holds
  // or closes the connection.
  void handle_buffered();
  boost::asio::awaitable<void> finish();
  void wait_for_data();
  void spawn();
  void write_rest();
  void ended();
  auto until_closing();

  // A TLS session's stream over the socket, with the context it uses (one pointer in a plain
  // TCP session, which has none).
  struct tls_part {
    tls_part(socket_type& socket, std::shared_ptr<boost::asio::ssl::context> c)
        : context(std::move(c)), stream(socket, *context) {}
    std::shared_ptr<boost::asio::ssl::context> context;
    boost::asio::ssl::stream<socket_type&> stream;
  };

  session_host& host_;
  socket_type socket_;
  std::unique_ptr<tls_part> tls_;
  line_framer framer_;
  peer_id id_;
  // The small members together: an idle connection holds a session (168 bytes).
  bool handshaking_ = false;
  bool identity_from_certificate_ = false;
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
