#include "broker/core/dedupe.hpp"

#include "core/frames.hpp"

namespace ma {

void dedupe_table::entry::append_accepted(std::string& b, std::string_view uuid, bool duplicate,
                                          std::string_view request_id) const {
  many ? append_accepted_many_frame(b, uuid, status, duplicate, request_id)
       : append_accepted_frame(b, uuid, status, duplicate, request_id);
}

std::string dedupe_table::key_of(std::string_view sender, std::string_view uuid) {
  std::string key;
  key.reserve(sender.size() + 1 + uuid.size());
  key.append(sender).append(1, '\n').append(uuid);
  return key;
}

dedupe_table::entry* dedupe_table::find(std::string_view key) {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

dedupe_table::entry& dedupe_table::remember(std::string key, time_point now, std::chrono::milliseconds window) {
  forget_old(now, window);
  if (entry* e = find(key)) {
    bytes_ -= e->counted;
    std::string kept = std::move(e->key);
    *e = entry{};
    e->key = std::move(kept);  // the same buffer (or the same object's): the map's view holds
    return *e;
  }
  entry& e = log_.emplace_back();
  bytes_ += key.size();
  e.key = std::move(key);
  by_key_.emplace(std::string_view(e.key), &e);
  return e;
}

void dedupe_table::set_status(entry& e, std::string status) {
  bytes_ -= e.counted;
  e.status = std::move(status);
  e.counted = e.status.size();
  bytes_ += e.counted;
}

void dedupe_table::forget_old(time_point now, std::chrono::milliseconds window) {
  while (!log_.empty()) {
    const entry& e = log_.front();
    if (!e.done) break;
    if (now - e.at < window && by_key_.size() < max_entries_ && bytes_ <= max_bytes_) break;
    bytes_ -= e.key.size() + e.counted;
    by_key_.erase(std::string_view(e.key));
    log_.pop_front();
  }
}

}  // namespace ma
