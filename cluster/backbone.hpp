// What a broker needs of the engine that makes it one broker of a cluster (--cluster-nats):
// names held once in the whole cluster, where each user online elsewhere is held, and frames
// relayed between brokers. The broker core never sees it: the broker answers the core's port
// calls with it and hands its events to the core (broker/broker.cpp). No NATS types here.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ma {

// What the cluster said of a name a broker claimed.
enum class claim_outcome {
  claimed,      // held for this broker in the whole cluster
  taken,        // a session on another live broker holds it
  unavailable,  // the cluster's registry could not be asked in time
};

// A change of a group, made in the registry (backbone::change_group).
struct group_change {
  enum class op { create, join, leave } what;
  std::string group;
  std::string user;                  // who creates, joins or leaves
  std::vector<std::string> members;  // create: the members besides the creator
};

enum class group_outcome {
  done,         // made: the group's members after it come with it
  exists,       // create: the group exists already
  unknown,      // join, leave: there is no such group
  not_member,   // leave: the user is not a member
  unavailable,  // the registry could not be asked in time
};

// What a relay between two brokers carries (backbone::relay).
enum class relay_kind : char {
  to_user = 'd',    // frames for a user whose session is at the receiving broker (deliveries, receipts)
  from_user = 'a',  // acknowledgements from such a user, back to the broker that sent the deliveries
};

// Frames another broker relayed to this one.
struct relay_message {
  relay_kind kind;
  std::string from;  // the sending broker's token (as in backbone_events::holder)
  std::string user;
  std::string frames;  // whole NDJSON lines
};

// What the backbone tells the broker, on threads of its own (the broker moves each to its
// thread). Given when the backbone is made (make_nats_backbone).
struct backbone_events {
  // Another broker takes over a name held here (a log_in there proved it is the user's): the
  // broker ends the name's session and asks for its release, then calls done.
  std::function<void(std::string user, std::function<void()> done)> takeover;
  // user's name is now held by a live session at another broker, named by a token (broker is
  // empty: at no other live broker). The first calls after a start give every name held.
  std::function<void(std::string user, std::string broker)> holder;
  std::function<void(relay_message)> relayed;
  // A group's members as the registry holds them now (none: the group is gone). The first calls
  // after a start give every group.
  std::function<void(std::string group, std::vector<std::string> members)> group;
};

// Calls return at once. Answers come on the backbone's own thread, in the order the calls were
// made; the broker moves them to its own thread.
class backbone {
 public:
  // Frames of one relay at most (the broker sends more in parts, at frame boundaries): a
  // nats-server takes at most 1 MB in one message by default (max_payload).
  static constexpr std::size_t max_relay_bytes = 512 * 1024;

  virtual ~backbone() = default;
  // With take_over (a log_in that proved its identity: a right password or a certificate), a
  // name held at another live broker is taken from it: that broker ends its session (it hears
  // session_taken_over) and releases the name, and the claim is made again.
  virtual void claim(std::string user, bool take_over, std::function<void(claim_outcome)> done) = 0;
  // The name's session here ended: it is free for any broker (only if this broker still holds it).
  virtual void release(std::string user) = 0;
  // Changes a group in the cluster's registry (compare-and-set, so that concurrent changes at two
  // brokers both count); then done with the outcome and the group's members after the change.
  virtual void change_group(group_change change,
                            std::function<void(group_outcome, std::vector<std::string> members)> done) = 0;
  // Brokers whose liveness was seen at the last look (this one included); 0 before the first.
  virtual int brokers_alive() const = 0;
  // Sends frames to another broker (a token from backbone_events::holder), at most once: what is
  // lost (no connection to NATS meanwhile) is found by the sender's ack timeouts. Any thread.
  virtual void relay(const std::string& broker, relay_kind kind, const std::string& user, std::string_view frames) = 0;
};

// A cluster name (--cluster-name): 1 to 64 of A-Z a-z 0-9 _ -, as it names the registry's
// buckets and subjects as it is.
bool is_valid_cluster_name(std::string_view name) noexcept;

struct cluster_settings {
  std::vector<std::string> urls;  // nats://host:port of every nats-server: any of them will do
  std::string cluster_name;       // the buckets' prefix: brokers with the same one form one cluster
  std::string broker_name;        // unique in the cluster
  // A broker's names are void once its liveness entry is this old (it refreshes it every
  // refresh_interval): the users of a broker killed with -9 log in elsewhere after that.
  std::chrono::milliseconds liveness_ttl{8000};
  std::chrono::milliseconds refresh_interval{1500};
  std::chrono::milliseconds request_timeout{3000};  // one registry operation
  // How long a claim is tried again while the registry does not answer (within the agents'
  // default login timeout of 10 s), before it is `unavailable`.
  std::chrono::milliseconds claim_patience{7000};
};

// The backbone over a NATS cluster, through cnats: JetStream key-value buckets hold the names
// (<cluster>-names: user -> "<broker>/<epoch>") and the brokers alive (<cluster>-brokers:
// broker -> epoch, entries expire after liveness_ttl); a takeover is a request on the holding
// broker's control subject (<cluster>.control.<broker>). Connects in the background and keeps
// reconnecting; claims made while no nats-server answers get `unavailable`.
// Where each name is held is read from a watch on <cluster>-names and the brokers' liveness;
// groups are <cluster>-groups (group -> its members, one per line; empty: gone), watched too;
// relayed frames go on core NATS to the subject <cluster>.relay.<broker>.
std::unique_ptr<backbone> make_nats_backbone(const cluster_settings& s, backbone_events events);

}  // namespace ma
