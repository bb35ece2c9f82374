// The broker's replies that are not on the hot path (frames.hpp has those), each built whole
// with its request_id echoed in one place. The broker above core/ builds every frame through
// here or frames.hpp, so it needs no JSON library of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace ma {

inline constexpr int protocol_version = 1;

// Groups as the broker holds them: name to sorted members.
using member_set = std::set<std::string, std::less<>>;
using group_map = std::map<std::string, member_set, std::less<>>;

std::string make_heartbeat_ack(std::string_view request_id);
std::string make_log_out_ack(std::string_view request_id);

struct log_in_granted {
  std::string_view username;
  const std::vector<std::string_view>& online;  // sorted
  std::uint64_t heartbeat_interval_ms;
  std::uint64_t ack_timeout_ms;
  std::size_t max_frame_bytes;
  std::int64_t pending_dead_letters;
  std::string_view broker_name;
  bool send_only;
  std::size_t receive_window;  // 0: none asked for
  std::string_view request_id;
};
std::string make_log_in_ack(const log_in_granted& g);

std::string make_user_list(const std::vector<std::string_view>& online, std::string_view request_id);

// update_user_set: the list itself while it is short enough (list_names), always the count.
std::string make_user_set_update(const std::vector<std::string_view>* list, std::size_t user_count,
                                 const std::vector<std::string>& joined, const std::vector<std::string>& left);

std::string make_group_ack(std::string_view group, const member_set* members, std::string_view request_id);
std::string make_group_list(const group_map& groups, std::string_view request_id);

// Discovery datagrams: one object each, without the newline of a TCP frame.
std::string make_broker_announce(std::string_view broker_name, std::string_view address, std::size_t online_users,
                                 std::string_view request_id, std::string_view tls_address = {});
// The answer to the original design's log_in datagram: where to connect.
std::string make_datagram_log_in_ack(std::string_view address, std::string_view request_id);

}  // namespace ma
