// Warnings for dead letters that leave pending undelivered (parked after their last attempt,
// or expired), summed by recipient and logged at most once per interval, so that a storm of
// them is a few lines. Sans-I/O: time is an argument; the broker logs what due() returns.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ma {

class letter_warnings {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit letter_warnings(std::chrono::milliseconds interval) : interval_(interval) {}

  void add_parked(std::string_view recipient, std::int64_t n) { add(recipient, n, 0); }
  void add_expired(std::string_view recipient, std::int64_t n) { add(recipient, 0, n); }

  // The lines to log now: what was added since the last lines, once interval has passed since
  // them (at once the first time). Empty when nothing is due.
  std::vector<std::string> due(time_point now);
  // When due() will have lines, if anything waits.
  std::optional<time_point> next_due() const;

 private:
  struct counts {
    std::int64_t parked = 0;
    std::int64_t expired = 0;
  };
  void add(std::string_view recipient, std::int64_t parked, std::int64_t expired);

  std::chrono::milliseconds interval_;
  std::map<std::string, counts, std::less<>> waiting_;
  std::optional<time_point> last_;
};

}  // namespace ma
