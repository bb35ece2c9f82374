// The benchmarks' line reader (bench/processes.hpp), over a socket pair.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "bench/processes.hpp"

namespace ma::bench {
namespace {

// A broker may write a redelivery's first frames right behind acknowledge_log_in: the client
// reads them together, and wait_for must leave those for read_some. (It dropped them: W6's
// receiver then waited for letters it had been sent, until the broker evicted it.)
TEST(LineReader, TheLinesAfterTheAwaitedOneInTheSameReadAreKept) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  write_all(fds[1], "before\nack\nfirst\nsecond\nthird");
  line_reader r(fds[0]);
  EXPECT_EQ(r.wait_for("ack", 5000), "ack");
  std::vector<std::string> lines;
  auto keep = [&](std::string_view l) { lines.emplace_back(l); };
  ASSERT_TRUE(r.read_some(keep, 5000)) << "the two complete lines wait: no read needed";
  EXPECT_EQ(lines, (std::vector<std::string>{"first", "second"}));
  lines.clear();
  write_all(fds[1], "\n");
  ASSERT_TRUE(r.read_some(keep, 5000));
  EXPECT_EQ(lines, std::vector<std::string>{"third"});
  ::close(fds[1]);
  EXPECT_FALSE(r.read_some(keep, 5000)) << "closed";
  ::close(fds[0]);
}

}  // namespace
}  // namespace ma::bench
