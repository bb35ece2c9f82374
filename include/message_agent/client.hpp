// The agent library: a coroutine client of message-broker.
//
// One client is one agent (one username) on one connection. Every member function must be
// called from the executor given to the constructor (one thread); the client's own coroutines
// (reader, writer, heartbeats, reconnects) run there too. Heartbeats are sent by the client at
// the granted interval. When the connection drops, the client reconnects with backoff, logs in
// again and resends every send the broker had not yet accepted, with the same message_uuid
// (the broker's dedupe makes that safe): a caller awaiting send() sees neither loss nor
// duplicate, and a message it already received is not handed to it twice.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ma::agent {

// The broker answered a request with an error: its error_code and its sentence.
struct broker_error : std::runtime_error {
  broker_error(std::string code, const std::string& text) : std::runtime_error(text), code(std::move(code)) {}
  std::string code;
};

// No connection: could not connect, the client was closed, or reconnecting is off.
struct connection_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The broker did not answer a request within settings::request_timeout.
struct timeout_error : connection_error {
  using connection_error::connection_error;
};

// What the call was given can not be sent (text that is not UTF-8, a payload that is not
// JSON); thrown at once, before anything is sent.
struct invalid_argument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// What to send: message_text and/or payload (JSON text).
struct outgoing {
  std::optional<std::string> text;
  std::optional<std::string> payload_json;
  std::string message_uuid;  // empty: the client makes one, so a resend can be recognized
  std::optional<std::uint64_t> ttl_ms;
};

struct recipient_status {
  std::string receiver;
  std::string status;  // relayed | dead_lettered
};

struct send_result {
  std::string message_uuid;
  std::vector<recipient_status> recipients;  // one for send()
  bool duplicate = false;
};

struct message {
  std::string message_uuid;
  std::string sender;
  std::string receiver;
  std::string channel;
  std::string group_name;
  std::string sent_at;
  std::optional<std::string> text;
  std::optional<std::string> payload_json;
  bool redelivery = false;
  int attempt = 1;
  std::string dead_letter_reason;
  std::string content_json;  // the whole receive_message content, as the broker sent it
};

struct presence_event {
  std::vector<std::string> joined;
  std::vector<std::string> left;
  std::vector<std::string> user_list;  // empty when the broker left it out (many users)
};

struct group_info {
  std::string name;
  std::vector<std::string> members;
};

struct login_info {
  std::string broker_name;
  std::vector<std::string> user_list;
  std::uint64_t heartbeat_interval_ms = 0;
  std::uint64_t ack_timeout_ms = 0;
  std::int64_t pending_dead_letters = 0;
};

// What became of a message this client sent, for one recipient: delivered (acknowledged), or
// moved to the Dead Letter Channel (dead_letter_reason set; it may still be delivered later, at
// the recipient's next login).
struct delivery_report {
  std::string receiver;
  std::string delivered_at;        // when delivered
  std::string dead_letter_reason;  // when dead-lettered: why (ack_timeout, recipient_disconnected, ...)
  bool delivered() const { return dead_letter_reason.empty(); }
};

// What the client has to say (a reconnect, a line from the broker it could not read), for the
// program's own log. The library writes nothing anywhere by itself.
enum class log_level { debug, info, warn, error };
using log_hook = std::function<void(log_level, const std::string& line)>;

class client {
 public:
  struct settings {
    std::string host = "127.0.0.1";
    std::uint16_t port = 10000;
    std::string username;
    // The user's password, for a broker with a password file.
    std::optional<std::string> password;
    // TLS to the broker's TLS port: the broker's certificate is verified against tls_ca (PEM; the
    // system's CAs when empty) and must name host. tls_cert and tls_key (PEM) present a client
    // certificate.
    bool tls = false;
    std::string tls_ca, tls_cert, tls_key;
    // Reconnects after a drop. Never after auth_failed or session_taken_over: those end the
    // client (every waiting call fails with that broker_error), so that two agents with the
    // same name do not take it from each other in a loop.
    bool reconnect = true;
    // Other brokers of the same cluster (docs/cluster.md), tried in turn after host:port: a
    // first connect that fails goes on to the next, and a connection that drops reconnects to
    // the next one first (its broker may have died), logs in there and resends as above.
    std::vector<std::pair<std::string, std::uint16_t>> fallback_brokers;
    std::chrono::milliseconds backoff_min{100};
    std::chrono::milliseconds backoff_max{5000};
    std::optional<std::uint64_t> heartbeat_interval_ms;  // ask for a longer interval
    // Only sends: the broker hands this session no messages, redeliveries or presence, and it
    // may be connected beside the same user's receiving session (one-shot commands).
    bool send_only = false;
    // At most this many unacknowledged messages handed to this session at once; the broker
    // keeps the rest, with no delivery attempt counted, until acknowledgements make room.
    std::optional<std::uint64_t> receive_window;
    // How long a request (log_in, a send, a list, a group change, log_out) waits for its
    // answer before it fails with timeout_error.
    std::chrono::milliseconds request_timeout{30'000};
    // Called on the client's executor; empty: nothing is logged.
    log_hook log;
  };

  client(boost::asio::any_io_executor ex, settings s);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Connects and logs in. Throws broker_error (e.g. username_taken) or connection_error
  // (timeout_error when the broker does not answer; a TLS handshake that fails, with its
  // reason; a TLS file that can not be read).
  boost::asio::awaitable<login_info> connect();
  // log_out, then close. Every waiting call ends with connection_error.
  boost::asio::awaitable<void> close();

  // Each completes with message_accepted (throws broker_error on an error reply, timeout_error
  // when none comes within request_timeout, invalid_argument at once for text that is not
  // UTF-8 or a payload that is not JSON).
  boost::asio::awaitable<send_result> send(std::string to, outgoing m);
  boost::asio::awaitable<send_result> multicast(std::vector<std::string> to, outgoing m);
  boost::asio::awaitable<send_result> broadcast(outgoing m);
  boost::asio::awaitable<send_result> group_send(std::string group, outgoing m);
  // The first outcome of a message this client sent: the recipient's acknowledgement
  // (message_delivered) or its move to the Dead Letter Channel after message_accepted said
  // relayed (message_dead_lettered), or nullopt if neither came within the timeout. Reports
  // that arrived earlier are kept.
  boost::asio::awaitable<std::optional<delivery_report>> delivered(std::string message_uuid,
                                                                   std::chrono::milliseconds timeout);

  // The next message, or nullopt after the timeout. Throws connection_error once closed.
  boost::asio::awaitable<std::optional<message>> receive(std::chrono::milliseconds timeout);
  // Acknowledges a received message (the sender is told it was delivered).
  void acknowledge(const message& m);
  // Acknowledges several in one frame.
  void acknowledge(const std::vector<message>& ms);
  // Hands each message to handler and acknowledges it when handler returns (if it throws, the
  // message stays unacknowledged and the exception ends consume). Returns when the client is
  // closed.
  boost::asio::awaitable<void> consume(std::function<void(const message&)> handler);

  // The next presence change, or nullopt after the timeout.
  boost::asio::awaitable<std::optional<presence_event>> next_presence(std::chrono::milliseconds timeout);
  boost::asio::awaitable<std::vector<std::string>> users();
  boost::asio::awaitable<group_info> create_group(std::string name, std::vector<std::string> members);
  boost::asio::awaitable<group_info> join_group(std::string name);
  boost::asio::awaitable<group_info> leave_group(std::string name);
  boost::asio::awaitable<std::vector<group_info>> groups();

  // Called on the client's executor when the connection of a logged-in client drops (false; it
  // reconnects unless settings::reconnect is off) and when it has logged in again (true).
  void on_connection(std::function<void(bool connected)> watcher);

  const login_info& login() const;
  const std::string& username() const;
  // How many times the connection was made again after a drop.
  std::uint64_t reconnects() const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace ma::agent
