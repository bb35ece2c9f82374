#include "broker/core/presence.hpp"

#include "core/replies.hpp"

namespace ma {

bool presence_changes::add(std::string who, bool joined, std::size_t online, time_point now) {
  (joined ? joined_ : left_).push_back(std::move(who));
  if (online <= immediate_up_to) return true;
  if (!due_) due_ = now + batch_interval;
  return false;
}

std::string presence_changes::take_frame(const std::vector<std::string_view>& online) {
  auto frame = make_user_set_update(online.size() <= max_listed ? &online : nullptr, online.size(), joined_, left_);
  clear();
  return frame;
}

std::string presence_changes::catch_up_frame(const std::vector<std::string_view>& online) {
  return make_user_set_update(online.size() <= max_listed ? &online : nullptr, online.size(), {}, {});
}

void presence_changes::clear() {
  joined_.clear();
  left_.clear();
  due_.reset();
}

}  // namespace ma
