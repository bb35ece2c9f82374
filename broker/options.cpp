#include "broker/options.hpp"

#include <arpa/inet.h>

#include <algorithm>

#include <CLI/CLI.hpp>

#include "cluster/backbone.hpp"
#include "core/duration.hpp"

namespace ma {
namespace {

enum class address_kind { any, multicast };

bool parse_ipv4_or_6(const std::string& text, bool& multicast) {
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    multicast = (ntohl(v4.s_addr) >> 28) == 0xE;
    return true;
  }
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    multicast = v6.s6_addr[0] == 0xff;
    return true;
  }
  return false;
}

CLI::Validator ip_address(address_kind k) {
  return CLI::Validator(
      [k](std::string& value) -> std::string {
        bool multicast = false;
        if (!parse_ipv4_or_6(value, multicast)) return "'" + value + "' is not an IPv4 or IPv6 address";
        if (k == address_kind::multicast && !multicast) return "'" + value + "' is not a multicast address";
        return {};
      },
      k == address_kind::multicast ? "MULTICAST-ADDRESS" : "ADDRESS");
}

// Rejects "-5" before an unsigned conversion could wrap it into range.
const CLI::Validator whole_number(
    [](std::string& value) -> std::string {
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) {
        return "'" + value + "' is not a whole number of 0 or more";
      }
      return {};
    },
    "NUMBER");

template <class T>
CLI::Option* positive(CLI::App& app, const char* name, T& value, const char* help) {
  return app.add_option(name, value, help)
      ->check(whole_number)
      ->check(CLI::Range(T{1}, std::numeric_limits<T>::max()));
}

}  // namespace

broker_command parse_broker_command_line(const std::vector<std::string>& args) {
  broker_command cmd;
  broker_options& o = cmd.options;
  CLI::App app{"message-broker " MA_VERSION ": relays messages between agents and keeps every undelivered one.",
               "message-broker"};
  app.option_defaults()->always_capture_default();
  app.set_help_flag("-h,--help", "Print this help and exit");
  app.set_version_flag("--version", "message-broker " MA_VERSION, "Print the version and exit");
  app.footer(
      "Subcommands (each with its own --help):\n"
      "  message-broker dead-letters list|show|replay|purge   inspect and manage the Dead Letter Channel\n"
      "  message-broker passwd --password-file FILE [--delete] USER   add, replace or delete a user's password");

  std::string config_file;
  app.add_option("--config", config_file, "Read options from FILE ('name = value' lines; the command line wins)");
  app.add_flag("--check-config", cmd.check_config,
               "Validate the options, print each resolved value and where it came from, and exit");

  app.add_option("--listen-address", o.listen_address, "TCP address to listen on")->check(ip_address(address_kind::any));
  app.add_option("--port", o.port, "TCP port to listen on (0 picks a free one)")
      ->check(whole_number)
      ->check(CLI::Range(0, 65535));
  app.add_option("--discovery", o.discovery, "Answer discovery queries on UDP (on|off)")->default_str("on");
  app.add_option("--discovery-group", o.discovery_group, "Multicast group of discovery queries")
      ->check(ip_address(address_kind::multicast));
  app.add_option("--discovery-port", o.discovery_port, "UDP port of discovery queries")
      ->check(whole_number)
      ->check(CLI::Range(0, 65535));
  app.add_option("--discovery-interface", o.discovery_interface, "Address of the interface that joins the group")
      ->check(ip_address(address_kind::any));
  app.add_option("--discovery-legacy-login", o.discovery_legacy_login,
                 "Answer the original design's log_in datagram, which replies to a port the asker names (on|off)")
      ->default_str("off");
  app.add_option("--advertise-address", o.advertise_address,
                 "Address put in discovery replies (default: the listen address, or the one facing the asker)")
      ->check(ip_address(address_kind::any));
  app.add_option("--database", o.database, "SQLite file of the Dead Letter Channel and the journal");
  app.add_option("--broker-name", o.broker_name, "Name announced to agents")->check([](const std::string& v) {
    return v.empty() || v.size() > 128 ? std::string("the broker name must be 1 to 128 characters") : std::string();
  });
  add_duration_option(app, "--heartbeat-interval-ms", o.heartbeat_interval_ms, "Heartbeat interval granted to agents");
  positive(app, "--eviction-factor", o.eviction_factor, "Silent intervals before an agent is evicted");
  add_duration_option(app, "--ack-timeout-ms", o.ack_timeout_ms, "Time a recipient has to acknowledge a message");
  add_duration_option(app, "--login-timeout-ms", o.login_timeout_ms, "Time a new connection has to log in");
  positive(app, "--max-connections", o.max_connections, "Connections beyond this get server_busy");
  app.add_option("--max-memory-mb", o.max_memory_mb,
                 "Resident memory (MiB) past which new connections get server_busy (0: three quarters of the RAM)")
      ->check(whole_number)
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--max-frame-bytes", o.max_frame_bytes, "Longest frame (line) accepted")
      ->check(whole_number)
      ->check(CLI::Range(std::uint64_t{64}, std::uint64_t{1} << 30));
  positive(app, "--max-message-bytes", o.max_message_bytes, "Largest message content accepted");
  positive(app, "--max-outbound-bytes", o.max_outbound_bytes,
           "Unsent bytes to one recipient before its further messages go to the Dead Letter Channel");
  positive(app, "--max-recipients", o.max_recipients, "Recipients one multicast_message may name");
  positive(app, "--max-group-members", o.max_group_members, "Members one group may have");
  positive(app, "--max-groups-per-user", o.max_groups_per_user, "Groups one user may be a member of");
  positive(app, "--max-pending-accepts", o.max_pending_accepts,
           "Messages of one session waiting for the store before it is read no further");
  app.add_option("--password-file", o.password_file,
                 "File of username:HASH lines (message-broker passwd); every log_in then needs its password")
      ->capture_default_str();
  app.add_option("--http-port", o.http_port,
                 "Port of the HTTP endpoint with /metrics (Prometheus) and /healthz (0: none)")
      ->check(whole_number)
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--http-address", o.http_address, "Address the HTTP endpoint listens on")
      ->check(ip_address(address_kind::any))
      ->capture_default_str();
  app.add_option("--tls-port", o.tls_port, "TLS listener port on the listen address (0: none)")->capture_default_str();
  app.add_option("--tls-cert", o.tls_cert, "PEM certificate chain of the TLS listener")->capture_default_str();
  app.add_option("--tls-key", o.tls_key, "PEM private key of the TLS listener")->capture_default_str();
  app.add_option("--tls-ca", o.tls_ca, "PEM CA whose client certificates the TLS listener accepts")->capture_default_str();
  app.add_option("--tls-require-client-cert", o.tls_require_client_cert,
                 "on: a TLS client must show a certificate signed by --tls-ca")
      ->default_str("off");
  app.add_option("--tls-identity-as-username", o.tls_identity_as_username,
                 "on: the client certificate's common name is the username (no password asked)")
      ->default_str("off");
  app.add_option("--acl-file", o.acl_file,
                 "File of send, broadcast and group rules per user (docs/security.md); what no rule allows is refused")
      ->capture_default_str();
  app.add_option("--password-hash-ops", o.password_hash_ops, "argon2id passes of a password's hash")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000}));
  app.add_option("--password-hash-mem-kib", o.password_hash_mem_kib, "argon2id memory of a password's hash, KiB")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{8}, std::uint64_t{4} * 1024 * 1024));
  positive(app, "--max-delivery-attempts", o.max_delivery_attempts, "Attempts before a dead letter is parked");
  add_duration_option(app, "--dead-letter-ttl-ms", o.dead_letter_ttl_ms, "Age at which a dead letter expires");
  add_duration_option(app, "--dedupe-window-ms", o.dedupe_window_ms, "How long a (sender, message_uuid) is remembered");
  add_duration_option(app, "--delivered-retention-ms", o.delivered_retention_ms,
                      "How long a delivered dead letter is kept before the broker removes it (0: until a purge)", 0);
  add_duration_option(app, "--parked-retention-ms", o.parked_retention_ms,
                      "How long a parked dead letter is kept before the broker removes it (0: until a purge)", 0);
  add_duration_option(app, "--expired-retention-ms", o.expired_retention_ms,
                      "How long an expired dead letter is kept before the broker removes it (0: until a purge)", 0);
  app.add_option("--persist-accepted", o.persist_accepted,
                 "Commit every accepted message to SQLite before message_accepted (on|off)")
      ->default_str("on");
  app.add_option("--accept-delay-us", o.accept_delay_us,
                 "Microseconds an accept waits for its live deliveries' acknowledgements before they are journaled (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{100'000}));
  app.add_option("--sqlite-synchronous", o.sqlite_synchronous,
                 "normal survives a killed process, full also a power loss")
      ->check(CLI::IsMember({"normal", "full"}));
  app.add_option("--cluster-nats", o.cluster_nats,
                 "nats://host:port of the NATS cluster's servers, comma-separated: this broker joins the cluster "
                 "(empty: a broker on its own)")
      ->capture_default_str()
      ->check([](const std::string& v) {
        for (const auto& url : comma_list(v)) {
          if (url.rfind("nats://", 0) != 0 || url.size() == 7) {
            return "'" + url + "' is not a nats://host:port URL";
          }
        }
        return std::string();
      });
  app.add_option("--cluster-name", o.cluster_name, "Name shared by the brokers of one cluster")
      ->capture_default_str()
      ->check([](const std::string& v) {
        return is_valid_cluster_name(v) ? std::string() : std::string("the cluster name must be 1 to 64 of A-Z a-z 0-9 _ -");
      });
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));

  try {
    cmd.resolved = parse_with_config(app, args, "--config");
  } catch (const CLI::CallForHelp&) {
    cmd.help = true;
    cmd.help_text = app.help();
    return cmd;
  } catch (const CLI::CallForVersion&) {
    cmd.help = true;
    cmd.help_text = "message-broker " MA_VERSION "\n";
    return cmd;
  }
  o.cluster = !comma_list(o.cluster_nats).empty();
  if (o.max_message_bytes > o.max_frame_bytes) {
    throw config_error("--max-message-bytes (" + std::to_string(o.max_message_bytes) +
                       ") must not be larger than --max-frame-bytes (" + std::to_string(o.max_frame_bytes) + ").");
  }
  return cmd;
}

std::string format_resolved(const std::vector<resolved_option>& resolved) {
  std::size_t width = 0;
  for (const auto& r : resolved) width = std::max(width, r.name.size() + 3 + r.value.size());
  std::string out;
  for (const auto& r : resolved) {
    std::string line = r.name + " = " + r.value;
    line.resize(std::max(line.size(), width), ' ');
    out += line + "  (" + std::string(to_string(r.source)) + ")\n";
  }
  return out;
}

}  // namespace ma
