#include "storage/database.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <map>
#include <unordered_set>

#include "core/encode.hpp"

namespace ma {
namespace {

constexpr std::array reason_names{"recipient_offline", "ack_timeout", "recipient_disconnected", "queue_overflow",
                                  "broker_restart"};
constexpr std::array state_names{"pending", "delivered", "parked", "expired"};

// Version 1 of the schema. (CHECKs use OR, not IN: an IN list makes SQLite build a temporary
// B-tree every time a statement runs, which tripled the cost of a row.) The journal has no secondary index so that accepting and
// acknowledging stay one append and one delete by rowid; the Dead Letter Channel is indexed
// for redelivery by recipient and for late acknowledgements by uuid.
constexpr const char* schema_v1 = R"sql(
CREATE TABLE journal (
  id                INTEGER PRIMARY KEY,   -- the delivery's seq: acceptance order
  message_uuid      TEXT NOT NULL,
  sender_username   TEXT NOT NULL,
  receiver_username TEXT NOT NULL,
  channel           TEXT NOT NULL,
  group_name        TEXT,
  body              TEXT NOT NULL,         -- JSON: message_text and/or payload
  accepted_at       TEXT NOT NULL,         -- ISO 8601 UTC
  expires_at        TEXT NOT NULL
);

CREATE TABLE dead_letters (
  id                INTEGER PRIMARY KEY,
  seq               INTEGER NOT NULL,      -- acceptance order, shared with the journal
  message_uuid      TEXT NOT NULL,
  sender_username   TEXT NOT NULL,
  receiver_username TEXT NOT NULL,
  channel           TEXT NOT NULL CHECK (channel = 'direct' OR channel = 'multicast' OR channel = 'broadcast'
                                         OR channel = 'group'),
  group_name        TEXT,
  body              TEXT NOT NULL,
  reason            TEXT NOT NULL CHECK (reason = 'recipient_offline' OR reason = 'ack_timeout'
                                         OR reason = 'recipient_disconnected' OR reason = 'queue_overflow'
                                         OR reason = 'broker_restart'),
  state             TEXT NOT NULL DEFAULT 'pending' CHECK (state = 'pending' OR state = 'delivered'
                                                           OR state = 'parked' OR state = 'expired'),
  attempts          INTEGER NOT NULL DEFAULT 0,
  accepted_at       TEXT NOT NULL,
  dead_lettered_at  TEXT NOT NULL,
  last_attempt_at   TEXT,
  delivered_at      TEXT,
  expires_at        TEXT NOT NULL
);
-- Partial indexes: only pending letters are looked up by recipient or expiry, and a letter
-- that leaves pending costs one index delete, not a move.
CREATE INDEX dead_letters_pending_by_recipient ON dead_letters (receiver_username, seq) WHERE state = 'pending';
CREATE INDEX dead_letters_pending_by_expiry ON dead_letters (expires_at) WHERE state = 'pending';
CREATE INDEX dead_letters_by_uuid ON dead_letters (message_uuid);

CREATE TABLE delivery_attempts (
  dead_letter_id INTEGER NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
  attempt        INTEGER NOT NULL,
  started_at     TEXT NOT NULL,
  finished_at    TEXT,
  outcome        TEXT NOT NULL,            -- acknowledged, or why it failed
  PRIMARY KEY (dead_letter_id, attempt)
) WITHOUT ROWID;

CREATE TABLE groups (
  group_name TEXT PRIMARY KEY,
  created_by TEXT NOT NULL,
  created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE group_members (
  group_name TEXT NOT NULL REFERENCES groups (group_name) ON DELETE CASCADE,
  username   TEXT NOT NULL,
  joined_at  TEXT NOT NULL,
  PRIMARY KEY (group_name, username)
) WITHOUT ROWID;

-- For operators: what waits for whom, and why messages die.
CREATE VIEW pending_by_recipient AS
  SELECT receiver_username, count(*) AS pending, min(accepted_at) AS oldest_accepted_at
  FROM dead_letters WHERE state = 'pending' GROUP BY receiver_username;

CREATE VIEW dead_letter_counts AS
  SELECT reason, state, count(*) AS count FROM dead_letters GROUP BY reason, state;

CREATE VIEW in_flight AS
  SELECT id AS seq, message_uuid, sender_username, receiver_username, channel, accepted_at FROM journal;
)sql";

// Version 2: a replayed letter keeps counting its attempts (attempt numbers stay unique) and
// gets max_attempts anew from attempts_before_replay; letters replayed under version 1 had
// their count reset below their attempt rows, which is repaired here. The dedupe table keeps
// what was accepted within the dedupe window across restarts, also after acknowledgement: one
// row per accepted message, appended, and forgotten oldest first (no index beyond the rowid).
constexpr const char* schema_v2 = R"sql(
ALTER TABLE dead_letters ADD COLUMN attempts_before_replay INTEGER NOT NULL DEFAULT 0;
UPDATE dead_letters SET attempts_before_replay = a.last - dead_letters.attempts, attempts = a.last
  FROM (SELECT dead_letter_id, max(attempt) AS last FROM delivery_attempts GROUP BY dead_letter_id) AS a
  WHERE a.dead_letter_id = dead_letters.id AND a.last > dead_letters.attempts;

CREATE TABLE dedupe (
  id                INTEGER PRIMARY KEY,   -- acceptance order
  sender_username   TEXT NOT NULL,
  message_uuid      TEXT NOT NULL,
  accepted_at       TEXT NOT NULL,         -- ISO 8601 UTC
  status            TEXT NOT NULL          -- what message_accepted said: relayed, dead_lettered, or the
                                           -- recipients array as JSON
);
INSERT INTO dedupe (sender_username, message_uuid, accepted_at, status)
  SELECT sender_username, message_uuid, min(accepted_at), 'dead_lettered' FROM dead_letters
  GROUP BY sender_username, message_uuid ORDER BY min(seq);
)sql";

// Version 3: a message's body is stored once, however many recipients it has. `messages` holds
// it (with what is the same for every recipient); journal rows and dead letters refer to it by
// message_id. `deliveries` counts the rows that refer to a message; the message goes with the
// last of them. The count is kept by this class, not by triggers (which cost 10 us per message
// on the acknowledged path): a message is inserted with the number of rows about to refer to it,
// moving a journal row to the Dead Letter Channel leaves it as it is, and acknowledging and
// purging count down. (A counter, not an index on message_id: acknowledging stays deletes by
// rowid.) Older files are migrated: rows of one message (same sender, uuid, accept time and
// body) share one message row.
constexpr const char* schema_v3 = R"sql(
CREATE TABLE messages (
  id              INTEGER PRIMARY KEY,
  message_uuid    TEXT NOT NULL,
  sender_username TEXT NOT NULL,
  channel         TEXT NOT NULL CHECK (channel = 'direct' OR channel = 'multicast' OR channel = 'broadcast'
                                       OR channel = 'group'),
  group_name      TEXT,
  body            TEXT NOT NULL,           -- JSON: message_text and/or payload
  accepted_at     TEXT NOT NULL,           -- ISO 8601 UTC
  expires_at      TEXT NOT NULL,           -- from its ttl_ms (a replayed letter gets its own)
  deliveries      INTEGER NOT NULL DEFAULT 0  -- journal rows and dead letters that refer to it
);
INSERT INTO messages (message_uuid, sender_username, channel, group_name, body, accepted_at, expires_at)
  SELECT message_uuid, sender_username, channel, group_name, body, accepted_at, max(expires_at) FROM (
    SELECT message_uuid, sender_username, channel, group_name, body, accepted_at, expires_at FROM journal
    UNION ALL
    SELECT message_uuid, sender_username, channel, group_name, body, accepted_at, expires_at FROM dead_letters)
  GROUP BY sender_username, message_uuid, accepted_at, body ORDER BY min(accepted_at);
CREATE INDEX migrating_messages ON messages (sender_username, message_uuid, accepted_at);

DROP VIEW in_flight;

CREATE TABLE journal_v3 (
  id                INTEGER PRIMARY KEY,   -- the delivery's seq: acceptance order
  message_id        INTEGER NOT NULL,      -- messages.id
  receiver_username TEXT NOT NULL
);
INSERT INTO journal_v3 (id, message_id, receiver_username)
  SELECT j.id, m.id, j.receiver_username FROM journal j JOIN messages m
    ON m.sender_username = j.sender_username AND m.message_uuid = j.message_uuid
       AND m.accepted_at = j.accepted_at AND m.body = j.body;
DROP TABLE journal;
ALTER TABLE journal_v3 RENAME TO journal;

ALTER TABLE dead_letters ADD COLUMN message_id INTEGER NOT NULL DEFAULT 0;  -- messages.id
UPDATE dead_letters SET message_id = (SELECT m.id FROM messages m
  WHERE m.sender_username = dead_letters.sender_username AND m.message_uuid = dead_letters.message_uuid
    AND m.accepted_at = dead_letters.accepted_at AND m.body = dead_letters.body);
ALTER TABLE dead_letters DROP COLUMN body;
ALTER TABLE dead_letters DROP COLUMN channel;
ALTER TABLE dead_letters DROP COLUMN group_name;
DROP INDEX migrating_messages;
UPDATE messages SET deliveries = (SELECT count(*) FROM journal WHERE message_id = messages.id)
                               + (SELECT count(*) FROM dead_letters WHERE message_id = messages.id);

-- For operators: every letter with its message, and what is in flight.
CREATE VIEW letters AS
  SELECT d.id, d.seq, d.message_uuid, d.sender_username, d.receiver_username, m.channel, m.group_name, m.body,
         d.reason, d.state, d.attempts, d.attempts_before_replay, d.accepted_at, d.dead_lettered_at,
         d.last_attempt_at, d.delivered_at, d.expires_at, d.message_id
  FROM dead_letters d JOIN messages m ON m.id = d.message_id;

CREATE VIEW in_flight AS
  SELECT j.id AS seq, m.message_uuid, m.sender_username, j.receiver_username, m.channel, m.accepted_at
  FROM journal j JOIN messages m ON m.id = j.message_id;
)sql";

// Version 4: the dedupe pairs of one accept job are one row (a row per pair cost SQLite more
// than everything else an acknowledged message's accept writes); the view `dedupe` shows them a
// pair per row, as before.
constexpr const char* schema_v4 = R"sql(
CREATE TABLE dedupe_batches (
  id          INTEGER PRIMARY KEY,   -- acceptance order
  accepted_at TEXT NOT NULL,         -- ISO 8601 UTC, of its last pair
  pair_count  INTEGER NOT NULL,
  pairs       TEXT NOT NULL          -- JSON: [[sender_username, message_uuid, status], ...], status as
                                     -- message_accepted said it: "relayed", "dead_lettered" or the
                                     -- recipients array
);
INSERT INTO dedupe_batches (id, accepted_at, pair_count, pairs)
  SELECT id, accepted_at, 1, json_array(json_array(sender_username, message_uuid,
         CASE WHEN status LIKE '[%' THEN json(status) ELSE status END)) FROM dedupe ORDER BY id;
DROP TABLE dedupe;

CREATE VIEW dedupe AS
  SELECT b.id AS batch_id, j.key AS position, j.value ->> 0 AS sender_username, j.value ->> 1 AS message_uuid,
         b.accepted_at, j.value ->> 2 AS status
  FROM dedupe_batches b, json_each(b.pairs) j;
)sql";

// Version 5: an acknowledged redelivery is one narrow row in `redelivered`, folded into
// dead_letters (state, attempts, times) and delivery_attempts later, in bulk, when no redelivery
// runs. Updating the letter at once cost 19 us per letter, most of it the page of dead_letters
// it dirtied and the two partial indexes it left; the narrow row costs about 1. Until it is
// folded, a letter with such a row is delivered: the broker's queries skip it, and the views
// (`letters`, `attempts`, `pending_by_recipient`, `dead_letter_counts`) show it delivered.
constexpr const char* schema_v5 = R"sql(
CREATE TABLE redelivered (
  dead_letter_id INTEGER PRIMARY KEY,    -- dead_letters.id (a letter purged meanwhile: dropped at the fold)
  attempt        INTEGER NOT NULL,
  started_at     TEXT NOT NULL,
  delivered_at   TEXT NOT NULL
);

DROP VIEW letters;
CREATE VIEW letters AS
  SELECT d.id, d.seq, d.message_uuid, d.sender_username, d.receiver_username, m.channel, m.group_name, m.body,
         d.reason, iif(r.dead_letter_id IS NULL OR d.state <> 'pending', d.state, 'delivered') AS state,
         iif(r.dead_letter_id IS NULL OR d.state <> 'pending', d.attempts, r.attempt) AS attempts,
         d.attempts_before_replay, d.accepted_at, d.dead_lettered_at,
         iif(r.dead_letter_id IS NULL OR d.state <> 'pending', d.last_attempt_at, r.started_at) AS last_attempt_at,
         iif(r.dead_letter_id IS NULL OR d.state <> 'pending', d.delivered_at, r.delivered_at) AS delivered_at,
         d.expires_at, d.message_id
  FROM dead_letters d JOIN messages m ON m.id = d.message_id LEFT JOIN redelivered r ON r.dead_letter_id = d.id;

CREATE VIEW attempts AS
  SELECT dead_letter_id, attempt, started_at, finished_at, outcome FROM delivery_attempts
  UNION ALL
  SELECT dead_letter_id, attempt, started_at, delivered_at, 'acknowledged' FROM redelivered;

DROP VIEW pending_by_recipient;
CREATE VIEW pending_by_recipient AS
  SELECT receiver_username, count(*) AS pending, min(accepted_at) AS oldest_accepted_at
  FROM dead_letters d WHERE state = 'pending' AND NOT EXISTS (SELECT 1 FROM redelivered r WHERE r.dead_letter_id = d.id)
  GROUP BY receiver_username;

DROP VIEW dead_letter_counts;
CREATE VIEW dead_letter_counts AS
  SELECT reason, state, count(*) AS count FROM letters GROUP BY reason, state;
)sql";

// Version 6: the acknowledged redeliveries of one acknowledgement are one row of
// `redelivered_batches` (a narrow row per letter was 40% of the store's work in a drain); the
// view `redelivered` shows them a letter per row, as the table did. The broker's own queries
// skip those letters through acknowledged_unfolded(id), a function of the connection over the
// ids it holds in memory (database::unfolded); the views, for operators, read the batches.
constexpr const char* schema_v6 = R"sql(
CREATE TABLE redelivered_batches (
  id           INTEGER PRIMARY KEY,   -- acknowledgement order
  delivered_at TEXT NOT NULL,         -- ISO 8601 UTC: when the acknowledgement came
  letter_count INTEGER NOT NULL,
  letters      TEXT NOT NULL          -- JSON: [[dead_letter_id, attempt, started_at], ...]
);
INSERT INTO redelivered_batches (delivered_at, letter_count, letters)
  SELECT delivered_at, count(*), json_group_array(json_array(dead_letter_id, attempt, started_at))
  FROM (SELECT * FROM redelivered ORDER BY dead_letter_id) GROUP BY delivered_at ORDER BY min(dead_letter_id);

DROP VIEW dead_letter_counts;
DROP VIEW pending_by_recipient;
DROP VIEW attempts;
DROP VIEW letters;
DROP TABLE redelivered;

CREATE VIEW redelivered AS
  SELECT b.id AS batch_id, j.value ->> 0 AS dead_letter_id, j.value ->> 1 AS attempt, j.value ->> 2 AS started_at,
         b.delivered_at
  FROM redelivered_batches b, json_each(b.letters) j;

-- (Two halves, not a LEFT JOIN: SQLite would scan `redelivered` once for each letter. CROSS
-- JOIN keeps `redelivered` the outer loop.)
CREATE VIEW letters AS
  SELECT d.id, d.seq, d.message_uuid, d.sender_username, d.receiver_username, m.channel, m.group_name, m.body,
         d.reason, d.state, d.attempts, d.attempts_before_replay, d.accepted_at, d.dead_lettered_at,
         d.last_attempt_at, d.delivered_at, d.expires_at, d.message_id
  FROM dead_letters d JOIN messages m ON m.id = d.message_id
  WHERE d.id NOT IN (SELECT dead_letter_id FROM redelivered)
  UNION ALL
  SELECT d.id, d.seq, d.message_uuid, d.sender_username, d.receiver_username, m.channel, m.group_name, m.body,
         d.reason, iif(d.state <> 'pending', d.state, 'delivered'), iif(d.state <> 'pending', d.attempts, r.attempt),
         d.attempts_before_replay, d.accepted_at, d.dead_lettered_at,
         iif(d.state <> 'pending', d.last_attempt_at, r.started_at),
         iif(d.state <> 'pending', d.delivered_at, r.delivered_at), d.expires_at, d.message_id
  FROM redelivered r CROSS JOIN dead_letters d ON d.id = r.dead_letter_id JOIN messages m ON m.id = d.message_id;

CREATE VIEW attempts AS
  SELECT dead_letter_id, attempt, started_at, finished_at, outcome FROM delivery_attempts
  UNION ALL
  SELECT dead_letter_id, attempt, started_at, delivered_at, 'acknowledged' FROM redelivered;

CREATE VIEW pending_by_recipient AS
  SELECT receiver_username, count(*) AS pending, min(accepted_at) AS oldest_accepted_at
  FROM dead_letters WHERE state = 'pending' AND id NOT IN (SELECT dead_letter_id FROM redelivered)
  GROUP BY receiver_username;

CREATE VIEW dead_letter_counts AS
  SELECT reason, state, count(*) AS count FROM letters GROUP BY reason, state;
)sql";

// A dead letter's columns in read_letter's order, from the `letters` view: first those a
// redelivery sends (read_sendable's), then the rest.
constexpr const char* dead_letter_columns =
    "id, seq, message_uuid, sender_username, channel, group_name, body, reason, attempts, accepted_at, "
    "receiver_username, state, dead_lettered_at, last_attempt_at, delivered_at, expires_at, attempts_before_replay";
// The broker's own reads of pending letters: the table's state, less the letters acknowledged
// but not yet folded.
constexpr const char* not_redelivered = " AND NOT acknowledged_unfolded(d.id)";
constexpr const char* pending_page_sql =
    "SELECT d.id, d.seq, d.message_uuid, d.sender_username, m.channel, m.group_name, m.body, d.reason, d.attempts, "
    "d.accepted_at FROM dead_letters d JOIN messages m ON m.id = d.message_id WHERE d.receiver_username = ? AND "
    "d.state = 'pending' AND d.seq > ?";

std::optional<std::string> group_or_null(const std::string& g) {
  return g.empty() ? std::nullopt : std::optional<std::string>(g);
}

}  // namespace

std::string_view to_string(dead_letter_reason r) noexcept { return reason_names[static_cast<std::size_t>(r)]; }
std::string_view to_string(dead_letter_state s) noexcept { return state_names[static_cast<std::size_t>(s)]; }

std::optional<dead_letter_reason> reason_from_string(std::string_view text) noexcept {
  for (std::size_t i = 0; i < reason_names.size(); ++i) {
    if (text == reason_names[i]) return static_cast<dead_letter_reason>(i);
  }
  return std::nullopt;
}

std::optional<dead_letter_state> state_from_string(std::string_view text) noexcept {
  for (std::size_t i = 0; i < state_names.size(); ++i) {
    if (text == state_names[i]) return static_cast<dead_letter_state>(i);
  }
  return std::nullopt;
}

// Prepared once, for the life of the connection.
struct database::statements {
  sqlite::statement message_insert, journal_message, message_last, message_less, journal_insert, journal_delete, journal_move, dl_insert, pending_page, pending_page_folded,
      pending_count, redelivered_insert, attempt_insert, letter_after_attempt, late_ack_any, late_ack_sender, expire, group_insert,
      member_insert, member_delete, member_count, group_delete, group_exists, dedupe_insert, is_parked;

  explicit statements(sqlite::connection& db)
      : message_insert(db,
                       "INSERT INTO messages (message_uuid, sender_username, channel, group_name, body, accepted_at, "
                       "expires_at, deliveries) VALUES (?,?,?,?,?,?,?,?)"),
        journal_message(db, "SELECT message_id FROM journal WHERE id = ?"),
        message_last(db, "DELETE FROM messages WHERE id = ? AND deliveries <= 1"),
        message_less(db, "UPDATE messages SET deliveries = deliveries - 1 WHERE id = ?"),
        journal_insert(db, "INSERT INTO journal (id, message_id, receiver_username) VALUES (?,?,?)"),
        journal_delete(db, "DELETE FROM journal WHERE id = ?"),
        journal_move(db,
                     "INSERT INTO dead_letters (seq, message_id, message_uuid, sender_username, receiver_username, "
                     "reason, attempts, accepted_at, dead_lettered_at, last_attempt_at, expires_at) "
                     "SELECT j.id, j.message_id, m.message_uuid, m.sender_username, j.receiver_username, ?2, ?3, "
                     "m.accepted_at, ?4, CASE WHEN ?3 > 0 THEN m.accepted_at END, m.expires_at "
                     "FROM journal j JOIN messages m ON m.id = j.message_id WHERE j.id = ?1"),
        dl_insert(db,
                  "INSERT INTO dead_letters (seq, message_id, message_uuid, sender_username, receiver_username, "
                  "reason, accepted_at, dead_lettered_at, expires_at) "
                  "SELECT ?1, id, message_uuid, sender_username, ?3, ?4, accepted_at, ?5, expires_at "
                  "FROM messages WHERE id = ?2"),
        // (Not the `letters` view: its state is an expression, which the partial index can not serve.)
        pending_page(db, std::string(pending_page_sql) + not_redelivered + " ORDER BY d.seq LIMIT ?"),
        pending_page_folded(db, std::string(pending_page_sql) + " ORDER BY d.seq LIMIT ?"),
        pending_count(db, std::string("SELECT count(*) FROM dead_letters d WHERE receiver_username = ? AND "
                                      "state = 'pending'") + not_redelivered),
        redelivered_insert(db, "INSERT INTO redelivered_batches (delivered_at, letter_count, letters) VALUES (?,?,?)"),
        attempt_insert(db,
                       "INSERT INTO delivery_attempts (dead_letter_id, attempt, started_at, finished_at, "
                       "outcome) VALUES (?,?,?,?,?)"),
        // A failed attempt (an acknowledged one is in a row of `redelivered_batches`).
        letter_after_attempt(db, std::string("UPDATE dead_letters AS d SET attempts = ?2, last_attempt_at = ?3, "
                                             "state = CASE WHEN ?2 - attempts_before_replay >= ?4 THEN 'parked' "
                                             "ELSE 'pending' END, delivered_at = NULL "
                                             "WHERE id = ?1 AND state = 'pending'") +
                                     not_redelivered),
        late_ack_any(db, std::string("UPDATE dead_letters AS d SET state = 'delivered', delivered_at = ?3 "
                                     "WHERE message_uuid = ?2 AND receiver_username = ?1 AND state <> 'delivered'") +
                             not_redelivered + " RETURNING sender_username"),
        late_ack_sender(db, std::string("UPDATE dead_letters AS d SET state = 'delivered', delivered_at = ?3 "
                                        "WHERE message_uuid = ?2 AND receiver_username = ?1 AND sender_username = ?4 "
                                        "AND state <> 'delivered'") +
                                not_redelivered + " RETURNING sender_username"),
        expire(db, std::string("UPDATE dead_letters AS d SET state = 'expired' WHERE state = 'pending' AND "
                               "expires_at <= ?") +
                       not_redelivered + " RETURNING receiver_username"),
        group_insert(db, "INSERT OR IGNORE INTO groups (group_name, created_by, created_at) VALUES (?,?,?)"),
        member_insert(db, "INSERT OR IGNORE INTO group_members (group_name, username, joined_at) VALUES (?,?,?)"),
        member_delete(db, "DELETE FROM group_members WHERE group_name = ? AND username = ?"),
        member_count(db, "SELECT count(*) FROM group_members WHERE group_name = ?"),
        group_delete(db, "DELETE FROM groups WHERE group_name = ?"),
        group_exists(db, "SELECT 1 FROM groups WHERE group_name = ?"),
        dedupe_insert(db, "INSERT INTO dedupe_batches (accepted_at, pair_count, pairs) VALUES (?,?,?)"),
        is_parked(db, "SELECT 1 FROM dead_letters WHERE id = ? AND state = 'parked'") {}
};

namespace {

// Columns 0 to 9 of dead_letter_columns: what a redelivery sends.
void read_sendable(const sqlite::statement& s, dead_letter& d) {
  d.id = s.column_int(0);
  d.seq = s.column_int(1);
  d.message_uuid = s.column_text(2);
  d.sender = s.column_text(3);
  d.ch = channel_from_string(s.column_view(4)).value_or(channel::direct);
  d.group_name = s.column_optional_text(5).value_or("");
  d.body = s.column_text(6);
  d.reason = reason_from_string(s.column_view(7)).value_or(dead_letter_reason::recipient_offline);
  d.attempts = static_cast<int>(s.column_int(8));
  d.accepted_at = s.column_text(9);
}

dead_letter read_letter(const sqlite::statement& s) {
  dead_letter d;
  read_sendable(s, d);
  d.receiver = s.column_text(10);
  d.state = state_from_string(s.column_view(11)).value_or(dead_letter_state::pending);
  d.dead_lettered_at = s.column_text(12);
  d.last_attempt_at = s.column_optional_text(13);
  d.delivered_at = s.column_optional_text(14);
  d.expires_at = s.column_text(15);
  d.attempts_before_replay = static_cast<int>(s.column_int(16));
  return d;
}

std::int64_t single_int(sqlite::connection& db, std::string_view sql) {
  sqlite::statement s(db, sql);
  return s.step() ? s.column_int(0) : 0;
}

}  // namespace

struct database::unfolded {
  explicit unfolded(sqlite::connection& db) : version(db, "PRAGMA data_version") {}
  std::unordered_set<std::int64_t> ids;
  bool stale = true;              // loaded before a rollback, or never
  std::int64_t data_version = 0;  // PRAGMA data_version at the load: another connection's commit moves it
  sqlite::statement version;
};

namespace {

void acknowledged_unfolded(sqlite3_context* c, int, sqlite3_value** args) {
  const auto& ids = *static_cast<const std::unordered_set<std::int64_t>*>(sqlite3_user_data(c));
  sqlite3_result_int(c, ids.contains(sqlite3_value_int64(args[0])) ? 1 : 0);
}

}  // namespace

database::database(const settings& s)
    : db_(s.path,
          s.read_only ? sqlite::connection::mode::read_only
          : s.create  ? sqlite::connection::mode::create
                      : sqlite::connection::mode::existing_only,
          s.busy_timeout_ms) {
  // Reading the header first: a file that is not a database fails here, before any write.
  const std::int64_t version = single_int(db_, "PRAGMA user_version");
  if (version > schema_version) {
    throw sqlite::storage_error("The database '" + s.path + "' has schema version " + std::to_string(version) +
                                ", newer than this broker's " + std::to_string(schema_version) +
                                ": run a newer message-broker, or give --database another file.");
  }
  if ((s.read_only || s.schema_required) && version != schema_version) {
    if (version == 0) {
      throw sqlite::storage_error("The file '" + s.path +
                                  "' has no message-broker schema (it is empty, or another program's database); "
                                  "it was left untouched: give --database the broker's file.");
    }
    throw sqlite::storage_error("The database '" + s.path + "' has schema version " + std::to_string(version) +
                                ", older than this command's " + std::to_string(schema_version) +
                                "; it was left untouched: start message-broker on it once to migrate it.");
  }
  if (!s.schema_required && !s.read_only) {
    sqlite::statement check(db_, "PRAGMA quick_check(1)");
    const std::string verdict = check.step() ? check.column_text(0) : std::string("no answer");
    if (verdict != "ok") {
      throw sqlite::storage_error("The database '" + s.path + "' is corrupt (" + verdict +
                                  "); it was left untouched: restore a backup or give --database another file.");
    }
  }
  if (!s.read_only) db_.exec("PRAGMA journal_mode = WAL");
  db_.exec(s.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  db_.exec("PRAGMA foreign_keys = ON");
  db_.exec("PRAGMA temp_store = MEMORY");
  // A backlog of 100,000 letters is some 40 MB: keep it in cache rather than re-reading pages.
  db_.exec("PRAGMA cache_size = -65536");
  if (version < schema_version) migrate();
  unfolded_ = std::make_unique<unfolded>(db_);
  // Only for this connection's own statements (SQLITE_DIRECTONLY: never from a view).
  if (const int rc = sqlite3_create_function_v2(db_.handle(), "acknowledged_unfolded", 1,
                                                SQLITE_UTF8 | SQLITE_DIRECTONLY, &unfolded_->ids,
                                                acknowledged_unfolded, nullptr, nullptr, nullptr);
      rc != SQLITE_OK) {
    db_.fail(rc, "registering acknowledged_unfolded");
  }
  sqlite3_rollback_hook(db_.handle(), [](void* u) { static_cast<unfolded*>(u)->stale = true; }, unfolded_.get());
  st_ = std::make_unique<statements>(db_);
  // What a previous run acknowledged but did not fold, in one transaction.
  if (!s.read_only) fold_all_redelivered(std::numeric_limits<std::int64_t>::max());
  last_seq_ = std::max(single_int(db_, "SELECT coalesce(max(id), 0) FROM journal"),
                       single_int(db_, "SELECT coalesce(max(seq), 0) FROM dead_letters"));
  struct stat st {};
  if (::stat(s.path.c_str(), &st) == 0) {
    device_ = st.st_dev;
    inode_ = st.st_ino;
  }
}

void database::check_file() const {
  if (inode_ == 0) return;  // not a file (":memory:")
  struct stat st {};
  if (::stat(path().c_str(), &st) != 0 || st.st_ino != inode_ || st.st_dev != device_) {
    throw sqlite::storage_error("The database file '" + path() +
                                    "' was deleted or replaced while the broker ran: what it writes now would be "
                                    "lost at the next start. Restore the file (or stop the broker) to go on.",
                                SQLITE_CANTOPEN);
  }
}

database::~database() = default;

void database::migrate() {
  sqlite::transaction t(db_);
  const std::int64_t version = single_int(db_, "PRAGMA user_version");
  if (version < 1) db_.exec(schema_v1);
  if (version < 2) db_.exec(schema_v2);
  if (version < 3) db_.exec(schema_v3);
  if (version < 4) db_.exec(schema_v4);
  if (version < 5) db_.exec(schema_v5);
  if (version < 6) db_.exec(schema_v6);
  // Later versions add their steps here, each from the one before.
  db_.exec("PRAGMA user_version = " + std::to_string(schema_version));
  t.commit();
}

void database::begin() { db_.exec("BEGIN IMMEDIATE"); }
void database::commit() { db_.exec("COMMIT"); }
void database::rollback() noexcept { sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr); }

std::int64_t database::insert_message(const message_record& m, std::int64_t rows) {
  auto& s = st_->message_insert;
  s.bind(1, m.message_uuid).bind(2, m.sender).bind(3, to_string(m.ch)).bind(4, group_or_null(m.group_name));
  s.bind(5, m.body).bind(6, format_iso8601(m.accepted_at)).bind(7, format_iso8601(m.expires_at)).bind(8, rows);
  s.run();
  return db_.last_insert_rowid();
}

void database::release_message(std::int64_t message_id) {
  st_->message_last.bind(1, message_id).run();
  if (db_.changes() == 0) st_->message_less.bind(1, message_id).run();
}

std::int64_t database::journal(std::int64_t message_id, std::string_view receiver) {
  const std::int64_t seq = next_seq();
  st_->journal_insert.bind(1, seq).bind(2, message_id).bind(3, receiver).run();
  return seq;
}

std::int64_t database::journal(const message_record& m, std::string_view receiver) {
  return journal(insert_message(m, 1), receiver);
}

void database::acknowledge(std::int64_t seq) {
  auto& find = st_->journal_message;
  find.bind(1, seq);
  const std::int64_t message_id = find.step() ? find.column_int(0) : 0;
  find.reset();
  if (message_id == 0) return;
  st_->journal_delete.bind(1, seq).run();
  release_message(message_id);
}

std::int64_t database::dead_letter_journaled(std::int64_t seq, dead_letter_reason reason, sys_ms now, bool attempted) {
  const std::string at = format_iso8601(now);
  st_->journal_move.bind(1, seq).bind(2, to_string(reason)).bind(3, std::int64_t{attempted ? 1 : 0}).bind(4, at).run();
  if (db_.changes() == 0) return 0;
  const std::int64_t id = db_.last_insert_rowid();
  st_->journal_delete.bind(1, seq).run();
  if (attempted) {
    // The live delivery was attempt 1; its start is not kept, so the journal's accept time stands.
    st_->attempt_insert.bind(1, id).bind(2, std::int64_t{1}).bind(3, at).bind(4, at).bind(5, to_string(reason)).run();
  }
  return id;
}

std::int64_t database::dead_letter_new(std::int64_t message_id, std::string_view receiver, dead_letter_reason reason,
                                       sys_ms now) {
  auto& s = st_->dl_insert;
  s.bind(1, next_seq()).bind(2, message_id).bind(3, receiver).bind(4, to_string(reason)).bind(5, format_iso8601(now));
  s.run();
  if (db_.changes() == 0) {
    throw sqlite::storage_error("no message " + std::to_string(message_id) + " to dead-letter for '" +
                                std::string(receiver) + "'");
  }
  return db_.last_insert_rowid();
}

std::int64_t database::dead_letter_new(const message_record& m, std::string_view receiver, dead_letter_reason reason,
                                       sys_ms now) {
  return dead_letter_new(insert_message(m, 1), receiver, reason, now);
}

std::int64_t database::recover(sys_ms now) {
  sqlite::statement move(db_,
                         "INSERT INTO dead_letters (seq, message_id, message_uuid, sender_username, "
                         "receiver_username, reason, accepted_at, dead_lettered_at, expires_at) "
                         "SELECT j.id, j.message_id, m.message_uuid, m.sender_username, j.receiver_username, "
                         "'broker_restart', m.accepted_at, ?, m.expires_at "
                         "FROM journal j JOIN messages m ON m.id = j.message_id ORDER BY j.id");
  move.bind(1, format_iso8601(now)).run();
  const std::int64_t moved = db_.changes();
  db_.exec("DELETE FROM journal");
  return moved;
}

std::vector<dead_letter> database::pending_for(std::string_view receiver, std::int64_t after_seq, int limit,
                                               bool folded) {
  if (!folded) sync_unfolded();  // (the folded page does not ask acknowledged_unfolded)
  auto& s = folded ? st_->pending_page_folded : st_->pending_page;
  s.bind(1, receiver).bind(2, after_seq).bind(3, std::int64_t{limit});
  std::vector<dead_letter> out;
  out.reserve(static_cast<std::size_t>(std::max(limit, 0)));
  // Only what a redelivery sends: the page reads were most of the store's work in a drain.
  while (s.step()) read_sendable(s, out.emplace_back());
  s.reset();
  return out;
}

std::int64_t database::count_pending(std::string_view receiver) {
  sync_unfolded();
  auto& s = st_->pending_count;
  s.bind(1, receiver);
  const std::int64_t n = s.step() ? s.column_int(0) : 0;
  s.reset();
  return n;
}

void database::sync_unfolded() {
  auto& u = *unfolded_;
  const std::int64_t version = u.version.step() ? u.version.column_int(0) : 0;
  u.version.reset();
  if (!u.stale && version == u.data_version) return;
  u.ids.clear();
  sqlite::statement all(db_, "SELECT dead_letter_id FROM redelivered");
  while (all.step()) u.ids.insert(all.column_int(0));
  u.stale = false;
  u.data_version = version;
}

void database::record_acknowledged(const std::vector<acknowledged_redelivery>& letters, sys_ms now) {
  sync_unfolded();
  auto& ids = unfolded_->ids;
  ids.reserve(ids.size() + letters.size());
  std::string json = "[";
  std::int64_t count = 0;
  for (const auto& l : letters) {
    if (!ids.insert(l.dead_letter_id).second) continue;  // marked already
    char digits[48];
    auto* end = std::to_chars(digits, digits + 24, l.dead_letter_id).ptr;
    *end++ = ',';
    end = std::to_chars(end, digits + sizeof digits, l.attempt).ptr;
    if (count++ > 0) json += ',';
    json += '[';
    json.append(digits, end);
    json += ",\"";
    const auto started = format_iso8601_fixed(l.started);
    json.append(started.data(), started.size());
    json += "\"]";
  }
  if (count == 0) return;
  json += ']';
  const auto at = format_iso8601_fixed(now);
  auto& s = st_->redelivered_insert;
  try {
    s.bind(1, std::string_view(at.data(), at.size())).bind(2, count).bind(3, std::string_view(json)).run();
  } catch (...) {
    unfolded_->stale = true;  // the ids went in above; the next sync_unfolded loads what is there
    throw;
  }
  // (A rollback of the transaction also makes the next sync_unfolded load them again.)
}

bool database::record_attempt(std::int64_t id, int attempt, sys_ms started, std::string_view outcome, sys_ms now,
                              int max_attempts) {
  if (outcome == "acknowledged") {
    record_acknowledged({{id, attempt, started}}, now);
    return false;
  }
  sync_unfolded();
  const auto started_text = format_iso8601_fixed(started), at_text = format_iso8601_fixed(now);
  const std::string_view started_at(started_text.data(), started_text.size()), at(at_text.data(), at_text.size());
  st_->attempt_insert.bind(1, id).bind(2, std::int64_t{attempt}).bind(3, started_at).bind(4, at).bind(5, outcome).run();
  auto& s = st_->letter_after_attempt;
  s.bind(1, id).bind(2, std::int64_t{attempt}).bind(3, started_at).bind(4, std::int64_t{max_attempts}).run();
  // (Not RETURNING: SQLite builds a temporary table for it on every run.)
  if (db_.changes() == 0) return false;
  auto& p = st_->is_parked;
  p.bind(1, id);
  const bool parked = p.step();
  p.reset();
  return parked;
}

std::vector<std::string> database::mark_delivered(std::string_view receiver, std::string_view message_uuid,
                                                  std::string_view sender, sys_ms now) {
  sync_unfolded();
  const std::string at = format_iso8601(now);
  auto& s = sender.empty() ? st_->late_ack_any : st_->late_ack_sender;
  s.bind(1, receiver).bind(2, message_uuid).bind(3, at);
  if (!sender.empty()) s.bind(4, sender);
  std::vector<std::string> senders;
  while (s.step()) senders.push_back(s.column_text(0));
  s.reset();
  return senders;
}

counts_by_recipient database::sweep_expired(sys_ms now) {
  sync_unfolded();
  auto& s = st_->expire;
  s.bind(1, format_iso8601(now));
  std::map<std::string, std::int64_t> by;
  while (s.step()) ++by[s.column_text(0)];
  s.reset();
  return {by.begin(), by.end()};
}

bool database::create_group(std::string_view name, std::string_view creator, const std::vector<std::string>& members,
                            sys_ms now) {
  const std::string at = format_iso8601(now);
  st_->group_insert.bind(1, name).bind(2, creator).bind(3, at).run();
  if (db_.changes() == 0) return false;
  st_->member_insert.bind(1, name).bind(2, creator).bind(3, at).run();
  for (const auto& m : members) st_->member_insert.bind(1, name).bind(2, m).bind(3, at).run();
  return true;
}

bool database::join_group(std::string_view name, std::string_view user, sys_ms now) {
  auto& exists = st_->group_exists;
  exists.bind(1, name);
  const bool found = exists.step();
  exists.reset();
  if (!found) return false;
  st_->member_insert.bind(1, name).bind(2, user).bind(3, format_iso8601(now)).run();
  return true;
}

bool database::leave_group(std::string_view name, std::string_view user) {
  auto& exists = st_->group_exists;
  exists.bind(1, name);
  const bool found = exists.step();
  exists.reset();
  if (!found) return false;
  st_->member_delete.bind(1, name).bind(2, user).run();
  auto& count = st_->member_count;
  count.bind(1, name);
  const std::int64_t left = count.step() ? count.column_int(0) : 0;
  count.reset();
  if (left == 0) st_->group_delete.bind(1, name).run();
  return true;
}

std::vector<group_record> database::list_groups() {
  sqlite::statement s(db_,
                      "SELECT g.group_name, m.username FROM groups g LEFT JOIN group_members m USING (group_name) "
                      "ORDER BY g.group_name, m.username");
  std::vector<group_record> out;
  while (s.step()) {
    std::string name = s.column_text(0);
    if (out.empty() || out.back().name != name) out.push_back({name, {}});
    if (!s.column_is_null(1)) out.back().members.push_back(s.column_text(1));
  }
  return out;
}

std::vector<dead_letter> database::list(const dead_letter_filter& f) {
  std::string sql = std::string("SELECT ") + dead_letter_columns + " FROM letters WHERE 1";
  if (f.recipient) sql += " AND receiver_username = ?1";
  if (f.reason) sql += " AND reason = ?2";
  if (f.state) sql += " AND state = ?3";
  sql += " ORDER BY seq LIMIT ?4";
  sqlite::statement s(db_, sql);
  if (f.recipient) s.bind(1, *f.recipient);
  if (f.reason) s.bind(2, to_string(*f.reason));
  if (f.state) s.bind(3, to_string(*f.state));
  s.bind(4, std::int64_t{f.limit});
  std::vector<dead_letter> out;
  while (s.step()) out.push_back(read_letter(s));
  return out;
}

std::vector<dead_letter> database::find(std::string_view message_uuid) {
  sqlite::statement s(db_, std::string("SELECT ") + dead_letter_columns +
                               " FROM letters WHERE message_uuid = ? ORDER BY seq");
  s.bind(1, message_uuid);
  std::vector<dead_letter> out;
  while (s.step()) out.push_back(read_letter(s));
  return out;
}

std::vector<delivery_attempt> database::attempts_of(std::int64_t id) {
  sqlite::statement s(db_,
                      "SELECT attempt, started_at, finished_at, outcome FROM attempts "
                      "WHERE dead_letter_id = ? ORDER BY attempt");
  s.bind(1, id);
  std::vector<delivery_attempt> out;
  while (s.step()) {
    out.push_back({static_cast<int>(s.column_int(0)), s.column_text(1), s.column_optional_text(2), s.column_text(3)});
  }
  return out;
}

std::int64_t database::replay(const std::optional<std::string>& recipient, dead_letter_state from, bool dry_run,
                              sys_ms now) {
  const std::string where =
      std::string(" WHERE state = ?1") + (recipient ? " AND receiver_username = ?2" : "");
  if (dry_run) {
    sqlite::statement s(db_, "SELECT count(*) FROM dead_letters" + where);
    s.bind(1, to_string(from));
    if (recipient) s.bind(2, *recipient);
    return s.step() ? s.column_int(0) : 0;
  }
  // A replayed letter gets a fresh lifetime from now, keeping its original ttl span.
  sqlite::statement s(db_, "UPDATE dead_letters SET state = 'pending', attempts_before_replay = attempts, expires_at = "
                           "strftime('%Y-%m-%dT%H:%M:%fZ', ?3, "
                           "((julianday(expires_at) - julianday(accepted_at)) * 86400) || ' seconds')" + where);
  s.bind(1, to_string(from));
  if (recipient) s.bind(2, *recipient);
  s.bind(3, format_iso8601(now));
  s.run();
  return db_.changes();
}

std::int64_t database::purge(std::optional<dead_letter_state> state, std::optional<sys_ms> older_than, int chunk) {
  // Letters acknowledged but not yet folded are delivered ones: fold them so that they are seen so.
  fold_all_redelivered(chunk);
  std::int64_t total = 0;
  for (;;) {
    sqlite::transaction t(db_);
    const std::int64_t n = purge_some(state, older_than, chunk);
    t.commit();
    total += n;
    if (n < chunk) return total;
  }
}

std::int64_t database::purge_some(std::optional<dead_letter_state> state, std::optional<sys_ms> older_than, int limit) {
  std::string where = state ? "state = ?1" : "state <> 'pending'";
  if (older_than) where += " AND dead_lettered_at < ?2";
  sqlite::statement pick(db_, "SELECT id, message_id FROM dead_letters WHERE " + where + " LIMIT ?3");
  sqlite::statement remove(db_, "DELETE FROM dead_letters WHERE id = ?");
  if (state) pick.bind(1, to_string(*state));
  if (older_than) pick.bind(2, format_iso8601(*older_than));
  pick.bind(3, std::int64_t{limit});
  std::vector<std::pair<std::int64_t, std::int64_t>> rows;
  while (pick.step()) rows.emplace_back(pick.column_int(0), pick.column_int(1));
  pick.reset();
  for (auto [id, message_id] : rows) {
    remove.bind(1, id).run();
    release_message(message_id);
  }
  return static_cast<std::int64_t>(rows.size());
}

std::int64_t database::count_purgeable(std::optional<dead_letter_state> state, std::optional<sys_ms> older_than) {
  // As purge sees them after its fold: a pending letter whose redelivery was acknowledged is a
  // delivered one.
  sync_unfolded();
  const std::string acknowledged = "acknowledged_unfolded(d.id)";
  std::string where = !state ? "(d.state <> 'pending' OR " + acknowledged + ")"
                      : *state == dead_letter_state::delivered
                          ? "(d.state = 'delivered' OR (d.state = 'pending' AND " + acknowledged + "))"
                          : "d.state = ?1";
  if (older_than) where += " AND d.dead_lettered_at < ?2";
  sqlite::statement count(db_, "SELECT count(*) FROM dead_letters d WHERE " + where);
  if (state && *state != dead_letter_state::delivered) count.bind(1, to_string(*state));
  if (older_than) count.bind(2, format_iso8601(*older_than));
  return count.step() ? count.column_int(0) : 0;
}

std::int64_t database::fold_redelivered(std::int64_t at_most) {
  // (No sync_unfolded: the ids it folds are erased from the set below; a set that is stale or
  // behind another connection's commit is reloaded whole by the next reader anyway.)
  // Whole batches in order, up to the one that reaches at_most letters; those of letters purged
  // meanwhile just go.
  sqlite::statement last(db_, "SELECT id FROM (SELECT id, sum(letter_count) OVER (ORDER BY id) - letter_count "
                              "AS before FROM redelivered_batches) WHERE before < ? ORDER BY id DESC LIMIT 1");
  last.bind(1, at_most);
  if (!last.step()) return 0;
  const std::int64_t upto = last.column_int(0);
  sqlite::statement taken(db_, "SELECT dead_letter_id FROM redelivered WHERE batch_id <= ?");
  taken.bind(1, upto);
  std::vector<std::int64_t> ids;
  while (taken.step()) ids.push_back(taken.column_int(0));
  sqlite::statement attempts(db_, "INSERT OR IGNORE INTO delivery_attempts (dead_letter_id, attempt, started_at, "
                                  "finished_at, outcome) SELECT r.dead_letter_id, r.attempt, r.started_at, "
                                  "r.delivered_at, 'acknowledged' FROM redelivered r CROSS JOIN dead_letters d "
                                  "ON d.id = r.dead_letter_id WHERE r.batch_id <= ?");
  attempts.bind(1, upto).run();
  // A letter that expired while its redelivery was out keeps its state, as before version 5.
  sqlite::statement letters(db_, "UPDATE dead_letters SET attempts = r.attempt, last_attempt_at = r.started_at, "
                                 "state = 'delivered', delivered_at = r.delivered_at FROM (SELECT dead_letter_id, "
                                 "attempt, started_at, delivered_at FROM redelivered WHERE batch_id <= ?) AS r "
                                 "WHERE r.dead_letter_id = dead_letters.id AND dead_letters.state = 'pending'");
  letters.bind(1, upto).run();
  sqlite::statement done(db_, "DELETE FROM redelivered_batches WHERE id <= ?");
  done.bind(1, upto).run();
  for (auto id : ids) unfolded_->ids.erase(id);
  return static_cast<std::int64_t>(ids.size());
}

void database::fold_all_redelivered(std::int64_t chunk) {
  while (single_int(db_, "SELECT EXISTS (SELECT 1 FROM redelivered_batches)") != 0) {
    sqlite::transaction t(db_);
    fold_redelivered(chunk);
    t.commit();
  }
}

std::int64_t database::count_journal() { return single_int(db_, "SELECT count(*) FROM journal"); }
std::int64_t database::count_all_pending() {
  sync_unfolded();
  return single_int(db_, std::string("SELECT count(*) FROM dead_letters d WHERE state = 'pending'") + not_redelivered);
}

void accepted_pairs::add(std::string_view sender, std::string_view message_uuid, std::string_view status) {
  // Always a whole array: the last ']' becomes ',' for the next pair.
  if (count_ == 0) {
    json_ = "[";
  } else {
    json_.back() = ',';
  }
  json_ += '[';
  append_json_string(json_, sender);
  json_ += ',';
  append_json_string(json_, message_uuid);
  json_ += ',';
  if (!status.empty() && status.front() == '[') {
    json_ += status;  // the recipients array, JSON already
  } else {
    append_json_string(json_, status);
  }
  json_ += "]]";
  ++count_;
}

void database::remember_accepted(const accepted_pairs& pairs, sys_ms at) {
  if (pairs.count_ == 0) return;
  const auto when = format_iso8601_fixed(at);
  auto& s = st_->dedupe_insert;
  s.bind(1, std::string_view(when.data(), when.size())).bind(2, pairs.count_);
  s.bind(3, std::string_view(pairs.json_));
  s.run();
}

std::vector<accepted_pair> database::accepted_since(sys_ms t) {
  sqlite::statement s(db_,
                      "SELECT sender_username, message_uuid, status FROM dedupe WHERE accepted_at >= ? "
                      "ORDER BY batch_id, position");
  s.bind(1, format_iso8601(t));
  std::vector<accepted_pair> out;
  while (s.step()) out.push_back({s.column_text(0), s.column_text(1), s.column_text(2)});
  return out;
}

std::int64_t database::forget_accepted(sys_ms before, std::int64_t keep_at_most) {
  // Rows are in acceptance order: everything below the first young one is old. Finding it
  // reads only the rows that are deleted.
  sqlite::statement old(db_,
                        "DELETE FROM dedupe_batches WHERE id < coalesce((SELECT id FROM dedupe_batches "
                        "WHERE accepted_at >= ?1 ORDER BY id LIMIT 1), (SELECT coalesce(max(id), 0) + 1 "
                        "FROM dedupe_batches)) RETURNING pair_count");
  old.bind(1, format_iso8601(before));
  std::int64_t n = 0;
  while (old.step()) n += old.column_int(0);
  // Past the cap, the oldest rows go, the one that crosses it too.
  sqlite::statement many(db_,
                         "DELETE FROM dedupe_batches WHERE id <= (SELECT id FROM (SELECT id, sum(pair_count) "
                         "OVER (ORDER BY id DESC) AS newer FROM dedupe_batches) WHERE newer > ?1 "
                         "ORDER BY id DESC LIMIT 1) RETURNING pair_count");
  many.bind(1, keep_at_most);
  while (many.step()) n += many.column_int(0);
  return n;
}

}  // namespace ma
