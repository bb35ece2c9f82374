// Discovery: the UDP responder that answers discover_broker (and the original design's log_in
// datagram) on the multicast group. The decisions are pure functions, tested alone: how many
// replies a source may get, and which address to announce.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/metrics.hpp"
#include "core/request.hpp"

namespace ma {

struct broker_options;

// At most per_second replies to one source address per second, so that the broker can not be
// used to amplify traffic. A fixed table of slots (bounded memory) that never forgets a limit
// still running: a source whose slot is taken by another source within its second is refused,
// not given a fresh budget.
class reply_rate_limit {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  static constexpr int per_second = 20;
  static constexpr std::size_t slots = 16 * 1024;

  reply_rate_limit() : table_(slots) {}
  bool allow(const std::string& source, time_point now);

 private:
  struct slot {
    std::string source;
    time_point window{};
    int count = 0;
  };
  std::vector<slot> table_;
};

// The request_id a datagram reply echoes: the asker's own, if it is short; none otherwise, so a
// reply never carries much that the asker chose.
inline constexpr std::size_t max_echoed_request_id = 64;

// The "host:port" to announce: the configured address, else the listen address unless it is
// unspecified (0.0.0.0, ::), else the local address that faces the asker. IPv6 in brackets.
std::string announce_address(std::string_view advertise, std::string_view listen_host, bool listen_unspecified,
                             std::string_view facing_host, std::uint16_t port);

class discovery_responder {
 public:
  // online: how many agents are online, for broker_announce. tcp_port: the port to announce.
  discovery_responder(boost::asio::io_context& io, const broker_options& o, std::function<std::size_t()> online);
  // Binds and joins the group; throws std::runtime_error with a sentence on failure.
  void open();
  // Answers until close(); listen is the TCP listener's address and port, tls_port the TLS
  // listener's (0: none, no tls_address announced). Pending operations hold keep (the broker)
  // alive.
  void start(boost::asio::ip::tcp::endpoint listen, std::uint16_t tls_port, std::shared_ptr<void> keep);
  void close();
  std::uint16_t port() const;
  const discovery_counters& counters() const { return counters_; }

 private:
  void receive();
  void answer(std::size_t n);

  boost::asio::io_context& io_;
  const broker_options& o_;
  std::function<std::size_t()> online_;
  discovery_counters counters_;
  std::uint16_t tls_port_ = 0;
  boost::asio::ip::udp::socket socket_;
  boost::asio::ip::tcp::endpoint listen_;
  request_decoder decoder_;
  reply_rate_limit limit_;
  boost::asio::ip::udp::endpoint from_;
  std::array<char, 2048> buf_{};
  std::string reply_;
  std::shared_ptr<void> keep_;
  bool open_ = false;
};

}  // namespace ma
