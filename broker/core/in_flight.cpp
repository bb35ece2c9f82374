#include "broker/core/in_flight.hpp"

#include <algorithm>

namespace ma {

std::uint64_t in_flight_set::add(delivery d) {
  if (!m_) m_ = std::make_unique<maps>();
  const std::uint64_t id = ++next_;
  const std::string_view uuid = d.msg->rec.message_uuid;
  if (!m_->by_uuid.try_emplace(uuid, id).second) m_->more.emplace(uuid, id);
  m_->by_id.emplace(id, std::move(d));
  return id;
}

std::optional<delivery> in_flight_set::take(std::string_view uuid, std::string_view sender) {
  if (!m_) return std::nullopt;
  if (auto it = m_->by_uuid.find(uuid); it != m_->by_uuid.end()) {
    // The usual acknowledgement: its delivery found once, by the uuid's one hash.
    auto d = m_->by_id.find(it->second);
    if (sent_by(d->second, sender)) {
      delivery out = std::move(d->second);
      m_->by_id.erase(d);
      m_->by_uuid.erase(it);
      promote_more(uuid);
      return out;
    }
  }
  if (m_->more.empty()) return std::nullopt;  // (hashing is the cost of a lookup)
  auto range = m_->more.equal_range(uuid);
  for (auto it = range.first; it != range.second; ++it) {
    if (matches(it->second, sender)) return remove(it->second);
  }
  return std::nullopt;
}

std::optional<delivery> in_flight_set::take(std::uint64_t id) {
  if (!m_) return std::nullopt;
  if (!m_->by_id.contains(id)) return std::nullopt;
  return remove(id);
}

std::vector<delivery> in_flight_set::drain() {
  if (!m_) return {};
  std::vector<std::uint64_t> ids;
  ids.reserve(m_->by_id.size());
  for (auto& [id, d] : m_->by_id) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  std::vector<delivery> out;
  out.reserve(ids.size());
  for (auto id : ids) out.push_back(std::move(m_->by_id.find(id)->second));
  m_->by_uuid.clear();
  m_->more.clear();
  m_->by_id.clear();
  return out;
}

// After the delivery by_uuid named for uuid left: another delivery of the same uuid moves up.
void in_flight_set::promote_more(std::string_view uuid) {
  if (m_->more.empty()) return;  // (hashing is the cost of a lookup)
  if (auto more = m_->more.find(uuid); more != m_->more.end()) {
    m_->by_uuid.emplace(m_->by_id.find(more->second)->second.msg->rec.message_uuid, more->second);
    m_->more.erase(more);
  }
}

bool in_flight_set::sent_by(const delivery& d, std::string_view sender) {
  return sender.empty() || d.msg->rec.sender == sender;
}

bool in_flight_set::matches(std::uint64_t id, std::string_view sender) const {
  return sent_by(m_->by_id.find(id)->second, sender);
}

delivery in_flight_set::remove(std::uint64_t id) {
  auto it = m_->by_id.find(id);
  const std::string_view uuid = it->second.msg->rec.message_uuid;
  if (auto u = m_->by_uuid.find(uuid); u != m_->by_uuid.end() && u->second == id) {
    m_->by_uuid.erase(u);
    promote_more(uuid);
  } else {
    auto range = m_->more.equal_range(uuid);
    for (auto m = range.first; m != range.second; ++m) {
      if (m->second == id) {
        m_->more.erase(m);
        break;
      }
    }
  }
  delivery d = std::move(it->second);
  m_->by_id.erase(it);
  return d;
}

}  // namespace ma
