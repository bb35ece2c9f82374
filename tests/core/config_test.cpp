#include "core/config.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

TEST(ConfigText, NameValueLinesCommentsAndQuotes) {
  auto entries = parse_config_text("# comment\n\nport = 10000\r\n  --log-level=debug  # trailing\nname = \"a b\"\n", "f.conf");
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].name, "port");
  EXPECT_EQ(entries[0].value, "10000");
  EXPECT_EQ(entries[0].line, 3);
  EXPECT_EQ(entries[1].name, "log-level");
  EXPECT_EQ(entries[1].value, "debug");
  EXPECT_EQ(entries[2].value, "a b");
}

// --cluster-nats and the agent's --broker list several values.
TEST(ConfigText, ACommaListTrimsItsItemsAndDropsEmptyOnes) {
  EXPECT_EQ(comma_list("nats://a:1, nats://b:2 ,,"), (std::vector<std::string>{"nats://a:1", "nats://b:2"}));
  EXPECT_EQ(comma_list("one"), std::vector<std::string>{"one"});
  EXPECT_TRUE(comma_list("").empty());
  EXPECT_TRUE(comma_list(" , ").empty());
}

TEST(ConfigText, LineWithoutEqualsNamesFileAndLine) {
  try {
    parse_config_text("port = 1\nnonsense\n", "broker.conf");
    FAIL();
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("broker.conf line 2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ma
