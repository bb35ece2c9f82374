#include "core/replies.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include "core/encode.hpp"

namespace ma {

namespace json = boost::json;

namespace {

// A frame whose content ends with name lists, written straight into the frame: as a json::array,
// a list allocates a string per name (a login with 5,000 agents online made 5,000 allocations for
// its user_list alone, and their holes stayed among the sessions made meanwhile).
class with_lists {
 public:
  explicit with_lists(std::string frame, bool content_empty) : out_(std::move(frame)), first_(content_empty) {
    out_.resize(out_.size() - 3);  // reopens the content: its '}', the frame's "}\n"
  }
  template <class Names>
  with_lists& list(std::string_view key, const Names& names) {
    std::size_t bytes = key.size() + 6;
    for (const auto& n : names) bytes += std::string_view(n).size() + 3;
    out_.reserve(out_.size() + bytes + 3);
    out_ += first_ ? "\"" : ",\"";
    first_ = false;
    out_ += key;
    out_ += "\":[";
    bool first = true;
    for (const auto& n : names) {
      if (!first) out_ += ',';
      first = false;
      append_json_string(out_, std::string_view(n));
    }
    out_ += ']';
    return *this;
  }
  std::string done() {
    out_ += "}}\n";
    return std::move(out_);
  }

 private:
  std::string out_;
  bool first_;
};

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
  c["heartbeat_interval_ms"] = g.heartbeat_interval_ms;
  c["ack_timeout_ms"] = g.ack_timeout_ms;
  c["max_frame_bytes"] = g.max_frame_bytes;
  c["pending_dead_letters"] = g.pending_dead_letters;
  c["broker_name"] = g.broker_name;
  c["protocol_version"] = protocol_version;
  if (!g.request_id.empty()) c["request_id"] = g.request_id;
  if (g.send_only) c["send_only"] = true;
  if (g.receive_window) c["receive_window"] = g.receive_window;
  return with_lists(make_frame(kind::acknowledge_log_in, c), false).list("user_list", g.online).done();
}

std::string make_user_list(const std::vector<std::string_view>& online, std::string_view request_id) {
  json::object c;
  auto f = frame(kind::user_list, c, request_id);
  return with_lists(std::move(f), c.empty()).list("user_list", online).done();
}

std::string make_user_set_update(const std::vector<std::string_view>* list, std::size_t user_count,
                                 const std::vector<std::string>& joined, const std::vector<std::string>& left) {
  json::object c;
  c["user_count"] = user_count;
  with_lists f(make_frame(kind::update_user_set, c), false);
  if (list) f.list("user_list", *list);
  if (!joined.empty()) f.list("joined", joined);
  if (!left.empty()) f.list("left", left);
  return f.done();
}

std::string make_group_ack(std::string_view group, const member_set* members, std::string_view request_id) {
  json::object c;
  c["group_name"] = group;
  auto f = frame(kind::acknowledge_group, c, request_id);
  static const member_set none;
  return with_lists(std::move(f), false).list("group_members", members ? *members : none).done();
}

std::string make_group_list(const group_map& groups, std::string_view request_id) {
  json::array list;
  for (auto& [name, members] : groups) {
    json::object g;
    g["group_name"] = name;
    json::array a;
    a.reserve(members.size());
    for (const auto& m : members) a.emplace_back(m);
    g["group_members"] = std::move(a);
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
