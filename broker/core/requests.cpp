// The requests that are not messages: log_in, heartbeat, log_out, the lists, group changes,
// and presence.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/counted.hpp"
#include "broker/core/broker_core.hpp"
#include "broker/core/store_jobs.hpp"
#include "core/duration.hpp"
#include "core/encode.hpp"
#include "core/replies.hpp"
#include "core/utf8.hpp"

namespace ma {

namespace {
// Said before the store is asked, and when the store finds another create got there first.
std::string exists_already(const std::string& group) {
  return "The group '" + group + "' exists already; use join_group to enter it.";
}
}  // namespace

void broker_core::handle(peer& p, request& r, const moment& now) {
  if (p.phase != peer_phase::logged_in && r.k != kind::log_in && r.k != kind::heartbeat) {
    return send_error(p, errc::not_logged_in,
                      std::string(to_string(r.k)) + " needs a session: send log_in with your sender_username first.",
                      &r);
  }
  switch (r.k) {
    case kind::log_in:
      return handle_log_in(p, r, now);
    case kind::heartbeat:
      return push(p, make_heartbeat_ack(r.request_id));
    case kind::log_out:
      push(p, make_log_out_ack(r.request_id));
      p.logged_out = true;  // said when the connection is gone (disconnected)
      return begin_close(p);
    case kind::get_user_list:
      return push(p, make_user_list(online_names(), r.request_id));
    case kind::send_message:
    case kind::multicast_message:
    case kind::broadcast_message:
    case kind::group_message:
      return handle_message(p, r, now);
    case kind::acknowledge_message:
      return handle_ack(p, r, now);
    case kind::create_group:
    case kind::join_group:
    case kind::leave_group:
      return handle_group_change(p, r, now);
    case kind::get_group_list:
      return push(p, make_group_list(groups_.of(p.username), r.request_id));
    default:
      return send_error(p, errc::unknown_message_id, std::string(to_string(r.k)) + " is not sent to the broker.", &r);
  }
}

void broker_core::handle_log_in(peer& p, request& r, const moment& now) {
  if (p.phase == peer_phase::logged_in) {
    return send_error(p, errc::already_logged_in,
                      "This connection is already logged in as '" + p.username +
                          "'; open another connection for another user.",
                      &r);
  }
  // A certificate that names the user wins over the name claimed, and needs no password.
  if (!p.certified_name().empty()) {
    r.username = p.certified_name();
    return accept_log_in(p, r, true, now);
  }
  if (s_.password_file.empty()) return accept_log_in(p, r, false, now);
  // With a password file every log_in is checked first, off this thread, in the turn its
  // source address has (login_failures); its later frames wait.
  p.log_in_checked = std::make_unique<request>(std::move(r));
  hold(p, peer_reading::held_for_auth);
  ++p.replies_due;
  const auto turn = failures_.turn(login_failures::host_of(p.address), now.steady);
  if (turn <= now.steady) return check_password(p);
  auth_turns_.push_back({turn, p.id});
  std::push_heap(auth_turns_.begin(), auth_turns_.end(), std::greater<>());
}

void broker_core::check_password(peer& p) {
  if (checks_in_flight_ >= max_checks_in_flight) {
    auto r = std::move(p.log_in_checked);
    reply_given(p);
    send_error(p, errc::server_busy,
               "The broker is checking " + std::to_string(max_checks_in_flight) +
                   " passwords already; the connection is closed: log in again in a moment.",
               r.get());
    return begin_close(p);
  }
  ++checks_in_flight_;
  const request& r = *p.log_in_checked;
  port_.check_password(r.username, r.password.value_or(std::string()),
                       [this, id = p.id, host = std::string(login_failures::host_of(p.address))](
                           bool right, const moment& at) {
                         observe(at.steady);
                         --checks_in_flight_;
                         password_checked(id, host, right, at);
                         deadline_may_have_moved();
                       });
}

// The passwords whose turn came (login_failures spaced them out).
void broker_core::start_due_checks(const moment& now) {
  while (!auth_turns_.empty() && auth_turns_.front().at <= now.steady) {
    std::pop_heap(auth_turns_.begin(), auth_turns_.end(), std::greater<>());
    const peer_id id = auth_turns_.back().id;
    auth_turns_.pop_back();
    if (peer* p = find(id); p && p->open() && p->log_in_checked) check_password(*p);
  }
}

// A wrong password, a missing one and an unknown name get the same sentence (and took the same
// time: the checker verifies unknown names against a dummy hash), then the connection closes.
void broker_core::password_checked(peer_id id, const std::string& host, bool right, const moment& now) {
  right ? failures_.succeeded(host) : failures_.failed(host, now.steady);
  peer* p = find(id);
  if (!p || !p->open() || !p->log_in_checked) return;
  auto r = std::move(p->log_in_checked);
  reply_given(*p);
  if (!p->open()) return;
  if (!right) {
    refused_log_in(*p, r->username, now.steady);
    send_error(*p, errc::auth_failed,
               "The username or the password is not right; the connection is closed: log in with the right ones.",
               r.get());
    return begin_close(*p);
  }
  resume(*p);
  accept_log_in(*p, *r, true, now);
}

// At warn, at most refused_lines_per_interval lines per interval; the rest are counted in the
// next line.
void broker_core::refused_log_in(const peer& p, const std::string& name, steady_time now) {
  if (now - refused_.since >= letter_warning_interval) {
    if (refused_.unlogged > 0) {
      spdlog::warn("{} more log_ins were refused (wrong password or unknown name) in the last {} s",
                   refused_.unlogged, letter_warning_interval.count());
    }
    refused_ = {now, 0, 0};
  }
  if (refused_.logged < refused_lines_per_interval) {
    ++refused_.logged;
    spdlog::warn("session {}: log_in as '{}' from {} refused: wrong password or unknown name", p.id,
                 escape_for_log(name, 64), p.address);
  } else {
    ++refused_.unlogged;
  }
}

// An authenticated log_in (a right password, or a certificate that names the user) for a name
// that is online: the name changes hands.
// The old session hears session_taken_over and closes; what it had received and not
// acknowledged (and what waited for it) goes to the Dead Letter Channel before the new session
// counts its letters, so the new one gets it at once, by redelivery. A name taken over less
// than takeover_guard ago is refused instead (username_taken): two agents with the same
// credentials do not take it from each other forever.
bool broker_core::take_over(peer& old, peer& by, const request& r, const moment& now) {
  auto [it, fresh] = taken_over_.try_emplace(old.username, now.steady);
  if (!fresh && now.steady - it->second < takeover_guard) {
    send_error(by, errc::username_taken,
               "The username '" + old.username + "' was taken over by another connection less than " +
                   std::to_string(takeover_guard.count()) +
                   " s ago; one agent per name: stop the other one, or try again later.",
               &r);
    return false;
  }
  it->second = now.steady;
  spdlog::info("session {}: '{}' taken over by session {} from {}", old.id, old.username, by.id, by.address);
  send_error(old, errc::session_taken_over,
             "Another connection logged in as '" + old.username +
                 "' with its password; this one is closed, and what it had not acknowledged goes to the new one.");
  forget_name(old);
  fail_deliveries(old, dead_letter_reason::recipient_disconnected, now);
  begin_close(old);
  by.took_over = true;
  return true;
}

// The name is held from the log_in on, so no other peer can take it while the store counts
// the peer's dead letters; its later frames wait for the answer.
void broker_core::accept_log_in(peer& p, request& r, bool authenticated, const moment& now) {
  // A send-only peer holds no name: it may sit beside the user's receiving peer.
  peer* old = r.send_only ? nullptr : find_online(r.username);
  // Online at another broker: the cluster's claim decides (a takeover there, or username_taken).
  if (old && old->remote) {
    drop_remote(*old, now);
    old = nullptr;
  }
  if (old) {
    if (!authenticated) {
      return send_error(p, errc::username_taken,
                        "The username '" + r.username + "' is online on another connection; choose another name.", &r);
    }
    if (!take_over(*old, p, r, now)) return;
  }
  if (stopping_) return;
  p.username = r.username;
  p.send_only = r.send_only;
  p.window = r.receive_window ? static_cast<std::uint32_t>(*r.receive_window) : 0;  // at most max_receive_window
  if (p.send_only) {
    send_only_.emplace(p.username, p.id);
  } else {
    online_.erase(p.username);  // a name taken over: its key is the old peer's
    online_.emplace(p.username, p.id);
  }
  // The broker grants its own interval, or a longer one the agent asks for (up to 10 times).
  auto granted = std::min(s_.heartbeat_interval_ms, max_duration_ms);
  if (r.heartbeat_interval_ms) granted = std::clamp(*r.heartbeat_interval_ms, granted, saturating_mul_ms(granted, 10));
  p.heartbeat = std::chrono::milliseconds(granted);
  p.phase = peer_phase::logging_in;
  not_logged_in_.erase(p.id);
  const auto evict_at = saturating_add(now.steady, evict_after(p));
  if (evict_at < p.check_at) schedule_check(p, evict_at);
  hold(p, peer_reading::held_for_store);
  ++p.replies_due;

  if (!s_.cluster || p.send_only) return count_letters(p, std::move(r.request_id));
  port_.claim_name(p.username, authenticated, [this, id = p.id, user = p.username, request_id = std::move(r.request_id)](
                                   claim_outcome outcome, const moment& at) mutable {
    observe(at.steady);
    name_claimed(id, user, outcome, std::move(request_id), at);
    deadline_may_have_moved();
  });
}

// The cluster's answer to a log_in's claim: on to its dead letters, or refused.
void broker_core::name_claimed(peer_id id, const std::string& user, claim_outcome outcome, std::string request_id,
                               const moment& now) {
  peer* p = find(id);
  if (!p || p->username != user) {  // gone meanwhile: nothing here holds the name
    if (outcome == claim_outcome::claimed) port_.release_name(user);
    return;
  }
  if (outcome == claim_outcome::claimed) {
    p->claimed = true;
    return count_letters(*p, std::move(request_id));
  }
  if (outcome == claim_outcome::taken) {
    spdlog::info("session {}: log_in as '{}' refused: online at another broker of the cluster", id, user);
    return log_in_failed(*p, {errc::username_taken,
                              "The username '" + user +
                                  "' is online at another broker of the cluster; choose another name.",
                              request_id,
                              {}},
                         now);
  }
  spdlog::warn("session {}: log_in as '{}' refused: the cluster's registry did not answer", id, user);
  log_in_failed(*p, {errc::server_busy,
                     "The broker could not reach the cluster to hold your name; the connection is closed: log in "
                     "again in a moment.",
                     request_id,
                     {}},
                now);
  begin_close(*p);  // as every server_busy
}

// Another broker of the cluster took the name over (a log_in there with its password or
// certificate): the session here ends as a takeover on this broker would end it, and the name is
// released (forget_name) before the other broker hears back.
void broker_core::taken_over_elsewhere(const std::string& user, const moment& now) {
  peer* old = find_online(user);
  if (!old) return;
  spdlog::info("session {}: '{}' taken over at another broker of the cluster", old->id, user);
  send_error(*old, errc::session_taken_over,
             "Another connection logged in as '" + user +
                 "' at another broker of the cluster with its password; this one is closed, and what it had not "
                 "acknowledged waits for the user in the Dead Letter Channel.");
  forget_name(*old);
  presence_changed(user, false, now);
  fail_deliveries(*old, dead_letter_reason::recipient_disconnected, now);
  begin_close(*old);
  represent_remote(user, now);
  deadline_may_have_moved();
}

// A log_in that got as far as holding its name fails: the name is free again and the peer may
// log in anew.
void broker_core::log_in_failed(peer& p, const protocol_error& why, const moment& now) {
  reply_given(p);
  forget_name(p);
  represent_remote(p.username, now);
  p.username.clear();
  if (p.open()) {
    p.phase = peer_phase::awaiting_log_in;
    not_logged_in_.insert(p.id);
  }
  resume(p);
  push_error(p, why);
}

void broker_core::count_letters(peer& p, std::string request_id) {
  auto job = store_jobs::count_pending(p.username);
  auto done = [this, id = p.id, pending = job.result, request_id = std::move(request_id)](std::exception_ptr e,
                                                                                        const moment& at) {
    peer* q = find(id);
    if (!q) return;
    if (e && q->remote) {
      spdlog::error("counting the dead letters of '{}' failed; they wait for its next login", q->username);
      return logged_in(id, 0, request_id, at);
    }
    if (e) {
      spdlog::error("session {}: counting the dead letters of '{}' failed", id, q->username);
      return log_in_failed(*q, {errc::internal_error,
                                "The broker could not read its database; try logging in again in a moment.",
                                request_id,
                                {}},
                           at);
    }
    logged_in(id, *pending, request_id, at);
  };
  submit(std::move(job.run), std::move(done), on_failure::fail, "count the dead letters of a login");
}

void broker_core::logged_in(peer_id id, std::int64_t pending, const std::string& request_id, const moment& now) {
  peer* p = find(id);
  if (!p || !p->open()) return;
  p->phase = peer_phase::logged_in;
  if (p->remote) {
    spdlog::info("'{}' online at broker {} of the cluster ({} here)", p->username, p->extras->remote_broker,
                 counted(static_cast<std::uint64_t>(pending), "pending dead letter"));
    presence_changed(p->username, true, now);
    return pending > 0 ? start_redelivery(*p) : refill(*p, now);
  }
  port_.set_frame_limit(id, s_.max_frame_bytes);
  resume(*p);
  const auto names = online_names();
  push(*p, make_log_in_ack({p->username, names, static_cast<std::uint64_t>(p->heartbeat.count()), s_.ack_timeout_ms,
                            s_.max_frame_bytes, pending, s_.broker_name, p->send_only, p->window, request_id}));
  spdlog::info("session {}: '{}' logged in from {}{} ({})", id, p->username, p->address,
               p->send_only ? ", send-only" : "", counted(static_cast<std::uint64_t>(pending), "pending dead letter"));
  reply_given(*p);
  if (p->send_only || !p->open()) return;  // no presence, no redelivery
  if (!p->took_over) presence_changed(p->username, true, now);  // a takeover: it never left
  if (pending > 0) {
    start_redelivery(*p);
  } else {
    refill(*p, now);  // what was accepted for it while it logged in
  }
}

void broker_core::handle_group_change(peer& p, request& r, const moment& now) {
  const std::string& name = r.group_name;
  if (r.k != kind::leave_group && !may_use_group(p, r)) return;
  if (r.k == kind::create_group && groups_.exists(name)) {
    return send_error(p, errc::invalid_field, exists_already(name), &r);
  }
  if (r.k == kind::join_group && !groups_.exists(name)) {
    return send_error(p, errc::unknown_group, "There is no group '" + name + "'; create it with create_group.", &r);
  }
  if (r.k == kind::leave_group) {
    if (!groups_.exists(name)) {
      return send_error(p, errc::unknown_group, "There is no group '" + name + "'; check its name (get_group_list lists yours).", &r);
    }
    if (!groups_.is_member(name, p.username)) {
      return send_error(p, errc::not_group_member, "You are not a member of '" + name + "', so you can not leave it.",
                        &r);
    }
  }
  if (r.k != kind::leave_group && !within_group_limits(p, r)) return;
  if (s_.cluster) return change_group_in_cluster(p, std::make_shared<const request>(std::move(r)));
  auto job = r.k == kind::create_group ? store_jobs::create_group(name, p.username, r.members, now.wall)
             : r.k == kind::join_group ? store_jobs::join_group(name, p.username, now.wall)
                                       : store_jobs::leave_group(name, p.username);
  hold(p, peer_reading::held_for_store);
  ++p.replies_due;
  auto change = std::make_shared<const request>(std::move(r));
  auto done = [this, id = p.id, user = p.username, change, ok = job.result](std::exception_ptr e, const moment&) {
    if (e) spdlog::error("group change by '{}' failed", user);
    // Committed: the groups change whether the peer is still there or not.
    if (!e && *ok) {
      if (change->k == kind::create_group) groups_.create(change->group_name, user, change->members);
      if (change->k == kind::join_group) groups_.join(change->group_name, user);
      if (change->k == kind::leave_group) groups_.leave(change->group_name, user);
    }
    group_changed(id, *change, e, *ok);
  };
  submit(std::move(job.run), std::move(done), on_failure::fail, "group change");
}

// max-group-members and max-groups-per-user, for a create or a join; false after the error.
bool broker_core::within_group_limits(peer& p, const request& r) {
  const auto* members = groups_.members(r.group_name);
  if (members && members->count(p.username)) return true;  // joining again changes nothing
  std::size_t size = members ? members->size() + 1 : r.members.size() + 1;
  if (!members && std::find(r.members.begin(), r.members.end(), p.username) != r.members.end()) --size;
  if (size > s_.max_group_members) {
    send_error(p, errc::invalid_field,
               "The group '" + r.group_name + "' would have " + std::to_string(size) + " members; this broker allows " +
                   std::to_string(s_.max_group_members) + " (max-group-members).",
               &r);
    return false;
  }
  if (groups_.groups_of(p.username) >= s_.max_groups_per_user) {
    send_error(p, errc::invalid_field,
               "You are a member of " + std::to_string(s_.max_groups_per_user) +
                   " groups already, the most this broker allows (max-groups-per-user): leave one first.",
               &r);
    return false;
  }
  // Nobody is made a member of more groups than that by others either.
  if (!members) {
    for (auto& m : r.members) {
      if (m != p.username && groups_.groups_of(m) >= s_.max_groups_per_user) {
        send_error(p, errc::invalid_field,
                   "'" + m + "' is a member of the most groups this broker allows (max-groups-per-user); leave "
                             "them out of group_members.",
                   &r);
        return false;
      }
    }
  }
  return true;
}

// In a cluster the registry holds the groups (every broker watches it), and decides: the checks
// above were made against this broker's copy, which may be a moment behind.
void broker_core::change_group_in_cluster(peer& p, std::shared_ptr<const request> change) {
  const auto what = change->k == kind::create_group ? group_change::op::create
                    : change->k == kind::join_group ? group_change::op::join
                                                    : group_change::op::leave;
  hold(p, peer_reading::held_for_store);
  ++p.replies_due;
  port_.change_group({what, change->group_name, p.username, change->members},
                     [this, id = p.id, change](group_outcome outcome, std::vector<std::string> members, const moment& at) {
                       observe(at.steady);
                       if (outcome == group_outcome::done) groups_.set(change->group_name, members);
                       peer* p = find(id);
                       if (!p) return;
                       resume(*p);
                       reply_given(*p);
                       const std::string& name = change->group_name;
                       const request* r = change.get();
                       switch (outcome) {
                         case group_outcome::done:
                           push(*p, make_group_ack(name, groups_.members(name), r->request_id));
                           break;
                         case group_outcome::exists:
                           send_error(*p, errc::invalid_field, exists_already(name), r);
                           break;
                         case group_outcome::unknown:
                           send_error(*p, errc::unknown_group, "There is no group '" + name + "'.", r);
                           break;
                         case group_outcome::not_member:
                           send_error(*p, errc::not_group_member,
                                      "You are not a member of '" + name + "', so you can not leave it.", r);
                           break;
                         case group_outcome::unavailable:
                           send_error(*p, errc::server_busy,
                                      "The broker could not reach the cluster to change the group; try again in a "
                                      "moment.",
                                      r);
                           break;
                       }
                       deadline_may_have_moved();
                     });
}

void broker_core::group_changed(peer_id id, const request& r, std::exception_ptr e, bool ok) {
  peer* p = find(id);
  if (!p) return;
  resume(*p);
  reply_given(*p);
  const std::string& name = r.group_name;
  if (e) return send_error(*p, errc::internal_error, "The broker could not store the group change; try again.", &r);
  if (!ok && r.k == kind::create_group) {
    return send_error(*p, errc::invalid_field, exists_already(name), &r);
  }
  if (!ok) return send_error(*p, errc::unknown_group, "There is no group '" + name + "'.", &r);
  push(*p, make_group_ack(name, groups_.members(name), r.request_id));
}

void broker_core::presence_changed(const std::string& who, bool joined, const moment& now) {
  if (stopping_) return;
  if (presence_.add(who, joined, online_.size(), now.steady)) flush_presence(who);
}

void broker_core::flush_presence(std::string_view except) {
  if (presence_.empty()) return;
  auto frame = std::make_shared<const std::string>(presence_.take_frame(online_names()));
  for (auto& [name, id] : online_) {
    if (name == except) continue;
    peer* p = find(id);
    // A remote peer's own broker tells it; one logging in gets the list in its acknowledgement.
    if (!p || !p->open() || p->remote || p->phase != peer_phase::logged_in) continue;
    // One that does not read gets one pending state, not a frame per change (see written).
    if (p->presence_behind || p->out.bytes() > presence_changes::max_behind_bytes) {
      p->presence_behind = true;
      continue;
    }
    p->out.push_shared(frame);
    queue_flush(*p);
  }
}

bool broker_core::forget_name(peer& p) {
  if (p.send_only) {
    auto range = send_only_.equal_range(p.username);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == p.id) {
        send_only_.erase(it);
        break;
      }
    }
    return false;
  }
  if (p.claimed) {
    p.claimed = false;
    port_.release_name(p.username);
  }
  auto it = online_.find(p.username);
  if (it == online_.end() || it->second != p.id) return false;
  online_.erase(it);
  return true;
}

}  // namespace ma
