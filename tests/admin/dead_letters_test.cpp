#include "admin/dead_letters.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "storage/database.hpp"
#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
const std::string broker_binary = MA_BROKER_BINARY;

class DeadLettersCommand : public ::testing::Test {
 protected:
  test::temp_dir dir;
  std::string path = dir.file("broker.db");
  std::int64_t parked_id = 0;

  void SetUp() override {
    database db({path});
    db.begin();
    for (int i = 0; i < 3; ++i) {
      message_record m{"m" + std::to_string(i), "alice", channel::direct, "", "{\"message_text\":\"hi\"}", now_ms(),
                       now_ms() + 1h};
      const auto id = db.dead_letter_new(m, i == 2 ? "carol" : "bob",
                                         i == 1 ? dead_letter_reason::queue_overflow : dead_letter_reason::recipient_offline,
                                         now_ms());
      if (i == 2) {
        db.record_attempt(id, 1, now_ms(), "ack_timeout", now_ms(), 1);
        parked_id = id;
      }
    }
    db.commit();
  }

  int run(std::vector<std::string> args, std::string* out_text = nullptr, std::string* err_text = nullptr) {
    std::ostringstream out, err;
    std::vector<std::string> ordered{"--database", path};
    ordered.insert(ordered.end(), args.begin(), args.end());
    const int rc = run_dead_letters_command(ordered, out, err);
    if (out_text) *out_text = out.str();
    if (err_text) *err_text = err.str();
    return rc;
  }
};

TEST_F(DeadLettersCommand, ListAsTableAndJson) {
  std::string out;
  ASSERT_EQ(run({"list"}, &out), 0);
  EXPECT_NE(out.find("MESSAGE_UUID"), std::string::npos);
  EXPECT_NE(out.find("queue_overflow"), std::string::npos);
  ASSERT_EQ(run({"list", "--json", "--recipient", "bob"}, &out), 0);
  std::istringstream lines(out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    auto o = boost::json::parse(line).as_object();
    EXPECT_EQ(o.at("receiver_username").as_string(), "bob");
    EXPECT_EQ(o.at("body").at("message_text").as_string(), "hi");
    ++n;
  }
  EXPECT_EQ(n, 2);
  ASSERT_EQ(run({"list", "--json", "--state", "parked"}, &out), 0);
  EXPECT_NE(out.find("\"m2\""), std::string::npos);
  EXPECT_EQ(out.find("\"m0\""), std::string::npos);
  ASSERT_EQ(run({"list", "--json", "--reason", "queue_overflow", "--limit", "5"}, &out), 0);
  EXPECT_NE(out.find("\"m1\""), std::string::npos);
  EXPECT_EQ(out.find("\"m0\""), std::string::npos);
}

TEST_F(DeadLettersCommand, ShowGivesBodyAndAttempts) {
  std::string out;
  ASSERT_EQ(run({"show", "m2", "--json"}, &out), 0);
  auto o = boost::json::parse(out).as_object();
  ASSERT_EQ(o.at("delivery_attempts").as_array().size(), 1u);
  EXPECT_EQ(o.at("delivery_attempts").as_array()[0].at("outcome").as_string(), "ack_timeout");
  std::string err;
  EXPECT_EQ(run({"show", "nope"}, &out, &err), 1);
  EXPECT_NE(err.find("nope"), std::string::npos);
}

TEST_F(DeadLettersCommand, ReplayAndPurge) {
  std::string out;
  ASSERT_EQ(run({"replay", "--dry-run"}, &out), 0);
  EXPECT_EQ(out, "would replay 1 dead letter\n");
  ASSERT_EQ(run({"replay", "--recipient", "carol"}, &out), 0);
  EXPECT_EQ(out, "replayed 1 dead letter\n");
  {
    database db({path, false, false});
    EXPECT_EQ(db.count_pending("carol"), 1);
    db.begin();
    db.mark_delivered("bob", "m0", "", now_ms());
    db.commit();
  }
  ASSERT_EQ(run({"purge", "--state", "delivered", "--older-than-ms", "3600000"}, &out), 0);
  EXPECT_EQ(out, "purged 0 dead letters\n");
  ASSERT_EQ(run({"purge", "--state", "delivered"}, &out), 0);
  EXPECT_EQ(out, "purged 1 dead letter\n");
}

// Issue 17: purge --dry-run counts and deletes nothing; the options go after the subcommand too;
// --config finds the broker's database in its configuration file.
TEST_F(DeadLettersCommand, PurgeDryRunOptionsAfterTheSubcommandAndTheBrokersConfig) {
  {
    database db({path, false, false});
    db.begin();
    db.mark_delivered("bob", "m0", "", now_ms());
    db.commit();
  }
  std::ostringstream out, err;
  ASSERT_EQ(run_dead_letters_command({"purge", "--dry-run", "--database", path}, out, err), 0) << err.str();
  EXPECT_EQ(out.str(), "would purge 2 dead letters\n") << "the delivered one and the parked one";
  out.str("");
  ASSERT_EQ(run_dead_letters_command({"purge", "--state", "delivered", "--dry-run", "--database", path}, out, err), 0);
  EXPECT_EQ(out.str(), "would purge 1 dead letter\n");
  {
    database db({path, false, false});
    EXPECT_EQ(db.list({}).size(), 3u) << "a dry run deletes nothing";
  }
  const std::string conf = dir.file("broker.conf");
  std::ofstream(conf) << "# the broker's\nport = 10000\ndatabase = " << path << "\n";
  out.str("");
  ASSERT_EQ(run_dead_letters_command({"list", "--config", conf, "--recipient", "carol"}, out, err), 0) << err.str();
  EXPECT_NE(out.str().find("carol"), std::string::npos) << out.str();
  std::ostringstream o2, e2;
  EXPECT_EQ(run_dead_letters_command({"list", "--config", dir.file("nope.conf")}, o2, e2), 2);
  EXPECT_NE(e2.str().find("nope.conf"), std::string::npos) << e2.str();
}

TEST_F(DeadLettersCommand, BadUsageAndMissingFile) {
  std::string out, err;
  EXPECT_EQ(run({"list", "--state", "lost"}, &out, &err), 2);
  EXPECT_NE(err.find("--state"), std::string::npos) << err;
  EXPECT_EQ(run({"purge", "--state", "pending"}, &out, &err), 2);
  std::ostringstream o, e;
  EXPECT_EQ(run_dead_letters_command({"--database", dir.file("missing.db"), "list"}, o, e), 1);
  EXPECT_NE(e.str().find("missing.db"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("missing.db")));
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Issue item 10: `dead-letters list` on another program's SQLite file added this broker's
// tables to it, and turned a 0-byte file into a database.
TEST(DeadLettersBinary, NoSubcommandWritesToAFileWithoutTheBrokersSchema) {
  test::temp_dir dir;
  const std::string other = dir.file("other.db");
  {
    sqlite::connection c(other, sqlite::connection::mode::create);
    c.exec("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('mine')");
  }
  const std::string empty = dir.file("empty.db");
  std::ofstream(empty).close();
  const std::string other_before = bytes_of(other);
  const std::vector<std::vector<std::string>> commands{
      {"list"}, {"show", "some-uuid"}, {"replay", "--dry-run"}, {"replay"}, {"purge"}};
  for (const std::string& file : {other, empty}) {
    for (const auto& cmd : commands) {
      std::vector<std::string> args{"dead-letters", "--database", file};
      args.insert(args.end(), cmd.begin(), cmd.end());
      auto [status, out] = test::run_command(broker_binary, args);
      EXPECT_EQ(status, 1) << cmd[0] << ": " << out;
      EXPECT_NE(out.find("no message-broker schema"), std::string::npos) << out;
      EXPECT_NE(out.find(file), std::string::npos) << out;
    }
  }
  EXPECT_EQ(bytes_of(other), other_before);
  EXPECT_EQ(std::filesystem::file_size(empty), 0u);
  EXPECT_FALSE(std::filesystem::exists(empty + "-wal"));
}

TEST(DeadLettersBinary, ListingReadsTheFileOfARunningBrokerReadOnly) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("run.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  test::client alice(*port);
  alice.log_in("alice");
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "hi"}, {"message_uuid", "ro-1"}});
  alice.expect("message_accepted");
  auto [status, out] = test::run_command(broker_binary, {"dead-letters", "--database", dir.file("broker.db"), "list"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("ro-1"), std::string::npos) << out;
}

}  // namespace
}  // namespace ma
