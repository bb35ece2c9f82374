// The store: one thread that owns the database and commits many operations per transaction.
//
// Callers on network threads never block and never touch SQLite: they hand over an operation
// (a function of database&) and get its result after the transaction that ran it committed.
// Operations run in the order submitted. A batch closes when the queue is empty or it holds
// max_batch operations. One that throws for a reason of its own fails alone: it gets its error
// (logged with its name), the transaction is rolled back and the others run again without it,
// so every operation must be able to run again from the start, leaving its outputs as if it
// had run once. When
// the transaction itself fails (the database locked past the busy timeout, the disk full, the
// file deleted), operations submitted with retry run again, in order, with back-off, until they
// commit; the others get the error. Before each batch the store checks that the file is still
// where it was opened.
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

#include "core/histogram.hpp"
#include "storage/job.hpp"

namespace ma {

class store {
 public:
  // How much lower the store's thread runs than the broker's (a nice value added to it).
  static constexpr int store_nice = 5;
  struct settings {
    database::settings db;
    std::size_t max_batch = 4096;
  };

  using job = store_job;
  // Called on the store's thread after the commit (or with the operation's error).
  using completion = store_completion;
  using on_failure = ma::on_failure;

  // Opens the database on the store's thread; rethrows what opening threw.
  explicit store(const settings& s);
  // Runs every operation already submitted, then stops the thread.
  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // name says what the operation is, for the log line of its failure ("accept", ...).
  void submit(job j, completion done, on_failure policy = on_failure::fail, const char* name = "operation");

  // The coroutine form: co_await run([](database& db) { return ...; }) resumes on the caller's
  // executor with the result after the commit, or throws what the batch threw. (Not itself a
  // coroutine: g++ 12 mishandles lambdas captured by value inside one.)
  template <class F>
  auto run(F f) {
    using R = std::invoke_result_t<F&, database&>;
    namespace asio = boost::asio;
    if constexpr (std::is_void_v<R>) {
      return asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr)>(
          [this](auto handler, F f) {
            auto state = make_waiter(std::move(handler));
            submit([f = std::move(f)](database& db) mutable { f(db); },
                   [state](std::exception_ptr e) { state->complete(e); });
          },
          asio::use_awaitable, std::move(f));
    } else {
      return asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr, R)>(
          [this](auto handler, F f) {
            auto state = make_waiter(std::move(handler));
            auto out = std::make_shared<std::optional<R>>();
            submit([f = std::move(f), out](database& db) mutable { out->emplace(f(db)); },
                   [state, out](std::exception_ptr e) {
                     state->complete(e, out->has_value() ? std::move(**out) : R{});
                   });
          },
          asio::use_awaitable, std::move(f));
    }
  }

  const std::string& path() const noexcept { return path_; }
  std::uint64_t batches_committed() const noexcept;
  // False while the database file is missing from its path (deleted under the broker).
  bool file_present() const noexcept { return file_present_.load(); }
  // Operations waiting to be retried after a failed transaction.
  std::size_t retrying() const noexcept;
  // How long each committed batch's transaction took, from its begin to the end of its commit.
  const latency_histogram& commit_latency() const noexcept { return commit_latency_; }
  // Why the last transaction failed, until one that writes commits (else empty).
  std::string failing() const;

 private:
  // A caller waiting for one operation: its handler, and a work guard that keeps its
  // io_context running meanwhile. complete() posts to the caller's executor; everything that
  // touches that io_context is released there, never on the store's thread, which may outlive it.
  template <class Handler>
  struct waiter : std::enable_shared_from_this<waiter<Handler>> {
    using guard_type = boost::asio::executor_work_guard<boost::asio::associated_executor_t<Handler>>;
    std::optional<Handler> handler;
    std::optional<guard_type> guard;

    template <class... Args>
    void complete(Args... args) {
      auto ex = boost::asio::get_associated_executor(*handler);
      boost::asio::post(ex, [self = this->shared_from_this(), args...]() mutable {
        Handler h = std::move(*self->handler);
        self->handler.reset();
        self->guard.reset();
        std::move(h)(std::move(args)...);
      });
    }
  };
  template <class Handler>
  static std::shared_ptr<waiter<Handler>> make_waiter(Handler h) {
    auto w = std::make_shared<waiter<Handler>>();
    w->guard.emplace(boost::asio::make_work_guard(h));
    w->handler.emplace(std::move(h));
    return w;
  }

  struct op {
    job j;
    completion done;
    on_failure policy = on_failure::fail;
    const char* name = "operation";
    std::exception_ptr error;
  };
  void loop(const settings& s, std::promise<void>* opened);
  // Runs one batch; returns the operations to run again.
  std::deque<op> run_batch(std::deque<op>& batch);
  void check_file();

  std::string path_;
  std::size_t max_batch_;
  std::unique_ptr<database> db_;
  std::chrono::steady_clock::time_point last_failure_log_{};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<op> queue_;
  bool stopping_ = false;
  std::uint64_t batches_ = 0;
  std::size_t retrying_ = 0;
  std::string failing_;
  latency_histogram commit_latency_;
  std::atomic<bool> file_present_{true};
  std::thread thread_;
};

}  // namespace ma
