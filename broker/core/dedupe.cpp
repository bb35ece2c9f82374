#include "broker/core/dedupe.hpp"

#include <algorithm>
#include <cstring>

#include <boost/container_hash/hash.hpp>
#include <boost/json/parse.hpp>

#include "core/encode.hpp"
#include "core/frames.hpp"

namespace ma {

std::string_view dedupe_table::entry::status() const {
  switch (status_code) {
    case single::none: break;
    case single::relayed: return "relayed";
    case single::dead_lettered: return "dead_lettered";
    case single::other: return rare->status;
  }
  return many && rare ? std::string_view(rare->status) : std::string_view();
}

dedupe_table::entry::rare_parts& dedupe_table::entry::rare_ones() {
  if (!rare) rare = std::make_unique<rare_parts>();
  return *rare;
}

void dedupe_table::entry::forget_waiters() {
  if (!rare) return;
  if (rare->status.empty()) return rare.reset();
  std::string().swap(rare->first_request_id);
  decltype(rare->more_waiters)().swap(rare->more_waiters);
}

void dedupe_table::entry::set_first_request_id(std::string id) {
  if (!id.empty() || rare) rare_ones().first_request_id = std::move(id);
}

void dedupe_table::entry::append_accepted(std::string& b, std::string_view uuid, bool duplicate,
                                          std::string_view request_id) const {
  if (many) return append_accepted_many_frame(b, uuid, status_json(), duplicate, request_id);
  if (status_code != single::other) return append_accepted_frame(b, uuid, status(), duplicate, request_id);
  // A status read back from a file edited by hand: escaped, as the frame writes the two as they are.
  std::string quoted;
  append_json_string(quoted, status());
  append_accepted_frame(b, uuid, std::string_view(quoted).substr(1, quoted.size() - 2), duplicate, request_id);
}

std::string dedupe_table::entry::status_json() const {
  if (!many) return std::string(status());
  std::string recipients;
  append_recipients_json(recipients, status());
  return recipients;
}

void dedupe_table::add_status(std::string& compact, std::string_view name, bool relayed) {
  compact += relayed ? '+' : '-';
  compact += name;
  compact += '\n';
}

void dedupe_table::append_recipients_json(std::string& out, std::string_view compact) {
  out += '[';
  bool first = true;
  for (std::size_t at = 0; at < compact.size();) {
    std::size_t end = compact.find('\n', at);
    if (end == std::string_view::npos) end = compact.size();
    if (!first) out += ',';
    first = false;
    out += "{\"receiver_username\":";
    append_json_string(out, compact.substr(at + 1, end - at - 1));
    out += compact[at] == '+' ? ",\"status\":\"relayed\"}" : ",\"status\":\"dead_lettered\"}";
    at = end + 1;
  }
  out += ']';
}

std::string dedupe_table::from_recipients_json(std::string_view json) {
  std::string compact;
  boost::system::error_code ec;
  auto v = boost::json::parse(json, ec);
  if (ec || !v.is_array()) return compact;
  for (auto& r : v.as_array()) {
    auto* o = r.if_object();
    auto* name = o ? o->if_contains("receiver_username") : nullptr;
    auto* st = o ? o->if_contains("status") : nullptr;
    if (!name || !name->is_string() || !st || !st->is_string()) continue;
    add_status(compact, name->as_string(), st->as_string() == "relayed");
  }
  return compact;
}

std::string dedupe_table::key_of(std::string_view sender, std::string_view uuid) {
  std::string key;
  key.reserve(sender.size() + 1 + uuid.size());
  key.append(sender).append(1, '\n').append(uuid);
  return key;
}

std::string_view dedupe_table::key_in(char (&buf)[max_key_chars], std::string_view sender, std::string_view uuid) {
  // Names and uuids are validated before they get here; a longer pair is cut, never overrun.
  const std::size_t s = std::min(sender.size(), sizeof buf - 1);
  const std::size_t u = std::min(uuid.size(), sizeof buf - 1 - s);
  std::memcpy(buf, sender.data(), s);
  buf[s] = '\n';
  std::memcpy(buf + s + 1, uuid.data(), u);
  return {buf, s + 1 + u};
}

dedupe_table::hashed_key::hashed_key(std::string_view key)
    : data_(key.data()),
      size_(static_cast<std::uint32_t>(key.size())),
      hash_(static_cast<std::uint32_t>(boost::hash<std::string_view>()(key))) {}

dedupe_table::hashed_key dedupe_table::key_blocks::add(const hashed_key& key) {
  const std::size_t size = key.view().size();
  if (blocks_.empty() || blocks_.back().used + size > block_bytes) {
    blocks_.push_back({std::make_unique_for_overwrite<char[]>(std::max(block_bytes, size)), 0, 0});
  }
  block& b = blocks_.back();
  char* at = b.bytes.get() + b.used;
  if (size != 0) std::memcpy(at, key.view().data(), size);
  b.used += size;
  ++b.keys;
  return key.moved_to(at);
}

void dedupe_table::key_blocks::drop_newest(const hashed_key& key) {
  block& b = blocks_.back();
  b.used -= key.view().size();
  if (--b.keys == 0) blocks_.pop_back();
}

void dedupe_table::key_blocks::drop_oldest() {
  if (--blocks_.front().keys == 0) blocks_.pop_front();
}

namespace {

// What a string's bytes take from the heap: none inside the string (15 characters), else its
// capacity and the terminating zero, as malloc rounds them (16 bytes, with its 8-byte header).
// (A key takes its length in a key block.)
std::size_t heap_of(const std::string& s) {
  if (s.capacity() <= 15) return 0;
  return (s.capacity() + 1 + 8 + 15) / 16 * 16;
}

}  // namespace

// The entry in the deque, its slot in the flat map (a view and a pointer, at the map's load
// factor of 7/8, and a byte of metadata), its key, and its rare parts where it has them (a
// fan-out's statuses: the block and its strings' heap). Request ids and waiting duplicates
// last only until the commit, and are not counted.
std::size_t dedupe_table::footprint(const entry& e) {
  constexpr std::size_t slot = (sizeof(hashed_key) + sizeof(entry*)) * 8 / 7 + 1;
  constexpr std::size_t rare_block = (sizeof(entry::rare_parts) + 8 + 15) / 16 * 16;
  const std::size_t rare = e.rare && !e.rare->status.empty() ? rare_block + heap_of(e.rare->status) : 0;
  return sizeof(entry) + slot + e.key.view().size() + rare;
}

dedupe_table::entry* dedupe_table::find(const hashed_key& key) {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

dedupe_table::entry& dedupe_table::remember(const hashed_key& key, time_point now, std::chrono::milliseconds window) {
  forget_old(now, window);
  // One lookup: the new entry goes in first and comes out again if the key was there.
  entry& fresh = log_.emplace_back();
  fresh.key = keys_.add(key);
  const auto [it, added] = by_key_.try_emplace(fresh.key, &fresh);
  if (!added) {
    keys_.drop_newest(fresh.key);
    log_.pop_back();
    entry* e = it->second;
    const hashed_key kept = e->key;
    const std::uint32_t counted = e->counted;
    *e = entry{};
    e->key = kept;  // the same bytes: the map's view holds
    e->counted = counted;
    recount(*e);
    return *e;
  }
  recount(fresh);
  return fresh;
}

void dedupe_table::set_status(entry& e, std::string status) {
  if (!e.many && (status == "relayed" || status == "dead_lettered")) return set_direct_status(e, status == "relayed");
  e.status_code = e.many || status.empty() ? entry::single::none : entry::single::other;
  if (e.many || !status.empty()) {
    e.rare_ones().status = std::move(status);
  } else if (e.rare) {
    std::string().swap(e.rare->status);
  }
  recount(e);
}

void dedupe_table::set_direct_status(entry& e, bool relayed) {
  e.many = false;
  e.status_code = relayed ? entry::single::relayed : entry::single::dead_lettered;
  if (e.rare) std::string().swap(e.rare->status);
  recount(e);
}

void dedupe_table::recount(entry& e) {
  bytes_ -= e.counted;
  e.counted = static_cast<std::uint32_t>(footprint(e));
  bytes_ += e.counted;
}

void dedupe_table::forget_old(time_point now, std::chrono::milliseconds window) {
  while (!log_.empty()) {
    const entry& e = log_.front();
    if (!e.done) break;
    if (now - e.at < window && by_key_.size() < max_entries_ && bytes_ <= max_bytes_) break;
    bytes_ -= e.counted;
    by_key_.erase(e.key);
    log_.pop_front();
    keys_.drop_oldest();
  }
}

}  // namespace ma
