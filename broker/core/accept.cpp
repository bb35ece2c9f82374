// Accepting a message: dedupe, routing to its recipients, the live deliveries (at once, held
// behind a backlog, or held while a window is full), and the commit that message_accepted waits
// for. A delivery goes out before its commit: a recipient that acknowledges before the store
// gets to it costs no journal row (journal_slots).
#include <spdlog/spdlog.h>

#include "broker/core/broker_core.hpp"
#include "broker/core/store_jobs.hpp"
#include "core/duration.hpp"
#include "core/encode.hpp"
#include "core/frames.hpp"
#include "core/uuid.hpp"

namespace ma {

namespace {

// A fan-out's statuses, compact (dedupe_table::add_status).
std::string recipients_status(const store_jobs::accept_targets& targets) {
  std::string compact;
  for (auto& t : targets) dedupe_table::add_status(compact, t.name, t.live);
  return compact;
}

}  // namespace

// Fills rec's channel (and group) and out with the recipients; false after an error reply.
bool broker_core::recipients_of(peer& p, request& r, message_record& rec, usernames& out) {
  switch (r.k) {
    case kind::send_message:
      rec.ch = channel::direct;
      if (!may_send_to(p, r, r.receivers)) return false;
      out = std::move(r.receivers);
      return true;
    case kind::multicast_message:
      rec.ch = channel::multicast;
      if (r.receivers.size() > s_.max_recipients) {
        send_error(p, errc::invalid_field,
                   "receiver_usernames names " + std::to_string(r.receivers.size()) + " recipients; this broker takes " +
                       std::to_string(s_.max_recipients) + " at most (max-recipients): use a group, or send in parts.",
                   &r);
        return false;
      }
      if (!may_send_to(p, r, r.receivers)) return false;
      out = std::move(r.receivers);
      return true;
    case kind::broadcast_message:
      rec.ch = channel::broadcast;
      if (!may_broadcast(p, r)) return false;
      for (auto& [name, id] : online_) {
        if (name != p.username) out.emplace_back(name);
      }
      return true;
    default:
      rec.ch = channel::group;
      if (!may_use_group(p, r)) return false;
      if (!groups_.exists(r.group_name)) {
        send_error(p, errc::unknown_group,
                   "There is no group '" + r.group_name + "'; create it with create_group, or check its name.", &r);
        return false;
      }
      if (!groups_.is_member(r.group_name, p.username)) {
        send_error(p, errc::not_group_member,
                   "You are not a member of '" + r.group_name + "'; join_group first to send to it.", &r);
        return false;
      }
      rec.group_name = r.group_name;
      for (auto& name : groups_.recipients(r.group_name, p.username)) out.push_back(std::move(name));
      return true;
  }
}

// Decided here, at accept time, before anything is stored; a multicast with one recipient
// refused is refused whole.
bool broker_core::may_send_to(peer& p, const request& r, const usernames& recipients) {
  if (!acl_) return true;
  for (auto& to : recipients) {
    if (acl_->may_send(p.username, to)) continue;
    send_error(p, errc::not_authorized,
               "'" + p.username + "' may not send to '" + to + "'" +
                   (r.k == kind::multicast_message ? " (so the whole multicast_message is refused)" : "") +
                   ": no 'send' rule of the ACL file matches '" + to + "'; ask the operator for one.",
               &r);
    return false;
  }
  return true;
}

bool broker_core::may_broadcast(peer& p, const request& r) {
  if (!acl_ || acl_->may_broadcast(p.username)) return true;
  send_error(p, errc::not_authorized,
             "'" + p.username + "' may not broadcast: the ACL file has no 'broadcast' rule for '" + p.username +
                 "'; ask the operator for one.",
             &r);
  return false;
}

bool broker_core::may_use_group(peer& p, const request& r) {
  if (!acl_ || acl_->may_use_group(p.username, r.group_name)) return true;
  send_error(p, errc::not_authorized,
             "'" + p.username + "' may not use the group '" + r.group_name + "': no 'group' rule of the ACL file matches '" +
                 r.group_name + "'; ask the operator for one.",
             &r);
  return false;
}

void broker_core::handle_message(peer& p, request& r, const moment& now) {
  std::string uuid = r.message_uuid.empty() ? make_message_uuid() : std::move(r.message_uuid);
  char key_buf[dedupe_table::max_key_chars];
  const dedupe_table::hashed_key key(dedupe_table::key_in(key_buf, p.username, uuid));  // hashed once
  if (answer_duplicate(p, key, uuid, r)) return;

  auto m = std::make_shared<accepted_message>();
  message_record& rec = m->rec;
  usernames recipients;
  if (!recipients_of(p, r, rec, recipients)) return;
  rec.sender = p.username;
  rec.body = std::move(r.body);
  rec.accepted_at = now.wall;
  rec.expires_at = saturating_add(rec.accepted_at, bounded_ms(r.ttl_ms ? *r.ttl_ms : s_.dead_letter_ttl_ms));
  m->sent_at = format_iso8601_fixed(rec.accepted_at);
  m->origin = p.id;
  routing route = route_to(p, std::move(recipients));
  m->fan_out = route.live > 1;
  if (s_.persist_accepted) {
    int slots = 0;
    for (auto& t : route.targets) {
      if (t.live) t.slot = slots++;
    }
    m->journal = journal_slots(static_cast<std::size_t>(slots));
    m->unacknowledged = slots;
  }

  dedupe_table::entry& e = dedupe_.remember(key, now.steady, bounded_ms(s_.dedupe_window_ms));
  e.many = r.k != kind::send_message;
  if (e.many) {
    dedupe_.set_status(e, recipients_status(route.targets));
  } else {
    dedupe_.set_direct_status(e, route.targets.front().live);
  }
  e.first_waiter = p.id;
  ++p.replies_due;
  e.set_first_request_id(std::move(r.request_id));
  rec.message_uuid = std::move(uuid);
  m->awaiting_commit = true;
  for (std::size_t i = 0; i < route.targets.size(); ++i) {
    if (peer* to = route.targets[i].to ? find(route.targets[i].to) : nullptr) deliver(*to, m, route.targets[i].slot, now);
  }
  // Without persistence a message with no dead letter has nothing to commit.
  if (!s_.persist_accepted && route.live == static_cast<int>(route.targets.size())) {
    return finish_accept(e, *m, now.steady);
  }
  commit_accept(m, e, std::move(route), now);
}

// A (sender, uuid) pair seen within the window: answered with its first statuses, or after the
// first send's commit if that is still under way. False for a new pair (or one that failed).
bool broker_core::answer_duplicate(peer& p, const dedupe_table::hashed_key& key, const std::string& uuid, request& r) {
  auto* e = dedupe_.find(key);
  if (!e || e->failed) return false;
  ++counters_.duplicates;
  if (e->done) {
    append(p, [&](std::string& b) { e->append_accepted(b, uuid, true, r.request_id); });
  } else {
    e->rare_ones().more_waiters.emplace_back(p.id, std::move(r.request_id));
    ++p.replies_due;
  }
  return true;
}

// A live delivery to each online recipient with room, a dead letter for the others.
broker_core::routing broker_core::route_to(peer& p, usernames recipients) {
  routing route;
  route.targets.reserve(recipients.size());
  for (auto& name : recipients) {
    store_jobs::accept_target t{std::move(name), false, dead_letter_reason::recipient_offline};
    if (peer* to = find_online(t.name); to && to->open()) {
      if (to->out.bytes() > s_.max_outbound_bytes) {
        t.reason = dead_letter_reason::queue_overflow;
      } else {
        t.live = true;
        t.to = to->id;
        ++route.live;
        // Backpressure: the sender's reading is held after this frame.
        if (!to->slow && to != &p && to->out.bytes() > s_.max_outbound_bytes / 4 && p.blocked_on == 0) {
          p.blocked_on = to->id;
        }
      }
    }
    route.targets.push_back(std::move(t));
  }
  return route;
}

// Waits for the acknowledgements of its live deliveries (at most accept_delay_us), then goes
// to the store; after its commit the sender hears message_accepted, then the receipts of
// acknowledgements that came before it. The dedupe entry outlives the commit: an entry is only
// forgotten once done.
void broker_core::commit_accept(const message_ptr& m, dedupe_table::entry& e, routing route, const moment& now) {
  if (peer* origin = find(m->origin)) origin->pending_accept_bytes += m->rec.body.size();
  store_jobs::accept_batch::item item{m, std::move(route.targets), e.status_json(), now.wall};
  const steady_time due = now.steady + std::chrono::microseconds(s_.accept_delay_us);
  if (waiting_accepts_.empty() && may_store(*m, due, now.steady)) return to_store(std::move(item), e);
  m->accept_ticket = first_waiting_ticket_ + waiting_accepts_.size();
  waiting_accepts_.push_back({std::move(item), &e, due});
  release_accepts(now);
  deadline_may_have_moved();
}

// Every live delivery acknowledged (or none), or it waited long enough.
bool broker_core::may_store(const accepted_message& m, steady_time due, steady_time now) const {
  return m.unacknowledged == 0 || due <= now || s_.accept_delay_us == 0 || stopping_;
}

broker_core::waiting_accept* broker_core::waiting_of(const accepted_message& m) {
  if (m.accept_ticket < first_waiting_ticket_) return nullptr;
  const std::uint64_t i = m.accept_ticket - first_waiting_ticket_;
  if (i >= waiting_accepts_.size() || waiting_accepts_[i].item.m.get() != &m) return nullptr;
  return &waiting_accepts_[i];
}

// The waiting accepts at the front that may go to the store.
void broker_core::release_accepts(const moment& now) {
  while (!waiting_accepts_.empty()) {
    waiting_accept& w = waiting_accepts_.front();
    if (w.item.m) {
      if (!may_store(*w.item.m, w.due, now.steady)) break;
      to_store(std::move(w.item), *w.e);
    }
    waiting_accepts_.pop_front();
    ++first_waiting_ticket_;
  }
}

// Every live delivery of m acknowledged first: its accept has only its dedupe pair to write,
// which no other row's order depends on, so it goes at once, ahead of its turn if it has no
// dead letter.
void broker_core::acknowledged_first(accepted_message& m) {
  if (--m.unacknowledged > 0) return;
  waiting_accept* w = waiting_of(m);
  if (!w) return;
  for (auto& t : w->item.targets) {
    if (!t.live) return;
  }
  to_store(std::move(w->item), *w->e);
  w->item.m = nullptr;
}

// Into the open accept batch, or a new one submitted at once: what comes while the store is
// busy joins it until the store seals it, for one transaction.
void broker_core::to_store(store_jobs::accept_batch::item&& item, dedupe_table::entry& e) {
  if (open_accepts_.batch && open_accepts_.batch->add(std::move(item))) {
    open_accepts_.entries->push_back(&e);
    return;
  }
  open_accepts_.batch = std::make_shared<store_jobs::accept_batch>();
  open_accepts_.entries = std::make_shared<std::vector<dedupe_table::entry*>>(1, &e);
  open_accepts_.batch->add(std::move(item));
  auto done = [this, batch = open_accepts_.batch, entries = open_accepts_.entries](std::exception_ptr err,
                                                                                   const moment& at) {
    auto& items = batch->seal();
    if (open_accepts_.batch == batch) open_accepts_ = {};
    for (std::size_t i = 0; i < items.size(); ++i) {
      accepted_message& m = *items[i].m;
      if (peer* origin = find(m.origin)) origin->pending_accept_bytes -= m.rec.body.size();
      if (err) {
        m.failed = true;
        m.early_receipts.clear();
        m.early_dead_letters.clear();
        accept_failed(*(*entries)[i], m.rec.message_uuid, sqlite::failure_reason(err));
      } else {
        ++counters_.accepted;
        for (auto& t : items[i].targets) {
          if (!t.live) ++counters_.dead_lettered[static_cast<std::size_t>(t.reason)];
        }
        for (auto& early : m.early_dead_letters) ++counters_.dead_lettered[static_cast<std::size_t>(early.second)];
        finish_accept(*(*entries)[i], m, at.steady);
      }
    }
    // Freed here, on the thread that allocated them, not by whichever thread drops the batch
    // last: a block freed on the store's thread goes to that thread's malloc cache.
    std::vector<store_jobs::accept_batch::item>().swap(items);
  };
  submit(store_jobs::accept(open_accepts_.batch, s_.persist_accepted), std::move(done), on_failure::fail, "accept");
}

void broker_core::finish_accept(dedupe_table::entry& e, accepted_message& m, steady_time now) {
  const std::string& uuid = m.rec.message_uuid;
  e.done = true;
  e.at = now;
  if (peer* p = find(e.first_waiter)) {
    append(*p, [&](std::string& b) { e.append_accepted(b, uuid, false, e.first_request_id()); });
    reply_given(*p);
  }
  e.first_waiter = 0;
  if (e.rare) {
    for (auto& [id, request_id] : e.rare->more_waiters) {
      if (peer* p = find(id)) {
        append(*p, [&](std::string& b) { e.append_accepted(b, uuid, true, request_id); });
        reply_given(*p);
      }
    }
    e.forget_waiters();
  }
  m.awaiting_commit = false;
  for (auto& [receiver, at] : m.early_receipts) {
    notify_sender(m, [&](std::string& b) { append_delivered_frame(b, uuid, receiver, std::string_view(at.data(), at.size())); });
  }
  decltype(m.early_receipts)().swap(m.early_receipts);
  for (auto& [receiver, reason] : m.early_dead_letters) {
    notify_sender(m, [&](std::string& b) { append_dead_lettered_frame(b, uuid, receiver, to_string(reason)); });
  }
  std::vector<std::pair<std::string, dead_letter_reason>>().swap(m.early_dead_letters);
}

// Nothing of it was committed: the sender hears internal_error, never message_accepted, and the
// same uuid may be sent again.
void broker_core::accept_failed(dedupe_table::entry& e, const std::string& uuid, std::string_view why) {
  e.failed = true;
  e.done = true;
  const std::string text =
      "The broker could not store the message (" + std::string(why) + "); it was not accepted: send it again.";
  auto notify = [&](peer_id id, const std::string& request_id) {
    if (peer* p = find(id)) {
      push_error(*p, {errc::internal_error, text, request_id, uuid});
      reply_given(*p);
    }
  };
  notify(e.first_waiter, std::string(e.first_request_id()));
  if (e.rare) {
    for (auto& [id, request_id] : e.rare->more_waiters) notify(id, request_id);
  }
  e.first_waiter = 0;
  e.forget_waiters();
}

void broker_core::deliver(peer& to, const message_ptr& m, int slot, const moment& now) {
  // Behind the backlog, or behind what already waits for room in the window, or before the
  // log_in is answered: order holds.
  if (to.phase != peer_phase::logged_in || to.redelivering() || to.held_count() > 0 ||
      to.window_full()) {
    to.more().held.push_back({m, slot});
    return;
  }
  send_live(to, m, slot, now);
}

// Sends what waits in to.held while its window has room and no backlog is being redelivered.
void broker_core::refill(peer& to, const moment& now) {
  if (to.held_count() == 0) return;
  auto& x = *to.extras;
  while (to.receiving() && !to.redelivering() && x.held_next < x.held.size() && !to.window_full()) {
    auto h = std::move(x.held[x.held_next++]);
    send_live(to, h.msg, h.slot, now);
  }
  if (x.held_next == x.held.size()) {
    std::vector<held_delivery>().swap(x.held);
    x.held_next = 0;
  } else if (x.held_next > 1024 && x.held_next > x.held.size() / 2) {
    x.held.erase(x.held.begin(), x.held.begin() + static_cast<std::ptrdiff_t>(x.held_next));
    x.held_next = 0;
  }
}

// At the next tick, after the burst of frames being handled: acknowledgements followed by
// log_out in one write (listen --count) free the window but get nothing more handed to them.
// The redelivery pump goes on then too.
void broker_core::refill_soon(peer& to) {
  if (to.refill_due || (to.held_count() == 0 && !to.redelivering())) return;
  to.refill_due = true;
  refills_.push_back(to.id);
}

void broker_core::send_live(peer& to, const message_ptr& m, int slot, const moment& now) {
  if (m->fan_out) {
    // Serialized once; each recipient's buffer gets head + its name + tail.
    if (m->frame.head.empty()) m->frame = make_receive_frame(m->header());
    append(to, [&](std::string& b) {
      b += m->frame.head;
      append_json_string(b, to.username);
      b += m->frame.tail;
    });
  } else {
    append(to, [&](std::string& b) { append_live_frame(b, m->header(), to.username); });
  }
  register_in_flight(to, delivery{m, slot, 0, 1, now.wall}, now.steady);
  ++counters_.relayed;
}

}  // namespace ma
