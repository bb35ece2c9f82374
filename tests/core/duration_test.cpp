#include "core/duration.hpp"

#include <gtest/gtest.h>

#include <limits>

#include "core/clock.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;

TEST(Duration, OptionsTakeMillisecondsOrANumberWithAUnit) {
  EXPECT_EQ(parse_duration_ms("1500"), 1500u);
  EXPECT_EQ(parse_duration_ms("500ms"), 500u);
  EXPECT_EQ(parse_duration_ms("10s"), 10'000u);
  EXPECT_EQ(parse_duration_ms("5m"), 300'000u);
  EXPECT_EQ(parse_duration_ms("2h"), 7'200'000u);
  EXPECT_EQ(parse_duration_ms("7d"), 604'800'000u);
  EXPECT_EQ(parse_duration_ms("0"), 0u);
  for (const char* bad : {"", "s", "10 s", "1.5s", "-5", "10x", "10sec", "ms10", "99999999999999999999999"}) {
    EXPECT_FALSE(parse_duration_ms(bad)) << bad;
  }
  EXPECT_EQ(parse_duration_ms("36500d"), max_duration_ms) << "100 years, the longest";
  EXPECT_FALSE(parse_duration_ms("36501d"));
}

TEST(Duration, ProductsSaturateAtTheBound) {
  EXPECT_EQ(saturating_mul_ms(10'000, 3), 30'000u);
  EXPECT_EQ(saturating_mul_ms(max_duration_ms, std::numeric_limits<std::uint32_t>::max()), max_duration_ms);
  EXPECT_EQ(saturating_mul_ms(std::numeric_limits<std::uint64_t>::max(), 2), max_duration_ms);
  EXPECT_EQ(saturating_mul_ms(0, 5), 0u);
  EXPECT_EQ(bounded_ms(std::numeric_limits<std::uint64_t>::max()).count(), static_cast<std::int64_t>(max_duration_ms));
}

TEST(Duration, DeadlinesNeverWrap) {
  const auto now = std::chrono::steady_clock::now();
  EXPECT_GT(saturating_add(now, bounded_ms(max_duration_ms)), now);
  EXPECT_EQ(saturating_add(std::chrono::steady_clock::time_point::max() - 1s, 1h),
            std::chrono::steady_clock::time_point::max());
  // The latest expiry a message can get still prints as a date of four digits.
  const auto latest = saturating_add(now_ms(), bounded_ms(max_duration_ms));
  EXPECT_TRUE(parse_iso8601(format_iso8601(latest))) << format_iso8601(latest);
  EXPECT_GT(latest, now_ms());
}

}  // namespace
}  // namespace ma
