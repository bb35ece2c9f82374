#include "core/replies.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include "core/encode.hpp"

namespace ma {

namespace json = boost::json;

namespace {

template <class Names>
json::array array_of(const Names& names) {
  json::array a;
  a.reserve(names.size());
  for (const auto& n : names) a.emplace_back(std::string_view(n));
  return a;
}

std::string frame(kind k, json::object& c, std::string_view request_id) {
  if (!request_id.empty()) c["request_id"] = request_id;
  return make_frame(k, c);
}

std::string datagram(kind k, json::object& c, std::string_view request_id) {
  std::string d = frame(k, c, request_id);
  d.pop_back();  // a datagram is one object, no newline needed
  return d;
}

}  // namespace

std::string make_heartbeat_ack(std::string_view request_id) {
  json::object c;
  return frame(kind::acknowledge_heartbeat, c, request_id);
}

std::string make_log_out_ack(std::string_view request_id) {
  json::object c;
  return frame(kind::acknowledge_log_out, c, request_id);
}

std::string make_log_in_ack(const log_in_granted& g) {
  json::object c;
  c["sender_username"] = g.username;
  c["user_list"] = array_of(g.online);
  c["heartbeat_interval_ms"] = g.heartbeat_interval_ms;
  c["ack_timeout_ms"] = g.ack_timeout_ms;
  c["max_frame_bytes"] = g.max_frame_bytes;
  c["pending_dead_letters"] = g.pending_dead_letters;
  c["broker_name"] = g.broker_name;
  c["protocol_version"] = protocol_version;
  if (!g.request_id.empty()) c["request_id"] = g.request_id;
  if (g.send_only) c["send_only"] = true;
  if (g.receive_window) c["receive_window"] = g.receive_window;
  return make_frame(kind::acknowledge_log_in, c);
}

std::string make_user_list(const std::vector<std::string_view>& online, std::string_view request_id) {
  json::object c;
  c["user_list"] = array_of(online);
  return frame(kind::user_list, c, request_id);
}

std::string make_user_set_update(const std::vector<std::string_view>* list, std::size_t user_count,
                                 const std::vector<std::string>& joined, const std::vector<std::string>& left) {
  json::object c;
  if (list) c["user_list"] = array_of(*list);
  c["user_count"] = user_count;
  if (!joined.empty()) c["joined"] = array_of(joined);
  if (!left.empty()) c["left"] = array_of(left);
  return make_frame(kind::update_user_set, c);
}

std::string make_group_ack(std::string_view group, const member_set* members, std::string_view request_id) {
  json::object c;
  c["group_name"] = group;
  c["group_members"] = members ? array_of(*members) : json::array();
  return frame(kind::acknowledge_group, c, request_id);
}

std::string make_group_list(const group_map& groups, std::string_view request_id) {
  json::array list;
  for (auto& [name, members] : groups) {
    json::object g;
    g["group_name"] = name;
    g["group_members"] = array_of(members);
    list.push_back(std::move(g));
  }
  json::object c;
  c["groups"] = std::move(list);
  return frame(kind::group_list, c, request_id);
}

std::string make_broker_announce(std::string_view broker_name, std::string_view address, std::size_t online_users,
                                 std::string_view request_id, std::string_view tls_address) {
  json::object c;
  c["broker_name"] = broker_name;
  c["broker_address"] = address;
  if (!tls_address.empty()) c["tls_address"] = tls_address;
  c["protocol_version"] = protocol_version;
  c["online_users"] = online_users;
  return datagram(kind::broker_announce, c, request_id);
}

std::string make_datagram_log_in_ack(std::string_view address, std::string_view request_id) {
  json::object c;
  c["broker_address"] = address;
  return datagram(kind::acknowledge_log_in, c, request_id);
}

}  // namespace ma
