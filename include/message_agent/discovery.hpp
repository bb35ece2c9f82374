// Finding brokers: a discover_broker query to the multicast group (or a unicast address), and
// every broker_announce that comes back within the timeout.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace ma::agent {

struct discovery_settings {
  std::string group = "239.255.77.77";  // or a unicast address of a broker
  std::uint16_t port = 10001;
  std::string interface = "127.0.0.1";  // the interface the query leaves by
  std::chrono::milliseconds timeout{1000};
  // Return as soon as one broker answered (a one-shot command needs one), not at the timeout.
  bool first_answer_only = false;
};

struct discovered_broker {
  std::string name;
  std::string address;  // host:port of its TCP listener
  std::string tls_address;  // host:port of its TLS listener; empty when it has none
  int protocol_version = 0;
  std::int64_t online_users = 0;
};

// Every distinct broker that answered within the timeout, in the order they answered. Throws
// boost::system::system_error if the query can not be sent.
boost::asio::awaitable<std::vector<discovered_broker>> discover(const discovery_settings& s);

}  // namespace ma::agent
