#include "core/counted.hpp"
#include "admin/dead_letters.hpp"

#include <CLI/CLI.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <optional>
#include <ostream>

#include "admin/command_line.hpp"
#include "core/config.hpp"
#include "core/duration.hpp"
#include "storage/database.hpp"

namespace ma {
namespace {

namespace json = boost::json;

json::object to_json(const dead_letter& d) {
  json::object o;
  o["id"] = d.id;
  o["seq"] = d.seq;
  o["message_uuid"] = d.message_uuid;
  o["sender_username"] = d.sender;
  o["receiver_username"] = d.receiver;
  o["channel"] = to_string(d.ch);
  if (!d.group_name.empty()) o["group_name"] = d.group_name;
  boost::system::error_code ec;
  json::value body = json::parse(d.body, ec);
  o["body"] = ec ? json::value(d.body) : std::move(body);
  o["reason"] = to_string(d.reason);
  o["state"] = to_string(d.state);
  o["attempts"] = d.attempts;
  o["accepted_at"] = d.accepted_at;
  o["dead_lettered_at"] = d.dead_lettered_at;
  o["last_attempt_at"] = d.last_attempt_at ? json::value(*d.last_attempt_at) : json::value(nullptr);
  o["delivered_at"] = d.delivered_at ? json::value(*d.delivered_at) : json::value(nullptr);
  o["expires_at"] = d.expires_at;
  return o;
}

void print_table(std::ostream& out, const std::vector<dead_letter>& rows) {
  std::vector<std::vector<std::string>> cells{
      {"SEQ", "MESSAGE_UUID", "SENDER", "RECEIVER", "CHANNEL", "REASON", "STATE", "ATTEMPTS", "ACCEPTED_AT"}};
  for (const auto& d : rows) {
    cells.push_back({std::to_string(d.seq), d.message_uuid, d.sender, d.receiver, std::string(to_string(d.ch)),
                     std::string(to_string(d.reason)), std::string(to_string(d.state)), std::to_string(d.attempts),
                     d.accepted_at});
  }
  std::vector<std::size_t> width(cells[0].size(), 0);
  for (const auto& row : cells) {
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : cells) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out << row[i];
      if (i + 1 < row.size()) out << std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << '\n';
  }
}

template <class T, class F>
CLI::Validator enum_validator(F from_string, const char* what) {
  return CLI::Validator(
      [from_string, what](std::string& v) -> std::string {
        return from_string(v) ? std::string() : "'" + v + "' is not a " + what;
      },
      what);
}

// What the command line asked for.
struct command {
  std::string path = "data/message-broker.db";
  bool as_json = false;
  std::string recipient, reason, list_state, replay_state = "parked", purge_state, uuid;
  int limit = 100;
  bool dry_run = false;
  std::string config;
  std::uint64_t older_than_ms = 0;
  CLI::Option* older_than = nullptr;  // given or not
  CLI::App* list = nullptr;
  CLI::App* show = nullptr;
  CLI::App* replay = nullptr;
  CLI::App* purge = nullptr;
};

void define(CLI::App& app, command& c) {
  app.require_subcommand(1);
  app.fallthrough();  // --database and --config after the subcommand too
  app.add_option("--database", c.path, "The broker's SQLite file")->capture_default_str();
  app.add_option("--config", c.config,
                 "The broker's configuration file: its database is the one (unless --database is given)");

  c.list = app.add_subcommand("list", "List dead letters, oldest first");
  c.list->add_option("--recipient", c.recipient, "Only those for this recipient");
  c.list->add_option("--reason", c.reason, "Only this reason")
      ->check(enum_validator<dead_letter_reason>(reason_from_string, "dead-letter reason"));
  c.list->add_option("--state", c.list_state, "Only this state (pending, delivered, parked, expired)")
      ->check(enum_validator<dead_letter_state>(state_from_string, "dead-letter state"));
  c.list->add_option("--limit", c.limit, "At most this many rows")->check(CLI::Range(1, 1'000'000))->capture_default_str();
  c.list->add_flag("--json", c.as_json, "One JSON object per line");

  c.show = app.add_subcommand("show", "Show the dead letters of one message, with its body and every attempt");
  c.show->add_option("uuid", c.uuid, "The message_uuid")->required();
  c.show->add_flag("--json", c.as_json, "One JSON object per line");

  c.replay = app.add_subcommand("replay", "Make parked or expired dead letters pending again");
  c.replay->add_option("--recipient", c.recipient, "Only those for this recipient");
  c.replay->add_option("--state", c.replay_state, "Which to replay: parked or expired")
      ->check(CLI::IsMember({"parked", "expired"}))
      ->capture_default_str();
  c.replay->add_flag("--dry-run", c.dry_run, "Only count them");

  c.purge = app.add_subcommand("purge", "Delete delivered, expired or parked dead letters");
  c.purge->add_option("--state", c.purge_state, "Only this state (default: all but pending)")
      ->check(CLI::IsMember({"delivered", "expired", "parked"}));
  c.older_than =
      add_duration_option(*c.purge, "--older-than-ms", c.older_than_ms, "Only those dead-lettered longer ago than this", 0);
  c.purge->add_flag("--dry-run", c.dry_run, "Only count them");
}

void list_letters(database& db, const command& c, std::ostream& out) {
  dead_letter_filter f;
  if (!c.recipient.empty()) f.recipient = c.recipient;
  if (!c.reason.empty()) f.reason = reason_from_string(c.reason);
  if (!c.list_state.empty()) f.state = state_from_string(c.list_state);
  f.limit = c.limit;
  const auto rows = db.list(f);
  if (!c.as_json) return print_table(out, rows);
  for (const auto& d : rows) out << json::serialize(to_json(d)) << '\n';
}

int show_letters(database& db, const command& c, std::ostream& out, std::ostream& err) {
  const auto rows = db.find(c.uuid);
  if (rows.empty()) {
    err << "message-broker dead-letters: no dead letter has message_uuid '" << c.uuid << "'.\n";
    return 1;
  }
  for (const auto& d : rows) {
    json::object o = to_json(d);
    json::array attempts;
    for (const auto& a : db.attempts_of(d.id)) {
      json::object t;
      t["attempt"] = a.attempt;
      t["started_at"] = a.started_at;
      t["finished_at"] = a.finished_at ? json::value(*a.finished_at) : json::value(nullptr);
      t["outcome"] = a.outcome;
      attempts.push_back(std::move(t));
    }
    o["delivery_attempts"] = std::move(attempts);
    if (c.as_json) {
      out << json::serialize(o) << '\n';
      continue;
    }
    for (const auto& [k, v] : o) {
      out << std::string(k) << ": " << (v.is_string() ? std::string(v.get_string()) : json::serialize(v)) << '\n';
    }
    out << '\n';
  }
  return 0;
}

void replay_letters(database& db, const command& c, std::ostream& out) {
  const std::optional<std::string> who = c.recipient.empty() ? std::nullopt : std::optional(c.recipient);
  if (!c.dry_run) db.begin();
  const auto n = db.replay(who, *state_from_string(c.replay_state), c.dry_run, now_ms());
  if (!c.dry_run) db.commit();
  out << (c.dry_run ? "would replay " : "replayed ") << counted(static_cast<std::uint64_t>(n), "dead letter") << '\n';
}

void purge_letters(database& db, const command& c, std::ostream& out) {
  std::optional<dead_letter_state> which;
  if (!c.purge_state.empty()) which = state_from_string(c.purge_state);
  std::optional<sys_ms> cutoff;
  if (c.older_than->count() > 0) cutoff = now_ms() - std::chrono::milliseconds(c.older_than_ms);
  if (c.dry_run) {
    const auto n = db.count_purgeable(which, cutoff);
    out << "would purge " << counted(static_cast<std::uint64_t>(n), "dead letter") << '\n';
    return;
  }
  const auto n = db.purge(which, cutoff);  // in chunks, each its own short transaction
  out << "purged " << counted(static_cast<std::uint64_t>(n), "dead letter") << '\n';
}

}  // namespace

int run_dead_letters_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  CLI::App app{"Inspect and manage the Dead Letter Channel in the broker's database.", "message-broker dead-letters"};
  command c;
  define(app, c);
  if (auto status = parse_command(app, args, out, err)) return *status;
  try {
    if (!c.config.empty() && app.get_option("--database")->count() == 0) {
      for (const auto& e : parse_config_text(read_text_file(c.config), c.config)) {
        if (e.name == "database") c.path = e.value;
      }
    }
    // Readers open the file read-only; writers need this broker's schema and never add it.
    database::settings settings{c.path};
    settings.create = false;
    settings.read_only = !((c.replay->parsed() || c.purge->parsed()) && !c.dry_run);
    settings.schema_required = true;
    database db(settings);
    if (c.list->parsed()) list_letters(db, c, out);
    if (c.show->parsed()) return show_letters(db, c, out, err);
    if (c.replay->parsed()) replay_letters(db, c, out);
    if (c.purge->parsed()) purge_letters(db, c, out);
  } catch (const sqlite::storage_error& e) {
    err << "message-broker dead-letters: " << e.what() << '\n';
    return 1;
  } catch (const config_error& e) {
    err << "message-broker dead-letters: " << e.what() << '\n';
    return 2;
  }
  return 0;
}

}  // namespace ma
