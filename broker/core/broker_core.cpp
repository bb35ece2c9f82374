#include "broker/core/broker_core.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>

#include "broker/core/store_jobs.hpp"
#include "core/counted.hpp"
#include "core/duration.hpp"
#include "core/encode.hpp"
#include "core/names.hpp"
#include "core/utf8.hpp"

namespace ma {

broker_core::broker_core(const core_settings& s, port& p) : s_(s), port_(p), decoder_(s.max_message_bytes) {}

broker_core::~broker_core() = default;

void broker_core::start(const std::vector<group_record>& groups, std::vector<accepted_pair> recent,
                        const counts_by_recipient& expired, const moment& now) {
  // In a cluster the groups are the registry's (remote_group gives them): a file's own groups,
  // from before it joined, are not the cluster's.
  if (!s_.cluster) groups_.load(groups);
  // The dedupe window goes on across the restart: what was accepted within it is answered
  // again with its first statuses, whether it was acknowledged since or not.
  const auto window = bounded_ms(s_.dedupe_window_ms);
  for (auto& pair : recent) {
    auto& e = dedupe_.remember(dedupe_table::key_of(pair.sender, pair.message_uuid), now.steady, window);
    e.done = true;
    e.many = pair.status.starts_with('[');
    dedupe_.set_status(e, e.many ? dedupe_table::from_recipients_json(pair.status) : std::move(pair.status));
    e.at = now.steady;
  }
  next_expiry_ = now.steady + expiry_interval;
  next_idle_release_ = now.steady + idle_buffers_after;
  last_seen_ = now.steady;
  warn_letters({}, expired, now.steady);
  deadline_may_have_moved();
}

void broker_core::reload(const core_settings& s) {
  s_ = s;
  decoder_.set_max_message_bytes(s_.max_message_bytes);
  // Login timeouts and evictions may come sooner now: check every peer at the next tick.
  liveness_.clear();
  for (auto& [id, p] : peers_) {
    p->check_at = p->connected_at;
    liveness_.push_back({p->check_at, id});
  }
  std::make_heap(liveness_.begin(), liveness_.end(), std::greater<>());
  deadline_may_have_moved();
}

// ------------------------------------------------------------------------------------------
// inputs

void broker_core::connected(peer_id id, std::string address, const moment& now) {
  observe(now.steady);
  auto [it, fresh] = peers_.emplace(id, std::make_unique<peer>(id, std::move(address), now.steady));
  if (!fresh) return;
  not_logged_in_.insert(id);
  spdlog::debug("session {}: connected from {}", id, it->second->address);
  schedule_check(*it->second, saturating_add(now.steady, bounded_ms(s_.login_timeout_ms)));
  deadline_may_have_moved();
}

void broker_core::frame_received(peer_id id, std::string_view frame, const moment& now) {
  observe(now.steady);
  peer* p = find(id);
  if (!p || !p->open() || p->reading != peer_reading::open) return;
  p->last_activity = now.steady;
  if (spdlog::should_log(spdlog::level::debug)) spdlog::debug("session {}: <- {}", id, escape_for_log(frame, 200));
  auto decoded = decoder_.decode(frame);
  if (!decoded) {
    push_error(*p, decoded.error());
  } else {
    handle(*p, *decoded, now);
  }
  if (p->blocked_on) wait_for_room(*p, now);
  check_pending_accepts(*p);
  // Replies can not be dropped: a peer that sends requests and does not read their answers
  // is not read from either until it reads (its TCP window then stops it).
  if (p->reading == peer_reading::open && p->out.bytes() > s_.max_outbound_bytes) {
    hold(*p, peer_reading::held_for_output);
  }
  deadline_may_have_moved();
}

void broker_core::frame_too_large(peer_id id, const moment&) {
  peer* p = find(id);
  if (!p || !p->open()) return;
  if (p->phase == peer_phase::logged_in) {
    send_error(*p, errc::frame_too_large,
               "A frame was longer than max_frame_bytes (" + std::to_string(s_.max_frame_bytes) +
                   "); the connection is closed: send smaller messages, one JSON object per line.");
  } else {
    send_error(*p, errc::frame_too_large,
               "A frame before log_in was longer than " + std::to_string(frame_limit_before_log_in()) +
                   " bytes; the connection is closed: log in first, with one small log_in frame.");
  }
  begin_close(*p);
}

void broker_core::written(peer_id id, std::size_t n, const moment& now) {
  observe(now.steady);
  peer* p = find(id);
  if (!p || n == 0) return;
  p->out.consume(n);
  p->out.release_if_small();
  p->last_write = now.steady;
  if (p->reading == peer_reading::held_for_output && p->out.bytes() <= s_.max_outbound_bytes / 2) resume(*p);
  if (p->presence_behind && p->out.bytes() <= presence_changes::max_behind_bytes / 2 && p->open()) {
    p->presence_behind = false;
    push(*p, presence_changes::catch_up_frame(online_names()));
  }
  if (p->redelivering()) pump(*p, now);
  if (p->has_stalled() || p->slow) release_stalled(*p);
  deadline_may_have_moved();
}

void broker_core::tls_established(peer_id id, const std::string& name, const moment&) {
  peer* p = find(id);
  if (!p || !p->open() || name.empty()) return;
  if (!is_valid_username(name)) {
    spdlog::warn("session {}: the client certificate from {} names '{}', which is not a username", id, p->address,
                 escape_for_log(name, 64));
    send_error(*p, errc::auth_failed,
               "Your client certificate's common name is not a username (1 to 64 of A-Z a-z 0-9 . _ -); the "
               "connection is closed: ask for a certificate that names you.");
    return begin_close(*p);
  }
  p->more().certified_name = name;
}

void broker_core::finished_sending(peer_id id, const moment&) {
  peer* p = find(id);
  if (!p || !p->open()) return;
  p->done_sending = true;
  if (p->replies_due == 0) begin_close(*p);
}

void broker_core::disconnected(peer_id id, const moment& now) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return;
  std::unique_ptr<peer> gone = std::move(it->second);
  peers_.erase(it);
  not_logged_in_.erase(id);
  peer& p = *gone;
  release_all_stalled(p);
  if (p.username.empty()) {
    spdlog::debug("session {}: closed before logging in", id);
  } else {
    if (forget_name(p)) presence_changed(p.username, false, now);
    if (!p.remote) {  // a remote peer's going is logged by drop_remote
      spdlog::info("session {}: '{}' {} ({} unacknowledged)", id, p.username,
                   p.logged_out ? "logged out" : "disconnected", p.in_flight.size() + p.held_count());
      represent_remote(p.username, now);
    }
  }
  fail_deliveries(p, stopping_ ? dead_letter_reason::broker_restart : dead_letter_reason::recipient_disconnected, now);
  deadline_may_have_moved();
}

// What p had in flight or held goes to the Dead Letter Channel; p keeps none of it.
void broker_core::fail_deliveries(peer& p, dead_letter_reason reason, const moment& now) {
  std::vector<failed_delivery> failed;
  failed.reserve(p.in_flight.size() + p.held_count());
  // In the order they were sent, so that redelivery keeps the order.
  for (auto& d : p.in_flight.drain()) failed.push_back({p.username, std::move(d), true});
  for (std::size_t i = 0; i < p.held_count(); ++i) {
    auto& h = p.extras->held[p.extras->held_next + i];
    failed.push_back({p.username, delivery{h.msg, h.slot, 0, 1, h.msg->rec.accepted_at}, false});
  }
  if (p.extras) {
    p.extras->held.clear();
    p.extras->held_next = 0;
  }
  p.redelivery.reset();
  p.redeliveries_in_flight = 0;
  if (!failed.empty()) dead_letter(std::move(failed), reason, now);
}

void broker_core::tick(const moment& now) {
  observe(now.steady);
  release_accepts(now);
  expire_acks(now);
  start_due_checks(now);
  check_liveness(now);
  end_room_waits(now);
  if (auto due = presence_.due(); due && *due <= now.steady) flush_presence({});
  refill_due_peers(now);
  if (auto due = warnings_.next_due(); due && *due <= now.steady) warn_letters({}, {}, now.steady);
  if (now.steady >= next_idle_release_) {
    next_idle_release_ = now.steady + idle_buffers_after;
    release_idle_buffers(now.steady);
  }
  if (now.steady >= next_expiry_ && !stopping_) {
    next_expiry_ = now.steady + expiry_interval;
    run_expiry(now);
  }
  if (fold_waits() && now.steady >= next_fold_) run_fold();
  reported_deadline_ = next_deadline();
  port_.deadline_moved(reported_deadline_);
}

steady_time broker_core::next_deadline() const {
  if (!refills_.empty()) return steady_time::min();
  steady_time next = steady_time::max();
  auto sooner = [&next](steady_time t) { next = std::min(next, t); };
  if (!ack_deadlines_.empty()) sooner(ack_deadlines_.front().at);
  if (!waiting_accepts_.empty()) sooner(waiting_accepts_.front().due);
  if (!room_waits_.empty()) sooner(room_waits_.front().until);
  if (!liveness_.empty()) sooner(liveness_.front().at);
  if (!auth_turns_.empty()) sooner(auth_turns_.front().at);
  if (auto due = presence_.due()) sooner(*due);
  if (auto due = warnings_.next_due()) sooner(*due);
  if (!peers_.empty()) sooner(next_idle_release_);
  if (!stopping_) sooner(next_expiry_);
  if (fold_waits()) sooner(next_fold_);
  return next;
}

bool broker_core::make_room(const moment&) {
  if (not_logged_in_.empty()) return false;
  peer* oldest = find(*not_logged_in_.begin());
  if (!oldest) {
    not_logged_in_.erase(not_logged_in_.begin());
    return false;
  }
  spdlog::info("session {}: closed before logging in to make room for a new connection", oldest->id);
  send_error(*oldest, errc::server_busy,
             "The broker is full and this connection had not logged in; it is closed to make room: log in right "
             "after connecting.");
  begin_close(*oldest);
  return true;
}

void broker_core::stop(const moment& now) {
  if (stopping_) return;
  stopping_ = true;
  release_accepts(now);  // what waits for acknowledgements is written now
  presence_.clear();
  // Remote peers have no connection to close: what was relayed to them and not acknowledged
  // becomes dead letters now, as for the sessions when they close.
  std::vector<peer_id> remote;
  for (auto& [id, p] : peers_) {
    if (p->remote) remote.push_back(id);
  }
  for (peer_id id : remote) disconnected(id, now);
  for (auto& [id, p] : peers_) begin_close(*p);
  deadline_may_have_moved();
}

outbox* broker_core::outbox_to_flush(peer_id id) {
  peer* p = find(id);
  if (!p) return nullptr;
  p->flush_asked = false;
  return &p->out;
}

outbox* broker_core::outbox_of(peer_id id) {
  peer* p = find(id);
  return p ? &p->out : nullptr;
}

std::size_t broker_core::in_flight_count() const {
  std::size_t n = 0;
  for (auto& [id, p] : peers_) n += p->in_flight.size();
  return n;
}

// ------------------------------------------------------------------------------------------
// peers

peer* broker_core::find(peer_id id) {
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : it->second.get();
}

peer* broker_core::find_online(std::string_view name) {
  auto it = online_.find(name);
  return it == online_.end() ? nullptr : find(it->second);
}

std::vector<std::string_view> broker_core::online_names() const {
  std::vector<std::string_view> names;
  names.reserve(online_.size());
  for (auto& [name, id] : online_) names.emplace_back(name);
  return names;
}

void broker_core::queue_flush(peer& p) {
  if (p.flush_asked) return;
  p.flush_asked = true;
  port_.flush(p.id);
}

void broker_core::push(peer& p, std::string frame) {
  p.out.push(std::move(frame));
  queue_flush(p);
}

void broker_core::send_error(peer& p, errc code, std::string text, const request* r) {
  push_error(p, {code, std::move(text), r ? r->request_id : std::string(), r ? r->message_uuid : std::string()});
}

void broker_core::push_error(peer& p, const protocol_error& e) {
  const auto i = static_cast<std::size_t>(e.code);
  ++counters_.errors[i];
  if (p.phase != peer_phase::logged_in) ++counters_.refused_log_ins[i];
  push(p, make_error_frame(e));
}

void broker_core::begin_close(peer& p) {
  if (!p.open()) return;
  p.phase = peer_phase::closing;
  not_logged_in_.erase(p.id);
  port_.close_after_flush(p.id);
  release_all_stalled(p);
}

void broker_core::reply_given(peer& p) {
  if (p.replies_due > 0) --p.replies_due;
  if (p.done_sending && p.replies_due == 0) begin_close(p);
  check_pending_accepts(p);
}

// Fairness at the store, and back-pressure while it can not commit: a session whose messages
// waiting for their commit reach max_pending_accepts (or max_pending_accept_bytes) is read no
// further, so one sender can not fill the store's queue ahead of everyone else, and a store
// that can not commit (the file locked by another process, a full disk) holds its senders
// instead of queueing all they send. Its TCP window then stops it.
void broker_core::check_pending_accepts(peer& p) {
  const bool over = p.replies_due >= s_.max_pending_accepts || p.pending_accept_bytes >= max_pending_accept_bytes;
  if (p.reading == peer_reading::open && over && p.open()) {
    hold(p, peer_reading::held_for_commits);
  } else if (p.reading == peer_reading::held_for_commits && p.replies_due <= s_.max_pending_accepts / 2 &&
             p.pending_accept_bytes <= max_pending_accept_bytes / 2) {
    resume(p);
  }
}

void broker_core::hold(peer& p, peer_reading why) {
  p.reading = why;
  port_.hold_reading(p.id);
}

void broker_core::resume(peer& p) {
  if (p.reading == peer_reading::open) return;
  // What it sent meanwhile waits unread: the hold was no silence of its own.
  if (held_by_broker(p.reading)) p.last_activity = std::max(p.last_activity, last_seen_);
  p.reading = peer_reading::open;
  if (p.open()) port_.resume_reading(p.id);
}

// ------------------------------------------------------------------------------------------
// login timeout and eviction: one check per peer in a min-heap, at the earliest time it could
// be due. A frame moves the real deadline later without touching the heap: the check finds
// that and pushes itself again.

void broker_core::schedule_check(peer& p, steady_time at) {
  p.check_at = at;
  liveness_.push_back({at, p.id});
  std::push_heap(liveness_.begin(), liveness_.end(), std::greater<>());
}

std::chrono::milliseconds broker_core::evict_after(const peer& p) const {
  return bounded_ms(saturating_mul_ms(static_cast<std::uint64_t>(p.heartbeat.count()), s_.eviction_factor));
}

void broker_core::check_liveness(const moment& now) {
  while (!liveness_.empty() && liveness_.front().at <= now.steady) {
    std::pop_heap(liveness_.begin(), liveness_.end(), std::greater<>());
    const liveness_check c = liveness_.back();
    liveness_.pop_back();
    peer* p = find(c.id);
    if (!p || !p->open() || p->check_at != c.at) continue;  // gone, closing, or checked later
    check_one(*p, now);
  }
}

void broker_core::check_one(peer& p, const moment& now) {
  if (p.phase == peer_phase::awaiting_log_in) {
    const auto due = saturating_add(p.connected_at, bounded_ms(s_.login_timeout_ms));
    if (now.steady < due) return schedule_check(p, due);
    spdlog::info("session {}: no log_in within {} ms, closing", p.id, s_.login_timeout_ms);
    send_error(p, errc::login_timeout,
               "No log_in arrived within login_timeout_ms (" + std::to_string(s_.login_timeout_ms) +
                   "); the connection is closed: log in right after connecting.");
    return begin_close(p);
  }
  const auto silence = evict_after(p);
  // Held by the broker, its frames wait unread: its silence counts from the resume.
  const auto due = held_by_broker(p.reading) ? saturating_add(now.steady, silence)
                                             : saturating_add(p.last_activity, silence);
  if (now.steady < due) return schedule_check(p, due);
  spdlog::info("session {}: '{}' evicted after {} ms of silence", p.id, p.username, silence.count());
  send_error(p, errc::heartbeat_timeout,
             "Nothing arrived for " + std::to_string(silence.count()) +
                 " ms; you were evicted: send a heartbeat every heartbeat_interval_ms.");
  begin_close(p);
}

// An input that finds the tick overdue by more than max_tick_lateness means the broker itself
// stood still (SIGSTOP, a frozen disk, swapping): the frames peers sent meanwhile wait unread
// in their sockets, and some of them may be read before the tick runs. The time it stood still
// is not their silence, nor time they had to acknowledge: deadlines move on by it, so that
// nobody is evicted or dead-lettered for the broker's pause.
// A deadline that was still ahead when the core last ran, passed by more than
// max_tick_lateness: the broker stood still meanwhile (SIGSTOP, a debugger, a frozen VM). Only
// such a deadline counts: after the credit, deadlines that were already overdue then (inputs
// handled before the late tick report them again) are not a second pause.
void broker_core::observe(steady_time now) {
  const steady_time due = reported_deadline_;
  if (due != steady_time::min() && due != steady_time::max() && due > last_seen_ && now - due > max_tick_lateness) {
    credit_pause(now - last_seen_, now);
    reported_deadline_ = now;  // credited once: the overdue tick runs next and sets it again
  }
  last_seen_ = std::max(last_seen_, now);
}

void broker_core::credit_pause(steady_time::duration pause, steady_time now) {
  spdlog::warn("the broker stood still for {} ms: deadlines move on by that much",
               std::chrono::duration_cast<std::chrono::milliseconds>(pause).count());
  for (auto& [id, p] : peers_) {
    p->last_activity = std::min(p->last_activity + pause, now);
    p->connected_at = std::min(p->connected_at + pause, now);
    if (p->reading == peer_reading::held_for_room) p->room_until += pause;
  }
  for (auto& d : ack_deadlines_) d.at += pause;
  for (auto& w : room_waits_) w.until += pause;
}

// ------------------------------------------------------------------------------------------
// backpressure

void broker_core::wait_for_room(peer& sender, const moment& now) {
  peer* to = find(sender.blocked_on);
  if (!to || !to->open() || !sender.open() || to->out.bytes() <= s_.max_outbound_bytes / 8) {
    sender.blocked_on = 0;
    return;
  }
  to->more().stalled.push_back(sender.id);
  sender.room_until = now.steady + room_limit;
  room_waits_.push_back({sender.room_until, sender.id});
  hold(sender, peer_reading::held_for_room);
}

void broker_core::end_room_waits(const moment& now) {
  while (!room_waits_.empty() && room_waits_.front().until <= now.steady) {
    const room_wait w = room_waits_.front();
    room_waits_.pop_front();
    peer* sender = find(w.sender);
    if (!sender || sender->reading != peer_reading::held_for_room || sender->room_until != w.until) continue;
    // The recipient did not drain in time: it is slow, and senders no longer wait for it.
    if (peer* to = find(sender->blocked_on)) to->slow = true;
    sender->blocked_on = 0;
    resume(*sender);
  }
}

// After a write: senders held for this peer go on once it has drained.
void broker_core::release_stalled(peer& to) {
  if (to.out.bytes() > s_.max_outbound_bytes / 8) return;
  to.slow = false;
  release_all_stalled(to);
}

void broker_core::release_all_stalled(peer& to) {
  if (!to.has_stalled()) return;
  for (peer_id id : to.extras->stalled) {
    peer* sender = find(id);
    if (sender && sender->reading == peer_reading::held_for_room && sender->blocked_on == to.id) {
      sender->blocked_on = 0;
      resume(*sender);
    }
  }
  to.extras->stalled.clear();
}

// ------------------------------------------------------------------------------------------
// housekeeping

// Room was made during the last burst (acknowledgements, ack timeouts): what waits goes out.
void broker_core::refill_due_peers(const moment& now) {
  auto ids = std::move(refills_);
  refills_.clear();
  for (peer_id id : ids) {
    if (peer* p = find(id)) {
      p->refill_due = false;
      pump(*p, now);
      refill(*p, now);
    }
  }
}

// A peer that wrote nothing for a while gives its buffers back, so an idle connection costs a
// few KiB, not the largest frame it ever sent.
void broker_core::release_idle_buffers(steady_time now) {
  for (auto& [id, p] : peers_) {
    if (p->out.empty() && now - p->last_write >= idle_buffers_after) {
      p->release_memory();
    } else {
      p->in_flight.release_memory();
    }
  }
  std::erase_if(taken_over_, [&](const auto& t) { return now - t.second >= takeover_guard; });
}

void broker_core::run_expiry(const moment& now) {
  const store_jobs::retention keep{bounded_ms(s_.delivered_retention_ms), bounded_ms(s_.parked_retention_ms),
                                   bounded_ms(s_.expired_retention_ms)};
  auto job = store_jobs::expire(now.wall, bounded_ms(s_.dedupe_window_ms), max_dedupe_entries, keep);
  submit(
      std::move(job.run),
      [this, r = job.result](std::exception_ptr e, const moment& at) {
        if (e) return;
        warn_letters({}, r->expired, at.steady);
        if (r->removed_delivered + r->removed_parked + r->removed_expired > 0) {
          spdlog::info("retention: removed {}, {} and {} (past --delivered-retention, --parked-retention, "
                       "--expired-retention)",
                       counted(static_cast<std::uint64_t>(r->removed_delivered), "delivered dead letter"),
                       counted(static_cast<std::uint64_t>(r->removed_parked), "parked dead letter"),
                       counted(static_cast<std::uint64_t>(r->removed_expired), "expired dead letter"));
        }
      },
      on_failure::fail, "expiry sweep");
}

void broker_core::run_fold() {
  folding_ = true;
  unfolded_after_fold_ = 0;
  auto job = store_jobs::fold_redelivered(fold_chunk);
  submit(
      std::move(job.run),
      [this, folded = job.result](std::exception_ptr e, const moment& at) {
        folding_ = false;
        if (e) {
          // They stay in `redelivered`, delivered to every reader; the next try (or start) folds them.
          next_fold_ = at.steady + expiry_interval;
          return;
        }
        // Fewer than a chunk: it took every row there was when it ran; those of the jobs
        // submitted after it (run after it) are left.
        unfolded_ = *folded < fold_chunk ? unfolded_after_fold_ : std::max<std::int64_t>(unfolded_ - *folded, 1);
        // What is left at once (behind what was queued meanwhile), unless acknowledgements that
        // came meanwhile put the fold off.
        next_fold_ = std::max(next_fold_, at.steady);
      },
      on_failure::fail, "folding acknowledged redeliveries");
}

void broker_core::warn_letters(const counts_by_recipient& parked, const counts_by_recipient& expired,
                               steady_time now) {
  for (auto& [who, n] : parked) {
    warnings_.add_parked(who, n);
    counters_.parked += static_cast<std::uint64_t>(n);
  }
  for (auto& [who, n] : expired) {
    warnings_.add_expired(who, n);
    counters_.expired += static_cast<std::uint64_t>(n);
  }
  for (auto& line : warnings_.due(now)) spdlog::warn("{}", line);
  deadline_may_have_moved();
}

void broker_core::submit(store_job job, core_completion done, on_failure policy, const char* name) {
  port_.submit(
      std::move(job),
      [this, done = std::move(done)](std::exception_ptr e, const moment& now) {
        observe(now.steady);
        done(e, now);
        deadline_may_have_moved();
      },
      policy, name);
}

void broker_core::deadline_may_have_moved() {
  const auto next = next_deadline();
  if (next >= reported_deadline_) return;
  reported_deadline_ = next;
  port_.deadline_moved(next);
}

}  // namespace ma
