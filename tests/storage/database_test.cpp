#include "storage/database.hpp"

#include <gtest/gtest.h>

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;

message_record message(const std::string& uuid, const std::string& sender = "alice", sys_ms at = now_ms()) {
  message_record m;
  m.message_uuid = uuid;
  m.sender = sender;
  m.ch = channel::direct;
  m.body = "{\"message_text\":\"" + uuid + "\"}";
  m.accepted_at = at;
  m.expires_at = at + 7 * 24h;
  return m;
}

class Database : public ::testing::Test {
 protected:
  test::temp_dir dir;
  std::string path = dir.file("broker.db");
  database open(bool create = true) { return database({path, false, create}); }
};

TEST_F(Database, FreshFileGetsTheSchemaVersionAndWal) {
  auto db = open();
  sqlite::statement v(db.connection(), "PRAGMA user_version");
  ASSERT_TRUE(v.step());
  EXPECT_EQ(v.column_int(0), database::schema_version);
  sqlite::statement mode(db.connection(), "PRAGMA journal_mode");
  ASSERT_TRUE(mode.step());
  EXPECT_EQ(mode.column_text(0), "wal");
  for (const char* name : {"journal", "dead_letters", "delivery_attempts", "groups", "group_members",
                           "pending_by_recipient", "dead_letter_counts", "in_flight"}) {
    sqlite::statement s(db.connection(), "SELECT 1 FROM sqlite_master WHERE name = ?");
    s.bind(1, name);
    EXPECT_TRUE(s.step()) << name;
  }
}

TEST_F(Database, EmptyExistingFileIsMigrated) {
  std::ofstream(path).close();  // zero bytes: SQLite treats it as an empty database
  auto db = open(false);
  EXPECT_EQ(db.count_journal(), 0);
}

TEST_F(Database, ReopeningKeepsDataAndSeq) {
  std::int64_t seq;
  {
    auto db = open();
    db.begin();
    seq = db.journal(message("m1"), "bob");
    db.commit();
  }
  auto db = open();
  db.begin();
  EXPECT_GT(db.journal(message("m2"), "bob"), seq);
  db.commit();
  EXPECT_EQ(db.count_journal(), 2);
}

TEST_F(Database, NewerSchemaIsRefusedNamingFileAndVersions) {
  { open().connection().exec("PRAGMA user_version = 99"); }
  try {
    open();
    FAIL() << "opened a newer schema";
  } catch (const sqlite::storage_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("99"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(database::schema_version)), std::string::npos) << what;
  }
}

TEST_F(Database, NotADatabaseIsRefusedAndLeftUntouched) {
  const std::string junk(8192, 'j');
  std::ofstream(path) << junk;
  try {
    open();
    FAIL() << "opened a non-database";
  } catch (const sqlite::storage_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  std::ifstream in(path);
  std::string back((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(back, junk);
}

TEST_F(Database, CorruptDatabaseIsRefused) {
  {
    auto db = open();
    db.begin();
    for (int i = 0; i < 2000; ++i) db.dead_letter_new(message("m" + std::to_string(i)), "bob", dead_letter_reason::recipient_offline, now_ms());
    db.commit();
    db.connection().exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  {
    // Overwrite a few pages in the middle with garbage, keeping the header.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 3);
    const std::string garbage(4096 * 4, '\x5a');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  EXPECT_THROW(open(), sqlite::storage_error);
}

TEST_F(Database, MissingFileIsAnErrorWhenNotCreating) {
  EXPECT_THROW(open(false), sqlite::storage_error);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(Database, JournalAcknowledgeAndRecover) {
  auto db = open();
  db.begin();
  const auto a = db.journal(message("a"), "bob");
  const auto b = db.journal(message("b"), "bob");
  const auto c = db.journal(message("c"), "carol");
  db.acknowledge(b);
  db.commit();
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(db.count_journal(), 2);
  db.begin();
  EXPECT_EQ(db.recover(now_ms()), 2);
  db.commit();
  EXPECT_EQ(db.count_journal(), 0);
  auto bob = db.pending_for("bob", 0, 10);
  ASSERT_EQ(bob.size(), 1u);
  EXPECT_EQ(bob[0].message_uuid, "a");
  EXPECT_EQ(bob[0].reason, dead_letter_reason::broker_restart);
  EXPECT_EQ(bob[0].seq, a);
  EXPECT_EQ(db.count_pending("carol"), 1);
}

TEST_F(Database, DeadLetterJournaledKeepsOrderAndCountsTheLiveAttempt) {
  auto db = open();
  db.begin();
  const auto s1 = db.journal(message("first"), "bob");
  db.dead_letter_new(message("second"), "bob", dead_letter_reason::recipient_offline, now_ms());
  const auto id1 = db.dead_letter_journaled(s1, dead_letter_reason::ack_timeout, now_ms(), true);
  EXPECT_EQ(db.dead_letter_journaled(s1, dead_letter_reason::ack_timeout, now_ms(), true), 0);  // moved already
  db.commit();
  auto pending = db.pending_for("bob", 0, 10);
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].message_uuid, "first");  // accepted first, so redelivered first
  EXPECT_EQ(pending[0].attempts, 1);
  EXPECT_EQ(pending[0].reason, dead_letter_reason::ack_timeout);
  EXPECT_EQ(pending[1].attempts, 0);
  auto attempts = db.attempts_of(id1);
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].outcome, "ack_timeout");
  EXPECT_EQ(db.count_journal(), 0);
}

TEST_F(Database, PagesOfPendingInAcceptOrder) {
  auto db = open();
  db.begin();
  for (int i = 0; i < 25; ++i) {
    db.dead_letter_new(message("m" + std::to_string(i)), "bob", dead_letter_reason::recipient_offline, now_ms());
  }
  db.commit();
  std::vector<std::string> seen;
  std::int64_t after = 0;
  for (;;) {
    auto page = db.pending_for("bob", after, 10);
    if (page.empty()) break;
    for (auto& d : page) seen.push_back(d.message_uuid);
    after = page.back().seq;
  }
  ASSERT_EQ(seen.size(), 25u);
  for (int i = 0; i < 25; ++i) EXPECT_EQ(seen[i], "m" + std::to_string(i));
}

TEST_F(Database, AttemptsDeliverOrPark) {
  auto db = open();
  db.begin();
  const auto ok = db.dead_letter_new(message("ok"), "bob", dead_letter_reason::recipient_offline, now_ms());
  const auto bad = db.dead_letter_new(message("bad"), "bob", dead_letter_reason::recipient_offline, now_ms());
  db.record_attempt(ok, 1, now_ms(), "acknowledged", now_ms(), 3);
  for (int i = 1; i <= 3; ++i) {
    const auto before = db.find("bad")[0];
    EXPECT_EQ(before.attempts, i - 1);
    db.record_attempt(bad, before.attempts + 1, now_ms(), "ack_timeout", now_ms(), 3);
    EXPECT_EQ(db.find("bad")[0].state, i < 3 ? dead_letter_state::pending : dead_letter_state::parked);
  }
  // A parked or delivered letter is not changed by a stray attempt record.
  db.record_attempt(ok, 2, now_ms(), "ack_timeout", now_ms(), 3);
  db.commit();
  auto delivered = db.find("ok");
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(delivered[0].state, dead_letter_state::delivered);
  EXPECT_TRUE(delivered[0].delivered_at);
  EXPECT_EQ(db.attempts_of(ok)[0].outcome, "acknowledged");
  EXPECT_EQ(delivered[0].attempts, 1);
  auto tries = db.attempts_of(bad);
  ASSERT_EQ(tries.size(), 3u);
  EXPECT_EQ(tries[2].outcome, "ack_timeout");
  EXPECT_TRUE(tries[2].finished_at);
  EXPECT_EQ(db.count_pending("bob"), 0);
}

std::int64_t count_of(database& db, const std::string& sql) {
  sqlite::statement s(db.connection(), sql);
  return s.step() ? s.column_int(0) : -1;
}

std::string raw_state(database& db, std::int64_t id) {
  sqlite::statement s(db.connection(), "SELECT state FROM dead_letters WHERE id = ?");
  s.bind(1, id);
  return s.step() ? s.column_text(0) : std::string("none");
}

std::int64_t unfolded(database& db) {
  sqlite::statement s(db.connection(), "SELECT count(*) FROM redelivered");
  return s.step() ? s.column_int(0) : -1;
}

TEST_F(Database, AnAcknowledgedRedeliveryIsANarrowRowThatEveryReaderSeesDelivered) {
  auto db = open();
  const auto t = now_ms();
  db.begin();
  const auto a = db.dead_letter_new(message("a"), "bob", dead_letter_reason::recipient_offline, t);
  const auto b = db.dead_letter_new(message("b"), "bob", dead_letter_reason::recipient_offline, t);
  db.record_attempt(a, 1, t, "acknowledged", t + 5ms, 3);
  db.commit();
  EXPECT_EQ(raw_state(db, a), "pending") << "the letter's row is not rewritten";
  EXPECT_EQ(unfolded(db), 1);

  const auto letter = db.find("a").at(0);
  EXPECT_EQ(letter.state, dead_letter_state::delivered);
  EXPECT_EQ(letter.attempts, 1);
  EXPECT_EQ(letter.delivered_at, format_iso8601(t + 5ms));
  EXPECT_EQ(db.list({std::nullopt, std::nullopt, dead_letter_state::delivered, 10}).size(), 1u);
  ASSERT_EQ(db.attempts_of(a).size(), 1u);
  EXPECT_EQ(db.attempts_of(a)[0].outcome, "acknowledged");
  auto page = db.pending_for("bob", 0, 10);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id, b);
  EXPECT_EQ(db.count_pending("bob"), 1);
  EXPECT_EQ(db.count_all_pending(), 1);
  sqlite::statement view(db.connection(), "SELECT pending FROM pending_by_recipient WHERE receiver_username = 'bob'");
  ASSERT_TRUE(view.step());
  EXPECT_EQ(view.column_int(0), 1);

  // Nothing else changes it: a stray failure, a late acknowledgement, the expiry sweep.
  db.begin();
  EXPECT_FALSE(db.record_attempt(a, 2, t, "ack_timeout", t, 1));
  EXPECT_TRUE(db.mark_delivered("bob", "a", "", t).empty());
  EXPECT_EQ(db.sweep_expired(t + 365 * 24h), (counts_by_recipient{{"bob", 1}}));  // b only
  db.commit();
  EXPECT_EQ(db.find("a").at(0).state, dead_letter_state::delivered);

  // Folded: the letter's row says so itself, with its attempt row, and the narrow row is gone.
  db.begin();
  EXPECT_EQ(db.fold_redelivered(100), 1);
  db.commit();
  EXPECT_EQ(raw_state(db, a), "delivered");
  EXPECT_EQ(unfolded(db), 0);
  const auto folded = db.find("a").at(0);
  EXPECT_EQ(folded.attempts, 1);
  EXPECT_EQ(folded.delivered_at, format_iso8601(t + 5ms));
  ASSERT_FALSE(db.attempts_of(a).empty());
  EXPECT_EQ(db.attempts_of(a)[0].outcome, "acknowledged");
  EXPECT_EQ(db.find("b").at(0).state, dead_letter_state::expired);
}

TEST_F(Database, FoldingTakesTheOldestFirstAndOpeningFoldsTheRest) {
  std::vector<std::int64_t> ids;
  {
    auto db = open();
    db.begin();
    for (int i = 0; i < 5; ++i) {
      ids.push_back(db.dead_letter_new(message("f" + std::to_string(i)), "bob", dead_letter_reason::recipient_offline,
                                       now_ms()));
    }
    for (auto id : ids) db.record_attempt(id, 1, now_ms(), "acknowledged", now_ms(), 3);
    // A letter deleted meanwhile (by hand): its row is dropped at the fold.
    db.connection().exec("DELETE FROM dead_letters WHERE id = " + std::to_string(ids[1]));
    EXPECT_EQ(db.fold_redelivered(3), 3);
    db.commit();
    EXPECT_EQ(raw_state(db, ids[0]), "delivered");
    EXPECT_EQ(raw_state(db, ids[2]), "delivered");
    EXPECT_EQ(raw_state(db, ids[3]), "pending");
    EXPECT_EQ(unfolded(db), 2);
  }
  auto db = open();  // as a broker starting after a crash
  EXPECT_EQ(unfolded(db), 0);
  EXPECT_EQ(raw_state(db, ids[3]), "delivered");
  EXPECT_EQ(raw_state(db, ids[4]), "delivered");
}

std::vector<std::int64_t> letters_for(database& db, const std::string& prefix, int n) {
  std::vector<std::int64_t> ids;
  db.begin();
  for (int i = 0; i < n; ++i) {
    ids.push_back(db.dead_letter_new(message(prefix + std::to_string(i)), "bob", dead_letter_reason::recipient_offline,
                                     now_ms()));
  }
  db.commit();
  return ids;
}

// One acknowledgement frame's redeliveries are one row (schema 6); the view `redelivered` and
// the operator's views still show a letter per row.
TEST_F(Database, AnAcknowledgementsRedeliveriesAreOneRowThatTheViewsShowALetterPerRow) {
  auto db = open();
  const auto ids = letters_for(db, "b", 4);
  const auto t = now_ms();
  db.begin();
  db.record_acknowledged({{ids[0], 1, t}, {ids[1], 2, t + 1ms}, {ids[2], 1, t + 2ms}}, t + 10ms);
  db.record_acknowledged({{ids[1], 3, t}}, t + 20ms);  // marked already: left out
  db.commit();
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM redelivered_batches"), 1);
  EXPECT_EQ(unfolded(db), 3);
  EXPECT_EQ(count_of(db, "SELECT attempt FROM redelivered WHERE dead_letter_id = " + std::to_string(ids[1])), 2);
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM letters WHERE state = 'delivered'"), 3);
  EXPECT_EQ(count_of(db, "SELECT pending FROM pending_by_recipient WHERE receiver_username = 'bob'"), 1);
  EXPECT_EQ(count_of(db, "SELECT count FROM dead_letter_counts WHERE state = 'delivered'"), 3);
  const auto second = db.find("b1").at(0);
  EXPECT_EQ(second.state, dead_letter_state::delivered);
  EXPECT_EQ(second.attempts, 2);
  EXPECT_EQ(second.last_attempt_at, format_iso8601(t + 1ms));
  EXPECT_EQ(second.delivered_at, format_iso8601(t + 10ms));
  EXPECT_EQ(db.count_pending("bob"), 1);
  ASSERT_EQ(db.pending_for("bob", 0, 10).size(), 1u);
  EXPECT_EQ(db.pending_for("bob", 0, 10)[0].id, ids[3]);

  // Folding takes whole rows: asked for 1 letter, it takes the row's 3.
  db.begin();
  EXPECT_EQ(db.fold_redelivered(1), 3);
  db.commit();
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM redelivered_batches"), 0);
  EXPECT_EQ(raw_state(db, ids[1]), "delivered");
  EXPECT_EQ(db.find("b1").at(0).attempts, 2);
  EXPECT_EQ(db.attempts_of(ids[1]).at(0).finished_at, format_iso8601(t + 10ms));
  EXPECT_EQ(db.count_pending("bob"), 1);
}

// An operator's query of the views reads each letter and each acknowledged redelivery a few
// times, not once for every pair of them (which SQLite does with a LEFT JOIN to `redelivered`:
// minutes for a drain of 50,000). Counted in SQLite's virtual machine steps, not in time.
TEST_F(Database, TheViewsReadUnfoldedAcknowledgementsInLinearTime) {
  auto db = open();
  constexpr int letters = 2000;
  const auto ids = letters_for(db, "v", letters);
  db.begin();
  for (int half = 0; half < 2; ++half) {
    std::vector<acknowledged_redelivery> acked;
    for (int i = half * 800; i < (half + 1) * 800; ++i) acked.push_back({ids[static_cast<std::size_t>(i)], 1, now_ms()});
    db.record_acknowledged(acked, now_ms());
  }
  db.commit();
  for (const char* sql : {"SELECT count(*) FROM letters WHERE state = 'delivered'",
                          "SELECT * FROM letters WHERE receiver_username = 'bob' ORDER BY seq LIMIT 10",
                          "SELECT * FROM letters WHERE message_uuid = 'v5'", "SELECT * FROM dead_letter_counts",
                          "SELECT * FROM pending_by_recipient", "SELECT count(*) FROM attempts"}) {
    sqlite3_stmt* s = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db.connection().handle(), sql, -1, &s, nullptr), SQLITE_OK) << sql;
    while (sqlite3_step(s) == SQLITE_ROW) {
    }
    const int steps = sqlite3_stmt_status(s, SQLITE_STMTSTATUS_VM_STEP, 0);
    sqlite3_finalize(s);
    EXPECT_LT(steps, 200 * letters) << sql;
  }
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM letters WHERE state = 'delivered'"), 1600);
  EXPECT_EQ(count_of(db, "SELECT pending FROM pending_by_recipient"), 400);
}

// The broker's reads skip acknowledged letters through what the connection holds in memory: a
// rolled-back acknowledgement, and another connection's fold and replay, must show in them.
TEST_F(Database, TheBrokersReadsFollowARollbackAndAnotherConnectionsChanges) {
  auto db = open();
  const auto ids = letters_for(db, "r", 3);
  db.begin();
  db.record_acknowledged({{ids[0], 1, now_ms()}, {ids[1], 1, now_ms()}}, now_ms());
  EXPECT_EQ(db.count_pending("bob"), 1);
  db.rollback();
  EXPECT_EQ(db.count_pending("bob"), 3);
  EXPECT_EQ(db.pending_for("bob", 0, 10).size(), 3u);

  db.begin();
  db.record_acknowledged({{ids[0], 1, now_ms()}}, now_ms());
  db.commit();
  EXPECT_EQ(db.count_pending("bob"), 2);
  {
    // An operator's purge folds it; a replay makes it pending again.
    auto admin = open(false);
    EXPECT_EQ(admin.purge(dead_letter_state::parked, std::nullopt), 0);
    EXPECT_EQ(raw_state(admin, ids[0]), "delivered");
    admin.begin();
    EXPECT_EQ(admin.replay(std::string("bob"), dead_letter_state::delivered, false, now_ms()), 1);
    admin.commit();
  }
  EXPECT_EQ(db.count_pending("bob"), 3);
  EXPECT_EQ(db.count_all_pending(), 3);
  EXPECT_EQ(db.pending_for("bob", 0, 10).size(), 3u);
  db.begin();
  db.record_acknowledged({{ids[0], 2, now_ms()}}, now_ms());  // acknowledged again, once redelivered
  db.commit();
  EXPECT_EQ(db.count_pending("bob"), 2);
}

// Rows of schema 5's `redelivered` (a letter each) are carried into schema 6's batches, and
// folded at open with their times.
TEST_F(Database, MigratingSchemaFiveKeepsItsUnfoldedAcknowledgements) {
  std::vector<std::int64_t> ids;
  {
    auto db = open();
    ids = letters_for(db, "m", 3);
  }
  {
    sqlite::connection c(path, sqlite::connection::mode::existing_only, 1000);
    c.exec(R"sql(
DROP VIEW dead_letter_counts; DROP VIEW pending_by_recipient; DROP VIEW attempts; DROP VIEW letters;
DROP VIEW redelivered; DROP TABLE redelivered_batches;
CREATE TABLE redelivered (dead_letter_id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL, started_at TEXT NOT NULL,
  delivered_at TEXT NOT NULL);
CREATE VIEW letters AS SELECT 1; CREATE VIEW attempts AS SELECT 1; CREATE VIEW pending_by_recipient AS SELECT 1;
CREATE VIEW dead_letter_counts AS SELECT 1;
PRAGMA user_version = 5;
)sql");
    sqlite::statement row(c, "INSERT INTO redelivered VALUES (?, ?, ?, ?)");
    row.bind(1, ids[0]).bind(2, std::int64_t{1}).bind(3, "2026-01-01T00:00:00.000Z").bind(4, "2026-01-01T00:00:01.000Z");
    row.run();
    row.bind(1, ids[2]).bind(2, std::int64_t{2}).bind(3, "2026-01-01T00:00:02.000Z").bind(4, "2026-01-01T00:00:03.000Z");
    row.run();
  }
  auto db = open();
  EXPECT_EQ(count_of(db, "PRAGMA user_version"), database::schema_version);
  EXPECT_EQ(raw_state(db, ids[0]), "delivered");
  EXPECT_EQ(raw_state(db, ids[1]), "pending");
  EXPECT_EQ(raw_state(db, ids[2]), "delivered");
  const auto third = db.attempts_of(ids[2]);
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0].attempt, 2);
  EXPECT_EQ(third[0].started_at, "2026-01-01T00:00:02.000Z");
  EXPECT_EQ(third[0].finished_at, "2026-01-01T00:00:03.000Z");
  EXPECT_EQ(count_of(db, "SELECT pending FROM pending_by_recipient"), 1);
}

TEST_F(Database, PurgeSeesLettersAcknowledgedButNotYetFolded) {
  auto db = open();
  db.begin();
  const auto id = db.dead_letter_new(message("p"), "bob", dead_letter_reason::recipient_offline, now_ms());
  db.record_attempt(id, 1, now_ms(), "acknowledged", now_ms(), 3);
  db.commit();
  EXPECT_EQ(db.purge(dead_letter_state::delivered, std::nullopt), 1);
  EXPECT_TRUE(db.find("p").empty());
  EXPECT_EQ(unfolded(db), 0);
}

TEST_F(Database, LateAcknowledgementMarksDelivered) {
  auto db = open();
  db.begin();
  const auto seq = db.journal(message("late", "alice"), "bob");
  db.dead_letter_journaled(seq, dead_letter_reason::ack_timeout, now_ms(), true);
  db.dead_letter_new(message("late", "mallory"), "bob", dead_letter_reason::recipient_offline, now_ms());
  EXPECT_EQ(db.mark_delivered("bob", "late", "alice", now_ms()), std::vector<std::string>{"alice"});
  EXPECT_TRUE(db.mark_delivered("bob", "late", "alice", now_ms()).empty());
  EXPECT_EQ(db.mark_delivered("bob", "late", "", now_ms()), std::vector<std::string>{"mallory"});  // the other's
  EXPECT_TRUE(db.mark_delivered("carol", "late", "", now_ms()).empty());
  db.commit();
  for (auto& d : db.find("late")) EXPECT_EQ(d.state, dead_letter_state::delivered);
}

TEST_F(Database, SweepExpiresOnlyPendingPastTheirTime) {
  auto db = open();
  const auto t = now_ms();
  auto old = message("old", "alice", t - 2h);
  old.expires_at = t - 1h;
  auto fresh = message("fresh");
  db.begin();
  db.dead_letter_new(old, "bob", dead_letter_reason::recipient_offline, t);
  db.dead_letter_new(fresh, "bob", dead_letter_reason::recipient_offline, t);
  EXPECT_EQ(db.sweep_expired(t), (counts_by_recipient{{"bob", 1}}));
  db.commit();
  EXPECT_EQ(db.find("old")[0].state, dead_letter_state::expired);
  EXPECT_EQ(db.find("fresh")[0].state, dead_letter_state::pending);
}

TEST_F(Database, Groups) {
  auto db = open();
  db.begin();
  EXPECT_TRUE(db.create_group("ops", "alice", {"bob", "carol"}, now_ms()));
  EXPECT_FALSE(db.create_group("ops", "mallory", {}, now_ms()));
  EXPECT_TRUE(db.join_group("ops", "dave", now_ms()));
  EXPECT_TRUE(db.join_group("ops", "dave", now_ms()));
  EXPECT_FALSE(db.join_group("nope", "dave", now_ms()));
  EXPECT_TRUE(db.leave_group("ops", "carol"));
  EXPECT_FALSE(db.leave_group("nope", "carol"));
  EXPECT_TRUE(db.create_group("solo", "zed", {}, now_ms()));
  EXPECT_TRUE(db.leave_group("solo", "zed"));  // last member: the group goes
  db.commit();
  auto groups = db.list_groups();
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].name, "ops");
  EXPECT_EQ(groups[0].members, (std::vector<std::string>{"alice", "bob", "dave"}));
}

TEST_F(Database, AdminListReplayPurge) {
  auto db = open();
  db.begin();
  const auto a = db.dead_letter_new(message("a"), "bob", dead_letter_reason::recipient_offline, now_ms());
  db.dead_letter_new(message("b"), "carol", dead_letter_reason::queue_overflow, now_ms());
  db.record_attempt(a, 1, now_ms(), "ack_timeout", now_ms(), 1);  // parked
  db.commit();
  EXPECT_EQ(db.list({}).size(), 2u);
  EXPECT_EQ(db.list({std::string("bob"), std::nullopt, std::nullopt, 100}).size(), 1u);
  EXPECT_EQ(db.list({std::nullopt, dead_letter_reason::queue_overflow, std::nullopt, 100}).size(), 1u);
  EXPECT_EQ(db.list({std::nullopt, std::nullopt, dead_letter_state::parked, 100}).size(), 1u);
  EXPECT_EQ(db.list({std::nullopt, std::nullopt, std::nullopt, 1}).size(), 1u);

  EXPECT_EQ(db.replay(std::nullopt, dead_letter_state::parked, true, now_ms()), 1);
  EXPECT_EQ(db.find("a")[0].state, dead_letter_state::parked);
  EXPECT_EQ(db.replay(std::string("bob"), dead_letter_state::parked, false, now_ms()), 1);
  auto replayed = db.find("a")[0];
  EXPECT_EQ(replayed.state, dead_letter_state::pending);
  EXPECT_EQ(replayed.attempts, 1);  // counting goes on; the budget starts again
  EXPECT_EQ(replayed.attempts_before_replay, 1);
  EXPECT_TRUE(parse_iso8601(replayed.expires_at)) << replayed.expires_at;
  EXPECT_GT(*parse_iso8601(replayed.expires_at), now_ms() + 6 * 24h);

  EXPECT_EQ(db.purge(std::nullopt, std::nullopt), 0);  // pending letters are never purged
  db.begin();
  db.mark_delivered("carol", "b", "", now_ms());
  db.commit();
  EXPECT_EQ(db.purge(dead_letter_state::delivered, now_ms() - 1h), 0);  // not old enough
  EXPECT_EQ(db.purge(dead_letter_state::delivered, now_ms() + 1h), 1);
  EXPECT_EQ(db.list({}).size(), 1u);
}

TEST_F(Database, AcceptedPairsOutliveAcknowledgementAndAreForgottenOldestFirst) {
  auto db = open();
  const auto t = now_ms();
  auto remember = [&](std::string_view uuid, sys_ms at, std::string_view status) {
    accepted_pairs one;
    one.add("alice", uuid, status);
    db.remember_accepted(one, at);
  };
  db.begin();
  remember("old", t - 1h, "relayed");
  const auto seq = db.journal(message("m1"), "bob");
  remember("m1", t, "relayed");
  remember("m2", t, "[{\"receiver_username\":\"bob\",\"status\":\"dead_lettered\"}]");
  db.acknowledge(seq);  // acknowledged: still a duplicate if sent again
  db.commit();
  auto recent = db.accepted_since(t - 10min);
  ASSERT_EQ(recent.size(), 2u);
  EXPECT_EQ(recent[0].message_uuid, "m1");
  EXPECT_EQ(recent[0].status, "relayed");
  EXPECT_EQ(recent[1].status.front(), '[');
  db.begin();
  EXPECT_EQ(db.forget_accepted(t - 10min, 1'000'000), 1);  // the one past the window
  EXPECT_EQ(db.forget_accepted(t - 10min, 1), 1);          // past the cap: the oldest goes
  db.commit();
  recent = db.accepted_since(t - 2h);
  ASSERT_EQ(recent.size(), 1u);
  EXPECT_EQ(recent[0].message_uuid, "m2");
}

// The pairs of one accept job are one row, read back a pair at a time in their order (also by
// hand, through the view `dedupe`); the cap counts pairs, and a row that crosses it goes whole.
TEST_F(Database, TheDedupePairsOfOneJobAreOneRow) {
  auto db = open();
  const auto t = now_ms();
  accepted_pairs batch;
  batch.add("alice", "a1", "relayed");
  batch.add("bob \"the\" builder", "b1", "dead_lettered");
  batch.add("alice", "a2", "[{\"receiver_username\":\"carol\",\"status\":\"relayed\"}]");
  accepted_pairs later;
  later.add("alice", "a3", "relayed");
  db.begin();
  db.remember_accepted(batch, t);
  db.remember_accepted(later, t);
  db.commit();
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM dedupe_batches"), 2);
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM dedupe WHERE message_uuid LIKE 'a%'"), 3);
  auto pairs = db.accepted_since(t - 1min);
  ASSERT_EQ(pairs.size(), 4u);
  EXPECT_EQ(pairs[0].message_uuid, "a1");
  EXPECT_EQ(pairs[1].sender, "bob \"the\" builder");
  EXPECT_EQ(pairs[1].status, "dead_lettered");
  EXPECT_EQ(pairs[2].status, "[{\"receiver_username\":\"carol\",\"status\":\"relayed\"}]");
  EXPECT_EQ(pairs[3].message_uuid, "a3");
  db.begin();
  EXPECT_EQ(db.forget_accepted(t - 1min, 2), 3) << "the row of three crosses the cap of 2";
  db.commit();
  pairs = db.accepted_since(t - 1min);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].message_uuid, "a3");
}

// The bug of schema 1: a replay reset attempts below the letter's attempt rows, and its next
// attempt could never be recorded (UNIQUE constraint failed), so it was redelivered forever.
TEST_F(Database, AReplayedLetterIsRedeliveredAndItsAcknowledgementStored) {
  auto db = open();
  db.begin();
  const auto id = db.dead_letter_new(message("r1"), "bob", dead_letter_reason::recipient_offline, now_ms());
  EXPECT_FALSE(db.record_attempt(id, 1, now_ms(), "ack_timeout", now_ms(), 2));
  EXPECT_TRUE(db.record_attempt(id, 2, now_ms(), "ack_timeout", now_ms(), 2));  // parked
  EXPECT_EQ(db.replay(std::nullopt, dead_letter_state::parked, false, now_ms()), 1);
  auto letter = db.pending_for("bob", 0, 10);
  ASSERT_EQ(letter.size(), 1u);
  // The broker sends attempt attempts + 1; it gets the whole budget again.
  EXPECT_FALSE(db.record_attempt(id, letter[0].attempts + 1, now_ms(), "ack_timeout", now_ms(), 2));
  EXPECT_EQ(db.find("r1")[0].state, dead_letter_state::pending);
  db.record_attempt(id, letter[0].attempts + 2, now_ms(), "acknowledged", now_ms(), 2);
  db.commit();
  EXPECT_EQ(db.find("r1")[0].state, dead_letter_state::delivered);
  const auto attempts = db.attempts_of(id);
  ASSERT_EQ(attempts.size(), 4u);
  EXPECT_EQ(attempts.back().attempt, 4);
  EXPECT_EQ(attempts.back().outcome, "acknowledged");
}

// The tables of schema version 2 as its broker wrote them (a body in every journal row and dead
// letter), for the migration tests. Version 1 lacked attempts_before_replay and dedupe.
void write_old_schema(sqlite::connection& c, int version) {
  c.exec(R"sql(
CREATE TABLE journal (id INTEGER PRIMARY KEY, message_uuid TEXT NOT NULL, sender_username TEXT NOT NULL,
  receiver_username TEXT NOT NULL, channel TEXT NOT NULL, group_name TEXT, body TEXT NOT NULL,
  accepted_at TEXT NOT NULL, expires_at TEXT NOT NULL);
CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, message_uuid TEXT NOT NULL,
  sender_username TEXT NOT NULL, receiver_username TEXT NOT NULL,
  channel TEXT NOT NULL CHECK (channel = 'direct' OR channel = 'multicast' OR channel = 'broadcast' OR channel = 'group'),
  group_name TEXT, body TEXT NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0, accepted_at TEXT NOT NULL, dead_lettered_at TEXT NOT NULL,
  last_attempt_at TEXT, delivered_at TEXT, expires_at TEXT NOT NULL);
CREATE INDEX dead_letters_pending_by_recipient ON dead_letters (receiver_username, seq) WHERE state = 'pending';
CREATE INDEX dead_letters_pending_by_expiry ON dead_letters (expires_at) WHERE state = 'pending';
CREATE INDEX dead_letters_by_uuid ON dead_letters (message_uuid);
CREATE TABLE delivery_attempts (dead_letter_id INTEGER NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, outcome TEXT NOT NULL,
  PRIMARY KEY (dead_letter_id, attempt)) WITHOUT ROWID;
CREATE TABLE groups (group_name TEXT PRIMARY KEY, created_by TEXT NOT NULL, created_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE group_members (group_name TEXT NOT NULL REFERENCES groups (group_name) ON DELETE CASCADE,
  username TEXT NOT NULL, joined_at TEXT NOT NULL, PRIMARY KEY (group_name, username)) WITHOUT ROWID;
CREATE VIEW pending_by_recipient AS SELECT receiver_username, count(*) AS pending, min(accepted_at) AS oldest_accepted_at
  FROM dead_letters WHERE state = 'pending' GROUP BY receiver_username;
CREATE VIEW dead_letter_counts AS SELECT reason, state, count(*) AS count FROM dead_letters GROUP BY reason, state;
CREATE VIEW in_flight AS SELECT id AS seq, message_uuid, sender_username, receiver_username, channel, accepted_at FROM journal;
)sql");
  if (version >= 2) {
    c.exec("ALTER TABLE dead_letters ADD COLUMN attempts_before_replay INTEGER NOT NULL DEFAULT 0");
    c.exec("CREATE TABLE dedupe (id INTEGER PRIMARY KEY, sender_username TEXT NOT NULL, message_uuid TEXT NOT NULL, "
           "accepted_at TEXT NOT NULL, status TEXT NOT NULL)");
  }
  c.exec("PRAGMA user_version = " + std::to_string(version));
}

TEST_F(Database, MigratingSchemaOneRepairsLettersReplayedByIt) {
  {
    sqlite::connection c(path, sqlite::connection::mode::create, 1000);
    write_old_schema(c, 1);
    // A letter with two attempts whose count a version 1 replay reset to 0.
    c.exec("INSERT INTO dead_letters (id, seq, message_uuid, sender_username, receiver_username, channel, body, reason, "
           "state, attempts, accepted_at, dead_lettered_at, expires_at) VALUES (1, 1, 'r1', 'alice', 'bob', 'direct', "
           "'{\"message_text\":\"r1\"}', 'ack_timeout', 'pending', 0, '2026-01-01T00:00:00.000Z', "
           "'2026-01-01T00:00:01.000Z', '2099-01-01T00:00:00.000Z')");
    c.exec("INSERT INTO delivery_attempts VALUES (1, 1, '2026-01-01T00:00:01.000Z', '2026-01-01T00:00:02.000Z', "
           "'ack_timeout'), (1, 2, '2026-01-01T00:00:03.000Z', '2026-01-01T00:00:04.000Z', 'ack_timeout')");
  }
  auto db = open();
  auto letter = db.find("r1");
  ASSERT_EQ(letter.size(), 1u);
  EXPECT_EQ(letter[0].attempts, 2);
  EXPECT_EQ(letter[0].attempts_before_replay, 2);
  EXPECT_EQ(letter[0].body, "{\"message_text\":\"r1\"}");
  db.begin();
  db.record_attempt(letter[0].id, letter[0].attempts + 1, now_ms(), "acknowledged", now_ms(), 5);
  db.commit();
  EXPECT_EQ(db.find("r1")[0].state, dead_letter_state::delivered);
  // Its pair, for dedupe (the version 2 step fills it from the letters).
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM dedupe WHERE message_uuid = 'r1'"), 1);
}

// Version 3 keeps a body once: the rows of one message (a fan-out's letters, its journal
// rows) share one message row, and everything reads as before.
TEST_F(Database, MigratingSchemaTwoStoresEachBodyOnce) {
  const std::string body = "{\"message_text\":\"" + std::string(1000, 'x') + "\"}";
  {
    sqlite::connection c(path, sqlite::connection::mode::create, 1000);
    write_old_schema(c, 2);
    sqlite::statement letter(c, "INSERT INTO dead_letters (seq, message_uuid, sender_username, receiver_username, "
                                "channel, group_name, body, reason, accepted_at, dead_lettered_at, expires_at) VALUES "
                                "(?, ?, 'alice', ?, ?, ?, ?, 'recipient_offline', ?, ?, '2099-01-01T00:00:00.000Z')");
    for (int i = 0; i < 3; ++i) {  // a group message to three members, offline
      letter.bind(1, std::int64_t{i + 1}).bind(2, "fan").bind(3, "m" + std::to_string(i)).bind(4, "group");
      letter.bind(5, "crowd").bind(6, body).bind(7, "2026-01-01T00:00:00.000Z").bind(8, "2026-01-01T00:00:00.000Z");
      letter.run();
    }
    // The same uuid from the same sender accepted again later (past the dedupe window): its own message.
    letter.bind(1, std::int64_t{4}).bind(2, "fan").bind(3, "m0").bind(4, "direct");
    letter.bind(5, std::optional<std::string>()).bind(6, "{}").bind(7, "2026-02-01T00:00:00.000Z");
    letter.bind(8, "2026-02-01T00:00:00.000Z");
    letter.run();
    c.exec("INSERT INTO journal VALUES (5, 'live', 'alice', 'bob', 'direct', NULL, '{\"message_text\":\"hi\"}', "
           "'2026-03-01T00:00:00.000Z', '2099-01-01T00:00:00.000Z'), (6, 'live', 'alice', 'carol', 'direct', NULL, "
           "'{\"message_text\":\"hi\"}', '2026-03-01T00:00:00.000Z', '2099-01-01T00:00:00.000Z')");
    // Dedupe pairs as versions 2 and 3 wrote them, one row each (version 4 packs a job's in one).
    c.exec("INSERT INTO dedupe (sender_username, message_uuid, accepted_at, status) VALUES "
           "('alice', 'live', '2026-03-01T00:00:00.000Z', 'relayed'), ('alice', 'fan', '2026-03-01T00:00:01.000Z', "
           "'[{\"receiver_username\":\"m0\",\"status\":\"dead_lettered\"}]')");
  }
  auto db = open();
  auto pairs = db.accepted_since(sys_ms{});
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].message_uuid, "live");
  EXPECT_EQ(pairs[0].status, "relayed");
  EXPECT_EQ(pairs[1].status, "[{\"receiver_username\":\"m0\",\"status\":\"dead_lettered\"}]");
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM messages"), 3);
  EXPECT_EQ(count_of(db, "SELECT deliveries FROM messages WHERE message_uuid = 'fan' AND channel = 'group'"), 3);
  EXPECT_EQ(count_of(db, "SELECT deliveries FROM messages WHERE message_uuid = 'live'"), 2);
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM in_flight WHERE message_uuid = 'live'"), 2);
  auto letters = db.find("fan");
  ASSERT_EQ(letters.size(), 4u);
  EXPECT_EQ(letters[0].body, body);
  EXPECT_EQ(letters[0].group_name, "crowd");
  EXPECT_EQ(letters[3].body, "{}");
  EXPECT_EQ(letters[3].ch, channel::direct);
  // The migrated rows keep their counts right: the last one to go takes the message with it.
  db.begin();
  db.acknowledge(5);
  EXPECT_EQ(count_of(db, "SELECT deliveries FROM messages WHERE message_uuid = 'live'"), 1);
  db.acknowledge(6);
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM messages WHERE message_uuid = 'live'"), 0);
  db.commit();
  EXPECT_EQ(db.recover(now_ms()), 0);
  // A new journal row gets a seq after the migrated ones.
  db.begin();
  EXPECT_GT(db.journal(message("next"), "bob"), 6);
  db.commit();
}

// A fan-out stores its body once: the recipients' rows refer to it, and it goes with the last.
TEST_F(Database, AMessageIsStoredOnceAndGoesWithItsLastRow) {
  auto db = open();
  auto m = message("fan");
  m.body = "{\"message_text\":\"" + std::string(100'000, 'x') + "\"}";
  db.begin();
  const auto id = db.insert_message(m, 502);
  const auto bob = db.journal(id, "bob");
  db.journal(id, "carol");
  for (int i = 0; i < 500; ++i) db.dead_letter_new(id, "u" + std::to_string(i), dead_letter_reason::recipient_offline, now_ms());
  db.commit();
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM messages"), 1);
  EXPECT_EQ(count_of(db, "SELECT sum(length(body)) FROM letters"), 500 * static_cast<std::int64_t>(m.body.size()));
  EXPECT_LT(std::filesystem::file_size(path) + std::filesystem::file_size(path + "-wal"), 2'000'000u);
  db.begin();
  db.acknowledge(bob);
  db.dead_letter_journaled(bob + 1, dead_letter_reason::ack_timeout, now_ms(), true);  // carol's
  EXPECT_EQ(db.recover(now_ms()), 0);
  db.commit();
  EXPECT_EQ(count_of(db, "SELECT deliveries FROM messages"), 501);
  EXPECT_EQ(db.purge(dead_letter_state::pending, std::nullopt, 100), 501);  // as an operator could
  EXPECT_EQ(count_of(db, "SELECT count(*) FROM messages"), 0);
  // A letter for a message that is not there is an error, not a letter without a body.
  db.begin();
  EXPECT_THROW(db.dead_letter_new(id + 100, "bob", dead_letter_reason::recipient_offline, now_ms()),
               sqlite::storage_error);
  db.rollback();
}

TEST_F(Database, PurgeRunsInChunksOfItsOwn) {
  auto db = open();
  db.begin();
  for (int i = 0; i < 25; ++i) {
    const auto id = db.dead_letter_new(message("p" + std::to_string(i)), "bob", dead_letter_reason::recipient_offline, now_ms());
    db.record_attempt(id, 1, now_ms(), "ack_timeout", now_ms(), 1);
  }
  db.commit();
  int commits = 0;
  sqlite3_commit_hook(db.connection().handle(), [](void* n) { return ++*static_cast<int*>(n), 0; }, &commits);
  EXPECT_EQ(db.purge(dead_letter_state::parked, std::nullopt, 10), 25);
  EXPECT_EQ(commits, 3);  // 10 + 10 + 5, each its own short transaction
  sqlite3_commit_hook(db.connection().handle(), nullptr, nullptr);
  EXPECT_EQ(db.list({}).size(), 0u);
}

TEST_F(Database, ReadOnlyOpeningWritesNothingAndRefusesAFileWithoutTheSchema) {
  std::ofstream(path).close();  // zero bytes
  database::settings reader{path};
  reader.create = false;
  reader.read_only = true;
  reader.schema_required = true;
  try {
    database db(reader);
    FAIL() << "opened a file without the schema";
  } catch (const sqlite::storage_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no message-broker schema"), std::string::npos) << e.what();
  }
  EXPECT_EQ(std::filesystem::file_size(path), 0u);  // still not a database
  reader.read_only = false;  // a writer that needs the schema refuses it too
  EXPECT_THROW(database{reader}, sqlite::storage_error);
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
}

TEST_F(Database, CheckFileNoticesTheFileDeletedAndRestored) {
  auto db = open();
  EXPECT_NO_THROW(db.check_file());
  const std::string kept = path + ".kept";
  ASSERT_EQ(::link(path.c_str(), kept.c_str()), 0);
  ASSERT_EQ(::unlink(path.c_str()), 0);
  try {
    db.check_file();
    FAIL() << "the deleted file went unnoticed";
  } catch (const sqlite::storage_error& e) {
    EXPECT_TRUE(e.transient());
    EXPECT_NE(std::string(e.what()).find("deleted"), std::string::npos) << e.what();
  }
  ASSERT_EQ(::link(kept.c_str(), path.c_str()), 0);  // the operator puts the same file back
  EXPECT_NO_THROW(db.check_file());
}

}  // namespace
}  // namespace ma
