// A child journals messages in a loop and is killed with SIGKILL at a random moment. Reopened,
// every operation the child saw complete is there, and no operation is half there.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>

#include <map>
#include <random>
#include <set>

#include "storage/store.hpp"
#include "tests/support/temp_dir.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;

constexpr int recipients_per_message = 3;

[[noreturn]] void child_main(const std::string& path, int out_fd) {
  try {
    store s(store::settings{{path}});
    for (int i = 0;; ++i) {
      message_record m;
      m.message_uuid = "m" + std::to_string(i);
      m.sender = "alice";
      m.body = "{\"message_text\":\"" + std::string(100, 'x') + "\"}";
      m.accepted_at = now_ms();
      m.expires_at = m.accepted_at + 1h;
      const std::string line = m.message_uuid + "\n";
      s.submit(
          [m](database& db) {
            const auto id = db.insert_message(m, recipients_per_message);
            for (int r = 0; r < recipients_per_message; ++r) db.journal(id, "r" + std::to_string(r));
          },
          [out_fd, line](std::exception_ptr e) {
            if (!e) (void)!::write(out_fd, line.data(), line.size());
          });
      if (i % 64 == 0) std::this_thread::sleep_for(100us);
    }
  } catch (...) {
    ::_exit(3);
  }
}

TEST(StorageCrash, KilledMidStreamLosesNothingCompletedAndShowsNothingHalfWritten) {
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < 12; ++round) {
    test::temp_dir dir;
    const std::string path = dir.file("crash.db");
    { database init({path}); }  // created before the child starts
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      child_main(path, fds[1]);
    }
    ::close(fds[1]);
    std::set<std::string> completed;
    std::string partial;
    auto drain = [&](int timeout_ms) {
      pollfd p{fds[0], POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      char buf[65536];
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) return false;
      partial.append(buf, static_cast<std::size_t>(n));
      std::size_t pos;
      while ((pos = partial.find('\n')) != std::string::npos) {
        completed.insert(partial.substr(0, pos));
        partial.erase(0, pos + 1);
      }
      return true;
    };
    // Killed at a random moment once the stream is under way (a loaded machine may take a
    // while to open the store and commit the first batch).
    const auto started_by = std::chrono::steady_clock::now() + 20s;
    while (completed.empty() && std::chrono::steady_clock::now() < started_by) drain(5);
    const auto kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(rng() % 400);
    while (std::chrono::steady_clock::now() < kill_at) drain(5);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status)) << "the child ended by itself, status " << status;
    while (drain(0)) {
    }
    ::close(fds[0]);

    database db({path, false, false});
    std::map<std::string, int> rows;
    sqlite::statement s(db.connection(), "SELECT message_uuid, count(*) FROM in_flight GROUP BY message_uuid");
    while (s.step()) rows[s.column_text(0)] = static_cast<int>(s.column_int(1));
    for (const auto& uuid : completed) {
      ASSERT_EQ(rows[uuid], recipients_per_message) << "round " << round << ": completed " << uuid << " is missing";
    }
    for (const auto& [uuid, count] : rows) {
      ASSERT_EQ(count, recipients_per_message) << "round " << round << ": " << uuid << " is half written";
    }
    EXPECT_GT(completed.size(), 0u) << "round " << round;
    EXPECT_GE(rows.size(), completed.size());
  }
}

}  // namespace
}  // namespace ma
