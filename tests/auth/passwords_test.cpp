#include "auth/passwords.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <limits>
#include <fstream>

#include "core/config.hpp"
#include "tests/support/temp_dir.hpp"

namespace ma {
namespace {

// The lowest cost libsodium takes: the tests check behaviour, not strength.
const password_cost cheap{1, 8};

TEST(Passwords, ARightPasswordVerifiesAndWrongOrUnknownOnesDoNot) {
  std::vector<password_line> lines;
  set_password_line(lines, "alice", hash_password("secret", cheap));
  password_table t(lines, cheap);
  EXPECT_TRUE(t.verify("alice", "secret").ok);
  EXPECT_FALSE(t.verify("alice", "Secret").ok);
  EXPECT_FALSE(t.verify("alice", "").ok);
  EXPECT_FALSE(t.verify("mallory", "secret").ok);
  EXPECT_FALSE(t.verify("alice", "secret").needs_rehash);
}

// An unknown name costs a verification like a wrong password: names can not be probed by time.
TEST(Passwords, AnUnknownNameCostsAboutAsMuchAsAWrongPassword) {
  const password_cost real{2, 16 * 1024};
  std::vector<password_line> lines;
  set_password_line(lines, "alice", hash_password("secret", real));
  password_table t(lines, real);
  // The work done, as this thread's CPU time (not the wall clock, which a loaded machine
  // stretches): the least of five.
  auto cpu_ns = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
  };
  auto time_of = [&](const char* user) {
    long long best = std::numeric_limits<long long>::max();
    for (int i = 0; i < 5; ++i) {
      const auto start = cpu_ns();
      t.verify(user, "guess");
      best = std::min(best, cpu_ns() - start);
    }
    return best;
  };
  const auto wrong = time_of("alice"), unknown = time_of("nobody");
  EXPECT_GT(unknown * 2, wrong) << "an unknown name answered much faster than a known one";
  EXPECT_GT(wrong * 2, unknown);
}

TEST(Passwords, AHashCheaperThanTheConfiguredCostNeedsARehash) {
  std::vector<password_line> lines;
  set_password_line(lines, "alice", hash_password("secret", cheap));
  password_table t(lines, password_cost{2, 16});
  auto v = t.verify("alice", "secret");
  EXPECT_TRUE(v.ok);
  EXPECT_TRUE(v.needs_rehash);
  EXPECT_FALSE(password_table(lines, cheap).verify("alice", "secret").needs_rehash);
}

TEST(Passwords, MalformedLinesAreRefusedNamingTheLine) {
  const std::string good = "alice:" + hash_password("x", cheap);
  auto error_of = [](const std::string& text) {
    try {
      parse_password_file(text, "pw");
    } catch (const config_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of("# users\n" + good + "\nbob\n").find("line 3"), std::string::npos);
  EXPECT_NE(error_of("bad name:" + good.substr(6) + "\n").find("line 1"), std::string::npos);
  EXPECT_NE(error_of("bob:plaintext\n").find("argon2id"), std::string::npos);
  EXPECT_NE(error_of(good + "\n" + good + "\n").find("line 2"), std::string::npos);
  EXPECT_EQ(error_of("# only a comment\n\n" + good + "\r\n"), "");
}

TEST(Passwords, TheFileIsRewrittenAtomicallyKeepingCommentsAndItsMode) {
  test::temp_dir dir;
  const auto path = dir.file("passwords");
  std::vector<password_line> lines = {{{}, {}, "# the users of ops"}};
  set_password_line(lines, "alice", hash_password("a", cheap));
  set_password_line(lines, "bob", hash_password("b", cheap));
  write_password_file(path, lines);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ::chmod(path.c_str(), 0640);
  const bool root = ::geteuid() == 0;
  if (root) {
    ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);  // a service user's file, edited by root
  }
  auto read = read_password_file(path);
  EXPECT_TRUE(set_password_line(read, "alice", ""));
  EXPECT_FALSE(set_password_line(read, "carol", ""));
  write_password_file(path, read);
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u) << "the operator's mode is kept";
  if (root) {
    EXPECT_EQ(st.st_uid, 65534u) << "the owner is kept";
    EXPECT_EQ(st.st_gid, 65534u) << "the group is kept";
  }
  auto again = read_password_file(path);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].text, "# the users of ops");
  EXPECT_EQ(again[1].user, "bob");
  EXPECT_TRUE(password_table(again, cheap).verify("bob", "b").ok);
  EXPECT_FALSE(password_table(again, cheap).verify("alice", "a").ok);
}

}  // namespace
}  // namespace ma
