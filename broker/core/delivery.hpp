// What the broker holds of a message while it is being delivered: the accepted message shared by
// its recipients, one delivery of it to one peer, and a delivery on its way to the Dead
// Letter Channel. Plain data.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "core/clock.hpp"
#include "core/frames.hpp"
#include "storage/database.hpp"

namespace ma {

using peer_id = std::uint64_t;

// The journal rows of a message's live deliveries (persist-accepted on), one slot per live
// recipient. A delivery goes out before its accept job runs, so what becomes of it (its
// recipient acknowledges it, or it fails) races the job: the job decides on the store's
// thread, the broker on its own, and each slot is one atomic:
//   0                    the accept job has not decided yet
//   acknowledged_first   the recipient acknowledged first: the row is never written
//   claimed              the job writes the row (or wrote it in a batch that was rolled back)
//   > 0                  the row's seq, written by the job
//   <= failed_first      the delivery failed first: the job writes it as a dead letter
class journal_slots {
 public:
  static constexpr std::int64_t acknowledged_first = -1;
  static constexpr std::int64_t claimed = -2;
  static constexpr std::int64_t failed_first = -16;  // - (reason * 2 + attempted)

  // What the accept job writes for a slot.
  struct decision {
    bool write = false;   // a journal row
    bool failed = false;  // moved at once to the Dead Letter Channel, for reason
    dead_letter_reason reason = dead_letter_reason::recipient_disconnected;
    bool attempted = false;
  };

  journal_slots() = default;
  // One slot (a direct message) is kept inline: no allocation.
  explicit journal_slots(std::size_t n) : many_(n > 1 ? std::make_unique<std::atomic<std::int64_t>[]>(n) : nullptr) {}
  journal_slots(journal_slots&& o) noexcept : one_(o.one_.load()), many_(std::move(o.many_)) {}
  journal_slots& operator=(journal_slots&& o) noexcept {
    one_.store(o.one_.load());
    many_ = std::move(o.many_);
    return *this;
  }

  // Broker's thread: true if the acknowledgement came before the job decided (no row, ever).
  bool acknowledge_first(int slot) {
    std::int64_t undecided = 0;
    return at(slot).compare_exchange_strong(undecided, acknowledged_first);
  }
  // Broker's thread: true if the delivery failed before the job decided; the job writes the
  // dead letter then (a dead-letter job submitted before it would find no row to move).
  bool fail_first(int slot, dead_letter_reason reason, bool attempted) {
    std::int64_t undecided = 0;
    return at(slot).compare_exchange_strong(
        undecided, failed_first - (static_cast<std::int64_t>(reason) * 2 + (attempted ? 1 : 0)));
  }
  // Store's thread: what to write for the slot (again, when a rolled-back batch reruns).
  decision claim(int slot) {
    std::int64_t v = 0;
    if (at(slot).compare_exchange_strong(v, claimed)) return {true};
    if (v == acknowledged_first) return {};
    if (v > failed_first) return {true};
    const std::int64_t code = failed_first - v;
    return {true, true, static_cast<dead_letter_reason>(code / 2), code % 2 == 1};
  }
  void written(int slot, std::int64_t seq) { at(slot).store(seq); }
  // Store's thread, in a job submitted after the accept's: the row's seq, or 0 if the accept
  // wrote none (acknowledged first, or the accept failed).
  std::int64_t seq(int slot) const {
    const std::int64_t v = at(slot).load();
    return v > 0 ? v : 0;
  }

 private:
  std::atomic<std::int64_t>& at(int slot) { return many_ ? many_[slot] : one_; }
  const std::atomic<std::int64_t>& at(int slot) const { return many_ ? many_[slot] : one_; }

  std::atomic<std::int64_t> one_{0};
  std::unique_ptr<std::atomic<std::int64_t>[]> many_;
};

// One accepted message, shared by its recipients' deliveries.
struct accepted_message {
  message_record rec;
  iso8601_text sent_at{};
  bool fan_out = false;        // more than one live recipient: share the frame's parts
  receive_frame_parts frame;  // built at the first live delivery of a fan-out
  peer_id origin = 0;  // the peer that sent it: its receipts go there while it is connected
  journal_slots journal;
  bool awaiting_commit = false;  // delivered before its commit; message_accepted not out yet
  bool failed = false;           // the accept did not commit: internal_error went out
  // Its accept may wait for the acknowledgements of its live deliveries, for at most the accept
  // delay: in broker_core's waiting_accepts_, at accept_ticket.
  int unacknowledged = 0;  // live deliveries not acknowledged first
  std::uint64_t accept_ticket = 0;
  // Acknowledgements that came before message_accepted: (recipient, when); their receipts
  // follow it.
  boost::container::small_vector<std::pair<std::string, iso8601_text>, 1> early_receipts;
  // Deliveries that failed before the accept job got to them (journal_slots::fail_first): their
  // message_dead_lettered follows message_accepted.
  std::vector<std::pair<std::string, dead_letter_reason>> early_dead_letters;

  message_header header() const {
    return {rec.message_uuid, rec.sender, rec.ch, rec.group_name, std::string_view(sent_at.data(), sent_at.size()),
            rec.body};
  }
};
using message_ptr = std::shared_ptr<accepted_message>;

// A message sent to a session and not yet acknowledged.
struct delivery {
  static constexpr int no_slot = -1;
  message_ptr msg;
  int slot = no_slot;               // its journal slot in msg->journal (live, persist-accepted on)
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
