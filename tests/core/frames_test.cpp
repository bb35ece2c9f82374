#include "core/frames.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "core/encode.hpp"

namespace ma {
namespace {

namespace json = boost::json;

json::object parse_frame(const std::string& f, std::string_view kind) {
  EXPECT_EQ(f.back(), '\n');
  EXPECT_EQ(f.find('\n'), f.size() - 1) << "one frame, one line";
  auto v = json::parse(f).as_object();
  EXPECT_EQ(v.at("message_id").as_string(), kind);
  return v.at("message_content").as_object();
}

const message_header header{"u-1", "alice", channel::group, "ops", "2026-11-26T07:06:11.123Z",
                            R"({"message_text":"hi \"there\"","payload":{"n":[1,2]}})"};

TEST(Frames, LiveFrameCarriesEveryField) {
  std::string out;
  append_live_frame(out, header, "bob");
  auto c = parse_frame(out, "receive_message");
  EXPECT_EQ(c.at("message_uuid").as_string(), "u-1");
  EXPECT_EQ(c.at("sender_username").as_string(), "alice");
  EXPECT_EQ(c.at("receiver_username").as_string(), "bob");
  EXPECT_EQ(c.at("channel").as_string(), "group");
  EXPECT_EQ(c.at("group_name").as_string(), "ops");
  EXPECT_EQ(c.at("sent_at").as_string(), "2026-11-26T07:06:11.123Z");
  EXPECT_FALSE(c.at("redelivery").as_bool());
  EXPECT_EQ(c.at("attempt").as_int64(), 1);
  EXPECT_EQ(c.at("message_text").as_string(), "hi \"there\"");
  EXPECT_EQ(c.at("payload").at("n").as_array().size(), 2u);
}

TEST(Frames, SharedPartsMakeTheSameFrameAsTheWholeOne) {
  const auto parts = make_receive_frame(header);
  std::string shared = parts.head;
  append_json_string(shared, "bob");
  shared += parts.tail;
  std::string whole;
  append_live_frame(whole, header, "bob");
  EXPECT_EQ(shared, whole);
}

TEST(Frames, RedeliveryFrame) {
  std::string frame;
  append_redelivery_frame(frame, header, "bob", 3, "ack_timeout");
  auto c = parse_frame(frame, "receive_message");
  EXPECT_TRUE(c.at("redelivery").as_bool());
  EXPECT_EQ(c.at("attempt").as_int64(), 3);
  EXPECT_EQ(c.at("dead_letter_reason").as_string(), "ack_timeout");
}

TEST(Frames, ReportsAppendOneAfterAnother) {
  std::string out;
  append_accepted_frame(out, "u-1", "relayed", false, "r1");
  append_accepted_many_frame(out, "u-2", R"([{"receiver_username":"bob","status":"dead_lettered"}])", true, "");
  append_delivered_frame(out, "u-1", "bob", "2026-11-26T07:06:11.123Z");
  append_dead_lettered_frame(out, "u-3", "carol", "queue_overflow");
  std::vector<std::string> lines;
  for (std::size_t start = 0, nl; (nl = out.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(out.substr(start, nl - start + 1));
  }
  ASSERT_EQ(lines.size(), 4u);
  auto a = parse_frame(lines[0], "message_accepted");
  EXPECT_EQ(a.at("status").as_string(), "relayed");
  EXPECT_FALSE(a.at("duplicate").as_bool());
  EXPECT_EQ(a.at("request_id").as_string(), "r1");
  auto many = parse_frame(lines[1], "message_accepted");
  EXPECT_TRUE(many.at("duplicate").as_bool());
  EXPECT_FALSE(many.contains("request_id"));
  EXPECT_EQ(many.at("recipients").as_array()[0].at("status").as_string(), "dead_lettered");
  EXPECT_EQ(parse_frame(lines[2], "message_delivered").at("receiver_username").as_string(), "bob");
  EXPECT_EQ(parse_frame(lines[3], "message_dead_lettered").at("reason").as_string(), "queue_overflow");
}

}  // namespace
}  // namespace ma
