// The named store operations on a real temporary database, each run twice where the store may
// run it again (a batch re-run without a failed operation, or a retried transaction).
#include "broker/core/store_jobs.hpp"

#include <gtest/gtest.h>

#include "tests/support/temp_dir.hpp"

namespace ma {
namespace {

struct StoreJobs : ::testing::Test {
  test::temp_dir dir;
  database db{database::settings{dir.file("jobs.db")}};
  const sys_ms now{std::chrono::milliseconds(1'800'000'000'000)};

  void run(const store_job& j) {
    db.begin();
    j(db);
    db.commit();
  }
  message_ptr message(const std::string& uuid) {
    auto m = std::make_shared<accepted_message>();
    m->rec.message_uuid = uuid;
    m->rec.sender = "alice";
    m->rec.body = R"({"message_text":"hi"})";
    m->rec.accepted_at = now;
    m->rec.expires_at = now + std::chrono::hours(1);
    return m;
  }
  // Runs the accept of one message (a batch of one); its targets, with the seqs written.
  store_jobs::accept_targets accept(message_ptr m, store_jobs::accept_targets targets, std::string status) {
    auto batch = std::make_shared<store_jobs::accept_batch>();
    batch->add({std::move(m), std::move(targets), std::move(status), now});
    run(store_jobs::accept(batch, true));
    return batch->seal().front().targets;
  }
};

TEST_F(StoreJobs, AnAcceptJournalsTheLiveDeadLettersTheRestAndRemembersThePair) {
  auto m = message("m1");
  m->journal = journal_slots(1);
  store_jobs::accept_targets targets{{"bob", true, {}, 0},
                                     {"carol", false, dead_letter_reason::recipient_offline}};
  const std::string status =
      R"([{"receiver_username":"bob","status":"relayed"},{"receiver_username":"carol","status":"dead_lettered"}])";
  auto result = accept(m, targets, status);
  ASSERT_EQ(result.size(), 2u);
  EXPECT_GT(result[0].seq, 0);
  EXPECT_EQ(result[1].seq, 0);
  EXPECT_EQ(db.count_journal(), 1);
  EXPECT_EQ(db.count_pending("carol"), 1);
  auto pairs = db.accepted_since(now - std::chrono::minutes(1));
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].status, status);
}

// A live delivery acknowledged before the accept job ran is not journaled; one acknowledged
// after it is deleted by the acknowledgement's job, which reads the row from the slot.
TEST_F(StoreJobs, AnAcceptSkipsTheDeliveriesAcknowledgedFirst) {
  auto m = message("m2");
  m->journal = journal_slots(2);
  ASSERT_TRUE(m->journal.acknowledge_first(0));
  auto result = accept(m, {{"bob", true, {}, 0}, {"carol", true, {}, 1}}, "[...]");
  EXPECT_EQ(result[0].seq, 0);
  EXPECT_GT(result[1].seq, 0);
  EXPECT_EQ(db.count_journal(), 1);
  EXPECT_FALSE(m->journal.acknowledge_first(1));  // too late: the row exists
  auto acks = std::make_shared<store_jobs::acknowledgements>();
  acks->receiver = "carol";
  acks->journaled.emplace_back(m, 1);
  run(store_jobs::acknowledge(acks, now).run);
  EXPECT_EQ(db.count_journal(), 0);
  EXPECT_TRUE(db.find("m2").empty());
}

TEST_F(StoreJobs, RunningAJobAgainLeavesItsOutputsAsIfItRanOnce) {
  accept(message("x-bob"), {{"bob", false, dead_letter_reason::recipient_offline}}, "dead_lettered");
  auto letters = db.pending_for("bob", 0, 10);
  ASSERT_EQ(letters.size(), 1u);
  auto batch = std::make_shared<const std::vector<failed_delivery>>(std::vector<failed_delivery>{
      {"bob", delivery{message("x-bob"), delivery::no_slot, letters[0].id, 1, now}, true}});
  auto job = store_jobs::dead_letter(batch, dead_letter_reason::ack_timeout, now, 1);
  db.begin();
  job.run(db);
  db.rollback();  // the store re-runs a rolled-back batch: the first run's output must not stay
  run(job.run);
  EXPECT_EQ(job.result->size(), 1u) << "parked after its only attempt, counted once";
}

TEST_F(StoreJobs, GroupsAndCounts) {
  auto create = store_jobs::create_group("ops", "alice", {"bob"}, now);
  run(create.run);
  EXPECT_TRUE(*create.result);
  auto again = store_jobs::create_group("ops", "alice", {}, now);
  run(again.run);
  EXPECT_FALSE(*again.result);
  auto join = store_jobs::join_group("ops", "carol", now);
  run(join.run);
  EXPECT_TRUE(*join.result);
  auto leave = store_jobs::leave_group("nope", "carol");
  run(leave.run);
  EXPECT_FALSE(*leave.result);
  auto count = store_jobs::count_pending("nobody");
  run(count.run);
  EXPECT_EQ(*count.result, 0);
}

}  // namespace
}  // namespace ma
