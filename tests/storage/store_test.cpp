#include "storage/store.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/this_coro.hpp>

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <future>
#include <latch>

#include "tests/support/run_coroutine.hpp"
#include "tests/support/temp_dir.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

message_record message(const std::string& uuid) {
  message_record m;
  m.message_uuid = uuid;
  m.sender = "alice";
  m.body = "{\"message_text\":\"" + std::string(100, 'x') + "\"}";
  m.accepted_at = now_ms();
  m.expires_at = m.accepted_at + 1h;
  return m;
}

TEST(Store, OpeningAMissingFileFailsInTheConstructor) {
  test::temp_dir dir;
  EXPECT_THROW(store(store::settings{{dir.file("nope.db"), false, false}}), sqlite::storage_error);
}

TEST(Store, CoroutineGetsResultsOnItsOwnThreadAfterCommit) {
  test::temp_dir dir;
  store s(store::settings{{dir.file("b.db")}});
  asio::io_context io;
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    const auto me = std::this_thread::get_id();
    const std::int64_t seq = co_await s.run([](database& db) { return db.journal(message("m1"), "bob"); });
    EXPECT_EQ(std::this_thread::get_id(), me);
    EXPECT_GT(seq, 0);
    // A second connection sees it: it was committed before the coroutine resumed.
    database reader({dir.file("b.db"), false, false});
    EXPECT_EQ(reader.count_journal(), 1);
    co_await s.run([seq](database& db) { db.acknowledge(seq); });
    EXPECT_EQ(reader.count_journal(), 0);
  }());
}

// The store's thread yields to the broker's: its nice value is store_nice above its creator's,
// and its wake-ups preempt no other thread (SCHED_BATCH).
TEST(Store, ItsThreadYieldsToTheBrokersThread) {
  test::temp_dir dir;
  errno = 0;
  const int mine = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  ASSERT_EQ(errno, 0);
  store s(store::settings{{dir.file("b.db")}});
  asio::io_context io;
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    const int its = co_await s.run([](database&) { return ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid())); });
    EXPECT_EQ(its, std::min(mine + store::store_nice, 19));
    const int policy = co_await s.run([](database&) { return ::sched_getscheduler(0); });
    EXPECT_EQ(policy, SCHED_BATCH);
  }());
}

TEST(Store, ManyOperationsInFlightAreGroupCommittedInOrder) {
  test::temp_dir dir;
  store s(store::settings{{dir.file("b.db")}});
  constexpr int n = 5000;
  std::vector<std::int64_t> seqs(n, 0);
  std::atomic<int> done{0};
  std::vector<int> completion_order;
  std::mutex m;
  for (int i = 0; i < n; ++i) {
    auto out = std::make_shared<std::int64_t>(0);
    s.submit([i, out](database& db) { *out = db.journal(message("m" + std::to_string(i)), "bob"); },
             [&, i, out](std::exception_ptr e) {
               EXPECT_FALSE(e);
               seqs[i] = *out;
               std::lock_guard lock(m);
               completion_order.push_back(i);
               ++done;
             });
  }
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (done < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(done.load(), n);
  for (int i = 1; i < n; ++i) {
    EXPECT_LT(seqs[i - 1], seqs[i]);
    EXPECT_EQ(completion_order[i], i);
  }
  EXPECT_LT(s.batches_committed(), static_cast<std::uint64_t>(n));  // many per transaction
}

// Keeps the store's thread busy until release(), so that what is submitted meanwhile lands in
// one batch. Must outlive the operation it submits.
struct held_store {
  std::latch hold{1}, blocked{1};
  explicit held_store(store& s) {
    s.submit([this](database&) { blocked.count_down(); hold.wait(); }, nullptr);
    blocked.wait();
  }
  void release() { hold.count_down(); }
};

TEST(Store, AFailingOperationFailsAloneAndTheOthersOfItsBatchCommit) {
  test::temp_dir dir;
  store s(store::settings{{dir.file("b.db")}});
  std::vector<std::exception_ptr> errors(4);
  std::latch finished(4);
  held_store held(s);  // outlives the batch: the store's thread reads its latch
  {
    s.submit([](database& db) { db.journal(message("good-1"), "bob"); },
             [&](std::exception_ptr e) { errors[0] = e; finished.count_down(); });
    // Fault injection: an SQLite error after a write of its own, and a plain exception.
    s.submit([](database& db) {
               db.journal(message("half"), "bob");
               db.connection().exec("INSERT INTO no_such_table VALUES (1)");
             },
             [&](std::exception_ptr e) { errors[1] = e; finished.count_down(); }, store::on_failure::fail,
             "test accept");
    s.submit([](database&) { throw std::runtime_error("injected"); },
             [&](std::exception_ptr e) { errors[2] = e; finished.count_down(); });
    s.submit([](database& db) { db.journal(message("good-2"), "bob"); },
             [&](std::exception_ptr e) { errors[3] = e; finished.count_down(); });
    held.release();
  }
  finished.wait();
  EXPECT_FALSE(errors[0]);
  EXPECT_TRUE(errors[1]);
  EXPECT_TRUE(errors[2]);
  EXPECT_FALSE(errors[3]);
  database reader({dir.file("b.db"), false, false});
  EXPECT_EQ(reader.count_journal(), 2);  // good-1 and good-2; nothing of the failed one
}

// An operator's sqlite3 holding the write lock longer than the busy timeout: retried work waits
// and commits once the lock is gone; the rest gets its error at once.
TEST(Store, RetriedWorkCommitsOnceTheLockIsReleased) {
  test::temp_dir dir;
  const std::string path = dir.file("b.db");
  store::settings settings{{path}};
  settings.db.busy_timeout_ms = 20;
  store s(settings);
  database operator_session({path, false, false});
  operator_session.begin();  // BEGIN IMMEDIATE: the write lock
  std::promise<std::exception_ptr> plain, retried;
  s.submit([](database& db) { db.journal(message("plain"), "bob"); }, [&](std::exception_ptr e) { plain.set_value(e); });
  s.submit([](database& db) { db.journal(message("kept"), "bob"); }, [&](std::exception_ptr e) { retried.set_value(e); },
           store::on_failure::retry, "test move");
  auto plain_result = plain.get_future();
  ASSERT_EQ(plain_result.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(plain_result.get());
  auto retried_result = retried.get_future();
  // Still waiting while the lock is held.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (s.retrying() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_GT(s.retrying(), 0u);
  EXPECT_EQ(retried_result.wait_for(0s), std::future_status::timeout);
  operator_session.rollback();
  ASSERT_EQ(retried_result.wait_for(30s), std::future_status::ready);
  EXPECT_FALSE(retried_result.get());
  EXPECT_EQ(operator_session.count_journal(), 1);
}

TEST(Store, TheDatabaseDeletedUnderTheStoreStopsWritesUntilItIsBack) {
  test::temp_dir dir;
  const std::string path = dir.file("b.db");
  store s(store::settings{{path}});
  const std::string kept = path + ".kept";
  ASSERT_EQ(::link(path.c_str(), kept.c_str()), 0);
  ASSERT_EQ(::unlink(path.c_str()), 0);
  std::promise<std::exception_ptr> plain, retried;
  s.submit([](database& db) { db.journal(message("lost"), "bob"); }, [&](std::exception_ptr e) { plain.set_value(e); });
  auto plain_result = plain.get_future();
  ASSERT_EQ(plain_result.wait_for(30s), std::future_status::ready);
  auto error = plain_result.get();
  ASSERT_TRUE(error);
  try {
    std::rethrow_exception(error);
  } catch (const sqlite::storage_error& e) {
    EXPECT_NE(std::string(e.what()).find("deleted"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s.file_present());
  s.submit([](database& db) { db.journal(message("kept"), "bob"); }, [&](std::exception_ptr e) { retried.set_value(e); },
           store::on_failure::retry);
  ASSERT_EQ(::link(kept.c_str(), path.c_str()), 0);
  auto retried_result = retried.get_future();
  ASSERT_EQ(retried_result.wait_for(30s), std::future_status::ready);
  EXPECT_FALSE(retried_result.get());
  EXPECT_TRUE(s.file_present());
}

TEST(Store, ErrorsReachTheCoroutineAsExceptions) {
  test::temp_dir dir;
  store s(store::settings{{dir.file("b.db")}});
  asio::io_context io;
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    bool threw = false;
    try {
      co_await s.run([](database& db) { db.connection().exec("SELECT * FROM nowhere"); });
    } catch (const sqlite::storage_error& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find("b.db"), std::string::npos);
    }
    EXPECT_TRUE(threw);
  }());
}

TEST(Store, AdminReadsAndReplaysWhileTheStoreWrites) {
  test::temp_dir dir;
  const std::string path = dir.file("b.db");
  store s(store::settings{{path}});
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 3000 && !stop; ++i) {
      std::latch one(1);
      s.submit(
          [i](database& db) {
            const auto id = db.dead_letter_new(message("w" + std::to_string(i)), "bob",
                                               dead_letter_reason::recipient_offline, now_ms());
            db.record_attempt(id, 1, now_ms(), "ack_timeout", now_ms(), 1);  // parked at once
          },
          [&](std::exception_ptr e) {
            EXPECT_FALSE(e);
            ++written;
            one.count_down();
          });
      one.wait();
    }
  });
  database admin({path, false, false});
  std::int64_t replayed = 0;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (written < 3000 && std::chrono::steady_clock::now() < deadline) {
    EXPECT_NO_THROW(admin.list({std::nullopt, std::nullopt, std::nullopt, 50}));
    admin.begin();
    replayed += admin.replay(std::nullopt, dead_letter_state::parked, false, now_ms());
    admin.commit();
  }
  stop = true;
  writer.join();
  admin.begin();
  replayed += admin.replay(std::nullopt, dead_letter_state::parked, false, now_ms());
  admin.commit();
  EXPECT_EQ(written.load(), 3000);
  EXPECT_EQ(replayed, 3000);
  EXPECT_EQ(admin.count_pending("bob"), 3000);
}

}  // namespace
}  // namespace ma
