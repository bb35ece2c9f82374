// Frames on the hot path, built by hand (no JSON tree): broker-to-agent ones, and the
// acknowledgement an agent sends (a broker of a cluster sends it on for a session of its own).
// Each returned string is one whole frame ending in '\n', except the parts of a shared
// receive_message.
#pragma once

#include <string>
#include <string_view>

#include "core/kind.hpp"

namespace ma {

// What receive_message says of a message, whoever receives it.
struct message_header {
  std::string_view message_uuid;
  std::string_view sender;
  channel ch = channel::direct;
  std::string_view group_name;  // empty unless ch == group
  std::string_view sent_at;     // ISO 8601
  std::string_view body;        // JSON object text: message_text and/or payload
};

// A live (first) delivery of a message to many recipients: the frame is
// head + json_string(receiver) + tail, head and tail serialized once.
struct receive_frame_parts {
  std::string head;
  std::string tail;
};
receive_frame_parts make_receive_frame(const message_header& h);

// The append_ builders write a frame at the end of out, so that a caller can batch frames in
// one reused buffer without an allocation per frame.
// The whole live frame for a message with one live recipient.
void append_live_frame(std::string& out, const message_header& h, std::string_view receiver);
// A redelivery from the Dead Letter Channel, whole.
void append_redelivery_frame(std::string& out, const message_header& h, std::string_view receiver, int attempt,
                             std::string_view dead_letter_reason);
void append_accepted_frame(std::string& out, std::string_view message_uuid, std::string_view status, bool duplicate,
                           std::string_view request_id);
// recipients_json is the array text [{"receiver_username":..,"status":..},..].
void append_accepted_many_frame(std::string& out, std::string_view message_uuid, std::string_view recipients_json,
                                bool duplicate, std::string_view request_id);
void append_delivered_frame(std::string& out, std::string_view message_uuid, std::string_view receiver,
                            std::string_view delivered_at);
void append_dead_lettered_frame(std::string& out, std::string_view message_uuid, std::string_view receiver,
                                std::string_view reason);
// acknowledge_message for one message of sender.
void append_ack_frame(std::string& out, std::string_view message_uuid, std::string_view sender);



}  // namespace ma
