// Who joined and left since the last update_user_set. With few users online an update goes out
// at every change; with many, the changes of one batch interval go out together, or a login
// storm of N agents would cost N * N frames. Sans-I/O: time is an argument.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ma {

class presence_changes {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  // Up to this many online users, each change goes out at once.
  static constexpr std::size_t immediate_up_to = 64;
  static constexpr std::chrono::milliseconds batch_interval{100};
  // Above this many online users, updates carry user_count instead of user_list.
  static constexpr std::size_t max_listed = 1000;
  // An observer with this much unsent gets no more updates, one catch-up when it has read.
  static constexpr std::size_t max_behind_bytes = 64 * 1024;

  // who joined or left; online: how many are online after the change. True when the update
  // should go out now; else it is due at due().
  bool add(std::string who, bool joined, std::size_t online, time_point now);
  std::optional<time_point> due() const { return due_; }
  bool empty() const { return joined_.empty() && left_.empty(); }

  // The update_user_set frame for every change since the last one, which are forgotten.
  // online: the names online now, sorted.
  std::string take_frame(const std::vector<std::string_view>& online);
  // The catch-up update for an observer that fell behind: the list (or count) as it is now,
  // without joined or left.
  static std::string catch_up_frame(const std::vector<std::string_view>& online);
  // Forgets what waits (the broker is stopping).
  void clear();

 private:
  std::vector<std::string> joined_, left_;
  std::optional<time_point> due_;
};

}  // namespace ma
