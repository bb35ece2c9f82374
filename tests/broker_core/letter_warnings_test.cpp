#include "broker/core/letter_warnings.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

using namespace std::chrono_literals;

TEST(LetterWarnings, TheFirstAtOnceThenOneSumPerInterval) {
  letter_warnings w(10s);
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  EXPECT_FALSE(w.next_due());
  w.add_parked("bob", 1);
  auto lines = w.due(t0);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("1 dead letter for 'bob' parked"), std::string::npos) << lines[0];
  // A storm within the interval: summed by recipient, logged once when it ends.
  for (int i = 0; i < 500; ++i) w.add_parked("bob", 1);
  w.add_expired("carol", 7);
  EXPECT_TRUE(w.due(t0 + 5s).empty());
  EXPECT_EQ(w.next_due(), t0 + 10s);
  lines = w.due(t0 + 10s);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("500 dead letters for 'bob' parked"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("7 dead letters for 'carol' expired"), std::string::npos) << lines[1];
  EXPECT_FALSE(w.next_due());
  w.add_expired("dave", 0);  // nothing to say
  EXPECT_FALSE(w.next_due());
}

}  // namespace
}  // namespace ma
