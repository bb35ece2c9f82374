// Decoding and validation of what an agent sends: one frame in, one typed request or one
// protocol_error out. Sans-I/O; no Boost.JSON in this header.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "core/kind.hpp"
#include "core/result.hpp"

namespace ma {

// Names of recipients: mostly one (send_message), kept inline.
using usernames = boost::container::small_vector<std::string, 1>;

// A validated request. Which fields are set depends on k (protocol.md, "Kinds").
struct request {
  kind k = kind::heartbeat;
  std::string request_id;  // empty when the request had none

  // log_in
  std::string username;
  std::optional<std::string> password;
  std::optional<std::uint64_t> heartbeat_interval_ms;
  std::optional<std::uint16_t> sender_port;  // the log_in datagram of the original design
  bool send_only = false;                    // no deliveries, no redeliveries, no presence
  std::optional<std::uint64_t> receive_window;  // at most this many unacknowledged deliveries

  // send_message, multicast_message, broadcast_message, group_message
  std::string message_uuid;             // empty: the broker makes one
  usernames receivers;                  // send: one; multicast: one or more, no repeats
  std::optional<std::uint64_t> ttl_ms;
  // The message body as JSON object text holding message_text and/or payload, exactly as
  // stored in the Dead Letter Channel and spliced into receive_message.
  std::string body;

  // group commands and group_message
  std::string group_name;
  std::vector<std::string> members;  // create_group, no repeats

  // acknowledge_message
  std::vector<std::string> ack_uuids;
  std::string ack_sender;  // empty unless given
};

inline constexpr std::uint64_t max_receive_window = 1'000'000;

// Decodes frames one at a time, reusing its parser and memory between frames.
// Not thread-safe; one per session.
class request_decoder {
 public:
  explicit request_decoder(std::size_t max_message_bytes);
  ~request_decoder();
  request_decoder(const request_decoder&) = delete;
  request_decoder& operator=(const request_decoder&) = delete;

  void set_max_message_bytes(std::size_t n) noexcept;

  // Validates one TCP frame. Broker-to-agent and discovery kinds are unknown_message_id here.
  // Plain message frames (send, multicast, broadcast, group) and acknowledge_message frames
  // are read without a JSON tree.
  result<request> decode(std::string_view frame);
  // decode() without that shortcut (the tests hold the two to the same answers).
  result<request> decode_in_full(std::string_view frame);
  // How many frames decode() read through the shortcut.
  std::uint64_t plain_frames() const noexcept;
  // Validates one discovery datagram: discover_broker, or the original design's log_in.
  result<request> decode_datagram(std::string_view datagram);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace ma
