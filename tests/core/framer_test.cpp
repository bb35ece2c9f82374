#include "core/framer.hpp"

#include <gtest/gtest.h>
#include <malloc.h>

#include <random>
#include <string>
#include <vector>

namespace ma {
namespace {

std::vector<std::string> feed_all(line_framer& f, std::string_view bytes, bool* ok = nullptr) {
  std::vector<std::string> frames;
  const bool good = f.feed(bytes, [&](std::string_view line) { frames.emplace_back(line); });
  if (ok) *ok = good;
  return frames;
}

TEST(Framer, ManyFramesInOneRead) {
  line_framer f(1024);
  auto frames = feed_all(f, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0], "{\"a\":1}");
  EXPECT_EQ(frames[2], "{\"c\":3}");
  EXPECT_EQ(f.buffered(), 0u);
}

TEST(Framer, CrLfAndEmptyLinesAreHandled) {
  line_framer f(1024);
  auto frames = feed_all(f, "\n\r\n{\"a\":1}\r\n\n\n{\"b\":2}\n\r\n");
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0], "{\"a\":1}");
  EXPECT_EQ(frames[1], "{\"b\":2}");
}

TEST(Framer, PartialFrameWaitsForItsEnd) {
  line_framer f(1024);
  EXPECT_TRUE(feed_all(f, "{\"a\":").empty());
  EXPECT_EQ(f.buffered(), 5u);
  auto frames = feed_all(f, "1}\n{\"b\"");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0], "{\"a\":1}");
  EXPECT_EQ(f.buffered(), 4u);
}

TEST(Framer, EverySplitOfAMultiFrameStreamGivesTheSameFrames) {
  const std::string stream = "{\"message_id\":\"heartbeat\"}\r\n\n{\"x\":\"y\"}\n{\"z\":[1,2,3]}\n";
  const std::vector<std::string> expected = {"{\"message_id\":\"heartbeat\"}", "{\"x\":\"y\"}", "{\"z\":[1,2,3]}"};
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    for (std::size_t j = i; j <= stream.size(); ++j) {
      line_framer f(64, 64);
      std::vector<std::string> frames = feed_all(f, std::string_view(stream).substr(0, i));
      for (auto& s : feed_all(f, std::string_view(stream).substr(i, j - i))) frames.push_back(s);
      for (auto& s : feed_all(f, std::string_view(stream).substr(j))) frames.push_back(s);
      EXPECT_EQ(frames, expected) << "split at " << i << " and " << j;
    }
  }
}

TEST(Framer, ByteAtATime) {
  const std::string stream = "{\"a\":1}\n{\"bb\":22}\r\n";
  line_framer f(16, 64);
  std::vector<std::string> frames;
  for (char c : stream) {
    for (auto& s : feed_all(f, std::string_view(&c, 1))) frames.push_back(s);
  }
  EXPECT_EQ(frames, (std::vector<std::string>{"{\"a\":1}", "{\"bb\":22}"}));
}

TEST(Framer, FrameAtTheLimitPassesOneByteMoreFails) {
  {
    line_framer f(10, 64);
    auto frames = feed_all(f, std::string(10, 'x') + "\r\n");
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].size(), 10u);
  }
  {
    line_framer f(10, 64);
    bool ok = true;
    auto frames = feed_all(f, "{}\n" + std::string(11, 'x') + "\n{}\n", &ok);
    EXPECT_FALSE(ok);
    EXPECT_EQ(frames.size(), 1u);  // the frame before it still came out
    EXPECT_TRUE(f.failed());
    EXPECT_TRUE(f.prepare().empty());
  }
}

TEST(Framer, UnterminatedOversizeIsReportedWithoutBufferingPastTheLimit) {
  const std::size_t limit = 1000;
  line_framer f(limit, 256);
  std::size_t fed = 0;
  bool too_large = false;
  while (fed < 100 * limit && !too_large) {
    auto space = f.prepare();
    ASSERT_FALSE(space.empty());
    std::fill(space.begin(), space.end(), 'x');
    f.commit(space.size());
    fed += space.size();
    EXPECT_LE(f.buffered(), limit + 2);
    for (;;) {
      auto r = f.next();
      if (r.st == line_framer::status::too_large) { too_large = true; break; }
      ASSERT_NE(r.st, line_framer::status::frame);
      if (r.st == line_framer::status::need_more) break;
    }
  }
  EXPECT_TRUE(too_large);
  EXPECT_LE(fed, limit + 2);
}

TEST(Framer, RandomBytesNeverCrashAndNeverExceedTheLimit) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 200; ++round) {
    line_framer f(128, 64);
    std::string chunk;
    for (int i = 0; i < 50 && !f.failed(); ++i) {
      chunk.resize(rng() % 200);
      for (char& c : chunk) c = static_cast<char>(rng() % 4 == 0 ? '\n' : rng() % 256);
      f.feed(chunk, [&](std::string_view line) {
        EXPECT_LE(line.size(), 128u);
        EXPECT_FALSE(line.empty());
        EXPECT_EQ(line.find('\n'), std::string_view::npos);
      });
      EXPECT_LE(f.buffered(), 130u);
    }
  }
}

TEST(Framer, InvalidUtf8IsPassedThroughForTheParserToReject) {
  line_framer f(64);
  auto frames = feed_all(f, std::string("\xff\xfe{\"a\":\"\xc3\x28\"}\n"));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0], std::string("\xff\xfe{\"a\":\"\xc3\x28\"}"));
}

TEST(Framer, ReleaseIfIdleFreesOnlyAnEmptyBuffer) {
  line_framer f(1024);
  feed_all(f, "{\"a\":");
  f.release_if_idle();
  EXPECT_EQ(f.buffered(), 5u);
  auto frames = feed_all(f, "1}\n");
  ASSERT_EQ(frames.size(), 1u);
  f.release_if_idle();
  EXPECT_EQ(f.buffered(), 0u);
  EXPECT_EQ(feed_all(f, "{}\n").size(), 1u);
}

// A limit below the read size bounds the buffer: before log_in the broker's limit is 16 KiB and
// its reads 32 KiB, and a connection that sends part of a line holds no more than the limit.
// (The buffer was the read size, whatever the limit, though no byte past the limit is read into.)
TEST(Framer, ALimitBelowTheReadSizeBoundsTheBuffer) {
  const auto heap = [] { return ::mallinfo2().uordblks; };
  if (heap() == 0) GTEST_SKIP() << "mallinfo2 does not see this allocator (a sanitizer's)";
  const std::size_t before = heap();
  line_framer f(16 * 1024, 32 * 1024);
  EXPECT_EQ(f.prepare().size(), 16u * 1024 + 2);
  EXPECT_LT(heap() - before, 17u * 1024);
  f.set_max_frame_bytes(1 << 20);  // logged in: reads of 32 KiB
  feed_all(f, "{}\n");
  f.release_if_idle();
  EXPECT_EQ(f.prepare().size(), 32u * 1024);
}

TEST(Framer, LargeFrameGrowsTheBufferUpToTheLimit) {
  line_framer f(1 << 20, 1024);
  const std::string big = "\"" + std::string((1 << 20) - 2, 'y') + "\"";
  auto frames = feed_all(f, big + "\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].size(), big.size());
}

// The framer keeps its offsets in 32 bits: a limit past what they hold is cut to what they do,
// never wrapped around to a small one.
TEST(Framer, ALimitPastThirtyTwoBitsIsCutNotWrapped) {
  for (std::size_t limit : {std::size_t{1} << 32, (std::size_t{1} << 32) + 10, std::size_t{1} << 40}) {
    line_framer f(limit, 1024);
    const std::string line(100'000, 'x');  // longer than a wrapped limit of 0 or 10 would allow
    bool ok = false;
    auto frames = feed_all(f, line + "\n", &ok);
    EXPECT_TRUE(ok) << limit;
    ASSERT_EQ(frames.size(), 1u) << limit;
    EXPECT_EQ(frames[0].size(), line.size());
  }
  line_framer after(64, 1024);
  after.set_max_frame_bytes(std::size_t{1} << 32);
  EXPECT_EQ(feed_all(after, std::string(1000, 'y') + "\n").size(), 1u);
}

}  // namespace
}  // namespace ma
