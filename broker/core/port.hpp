// The broker core's one way out: what it asks of the I/O around it. The core calls these and
// never waits for them; what comes back (data written, a store job's completion, time passing)
// comes in as an input of broker_core. A peer is named by its id only: a peer that is gone is
// an id that no longer finds anything, on either side.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>

#include "cluster/backbone.hpp"
#include "core/clock.hpp"
#include "storage/job.hpp"

namespace ma {

using peer_id = std::uint64_t;
using steady_time = std::chrono::steady_clock::time_point;

// When an input happened: the steady clock for deadlines, the wall clock for what the protocol
// and the database record. The core reads no clock; every input carries its moment.
struct moment {
  steady_time steady;
  sys_ms wall;
};

// A store job's completion, run on the core's thread with the moment it ran.
using core_completion = std::function<void(std::exception_ptr, const moment&)>;
// A password check's verdict, on the core's thread.
using password_completion = std::function<void(bool right, const moment&)>;

// What the cluster said of a name this broker claimed (port::claim_name), on the core's thread.
using claim_completion = std::function<void(claim_outcome, const moment&)>;
// What the cluster's registry said of a group change (port::change_group), with the group's
// members after it, on the core's thread.
using group_completion = std::function<void(group_outcome, std::vector<std::string> members, const moment&)>;

class port {
 public:
  virtual ~port() = default;
  // Frames wait in the peer's outbox (broker_core::outbox_to_flush): write them soon, after
  // the current burst of inputs. Called once until the outbox is taken.
  virtual void flush(peer_id peer) = 0;
  // Stop reading from the peer; write what its outbox holds, then close the connection.
  virtual void close_after_flush(peer_id peer) = 0;
  // Frames from the peer may be this long from now on (its limit before log_in is smaller).
  virtual void set_frame_limit(peer_id peer, std::size_t max_frame_bytes) = 0;
  // Stop handing the peer's frames to the core (those already read wait), until resume.
  virtual void hold_reading(peer_id peer) = 0;
  virtual void resume_reading(peer_id peer) = 0;
  // Run job on the store; then done on the core's thread (never from inside this call).
  virtual void submit(store_job job, core_completion done, on_failure policy, const char* name) = 0;
  // Check user's password against the password file, off the core's thread (it is slow by
  // design); then done on the core's thread with the verdict (never from inside this call).
  virtual void check_password(std::string user, std::string password, password_completion done) = 0;
  // Only in a cluster (core_settings::cluster): hold user's name for this broker in the whole
  // cluster; then done on the core's thread (never from inside this call). With take_over (the
  // log_in proved its identity), a name held at another broker is taken from it
  // (broker_core::taken_over_elsewhere there).
  virtual void claim_name(std::string user, bool take_over, claim_completion done) = 0;
  // A name claimed here is free again (its session ended, or its log_in failed after the claim).
  virtual void release_name(std::string user) = 0;
  // Only in a cluster: a group change, made in the cluster's registry instead of the store; then
  // done on the core's thread (never from inside this call).
  virtual void change_group(group_change change, group_completion done) = 0;
  // Only in a cluster: frames for another broker (backbone::relay), sent after the current burst
  // with the others of the burst for the same broker, kind and user.
  virtual void relay(const std::string& broker, relay_kind kind, const std::string& user, std::string_view frames) = 0;
  // broker_core::next_deadline() is earlier than it was: tick the core by then.
  virtual void deadline_moved(steady_time at) = 0;
};

}  // namespace ma
