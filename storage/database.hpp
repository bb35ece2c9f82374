// The broker's SQLite database: the journal of accepted messages, the Dead Letter Channel
// with its delivery attempts, and groups. Synchronous; used by exactly one thread at a time
// (the store's thread in the broker, the calling thread in the admin command and tests).
// Every call may throw sqlite::storage_error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/kind.hpp"
#include "storage/sqlite.hpp"

namespace ma {

enum class dead_letter_reason { recipient_offline, ack_timeout, recipient_disconnected, queue_overflow, broker_restart };
enum class dead_letter_state { pending, delivered, parked, expired };
inline constexpr dead_letter_reason all_dead_letter_reasons[] = {
    dead_letter_reason::recipient_offline, dead_letter_reason::ack_timeout, dead_letter_reason::recipient_disconnected,
    dead_letter_reason::queue_overflow, dead_letter_reason::broker_restart};

std::string_view to_string(dead_letter_reason r) noexcept;
std::string_view to_string(dead_letter_state s) noexcept;
std::optional<dead_letter_reason> reason_from_string(std::string_view text) noexcept;
std::optional<dead_letter_state> state_from_string(std::string_view text) noexcept;

// One accepted message, as stored for each of its recipients.
struct message_record {
  std::string message_uuid;
  std::string sender;
  channel ch = channel::direct;
  std::string group_name;  // empty unless ch == group
  std::string body;        // JSON object text: message_text and/or payload
  sys_ms accepted_at{};
  sys_ms expires_at{};
};

struct dead_letter {
  std::int64_t id = 0;
  std::int64_t seq = 0;  // acceptance order, shared with the journal
  std::string message_uuid;
  std::string sender;
  std::string receiver;
  channel ch = channel::direct;
  std::string group_name;
  std::string body;
  dead_letter_reason reason = dead_letter_reason::recipient_offline;
  dead_letter_state state = dead_letter_state::pending;
  int attempts = 0;                // every attempt so far, also those before a replay
  int attempts_before_replay = 0;  // attempts made before the last replay
  std::string accepted_at;
  std::string dead_lettered_at;
  std::optional<std::string> last_attempt_at;
  std::optional<std::string> delivered_at;
  std::string expires_at;
};

struct delivery_attempt {
  int attempt = 0;
  std::string started_at;
  std::optional<std::string> finished_at;
  std::string outcome;  // acknowledged, or the reason it failed
};

struct group_record {
  std::string name;
  std::vector<std::string> members;  // sorted
};

// A (sender, message_uuid) accepted within the dedupe window, with what message_accepted said.
struct accepted_pair {
  std::string sender;
  std::string message_uuid;
  std::string status;  // relayed | dead_lettered, or the recipients array as JSON text
};

// The dedupe pairs of one transaction, for database::remember_accepted: one row for all.
class accepted_pairs {
 public:
  // status as message_accepted says it: relayed, dead_lettered, or the recipients array as JSON.
  void add(std::string_view sender, std::string_view message_uuid, std::string_view status);

 private:
  friend class database;
  std::string json_;  // [[sender, uuid, status], ...]
  std::int64_t count_ = 0;
};

// A redelivery its recipient acknowledged, for database::record_acknowledged.
struct acknowledged_redelivery {
  std::int64_t dead_letter_id = 0;
  int attempt = 1;   // the letter's attempts + 1
  sys_ms started{};  // when this attempt was sent
};

// Letters that left pending in one call, by recipient (for the broker's warnings).
using counts_by_recipient = std::vector<std::pair<std::string, std::int64_t>>;

struct dead_letter_filter {
  std::optional<std::string> recipient;
  std::optional<dead_letter_reason> reason;
  std::optional<dead_letter_state> state;
  int limit = 100;
};

class database {
 public:
  static constexpr int schema_version = 6;

  struct settings {
    std::string path;
    bool synchronous_full = false;  // PRAGMA synchronous: FULL, else NORMAL
    bool create = true;             // false: a missing file is an error (admin command)
    // Opened read-only: nothing is written, not even the schema (admin command's readers).
    bool read_only = false;
    // A file without this broker's schema (another program's, an empty one) is refused instead
    // of being given the schema; an older schema is refused instead of migrated.
    bool schema_required = false;
    int busy_timeout_ms = 5000;
  };

  // Opens (or creates) the file, refuses a non-SQLite, corrupt or newer file with a sentence
  // naming it, and migrates an older schema forward in one transaction (unless read_only or
  // schema_required, which refuse it).
  explicit database(const settings& s);
  ~database();
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  // Transactions are explicit: the store commits many operations in one.
  void begin();
  void commit();
  void rollback() noexcept;

  // --- messages: each accepted message's body, stored once for all its recipients ----------
  // Returns its id, for journal() and dead_letter_new(). rows is how many journal rows and dead
  // letters the caller adds for it, in the same transaction: the message goes (with its body)
  // when the last of them is acknowledged or purged. (Moving a journal row to the Dead Letter
  // Channel leaves the count as it is.)
  std::int64_t insert_message(const message_record& m, std::int64_t rows);

  // --- the journal: accepted, not yet acknowledged; one row per recipient -----------------
  // Returns the delivery's seq (its journal id), increasing in acceptance order.
  std::int64_t journal(std::int64_t message_id, std::string_view receiver);
  // A message with this one recipient: insert_message, then journal.
  std::int64_t journal(const message_record& m, std::string_view receiver);
  // The recipient acknowledged: the journal row goes away.
  void acknowledge(std::int64_t seq);
  // Moves a journaled delivery to the Dead Letter Channel. attempted: it was sent once (an
  // attempt row records that). Returns the dead letter id, or 0 if seq is not journaled.
  std::int64_t dead_letter_journaled(std::int64_t seq, dead_letter_reason reason, sys_ms now, bool attempted);
  // Accepts a delivery straight into the Dead Letter Channel (recipient offline, queue
  // overflow, or persist-accepted off). Returns the dead letter id; its seq is fresh.
  std::int64_t dead_letter_new(std::int64_t message_id, std::string_view receiver, dead_letter_reason reason,
                               sys_ms now);
  // A message with this one recipient: insert_message, then dead_letter_new.
  std::int64_t dead_letter_new(const message_record& m, std::string_view receiver, dead_letter_reason reason,
                               sys_ms now);
  // At start: every journaled delivery becomes a pending dead letter (broker_restart).
  // Returns how many.
  std::int64_t recover(sys_ms now);

  // --- redelivery ---------------------------------------------------------------------------
  // Pending dead letters of a recipient with seq > after_seq, in acceptance order, with what a
  // redelivery sends (id, seq, message_uuid, sender, ch, group_name, body, reason, attempts,
  // accepted_at); the other fields are left empty: find() and list() read everything.
  // folded: the caller knows that no acknowledged redelivery of the recipient above after_seq
  // waits to be folded (the redelivery pump folds them all before its first page, and those it
  // makes itself are at or below after_seq): each letter costs one lookup less.
  std::vector<dead_letter> pending_for(std::string_view receiver, std::int64_t after_seq, int limit,
                                       bool folded = false);
  std::int64_t count_pending(std::string_view receiver);
  // Marks letters delivered by their acknowledged redeliveries: one row of
  // `redelivered_batches` for them all, which fold_redelivered() applies to the letters later
  // (until then every read here sees them delivered). A letter marked already is left out.
  void record_acknowledged(const std::vector<acknowledged_redelivery>& letters, sys_ms now);
  // Records a finished redelivery attempt (number attempt, the letter's attempts + 1, begun at
  // started). "acknowledged" is record_acknowledged for this one letter. Any other outcome (the
  // reason it failed) is an attempt row and an update that leaves the letter pending, or parks
  // it once it has had max_attempts attempts. An attempt cut short by a crash is not recorded:
  // the letter is still pending and is sent again. Returns true if this attempt parked the
  // letter. After a replay the letter has max_attempts again, and its attempts go on being
  // numbered from where they were.
  bool record_attempt(std::int64_t id, int attempt, sys_ms started, std::string_view outcome, sys_ms now,
                      int max_attempts);
  // Applies the oldest acknowledged redeliveries to their letters (state, attempts, times, an
  // attempt row each), in bulk: whole rows of `redelivered_batches`, up to and including the
  // one that reaches at_most letters. Returns how many letters it took (fewer than at_most only
  // when it took them all). Opening the file folds all.
  std::int64_t fold_redelivered(std::int64_t at_most);
  // Folds them all, chunk at a time, each chunk its own transaction (call it outside begin()).
  void fold_all_redelivered(std::int64_t chunk);
  // A late acknowledgement (the message was dead-lettered first). An empty sender matches
  // any. Returns the senders of the letters it marked delivered.
  std::vector<std::string> mark_delivered(std::string_view receiver, std::string_view message_uuid,
                                          std::string_view sender, sys_ms now);
  // Pending letters past their expiry become expired. Returns how many, by recipient.
  counts_by_recipient sweep_expired(sys_ms now);

  // --- groups -------------------------------------------------------------------------------
  // False if the group exists already.
  bool create_group(std::string_view name, std::string_view creator, const std::vector<std::string>& members,
                    sys_ms now);
  // False if there is no such group. Joining twice is harmless.
  bool join_group(std::string_view name, std::string_view user, sys_ms now);
  // False if there is no such group. A group whose last member leaves is deleted.
  bool leave_group(std::string_view name, std::string_view user);
  std::vector<group_record> list_groups();

  // --- reading, for operators and status lines -----------------------------------------------
  std::vector<dead_letter> list(const dead_letter_filter& f);
  std::vector<dead_letter> find(std::string_view message_uuid);
  std::vector<delivery_attempt> attempts_of(std::int64_t id);
  // Back to pending, with max_attempts attempts again, for letters in state from; returns how
  // many (or would).
  std::int64_t replay(const std::optional<std::string>& recipient, dead_letter_state from, bool dry_run, sys_ms now);
  // Deletes letters in the given state (any but pending when empty) dead-lettered before
  // cutoff (any age when empty); returns how many. Runs its own transactions, one per chunk
  // rows, so the write lock is never held for long: call it outside begin()/commit().
  std::int64_t purge(std::optional<dead_letter_state> state, std::optional<sys_ms> older_than,
                     int chunk = 5000);
  // Deletes at most limit letters as purge does, inside the caller's transaction; returns how many.
  std::int64_t purge_some(std::optional<dead_letter_state> state, std::optional<sys_ms> older_than, int limit);
  // How many purge would delete (it changes nothing: a read-only file will do).
  std::int64_t count_purgeable(std::optional<dead_letter_state> state, std::optional<sys_ms> older_than);
  std::int64_t count_journal();
  std::int64_t count_all_pending();

  // --- dedupe: what was accepted within the window, kept across restarts ----------------------
  // Committed with the accept, before message_accepted goes out; kept after acknowledgement.
  // One row for the pairs of one accept job; at is when the last of them was accepted.
  void remember_accepted(const accepted_pairs& pairs, sys_ms at);
  // The pairs accepted since t, oldest first (a pair accepted again later comes again).
  std::vector<accepted_pair> accepted_since(sys_ms t);
  // Forgets pairs accepted before t, and the oldest beyond keep_at_most. Returns how many.
  std::int64_t forget_accepted(sys_ms before, std::int64_t keep_at_most);

  // Throws a transient storage_error if the file is no longer where it was opened (deleted,
  // or replaced by another file): what is written then would be lost at the next start.
  void check_file() const;

  const std::string& path() const noexcept { return db_.path(); }
  sqlite::connection& connection() noexcept { return db_; }

 private:
  struct statements;
  void migrate();
  // One row fewer refers to the message: the last one takes it.
  void release_message(std::int64_t message_id);
  std::int64_t next_seq() noexcept { return ++last_seq_; }
  // Reloads unfolded_ from `redelivered` when a rollback or another connection's commit may
  // have changed it since it was loaded. Called before each statement that reads it.
  void sync_unfolded();

  sqlite::connection db_;
  std::unique_ptr<statements> st_;
  // The ids of the letters in `redelivered`, which the SQL function acknowledged_unfolded(id)
  // answers from (an index lookup per letter was what made acknowledging one cost).
  struct unfolded;
  std::unique_ptr<unfolded> unfolded_;
  std::uint64_t device_ = 0, inode_ = 0;  // of the file at open, for check_file
  std::int64_t last_seq_ = 0;
};

}  // namespace ma
