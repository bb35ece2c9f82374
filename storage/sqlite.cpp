#include "storage/sqlite.hpp"

#include <sqlite3.h>

#include <mutex>
#include <string>

namespace ma::sqlite {

// Each connection is used by one thread at a time, so SQLite's own locking is not needed:
// multi-thread mode without memory statistics takes no mutex on every malloc. Must run before
// SQLite initializes; if something initialized it first, the calls fail harmlessly.
void configure_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3_initialize();
  });
}

bool storage_error::transient() const noexcept {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
      return true;
    default:
      return false;
  }
}

std::string_view failure_reason(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const storage_error& x) {
    if (x.code == 0) return "the database file was refused";
    if ((x.code & 0xff) == SQLITE_CANTOPEN) return "the database file is missing";
    return sqlite3_errstr(x.code);
  } catch (...) {
    return "an internal error";
  }
}

void connection::closer::operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
void statement::finalizer::operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }

connection::connection(const std::string& path, mode m, int busy_timeout_ms) : path_(path) {
  configure_once();
  sqlite3* raw = nullptr;
  int flags = (m == mode::read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
  if (m == mode::create) flags |= SQLITE_OPEN_CREATE;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  db_.reset(raw);
  if (rc != SQLITE_OK) {
    if (m != mode::create && (rc & 0xff) == SQLITE_CANTOPEN) {
      throw storage_error("The database '" + path + "' does not exist or cannot be opened: give --database the broker's file.");
    }
    fail(rc, "opening it");
  }
  sqlite3_busy_timeout(raw, busy_timeout_ms);
  sqlite3_extended_result_codes(raw, 1);
}

void connection::fail(int rc, std::string_view doing) const {
  std::string msg = db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
  const int primary = rc & 0xff;
  if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT) {
    throw storage_error("The file '" + path_ + "' is not an SQLite database or is corrupt (" + msg +
                            "); it was left untouched: move it away or give --database another file.",
                        rc);
  }
  if (primary == SQLITE_FULL) {
    throw storage_error("The disk holding the database '" + path_ + "' is full (" + msg + ", while " +
                            std::string(doing) + "): free space on it, or give --database a file on another disk.",
                        rc);
  }
  if (primary == SQLITE_READONLY) {
    throw storage_error("The database '" + path_ + "' can not be written (" + msg + ", while " + std::string(doing) +
                            "): make the file, and the folder that holds it, writable for the broker's user (and "
                            "the file system read-write), or give --database another file.",
                        rc);
  }
  throw storage_error("SQLite failed on '" + path_ + "' while " + std::string(doing) + ": " + msg + ".", rc);
}

void connection::exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  const int rc = sqlite3_exec(db_.get(), s.c_str(), nullptr, nullptr, &err);
  if (err) sqlite3_free(err);
  if (rc != SQLITE_OK) fail(rc, "running " + s.substr(0, 60));
}

std::int64_t connection::changes() const noexcept { return sqlite3_changes64(db_.get()); }
std::int64_t connection::total_changes() const noexcept { return sqlite3_total_changes64(db_.get()); }
std::int64_t connection::last_insert_rowid() const noexcept { return sqlite3_last_insert_rowid(db_.get()); }

statement::statement(connection& db, std::string_view sql) : db_(&db) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db.handle(), sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                    &raw, nullptr);
  stmt_.reset(raw);
  if (rc != SQLITE_OK) db.fail(rc, "preparing " + std::string(sql.substr(0, 60)));
}

statement& statement::bind(int i, std::int64_t v) {
  if (int rc = sqlite3_bind_int64(stmt_.get(), i, v); rc != SQLITE_OK) db_->fail(rc, "binding");
  return *this;
}

statement& statement::bind(int i, std::string_view v) {
  if (int rc = sqlite3_bind_text(stmt_.get(), i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
      rc != SQLITE_OK) {
    db_->fail(rc, "binding");
  }
  return *this;
}

statement& statement::bind(int i, const std::optional<std::string>& v) {
  return v ? bind(i, std::string_view(*v)) : bind_null(i);
}

statement& statement::bind_null(int i) {
  if (int rc = sqlite3_bind_null(stmt_.get(), i); rc != SQLITE_OK) db_->fail(rc, "binding");
  return *this;
}

bool statement::step() {
  const int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3_reset(stmt_.get());
  db_->fail(rc, "running " + std::string(sqlite3_sql(stmt_.get())).substr(0, 60));
}

void statement::run() {
  while (step()) {
  }
  reset();
}

void statement::reset() noexcept {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
}

std::int64_t statement::column_int(int i) const { return sqlite3_column_int64(stmt_.get(), i); }

std::string statement::column_text(int i) const { return std::string(column_view(i)); }

std::string_view statement::column_view(int i) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_.get(), i));
  return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_.get(), i))) : std::string_view();
}

std::optional<std::string> statement::column_optional_text(int i) const {
  if (column_is_null(i)) return std::nullopt;
  return column_text(i);
}

bool statement::column_is_null(int i) const { return sqlite3_column_type(stmt_.get(), i) == SQLITE_NULL; }

transaction::transaction(connection& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

transaction::~transaction() {
  if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace ma::sqlite
