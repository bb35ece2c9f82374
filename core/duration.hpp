// Durations in milliseconds, as the options and the protocol carry them, bounded so that every
// deadline computed from them fits the clocks. Options and fields refuse more than
// max_duration_ms; arithmetic on bounded values saturates instead of wrapping.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ma {

// 100 years: added to any steady or system time point of this century it still fits in
// nanoseconds (292 years), and a date it gives still has four digits.
inline constexpr std::uint64_t max_duration_ms = 100ULL * 365 * 24 * 3600 * 1000;

// a * b, at most max_duration_ms.
constexpr std::uint64_t saturating_mul_ms(std::uint64_t a, std::uint64_t b) noexcept {
  if (a == 0 || b == 0) return 0;
  if (a > max_duration_ms / b) return max_duration_ms;
  return a * b;
}

// d as a std::chrono duration, at most max_duration_ms.
constexpr std::chrono::milliseconds bounded_ms(std::uint64_t d) noexcept {
  return std::chrono::milliseconds(static_cast<std::int64_t>(d < max_duration_ms ? d : max_duration_ms));
}

// A duration as options take it: a whole number of milliseconds ("1500"), or a whole number with
// a unit: ms, s, m, h or d ("500ms", "10s", "5m", "2h", "7d"). Nothing if it is not one, or if it
// is longer than max_duration_ms.
inline std::optional<std::uint64_t> parse_duration_ms(std::string_view text) {
  std::size_t digits = 0;
  std::uint64_t n = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    if (n > max_duration_ms) return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(text[digits++] - '0');
  }
  if (digits == 0 || n > max_duration_ms) return std::nullopt;
  const std::string_view unit = text.substr(digits);
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "ms") scale = 1;
  else if (unit == "s") scale = 1000;
  else if (unit == "m") scale = 60'000;
  else if (unit == "h") scale = 3'600'000;
  else if (unit == "d") scale = 86'400'000;
  else return std::nullopt;
  if (n > max_duration_ms / scale) return std::nullopt;
  return n * scale;
}

// t + d, or TimePoint::max() where that does not fit.
template <class TimePoint>
constexpr TimePoint saturating_add(TimePoint t, std::chrono::milliseconds d) noexcept {
  using duration = typename TimePoint::duration;
  if (d.count() <= 0) return t;
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(TimePoint::max() - t);
  if (d >= room) return TimePoint::max();
  return t + std::chrono::duration_cast<duration>(d);
}

}  // namespace ma
