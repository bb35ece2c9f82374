// message-agent: the command line over the agent library.
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>

#include "agent/chat.hpp"
#include "message_agent/client.hpp"
#include "message_agent/discovery.hpp"
#include "core/config.hpp"
#include "core/duration.hpp"
#include "core/names.hpp"
#include "core/request.hpp"
#include "core/terminal.hpp"
#include "core/utf8.hpp"

namespace asio = boost::asio;
namespace json = boost::json;
using namespace ma::agent;
using namespace std::chrono_literals;

namespace {

constexpr const char* exit_codes_help =
    "Exit status: 0 done; 1 bad usage; 2 no broker found or the connection was lost; "
    "3 refused by the broker (its error_code and sentence go to stderr); 4 --wait-delivered or "
    "listen --count timed out; 5 --wait-delivered: the message went to the Dead Letter Channel.";

enum exit_code { ok = 0, usage = 1, no_broker = 2, refused = 3, timed_out = 4, dead_lettered = 5 };

// Ends the program with a status and a sentence on stderr.
struct exit_with {
  int status;
  std::string text;
};

struct global_options {
  std::string broker;
  discovery_settings discovery;
  std::uint64_t discovery_timeout_ms = 1000;
  std::string user;
  std::optional<std::string> password;  // --password, else MESSAGE_AGENT_PASSWORD, else a prompt
  bool tls = false;
  bool one_shot = false;  // send, users, group...: discovery ends at the first answer
  std::string tls_ca, tls_cert, tls_key;
  bool json = false;
  std::string log_level = "warn";
};

void say(const std::string& line) {
  std::cout << line << '\n' << std::flush;
}

std::pair<std::string, std::uint16_t> split_host_port(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw exit_with{usage, "--broker must be HOST:PORT, e.g. 127.0.0.1:10000; got '" + address + "'."};
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long port = 0;
  try {
    port = std::stoul(address.substr(colon + 1));
  } catch (const std::exception&) {
    port = 0;
  }
  if (port == 0 || port > 65535) throw exit_with{usage, "The port in --broker must be 1 to 65535; got '" + address + "'."};
  return {host, static_cast<std::uint16_t>(port)};
}

// The brokers that answered discovery, in the order they answered; exit 2 when none did.
asio::awaitable<std::vector<discovered_broker>> find_brokers(const global_options& g) {
  discovery_settings d = g.discovery;
  d.timeout = std::chrono::milliseconds(g.discovery_timeout_ms);
  // With TLS, the first answer may come from a broker without a TLS listener: all are heard.
  d.first_answer_only = g.one_shot && !g.tls;
  std::vector<discovered_broker> found;
  try {
    found = co_await discover(d);
  } catch (const std::exception& e) {
    throw exit_with{no_broker, "Discovery failed (" + std::string(e.what()) + ") on group " + d.group + " port " +
                                   std::to_string(d.port) + " via interface " + d.interface +
                                   "; give --broker HOST:PORT instead."};
  }
  if (found.empty()) {
    throw exit_with{no_broker, "No broker answered on group " + d.group + " port " + std::to_string(d.port) +
                                   " via interface " + d.interface + " within " +
                                   std::to_string(g.discovery_timeout_ms) +
                                   " ms; start message-broker, or give --broker HOST:PORT."};
  }
  co_return found;
}

// The brokers to use, the first one first: --broker's (comma-separated: the brokers of a
// cluster, tried in turn), or every one that answered discovery, in the order they answered.
asio::awaitable<std::vector<std::pair<std::string, std::uint16_t>>> broker_addresses(const global_options& g) {
  std::vector<std::pair<std::string, std::uint16_t>> out;
  if (!g.broker.empty()) {
    for (const auto& address : ma::comma_list(g.broker)) out.push_back(split_host_port(address));
    if (out.empty()) throw exit_with{usage, "--broker must be HOST:PORT, e.g. 127.0.0.1:10000; got '" + g.broker + "'."};
    co_return out;
  }
  auto found = co_await find_brokers(g);  // throws when none answered
  for (auto& b : found) {
    if (!g.tls) {
      out.push_back(split_host_port(b.address));
    } else if (!b.tls_address.empty()) {
      out.push_back(split_host_port(b.tls_address));
    }
  }
  if (out.empty()) {
    throw exit_with{no_broker, "No broker that answered has a TLS listener: start one with --tls-port, or drop --tls."};
  }
  co_return out;
}

void require_user(const global_options& g) {
  if (g.user.empty()) throw exit_with{usage, "Give your username with --user NAME."};
  if (!ma::is_valid_username(g.user)) {
    throw exit_with{usage, "--user '" + g.user + "' is not a valid username: use 1 to 64 characters of A-Z a-z 0-9 . _ -."};
  }
}

// How a command receives: one-shot commands only send (the broker hands them none of the
// user's messages, so they eat no delivery attempt), listen --count N takes at most N at once.
struct receiving {
  bool send_only = false;
  std::optional<std::uint64_t> window;
};

asio::awaitable<std::unique_ptr<client>> connect_client(const global_options& g, receiving how) {
  require_user(g);
  auto brokers = co_await broker_addresses(g);
  client::settings s;
  s.host = brokers.front().first;
  s.port = brokers.front().second;
  s.fallback_brokers.assign(brokers.begin() + 1, brokers.end());
  s.username = g.user;
  s.password = g.password;
  s.tls = g.tls || !g.tls_ca.empty() || !g.tls_cert.empty();
  s.tls_ca = g.tls_ca;
  s.tls_cert = g.tls_cert;
  s.tls_key = g.tls_key;
  if (const char* env = std::getenv("MESSAGE_AGENT_PASSWORD"); !s.password && env) s.password = env;
  s.send_only = how.send_only;
  s.receive_window = how.window;
  s.log = [](log_level level, const std::string& line) {
    constexpr spdlog::level::level_enum levels[] = {spdlog::level::debug, spdlog::level::info, spdlog::level::warn,
                                                    spdlog::level::err};
    spdlog::log(levels[static_cast<int>(level)], "{}", line);
  };
  // Without a password, a broker that wants one is answered from the terminal, once.
  for (bool asked = false;;) {
    auto c = std::make_unique<client>(co_await asio::this_coro::executor, s);
    try {
      co_await c->connect();
      co_return c;
    } catch (const broker_error& e) {
      if (e.code == "auth_failed" && !s.password && !asked && ma::stdin_is_terminal()) {
        s.password = ma::read_secret(("Password for " + g.user + ": ").c_str(), std::cerr).value_or("");
        asked = true;
        continue;
      }
      throw exit_with{refused, "The broker refused: " + e.code + ": " + e.what()};
    } catch (const connection_error& e) {
      throw exit_with{no_broker, e.what()};
    }
  }
}

// The body from elsewhere: TEXT "-" (or no TEXT and no --payload, with standard input not a
// terminal) reads standard input, without its last newline; --payload @FILE reads FILE.
void read_body_sources(std::string& text, std::string& payload) {
  if (text == "-" || (text.empty() && payload.empty() && !::isatty(STDIN_FILENO))) {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
    if (text.ends_with('\n')) text.pop_back();
    if (text.ends_with('\r')) text.pop_back();
  }
  if (payload.starts_with('@')) {
    const std::string path = payload.substr(1);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw exit_with{usage, "--payload " + payload + ": the file '" + path + "' can not be read."};
    payload.assign(std::istreambuf_iterator<char>(in), {});
  }
}

outgoing make_outgoing(const std::string& text, const std::string& payload, const std::string& uuid) {
  outgoing m;
  if (!text.empty()) m.text = text;
  if (!payload.empty()) {
    boost::system::error_code ec;
    json::parse(payload, ec);
    if (ec) throw exit_with{usage, "--payload must be JSON (" + ec.message() + "), e.g. '{\"n\":1}'."};
    m.payload_json = payload;
  }
  if (text.empty() && payload.empty()) throw exit_with{usage, "Give the message TEXT, or --payload JSON, or both."};
  if (auto bad = ma::first_invalid_utf8(text)) {
    throw exit_with{usage, "The message TEXT is not valid UTF-8 (at byte " + std::to_string(*bad) +
                               "); nothing was sent: check the terminal's encoding (LANG), or send bytes in --payload."};
  }
  if (!uuid.empty() && !ma::is_valid_message_uuid(uuid)) {
    throw exit_with{usage, "--uuid must be 1 to 128 characters of A-Z a-z 0-9 . _ : -."};
  }
  m.message_uuid = uuid;
  return m;
}

void print_result(const global_options& g, const send_result& r) {
  if (g.json) {
    json::object o;
    o["message_uuid"] = r.message_uuid;
    o["duplicate"] = r.duplicate;
    if (r.recipients.size() == 1 && r.recipients[0].receiver.empty()) {
      o["status"] = r.recipients[0].status;
    } else {
      json::array a;
      for (auto& x : r.recipients) a.push_back(json::object{{"receiver_username", x.receiver}, {"status", x.status}});
      o["recipients"] = std::move(a);
    }
    say(json::serialize(o));
    return;
  }
  std::string line = r.message_uuid;
  for (auto& x : r.recipients) line += " " + (x.receiver.empty() ? x.status : x.receiver + "=" + x.status);
  if (r.recipients.empty()) line += " (no recipients online)";
  if (r.duplicate) line += " (duplicate)";
  say(line);
}

void print_group(const global_options& g, const group_info& gi) {
  if (g.json) {
    json::array a;
    for (auto& u : gi.members) a.emplace_back(u);
    say(json::serialize(json::object{{"group_name", gi.name}, {"group_members", a}}));
    return;
  }
  std::string line = gi.name + ":";
  for (auto& u : gi.members) line += " " + u;
  say(line);
}

std::string describe(const message& m) {
  std::string line = "[" + m.sent_at + "] " + m.sender + " -> " + m.receiver + " (" + m.channel;
  if (!m.group_name.empty()) line += " " + m.group_name;
  if (m.redelivery) line += ", redelivery " + std::to_string(m.attempt) + ", " + m.dead_letter_reason;
  line += ")";
  if (m.text) line += ": " + *m.text;
  if (m.payload_json) line += (m.text ? "  " : ": ") + *m.payload_json;
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"message-agent " MA_VERSION ": talk to a message-broker.", "message-agent"};
  app.set_version_flag("--version", "message-agent " MA_VERSION, "Print the version and exit");
  app.footer(exit_codes_help);
  app.require_subcommand(1);
  app.fallthrough();  // global options may also come after the subcommand
  global_options g;
  std::string config_file;
  app.add_option("--config", config_file, "Read options from FILE ('name = value' lines; the command line wins)");
  app.add_option("-b,--broker", g.broker,
                 "HOST:PORT of the broker (skips discovery); several, comma-separated: the brokers of a cluster, "
                 "tried in turn when one is down")
      ->envname("MESSAGE_AGENT_BROKER");
  app.add_option("--discovery-group", g.discovery.group, "Multicast group (or unicast address) to ask")->capture_default_str();
  app.add_option("--discovery-port", g.discovery.port, "UDP port to ask")->capture_default_str();
  app.add_option("--discovery-interface", g.discovery.interface, "Interface address the query leaves by")
      ->capture_default_str();
  ma::add_duration_option(app, "--discovery-timeout-ms", g.discovery_timeout_ms, "How long to wait for answers")
      ->check(CLI::Range(1, 600'000))
      ->capture_default_str();
  app.add_option("-u,--user", g.user, "Your username (1 to 64 of A-Z a-z 0-9 . _ -)")->envname("MESSAGE_AGENT_USER");
  app.add_flag("--tls", g.tls, "Speak TLS (--broker then names the broker's TLS port; discovery uses its tls_address)");
  app.add_option("--tls-ca", g.tls_ca, "PEM CA that signed the broker's certificate (default: the system's)");
  app.add_option("--tls-cert", g.tls_cert, "PEM client certificate to present");
  app.add_option("--tls-key", g.tls_key, "PEM private key of --tls-cert");
  app.add_option("-p,--password", g.password,
                 "Your password, for a broker with a password file (else MESSAGE_AGENT_PASSWORD, else asked on the "
                 "terminal)");
  app.add_flag("-j,--json", g.json, "Print JSON, one object per line");
  app.add_option("--log-level", g.log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();

  auto* discover_cmd = app.add_subcommand("discover", "List every broker that answers");

  std::string to, text, payload, uuid;
  bool wait_delivered = false;
  std::uint64_t timeout_ms = 10'000;
  auto* send_cmd = app.add_subcommand("send", "Send a message to one user");
  send_cmd->add_option("to", to, "Recipient")->required();
  send_cmd->add_option("text", text, "Message text ('-' or none with a pipe: standard input)");
  send_cmd->add_option("--payload", payload, "JSON payload (@FILE: read from FILE)");
  send_cmd->add_option("--uuid", uuid, "message_uuid to use (default: a new UUID)");
  std::uint64_t ttl_ms = 0;
  const std::string ttl_help = "How long it may wait as a dead letter before it expires (default: the broker's)";
  ma::add_duration_option(*send_cmd, "--ttl-ms", ttl_ms, ttl_help);
  send_cmd->add_flag("--wait-delivered", wait_delivered, "Wait until the recipient acknowledges it");
  ma::add_duration_option(*send_cmd, "--timeout-ms", timeout_ms, "How long --wait-delivered waits")
      ->capture_default_str();

  std::string to_list;
  auto* multicast_cmd = app.add_subcommand("multicast", "Send a message to several users");
  multicast_cmd->add_option("to", to_list, "Recipients, comma-separated")->required();
  multicast_cmd->add_option("text", text, "Message text");
  multicast_cmd->add_option("--payload", payload, "JSON payload");
  multicast_cmd->add_option("--uuid", uuid, "message_uuid to use");
  ma::add_duration_option(*multicast_cmd, "--ttl-ms", ttl_ms, ttl_help);

  auto* broadcast_cmd = app.add_subcommand("broadcast", "Send a message to every online user");
  broadcast_cmd->add_option("text", text, "Message text");
  broadcast_cmd->add_option("--payload", payload, "JSON payload");
  broadcast_cmd->add_option("--uuid", uuid, "message_uuid to use");
  ma::add_duration_option(*broadcast_cmd, "--ttl-ms", ttl_ms, ttl_help);

  std::uint64_t count = 0;
  std::uint64_t listen_timeout_ms = 0;
  auto* listen_cmd = app.add_subcommand("listen", "Print messages as they arrive, acknowledging each");
  listen_cmd->add_option("--count", count, "Stop after this many messages (the broker hands no more at once)")
      ->check(CLI::Range(std::uint64_t{0}, ma::max_receive_window));
  ma::add_duration_option(*listen_cmd, "--timeout-ms", listen_timeout_ms, "Stop after this long (0: never)", 0);
  bool raw = false;
  listen_cmd->add_flag("--raw", raw, "Print only each message's body: its payload (JSON), else its text; for jq");

  auto* users_cmd = app.add_subcommand("users", "List the online users");

  auto* group_cmd = app.add_subcommand("group", "Group commands");
  group_cmd->require_subcommand(1);
  group_cmd->fallthrough();
  std::string group_name;
  std::vector<std::string> members;
  auto* group_create = group_cmd->add_subcommand("create", "Create a group (you are a member)");
  group_create->add_option("name", group_name, "Group name")->required();
  group_create->add_option("members", members, "Other members");
  auto* group_join = group_cmd->add_subcommand("join", "Join a group");
  group_join->add_option("name", group_name, "Group name")->required();
  auto* group_leave = group_cmd->add_subcommand("leave", "Leave a group");
  group_leave->add_option("name", group_name, "Group name")->required();
  auto* group_list = group_cmd->add_subcommand("list", "List the groups you are in, with their members");
  auto* group_send = group_cmd->add_subcommand("send", "Send a message to a group");
  group_send->add_option("name", group_name, "Group name")->required();
  group_send->add_option("text", text, "Message text");
  group_send->add_option("--payload", payload, "JSON payload");
  group_send->add_option("--uuid", uuid, "message_uuid to use");
  ma::add_duration_option(*group_send, "--ttl-ms", ttl_ms, ttl_help);

  auto* chat_cmd = app.add_subcommand("chat", "Chat interactively (/help for commands)");

  try {
    ma::parse_with_config(app, std::vector<std::string>(argv + 1, argv + argc), "--config");
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return ok;
  } catch (const CLI::CallForVersion&) {
    std::cout << "message-agent " MA_VERSION "\n";
    return ok;
  } catch (const ma::config_error& e) {
    std::cerr << "message-agent: " << e.what() << "\nRun 'message-agent --help' for the options.\n";
    return usage;
  }
  auto logger = spdlog::stderr_color_mt("message-agent");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(g.log_level));

  asio::io_context io(1);
  int status = ok;
  std::string error_text;
  std::unique_ptr<client> active;  // the one SIGINT closes
  bool interrupted = false;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    interrupted = true;
    if (active) {
      asio::co_spawn(io, active->close(), asio::detached);
    } else {
      io.stop();
    }
  });

  auto program = [&]() -> asio::awaitable<void> {
    if (discover_cmd->parsed()) {
      for (auto& b : co_await find_brokers(g)) {
        if (g.json) {
          say(json::serialize(json::object{{"broker_name", b.name},
                                           {"broker_address", b.address},
                                           {"protocol_version", b.protocol_version},
                                           {"online_users", b.online_users}}));
        } else {
          say(b.name + " " + b.address + " (" + std::to_string(b.online_users) + " online)");
        }
      }
      co_return;
    }
    // Usage errors are found before anything is sent.
    require_user(g);
    outgoing m;
    const bool sending = send_cmd->parsed() || multicast_cmd->parsed() || broadcast_cmd->parsed() || group_send->parsed();
    if (sending) {
      read_body_sources(text, payload);
      m = make_outgoing(text, payload, uuid);
    }
    if (ttl_ms > 0) m.ttl_ms = ttl_ms;
    std::vector<std::string> recipients;
    if (send_cmd->parsed() && !ma::is_valid_username(to)) {
      throw exit_with{usage, "'" + to + "' is not a valid username: use 1 to 64 characters of A-Z a-z 0-9 . _ -."};
    }
    if (multicast_cmd->parsed()) {
      std::stringstream ss(to_list);
      for (std::string name; std::getline(ss, name, ',');) {
        if (name.empty()) continue;
        if (!ma::is_valid_username(name)) {
          throw exit_with{usage, "'" + name + "' is not a valid username: use 1 to 64 characters of A-Z a-z 0-9 . _ -."};
        }
        recipients.push_back(name);
      }
      if (recipients.empty()) throw exit_with{usage, "Give the recipients as NAME1,NAME2,..."};
    }

    receiving how;
    how.send_only = !listen_cmd->parsed() && !chat_cmd->parsed();
    g.one_shot = how.send_only;
    if (listen_cmd->parsed() && count > 0) how.window = count;
    active = co_await connect_client(g, how);
    client& c = *active;
    try {
      if (send_cmd->parsed()) {
        auto r = co_await c.send(to, m);
        print_result(g, r);
        if (wait_delivered && !r.recipients.empty() && r.recipients.front().status == "dead_lettered") {
          throw exit_with{dead_lettered, r.message_uuid + " went to the Dead Letter Channel (recipient_offline): " + to +
                                             " is not online; it is delivered when " + to + " logs in."};
        }
        if (wait_delivered) {
          auto d = co_await c.delivered(r.message_uuid, std::chrono::milliseconds(timeout_ms));
          if (!d) {
            throw exit_with{timed_out, "No acknowledgement from " + to + " within " + std::to_string(timeout_ms) +
                                           " ms; the message stays with the broker until it is delivered."};
          }
          if (!d->delivered()) {
            throw exit_with{dead_lettered, r.message_uuid + " went to the Dead Letter Channel (" + d->dead_letter_reason +
                                               "); it is delivered when " + to + " logs in again."};
          }
          if (g.json) {
            say(json::serialize(json::object{{"message_uuid", r.message_uuid},
                                             {"receiver_username", d->receiver},
                                             {"delivered_at", d->delivered_at}}));
          } else {
            say(r.message_uuid + " delivered to " + d->receiver + " at " + d->delivered_at);
          }
        }
      } else if (multicast_cmd->parsed()) {
        print_result(g, co_await c.multicast(recipients, m));
      } else if (broadcast_cmd->parsed()) {
        print_result(g, co_await c.broadcast(m));
      } else if (group_send->parsed()) {
        print_result(g, co_await c.group_send(group_name, m));
      } else if (listen_cmd->parsed()) {
        const auto deadline = listen_timeout_ms ? std::chrono::steady_clock::now() + std::chrono::milliseconds(listen_timeout_ms)
                                                : std::chrono::steady_clock::time_point::max();
        std::uint64_t got = 0;
        // With --count, the messages are acknowledged together at the end, in the same write as
        // log_out: an acknowledgement that made room in the window earlier would have the broker
        // hand this session one message more than it will read.
        std::vector<message> to_acknowledge;
        while (count == 0 || got < count) {
          auto left = deadline == std::chrono::steady_clock::time_point::max()
                          ? std::chrono::milliseconds(24h)
                          : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
          if (left.count() <= 0) break;
          std::optional<message> msg;
          try {
            msg = co_await c.receive(left);
          } catch (const connection_error&) {
            if (interrupted) break;
            throw;
          }
          if (!msg) continue;
          if (raw) {
            say(msg->payload_json ? *msg->payload_json : msg->text.value_or(""));
          } else {
            say(g.json ? msg->content_json : describe(*msg));
          }
          if (count > 0) {
            to_acknowledge.push_back(std::move(*msg));
          } else {
            c.acknowledge(*msg);
          }
          ++got;
        }
        c.acknowledge(to_acknowledge);
        if (count > 0 && got < count && !interrupted) {
          co_await c.close();
          throw exit_with{timed_out, "Received " + std::to_string(got) + " of " + std::to_string(count) +
                                         " messages before the timeout."};
        }
      } else if (users_cmd->parsed()) {
        auto list = co_await c.users();
        if (g.json) {
          json::array a;
          for (auto& u : list) a.emplace_back(u);
          say(json::serialize(json::object{{"user_list", a}}));
        } else {
          for (auto& u : list) say(u);
        }
      } else if (group_create->parsed() || group_join->parsed() || group_leave->parsed()) {
        group_info gi;
        if (group_create->parsed()) gi = co_await c.create_group(group_name, members);
        else if (group_join->parsed()) gi = co_await c.join_group(group_name);
        else gi = co_await c.leave_group(group_name);
        print_group(g, gi);
      } else if (group_list->parsed()) {
        for (auto& gi : co_await c.groups()) print_group(g, gi);
      } else if (chat_cmd->parsed()) {
        co_await run_chat(c);
      }
    } catch (const broker_error& e) {
      throw exit_with{refused, "The broker refused: " + e.code + ": " + e.what()};
    } catch (const invalid_argument& e) {
      throw exit_with{usage, e.what()};
    } catch (const connection_error& e) {
      if (!interrupted) throw exit_with{no_broker, "The connection to the broker was lost: " + std::string(e.what())};
    }
    if (!interrupted) co_await c.close();
  };

  asio::co_spawn(io, program(), [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const exit_with& x) {
        status = x.status;
        error_text = x.text;
      } catch (const std::exception& x) {
        status = no_broker;
        error_text = x.what();
      }
    }
    signals.cancel();
    io.stop();
  });
  io.run();
  active.reset();
  if (!error_text.empty()) std::cerr << "message-agent: " << error_text << '\n';
  return status;
}
