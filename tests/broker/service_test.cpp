// message-broker as a systemd service: the unit, sd_notify, the watchdog, SIGHUP, install.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "storage/sqlite.hpp"
#include "tests/support/broker_harness.hpp"
#include "tests/support/process.hpp"

namespace ma {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string broker_binary = MA_BROKER_BINARY;
const std::string build_dir = MA_BUILD_DIR;
const std::string cmake_command = MA_CMAKE_COMMAND;

// The datagram socket systemd would listen on for sd_notify.
class notify_socket {
 public:
  explicit notify_socket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  ~notify_socket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // The next notification, or "" after the timeout.
  std::string next(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return {};
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
  // Waits for a notification containing text; returns it, or "" after the timeout.
  std::string wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      auto m = next(std::max(left, 1ms));
      if (m.find(text) != std::string::npos) return m;
    }
    return {};
  }
  // How many notifications containing text arrive during the time.
  int count(const std::string& text, std::chrono::milliseconds during) {
    int n = 0;
    const auto deadline = std::chrono::steady_clock::now() + during;
    while (std::chrono::steady_clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (next(std::max(left, 1ms)).find(text) != std::string::npos) ++n;
    }
    return n;
  }

 private:
  std::string path_;
  int fd_;
};


// The environment systemd gives a Type=notify unit with a watchdog of 200 ms.
std::vector<std::string> under_systemd(const test::temp_dir& dir) {
  return {"NOTIFY_SOCKET=" + dir.file("notify"), "WATCHDOG_USEC=200000"};
}

TEST(Service, UnitPassesSystemdAnalyzeVerify) {
  if (!fs::exists("/usr/bin/systemd-analyze")) GTEST_SKIP() << "systemd-analyze is not installed";
  auto [status, out] = test::run_command("/usr/bin/systemd-analyze", {"verify", build_dir + "/message-broker.service"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out.find("Unknown"), std::string::npos) << out;
}

TEST(Service, NotifiesReadyStatusWatchdogAndStopping) {
  test::temp_dir dir;
  notify_socket notify(dir.file("notify"));
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("broker.log"), under_systemd(dir));
  EXPECT_FALSE(notify.wait_for("READY=1", 20s).empty()) << broker.log();
  auto status = notify.wait_for("STATUS=", 20s);
  EXPECT_NE(status.find("agents online"), std::string::npos) << status;
  EXPECT_NE(status.find("pending dead letters"), std::string::npos) << status;
  EXPECT_GE(notify.count("WATCHDOG=1", 1000ms), 3);  // every 100 ms; a loaded machine gets slack
  broker.signal(SIGTERM);
  EXPECT_FALSE(notify.wait_for("STOPPING=1", 20s).empty());
  EXPECT_EQ(broker.wait(20s), 0);
}

TEST(Service, WatchdogPingsStopWhileTheDatabaseIsFrozen) {
  test::temp_dir dir;
  notify_socket notify(dir.file("notify"));
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("broker.log"), under_systemd(dir));
  ASSERT_FALSE(notify.wait_for("READY=1", 20s).empty()) << broker.log();
  ASSERT_FALSE(notify.wait_for("WATCHDOG=1", 20s).empty());
  {
    // Another connection holds the write lock: the broker's probe transaction can not begin.
    sqlite::connection other(dir.file("broker.db"), sqlite::connection::mode::existing_only);
    other.exec("BEGIN EXCLUSIVE");
    notify.count("WATCHDOG=1", 300ms);  // a probe that finished just before the lock may still ping once
    EXPECT_EQ(notify.count("WATCHDOG=1", 1500ms), 0) << "pings went on while the database was frozen";
    other.exec("ROLLBACK");
  }
  // The database answers again (after the busy timeout at the latest): pings resume.
  EXPECT_FALSE(notify.wait_for("WATCHDOG=1", 20s).empty());
}

// Issue item 9: with its database deleted the broker went on answering message_accepted and
// logged nothing; everything was lost at the next restart.
TEST(Service, TheDatabaseDeletedUnderTheBrokerStopsAcceptsLogsCriticalAndFailsTheWatchdog) {
  test::temp_dir dir;
  notify_socket notify(dir.file("notify"));
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("broker.log"), under_systemd(dir));
  ASSERT_FALSE(notify.wait_for("READY=1", 20s).empty()) << broker.log();
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  test::client alice(*port);
  alice.log_in("alice");
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "x"}, {"message_uuid", "before"}});
  EXPECT_EQ(alice.expect_content("message_accepted").at("message_uuid").as_string(), "before");
  ASSERT_FALSE(notify.wait_for("WATCHDOG=1", 20s).empty());

  fs::remove(dir.file("broker.db"));
  alice.send("send_message", {{"receiver_username", "bob"}, {"message_text", "x"}, {"message_uuid", "after"}});
  EXPECT_EQ(alice.expect_error("internal_error").at("message_uuid").as_string(), "after");
  EXPECT_TRUE(alice.quiet_of("message_accepted", 200ms));
  EXPECT_TRUE(broker.wait_for_log(std::regex(R"(critical.*broker\.db' was deleted)"), 20s)) << broker.log();
  EXPECT_FALSE(notify.wait_for("STATUS=the database file", 20s).empty());
  notify.count("WATCHDOG=1", 300ms);  // a probe that finished just before may still ping once
  EXPECT_EQ(notify.count("WATCHDOG=1", 1500ms), 0) << "the watchdog went on with the database gone";
}

TEST(Service, SighupChangesTheLogLevelOfARunningBroker) {
  test::temp_dir dir;
  const std::string conf = dir.file("broker.conf");
  std::ofstream(conf) << "log-level = info\nack-timeout-ms = 10000\n";
  auto args = test::broker_args(dir);
  args.insert(args.end(), {"--config", conf});
  test::child_process broker(broker_binary, args, dir.file("broker.log"));
  auto port = test::listening_port(broker, 20s);
  ASSERT_TRUE(port) << broker.log();
  {
    test::client c(*port);
    c.log_in("before");
  }
  EXPECT_EQ(broker.log().find("connected from"), std::string::npos);  // a debug line
  std::ofstream(conf) << "log-level = debug\nack-timeout-ms = 5000\nbroker-name = renamed\n";
  broker.signal(SIGHUP);
  EXPECT_TRUE(broker.wait_for_log(std::regex("log-level changed from info to debug"), 20s)) << broker.log();
  EXPECT_TRUE(broker.wait_for_log(std::regex("ack-timeout-ms changed from 10000 to 5000"), 20s)) << broker.log();
  EXPECT_TRUE(broker.wait_for_log(std::regex("broker-name changed .* restart"), 20s)) << broker.log();
  {
    test::client c(*port);
    c.log_in("after");
  }
  EXPECT_TRUE(broker.wait_for_log(std::regex("connected from"), 20s)) << broker.log();
  // A broken file is refused, and the broker goes on.
  std::ofstream(conf) << "log-level = loud\n";
  broker.signal(SIGHUP);
  EXPECT_TRUE(broker.wait_for_log(std::regex("not reloaded"), 20s)) << broker.log();
  test::client c(*port);
  c.log_in("still");
}

TEST(Service, JournalLinesCarryPriorityPrefixes) {
  test::temp_dir dir;
  test::child_process broker(broker_binary, test::broker_args(dir), dir.file("broker.log"), {"JOURNAL_STREAM=8:1234"});
  auto line = broker.wait_for_log(std::regex(R"((<\d>message-broker [0-9.]+ 'message-broker' listening)[^\n]*)"), 20s);
  ASSERT_TRUE(line) << broker.log();
  EXPECT_EQ(line->substr(0, 3), "<6>");
  broker.signal(SIGTERM);
  EXPECT_EQ(broker.wait(20s), 0);
  EXPECT_EQ(broker.log().find("[info]"), std::string::npos) << broker.log();  // no spdlog decoration
}

TEST(Service, InstallIntoATemporaryPrefixPutsEveryFileInPlace) {
  test::temp_dir dir;
  const std::string prefix = dir.file("prefix");
  auto [status, out] = test::run_command(cmake_command, {"--install", build_dir, "--prefix", prefix});
  ASSERT_EQ(status, 0) << out;
  for (const char* f : {"bin/message-broker", "bin/message-agent", "etc/message-broker/message-broker.conf",
                        "lib/systemd/system/message-broker.service", "share/man/man1/message-broker.1",
                        "share/man/man1/message-agent.1"}) {
    EXPECT_TRUE(fs::exists(prefix + "/" + f)) << f;
  }
  // The man pages are the binaries' --help, with the sections of docs/man.
  for (const char* page : {"message-broker", "message-agent"}) {
    std::ifstream in(prefix + "/share/man/man1/" + page + ".1");
    const std::string man((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(man.find(".SH SYNOPSIS"), std::string::npos) << page;
    EXPECT_NE(man.find(".SH \"SEE ALSO\""), std::string::npos) << page << man.substr(0, 2000);
    EXPECT_NE(man.find(MA_VERSION), std::string::npos) << page;
  }
  {
    std::ifstream in(prefix + "/share/man/man1/message-broker.1");
    const std::string man((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(man.find("dead\\-letters"), std::string::npos) << man;  // the subcommands
    EXPECT_NE(man.find("http\\-port"), std::string::npos);
  }
  std::ifstream unit(prefix + "/lib/systemd/system/message-broker.service");
  const std::string text((std::istreambuf_iterator<char>(unit)), {});
  EXPECT_NE(text.find("ExecStart=" + prefix + "/bin/message-broker --config " + prefix +
                      "/etc/message-broker/message-broker.conf"),
            std::string::npos)
      << text;
  auto [s2, out2] = test::run_command(prefix + "/bin/message-broker",
                                      {"--config", prefix + "/etc/message-broker/message-broker.conf", "--check-config"});
  EXPECT_EQ(s2, 0) << out2;
}

// The uid and gid of a user in a passwd-format file (/etc/passwd of a root), or nullopt.
std::optional<std::pair<int, int>> user_ids(const std::string& passwd_file, const std::string& name) {
  std::ifstream in(passwd_file);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, std::regex(R"(([^:]*):[^:]*:(\d+):(\d+):.*)")) && m[1] == name)
      return std::pair{std::stoi(m[2]), std::stoi(m[3])};
  }
  return std::nullopt;
}

// Issue #14: the unit keeps the files readable only by the service user. An installation for the
// /usr prefix in a temporary root; systemd-sysusers and systemd-tmpfiles apply its rules there as
// systemd does on a real machine (at boot and before the unit's start and reload); the files are
// made by root as an operator would (0600, root's group). Then the real broker, run as the
// service user, reads them all, and another user can not.
TEST(Service, TheUnitsFilesAreReadableByTheServiceUserAlone) {
  for (const char* tool : {"/usr/bin/systemd-sysusers", "/usr/bin/systemd-tmpfiles", "/usr/bin/setpriv", "/usr/bin/openssl"})
    if (!fs::exists(tool)) GTEST_SKIP() << tool << " is not installed";
  if (::geteuid() != 0) GTEST_SKIP() << "files owned by another user need root";
  test::temp_dir dir;
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  const std::string root = dir.file("root");
  auto [status, out] = test::run_command(cmake_command, {"--install", build_dir, "--prefix", "/usr"}, std::nullopt,
                                         {"DESTDIR=" + root});
  ASSERT_EQ(status, 0) << out;
  std::ifstream unit_file(root + "/usr/lib/systemd/system/message-broker.service");
  const std::string unit((std::istreambuf_iterator<char>(unit_file)), {});
  const std::string fix = "+/usr/bin/systemd-tmpfiles --create /usr/lib/tmpfiles.d/message-broker.conf";
  EXPECT_NE(unit.find("ExecStartPre=" + fix), std::string::npos) << unit;
  EXPECT_NE(unit.find("ExecReload=" + fix), std::string::npos) << unit;
  EXPECT_NE(unit.find("User=message-broker"), std::string::npos) << unit;
  EXPECT_EQ(unit.find("DynamicUser"), std::string::npos) << unit;

  std::tie(status, out) = test::run_command(
      "/usr/bin/systemd-sysusers", {"--root=" + root, root + "/usr/lib/sysusers.d/message-broker.conf"});
  ASSERT_EQ(status, 0) << out;
  const auto ids = user_ids(root + "/etc/passwd", "message-broker");
  ASSERT_TRUE(ids) << out;
  const auto [uid, gid] = *ids;

  // What root makes: a password file with passwd, an ACL, a key and certificate with openssl.
  const std::string etc = root + "/etc/message-broker";
  const std::string broker = root + "/usr/bin/message-broker";
  std::tie(status, out) = test::run_command(broker, {"passwd", "--password-file", etc + "/passwords", "alice"},
                                            std::string("secret\n"));
  ASSERT_EQ(status, 0) << out;
  { std::ofstream(etc + "/acl") << "user alice\nsend *\n"; }
  fs::permissions(etc + "/acl", fs::perms::owner_read | fs::perms::owner_write);
  fs::create_directories(etc + "/tls");
  std::tie(status, out) = test::run_command(
      "/usr/bin/openssl", {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                           etc + "/tls/broker.key", "-out", etc + "/tls/broker.pem", "-days", "2", "-subj", "/CN=broker"});
  ASSERT_EQ(status, 0) << out;
  fs::permissions(etc + "/tls/broker.key", fs::perms::owner_read | fs::perms::owner_write);

  std::tie(status, out) =
      test::run_command("/usr/bin/systemd-tmpfiles", {"--root=" + root, "--create", root + "/usr/lib/tmpfiles.d/message-broker.conf"});
  ASSERT_EQ(status, 0) << out;
  const auto mode_and_owner = [](const std::string& path) {
    struct stat st{};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return std::tuple{static_cast<int>(st.st_mode & 07777), static_cast<int>(st.st_uid), static_cast<int>(st.st_gid)};
  };
  EXPECT_EQ(mode_and_owner(etc), std::tuple(0750, 0, gid));
  EXPECT_EQ(mode_and_owner(etc + "/tls"), std::tuple(0750, 0, gid));
  for (const char* f : {"/passwords", "/acl", "/tls/broker.key", "/tls/broker.pem", "/message-broker.conf"})
    EXPECT_EQ(mode_and_owner(etc + f), std::tuple(0640, 0, gid)) << f;
  // Root adds a user later: the file keeps its group and mode.
  std::tie(status, out) = test::run_command(broker, {"passwd", "--password-file", etc + "/passwords", "bob"},
                                            std::string("other\n"));
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(mode_and_owner(etc + "/passwords"), std::tuple(0640, 0, gid));

  // The state directory as systemd makes it (StateDirectory=, mode 0700, the service user's).
  const std::string state = root + "/var/lib/message-broker";
  fs::create_directories(state);
  ASSERT_EQ(::chown(state.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid)), 0);
  fs::permissions(state, fs::perms::owner_all);
  const auto run_as = [&](int as_uid, int as_gid, const std::string& log) {
    std::vector<std::string> args = {"--reuid=" + std::to_string(as_uid), "--regid=" + std::to_string(as_gid),
                                     "--clear-groups", "--", broker, "--config", etc + "/message-broker.conf"};
    for (const auto& a : test::broker_args(dir)) args.push_back(a);
    args.back() = state + "/message-broker.db";
    args.insert(args.end(), {"--password-file", etc + "/passwords", "--acl-file", etc + "/acl", "--tls-port",
                             std::to_string(test::free_port()), "--tls-cert", etc + "/tls/broker.pem", "--tls-key",
                             etc + "/tls/broker.key"});
    return std::make_unique<test::child_process>("/usr/bin/setpriv", args, dir.file(log));
  };
  {
    auto service = run_as(uid, gid, "service.log");
    EXPECT_TRUE(service->wait_for_log(std::regex("TLS listener on"), 20s)) << service->log();
    EXPECT_NE(service->log().find("2 users in the password file"), std::string::npos) << service->log();
    EXPECT_NE(service->log().find("has rules for 1 users"), std::string::npos) << service->log();
    service->signal(SIGTERM);
    EXPECT_EQ(service->wait(20s), 0) << service->log();
  }
  auto stranger = run_as(uid + 1000, gid + 1000, "stranger.log");
  EXPECT_NE(stranger->wait(20s), std::optional<int>(0)) << stranger->log();
  EXPECT_NE(stranger->log().find("Cannot read the config file"), std::string::npos) << stranger->log();
  for (const char* f : {"/passwords", "/acl", "/tls/broker.key"}) {
    std::tie(status, out) = test::run_command(
        "/usr/bin/setpriv", {"--reuid=" + std::to_string(uid + 1000), "--regid=" + std::to_string(gid + 1000),
                             "--clear-groups", "--", "/bin/cat", etc + f});
    EXPECT_NE(status, 0) << f << ": " << out;
  }
}

}  // namespace
}  // namespace ma
