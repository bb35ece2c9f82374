#include "core/kind.hpp"

namespace ma {

std::string_view to_string(kind k) noexcept {
  switch (k) {
    case kind::log_in: return "log_in";
    case kind::log_out: return "log_out";
    case kind::heartbeat: return "heartbeat";
    case kind::get_user_list: return "get_user_list";
    case kind::send_message: return "send_message";
    case kind::multicast_message: return "multicast_message";
    case kind::broadcast_message: return "broadcast_message";
    case kind::create_group: return "create_group";
    case kind::join_group: return "join_group";
    case kind::leave_group: return "leave_group";
    case kind::get_group_list: return "get_group_list";
    case kind::group_message: return "group_message";
    case kind::acknowledge_message: return "acknowledge_message";
    case kind::acknowledge_log_in: return "acknowledge_log_in";
    case kind::acknowledge_log_out: return "acknowledge_log_out";
    case kind::acknowledge_heartbeat: return "acknowledge_heartbeat";
    case kind::user_list: return "user_list";
    case kind::receive_message: return "receive_message";
    case kind::update_user_set: return "update_user_set";
    case kind::message_accepted: return "message_accepted";
    case kind::message_delivered: return "message_delivered";
    case kind::message_dead_lettered: return "message_dead_lettered";
    case kind::acknowledge_group: return "acknowledge_group";
    case kind::group_list: return "group_list";
    case kind::error: return "error";
    case kind::discover_broker: return "discover_broker";
    case kind::broker_announce: return "broker_announce";
  }
  return "error";
}

std::optional<kind> kind_from_string(std::string_view text) noexcept {
  for (kind k : all_kinds) {
    if (to_string(k) == text) return k;
  }
  return std::nullopt;
}

bool is_agent_request(kind k) noexcept {
  return k <= kind::acknowledge_message;
}

std::string_view to_string(channel c) noexcept {
  switch (c) {
    case channel::direct: return "direct";
    case channel::multicast: return "multicast";
    case channel::broadcast: return "broadcast";
    case channel::group: return "group";
  }
  return "direct";
}

std::optional<channel> channel_from_string(std::string_view text) noexcept {
  for (channel c : {channel::direct, channel::multicast, channel::broadcast, channel::group}) {
    if (to_string(c) == text) return c;
  }
  return std::nullopt;
}

}  // namespace ma
