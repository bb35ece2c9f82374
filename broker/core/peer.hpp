// What the broker core knows of one connection: where it is in its life, whom it is logged in
// as, what waits to be written to it, what it has not acknowledged, and who waits for it.
// Plain data; broker_core changes it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/core/delivery.hpp"
#include "broker/core/in_flight.hpp"
#include "broker/core/outbox.hpp"
#include "broker/core/port.hpp"
#include "core/request.hpp"

namespace ma {

enum class peer_phase : std::uint8_t {
  awaiting_log_in,  // connected; only log_in and heartbeat are answered
  logging_in,       // its name is held while the store counts its dead letters
  logged_in,
  closing,          // told to close after the flush; nothing more is read
};

enum class peer_reading : std::uint8_t {
  open,
  held_for_store,  // a log_in or group change waits for its commit: later frames wait too
  held_for_room,   // backpressure: it sent to a recipient whose outbox is full
  held_for_output,  // its own outbox passed max_outbound_bytes: it must read before it sends more
  held_for_commits,  // max_pending_accepts of its messages (or their bytes) wait for the store
  held_for_auth,     // its log_in's password is being checked (or waits for its turn)
};

// A hold the broker imposed (the store, a recipient's room, the commits of its messages, its
// password check), not one the peer caused: the time it lasts is not the peer's silence.
inline bool held_by_broker(peer_reading r) {
  return r == peer_reading::held_for_store || r == peer_reading::held_for_room ||
         r == peer_reading::held_for_commits || r == peer_reading::held_for_auth;
}

// The redelivery pump: pending dead letters read a page at a time, the next page read while
// the letters before it go out as the peer has room. Without a backlog there is no pump: live
// deliveries go out at once.
struct redelivery_pump {
  std::deque<dead_letter> letters;  // read, not sent yet
  std::size_t bytes = 0;            // their bodies
  std::int64_t after = 0;           // the seq of the last letter read
  bool reading = false;             // a page is being read from the store
  bool exhausted = false;           // a read found nothing more
};

struct held_delivery {
  message_ptr msg;
  int slot = delivery::no_slot;
};

// What few peers need, kept apart so that an idle peer is small: made when first needed, and
// given back (release_memory) once empty.
struct peer_extras {
  // Live deliveries not written yet (a backlog is being redelivered, or the window is full), in
  // order from held_next. Never attempted: they count no attempt when the peer goes.
  std::vector<held_delivery> held;
  std::size_t held_next = 0;
  // Backpressure, on a recipient: the senders held for it (see peer::blocked_on).
  std::vector<peer_id> stalled;
  // The common name of its TLS client certificate, when that names the user
  // (--tls-identity-as-username): its log_in is for this name, whatever it claims.
  std::string certified_name;
  // In a cluster, on a remote peer (a user at another broker): that broker's token.
  std::string remote_broker;
  // In a cluster, on a peer here: the deliveries other brokers relayed to it and it has not
  // acknowledged yet, message_uuid -> where its acknowledgement goes.
  struct relayed_delivery {
    std::string sender;
    std::string broker;
  };
  std::unordered_multimap<std::string, relayed_delivery> relayed;  // two senders may use one uuid

  bool empty() const {
    return held.empty() && stalled.empty() && certified_name.empty() && remote_broker.empty() && relayed.empty();
  }
};

struct peer {
  peer(peer_id id, std::string address, steady_time now)
      : id(id), address(std::move(address)), connected_at(now), last_activity(now), last_write(now), check_at(now) {}

  peer_id id;
  std::string address;
  peer_phase phase = peer_phase::awaiting_log_in;
  peer_reading reading = peer_reading::open;
  bool send_only = false;    // gets no deliveries, redeliveries or presence; holds no name
  bool flush_asked = false;  // port::flush was called and the outbox not taken since
  bool refill_due = false;   // acknowledgements made room: refill at the next tick
  bool slow = false;         // backpressure (below): senders no longer wait for it
  bool done_sending = false;  // it shut down its sending side: close once replies_due are out
  bool presence_behind = false;  // it stopped reading: one catch-up update once it drains
  bool took_over = false;  // its log_in took the name over from another session
  bool logged_out = false;  // it sent log_out
  bool claimed = false;    // its name is claimed in the cluster (released when forgotten)
  // A user online at another broker of the cluster: its frames go there (broker_core::relay_outbox),
  // its acknowledgements come from there. No connection, no heartbeats, no log_in.
  bool remote = false;
  std::uint32_t window = 0;  // at most this many unacknowledged deliveries; 0: no limit
  std::uint32_t redeliveries_in_flight = 0;  // sent, not yet acknowledged
  std::uint32_t replies_due = 0;  // requests whose answer waits for the store
  std::size_t pending_accept_bytes = 0;  // bodies of its messages waiting for their commit
  steady_time connected_at;
  steady_time last_activity;  // the last frame read
  steady_time last_write;     // the last bytes written, for giving idle buffers back
  steady_time check_at;       // its login timeout or eviction is checked then (one heap entry)

  std::string username;
  std::chrono::milliseconds heartbeat{};

  outbox out;

  in_flight_set in_flight;

  // Backpressure: a recipient whose unsent data passes a quarter of max_outbound_bytes holds
  // the readers of the senders that feed it until it drains to an eighth, for at most
  // room_limit. One that does not drain in that time is slow: senders no longer wait for it,
  // and what passes max_outbound_bytes goes to the Dead Letter Channel (queue_overflow).
  peer_id blocked_on = 0;    // on a sender: set by the frame it just sent
  steady_time room_until{};  // on a held sender: when it goes on anyway

  std::unique_ptr<redelivery_pump> redelivery;  // while a backlog is redelivered

  // A log_in whose password is being checked: it goes on from here once it is right.
  std::unique_ptr<request> log_in_checked;

  std::unique_ptr<peer_extras> extras;
  peer_extras& more() {
    if (!extras) extras = std::make_unique<peer_extras>();
    return *extras;
  }

  bool open() const { return phase != peer_phase::closing; }
  bool receiving() const { return phase == peer_phase::logged_in && !send_only; }
  bool redelivering() const { return redelivery != nullptr; }
  bool window_full() const { return window != 0 && in_flight.size() >= window; }
  std::size_t held_count() const { return extras ? extras->held.size() - extras->held_next : 0; }
  bool has_stalled() const { return extras && !extras->stalled.empty(); }
  std::string_view certified_name() const { return extras ? std::string_view(extras->certified_name) : ""; }
  void release_memory() {
    out.release_memory();
    in_flight.release_memory();
    if (extras && extras->empty()) extras.reset();
  }
};

}  // namespace ma
