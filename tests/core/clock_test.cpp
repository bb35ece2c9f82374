#include "core/clock.hpp"

#include <gtest/gtest.h>

#include "core/uuid.hpp"
#include "core/names.hpp"

namespace ma {
namespace {

TEST(Clock, FormatsUtcWithMilliseconds) {
  using namespace std::chrono;
  const sys_ms t{sys_days{2026y / November / 26}.time_since_epoch() + 7h + 6min + 11s + 123ms};
  EXPECT_EQ(format_iso8601(t), "2026-11-26T07:06:11.123Z");
  EXPECT_EQ(format_iso8601(sys_ms{}), "1970-01-01T00:00:00.000Z");
}

// The last text is kept for the next call of the same millisecond, and only for it.
TEST(Clock, TheKeptTextIsOnlyForTheSameMillisecond) {
  using namespace std::chrono;
  const sys_ms a{sys_days{2026y / November / 26}.time_since_epoch() + 7h + 6min + 11s + 123ms};
  const sys_ms b = a + 1ms, c = a + 24h;
  auto text = [](sys_ms t) { const auto f = format_iso8601_fixed(t); return std::string(f.data(), f.size()); };
  EXPECT_EQ(text(a), "2026-11-26T07:06:11.123Z");
  EXPECT_EQ(text(a), "2026-11-26T07:06:11.123Z");
  EXPECT_EQ(text(b), "2026-11-26T07:06:11.124Z");
  EXPECT_EQ(text(a), "2026-11-26T07:06:11.123Z");
  EXPECT_EQ(text(c), "2026-11-27T07:06:11.123Z");
  EXPECT_EQ(format_iso8601(c), "2026-11-27T07:06:11.123Z");
}

TEST(Clock, ParsesWhatItFormats) {
  const sys_ms t = now_ms();
  auto back = parse_iso8601(format_iso8601(t));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, t);
}

TEST(Clock, RejectsOtherFormats) {
  EXPECT_FALSE(parse_iso8601("2026-11-26T07:06:11Z"));
  EXPECT_FALSE(parse_iso8601("2026-13-26T07:06:11.123Z"));
  EXPECT_FALSE(parse_iso8601("2026-02-30T07:06:11.123Z"));
  EXPECT_FALSE(parse_iso8601("2026-11-26 07:06:11.123Z"));
  EXPECT_FALSE(parse_iso8601(""));
}

TEST(Clock, TextOrderIsTimeOrder) {
  using namespace std::chrono;
  const sys_ms a{sys_days{2026y / January / 9}.time_since_epoch() + 999ms};
  const sys_ms b = a + 1ms;
  EXPECT_LT(format_iso8601(a), format_iso8601(b));
}

TEST(Uuid, MadeUuidsAreValidMessageUuidsAndDistinct) {
  const std::string a = make_message_uuid();
  const std::string b = make_message_uuid();
  EXPECT_EQ(a.size(), 36u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(is_valid_message_uuid(a));
}

}  // namespace
}  // namespace ma
