// The broker's options (protocol.md defaults), parsed by CLI11 from the command line and the
// --config file. No Asio or CLI11 in this header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "broker/core/settings.hpp"
#include "core/config.hpp"

namespace ma {

// The part the broker core uses (timeouts, limits, the dead-letter settings, the name) is its
// core_settings; the rest is for the binding (addresses, discovery, the database, logging).
struct broker_options : core_settings {
  broker_options() { accept_delay_us = 10000; }
  std::string listen_address = "127.0.0.1";
  std::uint16_t port = 10000;
  bool discovery = true;
  std::string discovery_group = "239.255.77.77";
  std::uint16_t discovery_port = 10001;
  std::string discovery_interface = "127.0.0.1";
  bool discovery_legacy_login = false;  // answer the original design's log_in datagram
  std::string advertise_address;  // empty: the listen address, else the address facing the asker
  std::string database = "data/message-broker.db";
  std::uint32_t max_connections = 10'000;
  std::uint64_t max_memory_mb = 0;  // resident memory past which new connections get server_busy; 0: 3/4 of RAM
  std::string sqlite_synchronous = "full";  // full (survives a power loss) | normal (a killed process)
  std::string log_level = "info";
  std::string acl_file;  // empty: everything is allowed to everyone logged in
  // The operator's HTTP endpoint: GET /metrics (Prometheus) and GET /healthz.
  std::uint16_t http_port = 0;  // 0: none
  std::string http_address = "127.0.0.1";
  // TLS: a second listener on listen_address that speaks the same frames over TLS 1.2 or later.
  std::uint16_t tls_port = 0;  // 0: no TLS listener
  std::string tls_cert, tls_key;  // PEM: the certificate chain and its private key
  std::string tls_ca;            // PEM: the CA that signs client certificates
  bool tls_require_client_cert = false;
  bool tls_identity_as_username = false;  // the client certificate's common name is the username
  // The cost of the hashes `message-broker passwd` makes, and below which a login rehashes.
  std::uint64_t password_hash_ops = 2;
  std::uint64_t password_hash_mem_kib = 64 * 1024;
  // A cluster (docs/cluster.md): the nats-servers, comma-separated nats://host:port (empty: one
  // broker on its own), and the name the brokers of one cluster share.
  std::string cluster_nats;
  std::string cluster_name = "message-agent";
};


// What the command line asked for.
struct broker_command {
  broker_options options;
  std::vector<resolved_option> resolved;  // every option, its value and where it came from
  bool check_config = false;
  bool help = false;         // help_text holds the usage
  std::string help_text;
};

// Parses args (argv without the program name). Throws config_error with a sentence naming the
// option or file line on any bad value, unknown option or unreadable config file.
broker_command parse_broker_command_line(const std::vector<std::string>& args);

// The table --check-config prints: one line per option, "name = value  (source)".
std::string format_resolved(const std::vector<resolved_option>& resolved);

}  // namespace ma
