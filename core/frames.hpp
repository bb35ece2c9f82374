// Broker-to-agent frames on the hot path, built by hand (no JSON tree). Each returned string
// is one whole frame ending in '\n', except the parts of a shared receive_message.
#pragma once

#include <memory>
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

// A live (first) delivery of a message to any number of recipients: the frame is
// head + json_string(receiver) + tail, head and tail serialized once and shared.
struct shared_receive_frame {
  std::shared_ptr<const std::string> head;
  std::shared_ptr<const std::string> tail;
};
shared_receive_frame make_receive_frame(const message_header& h);
// The middle part for one recipient: "\"bob\"".
std::string receiver_part(std::string_view receiver);
// The whole live frame for a message with one recipient (nothing to share).
std::string make_live_frame(const message_header& h, std::string_view receiver);

// A redelivery from the Dead Letter Channel, whole.
std::string make_redelivery_frame(const message_header& h, std::string_view receiver, int attempt,
                                  std::string_view dead_letter_reason);

// Each make_ function below has an append_ twin that writes the frame at the end of out, so a
// caller can batch frames in one reused buffer without an allocation per frame.
void append_live_frame(std::string& out, const message_header& h, std::string_view receiver);
void append_accepted_frame(std::string& out, std::string_view message_uuid, std::string_view status, bool duplicate,
                           std::string_view request_id);
void append_accepted_many_frame(std::string& out, std::string_view message_uuid, std::string_view recipients_json,
                                bool duplicate, std::string_view request_id);
void append_delivered_frame(std::string& out, std::string_view message_uuid, std::string_view receiver,
                            std::string_view delivered_at);
void append_dead_lettered_frame(std::string& out, std::string_view message_uuid, std::string_view receiver,
                                std::string_view reason);

// message_accepted for one recipient.
std::string make_accepted_frame(std::string_view message_uuid, std::string_view status, bool duplicate,
                                std::string_view request_id);
// message_accepted for many: recipients_json is the array text [{"receiver_username":..,"status":..},..].
std::string make_accepted_many_frame(std::string_view message_uuid, std::string_view recipients_json, bool duplicate,
                                     std::string_view request_id);

std::string make_delivered_frame(std::string_view message_uuid, std::string_view receiver, std::string_view delivered_at);
std::string make_dead_lettered_frame(std::string_view message_uuid, std::string_view receiver, std::string_view reason);

}  // namespace ma
