#include "broker/metrics.hpp"

#include <fmt/format.h>

#include <iterator>

namespace ma {

namespace {

class writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out), "# HELP message_broker_{} {}\n# TYPE message_broker_{} {}\n", name, help,
                   name, type);
  }
  // Counts print as integers, exactly; times as the shortest text that reads back the same.
  template <class Number>
  void sample(std::string_view name, Number v, std::string_view labels = {}) {
    if (labels.empty()) {
      fmt::format_to(std::back_inserter(out), "message_broker_{} {}\n", name, v);
    } else {
      fmt::format_to(std::back_inserter(out), "message_broker_{}{{{}}} {}\n", name, labels, v);
    }
  }
  template <class Number>
  void one(std::string_view name, std::string_view type, std::string_view help, Number v) {
    family(name, type, help);
    sample(name, v);
  }
  // A counter with one sample per error_code, every code listed (zero or not).
  template <class Counts>
  void by_code(std::string_view name, std::string_view help, const Counts& counts) {
    family(name, "counter", help);
    for (errc e : all_errcs) sample(name, counts[static_cast<std::size_t>(e)], fmt::format("code=\"{}\"", to_string(e)));
  }
  std::string out;
};

}  // namespace

std::string render_metrics(const metrics_snapshot& m) {
  writer w;
  w.family("build_info", "gauge", "The broker's version, as a label; always 1.");
  w.sample("build_info", 1, fmt::format("version=\"{}\"", m.version));

  w.one("connections", "gauge", "TCP and TLS connections open now, logged in or not.", m.connections);
  w.one("agents_online", "gauge", "Agents logged in now (at other brokers of a cluster too).", m.online);
  w.one("in_flight", "gauge", "Deliveries sent and not yet acknowledged.", m.in_flight);
  if (m.pending_dead_letters) {
    w.one("dead_letters_pending", "gauge", "Dead letters waiting for their recipient's next login.",
          *m.pending_dead_letters);
  }
  w.one("connections_accepted_total", "counter", "Connections accepted.", m.transport.connections_accepted);
  w.one("connections_refused_total", "counter",
        "Connections refused with server_busy (max_connections or the memory budget).",
        m.transport.connections_refused);
  w.one("received_bytes_total", "counter", "Bytes read from agents' connections.", m.transport.bytes_in);
  w.one("sent_bytes_total", "counter", "Bytes written to agents' connections.", m.transport.bytes_out);

  const core_counters& c = m.core;
  w.one("messages_accepted_total", "counter", "Messages committed and answered with message_accepted.",
        c.accepted);
  w.one("messages_duplicate_total", "counter", "Sends of a (sender, message_uuid) pair accepted before.",
        c.duplicates);
  w.one("deliveries_relayed_total", "counter", "Deliveries handed to an online recipient at once.",
        c.relayed);
  w.one("deliveries_acknowledged_total", "counter", "Deliveries and redeliveries acknowledged by their recipient.",
        c.delivered);
  w.family("dead_lettered_total", "counter", "Deliveries moved to the Dead Letter Channel, by reason.");
  for (dead_letter_reason r : all_dead_letter_reasons) {
    w.sample("dead_lettered_total", c.dead_lettered[static_cast<std::size_t>(r)],
             fmt::format("reason=\"{}\"", to_string(r)));
  }
  w.one("redeliveries_total", "counter", "Dead letters sent again to their recipient.", c.redelivered);
  w.one("dead_letters_parked_total", "counter", "Dead letters parked after their last delivery attempt.",
        c.parked);
  w.one("dead_letters_expired_total", "counter", "Dead letters whose ttl passed before they were delivered.",
        c.expired);
  w.by_code("errors_sent_total", "Error frames sent to agents, by error_code.", c.errors);
  w.by_code("log_ins_refused_total", "Errors answered to connections that had not logged in, by error_code.",
            c.refused_log_ins);

  w.family("discovery_queries_total", "counter", "Discovery datagrams received, by what became of them.");
  w.sample("discovery_queries_total", m.discovery.answered, "result=\"answered\"");
  w.sample("discovery_queries_total", m.discovery.malformed, "result=\"malformed\"");
  w.sample("discovery_queries_total", m.discovery.rate_limited, "result=\"rate_limited\"");
  w.sample("discovery_queries_total", m.discovery.legacy_off, "result=\"legacy_log_in_off\"");

  w.one("store_batches_total", "counter", "Transactions the store committed.", m.store_batches);
  w.family("store_commit_seconds", "histogram", "How long a committed transaction took, from begin to commit.");
  for (std::size_t i = 0; i < latency_histogram::bounds_seconds.size(); ++i) {
    w.sample("store_commit_seconds_bucket", m.commit_latency.at_most[i],
             fmt::format("le=\"{}\"", latency_histogram::bounds_seconds[i]));
  }
  w.sample("store_commit_seconds_bucket", m.commit_latency.count, "le=\"+Inf\"");
  w.sample("store_commit_seconds_sum", m.commit_latency.sum_seconds);
  w.sample("store_commit_seconds_count", m.commit_latency.count);
  w.one("store_failing", "gauge", "1 while the store's transactions fail (disk full, file gone, locked).",
        int{m.store_failing});
  w.one("database_file_present", "gauge", "0 while the database file is missing from its path.",
        int{m.database_file_present});
  if (m.brokers_alive) w.one("cluster_brokers_alive", "gauge", "Live brokers of the cluster, this one included.", *m.brokers_alive);
  return std::move(w.out);
}

}  // namespace ma
