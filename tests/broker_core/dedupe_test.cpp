#include "broker/core/dedupe.hpp"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdio>

#include <boost/json/parse.hpp>

namespace ma {
namespace {

using namespace std::chrono_literals;
using time_point = dedupe_table::time_point;

const time_point t0 = time_point{} + 1h;
constexpr auto window = 10min;

dedupe_table::entry& accepted(dedupe_table& d, const std::string& key, time_point at) {
  auto& e = d.remember(key, at, window);
  e.done = true;
  e.at = at;
  d.set_status(e, "relayed");
  return e;
}

TEST(Dedupe, APairIsKnownForTheWindowAndForgottenAfter) {
  dedupe_table d(1000);
  accepted(d, dedupe_table::key_of("alice", "u1"), t0);
  ASSERT_NE(d.find(dedupe_table::key_of("alice", "u1")), nullptr);
  EXPECT_EQ(d.find(dedupe_table::key_of("bob", "u1")), nullptr);  // another sender's uuid
  d.forget_old(t0 + window - 1ms, window);
  EXPECT_NE(d.find(dedupe_table::key_of("alice", "u1")), nullptr);
  d.forget_old(t0 + window, window);
  EXPECT_EQ(d.find(dedupe_table::key_of("alice", "u1")), nullptr);
  EXPECT_EQ(d.size(), 0u);
}

TEST(Dedupe, AnAcceptStillBeingCommittedIsNeverForgotten) {
  dedupe_table d(1000);
  auto& pending = d.remember("a\npending", t0, window);  // not done: its commit is under way
  accepted(d, "a\nlater", t0);
  d.forget_old(t0 + 2 * window, window);
  EXPECT_EQ(d.find("a\npending"), &pending);  // the address the commit's completion holds
  EXPECT_NE(d.find("a\nlater"), nullptr);     // behind it, so kept too
  pending.done = true;
  pending.at = t0;
  d.forget_old(t0 + 2 * window, window);
  EXPECT_EQ(d.size(), 0u);
}

TEST(Dedupe, PastTheCapTheOldestGoFirst) {
  dedupe_table d(3);
  for (int i = 0; i < 5; ++i) accepted(d, "a\n" + std::to_string(i), t0 + std::chrono::seconds(i));
  d.forget_old(t0 + 10s, window);
  EXPECT_EQ(d.size(), 2u);  // forgetting stops once below the cap
  EXPECT_EQ(d.find("a\n0"), nullptr);
  EXPECT_NE(d.find("a\n4"), nullptr);
}

TEST(Dedupe, AFailedAcceptLeavesTheUuidFreeAndIsReusedInPlace) {
  dedupe_table d(1000);
  auto& first = d.remember("a\nu", t0, window);
  first.done = first.failed = true;
  first.at = t0;
  d.set_status(first, "x");  // neither of the two: kept as it is
  first.set_first_request_id("r1");
  EXPECT_EQ(first.status(), "x");
  d.set_status(first, "a \"quoted\" status");  // a database edited by hand: still valid JSON
  std::string frame;
  first.append_accepted(frame, "u", true, "");
  EXPECT_EQ(boost::json::parse(frame).at("message_content").at("status"), "a \"quoted\" status") << frame;
  auto& again = d.remember("a\nu", t0 + 1s, window);
  EXPECT_EQ(&again, &first);
  EXPECT_FALSE(again.failed);
  EXPECT_TRUE(again.status().empty());
  EXPECT_EQ(again.rare, nullptr);
  EXPECT_EQ(d.find("a\nu"), &again);  // the map's view of the key still holds
  EXPECT_EQ(d.size(), 1u);
}

// The keys sit back to back in blocks of 16 KiB in the entries' order: across many blocks,
// forgetting the oldest and remembering more, every key still reads as it was written.
TEST(Dedupe, KeysStayIntactAcrossTheirBlocksAsTheOldestAreForgotten) {
  dedupe_table d(1'000'000);
  auto key = [](int i) {
    return dedupe_table::key_of("sender-" + std::to_string(i % 7), std::string(40, 'u') + std::to_string(i));
  };
  for (int i = 0; i < 3000; ++i) accepted(d, key(i), t0 + std::chrono::milliseconds(i));
  d.forget_old(t0 + window + 1500ms, window);  // the first 1,501 go
  EXPECT_EQ(d.size(), 1499u);
  for (int i = 3000; i < 6000; ++i) accepted(d, key(i), t0 + std::chrono::milliseconds(i));
  for (int i = 0; i < 6000; ++i) {
    auto* e = d.find(key(i));
    if (i <= 1500) {
      ASSERT_EQ(e, nullptr) << i;
    } else {
      ASSERT_NE(e, nullptr) << i;
      ASSERT_EQ(e->key.view(), key(i));
    }
  }
  d.forget_old(t0 + 2 * window, window);
  EXPECT_EQ(d.size(), 0u);
  EXPECT_EQ(d.bytes(), 0u);
  // A pair longer than a key can be (never, once validated) is cut, not written past the buffer.
  char buf[dedupe_table::max_key_chars];
  EXPECT_EQ(dedupe_table::key_in(buf, std::string(100, 's'), std::string(200, 'u')).size(), sizeof buf);
  EXPECT_EQ(dedupe_table::key_in(buf, "alice", "u1"), "alice\nu1");
}

TEST(Dedupe, PastItsBytesTheOldestGoFirstAndTheCountStaysExact) {
  dedupe_table t(1000, 10'000);
  const auto t0 = std::chrono::steady_clock::time_point(std::chrono::hours(1));
  const std::string big(3000, 's');
  for (int i = 0; i < 5; ++i) {
    auto& e = t.remember(dedupe_table::key_of("alice", "m" + std::to_string(i)), t0, std::chrono::minutes(10));
    t.set_status(e, big);
    e.done = true;
    e.at = t0;
  }
  t.forget_old(t0, std::chrono::minutes(10));
  EXPECT_LE(t.bytes(), 10'000u);
  EXPECT_EQ(t.size(), 3u) << "three fit in 10,000 bytes";
  EXPECT_EQ(t.find(dedupe_table::key_of("alice", "m0")), nullptr) << "the oldest went first";
  EXPECT_NE(t.find(dedupe_table::key_of("alice", "m4")), nullptr);
  t.forget_old(t0 + std::chrono::minutes(11), std::chrono::minutes(10));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.bytes(), 0u);
}

// The byte bound is only as good as the count: what the table says it takes is what the heap
// gave it, measured with mallinfo2 over 100,000 entries of a 12-character sender and a 36-character
// uuid (about 130 bytes a pair: the default bounds, 2,000,000 pairs and 256 MiB, then meet; at
// 100,000 accepted messages a second, the dedupe window is about 20 s, not 10 minutes).
TEST(Dedupe, ItsByteCountIsWhatItsEntriesTakeFromTheHeap) {
  // In use from the heap, and in blocks of their own (the map's arrays, past malloc's mmap threshold).
  const auto heap = [] {
    const auto m = ::mallinfo2();
    return static_cast<double>(m.uordblks + m.hblkhd);
  };
  const double before = heap();
  if (before == 0) GTEST_SKIP() << "mallinfo2 does not see this allocator (a sanitizer's)";
  constexpr int n = 100'000;
  dedupe_table t(10 * n, std::size_t{1} << 40);
  for (int i = 0; i < n; ++i) {
    char uuid[37];
    std::snprintf(uuid, sizeof uuid, "%08x-0000-4000-8000-%012d", i, i);
    auto& e = t.remember(dedupe_table::key_of("sender-00042", uuid), t0, std::chrono::minutes(10));
    t.set_status(e, "relayed");
    e.done = true;
    e.at = t0;
  }
  const double taken = heap() - before;
  const double per_entry = taken / n;
  std::printf("dedupe: %.0f bytes per entry from the heap, %.0f counted\n", per_entry,
              static_cast<double>(t.bytes()) / n);
  EXPECT_NEAR(static_cast<double>(t.bytes()), taken, taken * 0.2);
}

// A direct message's status is kept as a code, and says the same as the text it stands for.
TEST(Dedupe, ADirectMessagesStatusIsACode) {
  dedupe_table d(10);
  auto& e = d.remember("a\nm", t0, window);
  d.set_direct_status(e, false);
  EXPECT_EQ(e.status(), "dead_lettered");
  EXPECT_EQ(e.status_json(), "dead_lettered");
  const std::size_t bytes = d.bytes();
  d.set_status(e, "relayed");
  EXPECT_EQ(e.status(), "relayed");
  EXPECT_EQ(e.rare, nullptr) << "nothing kept aside for one of the two";
  EXPECT_EQ(d.bytes(), bytes);
  std::string frame;
  e.append_accepted(frame, "m", false, "");
  EXPECT_NE(frame.find(R"("status":"relayed","duplicate":false)"), std::string::npos) << frame;
}

TEST(Dedupe, TheAnswerSaysDuplicateAndTheFirstStatuses) {
  dedupe_table d(10);
  auto& e = accepted(d, "a\nm", t0);
  e.many = true;
  std::string statuses;
  dedupe_table::add_status(statuses, "bob", true);
  d.set_status(e, statuses);
  std::string frame;
  e.append_accepted(frame, "m", true, "r1");
  EXPECT_NE(frame.find(R"("duplicate":true)"), std::string::npos) << frame;
  EXPECT_NE(frame.find(R"("recipients":[{"receiver_username":"bob")"), std::string::npos) << frame;
  EXPECT_NE(frame.find(R"("request_id":"r1")"), std::string::npos) << frame;
}

// A fan-out's statuses are kept compactly: a name and two bytes a recipient, not the ~45 bytes
// of the recipients array, and they expand to that array and read back from it unchanged.
TEST(Dedupe, AFanOutsStatusesAreKeptCompactly) {
  std::string compact;
  for (int i = 0; i < 1000; ++i) dedupe_table::add_status(compact, "member-" + std::to_string(i), i % 3 != 0);
  std::string json;
  dedupe_table::append_recipients_json(json, compact);
  EXPECT_LT(compact.size() * 4, json.size()) << compact.size() << " compact, " << json.size() << " as JSON";
  auto array = boost::json::parse(json).as_array();
  ASSERT_EQ(array.size(), 1000u);
  EXPECT_EQ(array[0].at("receiver_username"), "member-0");
  EXPECT_EQ(array[0].at("status"), "dead_lettered");
  EXPECT_EQ(array[1].at("status"), "relayed");
  EXPECT_EQ(dedupe_table::from_recipients_json(json), compact);
  EXPECT_EQ(dedupe_table::from_recipients_json("not json"), "");
  std::string empty;
  dedupe_table::append_recipients_json(empty, "");
  EXPECT_EQ(empty, "[]");
}

}  // namespace
}  // namespace ma
