#include "broker/core/in_flight.hpp"

#include <algorithm>

namespace ma {

std::uint64_t in_flight_set::add(delivery d) {
  const std::uint64_t id = ++next_;
  const std::string_view uuid = d.msg->rec.message_uuid;
  if (!by_uuid_.try_emplace(uuid, id).second) more_.emplace(uuid, id);
  by_id_.emplace(id, std::move(d));
  return id;
}

std::optional<delivery> in_flight_set::take(std::string_view uuid, std::string_view sender) {
  if (auto it = by_uuid_.find(uuid); it != by_uuid_.end() && matches(it->second, sender)) return remove(it->second);
  auto range = more_.equal_range(uuid);
  for (auto it = range.first; it != range.second; ++it) {
    if (matches(it->second, sender)) return remove(it->second);
  }
  return std::nullopt;
}

std::optional<delivery> in_flight_set::take(std::uint64_t id) {
  if (!by_id_.contains(id)) return std::nullopt;
  return remove(id);
}

std::vector<delivery> in_flight_set::drain() {
  std::vector<std::uint64_t> ids;
  ids.reserve(by_id_.size());
  for (auto& [id, d] : by_id_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  std::vector<delivery> out;
  out.reserve(ids.size());
  for (auto id : ids) out.push_back(std::move(by_id_.find(id)->second));
  by_uuid_.clear();
  more_.clear();
  by_id_.clear();
  return out;
}

bool in_flight_set::matches(std::uint64_t id, std::string_view sender) const {
  return sender.empty() || by_id_.find(id)->second.msg->rec.sender == sender;
}

delivery in_flight_set::remove(std::uint64_t id) {
  auto it = by_id_.find(id);
  const std::string_view uuid = it->second.msg->rec.message_uuid;
  if (auto u = by_uuid_.find(uuid); u != by_uuid_.end() && u->second == id) {
    by_uuid_.erase(u);
    // Another delivery of the same uuid moves up.
    if (auto more = more_.find(uuid); more != more_.end()) {
      by_uuid_.emplace(by_id_.find(more->second)->second.msg->rec.message_uuid, more->second);
      more_.erase(more);
    }
  } else {
    auto range = more_.equal_range(uuid);
    for (auto m = range.first; m != range.second; ++m) {
      if (m->second == id) {
        more_.erase(m);
        break;
      }
    }
  }
  delivery d = std::move(it->second);
  by_id_.erase(it);
  return d;
}

}  // namespace ma
