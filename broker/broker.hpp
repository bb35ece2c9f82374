// The broker: discovery, sessions, relay, acknowledgements, presence and eviction, bound to
// Asio on one io_context (one thread), with the store's thread behind it for SQLite.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "broker/options.hpp"

namespace boost::asio {
class io_context;
}

namespace ma {

class store;

struct broker_status {
  std::size_t connections = 0;
  std::size_t online = 0;
  std::size_t in_flight = 0;  // sent, not yet acknowledged
  std::string cluster;        // --cluster-name, when in a cluster
  int brokers_alive = 0;      // in the cluster, at the last look (this one included)
};

class broker {
 public:
  // Runs on io, which must be run by one thread. s must outlive the broker.
  broker(boost::asio::io_context& io, const broker_options& o, store& s);
  ~broker();
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;

  // Turns the journal left by the last run into dead letters (broker_restart), loads groups
  // and the recent (sender, uuid) pairs for dedupe, binds TCP and UDP. Blocks on the store:
  // call before io.run(). Throws std::runtime_error with a sentence on failure.
  void start();
  // Graceful stop: no new connections or discovery replies, queued frames flushed, every
  // unacknowledged message moved to the Dead Letter Channel and committed; then done() runs
  // on io's thread. Bounded: sockets that do not drain are closed after a few seconds.
  void stop(std::function<void()> done);

  // Takes what can change at run time from fresh (timeouts, limits, the dead-letter settings)
  // and returns one line per change, including those that need a restart to take effect.
  std::vector<std::string> reload(const broker_options& fresh);

  std::uint16_t port() const;
  std::uint16_t discovery_port() const;
  std::uint16_t tls_port() const;  // 0 without a TLS listener
  std::uint16_t http_port() const;  // 0 without the HTTP endpoint
  broker_status status() const;

  struct impl;  // the implementation, in broker.cpp

 private:
  void reload_passwords(const broker_options& fresh, std::vector<std::string>& changes);
  void reload_acl(const broker_options& fresh, std::vector<std::string>& changes);
  void reload_tls(const broker_options& fresh, std::vector<std::string>& changes);
  std::shared_ptr<impl> impl_;
};

}  // namespace ma
