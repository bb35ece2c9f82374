#include "broker/core/login_failures.hpp"

#include <algorithm>

namespace ma {

std::string_view login_failures::host_of(std::string_view address) {
  const auto colon = address.rfind(':');
  return colon == std::string_view::npos ? address : address.substr(0, colon);
}

std::chrono::milliseconds login_failures::delay_after(int failures) {
  if (failures < free_failures) return std::chrono::milliseconds(0);
  const int doublings = std::min(failures - free_failures, 16);
  return std::min(max_delay, first_delay * (1 << doublings));
}

login_failures::source* login_failures::find(std::string_view address, time_point now) {
  auto it = by_address_.find(std::string(address));
  if (it == by_address_.end()) return nullptr;
  if (now - it->second.last_failure >= forget_after && it->second.next_turn <= now) {
    by_address_.erase(it);
    return nullptr;
  }
  return &it->second;
}

login_failures::time_point login_failures::turn(std::string_view address, time_point now) {
  source* s = find(address, now);
  if (!s || s->failures < free_failures) return now;
  const time_point at = std::max(now, s->next_turn);
  s->next_turn = at + delay_after(s->failures);
  return at;
}

void login_failures::failed(std::string_view address, time_point now) {
  source* s = find(address, now);
  if (!s) {
    if (by_address_.size() >= max_sources_) {
      auto oldest = std::min_element(by_address_.begin(), by_address_.end(), [](const auto& a, const auto& b) {
        return a.second.last_failure < b.second.last_failure;
      });
      by_address_.erase(oldest);
    }
    s = &by_address_[std::string(address)];
  }
  ++s->failures;
  s->last_failure = now;
  s->next_turn = std::max(s->next_turn, now + delay_after(s->failures));
}

void login_failures::succeeded(std::string_view address) { by_address_.erase(std::string(address)); }

}  // namespace ma
