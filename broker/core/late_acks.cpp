#include "broker/core/late_acks.hpp"

namespace ma {

std::string late_acks::key_of(std::string_view receiver, std::string_view uuid) {
  std::string key;
  key.reserve(receiver.size() + 1 + uuid.size());
  key.append(receiver).push_back('\0');
  key.append(uuid);
  return key;
}

void late_acks::remember(std::string_view receiver, std::string_view uuid) {
  std::string key = key_of(receiver, uuid);
  if (!keys_.insert(key).second) return;
  order_.push_back(std::move(key));
  while (order_.size() > capacity_) {
    keys_.erase(order_.front());
    order_.pop_front();
  }
}

bool late_acks::may_be_late(std::string_view receiver, std::string_view uuid) const {
  return keys_.contains(key_of(receiver, uuid));
}

}  // namespace ma
