#include "storage/store.hpp"

#include <spdlog/spdlog.h>

#include <future>

namespace ma {

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

void store::submit(job j, completion done) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(op{std::move(j), std::move(done)});
  }
  wake_.notify_one();
}

std::uint64_t store::batches_committed() const noexcept {
  std::lock_guard lock(mutex_);
  return batches_;
}

void store::loop(const settings& s, std::promise<void>* opened) {
  try {
    db_ = std::make_unique<database>(s.db);
  } catch (...) {
    opened->set_exception(std::current_exception());
    return;
  }
  opened->set_value();
  std::deque<op> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) break;  // stopping, and nothing left to run
      if (queue_.size() <= max_batch_) {
        batch.swap(queue_);
      } else {
        auto end = queue_.begin() + static_cast<std::ptrdiff_t>(max_batch_);
        std::move(queue_.begin(), end, std::back_inserter(batch));
        queue_.erase(queue_.begin(), end);
      }
    }
    run_batch(batch);
    batch.clear();
  }
  db_.reset();
}

void store::run_batch(std::deque<op>& batch) {
  std::exception_ptr error;
  try {
    db_->begin();
    for (op& o : batch) o.j(*db_);
    db_->commit();
  } catch (const std::exception& e) {
    error = std::current_exception();
    db_->rollback();
    spdlog::error("storage: a batch of {} operations on '{}' failed and was rolled back: {}", batch.size(), path_,
                  e.what());
  }
  {
    std::lock_guard lock(mutex_);
    ++batches_;
  }
  for (op& o : batch) {
    if (o.done) o.done(error);
  }
}

}  // namespace ma
