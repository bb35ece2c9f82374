// What GET /metrics shows, in the Prometheus text format (version 0.0.4): the counters the
// broker's parts keep, gathered into one snapshot on the broker's thread, and its rendering.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "broker/core/counters.hpp"
#include "core/histogram.hpp"

namespace ma {

// Kept by the sessions and the accept loop.
struct transport_counters {
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  // max_connections or the memory budget
};

// Kept by the discovery responder: queries answered, and those dropped unanswered, by why.
struct discovery_counters {
  std::uint64_t answered = 0;
  std::uint64_t malformed = 0;     // not a query, or larger than a datagram may be
  std::uint64_t rate_limited = 0;  // the asker's address asked too often
  std::uint64_t legacy_off = 0;    // the original design's log_in datagram, answered only if enabled
};

struct metrics_snapshot {
  std::string version;
  std::uint64_t connections = 0;
  std::uint64_t online = 0;
  std::uint64_t in_flight = 0;
  // Pending dead letters in the database; nullopt when the store did not answer in time.
  std::optional<std::int64_t> pending_dead_letters;
  core_counters core;
  transport_counters transport;
  discovery_counters discovery;
  std::uint64_t store_batches = 0;
  latency_histogram::snapshot commit_latency;
  bool store_failing = false;
  bool database_file_present = true;
  std::optional<int> brokers_alive;  // in a cluster
};

std::string render_metrics(const metrics_snapshot& m);

}  // namespace ma
