// Acknowledgements and their receipts, ack timeouts, and moving failed deliveries to the Dead
// Letter Channel.
#include <spdlog/spdlog.h>

#include "broker/core/broker_core.hpp"
#include "broker/core/store_jobs.hpp"
#include "core/duration.hpp"
#include "core/frames.hpp"

namespace ma {

void broker_core::register_in_flight(peer& to, delivery d, steady_time now) {
  const std::uint64_t id = to.in_flight.add(std::move(d));
  ack_deadlines_.push_back({saturating_add(now, bounded_ms(s_.ack_timeout_ms)), to.id, id});
}

// An acknowledgement that the store need not hear of (the usual one: a live delivery
// acknowledged before its journal row was written) allocates nothing here but its receipt's
// bytes in the sender's outbox.
void broker_core::handle_ack(peer& p, const request& r, const moment& now) {
  store_jobs::acknowledgements for_store;
  const iso8601_text at = format_iso8601_fixed(now.wall);
  const std::string_view delivered_at(at.data(), at.size());
  for (const std::string& uuid : r.ack_uuids) {
    auto taken = p.in_flight.take(uuid, r.ack_sender);
    if (!taken) {
      // Relayed by another broker of the cluster: the acknowledgement goes back there.
      if (p.extras && !p.extras->relayed.empty() && relay_ack(p, uuid, r.ack_sender)) continue;
      // Not in flight: a late one only if it was dead-lettered recently, else nothing to do.
      if (late_acks_.may_be_late(p.username, uuid)) for_store.late.push_back(uuid);
      continue;
    }
    delivery d = std::move(*taken);
    ++counters_.delivered;
    if (d.msg->awaiting_commit) {
      // Before message_accepted (the delivery went out before its commit): the receipt follows it.
      if (!d.msg->failed) {
        auto& early = d.msg->early_receipts;
        if (early.empty()) early.reserve(static_cast<std::size_t>(std::max(d.msg->unacknowledged, 1)));
        early.emplace_back(p.username, at);
      }
    } else {
      notify_sender(*d.msg, [&](std::string& b) { append_delivered_frame(b, uuid, p.username, delivered_at); });
    }
    if (d.dead_letter_id) {
      --p.redeliveries_in_flight;
      for_store.redelivered.push_back(std::move(d));
    } else if (d.slot >= 0) {
      if (d.msg->journal.acknowledge_first(d.slot)) {
        acknowledged_first(*d.msg);
      } else {
        // The accept job claimed the row first: it is deleted after it (jobs run in order).
        for_store.journaled.emplace_back(std::move(d.msg), d.slot);
      }
    }
  }
  release_accepts(now);
  refill_soon(p);
  if (for_store.journaled.empty() && for_store.redelivered.empty() && for_store.late.empty()) return;
  auto acks = std::make_shared<store_jobs::acknowledgements>(std::move(for_store));
  if (!acks->redelivered.empty()) {
    // Folded once the redeliveries pause (or the backlog grows large).
    if (unfolded_ < fold_backlog) next_fold_ = now.steady + fold_after;
    unfolded_ += static_cast<std::int64_t>(acks->redelivered.size());
    if (folding_) unfolded_after_fold_ += static_cast<std::int64_t>(acks->redelivered.size());
  }
  acks->receiver = p.username;
  acks->ack_sender = r.ack_sender;
  auto job = store_jobs::acknowledge(acks, now.wall);
  auto done = [this, acks, late_senders = job.result, now](std::exception_ptr err, const moment&) {
    if (err) {
      spdlog::error("acknowledgements from '{}' could not be stored; the messages stay journaled", acks->receiver);
      return;
    }
    const std::string at = format_iso8601(now.wall);
    for (std::size_t i = 0; i < late_senders->size(); ++i) {
      for (auto& sender : (*late_senders)[i]) {
        notify_all_sessions(sender, [&](std::string& b) { append_delivered_frame(b, acks->late[i], acks->receiver, at); });
      }
    }
  };
  // Retried until it commits: an acknowledgement lost here would deliver the message again.
  submit(std::move(job.run), std::move(done), on_failure::retry, "acknowledgement");
}

void broker_core::expire_acks(const moment& now) {
  std::vector<failed_delivery> expired;
  while (!ack_deadlines_.empty() && ack_deadlines_.front().at <= now.steady) {
    const ack_deadline entry = ack_deadlines_.front();
    ack_deadlines_.pop_front();
    peer* p = find(entry.to);
    if (!p) continue;
    auto d = p->in_flight.take(entry.id);
    if (!d) continue;  // acknowledged in time
    const bool redelivery = d->dead_letter_id != 0;
    expired.push_back({p->username, std::move(*d), true});
    if (redelivery) {
      --p->redeliveries_in_flight;
      pump(*p, now);
    }
    refill_soon(*p);
  }
  if (!expired.empty()) dead_letter(std::move(expired), dead_letter_reason::ack_timeout, now);
}

void broker_core::dead_letter(std::vector<failed_delivery> failed, dead_letter_reason reason, const moment& now) {
  for (auto& f : failed) {
    if (f.attempted) late_acks_.remember(f.receiver, f.d.msg->rec.message_uuid);
  }
  // Live deliveries whose accept job has not decided yet: it writes their dead letters, and
  // their senders hear of them after message_accepted.
  std::erase_if(failed, [&](failed_delivery& f) {
    if (f.d.dead_letter_id || f.d.slot < 0 || !f.d.msg->journal.fail_first(f.d.slot, reason, f.attempted)) {
      return false;
    }
    f.d.msg->early_dead_letters.emplace_back(f.receiver, reason);
    return true;
  });
  if (failed.empty()) return;
  auto batch = std::make_shared<const std::vector<failed_delivery>>(std::move(failed));
  auto job = store_jobs::dead_letter(batch, reason, now.wall, static_cast<int>(s_.max_delivery_attempts));
  auto done = [this, batch, parked = job.result, reason](std::exception_ptr err, const moment& at) {
    if (err) {
      spdlog::error("{} deliveries could not be moved to the Dead Letter Channel ({}); journaled ones are "
                    "recovered at the next start",
                    batch->size(), to_string(reason));
      return;
    }
    warn_letters(*parked, {}, at.steady);
    for (auto& f : *batch) {
      if (f.d.dead_letter_id) continue;  // already a dead letter: its sender heard so before
      if (f.d.msg->failed) continue;     // never accepted: nothing was kept
      ++counters_.dead_lettered[static_cast<std::size_t>(reason)];
      notify_sender(*f.d.msg, [&](std::string& b) {
        append_dead_lettered_frame(b, f.d.msg->rec.message_uuid, f.receiver, to_string(reason));
      });
    }
  };
  // Retried until it commits: a delivery that left its peer lives only here until then.
  submit(std::move(job.run), std::move(done), on_failure::retry, "move to the Dead Letter Channel");
}

}  // namespace ma
