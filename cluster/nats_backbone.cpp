// The backbone over NATS (cluster/backbone.hpp). cnats' key-value calls block, so they run on
// one worker thread, in the order they were asked for; cnats' own threads (reading, reconnecting)
// never call back into the broker.
//
// Where names are held is watched (a key-value watch on <cluster>-names, on a thread of its own)
// and read against the brokers' liveness; each change is told to the broker. Frames between
// brokers go on core NATS, published from any thread, received on cnats' threads.
//
// A name is claimed with compare-and-set: create the key, or, when it exists, update it at the
// revision read if its holder is void (released: an empty value; or a broker whose liveness
// entry is gone or names another epoch, that is a broker that died or restarted). Two brokers
// racing for one name: one update wins, the other sees the winner alive.
#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "core/counted.hpp"
#include "cluster/backbone.hpp"

namespace ma {

namespace {

using clock_type = std::chrono::steady_clock;
// Keys of the names bucket that are no name: key_of("~") (a username has no '~').
const std::string tick_prefix = "=7E";
constexpr std::chrono::milliseconds retry_pause{200};

// What a bucket name, a key and a subject token may hold as it is.
bool plain(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// A key-value key for a name: plain bytes as they are, any other byte as =XX (a '.' would
// split the key's subject, and a broker name may hold anything).
std::string key_of(std::string_view name) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string key;
  for (unsigned char c : name) {
    if (plain(c)) {
      key += static_cast<char>(c);
    } else {
      key += '=';
      key += hex[c >> 4];
      key += hex[c & 15];
    }
  }
  return key;
}

// The name a key stands for (key_of undone).
std::string name_of(std::string_view key) {
  std::string name;
  auto hex = [](char c) { return c <= '9' ? c - '0' : c - 'A' + 10; };
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (key[i] == '=' && i + 2 < key.size()) {
      name += static_cast<char>(hex(key[i + 1]) * 16 + hex(key[i + 2]));
      i += 2;
    } else {
      name += key[i];
    }
  }
  return name;
}

std::string random_epoch() {
  std::random_device rd;
  const std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) | rd();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string last_error() {
  const char* e = nats_GetLastError(nullptr);
  return e ? e : "";
}

class nats_backbone final : public backbone {
 public:
  nats_backbone(cluster_settings s, backbone_events events)
      : s_(std::move(s)),
        epoch_(random_epoch()),
        self_(s_.broker_name + "/" + epoch_),
        token_(key_of(s_.broker_name)),
        events_(std::move(events)) {
    connect();
    worker_ = std::thread([this] { run(); });
  }

  ~nats_backbone() override {
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    watching_ = false;
    cv_.notify_all();
    worker_.join();
  }

  void claim(std::string user, bool take_over, std::function<void(claim_outcome)> done) override {
    post([this, user = std::move(user), take_over, done = std::move(done)] {
      releases_due_.erase(user);
      // While no nats-server answers (one died and cnats moves to another, or a bucket elects
      // a new leader) the claim is tried again, for a while, before the log_in hears server_busy.
      const auto give_up = clock_type::now() + s_.claim_patience;
      auto outcome = do_claim(user, take_over);
      while (outcome == claim_outcome::unavailable && clock_type::now() < give_up && !pause(retry_pause)) {
        outcome = do_claim(user, take_over);
      }
      // A write that timed out may still have been applied: the name is given back at the next
      // refresh if it turns out to be this broker's (unless a claim here takes it first).
      if (outcome == claim_outcome::unavailable) releases_due_.insert(user);
      done(outcome);
    });
  }

  void release(std::string user) override {
    post([this, user = std::move(user)] {
      if (!do_release(user)) releases_due_.insert(user);  // again at the next refresh
    });
  }

  int brokers_alive() const override { return alive_.load(); }

  void change_group(group_change change,
                    std::function<void(group_outcome, std::vector<std::string>)> done) override {
    post([this, change = std::move(change), done = std::move(done)] {
      const auto give_up = clock_type::now() + s_.claim_patience;
      std::vector<std::string> members;
      auto outcome = do_group_change(change, members);
      while (outcome == group_outcome::unavailable && clock_type::now() < give_up && !pause(retry_pause)) {
        outcome = do_group_change(change, members);
      }
      done(outcome, std::move(members));
    });
  }

  // "<kind><from>\n<user>\n<frames>" on <cluster>.relay.<broker>.
  void relay(const std::string& broker, relay_kind kind, const std::string& user, std::string_view frames) override {
    if (!nc_) return;
    std::string data;
    data.reserve(token_.size() + user.size() + frames.size() + 3);
    data += static_cast<char>(kind);
    data += token_;
    data += '\n';
    data += user;
    data += '\n';
    data += frames;
    const std::string subject = relay_subject(broker);
    natsConnection_Publish(nc_, subject.c_str(), data.data(), static_cast<int>(data.size()));
  }

 private:
  // Sleeps d unless the backbone stops meanwhile; true if it stops.
  bool pause(std::chrono::milliseconds d) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, d, [this] { return stop_; });
  }

  void post(std::function<void()> job) {
    {
      std::lock_guard lock(m_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
  }

  void run() {
    auto next_refresh = clock_type::now();
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(m_);
        cv_.wait_until(lock, next_refresh, [this] { return stop_ || !jobs_.empty(); });
        if (stop_) break;
        if (!jobs_.empty()) {
          job = std::move(jobs_.front());
          jobs_.pop_front();
        }
      }
      if (job) job();
      if (clock_type::now() >= next_refresh) {
        refresh();
        next_refresh = clock_type::now() + s_.refresh_interval;
      }
    }
    // A graceful stop voids this broker's names at once (a killed one's when its entry expires).
    watching_ = false;
    if (watcher_.joinable()) watcher_.join();
    if (group_watcher_.joinable()) group_watcher_.join();
    if (heart_.joinable()) heart_.join();
    for (natsSubscription* sub : {control_, relay_}) {
      if (!sub) continue;
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
    if (brokers_) kvStore_Delete(brokers_, key_of(s_.broker_name).c_str());
    if (names_) kvStore_Destroy(names_);
    if (groups_) kvStore_Destroy(groups_);
    if (brokers_) kvStore_Destroy(brokers_);
    if (js_) jsCtx_Destroy(js_);
    if (nc_) {
      natsConnection_Close(nc_);
      natsConnection_Destroy(nc_);
    }
    if (opts_) natsOptions_Destroy(opts_);
    nats_Close();  // cnats' own threads and memory (one backbone per process)
  }

  // Connects in the background: cnats keeps trying every server, forever.
  void connect() {
    std::vector<const char*> urls;
    for (const auto& u : s_.urls) urls.push_back(u.c_str());
    const std::string name = "message-broker " + s_.broker_name;
    natsStatus st = natsOptions_Create(&opts_);
    if (st == NATS_OK) st = natsOptions_SetServers(opts_, urls.data(), static_cast<int>(urls.size()));
    if (st == NATS_OK) st = natsOptions_SetName(opts_, name.c_str());
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(opts_, -1);
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(opts_, 250);
    if (st == NATS_OK) st = natsOptions_SetTimeout(opts_, s_.request_timeout.count());
    if (st == NATS_OK) st = natsOptions_SetRetryOnFailedConnect(opts_, true, nullptr, nullptr);
    if (st == NATS_OK) st = natsOptions_SetReconnectedCB(opts_, &nats_backbone::on_reconnected, this);
    // A relay is written at once (a broker batches its frames per burst already): cnats would
    // otherwise hold it back up to a millisecond to gather more, on every hop between brokers.
    if (st == NATS_OK) st = natsOptions_SetSendAsap(opts_, true);
    if (st == NATS_OK) {
      st = natsConnection_Connect(&nc_, opts_);
      if (st == NATS_NOT_YET_CONNECTED) st = NATS_OK;
    }
    jsOptions jo;
    if (st == NATS_OK) st = jsOptions_Init(&jo);
    jo.Wait = s_.request_timeout.count();
    if (st == NATS_OK) st = natsConnection_JetStream(&js_, nc_, &jo);
    if (st != NATS_OK) spdlog::error("cluster '{}': NATS could not be set up: {}", s_.cluster_name, last_error());
  }

  // The buckets, bound (or made) once JetStream answers. Replicas: 3, or one per server given if
  // fewer (a bucket can not have more replicas than the NATS cluster has servers).
  bool ready() {
    if (names_ && brokers_ && groups_) return true;
    if (!js_) return false;
    const int replicas = static_cast<int>(std::min<std::size_t>(3, s_.urls.size()));
    auto bind = [&](kvStore*& kv, const std::string& bucket, std::chrono::milliseconds ttl) {
      if (kv) return true;
      if (js_KeyValue(&kv, js_, bucket.c_str()) == NATS_OK) return true;
      kvConfig cfg;
      kvConfig_Init(&cfg);
      cfg.Bucket = bucket.c_str();
      cfg.History = 1;
      cfg.Replicas = replicas;
      cfg.TTL = std::chrono::duration_cast<std::chrono::nanoseconds>(ttl).count();
      if (js_CreateKeyValue(&kv, js_, &cfg) == NATS_OK) return true;
      kv = nullptr;
      const auto now = clock_type::now();
      if (now - last_complaint_ > std::chrono::seconds(10)) {
        last_complaint_ = now;
        spdlog::warn("cluster '{}': the bucket {} is not ready yet: {}", s_.cluster_name, bucket, last_error());
      }
      return false;
    };
    if (!bind(names_, s_.cluster_name + "-names", {}) || !bind(brokers_, s_.cluster_name + "-brokers", s_.liveness_ttl) ||
        !bind(groups_, s_.cluster_name + "-groups", {})) {
      return false;
    }
    if (!control_) {
      const std::string subject = control_subject(s_.broker_name);
      if (natsConnection_Subscribe(&control_, nc_, subject.c_str(), &nats_backbone::on_control, this) != NATS_OK) {
        control_ = nullptr;
        return false;
      }
    }
    if (!relay_) {
      const std::string subject = relay_subject(token_);
      if (natsConnection_Subscribe(&relay_, nc_, subject.c_str(), &nats_backbone::on_relay, this) != NATS_OK) {
        relay_ = nullptr;
        return false;
      }
    }
    if (!watcher_.joinable()) {
      watching_ = true;
      watcher_ = std::thread([this] {
        watch(
            names_, [this](std::string key, std::string value) { name_seen(key, value); }, 3 * s_.refresh_interval);
      });
      group_watcher_ = std::thread([this] {
        watch(groups_, [this](std::string key, std::string value) {
          if (events_.group) events_.group(name_of(key), members_of(value));
        });
      });
    }
    if (!heart_.joinable()) {
      beat();  // before any claim of this broker is judged by its liveness
      heart_ = std::thread([this] {
        while (!pause(s_.refresh_interval)) beat();
      });
    }
    spdlog::info("cluster '{}': the registry is ready", s_.cluster_name);
    refresh();
    return true;
  }

  claim_outcome do_claim(const std::string& user, bool take_over) {
    if (!ready()) return claim_outcome::unavailable;
    const std::string key = key_of(user);
    bool asked_holder = false;
    for (int round = 0; round < 4; ++round) {
      std::uint64_t rev = 0;
      if (kvStore_CreateString(&rev, names_, key.c_str(), self_.c_str()) == NATS_OK) return claim_outcome::claimed;
      kvEntry* e = nullptr;
      const natsStatus st = kvStore_Get(&e, names_, key.c_str());
      if (st == NATS_NOT_FOUND) continue;  // the create failed for another reason (or it was deleted): again
      if (st != NATS_OK) return claim_outcome::unavailable;
      const std::string holder = kvEntry_ValueString(e);
      rev = kvEntry_Revision(e);
      kvEntry_Destroy(e);
      if (holder == self_) return claim_outcome::claimed;
      if (!holder.empty()) {
        const auto live = alive(holder);
        if (!live) return claim_outcome::unavailable;
        if (*live) {
          if (!take_over || asked_holder) return claim_outcome::taken;
          // The holder ends the session and releases the name before it answers.
          asked_holder = true;
          natsMsg* reply = nullptr;
          const std::string subject = control_subject(std::string(broker_of(holder)));
          const natsStatus st = natsConnection_Request(&reply, nc_, subject.c_str(), user.data(),
                                                       static_cast<int>(user.size()), s_.request_timeout.count());
          if (reply) natsMsg_Destroy(reply);
          if (st != NATS_OK) return claim_outcome::unavailable;
          continue;
        }
      }
      if (kvStore_UpdateString(&rev, names_, key.c_str(), self_.c_str(), rev) == NATS_OK) return claim_outcome::claimed;
      // Another broker wrote it first (the next look sees it), or the update failed: look again.
    }
    // No live holder was seen, yet nothing could be written: the registry is not answering
    // (a create that fails while the key is absent is a timeout or a leader election).
    return claim_outcome::unavailable;
  }

  // True when the name is free of this broker (released, or held by someone else).
  bool do_release(const std::string& user) {
    if (!ready()) return false;
    const std::string key = key_of(user);
    kvEntry* e = nullptr;
    const natsStatus st = kvStore_Get(&e, names_, key.c_str());
    if (st == NATS_NOT_FOUND) return true;
    if (st != NATS_OK) return false;
    const bool ours = self_ == kvEntry_ValueString(e);
    const std::uint64_t rev = kvEntry_Revision(e);
    kvEntry_Destroy(e);
    if (!ours) return true;
    std::uint64_t next = 0;
    // At the revision read: a claim by another broker in between stands.
    return kvStore_UpdateString(&next, names_, key.c_str(), "", rev) == NATS_OK;
  }

  std::string control_subject(std::string_view broker) const {
    return s_.cluster_name + ".control." + key_of(broker);
  }
  std::string relay_subject(std::string_view token) const { return s_.cluster_name + ".relay." + std::string(token); }

  static void on_reconnected(natsConnection*, void* closure) { ++static_cast<nats_backbone*>(closure)->rewatches_; }

  // Frames from another broker (on a cnats thread).
  static void on_relay(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<nats_backbone*>(closure);
    std::string_view data(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    const auto first = data.find('\n');
    const auto second = first == std::string_view::npos ? first : data.find('\n', first + 1);
    if (second != std::string_view::npos && !data.empty() && (data[0] == 'd' || data[0] == 'a') && self->events_.relayed) {
      self->events_.relayed({static_cast<relay_kind>(data[0]), std::string(data.substr(1, first - 1)),
                             std::string(data.substr(first + 1, second - first - 1)), std::string(data.substr(second + 1))});
    }
    natsMsg_Destroy(msg);
  }

  // A watch on a bucket, on a thread of its own (kvWatcher_Next blocks): seen(key, value) for
  // every entry, then for every update (a deleted entry's value is empty). A watch that fails is
  // made anew; it then replays every entry.
  //
  // A watch's consumer lives on one nats-server: when that server dies, cnats notices only after
  // 15 s of missed heartbeats. So every watch is made anew when this broker's connection moved
  // to another server, and when the names bucket, where every broker writes a tick at each
  // refresh, was quiet for three refresh intervals (quiet_limit: only for that bucket).
  template <class Seen>
  void watch(kvStore* kv, Seen seen, std::optional<clock_type::duration> quiet_limit = std::nullopt) {
    kvWatcher* w = nullptr;
    int made_at = rewatches_.load();
    auto last_entry = clock_type::now();
    while (watching_) {
      if (w && quiet_limit && clock_type::now() - last_entry > *quiet_limit) ++rewatches_;
      if (w && made_at != rewatches_.load()) {
        kvWatcher_Destroy(w);
        w = nullptr;
      }
      if (!w) {
        made_at = rewatches_.load();
        last_entry = clock_type::now();
        if (kvStore_WatchAll(&w, kv, nullptr) != NATS_OK) {
          w = nullptr;
          if (pause(retry_pause)) break;
          continue;
        }
      }
      kvEntry* e = nullptr;
      const natsStatus st = kvWatcher_Next(&e, w, 250);
      if (st == NATS_TIMEOUT) continue;
      if (st != NATS_OK) {
        kvWatcher_Destroy(w);
        w = nullptr;
        continue;
      }
      last_entry = clock_type::now();
      if (!e) continue;  // the initial values are all in
      std::string key = kvEntry_Key(e);
      std::string value = kvEntry_Operation(e) == kvOp_Put ? kvEntry_ValueString(e) : "";
      kvEntry_Destroy(e);
      seen(std::move(key), std::move(value));
    }
    if (w) kvWatcher_Destroy(w);
  }

  // A name's entry, read against the liveness seen last.
  void name_seen(const std::string& key, std::string holder) {
    if (key.starts_with(tick_prefix)) return;
    const std::string user = name_of(key);
    std::lock_guard lock(view_m_);
    if (holder.empty()) {
      held_.erase(user);
    } else {
      held_[user] = std::move(holder);
    }
    report(user);
  }

  static std::vector<std::string> members_of(std::string_view value) {
    std::vector<std::string> members;
    while (!value.empty()) {
      const auto end = value.find('\n');
      if (end != 0) members.emplace_back(value.substr(0, end));
      if (end == std::string_view::npos) break;
      value.remove_prefix(end + 1);
    }
    return members;
  }
  static std::string value_of(const std::set<std::string>& members) {
    std::string value;
    for (auto& m : members) value += (value.empty() ? "" : "\n") + m;
    return value;
  }

  // A group's entry is changed at the revision read: a change at another broker in between is
  // read again and this one applied to it. A group whose last member left has an empty entry.
  group_outcome do_group_change(const group_change& c, std::vector<std::string>& after) {
    if (!ready()) return group_outcome::unavailable;
    const std::string key = key_of(c.group);
    for (int round = 0; round < 8; ++round) {
      std::set<std::string> members;
      std::uint64_t rev = 0;
      kvEntry* e = nullptr;
      const natsStatus st = kvStore_Get(&e, groups_, key.c_str());
      if (st == NATS_OK) {
        for (auto& m : members_of(kvEntry_ValueString(e))) members.insert(std::move(m));
        rev = kvEntry_Revision(e);
        kvEntry_Destroy(e);
      } else if (st != NATS_NOT_FOUND) {
        return group_outcome::unavailable;
      }
      using op = group_change::op;
      if (c.what == op::create) {
        if (!members.empty()) return group_outcome::exists;
        members.insert(c.user);
        members.insert(c.members.begin(), c.members.end());
      } else if (members.empty()) {
        return group_outcome::unknown;
      } else if (c.what == op::join) {
        members.insert(c.user);
      } else if (!members.erase(c.user)) {
        return group_outcome::not_member;
      }
      const std::string value = value_of(members);
      std::uint64_t next = 0;
      const natsStatus w = rev == 0 ? kvStore_CreateString(&next, groups_, key.c_str(), value.c_str())
                                    : kvStore_UpdateString(&next, groups_, key.c_str(), value.c_str(), rev);
      if (w == NATS_OK) {
        after.assign(members.begin(), members.end());
        return group_outcome::done;
      }
      // Another broker changed it first (read it again), or the write failed: again.
    }
    return group_outcome::unavailable;
  }

  // Tells the broker where user is held if that changed (under view_m_, so that the calls keep
  // their order whichever thread makes them).
  void report(const std::string& user) {
    std::string where;
    if (auto it = held_.find(user); it != held_.end() && it->second != self_) {
      const std::string& holder = it->second;
      const auto slash = holder.rfind('/');
      if (slash != std::string::npos) {
        std::string token = key_of(broker_of(holder));
        auto live = epochs_.find(token);
        if (live != epochs_.end() && holder.compare(slash + 1, std::string::npos, live->second) == 0) {
          where = std::move(token);
        }
      }
    }
    auto it = reported_.find(user);
    const std::string_view before = it == reported_.end() ? std::string_view() : std::string_view(it->second);
    if (before == where) return;
    if (where.empty()) {
      reported_.erase(it);
    } else {
      reported_[user] = where;
    }
    if (events_.holder) events_.holder(user, std::move(where));
  }

  // Another broker's takeover request (on a cnats thread): the broker ends the session and asks
  // for the release; the answer goes out after that release, in this worker's order.
  static void on_control(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<nats_backbone*>(closure);
    std::string user(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    std::string reply = natsMsg_GetReply(msg) ? natsMsg_GetReply(msg) : "";
    natsMsg_Destroy(msg);
    if (!self->events_.takeover || reply.empty()) return;
    self->events_.takeover(std::move(user), [self, reply = std::move(reply)] {
      self->post([self, reply] { natsConnection_PublishString(self->nc_, reply.c_str(), "released"); });
    });
  }

  // A holder is "<broker>/<epoch>" (a broker name may hold a '/', an epoch does not).
  static std::string_view broker_of(std::string_view holder) { return holder.substr(0, holder.rfind('/')); }

  // Whether the broker of holder is alive in that epoch; nothing if unknown.
  std::optional<bool> alive(const std::string& holder) {
    const auto slash = holder.rfind('/');
    if (slash == std::string::npos) return false;
    kvEntry* e = nullptr;
    const natsStatus st = kvStore_Get(&e, brokers_, key_of(broker_of(holder)).c_str());
    if (st == NATS_NOT_FOUND) return false;
    if (st != NATS_OK) return std::nullopt;
    const bool same = holder.compare(slash + 1, std::string::npos, kvEntry_ValueString(e)) == 0;
    kvEntry_Destroy(e);
    return same;
  }

  // This broker's liveness entry and the watches' tick, every refresh_interval on a thread of
  // its own: a claim that waits for the registry for seconds on the worker must not let the
  // entry expire meanwhile (this broker's names would be void, and given to another broker).
  void beat() {
    const std::string key = key_of(s_.broker_name);
    kvEntry* e = nullptr;
    if (kvStore_Get(&e, brokers_, key.c_str()) == NATS_OK) {
      const std::string seen = kvEntry_ValueString(e);
      kvEntry_Destroy(e);
      if (put_once_ && seen != epoch_ && !duplicate_warned_) {
        duplicate_warned_ = true;
        spdlog::error("cluster '{}': another broker named '{}' is in the cluster; every broker needs a name of its "
                      "own (--broker-name)",
                      s_.cluster_name, s_.broker_name);
      }
    }
    std::uint64_t rev = 0;
    if (kvStore_PutString(&rev, brokers_, key.c_str(), epoch_.c_str()) == NATS_OK) {
      put_once_ = true;
      // The watches' tick (never a name: no username holds a '~').
      kvStore_PutString(&rev, names_, (tick_prefix + token_).c_str(), epoch_.c_str());
    } else {
      spdlog::warn("cluster '{}': this broker's liveness could not be written: {}", s_.cluster_name, last_error());
    }
  }

  // The count of brokers alive, their epochs, and the releases that failed.
  void refresh() {
    if (!names_ || !brokers_ || !groups_) {
      ready();
      return;
    }
    kvKeysList keys{};
    if (kvStore_Keys(&keys, brokers_, nullptr) == NATS_OK) {
      if (keys.Count != alive_.load()) {
        spdlog::info("cluster '{}': {} alive", s_.cluster_name, counted(static_cast<std::uint64_t>(keys.Count), "broker"));
      }
      alive_ = keys.Count;
      std::map<std::string, std::string> epochs;
      bool complete = true;
      for (int i = 0; i < keys.Count; ++i) {
        kvEntry* b = nullptr;
        const natsStatus st = kvStore_Get(&b, brokers_, keys.Keys[i]);
        if (st == NATS_OK) {
          epochs[keys.Keys[i]] = kvEntry_ValueString(b);
          kvEntry_Destroy(b);
        } else if (st != NATS_NOT_FOUND) {
          complete = false;
        }
      }
      kvKeysList_Destroy(&keys);
      std::lock_guard lock(view_m_);
      if (complete && epochs != epochs_) {
        epochs_ = std::move(epochs);
        for (auto& [user, holder] : held_) report(user);
      }
    }
    for (auto it = releases_due_.begin(); it != releases_due_.end();) {
      it = do_release(*it) ? releases_due_.erase(it) : std::next(it);
    }
  }

  cluster_settings s_;
  std::string epoch_;
  std::string self_;   // the value of the names this process holds: "<broker>/<epoch>"
  std::string token_;  // this broker in keys and subjects
  const backbone_events events_;  // set before any thread starts: called on cnats' threads and the watcher's

  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::thread worker_;

  // The worker's alone.
  natsOptions* opts_ = nullptr;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  kvStore* names_ = nullptr;
  kvStore* brokers_ = nullptr;
  kvStore* groups_ = nullptr;
  natsSubscription* control_ = nullptr;
  natsSubscription* relay_ = nullptr;
  std::set<std::string> releases_due_;
  clock_type::time_point last_complaint_{};
  bool put_once_ = false;
  bool duplicate_warned_ = false;
  std::atomic<int> alive_{0};

  std::thread watcher_;
  std::thread group_watcher_;
  std::thread heart_;  // beat()
  std::atomic<bool> watching_{false};
  std::atomic<int> rewatches_{0};  // bumped when every watch is to be made anew
  // Where names are held, as the watch and the refreshes see it.
  std::mutex view_m_;
  std::map<std::string, std::string> held_;     // user -> "<broker>/<epoch>", for names not released
  std::map<std::string, std::string> epochs_;   // broker token -> epoch, of live brokers
  std::map<std::string, std::string> reported_; // user -> broker token, as last told
};

}  // namespace

bool is_valid_cluster_name(std::string_view name) noexcept {
  return !name.empty() && name.size() <= 64 &&
         std::all_of(name.begin(), name.end(), [](char c) { return plain(static_cast<unsigned char>(c)); });
}

std::unique_ptr<backbone> make_nats_backbone(const cluster_settings& s, backbone_events events) {
  return std::make_unique<nats_backbone>(s, std::move(events));
}

}  // namespace ma
