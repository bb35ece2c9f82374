#include "core/replies.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include <boost/json/parse.hpp>

// Counts the calls to operator new made on a thread while counting is on: a reply's cost in
// allocations is what a login storm leaves in the heap.
namespace {
thread_local bool counting = false;
thread_local std::size_t allocations = 0;
}  // namespace

// g++ 12 takes free() on what this operator new returned for a mismatch.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (counting) ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace ma {
namespace {

namespace json = boost::json;

std::vector<std::string> names(std::size_t n) {
  std::vector<std::string> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back("agent-with-a-long-name-" + std::to_string(100000 + i));
  return v;
}

json::object content_of(const std::string& frame) {
  EXPECT_EQ(frame.back(), '\n');
  auto v = json::parse(frame);
  return v.as_object().at("message_content").as_object();
}

json::array array_of(const std::vector<std::string_view>& v) {
  json::array a;
  for (auto n : v) a.emplace_back(n);
  return a;
}

TEST(Replies, ALogInAcknowledgementCarriesTheListWithoutAnAllocationPerName) {
  const auto owned = names(5000);
  const std::vector<std::string_view> online(owned.begin(), owned.end());
  counting = true;
  allocations = 0;
  const std::string frame = make_log_in_ack({"alice", online, 5000, 30000, 1 << 20, 2, "b1", false, 0, "r-1"});
  const std::size_t made = allocations;
  counting = false;
  EXPECT_LT(made, 50u) << "a string per name would be 5,000";
  auto c = content_of(frame);
  EXPECT_EQ(c.at("user_list"), array_of(online));
  EXPECT_EQ(c.at("sender_username"), "alice");
  EXPECT_EQ(c.at("heartbeat_interval_ms"), 5000);
  EXPECT_EQ(c.at("pending_dead_letters"), 2);
  EXPECT_EQ(c.at("request_id"), "r-1");
}

TEST(Replies, NameListsAreEscapedAndMayBeEmpty) {
  const std::vector<std::string_view> odd{"a\"b", "c\\d", "\xc3\xa9t\xc3\xa9"};
  EXPECT_EQ(content_of(make_user_list(odd, "q")).at("user_list"), array_of(odd));
  EXPECT_EQ(content_of(make_user_list({}, "")), (json::object{{"user_list", json::array()}}));

  const std::vector<std::string> joined{"x\ny"}, left;
  auto update = content_of(make_user_set_update(&odd, 3, joined, left));
  EXPECT_EQ(update.at("user_list"), array_of(odd));
  EXPECT_EQ(update.at("user_count"), 3);
  EXPECT_EQ(update.at("joined"), json::array{"x\ny"});
  EXPECT_FALSE(update.contains("left"));
  EXPECT_FALSE(content_of(make_user_set_update(nullptr, 7000, {}, {})).contains("user_list"));

  EXPECT_EQ(content_of(make_group_ack("ops", nullptr, "")).at("group_members"), json::array());
  const member_set members{"bob", "carol"};
  auto ack = content_of(make_group_ack("ops", &members, "r"));
  EXPECT_EQ(ack.at("group_members"), (json::array{"bob", "carol"}));
  EXPECT_EQ(ack.at("group_name"), "ops");
  EXPECT_EQ(ack.at("request_id"), "r");
}

}  // namespace
}  // namespace ma
