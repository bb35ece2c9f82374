#include "core/names.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ma {
namespace {

TEST(Names, Usernames) {
  EXPECT_TRUE(is_valid_username("alice"));
  EXPECT_TRUE(is_valid_username("A.b_c-9"));
  EXPECT_TRUE(is_valid_username(std::string(64, 'a')));
  EXPECT_FALSE(is_valid_username(std::string(65, 'a')));
  EXPECT_FALSE(is_valid_username(""));
  EXPECT_FALSE(is_valid_username("al ice"));
  EXPECT_FALSE(is_valid_username("bob:1"));
  EXPECT_FALSE(is_valid_username("j\xc3\xb6rg"));
}

TEST(Names, MessageUuids) {
  EXPECT_TRUE(is_valid_message_uuid("abc:123-x_y.z"));
  EXPECT_TRUE(is_valid_message_uuid(std::string(128, '1')));
  EXPECT_FALSE(is_valid_message_uuid(std::string(129, '1')));
  EXPECT_FALSE(is_valid_message_uuid(""));
  EXPECT_FALSE(is_valid_message_uuid("a/b"));
}

// Every byte, against the protocol's words: names are A-Z a-z 0-9 . _ -, uuids those and ':'.
TEST(Names, EveryByteIsJudgedAsTheProtocolSays) {
  const std::string name_chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
  for (int c = 0; c < 256; ++c) {
    const std::string s = std::string("a") + static_cast<char>(c) + "b";
    const bool in_names = name_chars.find(static_cast<char>(c)) != std::string::npos;
    EXPECT_EQ(is_valid_username(s), in_names) << c;
    EXPECT_EQ(is_valid_group_name(s), in_names) << c;
    EXPECT_EQ(is_valid_message_uuid(s), in_names || c == ':') << c;
    // The runs stop at the first byte a name (or a uuid) may not hold.
    EXPECT_EQ(username_run(s), in_names ? 3u : 1u) << c;
    EXPECT_EQ(message_uuid_run(s), in_names || c == ':' ? 3u : 1u) << c;
  }
  EXPECT_EQ(username_run(""), 0u);
  // Sixteen bytes at a time from 16 on: every byte value at every position.
  for (std::size_t len = 15; len <= 40; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      for (int c = 0; c < 256; ++c) {
        std::string s(len, at % 2 ? 'Z' : '7');
        s[at] = static_cast<char>(c);
        const bool in_names = name_chars.find(static_cast<char>(c)) != std::string::npos;
        ASSERT_EQ(username_run(s), in_names ? len : at) << len << " " << at << " " << c;
        ASSERT_EQ(message_uuid_run(s), in_names || c == ':' ? len : at) << len << " " << at << " " << c;
        ASSERT_EQ(is_valid_message_uuid(s), in_names || c == ':') << len << " " << at << " " << c;
      }
    }
  }
  EXPECT_EQ(message_uuid_run("ab\"}}"), 2u);
}

}  // namespace
}  // namespace ma
