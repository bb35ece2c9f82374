#include "core/frames.hpp"

#include "core/encode.hpp"

namespace ma {
namespace {

void append_common(std::string& out, const message_header& h) {
  out += "{\"message_id\":\"receive_message\",\"message_content\":{\"message_uuid\":";
  append_json_string(out, h.message_uuid);
  out += ",\"sender_username\":";
  append_json_string(out, h.sender);
  out += ",\"channel\":\"";
  out += to_string(h.ch);
  out += '"';
  if (!h.group_name.empty()) {
    out += ",\"group_name\":";
    append_json_string(out, h.group_name);
  }
  out += ",\"sent_at\":\"";
  out += h.sent_at;
  out += '"';
}

// The body's members (it is an object: drop its braces) and the closing of content and frame.
void append_body_and_close(std::string& out, std::string_view body) {
  if (body.size() > 2) {
    out += ',';
    out.append(body.substr(1, body.size() - 2));
  }
  out += "}}\n";
}

void append_request_id(std::string& out, std::string_view request_id) {
  if (request_id.empty()) return;
  out += ",\"request_id\":";
  append_json_string(out, request_id);
}

}  // namespace

receive_frame_parts make_receive_frame(const message_header& h) {
  receive_frame_parts parts;
  parts.head.reserve(160 + h.message_uuid.size() + h.sender.size());
  append_common(parts.head, h);
  parts.head += ",\"redelivery\":false,\"attempt\":1,\"receiver_username\":";
  parts.tail.reserve(h.body.size() + 4);
  append_body_and_close(parts.tail, h.body);
  return parts;
}

void append_live_frame(std::string& out, const message_header& h, std::string_view receiver) {
  append_common(out, h);
  out += ",\"redelivery\":false,\"attempt\":1,\"receiver_username\":";
  append_json_string(out, receiver);
  append_body_and_close(out, h.body);
}

void append_redelivery_frame(std::string& out, const message_header& h, std::string_view receiver, int attempt,
                             std::string_view dead_letter_reason) {
  append_common(out, h);
  out += ",\"redelivery\":true,\"attempt\":";
  out += std::to_string(attempt);
  out += ",\"dead_letter_reason\":";
  append_json_string(out, dead_letter_reason);
  out += ",\"receiver_username\":";
  append_json_string(out, receiver);
  append_body_and_close(out, h.body);
}

void append_accepted_frame(std::string& out, std::string_view message_uuid, std::string_view status, bool duplicate,
                           std::string_view request_id) {
  out += "{\"message_id\":\"message_accepted\",\"message_content\":{\"message_uuid\":";
  append_json_string(out, message_uuid);
  out += ",\"status\":\"";
  out += status;
  out += duplicate ? "\",\"duplicate\":true" : "\",\"duplicate\":false";
  append_request_id(out, request_id);
  out += "}}\n";
}

void append_accepted_many_frame(std::string& out, std::string_view message_uuid, std::string_view recipients_json,
                                bool duplicate, std::string_view request_id) {
  out += "{\"message_id\":\"message_accepted\",\"message_content\":{\"message_uuid\":";
  append_json_string(out, message_uuid);
  out += ",\"recipients\":";
  out += recipients_json;
  out += duplicate ? ",\"duplicate\":true" : ",\"duplicate\":false";
  append_request_id(out, request_id);
  out += "}}\n";
}

void append_delivered_frame(std::string& out, std::string_view message_uuid, std::string_view receiver,
                            std::string_view delivered_at) {
  out += "{\"message_id\":\"message_delivered\",\"message_content\":{\"message_uuid\":";
  append_json_string(out, message_uuid);
  out += ",\"receiver_username\":";
  append_json_string(out, receiver);
  out += ",\"delivered_at\":\"";
  out += delivered_at;
  out += "\"}}\n";
}

void append_dead_lettered_frame(std::string& out, std::string_view message_uuid, std::string_view receiver,
                                std::string_view reason) {
  out += "{\"message_id\":\"message_dead_lettered\",\"message_content\":{\"message_uuid\":";
  append_json_string(out, message_uuid);
  out += ",\"receiver_username\":";
  append_json_string(out, receiver);
  out += ",\"reason\":";
  append_json_string(out, reason);
  out += "}}\n";
}

void append_ack_frame(std::string& out, std::string_view message_uuid, std::string_view sender) {
  out += R"({"message_id":"acknowledge_message","message_content":{"message_uuid":)";
  append_json_string(out, message_uuid);
  out += R"(,"sender_username":)";
  append_json_string(out, sender);
  out += "}}\n";
}

}  // namespace ma
