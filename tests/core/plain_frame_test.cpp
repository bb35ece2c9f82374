// decode() reads plain message and acknowledge_message frames without a JSON tree, and
// everything else through the full decoder. These tests hold the two to the same answer for
// every frame: the shortcut's own cases, their variants, every cut of them, and random edits.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/request.hpp"

namespace ma {
namespace {

constexpr std::size_t max_message = 4096;

// The same request, field by field, or the same error.
void expect_same(const result<request>& a, const result<request>& b, const std::string& frame) {
  ASSERT_EQ(a.ok(), b.ok()) << frame;
  if (!a.ok()) {
    EXPECT_EQ(a.error().code, b.error().code) << frame;
    EXPECT_EQ(a.error().text, b.error().text) << frame;
    EXPECT_EQ(a.error().request_id, b.error().request_id) << frame;
    EXPECT_EQ(a.error().message_uuid, b.error().message_uuid) << frame;
    return;
  }
  const request &x = *a, &y = *b;
  EXPECT_EQ(x.k, y.k) << frame;
  EXPECT_EQ(x.request_id, y.request_id) << frame;
  EXPECT_EQ(x.username, y.username) << frame;
  EXPECT_EQ(x.password, y.password) << frame;
  EXPECT_EQ(x.heartbeat_interval_ms, y.heartbeat_interval_ms) << frame;
  EXPECT_EQ(x.sender_port, y.sender_port) << frame;
  EXPECT_EQ(x.send_only, y.send_only) << frame;
  EXPECT_EQ(x.receive_window, y.receive_window) << frame;
  EXPECT_EQ(x.message_uuid, y.message_uuid) << frame;
  EXPECT_EQ(x.receivers, y.receivers) << frame;
  EXPECT_EQ(x.ttl_ms, y.ttl_ms) << frame;
  EXPECT_EQ(x.body, y.body) << frame;
  EXPECT_EQ(x.group_name, y.group_name) << frame;
  EXPECT_EQ(x.members, y.members) << frame;
  EXPECT_EQ(x.ack_uuids, y.ack_uuids) << frame;
  EXPECT_EQ(x.ack_sender, y.ack_sender) << frame;
}

// Decodes frame both ways; returns true if the shortcut read it.
bool check(request_decoder& d, const std::string& frame) {
  const auto before = d.plain_frames();
  const auto fast = d.decode(frame);
  const auto full = d.decode_in_full(frame);
  expect_same(fast, full, frame);
  return d.plain_frames() != before;
}

const std::vector<std::string> plain = {
    R"({"message_id":"send_message","message_content":{"receiver_username":"bob","message_uuid":"u-1","message_text":"hello"}})",
    R"({"message_id":"send_message","message_content":{"message_text":"caf\u00e9 \u20ac","receiver_username":"b.o_b-9","ttl_ms":60000,"request_id":"r 1"}})",
    " { \"message_id\" : \"send_message\" ,\t\"message_content\" : { \"receiver_username\" : \"bob\" , \"message_text\" : \"\" , \"ttl_ms\" : 0 } } \r",
    R"({"message_id":"acknowledge_message","message_content":{"message_uuids":["u-1","a:b.c_d-e"]}})",
    R"({"message_id":"acknowledge_message","message_content":{"message_uuid":"u-0","message_uuids":["u-1"],"sender_username":"alice","request_id":"x"}})",
    R"({"message_id":"acknowledge_message","message_content":{"message_uuid":"only"}})",
    R"({"message_id":"multicast_message","message_content":{"receiver_usernames":["bob","carol","bob"],"message_text":"m","ttl_ms":5}})",
    R"({"message_id":"broadcast_message","message_content":{"message_text":"to all","message_uuid":"b-1"}})",
    R"({"message_id":"group_message","message_content":{"group_name":"ops","message_text":"g","request_id":"7"}})",
};

TEST(PlainFrame, TheCommonFramesTakeTheShortcutAndReadAsTheFullDecoderReadsThem) {
  request_decoder d(max_message);
  std::vector<std::string> frames = plain;
  frames[1].replace(frames[1].find("caf\\u00e9 \\u20ac"), 16, "caf\xc3\xa9 \xe2\x82\xac");  // UTF-8 as it is
  for (const auto& f : frames) EXPECT_TRUE(check(d, f)) << f;
  const auto r = d.decode(frames[0]);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"message_text":"hello"})");
  EXPECT_EQ(r->receivers, usernames{"bob"});
  EXPECT_EQ(d.decode(frames[4])->ack_uuids, (std::vector<std::string>{"u-0", "u-1"}));
  EXPECT_EQ(d.decode(frames[6])->receivers, (usernames{"bob", "carol"}));  // repeats go
  EXPECT_EQ(d.decode(frames[8])->group_name, "ops");
}

// What the shortcut leaves to the full decoder, valid or not: the same answer either way.
TEST(PlainFrame, EverythingElseIsTheFullDecodersAnswer) {
  request_decoder d(max_message);
  const std::string send = R"({"message_id":"send_message","message_content":{)";
  const std::vector<std::string> others = {
      send + R"("receiver_username":"bob","message_text":"a\"b"}})",              // an escape
      send + R"("receiver_username":"bob","message_text":"a\u0041"}})",           // another
      send + "\"receiver_username\":\"bob\",\"message_text\":\"a\x01\"}}",         // a control byte
      send + "\"receiver_username\":\"bob\",\"message_text\":\"\xff\"}}",          // not UTF-8
      send + "\"receiver_username\":\"bob\",\"message_text\":\"\xed\xa0\x80\"}}",  // a surrogate
      send + "\"receiver_username\":\"bob\",\"message_text\":\"\xc0\xaf\"}}",      // overlong
      send + "\"receiver_username\":\"b\xc3\xb6\",\"message_text\":\"x\"}}",       // a name not ASCII
      send + R"("receiver_username":"bob","message_text":"x","payload":{"a":1}}})",
      send + R"("receiver_username":"bob","message_text":null}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":null}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":007}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":1.5}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":1e3}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":-1}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":99999999999999999999}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":3153600000001}})",
      send + R"("receiver_username":"bob","message_text":"x","ttl_ms":"5"}})",
      send + R"("receiver_username":"bob","receiver_username":"carol","message_text":"x"}})",  // twice
      send + R"("receiver_username":"bob","message_text":"x","extra":true}})",
      send + R"("receiver_username":"","message_text":"x"}})",
      send + R"("receiver_username":")" + std::string(65, 'a') + R"(","message_text":"x"}})",
      send + R"("receiver_username":"bob","message_uuid":")" + std::string(129, '1') + R"(","message_text":"x"}})",
      send + R"("receiver_username":"bob","message_uuid":"a/b","message_text":"x"}})",
      send + R"("receiver_username":"bob","request_id":")" + std::string(257, 'r') + R"(","message_text":"x"}})",
      send + R"("receiver_username":"bob","message_text":")" + std::string(max_message, 'x') + R"("}})",
      send + R"("receiver_username":"bob","message_text":")" + std::string(max_message - 40, 'x') + R"("}})",
      send + R"("receiver_username":"bob"}})",
      send + R"("message_text":"x"}})",
      send + R"(}})",
      send + R"("receiver_username":"bob","message_text":"x"},"more":1})",
      send + R"("receiver_username":"bob","message_text":"x"}} x)",
      send + R"("receiver_username":"bob","message_text":"x",}})",
      R"({"message_content":{"receiver_username":"bob","message_text":"x"},"message_id":"send_message"})",
      R"({"message_id":"multicast_message","message_content":{"receiver_usernames":[],"message_text":"x"}})",
      R"({"message_id":"multicast_message","message_content":{"receiver_usernames":["bob","al ice"],"message_text":"x"}})",
      R"({"message_id":"multicast_message","message_content":{"receiver_usernames":["bob",2],"message_text":"x"}})",
      R"({"message_id":"multicast_message","message_content":{"receiver_usernames":"bob","message_text":"x"}})",
      R"({"message_id":"multicast_message","message_content":{"receiver_username":"bob","message_text":"x"}})",
      R"({"message_id":"multicast_message","message_content":{"message_text":"x"}})",
      R"({"message_id":"group_message","message_content":{"group_name":"o/ps","message_text":"x"}})",
      R"({"message_id":"group_message","message_content":{"message_text":"x"}})",
      R"({"message_id":"broadcast_message","message_content":{"receiver_username":"bob","message_text":"x"}})",
      R"({"message_id":"broadcast_message","message_content":{"message_uuids":["a"],"message_text":"x"}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuid":"u","message_text":"x"}})",
      R"({"message_id":"heartbeat","message_content":{}})",
      R"({"message_id":"log_in","message_content":{"sender_username":"bob"}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuids":[]}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuids":["ok","a/b"]}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuids":["ok",1]}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuids":"ok"}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuids":["a"],"message_uuids":["b"]}})",
      R"({"message_id":"acknowledge_message","message_content":{"sender_username":"alice"}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuid":"u","sender_username":"al ice"}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuid":"u","receiver_username":"bob"}})",
      R"({"message_id":"acknowledge_message","message_content":{"message_uuid":null,"message_uuids":["u"]}})",
      R"({"message_id":"acknowledge_message","message_content":{}})",
      R"({"message_id":"acknowledge_message"})",
      R"({"message_id":"send_message","message_content":[]})",
      R"([])",
      "",
  };
  for (const auto& f : others) EXPECT_FALSE(check(d, f)) << f;
  // At the limits, a step inside those above: read plainly.
  for (const auto& f : {send + R"("receiver_username":")" + std::string(64, 'a') + R"(","message_text":"x"}})",
                        send + R"("receiver_username":"bob","message_uuid":")" + std::string(128, '1') +
                            R"(","message_text":"x"}})",
                        send + R"("receiver_username":"bob","request_id":")" + std::string(256, 'r') +
                            R"(","message_text":"x"}})"}) {
    EXPECT_TRUE(check(d, f)) << f;
  }
}

// Every frame cut short at every byte, and every frame with one byte changed at every place:
// never an answer that differs from the full decoder's.
TEST(PlainFrame, EveryCutAndEveryEditGetsTheFullDecodersAnswer) {
  request_decoder d(max_message);
  const std::string edits = "\"\\{}[],: 0a9-.e\x01\x7f\xc3\xff";
  int plain_read = 0;
  for (const auto& f : plain) {
    for (std::size_t n = 0; n < f.size(); ++n) check(d, f.substr(0, n));
    for (std::size_t at = 0; at < f.size(); ++at) {
      for (char c : edits) {
        std::string g = f;
        g[at] = c;
        plain_read += check(d, g) ? 1 : 0;
        g = f;
        g.insert(at, 1, c);
        plain_read += check(d, g) ? 1 : 0;
      }
    }
  }
  EXPECT_GT(plain_read, 100);  // the shortcut read many of them: the comparison was not empty
  std::mt19937 random(15);
  for (int i = 0; i < 20'000; ++i) {
    std::string g = plain[static_cast<std::size_t>(random()) % plain.size()];
    for (int e = 0; e < 3; ++e) {
      g[static_cast<std::size_t>(random()) % g.size()] = edits[static_cast<std::size_t>(random()) % edits.size()];
    }
    check(d, g);
  }
}

}  // namespace
}  // namespace ma
