#include "tests/broker_core/core_harness.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

#include <stdexcept>
#include <tuple>

namespace ma::test {

namespace json = boost::json;

namespace {
database::settings settings_in(const temp_dir& dir) {
  database::settings s;
  s.path = dir.file("core.db");
  return s;
}
}  // namespace

core_harness::core_harness(core_settings s)
    : db_(settings_in(dir_)),
      core_(s, port_),
      now_{steady_time(std::chrono::hours(1000)), sys_ms(std::chrono::milliseconds(1'800'000'000'000))} {
  core_.start({}, {}, {}, now_);
}

peer_id core_harness::connect(const std::string& host) {
  const peer_id id = ++next_id_;
  core_.connected(id, host + ":" + std::to_string(40000 + id), now_);
  return id;
}

void core_harness::send(peer_id id, std::string_view kind, json::object content) {
  json::object envelope;
  envelope["message_id"] = kind;
  envelope["message_content"] = std::move(content);
  core_.frame_received(id, json::serialize(envelope), now_);
}

json::object core_harness::log_in(peer_id id, const std::string& name, json::object extra) {
  extra["sender_username"] = name;
  send(id, "log_in", std::move(extra));
  run_password_checks();
  run_claims();
  run_store();
  auto acks = take(id, "acknowledge_log_in");
  return acks.empty() ? json::object() : acks.front();
}

peer_id core_harness::online(const std::string& name, json::object extra) {
  const peer_id id = connect();
  EXPECT_FALSE(log_in(id, name, std::move(extra)).empty()) << name << " was not logged in";
  return id;
}

void core_harness::run_job(recording_port::job j) {
  if (fail_next_commit) {
    fail_next_commit = false;
    if (j.policy == on_failure::retry) {
      port_.jobs.push_back(std::move(j));
      return;
    }
    // As SQLite fails when another connection holds the write lock past the busy timeout.
    j.done(std::make_exception_ptr(sqlite::storage_error("injected: the commit failed", 5 /* SQLITE_BUSY */)), now_);
    return;
  }
  std::exception_ptr error;
  db_.begin();
  try {
    j.run(db_);
    db_.commit();
  } catch (...) {
    db_.rollback();
    error = std::current_exception();
  }
  j.done(error, now_);
}

int core_harness::run_store_once() {
  auto queued = std::move(port_.jobs);
  port_.jobs.clear();
  for (auto& j : queued) run_job(std::move(j));
  return static_cast<int>(queued.size());
}

int core_harness::run_claims() {
  for (const auto& user : port_.releases) {
    if (!registry) continue;
    auto it = registry->find(user);
    if (it != registry->end() && it->second == this) registry->erase(it);
  }
  port_.releases.clear();
  auto asked = std::move(port_.claims);
  port_.claims.clear();
  for (auto& c : asked) {
    claim_outcome outcome = claim_outcome::claimed;
    if (registry_down) {
      outcome = claim_outcome::unavailable;
    } else if (registry) {
      auto [it, fresh] = registry->try_emplace(c.user, this);
      if (!fresh && it->second != this && c.take_over) {
        // As the real backbone: the holder ends its session and releases, then the claim again.
        core_harness* holder = it->second;
        holder->core().taken_over_elsewhere(c.user, holder->now());
        holder->run_claims();
        std::tie(it, fresh) = registry->try_emplace(c.user, this);
      }
      if (!fresh && it->second != this) outcome = claim_outcome::taken;
    }
    c.done(outcome, now_);
  }
  return static_cast<int>(asked.size());
}

int core_harness::run_password_checks() {
  auto asked = std::move(port_.checks);
  port_.checks.clear();
  for (auto& c : asked) {
    auto it = passwords.find(c.user);
    c.done(it != passwords.end() && it->second == c.password, now_);
  }
  return static_cast<int>(asked.size());
}

int core_harness::run_store() {
  int ran = 0;
  for (int round = 0; round < 10'000 && !port_.jobs.empty(); ++round) ran += run_store_once();
  return ran;
}

std::vector<json::object> core_harness::frames(peer_id id) {
  auto& inbox = inbox_[id];
  if (outbox* out = core_.outbox_of(id); out && !out->empty()) {
    std::string bytes;
    for (auto piece : out->gather()) bytes.append(piece.data(), piece.size());
    // gather() lists at most a part of a large queue: take it in steps.
    while (!bytes.empty()) {
      const std::size_t n = bytes.size();
      std::size_t start = 0;
      for (std::size_t nl = bytes.find('\n'); nl != std::string::npos; nl = bytes.find('\n', start)) {
        inbox.push_back(json::parse(std::string_view(bytes).substr(start, nl - start)).as_object());
        start = nl + 1;
      }
      EXPECT_EQ(start, n) << "a frame written in part";
      core_.written(id, n, now_);
      bytes.clear();
      out = core_.outbox_of(id);
      if (out && !out->empty()) {
        for (auto piece : out->gather()) bytes.append(piece.data(), piece.size());
      }
    }
  }
  port_.flushes.erase(id);
  std::vector<json::object> all(inbox.begin(), inbox.end());
  inbox.clear();
  return all;
}

std::vector<json::object> core_harness::take(peer_id id, std::string_view kind) {
  auto all = frames(id);
  std::vector<json::object> out;
  auto& inbox = inbox_[id];
  for (auto& f : all) {
    if (f.at("message_id").as_string() == kind) {
      out.push_back(f.at("message_content").as_object());
    } else {
      inbox.push_back(std::move(f));
    }
  }
  return out;
}

void core_harness::advance(std::chrono::microseconds d) {
  const steady_time target = now_.steady + d;
  for (int i = 0; i < 1'000'000; ++i) {
    const steady_time next = core_.next_deadline();
    if (next > target) break;
    if (next > now_.steady) {
      now_.wall += std::chrono::duration_cast<std::chrono::milliseconds>(next - now_.steady);
      now_.steady = next;
    }
    core_.tick(now_);
  }
  now_.wall += std::chrono::duration_cast<std::chrono::milliseconds>(target - now_.steady);
  now_.steady = target;
  core_.tick(now_);
}

}  // namespace ma::test

namespace ma::test {

void core_harness::stand_still(std::chrono::milliseconds d) {
  now_.steady += d;
  now_.wall += d;
  core_.tick(now_);
}

}  // namespace ma::test
