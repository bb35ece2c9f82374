// A broker core driven by a test alone: a port that records what the core asks for, store jobs
// run on a temporary database on the test's thread when the test says so (with a way to fail
// the next commit), time passed in by the test. No socket, no thread, no sleeping.
#pragma once

#include <boost/json/object.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "broker/core/broker_core.hpp"
#include "storage/database.hpp"
#include "tests/support/temp_dir.hpp"

namespace ma::test {

class recording_port : public port {
 public:
  struct job {
    store_job run;
    core_completion done;
    on_failure policy;
    std::string name;
  };

  void flush(peer_id id) override { flushes.insert(id); }
  void close_after_flush(peer_id id) override { closing.insert(id); }
  void set_frame_limit(peer_id id, std::size_t n) override { frame_limits[id] = n; }
  void hold_reading(peer_id id) override {
    held.insert(id);
    ++holds[id];
  }
  void resume_reading(peer_id id) override { held.erase(id); }
  void submit(store_job j, core_completion done, on_failure policy, const char* name) override {
    jobs.push_back({std::move(j), std::move(done), policy, name});
  }
  struct password_check {
    std::string user, password;
    password_completion done;
  };
  void check_password(std::string user, std::string password, password_completion done) override {
    checks.push_back({std::move(user), std::move(password), std::move(done)});
  }
  struct claim {
    std::string user;
    bool take_over;
    claim_completion done;
  };
  void claim_name(std::string user, bool take_over, claim_completion done) override {
    claims.push_back({std::move(user), take_over, std::move(done)});
  }
  void release_name(std::string user) override { releases.push_back(std::move(user)); }
  struct group_change_asked {
    group_change change;
    group_completion done;
  };
  void change_group(group_change change, group_completion done) override {
    group_changes.push_back({std::move(change), std::move(done)});
  }
  struct relay_out {
    std::string broker;
    relay_kind kind;
    std::string user;
    std::string frames;
  };
  void relay(const std::string& broker, relay_kind kind, const std::string& user, std::string_view frames) override {
    relays.push_back({broker, kind, user, std::string(frames)});
  }
  void deadline_moved(steady_time at) override { last_deadline = at; }

  std::set<peer_id> flushes;  // asked since the test last took the output
  std::set<peer_id> closing;
  std::set<peer_id> held;
  std::map<peer_id, int> holds;
  std::map<peer_id, std::size_t> frame_limits;
  std::deque<job> jobs;
  std::deque<password_check> checks;
  std::deque<claim> claims;
  std::vector<std::string> releases;  // in order
  std::vector<relay_out> relays;      // in order
  std::deque<group_change_asked> group_changes;
  std::optional<steady_time> last_deadline;
};

// The settings of one broker of a cluster (core_settings::cluster).
inline core_settings clustered() {
  core_settings s;
  s.cluster = true;
  return s;
}

class core_harness {
 public:
  explicit core_harness(core_settings s = {});

  broker_core& core() { return core_; }
  recording_port& port() { return port_; }
  database& db() { return db_; }
  const moment& now() const { return now_; }

  // A new connection from host (its port is made up).
  peer_id connect(const std::string& host = "127.0.0.1");
  void send(peer_id id, std::string_view kind, boost::json::object content = {});
  // Sends log_in, runs the store, returns the acknowledge_log_in content (empty if none came).
  boost::json::object log_in(peer_id id, const std::string& name, boost::json::object extra = {});
  // connect() and log_in().
  peer_id online(const std::string& name, boost::json::object extra = {});
  void disconnect(peer_id id) { core_.disconnected(id, now_); }

  // Runs the store's queued jobs, and those their completions submit, until none is left;
  // returns how many ran. The next commit fails when fail_next_commit is set (a retry job then
  // stays queued, as the store retries it).
  int run_store();
  // Runs the jobs queued now, not those their completions submit.
  int run_store_once();
  bool fail_next_commit = false;
  // The password file of the test: name -> password. Answers the checks asked for; returns how
  // many.
  std::map<std::string, std::string> passwords;
  int run_password_checks();
  // The cluster's registry of names, shared by the harnesses of one test as by the brokers of
  // a cluster (core_settings::cluster): name -> the harness whose broker holds it. Unset, every
  // claim is answered claimed.
  using name_registry = std::map<std::string, core_harness*>;
  std::shared_ptr<name_registry> registry;
  bool registry_down = false;  // claims are answered unavailable
  // Applies the releases, then answers the claims asked for; returns how many.
  int run_claims();

  // The frames written to a peer since the last call (the peer reads everything: its outbox is
  // drained and the core told so). read = false leaves the outbox as it is: a peer that does
  // not read.
  std::vector<boost::json::object> frames(peer_id id);
  // The contents of the frames of one kind (the others are kept for later calls).
  std::vector<boost::json::object> take(peer_id id, std::string_view kind);
  std::size_t unsent_bytes(peer_id id) { return core_.outbox_of(id) ? core_.outbox_of(id)->bytes() : 0; }

  // Moves time on by d, ticking the core at every deadline on the way, and at the end.
  void advance(std::chrono::microseconds d);
  // Time passes with no tick: the broker stood still, and inputs come before its late tick.
  void freeze(std::chrono::milliseconds d) {
    now_.steady += d;
    now_.wall += d;
  }
  // Moves time on by d without a tick, then ticks: the broker stood still meanwhile.
  void stand_still(std::chrono::milliseconds d);

 private:
  void run_job(recording_port::job j);

  temp_dir dir_;
  database db_;
  recording_port port_;
  broker_core core_;
  moment now_;
  peer_id next_id_ = 0;
  std::map<peer_id, std::deque<boost::json::object>> inbox_;
};

}  // namespace ma::test
