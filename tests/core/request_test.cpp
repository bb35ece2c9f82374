#include "core/request.hpp"
#include "core/utf8.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "core/duration.hpp"
#include "core/encode.hpp"

namespace ma {
namespace {

std::string frame(std::string_view id, std::string_view content) {
  return "{\"message_id\":\"" + std::string(id) + "\",\"message_content\":" + std::string(content) + "}";
}

// Decodes and expects an error with the given code and a sentence.
protocol_error expect_error(std::string_view text, errc code, std::size_t max_message = 256 * 1024) {
  request_decoder d(max_message);
  auto r = d.decode(text);
  EXPECT_FALSE(r.ok()) << text;
  if (r.ok()) return {};
  EXPECT_EQ(r.error().code, code) << text << " -> " << r.error().text;
  EXPECT_GT(r.error().text.size(), 20u);
  EXPECT_EQ(r.error().text.back(), '.') << r.error().text;
  return r.error();
}

request expect_ok(std::string_view text) {
  request_decoder d(256 * 1024);
  auto r = d.decode(text);
  EXPECT_TRUE(r.ok()) << text << " -> " << (r.ok() ? "" : r.error().text);
  return r.ok() ? std::move(r).value() : request{};
}

TEST(Errc, EveryCodeHasItsWireString) {
  for (errc code : all_errcs) {
    auto back = errc_from_string(to_string(code));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, code);
  }
  EXPECT_EQ(to_string(errc::frame_too_large), "frame_too_large");
  EXPECT_FALSE(errc_from_string("no_such_code"));
  EXPECT_TRUE(closes_connection(errc::frame_too_large));
  EXPECT_TRUE(closes_connection(errc::login_timeout));
  EXPECT_TRUE(closes_connection(errc::heartbeat_timeout));
  EXPECT_TRUE(closes_connection(errc::server_busy));
  EXPECT_FALSE(closes_connection(errc::malformed_json));
  EXPECT_FALSE(closes_connection(errc::username_taken));
}

TEST(Kind, EveryKindHasItsWireString) {
  for (kind k : all_kinds) {
    auto back = kind_from_string(to_string(k));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, k);
  }
  EXPECT_TRUE(is_agent_request(kind::acknowledge_message));
  EXPECT_FALSE(is_agent_request(kind::receive_message));
  EXPECT_FALSE(is_agent_request(kind::discover_broker));
}

TEST(Request, MalformedJson) {
  expect_error("{\"message_id\":", errc::malformed_json);
  expect_error("not json at all", errc::malformed_json);
  expect_error("{\"message_id\":\"heartbeat\"} trailing", errc::malformed_json);
  expect_error(std::string("{\"message_id\":\"log_in\",\"message_content\":{\"sender_username\":\"\xc3\x28\"}}"),
               errc::malformed_json);
}

TEST(Request, InvalidEnvelope) {
  expect_error("[1,2,3]", errc::invalid_envelope);
  expect_error("\"heartbeat\"", errc::invalid_envelope);
  expect_error("{\"message_content\":{}}", errc::invalid_envelope);
  expect_error("{\"message_id\":7,\"message_content\":{}}", errc::invalid_envelope);
  expect_error("{\"message_id\":\"heartbeat\",\"message_content\":[]}", errc::invalid_envelope);
}

TEST(Request, UnknownMessageId) {
  expect_error(frame("fly_to_the_moon", "{}"), errc::unknown_message_id);
  auto e = expect_error(frame("receive_message", "{\"request_id\":\"r1\"}"), errc::unknown_message_id);
  EXPECT_EQ(e.request_id, "r1");
  expect_error(frame("discover_broker", "{}"), errc::unknown_message_id);
}

// Quoted values are cut on a character boundary: the error frame stays valid UTF-8.
TEST(Request, ErrorTextsQuoteLongValuesWithoutSplittingACharacter) {
  std::string long_name;
  for (int i = 0; i < 40; ++i) long_name += "\xc3\xa9";  // é, two bytes each
  long_name = "x" + long_name;                            // so that byte 64 and 80 fall inside one
  auto e = expect_error(frame(long_name, "{}"), errc::unknown_message_id);
  EXPECT_FALSE(first_invalid_utf8(e.text)) << e.text;
  e = expect_error(frame("log_in", "{\"sender_username\":\"" + long_name + "\"}"), errc::invalid_username);
  EXPECT_FALSE(first_invalid_utf8(e.text)) << e.text;
  e = expect_error(frame("join_group", "{\"group_name\":\"" + long_name + "\"}"), errc::invalid_field);
  EXPECT_FALSE(first_invalid_utf8(e.text)) << e.text;
}

TEST(Request, MissingField) {
  auto e = expect_error(frame("send_message", "{\"message_text\":\"hi\"}"), errc::missing_field);
  EXPECT_NE(e.text.find("receiver_username"), std::string::npos);
  expect_error(frame("log_in", "{}"), errc::missing_field);
  expect_error(frame("send_message", "{\"receiver_username\":\"bob\"}"), errc::missing_field);
  expect_error(frame("multicast_message", "{\"message_text\":\"hi\"}"), errc::missing_field);
  expect_error(frame("group_message", "{\"message_text\":\"hi\"}"), errc::missing_field);
  expect_error(frame("create_group", "{}"), errc::missing_field);
  expect_error(frame("join_group", "{}"), errc::missing_field);
  expect_error(frame("leave_group", "{}"), errc::missing_field);
  expect_error(frame("acknowledge_message", "{}"), errc::missing_field);
}

TEST(Request, InvalidField) {
  expect_error(frame("send_message", "{\"receiver_username\":\"bob\",\"message_text\":5}"), errc::invalid_field);
  expect_error(frame("send_message", "{\"receiver_username\":7,\"message_text\":\"x\"}"), errc::invalid_field);
  expect_error(frame("send_message", "{\"receiver_username\":\"bob\",\"message_text\":\"x\",\"ttl_ms\":-1}"),
               errc::invalid_field);
  expect_error(frame("send_message", "{\"receiver_username\":\"bob\",\"message_text\":\"x\",\"ttl_ms\":1.5}"),
               errc::invalid_field);
  expect_error(frame("send_message", "{\"receiver_username\":\"bob\",\"message_text\":\"x\",\"message_uuid\":\"a b\"}"),
               errc::invalid_field);
  expect_error(frame("multicast_message", "{\"receiver_usernames\":[],\"message_text\":\"x\"}"), errc::invalid_field);
  expect_error(frame("multicast_message", "{\"receiver_usernames\":\"bob\",\"message_text\":\"x\"}"),
               errc::invalid_field);
  expect_error(frame("multicast_message", "{\"receiver_usernames\":[1],\"message_text\":\"x\"}"), errc::invalid_field);
  expect_error(frame("log_in", "{\"sender_username\":\"a\",\"heartbeat_interval_ms\":0}"), errc::invalid_field);
  expect_error(frame("log_in", "{\"sender_username\":\"a\",\"password\":1}"), errc::invalid_field);
  expect_error(frame("create_group", "{\"group_name\":\"g h\"}"), errc::invalid_field);
  expect_error(frame("create_group", "{\"group_name\":\"g\",\"group_members\":{}}"), errc::invalid_field);
  expect_error(frame("acknowledge_message", "{\"message_uuids\":[]}"), errc::invalid_field);
  expect_error(frame("acknowledge_message", "{\"message_uuids\":[\"ok\",\"not ok\"]}"), errc::invalid_field);
  expect_error(frame("acknowledge_message", "{\"message_uuid\":\"a/b\"}"), errc::invalid_field);
  expect_error(frame("heartbeat", "{\"request_id\":5}"), errc::invalid_field);
}

TEST(Request, InvalidUsername) {
  auto e = expect_error(frame("log_in", "{\"sender_username\":\"no spaces\"}"), errc::invalid_username);
  EXPECT_NE(e.text.find("1 to 64"), std::string::npos);
  expect_error(frame("log_in", "{\"sender_username\":\"\"}"), errc::invalid_username);
  expect_error(frame("log_in", "{\"sender_username\":\"" + std::string(65, 'a') + "\"}"), errc::invalid_username);
  expect_error(frame("send_message", "{\"receiver_username\":\"b@d\",\"message_text\":\"x\"}"), errc::invalid_username);
  expect_error(frame("multicast_message", "{\"receiver_usernames\":[\"ok\",\"b d\"],\"message_text\":\"x\"}"),
               errc::invalid_username);
  expect_error(frame("create_group", "{\"group_name\":\"g\",\"group_members\":[\"x y\"]}"), errc::invalid_username);
}

TEST(Request, MessageTooLarge) {
  const std::string text(2000, 'x');
  auto e = expect_error(frame("send_message", "{\"receiver_username\":\"bob\",\"message_text\":\"" + text +
                                                  "\",\"message_uuid\":\"m1\",\"request_id\":\"r9\"}"),
                        errc::message_too_large, 1000);
  EXPECT_EQ(e.message_uuid, "m1");
  EXPECT_EQ(e.request_id, "r9");
  // Just under the limit passes.
  request_decoder d(1000);
  EXPECT_TRUE(d.decode(frame("send_message", "{\"receiver_username\":\"bob\",\"message_text\":\"" +
                                                 std::string(900, 'x') + "\"}")).ok());
}

TEST(Request, ErrorsEchoRequestIdAndMessageUuid) {
  auto e = expect_error(frame("send_message", "{\"request_id\":\"r1\",\"message_uuid\":\"u1\",\"message_text\":\"x\"}"),
                        errc::missing_field);
  EXPECT_EQ(e.request_id, "r1");
  EXPECT_EQ(e.message_uuid, "u1");
}

TEST(Request, LogIn) {
  auto r = expect_ok(frame("log_in", "{\"sender_username\":\"alice\",\"heartbeat_interval_ms\":5000,\"request_id\":\"x\"}"));
  EXPECT_EQ(r.k, kind::log_in);
  EXPECT_EQ(r.username, "alice");
  EXPECT_EQ(r.heartbeat_interval_ms, 5000u);
  EXPECT_EQ(r.request_id, "x");
  EXPECT_FALSE(r.password);
}

TEST(Request, MissingContentIsEmptyAndUnknownKeysAreIgnored) {
  EXPECT_EQ(expect_ok("{\"message_id\":\"heartbeat\"}").k, kind::heartbeat);
  EXPECT_EQ(expect_ok("{\"message_id\":\"get_user_list\",\"message_content\":{\"zzz\":1},\"extra\":true}").k,
            kind::get_user_list);
}

TEST(Request, SendMessageBody) {
  auto r = expect_ok(frame("send_message",
                           "{\"receiver_username\":\"bob\",\"message_text\":\"h\\\"i\",\"payload\":{\"n\":[1,2]},"
                           "\"message_uuid\":\"m-1\",\"ttl_ms\":60000,\"sender_username\":\"mallory\"}"));
  EXPECT_EQ(r.k, kind::send_message);
  ASSERT_EQ(r.receivers.size(), 1u);
  EXPECT_EQ(r.receivers[0], "bob");
  EXPECT_EQ(r.message_uuid, "m-1");
  EXPECT_EQ(r.ttl_ms, 60000u);
  const auto body = boost::json::parse(r.body).as_object();
  EXPECT_EQ(body.at("message_text").as_string(), "h\"i");
  EXPECT_EQ(body.at("payload").at("n").as_array().size(), 2u);
  EXPECT_EQ(body.size(), 2u);
  EXPECT_TRUE(r.username.empty());  // sender_username is never taken from the agent
}

TEST(Request, PayloadAloneIsAMessage) {
  auto r = expect_ok(frame("broadcast_message", "{\"payload\":null}"));
  EXPECT_EQ(r.body, "{\"payload\":null}");
}

TEST(Request, MulticastRemovesRepeats) {
  auto r = expect_ok(frame("multicast_message", "{\"receiver_usernames\":[\"b\",\"c\",\"b\"],\"message_text\":\"x\"}"));
  EXPECT_EQ(r.receivers, (usernames{"b", "c"}));
}

TEST(Request, GroupsAndAcks) {
  auto g = expect_ok(frame("create_group", "{\"group_name\":\"ops\",\"group_members\":[\"a\",\"b\"]}"));
  EXPECT_EQ(g.group_name, "ops");
  EXPECT_EQ(g.members.size(), 2u);
  auto a = expect_ok(frame("acknowledge_message", "{\"message_uuid\":\"u0\",\"message_uuids\":[\"u1\",\"u2\"],"
                                                  "\"sender_username\":\"alice\"}"));
  EXPECT_EQ(a.ack_uuids, (std::vector<std::string>{"u0", "u1", "u2"}));
  EXPECT_EQ(a.ack_sender, "alice");
}

TEST(Request, DecoderIsReusableAcrossFrames) {
  request_decoder d(1024);
  for (int i = 0; i < 1000; ++i) {
    auto r = d.decode(frame("send_message", "{\"receiver_username\":\"bob\",\"message_text\":\"n" + std::to_string(i) + "\"}"));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->body, "{\"message_text\":\"n" + std::to_string(i) + "\"}");
    EXPECT_FALSE(d.decode("{bad").ok());
  }
}

TEST(Request, Datagrams) {
  request_decoder d(1400);
  auto q = d.decode_datagram(frame("discover_broker", "{\"request_id\":\"q1\"}"));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->k, kind::discover_broker);
  EXPECT_EQ(q->request_id, "q1");
  auto l = d.decode_datagram(frame("log_in", "{\"sender_username\":\"a\",\"sender_port\":4000}"));
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->sender_port, 4000);
  EXPECT_FALSE(d.decode_datagram(frame("heartbeat", "{}")).ok());
  EXPECT_FALSE(d.decode_datagram(frame("log_in", "{\"sender_username\":\"a\",\"sender_port\":70000}")).ok());
}

TEST(Encode, ErrorFrameRoundTrips) {
  const std::string f = make_error_frame({errc::username_taken, "The name is taken.", "r1", ""});
  ASSERT_EQ(f.back(), '\n');
  const auto v = boost::json::parse(f).as_object();
  EXPECT_EQ(v.at("message_id").as_string(), "error");
  const auto& c = v.at("message_content").as_object();
  EXPECT_EQ(c.at("error_code").as_string(), "username_taken");
  EXPECT_EQ(c.at("request_id").as_string(), "r1");
  EXPECT_FALSE(c.contains("message_uuid"));
}

// Issue item 7: 1e400 (or an integer of more than 309 digits) was parsed to infinity, stored
// and relayed as Infinity, which no recipient could parse.
TEST(Request, NumbersThatAreNotJsonAreRefused) {
  auto e = expect_error(frame("send_message", "{\"receiver_username\":\"b\",\"payload\":1e400}"), errc::invalid_field);
  EXPECT_NE(e.text.find("payload"), std::string::npos) << e.text;
  expect_error(frame("send_message", "{\"receiver_username\":\"b\",\"payload\":{\"a\":[1,-1e999]}}"),
               errc::invalid_field);
  expect_error(frame("send_message", "{\"receiver_username\":\"b\",\"payload\":" + std::string(400, '9') + "}"),
               errc::invalid_field);
  auto ok = expect_ok(frame("send_message", "{\"receiver_username\":\"b\",\"payload\":[1e308,-2.5,0]}"));
  EXPECT_EQ(ok.body.find("Infinity"), std::string::npos) << ok.body;
}

// The body as stored can be longer than the frame: it is what max_message_bytes bounds.
TEST(Request, MaxMessageBytesBoundsTheBodyAsStored) {
  // 1e0 is re-serialized as 1E0 and 0.5 as 5E-1: about 1.5 times the frame.
  std::string numbers = "[";
  for (int i = 0; i < 300; ++i) numbers += std::string(i ? "," : "") + "0.5";
  numbers += "]";
  const std::string text = frame("send_message", "{\"receiver_username\":\"b\",\"payload\":" + numbers + "}");
  request_decoder d(text.size());  // the frame fits the limit
  auto r = d.decode(text);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::message_too_large) << r.error().text;
}

TEST(Request, OptionalNullFieldsCountAsAbsent) {
  auto g = expect_ok(frame("create_group", "{\"group_name\":\"ops\",\"group_members\":null}"));
  EXPECT_TRUE(g.members.empty());
  auto a = expect_ok(frame("acknowledge_message", "{\"message_uuid\":\"u1\",\"message_uuids\":null}"));
  EXPECT_EQ(a.ack_uuids, (std::vector<std::string>{"u1"}));
  auto l = expect_ok(frame("log_in", "{\"sender_username\":\"a\",\"send_only\":null,\"receive_window\":null}"));
  EXPECT_FALSE(l.send_only);
  EXPECT_FALSE(l.receive_window);
  expect_error(frame("multicast_message", "{\"receiver_usernames\":null,\"message_text\":\"x\"}"), errc::missing_field);
}

// Issue item 8: a ttl_ms of 2^63-1 was accepted and expired at once (expires_at in year 0907).
TEST(Request, DurationsPastWhatTheClocksHoldAreRefused) {
  auto e = expect_error(frame("send_message", "{\"receiver_username\":\"b\",\"message_text\":\"x\",\"ttl_ms\":9223372036854775807}"),
                        errc::invalid_field);
  EXPECT_NE(e.text.find(std::to_string(max_duration_ms)), std::string::npos) << e.text;
  expect_error(frame("log_in", "{\"sender_username\":\"a\",\"heartbeat_interval_ms\":18446744073709551615}"),
               errc::invalid_field);
  auto ok = expect_ok(frame("send_message", "{\"receiver_username\":\"b\",\"message_text\":\"x\",\"ttl_ms\":" +
                                                std::to_string(max_duration_ms) + "}"));
  EXPECT_EQ(ok.ttl_ms, max_duration_ms);
}

TEST(Request, LogInSaysWhatTheSessionReceives) {
  auto r = expect_ok(frame("log_in", "{\"sender_username\":\"a\",\"send_only\":true,\"receive_window\":5}"));
  EXPECT_TRUE(r.send_only);
  EXPECT_EQ(r.receive_window, 5u);
  expect_error(frame("log_in", "{\"sender_username\":\"a\",\"send_only\":\"yes\"}"), errc::invalid_field);
  expect_error(frame("log_in", "{\"sender_username\":\"a\",\"receive_window\":0}"), errc::invalid_field);
}

}  // namespace
}  // namespace ma
