// What the broker holds of a message while it is being delivered: the accepted message shared by
// its recipients, one delivery of it to one peer, and a delivery on its way to the Dead
// Letter Channel. Plain data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/clock.hpp"
#include "core/frames.hpp"
#include "storage/database.hpp"

namespace ma {

using peer_id = std::uint64_t;

// One accepted message, shared by its recipients' deliveries.
struct accepted_message {
  message_record rec;
  iso8601_text sent_at{};
  bool fan_out = false;        // more than one live recipient: share the frame's parts
  receive_frame_parts frame;  // built at the first live delivery of a fan-out
  peer_id origin = 0;  // the peer that sent it: its receipts go there while it is connected

  message_header header() const {
    return {rec.message_uuid, rec.sender, rec.ch, rec.group_name, std::string_view(sent_at.data(), sent_at.size()),
            rec.body};
  }
};
using message_ptr = std::shared_ptr<accepted_message>;

// A message sent to a session and not yet acknowledged.
struct delivery {
  message_ptr msg;
  std::int64_t seq = 0;             // its journal row (live delivery, persist-accepted on)
  std::int64_t dead_letter_id = 0;  // a redelivery: its letter
  int attempt = 1;
  sys_ms started{};
};

// A delivery that failed (or was never made), on its way to the Dead Letter Channel.
struct failed_delivery {
  std::string receiver;
  delivery d;
  bool attempted = true;
};

}  // namespace ma
