// Every message kind of protocol.md, with its wire string (the envelope's message_id).
#pragma once

#include <optional>
#include <string_view>

namespace ma {

enum class kind {
  // agent to broker (TCP)
  log_in,
  log_out,
  heartbeat,
  get_user_list,
  send_message,
  multicast_message,
  broadcast_message,
  create_group,
  join_group,
  leave_group,
  get_group_list,
  group_message,
  acknowledge_message,
  // broker to agent (TCP)
  acknowledge_log_in,
  acknowledge_log_out,
  acknowledge_heartbeat,
  user_list,
  receive_message,
  update_user_set,
  message_accepted,
  message_delivered,
  message_dead_lettered,
  acknowledge_group,
  group_list,
  error,
  // discovery (UDP)
  discover_broker,
  broker_announce,
};

inline constexpr kind all_kinds[] = {
    kind::log_in,           kind::log_out,          kind::heartbeat,
    kind::get_user_list,    kind::send_message,     kind::multicast_message,
    kind::broadcast_message, kind::create_group,    kind::join_group,
    kind::leave_group,      kind::get_group_list,   kind::group_message,
    kind::acknowledge_message, kind::acknowledge_log_in, kind::acknowledge_log_out,
    kind::acknowledge_heartbeat, kind::user_list,   kind::receive_message,
    kind::update_user_set,  kind::message_accepted, kind::message_delivered,
    kind::message_dead_lettered, kind::acknowledge_group, kind::group_list,
    kind::error,            kind::discover_broker,  kind::broker_announce,
};

std::string_view to_string(kind k) noexcept;
std::optional<kind> kind_from_string(std::string_view text) noexcept;

// True for the kinds an agent may send to the broker over TCP.
bool is_agent_request(kind k) noexcept;

// How a message reached its recipient (receive_message's channel).
enum class channel { direct, multicast, broadcast, group };
std::string_view to_string(channel c) noexcept;
std::optional<channel> channel_from_string(std::string_view text) noexcept;

}  // namespace ma
