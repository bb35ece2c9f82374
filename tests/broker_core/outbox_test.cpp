#include "broker/core/outbox.hpp"

#include <gtest/gtest.h>

namespace ma {
namespace {

// What a socket would receive if it took n bytes of the gather list.
std::string take(outbox& o, std::size_t n) {
  std::string written;
  for (const auto& b : o.gather()) {
    const std::size_t k = std::min(n - written.size(), b.size());
    written.append(static_cast<const char*>(b.data()), k);
    if (written.size() == n) break;
  }
  o.consume(written.size());
  return written;
}

std::string frame(char c, std::size_t n) { return std::string(n, c) + "\n"; }

TEST(Outbox, SmallFramesShareOneBufferAndComeOutInOrder) {
  outbox o;
  for (char c : std::string("abc")) o.push(frame(c, 10));
  EXPECT_EQ(o.gather().size(), 1u);  // one reused buffer, one piece of the gather list
  EXPECT_EQ(o.bytes(), 33u);
  EXPECT_EQ(take(o, 33), frame('a', 10) + frame('b', 10) + frame('c', 10));
  EXPECT_TRUE(o.empty());
  EXPECT_EQ(o.bytes(), 0u);
}

TEST(Outbox, SmallFramesWrittenLeaveNoBufferBehindButAStreamKeepsItsBuffer) {
  outbox o;
  o.push_shared(std::make_shared<const std::string>(frame('p', 80)));  // presence, to everyone
  EXPECT_EQ(take(o, 81), frame('p', 80));
  o.release_if_small();
  EXPECT_FALSE(o.holds_memory()) << "an idle connection keeps nothing between two presence frames";
  o.push(frame('q', 100));
  take(o, 101);
  o.release_if_small();
  EXPECT_FALSE(o.holds_memory());

  for (int i = 0; i < 20; ++i) o.push(frame('s', 200));  // a stream: its buffer grows past 1 KiB
  take(o, 20 * 201);
  o.release_if_small();
  EXPECT_TRUE(o.holds_memory()) << "the next burst reuses the grown buffer";
  o.push(frame('t', 10));
  o.release_if_small();
  EXPECT_TRUE(o.holds_memory()) << "not while something waits";
  take(o, 11);
  o.release_memory();
  EXPECT_FALSE(o.holds_memory());
}

TEST(Outbox, APartialWriteKeepsTheRestOfEachKindOfPiece) {
  outbox o;
  auto shared = std::make_shared<const std::string>(frame('s', 100));
  o.push("head\n");
  o.push_shared(shared);
  o.push("tail\n");
  EXPECT_EQ(o.gather().size(), 3u);
  std::string out = take(o, 3);          // inside the owned buffer
  out += take(o, 2 + 50);                // into the shared frame
  EXPECT_EQ(shared->size(), 101u);       // the shared frame itself is untouched
  out += take(o, o.bytes());
  EXPECT_EQ(out, "head\n" + frame('s', 100) + "tail\n");
  EXPECT_TRUE(o.empty());
}

TEST(Outbox, LargeFramesArePiecesOfTheirOwn) {
  outbox o;
  o.push("small\n");
  o.push(frame('L', outbox::large_frame));
  o.push("after\n");
  EXPECT_EQ(o.gather().size(), 3u);
  EXPECT_EQ(take(o, o.bytes()), "small\n" + frame('L', outbox::large_frame) + "after\n");
}

// Also: what the writer holds stays where it is while the outbox grows (a short frame's bytes
// used to live inside a string object that moved when the list of pieces grew; ASan saw it).
TEST(Outbox, WhatIsQueuedDuringAnAsynchronousWriteGoesAfterIt) {
  outbox o;
  o.push("first\n");
  const auto gathered = o.gather();  // the writer holds these
  o.writing();
  o.push("second\n");                // not into the buffer being written
  for (int i = 0; i < 100; ++i) o.push_shared(std::make_shared<const std::string>("more\n"));
  EXPECT_EQ(std::string(static_cast<const char*>(gathered[0].data()), gathered[0].size()), "first\n");
  o.consume(gathered[0].size());
  o.written();
  std::string more;
  for (int i = 0; i < 100; ++i) more += "more\n";
  EXPECT_EQ(take(o, o.bytes()), "second\n" + more);
}

TEST(Outbox, ReleasingMemoryOnlyWhenEmpty) {
  outbox o;
  o.push("x\n");
  o.release_memory();  // not empty: nothing happens
  EXPECT_EQ(take(o, 2), "x\n");
  o.release_memory();
  o.push("y\n");
  EXPECT_EQ(take(o, 2), "y\n");
}

}  // namespace
}  // namespace ma
