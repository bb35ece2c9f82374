// storage-bench: the Storage issue's figures on this machine.
//   1. bare SQLite: INSERT then DELETE by rowid of 100-byte rows, 1,000 per transaction
//   2. the store: journal then acknowledge 100-byte messages through the asynchronous API,
//      many operations in flight (coroutines on one io_context)
//   3. redelivery: a backlog of 100,000 dead letters for one recipient, read in pages, each
//      letter's attempt recorded as acknowledged; storage time only
// Usage: storage-bench [--messages N] [--backlog N] [--in-flight N] [--runs N] [--synchronous normal|full]
#include <sqlite3.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/store.hpp"

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

struct args {
  int messages = 200'000;
  int backlog = 100'000;
  int in_flight = 2'000;
  int runs = 3;
  bool full = false;
};

std::string temp_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / ("storage-bench-" + std::to_string(::getpid()) + "-" + name);
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + suffix);
  return p.string();
}

void remove_db(const std::string& p) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(p + suffix);
}

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

const std::string body = "{\"message_text\":\"" + std::string(83, 'x') + "\"}";  // 100 bytes

double bare_sqlite(const args& a) {
  const std::string path = temp_db("bare.db");
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
  sqlite3_exec(db, a.full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
  sqlite3_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, uuid TEXT, sender TEXT, receiver TEXT, body TEXT)", nullptr,
               nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_stmt* del = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t (uuid, sender, receiver, body) VALUES (?,?,?,?)", -1, &ins, nullptr);
  sqlite3_prepare_v2(db, "DELETE FROM t WHERE id = ?", -1, &del, nullptr);
  const auto start = clock_type::now();
  std::vector<sqlite3_int64> ids;
  for (int done = 0; done < a.messages; done += 1000) {
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    for (int i = 0; i < 1000; ++i) {
      const std::string uuid = "m" + std::to_string(done + i);
      sqlite3_bind_text(ins, 1, uuid.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(ins, 2, "alice", -1, SQLITE_STATIC);
      sqlite3_bind_text(ins, 3, "bob", -1, SQLITE_STATIC);
      sqlite3_bind_text(ins, 4, body.c_str(), -1, SQLITE_STATIC);
      sqlite3_step(ins);
      sqlite3_reset(ins);
      ids.push_back(sqlite3_last_insert_rowid(db));
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    for (auto id : ids) {
      sqlite3_bind_int64(del, 1, id);
      sqlite3_step(del);
      sqlite3_reset(del);
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    ids.clear();
  }
  const double rate = a.messages / seconds_since(start);
  sqlite3_finalize(ins);
  sqlite3_finalize(del);
  sqlite3_close(db);
  remove_db(path);
  return rate;
}

ma::message_record make_message(int i) {
  ma::message_record m;
  m.message_uuid = "m" + std::to_string(i);
  m.sender = "alice";
  m.body = body;
  m.accepted_at = ma::now_ms();
  m.expires_at = m.accepted_at + std::chrono::hours(1);
  return m;
}

double journal_then_ack(const args& a) {
  const std::string path = temp_db("store.db");
  double rate = 0;
  {
    ma::store s(ma::store::settings{{path, a.full}});
    asio::io_context io;
    int next = 0;
    int acknowledged = 0;
    auto worker = [&]() -> asio::awaitable<void> {
      while (next < a.messages) {
        const int i = next++;
        auto journal = [m = make_message(i)](ma::database& db) { return db.journal(m, "bob"); };
        const auto seq = co_await s.run(std::move(journal));
        co_await s.run([seq](ma::database& db) { db.acknowledge(seq); });
        ++acknowledged;
      }
    };
    const auto start = clock_type::now();
    for (int w = 0; w < a.in_flight; ++w) asio::co_spawn(io, worker(), asio::detached);
    io.run();
    rate = acknowledged / seconds_since(start);
  }
  remove_db(path);
  return rate;
}

double redeliver_backlog(const args& a) {
  const std::string path = temp_db("backlog.db");
  double secs = 0;
  {
    ma::store s(ma::store::settings{{path, a.full}});
    asio::io_context io;
    auto run = [&]() -> asio::awaitable<void> {
      for (int done = 0; done < a.backlog; done += 5000) {
        co_await s.run([done, &a](ma::database& db) {
          for (int i = done; i < std::min(done + 5000, a.backlog); ++i) {
            db.dead_letter_new(make_message(i), "bob", ma::dead_letter_reason::recipient_offline, ma::now_ms());
          }
        });
      }
      // The broker's redelivery: a page at a time (folded: the pump folds before its first page),
      // its acknowledgements recorded as one.
      const auto start = clock_type::now();
      std::int64_t after = 0;
      int delivered = 0;
      for (;;) {
        auto page = co_await s.run([after](ma::database& db) { return db.pending_for("bob", after, 1000, true); });
        if (page.empty()) break;
        after = page.back().seq;
        const auto sent_at = ma::now_ms();
        std::vector<ma::acknowledged_redelivery> acknowledged;
        for (auto& d : page) acknowledged.push_back({d.id, d.attempts + 1, sent_at});
        auto record = [acknowledged = std::move(acknowledged)](ma::database& db) {
          db.record_acknowledged(acknowledged, ma::now_ms());
        };
        co_await s.run(std::move(record));
        delivered += static_cast<int>(page.size());
      }
      secs = seconds_since(start);
      if (delivered != a.backlog) std::fprintf(stderr, "redelivered %d of %d\n", delivered, a.backlog);
    };
    asio::co_spawn(io, run(), asio::detached);
    io.run();
  }
  remove_db(path);
  return secs;
}

struct stats {
  double median, min, max;
};

stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

}  // namespace

const char* const usage = R"(usage: storage-bench [--messages N] [--backlog N] [--in-flight N] [--runs N]
                     [--synchronous normal|full]
The storage figures of docs/performance.md on this machine, each --runs times (default 3):
  1. bare SQLite: INSERT then DELETE by rowid of 100-byte rows, 1,000 per transaction
     (--messages, default 200,000)
  2. the store: journal then acknowledge 100-byte messages through the asynchronous API,
     --in-flight operations at a time (default 2,000)
  3. redelivery: a backlog of --backlog dead letters (default 100,000) for one recipient, read
     in pages, each letter's attempt recorded as acknowledged; storage time only
  --synchronous full   SQLite's synchronous=FULL (default NORMAL)
  --help      this text
  --version   the version
)";

int main(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") return std::fputs(usage, stdout), 0;
    if (flag == "--version") return std::puts("storage-bench " MA_VERSION), 0;
  }
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "storage-bench: %s needs a value (storage-bench --help)\n", k.c_str());
      return 2;
    }
    const int v = std::atoi(argv[i + 1]);
    if (k == "--messages") a.messages = v;
    else if (k == "--backlog") a.backlog = v;
    else if (k == "--in-flight") a.in_flight = v;
    else if (k == "--runs") a.runs = v;
    else if (k == "--synchronous") a.full = std::strcmp(argv[i + 1], "full") == 0;
    else {
      std::fprintf(stderr, "storage-bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  ma::sqlite::configure_once();  // the same SQLite settings for the bare loop and the store
  std::vector<double> bare, ours, backlog;
  for (int r = 0; r < a.runs; ++r) {
    bare.push_back(bare_sqlite(a));
    ours.push_back(journal_then_ack(a));
    backlog.push_back(redeliver_backlog(a));
  }
  const auto b = summarize(bare), o = summarize(ours), d = summarize(backlog);
  std::printf("synchronous=%s, %d runs, 100-byte messages\n", a.full ? "full" : "normal", a.runs);
  std::printf("%-52s %10s %10s %10s\n", "workload", "median", "min", "max");
  std::printf("%-52s %10.0f %10.0f %10.0f  msg/s\n", "bare SQLite insert+delete by rowid, 1000/txn", b.median, b.min,
              b.max);
  std::printf("%-52s %10.0f %10.0f %10.0f  msg/s\n", "store: journal then acknowledge (async, in flight)", o.median,
              o.min, o.max);
  std::printf("%-52s %10.3f %10.3f %10.3f  s (target < 1 s)\n", "store: redeliver a backlog for one recipient", d.median,
              d.min, d.max);
  return 0;
}
