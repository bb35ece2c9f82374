#include "storage/store.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/this_coro.hpp>

#include <atomic>
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

TEST(Store, AnSqliteErrorFailsTheWholeBatchAndTheNextBatchWorks) {
  test::temp_dir dir;
  store s(store::settings{{dir.file("b.db")}});
  std::latch hold(1);
  std::latch blocked(1);
  // Keep the store busy so that the next three operations land in one batch.
  s.submit([&](database&) { blocked.count_down(); hold.wait(); }, nullptr);
  blocked.wait();
  std::vector<std::exception_ptr> errors(3);
  std::latch finished(3);
  s.submit([](database& db) { db.journal(message("good-1"), "bob"); },
           [&](std::exception_ptr e) { errors[0] = e; finished.count_down(); });
  s.submit([](database& db) { db.connection().exec("INSERT INTO no_such_table VALUES (1)"); },
           [&](std::exception_ptr e) { errors[1] = e; finished.count_down(); });
  s.submit([](database& db) { db.journal(message("good-2"), "bob"); },
           [&](std::exception_ptr e) { errors[2] = e; finished.count_down(); });
  hold.count_down();
  finished.wait();
  for (auto& e : errors) EXPECT_TRUE(e);
  asio::io_context io;
  test::run_coroutine(io, [&]() -> asio::awaitable<void> {
    co_await s.run([](database& db) { db.journal(message("after"), "bob"); });
    const auto count = co_await s.run([](database& db) { return db.count_journal(); });
    EXPECT_EQ(count, 1);  // nothing of the failed batch was committed
  }());
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
