// What a broker needs of the engine that makes it one broker of a cluster (--cluster-nats):
// for now, names held once in the whole cluster. The broker core never sees it: the broker
// answers the core's port calls with it (broker/broker.cpp). No NATS types here.
#pragma once

#include <chrono>
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

// Calls return at once. Answers come on the backbone's own thread, in the order the calls were
// made; the broker moves them to its own thread.
class backbone {
 public:
  // Another broker takes over a name held here (a log_in there proved it is the user's): the
  // broker ends the name's session and asks for its release, then calls done. Given when the
  // backbone is made (make_nats_backbone).
  using takeover_handler = std::function<void(std::string user, std::function<void()> done)>;

  virtual ~backbone() = default;
  // With take_over (a log_in that proved its identity: a right password or a certificate), a
  // name held at another live broker is taken from it: that broker ends its session (it hears
  // session_taken_over) and releases the name, and the claim is made again.
  virtual void claim(std::string user, bool take_over, std::function<void(claim_outcome)> done) = 0;
  // The name's session here ended: it is free for any broker (only if this broker still holds it).
  virtual void release(std::string user) = 0;
  // Brokers whose liveness was seen at the last look (this one included); 0 before the first.
  virtual int brokers_alive() const = 0;
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
  std::chrono::milliseconds liveness_ttl{6000};
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
// on_takeover is called on a cnats thread.
std::unique_ptr<backbone> make_nats_backbone(const cluster_settings& s, backbone::takeover_handler on_takeover);

}  // namespace ma
