// The broker core: sessions, relay, acknowledgements, the Dead Letter Channel's redelivery,
// presence, groups and eviction, as a state machine without I/O. Inputs are named for what
// happened (a peer connected, a frame arrived, bytes were written, a peer went, time passed);
// outputs go through the port (broker/core/port.hpp). It reads no clock and owns no socket, so
// its tests drive it with a recording port, a temporary database and time passed in.
//
// Where each entry point lives:
//   broker_core.cpp     the inputs, peers by id, tick and next_deadline, eviction, stop
//   requests.cpp        log_in, heartbeat, log_out, user and group lists, group changes
//   accept.cpp          accepting a message: dedupe, routing, the commit, live delivery
//   acknowledgements.cpp  acknowledgements, receipts, ack timeouts, dead-lettering
//   redelivery.cpp      the redelivery pump
//   remote_users.cpp    in a cluster: users online at other brokers, and the frames relayed
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <boost/unordered/unordered_flat_map.hpp>

#include "broker/core/acl.hpp"
#include "broker/core/counters.hpp"
#include "broker/core/dedupe.hpp"
#include "broker/core/fifo.hpp"
#include "broker/core/groups.hpp"
#include "broker/core/late_acks.hpp"
#include "broker/core/letter_warnings.hpp"
#include "broker/core/login_failures.hpp"
#include "broker/core/peer.hpp"
#include "broker/core/port.hpp"
#include "broker/core/presence.hpp"
#include "broker/core/settings.hpp"
#include "broker/core/store_jobs.hpp"
#include "core/errc.hpp"
#include "core/request.hpp"

namespace ma {

class broker_core {
 public:
  // Redeliveries sent and not yet acknowledged, per peer, before the pump waits.
  static constexpr std::size_t redelivery_window = 1000;
  static constexpr int redelivery_page = 500;
  // A second page is read ahead while the letters read and not sent are fewer than two pages
  // and their bodies take less than this (one page is always read ahead).
  static constexpr std::size_t redelivery_read_ahead_bytes = 4 * 1024 * 1024;
  static constexpr std::size_t max_dedupe_entries = 2'000'000;
  // Dead-lettered deliveries whose late acknowledgement is still looked up in the database.
  static constexpr std::size_t max_late_acks = 100'000;
  // How long a sender is held for a recipient that does not drain.
  static constexpr std::chrono::milliseconds room_limit{200};
  static constexpr std::chrono::seconds expiry_interval{60};
  // Acknowledged redeliveries are folded into their letters once none came for fold_after, or
  // at once past fold_backlog; fold_chunk at a time, so that other jobs get the store between.
  static constexpr std::chrono::seconds fold_after{1};
  static constexpr std::int64_t fold_backlog = 100'000;
  static constexpr std::int64_t fold_chunk = 1'000;
  static constexpr std::chrono::seconds letter_warning_interval{10};
  static constexpr std::chrono::seconds idle_buffers_after{1};
  // Before log_in a frame may be at most this long (a log_in frame is tiny), so that sockets
  // that never log in can not make the broker buffer max_frame_bytes each.
  static constexpr std::size_t max_frame_before_log_in = 16 * 1024;
  std::size_t frame_limit_before_log_in() const {
    return std::min<std::size_t>(max_frame_before_log_in, s_.max_frame_bytes);
  }
  // Bodies of one session's messages waiting for their commit before it is read no further
  // (as max_pending_accepts counts them).
  static constexpr std::size_t max_pending_accept_bytes = 8 * 1024 * 1024;
  // Password checks handed to the checker and not answered yet: past this, a log_in gets
  // server_busy at once instead of waiting behind a queue that a flood of logins from many
  // addresses would make longer than the login timeout.
  static constexpr std::size_t max_checks_in_flight = 32;
  // A name taken over is not taken over again within this time (username_taken instead).
  static constexpr std::chrono::seconds takeover_guard{10};
  // Refused log_ins logged per letter_warning_interval; the rest are counted.
  static constexpr int refused_lines_per_interval = 10;
  // A tick later than this after its deadline means the broker stood still (credit_pause).
  static constexpr std::chrono::seconds max_tick_lateness{1};

  broker_core(const core_settings& s, port& p);
  ~broker_core();
  broker_core(const broker_core&) = delete;
  broker_core& operator=(const broker_core&) = delete;

  // --- start-up and settings
  // What the store read at start: the groups, the pairs accepted within the dedupe window,
  // and the letters that expired meanwhile (to warn about).
  void start(const std::vector<group_record>& groups, std::vector<accepted_pair> recent,
             const counts_by_recipient& expired, const moment& now);
  void reload(const core_settings& s);
  // The permissions of --acl-file (nullptr: no file, everything is allowed), from now on.
  void set_acl(std::shared_ptr<const acl> rules) { acl_ = std::move(rules); }
  const core_settings& settings() const { return s_; }

  // --- inputs
  void connected(peer_id id, std::string address, const moment& now);
  void frame_received(peer_id id, std::string_view frame, const moment& now);
  // A line passed max_frame_bytes: frame_too_large, and the connection closes.
  void frame_too_large(peer_id id, const moment& now);
  // n bytes from the front of the peer's outbox were written.
  void written(peer_id id, std::size_t n, const moment& now);
  // A TLS peer finished its handshake; name is its client certificate's common name when that
  // names the user (else empty).
  void tls_established(peer_id id, const std::string& name, const moment& now);
  // In a cluster: another broker took user's name over; its session here ends.
  void taken_over_elsewhere(const std::string& user, const moment& now);
  // In a cluster: user's name is held at another live broker (a token of the backbone's), or at
  // none (broker empty). Such a user is a remote peer here, online like any other: what is sent
  // to it is relayed to that broker, and its letters are redelivered through it.
  void remote_holder(const std::string& user, const std::string& broker, const moment& now);
  // In a cluster: a group's members as the cluster's registry holds them (none: gone).
  void remote_group(const std::string& group, const std::vector<std::string>& members);
  // In a cluster: frames another broker relayed (backbone::relay).
  void relayed(relay_kind kind, const std::string& from, const std::string& user, std::string_view frames,
               const moment& now);
  // After port::flush of a remote peer: its outbox goes to its broker (port::relay).
  void relay_outbox(peer_id id, const moment& now);
  // Remote peers' ids are these and above; a session's are below.
  static constexpr peer_id first_remote_id = peer_id{1} << 62;
  static bool is_remote(peer_id id) { return id >= first_remote_id; }
  // The peer shut down its sending side (a half-close, like `nc -N`): the answers still due go
  // out, then the connection closes.
  void finished_sending(peer_id id, const moment& now);
  // The connection is gone: what it had in flight or held becomes dead letters.
  void disconnected(peer_id id, const moment& now);
  // Time passed: ack timeouts, eviction, presence batches, refills, warnings, expiry.
  void tick(const moment& now);
  // When tick must run next.
  steady_time next_deadline() const;
  // The broker is full and a new connection waits: the oldest connection that has not logged
  // in is closed (server_busy) to make room. False if every connection has logged in.
  bool make_room(const moment& now);
  // No new log_ins; every peer closes after its flush.
  void stop(const moment& now);

  // --- what the transport reads
  // The outbox to write after port::flush; nullptr if the peer is gone.
  outbox* outbox_to_flush(peer_id id);
  outbox* outbox_of(peer_id id);
  std::size_t peer_count() const { return peers_.size(); }
  std::size_t online_count() const { return online_.size(); }
  std::size_t in_flight_count() const;
  const core_counters& counters() const { return counters_; }
  bool stopping() const { return stopping_; }

 private:
  struct ack_deadline {
    steady_time at;
    peer_id to;
    std::uint64_t id;  // in the peer's in_flight_set
  };
  struct room_wait {
    steady_time until;
    peer_id sender;
  };
  // A password check whose turn comes at `at` (login_failures).
  struct auth_turn {
    steady_time at;
    peer_id id;
    bool operator>(const auth_turn& o) const { return at > o.at; }
  };
  struct refused_lines {
    steady_time since{};
    int logged = 0;
    int unlogged = 0;
  };
  // A login to time out or a silence to evict: checked at `at`, pushed again if it moved.
  struct liveness_check {
    steady_time at;
    peer_id id;
    bool operator>(const liveness_check& o) const { return at > o.at; }
  };

  // broker_core.cpp
  peer* find(peer_id id);
  peer* find_online(std::string_view name);
  void queue_flush(peer& p);
  void push(peer& p, std::string frame);
  // Appends one frame built in place (outbox::append) and asks for the peer's flush.
  template <class Write>
  void append(peer& p, Write&& write) {
    p.out.append(std::forward<Write>(write));
    queue_flush(p);
  }
  void send_error(peer& p, errc code, std::string text, const request* r = nullptr);
  // Every error frame goes out through here (send_error too): it is counted.
  void push_error(peer& p, const protocol_error& e);
  void begin_close(peer& p);
  // A reply that waited for the store was given (or its peer is to hear nothing more).
  void reply_given(peer& p);
  void hold(peer& p, peer_reading why);
  void resume(peer& p);
  // Holds p's reading while too many of its messages wait for the store; resumes at half.
  void check_pending_accepts(peer& p);
  void observe(steady_time now);
  void credit_pause(steady_time::duration pause, steady_time now);
  void check_liveness(const moment& now);
  void check_one(peer& p, const moment& now);
  std::chrono::milliseconds evict_after(const peer& p) const;
  void fail_deliveries(peer& p, dead_letter_reason reason, const moment& now);
  void release_stalled(peer& to);
  void release_all_stalled(peer& to);
  void schedule_check(peer& p, steady_time at);
  void wait_for_room(peer& sender, const moment& now);
  void end_room_waits(const moment& now);
  void refill_due_peers(const moment& now);
  void release_idle_buffers(steady_time now);
  void run_expiry(const moment& now);
  void run_fold();
  // Acknowledged redeliveries wait for a fold job (due at next_fold_).
  bool fold_waits() const { return unfolded_ > 0 && !folding_ && !stopping_; }
  void warn_letters(const counts_by_recipient& parked, const counts_by_recipient& expired, steady_time now);
  void deadline_may_have_moved();
  // port::submit, with the deadline checked again after the completion.
  void submit(store_job job, core_completion done, on_failure policy, const char* name);
  std::vector<std::string_view> online_names() const;

  // requests.cpp
  void handle(peer& p, request& r, const moment& now);
  void handle_log_in(peer& p, request& r, const moment& now);
  void check_password(peer& p);
  void start_due_checks(const moment& now);
  void password_checked(peer_id id, const std::string& host, bool right, const moment& now);
  void refused_log_in(const peer& p, const std::string& name, steady_time now);
  bool take_over(peer& old, peer& by, const request& r, const moment& now);
  // authenticated: by its password or its certificate (then a name online is taken over).
  void accept_log_in(peer& p, request& r, bool authenticated, const moment& now);
  void name_claimed(peer_id id, const std::string& user, claim_outcome outcome, std::string request_id,
                    const moment& now);
  void log_in_failed(peer& p, const protocol_error& why, const moment& now);
  void count_letters(peer& p, std::string request_id);
  void logged_in(peer_id id, std::int64_t pending, const std::string& request_id, const moment& now);
  void handle_group_change(peer& p, request& r, const moment& now);
  bool within_group_limits(peer& p, const request& r);
  void group_changed(peer_id id, const request& r, std::exception_ptr e, bool ok);
  void change_group_in_cluster(peer& p, std::shared_ptr<const request> change);
  void presence_changed(const std::string& who, bool joined, const moment& now);
  void flush_presence(std::string_view except);
  // Removes p from online or the send-only peers; true if it held its name (was online).
  bool forget_name(peer& p);

  // accept.cpp
  struct routing {
    store_jobs::accept_targets targets;
    int live = 0;
  };
  // The accept batch submitted and not sealed yet, and the dedupe entry of each of its items.
  struct open_accepts {
    std::shared_ptr<store_jobs::accept_batch> batch;
    std::shared_ptr<std::vector<dedupe_table::entry*>> entries;
  };
  // An accept waiting for its live deliveries' acknowledgements until due; item.m is null once
  // it went ahead of its turn (every delivery acknowledged, no dead letter to order).
  struct waiting_accept {
    store_jobs::accept_batch::item item;
    dedupe_table::entry* e;
    steady_time due;
  };
  void to_store(store_jobs::accept_batch::item&& item, dedupe_table::entry& e);
  void release_accepts(const moment& now);
  void acknowledged_first(accepted_message& m);
  bool may_store(const accepted_message& m, steady_time due, steady_time now) const;
  // m's waiting accept, or nullptr once it went to the store (or if it never waited).
  waiting_accept* waiting_of(const accepted_message& m);
  void handle_message(peer& p, request& r, const moment& now);
  bool answer_duplicate(peer& p, const dedupe_table::hashed_key& key, const std::string& uuid, request& r);
  routing route_to(peer& p, usernames recipients);
  void commit_accept(const message_ptr& m, dedupe_table::entry& e, routing route, const moment& now);
  bool recipients_of(peer& p, request& r, message_record& rec, usernames& out);
  // The ACL's word on a request (true without a file); false after a not_authorized reply.
  bool may_send_to(peer& p, const request& r, const usernames& recipients);
  bool may_broadcast(peer& p, const request& r);
  bool may_use_group(peer& p, const request& r);
  void finish_accept(dedupe_table::entry& e, accepted_message& m, steady_time now);
  void accept_failed(dedupe_table::entry& e, const std::string& uuid, std::string_view why);
  void deliver(peer& to, const message_ptr& m, int slot, const moment& now);
  void send_live(peer& to, const message_ptr& m, int slot, const moment& now);
  void refill(peer& to, const moment& now);
  void refill_soon(peer& to);

  // acknowledgements.cpp
  void handle_ack(peer& p, const request& r, const moment& now);
  void register_in_flight(peer& to, delivery d, steady_time now);
  void expire_acks(const moment& now);
  void dead_letter(std::vector<failed_delivery> failed, dead_letter_reason reason, const moment& now);
  // A receipt for the sender of m: to the peer that sent it while it is connected, else to
  // every peer of that user.
  template <class Write>
  void notify_sender(const accepted_message& m, Write&& write) {
    if (peer* origin = find(m.origin); origin && origin->open()) return append(*origin, write);
    notify_all_sessions(m.rec.sender, write);
  }
  template <class Write>
  void notify_all_sessions(std::string_view user, Write&& write) {
    if (peer* p = find_online(user); p && p->open()) append(*p, write);
    auto range = send_only_.equal_range(user);
    for (auto it = range.first; it != range.second; ++it) {
      if (peer* p = find(it->second); p && p->open()) append(*p, write);
    }
  }

  // remote_users.cpp
  void add_remote(const std::string& user, const std::string& broker, const moment& now);
  void drop_remote(peer& p, const moment& now);
  // A session here let user's name go: the user may be online elsewhere.
  void represent_remote(const std::string& user, const moment& now);
  // Acknowledgements of deliveries other brokers relayed to p go back to them; true if uuid was one.
  bool relay_ack(peer& p, const std::string& uuid, const std::string& sender);

  // redelivery.cpp
  void start_redelivery(peer& p);
  void fetch_page(peer& p);
  void page_fetched(peer_id id, std::vector<ma::dead_letter> page, const moment& now);
  void pump(peer& p, const moment& now);

  core_settings s_;
  port& port_;
  request_decoder decoder_;
  bool stopping_ = false;

  boost::unordered_flat_map<peer_id, std::unique_ptr<peer>> peers_;
  // Receiving peers, sorted: lists come out in order. A key is the peer's own username (which
  // does not change once logged in): the name is kept once per connection.
  std::map<std::string_view, peer_id, std::less<>> online_;
  std::multimap<std::string, peer_id, std::less<>> send_only_;
  // In a cluster: users online at other brokers, user -> broker token (see remote_holder).
  std::map<std::string, std::string, std::less<>> remote_holders_;
  peer_id next_remote_id_ = first_remote_id;
  std::set<peer_id> not_logged_in_;  // open peers before log_in; ids grow with time: oldest first
  group_table groups_;
  dedupe_table dedupe_{max_dedupe_entries};
  presence_changes presence_;
  late_acks late_acks_{max_late_acks};
  letter_warnings warnings_{letter_warning_interval};
  core_counters counters_;

  fifo<ack_deadline> ack_deadlines_;  // in deadline order: the timeout is the same for all
  std::deque<room_wait> room_waits_;        // in order too: room_limit is the same for all
  std::vector<liveness_check> liveness_;    // a min-heap
  std::vector<auth_turn> auth_turns_;       // a min-heap
  login_failures failures_;
  std::size_t checks_in_flight_ = 0;
  std::map<std::string, steady_time, std::less<>> taken_over_;  // name -> when, within takeover_guard
  refused_lines refused_;
  std::shared_ptr<const acl> acl_;
  std::vector<peer_id> refills_;
  open_accepts open_accepts_;
  // In the order of their sends: they go to the store in that order once acknowledged or due,
  // so that journal rows and dead letters of one recipient keep it.
  fifo<waiting_accept> waiting_accepts_;
  std::uint64_t first_waiting_ticket_ = 0;  // waiting_accepts_.front()'s
  steady_time next_expiry_{};
  // Acknowledged redeliveries not yet folded (an upper bound), those recorded by jobs submitted
  // after the fold job that is out, when to fold, and whether a fold job is out.
  std::int64_t unfolded_ = 0;
  std::int64_t unfolded_after_fold_ = 0;
  steady_time next_fold_{};
  bool folding_ = false;
  steady_time next_idle_release_{};
  steady_time reported_deadline_ = steady_time::max();
  steady_time last_seen_{};  // the latest moment of an input: when the core last ran
};

}  // namespace ma
