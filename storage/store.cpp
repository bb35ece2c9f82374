#include "storage/store.hpp"

#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <future>
#include <vector>

#include "core/counted.hpp"

namespace ma {

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr std::chrono::milliseconds first_backoff = 10ms;
constexpr std::chrono::milliseconds max_backoff = 1s;
// Retried work still failing this long after a stop was asked for is given up: the journal
// rows it would have moved are recovered at the next start.
constexpr auto give_up_when_stopping = 10s;

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an unknown error";
  }
}

bool is_transient(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const sqlite::storage_error& x) {
    return x.transient();
  } catch (...) {
    return false;
  }
}

}  // namespace

store::store(const settings& s) : path_(s.db.path), max_batch_(s.max_batch) {
  std::promise<void> opened;
  auto ready = opened.get_future();
  thread_ = std::thread([this, s, &opened] { loop(s, &opened); });
  try {
    ready.get();
  } catch (...) {
    thread_.join();
    throw;
  }
}

store::~store() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void store::submit(job j, completion done, on_failure policy, const char* name) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(op{std::move(j), std::move(done), policy, name, nullptr});
  }
  wake_.notify_one();
}

std::uint64_t store::batches_committed() const noexcept {
  std::lock_guard lock(mutex_);
  return batches_;
}

std::string store::failing() const {
  std::lock_guard lock(mutex_);
  return failing_;
}

std::size_t store::retrying() const noexcept {
  std::lock_guard lock(mutex_);
  return retrying_;
}

void store::loop(const settings& s, std::promise<void>* opened) {
  // This thread yields to the broker's when both want a core: round trips wait for the
  // broker's thread, while the store's work is batched and catches up (W3's p50 on 2 cores).
  // A nice value weighs it against the threads of its scheduling group (the service's cgroup
  // under systemd; the session's autogroup from a shell, or the whole machine without one).
  // SCHED_BATCH keeps the nice value and only stops its wake-ups (a commit's fsync returning, a
  // job queued) from preempting a running thread: it takes a core when one is free or at the
  // next tick, and a round trip in flight is not pushed off its core (W3's p50 and p99 in
  // docs/performance.md, ninth round). Neither needs a privilege.
  const auto tid = static_cast<id_t>(::gettid());
  errno = 0;
  if (const int nice = ::getpriority(PRIO_PROCESS, tid); errno == 0) {
    (void)::setpriority(PRIO_PROCESS, tid, std::min(nice + store_nice, 19));
  }
  const sched_param no_priority{};
  (void)::sched_setscheduler(0, SCHED_BATCH, &no_priority);  // 0: this thread
  try {
    db_ = std::make_unique<database>(s.db);
  } catch (...) {
    opened->set_exception(std::current_exception());
    return;
  }
  opened->set_value();
  std::deque<op> batch;
  auto backoff = first_backoff;
  std::optional<steady::time_point> failing_since, stop_seen;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) break;  // stopping, and nothing left to run
      if (stopping_ && !stop_seen) stop_seen = steady::now();
      if (queue_.size() <= max_batch_) {
        batch.swap(queue_);
      } else {
        auto end = queue_.begin() + static_cast<std::ptrdiff_t>(max_batch_);
        std::move(queue_.begin(), end, std::back_inserter(batch));
        queue_.erase(queue_.begin(), end);
      }
    }
    std::deque<op> again = run_batch(batch);
    batch.clear();
    if (again.empty()) {
      if (failing_since) {
        spdlog::info("storage: '{}' commits again; the retried work is stored", path_);
        failing_since.reset();
      }
      backoff = first_backoff;
      continue;
    }
    const auto now = steady::now();
    if (!failing_since) failing_since = now;
    if (stop_seen && now - *stop_seen > give_up_when_stopping) {
      spdlog::error("storage: stopping; {} operations on '{}' were given up after {} s of failures ({})",
                    again.size(), path_, std::chrono::duration_cast<std::chrono::seconds>(now - *failing_since).count(),
                    what_of(again.front().error));
      for (op& o : again) {
        if (o.done) o.done(o.error);
      }
      continue;
    }
    {
      std::lock_guard lock(mutex_);
      retrying_ = again.size();
      while (!again.empty()) {
        queue_.push_front(std::move(again.back()));
        again.pop_back();
      }
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, max_backoff);
    {
      std::lock_guard lock(mutex_);
      retrying_ = 0;
    }
  }
  db_.reset();
}

void store::check_file() {
  try {
    db_->check_file();
  } catch (const sqlite::storage_error& e) {
    if (file_present_.exchange(false)) spdlog::critical("storage: {}", e.what());
    throw;
  }
  if (!file_present_.exchange(true)) spdlog::critical("storage: the database file '{}' is back", path_);
}

std::deque<store::op> store::run_batch(std::deque<op>& batch) {
  for (op& o : batch) o.error = nullptr;  // a retried op's last error is history
  std::vector<op*> live;
  live.reserve(batch.size());
  for (op& o : batch) live.push_back(&o);
  std::exception_ptr whole;  // the transaction failed: nothing of the batch is committed
  // An operation that fails for a reason of its own (a constraint, a bug) fails alone: the
  // transaction is rolled back and the others run again without it. (Cheaper than a savepoint
  // per operation, which copies every page an operation touches.) A passing failure (busy,
  // full, I/O) is the transaction's: it would fail the others too.
  std::chrono::steady_clock::time_point began;  // of the last try, the one that commits
  const std::int64_t changes_before = db_->connection().total_changes();
  for (;;) {
    op* culprit = nullptr;
    began = std::chrono::steady_clock::now();
    try {
      check_file();
      db_->begin();
      for (op* o : live) {
        try {
          o->j(*db_);
        } catch (...) {
          o->error = std::current_exception();
          if (!is_transient(o->error)) culprit = o;
          throw;
        }
      }
      db_->commit();
    } catch (...) {
      if (!culprit) whole = std::current_exception();
    }
    if (!culprit && !whole) break;
    db_->rollback();
    if (!culprit) break;
    spdlog::error("storage: one {} on '{}' failed and was rolled back alone ({}); the other {} of its transaction "
                  "run again",
                  culprit->name, path_, what_of(culprit->error), live.size() - 1);
    std::erase(live, culprit);
  }
  if (!whole) {
    commit_latency_.observe(std::chrono::steady_clock::now() - began);
    std::lock_guard lock(mutex_);
    ++batches_;
    // Only a transaction that wrote shows that writing works again (reads commit on a full disk).
    if (db_->connection().total_changes() != changes_before) failing_.clear();
  } else {
    std::lock_guard lock(mutex_);
    failing_ = what_of(whole);
  }
  std::deque<op> again;
  std::size_t failed = 0;
  for (op& o : batch) {
    const bool culprit = o.error && std::find(live.begin(), live.end(), &o) == live.end();
    if (!culprit) o.error = whole;
    // Retried: its transaction failed, or it failed alone for a passing reason.
    if (o.policy == on_failure::retry && o.error && (!culprit || is_transient(o.error))) {
      again.push_back(std::move(o));
      continue;
    }
    if (o.error && !culprit) ++failed;
    if (o.done) o.done(o.error);
  }
  const auto now = steady::now();
  if (whole && (failed > 0 || now - last_failure_log_ > 10s)) {
    last_failure_log_ = now;
    spdlog::error("storage: a transaction of {} on '{}' failed and was rolled back ({} failed, {} to retry): {}",
                  counted(batch.size(), "operation"), path_, failed, again.size(), what_of(whole));
  }
  return again;
}

}  // namespace ma
