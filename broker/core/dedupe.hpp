// The (sender, message_uuid) pairs accepted recently, and who waits for an accept still being
// committed. Entries sit in a deque in the order they came (oldest first, addresses stable),
// their keys back to back in blocks in the same order (no allocation a key); a flat map finds
// them by a view of their key with its hash, computed once: an accept's lookup and insert, the
// entry's removal and the map's growth hash no key again. Sans-I/O: time is an argument. On the
// broker's thread.
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/core/fifo.hpp"

namespace ma {

using peer_id = std::uint64_t;

class dedupe_table {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  // A key (key_of(sender, uuid)) as the map holds it: where its bytes are, and its hash. 16
  // bytes, a string_view's size.
  class hashed_key {
   public:
    hashed_key() = default;
    explicit hashed_key(std::string_view key);  // hashes it
    std::string_view view() const noexcept { return {data_, size_}; }
    std::uint32_t hash() const noexcept { return hash_; }
    // The same key with its bytes elsewhere (the hash is not computed again).
    hashed_key moved_to(const char* data) const noexcept {
      hashed_key k = *this;
      k.data_ = data;
      return k;
    }
    bool operator==(const hashed_key& o) const noexcept { return hash_ == o.hash_ && view() == o.view(); }

   private:
    const char* data_ = nullptr;
    std::uint32_t size_ = 0;  // max_key_chars for a pair just received; a pair read back at start is not cut
    std::uint32_t hash_ = 0;
  };

  // 48 bytes: the window holds up to two million, so what only some need (a fan-out's statuses,
  // request ids, duplicates waiting) is in `rare`, made when needed.
  struct entry {
    hashed_key key;   // key_of(sender, uuid), in the table's key blocks
    time_point at{};  // when it was done: the window runs from here
    // The sender, who waits for message_accepted (0 once answered).
    peer_id first_waiter = 0;
    struct rare_parts {
      std::string status;  // e.many: compact statuses (below); else a status other than the two
      std::string first_request_id;
      std::vector<std::pair<peer_id, std::string>> more_waiters;  // duplicates that came meanwhile
    };
    std::unique_ptr<rare_parts> rare;
    std::uint32_t counted = 0;  // what it takes, counted in the table's bytes (footprint)
    enum class single : std::uint8_t { none, relayed, dead_lettered, other };
    single status_code = single::none;  // !many: message_accepted's status ("other": in rare)
    bool done = false;    // accepted (or failed): duplicates are answered at once
    bool failed = false;  // the store refused it: the uuid is free to be sent again
    bool many = false;    // the status is a fan-out's statuses, compact (below)

    // "relayed"/"dead_lettered", or compact statuses; empty before set_status.
    std::string_view status() const;
    std::string_view first_request_id() const {
      return rare ? std::string_view(rare->first_request_id) : std::string_view();
    }
    void set_first_request_id(std::string id);
    rare_parts& rare_ones();
    // Once message_accepted (or the error) went out: the request ids and the duplicates' wait.
    void forget_waiters();
    // Appends the message_accepted frame this entry answers with.
    void append_accepted(std::string& b, std::string_view uuid, bool duplicate, std::string_view request_id) const;
    // What message_accepted said, as the database keeps it: the status, or the recipients array.
    std::string status_json() const;
  };

  // At most max_entries entries and max_bytes of memory: past either, the oldest done entries
  // go before their window ends. bytes() counts what an entry takes from the heap (the entry,
  // its slot in the map, its key, and a fan-out's statuses with the block that holds them):
  // 125 counted, 129 measured, for a sender of 12 characters and a uuid of 36.
  explicit dedupe_table(std::size_t max_entries, std::size_t max_bytes = 256 * 1024 * 1024)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}

  static std::string key_of(std::string_view sender, std::string_view uuid);
  // The longest key: a username, '\n', a message uuid.
  static constexpr std::size_t max_key_chars = 64 + 1 + 128;
  // key_of written into buf (no allocation): a view of it.
  static std::string_view key_in(char (&buf)[max_key_chars], std::string_view sender, std::string_view uuid);

  // A fan-out's statuses as the table keeps them: for each recipient '+' (relayed) or '-'
  // (dead_lettered), its name and '\n' (usernames have no '\n'): a name's length and 2 bytes,
  // a fifth of message_accepted's recipients array. append_recipients_json expands them to that
  // array; from_recipients_json reads it back (at start), and gives up to nothing on text that
  // is not such an array.
  static void add_status(std::string& compact, std::string_view name, bool relayed);
  static void append_recipients_json(std::string& out, std::string_view compact);
  static std::string from_recipients_json(std::string_view json);

  // The entry for key, or nullptr.
  entry* find(const hashed_key& key);
  entry* find(std::string_view key) { return find(hashed_key(key)); }
  // The entry for key, new (or emptied, if a failed attempt left one), after forgetting what
  // is past the window. Its address stays valid until it is done and forgotten. The table
  // keeps its own copy of key.
  entry& remember(const hashed_key& key, time_point now, std::chrono::milliseconds window);
  entry& remember(std::string_view key, time_point now, std::chrono::milliseconds window) {
    return remember(hashed_key(key), now, window);
  }
  // Sets what a duplicate is answered with (counted against max_bytes): "relayed" or
  // "dead_lettered", or (e.many) compact statuses.
  void set_status(entry& e, std::string status);
  // A direct message's status, as a code (the accept's path: no string to make and read back).
  void set_direct_status(entry& e, bool relayed);
  // Oldest first, forgets the done entries past the window, or past max_entries or max_bytes. An entry
  // still being accepted stops it: the ones behind it are younger anyway.
  void forget_old(time_point now, std::chrono::milliseconds window);
  std::size_t size() const noexcept { return by_key_.size(); }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  static std::size_t footprint(const entry& e);
  // e.counted and bytes_ brought up to what e takes now.
  void recount(entry& e);

  // The entries' keys, back to back in blocks, in the entries' order: forgetting the oldest
  // entries frees whole blocks.
  class key_blocks {
   public:
    hashed_key add(const hashed_key& key);    // the same key, its bytes in a block
    void drop_newest(const hashed_key& key);  // the last add, undone
    void drop_oldest();                       // the key of the oldest entry
   private:
    static constexpr std::size_t block_bytes = 16 * 1024;
    struct block {
      std::unique_ptr<char[]> bytes;
      std::size_t used = 0;
      std::size_t keys = 0;
    };
    fifo<block> blocks_;
  };

  std::size_t max_entries_;
  std::size_t max_bytes_;
  std::size_t bytes_ = 0;
  fifo<entry> log_;
  key_blocks keys_;
  struct stored_hash {
    std::size_t operator()(const hashed_key& k) const noexcept { return k.hash(); }  // the map mixes it
  };
  boost::unordered_flat_map<hashed_key, entry*, stored_hash> by_key_;
};

}  // namespace ma
