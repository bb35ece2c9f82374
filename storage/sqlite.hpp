// RAII over sqlite3* and sqlite3_stmt*. Errors throw storage_error with the file name and
// SQLite's message. Not thread-safe: a connection belongs to one thread.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace ma::sqlite {

// An SQLite failure or a refused database file; what() is a sentence naming the file. code is
// SQLite's extended result code (0 when the file was refused for its content).
struct storage_error : std::runtime_error {
  explicit storage_error(const std::string& what, int code = 0) : std::runtime_error(what), code(code) {}
  // The database was busy, locked, full, unreadable or gone: the same work may succeed later.
  bool transient() const noexcept;
  int code;
};

// What failed, in a few words that name no file, for a client's error sentence: "database is
// locked", "database or disk is full", ...; "an internal error" for what is not a storage_error.
std::string_view failure_reason(const std::exception_ptr& e) noexcept;

// Puts SQLite in multi-thread mode without memory statistics (no mutex per call or malloc).
// Every connection calls it; a program that uses SQLite directly as well calls it first.
void configure_once();

class connection;

class statement {
 public:
  statement() = default;
  statement(connection& db, std::string_view sql);

  // Binding is 1-based like SQLite's; an empty optional binds NULL.
  statement& bind(int i, std::int64_t v);
  statement& bind(int i, std::string_view v);
  statement& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  statement& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  statement& bind(int i, const std::optional<std::string>& v);
  statement& bind_null(int i);

  // True while a row is available.
  bool step();
  // Steps to the end (for statements that return no rows).
  void run();
  void reset() noexcept;

  std::int64_t column_int(int i) const;
  std::string column_text(int i) const;
  // Valid until the next step or reset.
  std::string_view column_view(int i) const;
  std::optional<std::string> column_optional_text(int i) const;
  bool column_is_null(int i) const;

 private:
  struct finalizer {
    void operator()(sqlite3_stmt* s) const noexcept;
  };
  connection* db_ = nullptr;
  std::unique_ptr<sqlite3_stmt, finalizer> stmt_;
};

class connection {
 public:
  enum class mode { create, existing_only, read_only };
  // busy_timeout_ms: how long a statement waits for another connection's lock before it fails
  // with SQLITE_BUSY.
  connection(const std::string& path, mode m, int busy_timeout_ms = 5000);

  void exec(std::string_view sql);
  std::int64_t changes() const noexcept;
  // Rows changed by every statement since the connection opened.
  std::int64_t total_changes() const noexcept;
  std::int64_t last_insert_rowid() const noexcept;
  const std::string& path() const noexcept { return path_; }
  sqlite3* handle() const noexcept { return db_.get(); }

  // Throws storage_error for rc, naming the file and what was being done.
  [[noreturn]] void fail(int rc, std::string_view doing) const;

 private:
  struct closer {
    void operator()(sqlite3* db) const noexcept;
  };
  std::string path_;
  std::unique_ptr<sqlite3, closer> db_;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless commit() was called.
class transaction {
 public:
  explicit transaction(connection& db);
  ~transaction();
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;
  void commit();

 private:
  connection& db_;
  bool done_ = false;
};

}  // namespace ma::sqlite
