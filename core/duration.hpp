// Durations in milliseconds, as the options and the protocol carry them, bounded so that every
// deadline computed from them fits the clocks. Options and fields refuse more than
// max_duration_ms; arithmetic on bounded values saturates instead of wrapping.
#pragma once

#include <chrono>
#include <cstdint>

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
