#include "broker/core/store_jobs.hpp"

#include <limits>
#include <unordered_map>

#include <boost/container/small_vector.hpp>

namespace ma::store_jobs {

namespace {

void accept_one(database& db, accept_batch::item& it, bool persist, accepted_pairs& pairs) {
  const accepted_message& m = *it.m;
  // A live delivery acknowledged before this runs is never journaled; one that failed before
  // is written as its dead letter; the body is stored once, and only if some recipient needs
  // it stored.
  boost::container::small_vector<journal_slots::decision, 2> decided(it.targets.size());
  std::int64_t rows = 0;
  for (std::size_t i = 0; i < it.targets.size(); ++i) {
    auto& t = it.targets[i];
    if (t.live && persist && t.slot >= 0) decided[i] = it.m->journal.claim(t.slot);
    rows += (!t.live || decided[i].write) ? 1 : 0;
  }
  std::int64_t message_id = 0;
  auto stored = [&] { return message_id ? message_id : (message_id = db.insert_message(m.rec, rows)); };
  for (std::size_t i = 0; i < it.targets.size(); ++i) {
    auto& t = it.targets[i];
    t.seq = 0;
    if (!t.live) {
      db.dead_letter_new(stored(), t.name, t.reason, it.at);
    } else if (decided[i].failed) {
      db.dead_letter_journaled(db.journal(stored(), t.name), decided[i].reason, it.at, decided[i].attempted);
    } else if (decided[i].write) {
      t.seq = db.journal(stored(), t.name);
      it.m->journal.written(t.slot, t.seq);
    }
  }
  pairs.add(m.rec.sender, m.rec.message_uuid, it.status);
}

// The broker's thread wrote the items' messages and targets, so on this thread each is a
// cache miss; asked for 16 items ahead, they arrive while the items before are written (the
// misses were two thirds of this loop's time, docs/performance.md, tenth round).
void fetch_ahead(const void* p) {
#if defined(__x86_64__)
  asm volatile("prefetcht0 (%0)" : : "r"(p));  // GCC 12 drops __builtin_prefetch here
#else
  __builtin_prefetch(p);
#endif
}

void prefetch(const std::vector<accept_batch::item>& items, std::size_t i) {
  constexpr std::size_t ahead = 16;
  if (i + ahead < items.size()) {
    const accept_batch::item& it = items[i + ahead];
    fetch_ahead(it.targets.data());
    fetch_ahead(it.m.get());
    fetch_ahead(reinterpret_cast<const char*>(it.m.get()) + 64);
    fetch_ahead(&it.m->journal);
  }
}

}  // namespace

store_job accept(std::shared_ptr<accept_batch> batch, bool persist) {
  return [batch = std::move(batch), persist](database& db) {
    accepted_pairs pairs;
    sys_ms last{};
    auto& items = batch->seal();
    for (std::size_t i = 0; i < items.size(); ++i) {
      prefetch(items, i);
      accept_one(db, items[i], persist, pairs);
      last = std::max(last, items[i].at);
    }
    // In the same transaction: once message_accepted is out, a resend is a duplicate also after
    // a crash, until the dedupe window ends.
    db.remember_accepted(pairs, last);
  };
}

named_job<counts_by_recipient> dead_letter(std::shared_ptr<const std::vector<failed_delivery>> batch,
                                           dead_letter_reason reason, sys_ms now, int max_attempts) {
  named_job<counts_by_recipient> j;
  j.run = [batch = std::move(batch), parked = j.result, reason, now, max_attempts](database& db) {
    parked->clear();
    // Deliveries never journaled (persist-accepted off): each message of the batch is stored
    // once for all its recipients in it.
    std::unordered_map<const accepted_message*, std::pair<std::int64_t, std::int64_t>> stored;  // rows, id
    for (auto& f : *batch) {
      if (!f.d.dead_letter_id && f.d.slot < 0) ++stored[f.d.msg.get()].first;
    }
    auto message_id = [&](const accepted_message& m) {
      auto& [rows, id] = stored[&m];
      if (id == 0) id = db.insert_message(m.rec, rows);
      return id;
    };
    for (auto& f : *batch) {
      if (f.d.dead_letter_id) {
        if (db.record_attempt(f.d.dead_letter_id, f.d.attempt, f.d.started, to_string(reason), now, max_attempts)) {
          parked->emplace_back(f.receiver, 1);
        }
      } else if (f.d.slot >= 0) {
        // No row: its accept was not committed (the sender heard internal_error), so nothing
        // of it is kept. (Acknowledged first, it would not be failing.)
        if (auto seq = f.d.msg->journal.seq(f.d.slot)) db.dead_letter_journaled(seq, reason, now, f.attempted);
      } else {
        db.dead_letter_new(message_id(*f.d.msg), f.receiver, reason, now);
      }
    }
  };
  return j;
}

named_job<std::vector<std::vector<std::string>>> acknowledge(std::shared_ptr<const acknowledgements> acks, sys_ms now) {
  named_job<std::vector<std::vector<std::string>>> j;
  j.run = [acks = std::move(acks), senders = j.result, now](database& db) {
    senders->clear();
    for (auto& [m, slot] : acks->journaled) {
      if (auto seq = m->journal.seq(slot)) db.acknowledge(seq);
    }
    if (!acks->redelivered.empty()) {
      std::vector<acknowledged_redelivery> letters;
      letters.reserve(acks->redelivered.size());
      for (auto& d : acks->redelivered) letters.push_back({d.dead_letter_id, d.attempt, d.started});
      db.record_acknowledged(letters, now);
    }
    for (auto& uuid : acks->late) senders->push_back(db.mark_delivered(acks->receiver, uuid, acks->ack_sender, now));
  };
  return j;
}

named_job<std::int64_t> count_pending(std::string user) {
  named_job<std::int64_t> j;
  j.run = [user = std::move(user), out = j.result](database& db) { *out = db.count_pending(user); };
  return j;
}

named_job<std::vector<ma::dead_letter>> redelivery_page(std::string user, std::int64_t after, int limit,
                                                        bool fold_first) {
  named_job<std::vector<ma::dead_letter>> j;
  j.run = [user = std::move(user), after, limit, fold_first, out = j.result](database& db) {
    if (fold_first) db.fold_redelivered(std::numeric_limits<std::int64_t>::max());
    *out = db.pending_for(user, after, limit, true);
  };
  return j;
}

named_job<bool> create_group(std::string group, std::string creator, std::vector<std::string> members, sys_ms now) {
  named_job<bool> j;
  j.run = [group = std::move(group), creator = std::move(creator), members = std::move(members), now,
           ok = j.result](database& db) { *ok = db.create_group(group, creator, members, now); };
  return j;
}

named_job<bool> join_group(std::string group, std::string user, sys_ms now) {
  named_job<bool> j;
  j.run = [group = std::move(group), user = std::move(user), now, ok = j.result](database& db) {
    *ok = db.join_group(group, user, now);
  };
  return j;
}

named_job<bool> leave_group(std::string group, std::string user) {
  named_job<bool> j;
  j.run = [group = std::move(group), user = std::move(user), ok = j.result](database& db) {
    *ok = db.leave_group(group, user);
  };
  return j;
}

named_job<std::int64_t> fold_redelivered(std::int64_t at_most) {
  named_job<std::int64_t> j;
  j.run = [at_most, out = j.result](database& db) { *out = db.fold_redelivered(at_most); };
  return j;
}

named_job<sweep_result> expire(sys_ms now, std::chrono::milliseconds dedupe_window, std::int64_t max_pairs,
                               retention keep) {
  named_job<sweep_result> j;
  j.run = [now, dedupe_window, max_pairs, keep, r = j.result](database& db) {
    r->expired = db.sweep_expired(now);
    db.forget_accepted(now - dedupe_window, max_pairs);
    auto remove = [&](dead_letter_state state, std::chrono::milliseconds age) -> std::int64_t {
      return age.count() > 0 ? db.purge_some(state, now - age, max_removed_per_sweep) : 0;
    };
    r->removed_delivered = remove(dead_letter_state::delivered, keep.delivered);
    r->removed_parked = remove(dead_letter_state::parked, keep.parked);
    r->removed_expired = remove(dead_letter_state::expired, keep.expired);
  };
  return j;
}

}  // namespace ma::store_jobs
