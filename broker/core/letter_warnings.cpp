#include "broker/core/letter_warnings.hpp"

namespace ma {

namespace {

std::string letters(std::int64_t n) { return std::to_string(n) + (n == 1 ? " dead letter" : " dead letters"); }

}  // namespace

void letter_warnings::add(std::string_view recipient, std::int64_t parked, std::int64_t expired) {
  if (parked <= 0 && expired <= 0) return;
  auto it = waiting_.find(recipient);
  if (it == waiting_.end()) it = waiting_.emplace(std::string(recipient), counts{}).first;
  it->second.parked += parked;
  it->second.expired += expired;
}

std::optional<letter_warnings::time_point> letter_warnings::next_due() const {
  if (waiting_.empty()) return std::nullopt;
  if (!last_) return time_point::min();
  return *last_ + interval_;
}

std::vector<std::string> letter_warnings::due(time_point now) {
  std::vector<std::string> lines;
  const auto when = next_due();
  if (!when || now < *when) return lines;
  for (const auto& [recipient, c] : waiting_) {
    if (c.parked > 0) {
      lines.push_back(letters(c.parked) + " for '" + recipient +
                      "' parked after their last delivery attempt: they are no longer sent "
                      "(message-broker dead-letters list --state parked; replay brings them back)");
    }
    if (c.expired > 0) {
      lines.push_back(letters(c.expired) + " for '" + recipient + "' expired undelivered (past their ttl)");
    }
  }
  waiting_.clear();
  last_ = now;
  return lines;
}

}  // namespace ma
