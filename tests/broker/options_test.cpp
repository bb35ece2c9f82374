#include "broker/options.hpp"

#include "core/duration.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace ma {
namespace {

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_broker_command_line(args);
  } catch (const config_error& e) {
    return e.what();
  }
  return {};
}

const resolved_option& find(const broker_command& c, const std::string& name) {
  for (const auto& r : c.resolved) {
    if (r.name == name) return r;
  }
  throw std::runtime_error("no option " + name);
}

struct temp_file {
  std::filesystem::path path;
  explicit temp_file(const std::string& text) {
    path = std::filesystem::temp_directory_path() /
           ("ma-options-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".conf");
    std::ofstream(path) << text;
  }
  ~temp_file() { std::filesystem::remove(path); }
  static inline int counter = 0;
};

TEST(BrokerOptions, DefaultsFollowTheProtocol) {
  auto c = parse_broker_command_line({});
  EXPECT_EQ(c.options.listen_address, "127.0.0.1");
  EXPECT_EQ(c.options.port, 10000);
  EXPECT_EQ(c.options.discovery_group, "239.255.77.77");
  EXPECT_EQ(c.options.discovery_port, 10001);
  EXPECT_EQ(c.options.heartbeat_interval_ms, 10000u);
  EXPECT_EQ(c.options.eviction_factor, 3u);
  EXPECT_EQ(c.options.max_frame_bytes, 1024u * 1024);
  EXPECT_EQ(c.options.max_message_bytes, 256u * 1024);
  EXPECT_EQ(c.options.dedupe_window_ms, 600000u);
  EXPECT_TRUE(c.options.persist_accepted);
  EXPECT_TRUE(c.options.discovery);
  EXPECT_FALSE(c.options.discovery_legacy_login);
  EXPECT_EQ(c.options.max_recipients, 1000u);
  EXPECT_EQ(c.options.max_group_members, 1000u);
  EXPECT_EQ(c.options.max_groups_per_user, 100u);
  EXPECT_EQ(c.options.max_pending_accepts, 4096u);
  EXPECT_EQ(find(c, "port").source, option_source::default_value);
  EXPECT_EQ(find(c, "port").value, "10000");
}

TEST(BrokerOptions, CommandLineValues) {
  auto c = parse_broker_command_line({"--port", "0", "--discovery", "off", "--persist-accepted=off",
                                      "--sqlite-synchronous", "normal", "--check-config", "--max-recipients", "7",
                                      "--discovery-legacy-login", "on", "--max-pending-accepts", "16"});
  EXPECT_EQ(c.options.max_recipients, 7u);
  EXPECT_EQ(c.options.max_pending_accepts, 16u);
  EXPECT_TRUE(c.options.discovery_legacy_login);
  EXPECT_EQ(c.options.port, 0);
  EXPECT_FALSE(c.options.discovery);
  EXPECT_FALSE(c.options.persist_accepted);
  EXPECT_EQ(c.options.sqlite_synchronous, "normal");
  EXPECT_TRUE(c.check_config);
  EXPECT_EQ(find(c, "port").source, option_source::command_line);
}

TEST(BrokerOptions, BadValuesNameTheOption) {
  EXPECT_NE(error_of({"--port", "70000"}).find("--port"), std::string::npos);
  EXPECT_NE(error_of({"--ack-timeout-ms", "-5"}).find("--ack-timeout-ms"), std::string::npos);
  EXPECT_NE(error_of({"--ack-timeout-ms", "0"}).find("--ack-timeout-ms"), std::string::npos);
  EXPECT_NE(error_of({"--no-such-option"}).find("--no-such-option"), std::string::npos);
  EXPECT_NE(error_of({"--discovery-group", "10.0.0.1"}).find("multicast"), std::string::npos);
  EXPECT_NE(error_of({"--listen-address", "localhost:1"}).find("--listen-address"), std::string::npos);
  EXPECT_NE(error_of({"--sqlite-synchronous", "sometimes"}).find("--sqlite-synchronous"), std::string::npos);
  EXPECT_NE(error_of({"--max-message-bytes", "2000", "--max-frame-bytes", "1000"}).find("--max-message-bytes"),
            std::string::npos);
}

// Issue 17: every duration takes a unit, and plain milliseconds as before; on the command line
// and in the config file.
TEST(BrokerOptions, DurationsTakeUnits) {
  auto c = parse_broker_command_line({"--ack-timeout-ms", "30s", "--dead-letter-ttl-ms", "7d", "--heartbeat-interval-ms",
                                      "2500"});
  EXPECT_EQ(c.options.ack_timeout_ms, 30'000u);
  EXPECT_EQ(c.options.dead_letter_ttl_ms, 604'800'000u);
  EXPECT_EQ(c.options.heartbeat_interval_ms, 2'500u);
  EXPECT_EQ(find(c, "ack-timeout-ms").value, "30000") << "--check-config shows milliseconds";
  temp_file conf("login-timeout-ms = 1m\n");
  EXPECT_EQ(parse_broker_command_line({"--config", conf.path.string()}).options.login_timeout_ms, 60'000u);
  const std::string bad = error_of({"--ack-timeout-ms", "10 minutes"});
  EXPECT_NE(bad.find("--ack-timeout-ms"), std::string::npos) << bad;
  EXPECT_NE(bad.find("10s"), std::string::npos) << "the sentence shows the forms: " << bad;
  EXPECT_NE(error_of({"--ack-timeout-ms", "0s"}).find("--ack-timeout-ms"), std::string::npos);
}

// Issue 17: a mistyped option gets the nearest one instead of CLI11's list of leftovers.
TEST(BrokerOptions, AMistypedOptionGetsTheNearestOne) {
  EXPECT_EQ(error_of({"--prot", "5"}), "'--prot' is not an option here; did you mean --port?");
  EXPECT_EQ(error_of({"--ack-timeout", "5"}), "'--ack-timeout' is not an option here; did you mean --ack-timeout-ms?");
  EXPECT_EQ(error_of({"--frobnicate"}), "'--frobnicate' is not an option here");
}

// Issue 17: a value an enumerated or on/off option does not take gets its valid values.
TEST(BrokerOptions, AWrongValueOfAChoiceGetsTheValidOnes) {
  EXPECT_EQ(error_of({"--sqlite-synchronous", "fast"}), "--sqlite-synchronous: 'fast' is not one of: normal, full.");
  EXPECT_EQ(error_of({"--discovery", "maybe"}),
            "--discovery: 'maybe' is not on or off (true/false, yes/no and 1/0 work too).");
  EXPECT_EQ(error_of({"--log-level", "loud"}),
            "--log-level: 'loud' is not one of: trace, debug, info, warn, error, critical, off.");
}

TEST(BrokerOptions, TheClusterOptionsMakeABrokerOfACluster) {
  auto single = parse_broker_command_line({});
  EXPECT_FALSE(single.options.cluster);
  EXPECT_EQ(single.options.cluster_name, "message-agent");
  auto c = parse_broker_command_line(
      {"--cluster-nats", "nats://127.0.0.1:4222, nats://127.0.0.1:4223,", "--cluster-name", "east_1"});
  EXPECT_TRUE(c.options.cluster);
  EXPECT_EQ(comma_list(c.options.cluster_nats),
            (std::vector<std::string>{"nats://127.0.0.1:4222", "nats://127.0.0.1:4223"}));
  EXPECT_EQ(c.options.cluster_name, "east_1");
  EXPECT_EQ(find(c, "cluster-nats").source, option_source::command_line);
  EXPECT_NE(error_of({"--cluster-nats", "127.0.0.1:4222"}).find("--cluster-nats"), std::string::npos);
  EXPECT_NE(error_of({"--cluster-name", "a.b"}).find("--cluster-name"), std::string::npos);
  EXPECT_NE(error_of({"--cluster-name", ""}).find("--cluster-name"), std::string::npos);
}

TEST(BrokerOptions, ConfigFileAndCommandLineWins) {
  temp_file f("# test\nport = 12345\nbroker-name = from-file\nlog-level = debug\n");
  auto c = parse_broker_command_line({"--config", f.path.string(), "--log-level", "warn"});
  EXPECT_EQ(c.options.port, 12345);
  EXPECT_EQ(c.options.broker_name, "from-file");
  EXPECT_EQ(c.options.log_level, "warn");
  EXPECT_EQ(find(c, "port").source, option_source::file);
  EXPECT_EQ(find(c, "log-level").source, option_source::command_line);
  EXPECT_EQ(find(c, "ack-timeout-ms").source, option_source::default_value);
}

TEST(BrokerOptions, ConfigFileErrorsNameFileAndLine) {
  temp_file unknown("port = 1\nbogus = 3\n");
  const std::string e1 = error_of({"--config", unknown.path.string()});
  EXPECT_NE(e1.find(unknown.path.string() + " line 2"), std::string::npos) << e1;
  temp_file bad("port = 99999\n");
  const std::string e2 = error_of({"--config", bad.path.string()});
  EXPECT_NE(e2.find("--port"), std::string::npos) << e2;
  EXPECT_NE(e2.find(bad.path.string()), std::string::npos) << e2;
  EXPECT_NE(error_of({"--config", "/nonexistent/broker.conf"}).find("/nonexistent/broker.conf"), std::string::npos);
}

TEST(BrokerOptions, ShippedConfigFileListsEveryOptionWithItsDefault) {
  const std::filesystem::path shipped = std::filesystem::path(MA_SOURCE_DIR) / "config" / "message-broker.conf";
  const auto defaults = parse_broker_command_line({});
  const auto entries = parse_config_text(read_text_file(shipped.string()), shipped.string());
  for (const auto& r : defaults.resolved) {
    if (r.name == "config" || r.name == "check-config") continue;
    bool listed = false;
    for (const auto& e : entries) listed = listed || e.name == r.name;
    // Every option appears, commented out with its default, or set.
    const std::string text = read_text_file(shipped.string());
    EXPECT_TRUE(listed || text.find("# " + r.name + " =") != std::string::npos) << r.name;
  }
  auto c = parse_broker_command_line({"--config", shipped.string()});
  EXPECT_EQ(c.options.port, defaults.options.port);
}

// Issue item 8: the top of each duration's accepted range made the time arithmetic wrap
// (every letter expired at once, everyone evicted, every delivery timed out).
TEST(BrokerOptions, DurationsPastWhatTheClocksHoldAreRefusedWithASentence) {
  for (const char* name : {"--heartbeat-interval-ms", "--ack-timeout-ms", "--login-timeout-ms", "--dead-letter-ttl-ms",
                           "--dedupe-window-ms"}) {
    const auto e = error_of({name, "18446744073709551615"});
    EXPECT_NE(e.find(name), std::string::npos) << e;
    EXPECT_NE(e.find("100 years"), std::string::npos) << e;
    EXPECT_FALSE(error_of({name, "99999999999999999999999"}).empty()) << name;
    EXPECT_FALSE(error_of({name, "0"}).empty()) << name;
    auto ok = parse_broker_command_line({name, std::to_string(max_duration_ms)});
    (void)ok;
  }
}

}  // namespace
}  // namespace ma
