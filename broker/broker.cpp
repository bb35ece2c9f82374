// The wiring: the io_context's one thread, the TCP listener, the sessions by id, discovery,
// the store, and the one timer that ticks the broker core. Everything the broker decides is in
// broker/core/; this file only carries inputs in and the core's port calls out.
#include "broker/broker.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <malloc.h>
#include <unistd.h>

#include <fstream>
#include <future>

#include "broker/core/broker_core.hpp"
#include "broker/discovery.hpp"
#include "broker/http_server.hpp"
#include "broker/listener.hpp"
#include "broker/metrics.hpp"
#include "broker/password_checker.hpp"
#include "broker/session.hpp"
#include "cluster/backbone.hpp"
#include "core/duration.hpp"
#include "core/config.hpp"
#include "core/encode.hpp"
#include "storage/store.hpp"

namespace ma {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using acceptor_type = asio::basic_socket_acceptor<tcp, asio::io_context::executor_type>;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr auto housekeeping_interval = 1s;
constexpr auto trim_interval = 2s;

// The process's resident memory, from /proc/self/statm.
std::uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::uint64_t memory_budget(std::uint64_t max_memory_mb) {
  if (max_memory_mb > 0) return max_memory_mb << 20;
  static const std::uint64_t three_quarters_of_ram =
      static_cast<std::uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) / 4 * 3;
  return three_quarters_of_ram;
}

password_cost cost_of(const broker_options& o) { return {o.password_hash_ops, o.password_hash_mem_kib}; }

// The TLS listener's context: TLS 1.2 or later, the certificate chain and key, and the CA of
// client certificates (demanded with --tls-require-client-cert). Throws std::runtime_error
// with a sentence naming the option and file.
std::shared_ptr<asio::ssl::context> make_tls_context(const broker_options& o) {
  namespace ssl = asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  auto load = [](const char* option, const std::string& file, auto&& what) {
    if (file.empty()) throw std::runtime_error(std::string(option) + " is needed with --tls-port: give a PEM file.");
    boost::system::error_code ec;
    what(file, ec);
    if (ec) throw std::runtime_error(std::string(option) + " '" + file + "' could not be used: " + ec.message() + ".");
  };
  load("--tls-cert", o.tls_cert, [&](const std::string& f, auto& ec) { ctx->use_certificate_chain_file(f, ec); });
  load("--tls-key", o.tls_key, [&](const std::string& f, auto& ec) { ctx->use_private_key_file(f, ssl::context::pem, ec); });
  if (!o.tls_ca.empty()) {
    load("--tls-ca", o.tls_ca, [&](const std::string& f, auto& ec) { ctx->load_verify_file(f, ec); });
    ctx->set_verify_mode(o.tls_require_client_cert ? ssl::verify_peer | ssl::verify_fail_if_no_peer_cert
                                                   : ssl::verify_peer);
  } else if (o.tls_require_client_cert || o.tls_identity_as_username) {
    throw std::runtime_error("--tls-require-client-cert and --tls-identity-as-username need --tls-ca: the CA that "
                             "signs the client certificates.");
  }
  return ctx;
}

void log_failure(const char* what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("{} stopped: {}", what, ex.what());
  }
}

}  // namespace

struct broker::impl : port, session_host, std::enable_shared_from_this<broker::impl> {
  impl(asio::io_context& io, const broker_options& o, store& s)
      : io(io), o(o), st(s), core_(o, *this), acceptor(io), discovery(io, this->o, [this] {
          return core_.online_count();
        }), http(io, [this](std::string path) { return http_request(std::move(path)); }) {}

  asio::io_context& io;
  broker_options o;
  store& st;
  broker_core core_;
  acceptor_type acceptor;
  acceptor_type tls_acceptor{io};
  std::shared_ptr<asio::ssl::context> tls_context;  // new TLS sessions use it (swapped on SIGHUP)
  discovery_responder discovery;
  http_server http;
  transport_counters traffic_;
  peer_id next_id = 0;
  boost::unordered_flat_map<peer_id, std::shared_ptr<session>> sessions;
  std::vector<peer_id> to_flush;
  std::map<std::tuple<std::string, char, std::string>, std::string> relays;  // see relay()
  // Store jobs of the current burst: they go to the store after its writes (waking the store's
  // thread before them put that on every round trip's path).
  struct job_to_submit {
    store_job job;
    store::completion done;
    on_failure policy;
    const char* name;
  };
  std::vector<job_to_submit> to_submit;
  bool burst_end_posted = false;
  asio::steady_timer core_timer{io};
  steady_time core_timer_at = steady_time::max();
  bool tick_posted = false;
  asio::steady_timer housekeeping_timer{io};
  steady_time last_trim{};
  bool stopping = false;
  bool stopped = false;
  std::function<void()> on_stopped;
  std::unique_ptr<password_checker> passwords;  // with --password-file
  std::unique_ptr<backbone> cluster;            // with --cluster-nats

  session* find(peer_id id) {
    auto it = sessions.find(id);
    return it == sessions.end() ? nullptr : it->second.get();
  }

  // --- session_host
  broker_core& core() override { return core_; }
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }
  void session_ended(peer_id id) override {
    sessions.erase(id);
    core_.disconnected(id, moment_now());
    maybe_finish_stop();
  }

  void tls_established(peer_id id, const std::string& name) override {
    core_.tls_established(id, name, moment_now());
  }
  transport_counters& traffic() override { return traffic_; }

  // --- port
  void flush(peer_id id) override {
    to_flush.push_back(id);
    at_burst_end();
  }
  // After the current burst of work, so that its frames share one write per peer, and its
  // store jobs follow the writes.
  void at_burst_end() {
    if (burst_end_posted) return;
    burst_end_posted = true;
    asio::post(io, [self = shared_from_this()] {
      self->burst_end_posted = false;
      auto ids = std::move(self->to_flush);
      self->to_flush.clear();
      for (peer_id id : ids) {
        if (broker_core::is_remote(id)) {
          self->core_.relay_outbox(id, moment_now());
        } else if (session* s = self->find(id)) {
          s->flush();
        }
      }
      if (!self->relays.empty()) self->send_relays();
      self->submit_jobs();
    });
  }
  void submit_jobs() {
    auto jobs = std::move(to_submit);
    to_submit.clear();
    for (auto& j : jobs) st.submit(std::move(j.job), std::move(j.done), j.policy, j.name);
  }
  void close_after_flush(peer_id id) override {
    if (session* s = find(id)) s->begin_close();
  }
  void set_frame_limit(peer_id id, std::size_t max_frame_bytes) override {
    if (session* s = find(id)) s->set_frame_limit(max_frame_bytes);
  }
  void hold_reading(peer_id id) override {
    if (session* s = find(id)) s->hold();
  }
  void resume_reading(peer_id id) override {
    if (session* s = find(id)) s->resume();
  }
  // An answer that comes on another thread (the store's, a password checker's, the cluster's)
  // as done(result, moment) on the broker's thread. That thread keeps no reference to the
  // broker: whatever done captures moves to the broker's thread, so nothing of the broker is
  // destroyed elsewhere; done is dropped if the broker is gone.
  template <class Result, class Done>
  auto on_broker_thread(Done done) {
    return [weak = weak_from_this(), ioc = &io, done = std::move(done)](Result result) mutable {
      asio::post(*ioc, [weak, result = std::move(result), done = std::move(done)] {
        if (auto self = weak.lock()) done(result, moment_now());
      });
    };
  }
  void submit(store_job job, core_completion done, on_failure policy, const char* name) override {
    to_submit.push_back({std::move(job), on_broker_thread<std::exception_ptr>(std::move(done)), policy, name});
    at_burst_end();
  }
  void check_password(std::string user, std::string password, password_completion done) override {
    auto back = on_broker_thread<bool>(std::move(done));
    if (!passwords) return back(false);
    passwords->check(std::move(user), std::move(password), std::move(back));
  }
  void claim_name(std::string user, bool take_over, claim_completion done) override {
    cluster->claim(std::move(user), take_over, on_broker_thread<claim_outcome>(std::move(done)));
  }
  void release_name(std::string user) override { cluster->release(std::move(user)); }
  void change_group(group_change change, group_completion done) override {
    auto back = on_broker_thread<std::pair<group_outcome, std::vector<std::string>>>(
        [done = std::move(done)](const std::pair<group_outcome, std::vector<std::string>>& r, const moment& at) {
          done(r.first, r.second, at);
        });
    cluster->change_group(std::move(change), [back = std::move(back)](group_outcome o, std::vector<std::string> m) mutable {
      back(std::make_pair(o, std::move(m)));
    });
  }
  // Relays of the current burst, one NATS message per broker, kind and user (the
  // acknowledgements a session sent in one read go back together), of at most
  // backbone::max_relay_bytes: what would pass it goes out first, in order.
  void relay(const std::string& broker, relay_kind kind, const std::string& user, std::string_view frames) override {
    std::string& pending = relays[{broker, static_cast<char>(kind), user}];
    if (!pending.empty() && pending.size() + frames.size() > backbone::max_relay_bytes) {
      cluster->relay(broker, kind, user, pending);
      pending.clear();
    }
    pending.append(frames);
    at_burst_end();
  }
  void send_relays() {
    auto due = std::move(relays);
    relays.clear();
    for (auto& [to, frames] : due) cluster->relay(std::get<0>(to), static_cast<relay_kind>(std::get<1>(to)), std::get<2>(to), frames);
  }
  void deadline_moved(steady_time at) override {
    if (stopped) return;
    if (at <= steady::now()) {
      if (tick_posted) return;
      tick_posted = true;
      asio::post(io, [self = shared_from_this()] {
        self->tick_posted = false;
        self->tick();
      });
      return;
    }
    if (at >= core_timer_at && core_timer_at > steady::now()) return;  // armed for sooner already
    core_timer_at = at;
    if (at == steady_time::max()) return (void)core_timer.cancel();
    core_timer.expires_at(at);
    core_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return;
      self->core_timer_at = steady_time::max();
      self->tick();
    });
  }
  // Gives freed memory back to the system now and then, right after the tick that may have
  // released idle buffers: a login storm leaves large freed buffers behind that would
  // otherwise stay resident for good.
  void tick() {
    if (stopped) return;
    const moment now = moment_now();
    core_.tick(now);
    if (now.steady - last_trim > trim_interval) {
      last_trim = now.steady;
      ::malloc_trim(0);
    }
  }

  void start();
  void listen(acceptor_type& a, std::uint16_t port);
  void stop(std::function<void()> done);
  void maybe_finish_stop();
  asio::awaitable<void> accept_loop(acceptor_type& a, bool tls);
  void refuse(socket_type sock, std::string why);
  void schedule_housekeeping();
  // --- the HTTP endpoint (--http-port)
  asio::awaitable<http_reply> http_request(std::string path);
  metrics_snapshot snapshot() const;
  // Pending dead letters, from the store; nullopt when it did not answer within the limit.
  asio::awaitable<std::optional<std::int64_t>> ask_store(std::chrono::milliseconds limit);
  // Why the broker is not healthy (empty: it is), with the store's answer to ask_store.
  std::string unhealthy(bool store_answered) const;
};

// ------------------------------------------------------------------------------------------
// lifecycle

void broker::impl::start() {
  if (!o.acl_file.empty()) {
    auto rules = std::make_shared<const acl>(acl::parse(read_text_file(o.acl_file), o.acl_file));
    spdlog::info("the ACL file '{}' has rules for {} users", o.acl_file, rules->users());
    core_.set_acl(std::move(rules));
  }
  if (!o.password_file.empty()) {
    passwords = std::make_unique<password_checker>(o.password_file, cost_of(o));
    spdlog::info("{} users in the password file '{}'", passwords->users(), o.password_file);
  } else if (boost::system::error_code ec; !asio::ip::make_address(o.listen_address, ec).is_loopback()) {
    spdlog::warn("listening on {} without --password-file: anyone who reaches the port can log in under any name "
                 "that is not online and receive what waits for it",
                 o.listen_address);
  }
  // Recovery first: what the last run accepted and never saw acknowledged is a dead letter now.
  struct loaded {
    std::int64_t recovered = 0;
    std::vector<group_record> groups;
    std::vector<accepted_pair> recent;
    counts_by_recipient expired;
  };
  auto result = std::make_shared<loaded>();
  std::promise<void> done;
  const auto window = bounded_ms(o.dedupe_window_ms);
  const sys_ms now = now_ms();
  st.submit(
      [result, window, now](database& db) {
        result->recovered = db.recover(now);
        result->expired = db.sweep_expired(now);
        result->groups = db.list_groups();
        db.forget_accepted(now - window, broker_core::max_dedupe_entries);
        result->recent = db.accepted_since(now - window);
      },
      [&done](std::exception_ptr e) {
        if (e) done.set_exception(e);
        else done.set_value();
      });
  done.get_future().get();
  if (result->recovered > 0) {
    spdlog::warn("recovered {} accepted but unacknowledged deliveries from the last run as dead letters (broker_restart)",
                 result->recovered);
  }
  if (o.tls_port) tls_context = make_tls_context(o);
  if (o.cluster) {
    // Each event moves to the broker's thread, in the order it came.
    std::weak_ptr<impl> weak = weak_from_this();
    backbone_events events;
    events.takeover = [weak, ioc = &io](std::string user, std::function<void()> done) {
      asio::post(*ioc, [weak, user = std::move(user), done = std::move(done)] {
        auto self = weak.lock();
        if (!self) return;
        self->core_.taken_over_elsewhere(user, moment_now());
        done();  // after the release it asked for, in the backbone's order
      });
    };
    events.holder = [weak, ioc = &io](std::string user, std::string broker) {
      asio::post(*ioc, [weak, user = std::move(user), broker = std::move(broker)] {
        if (auto self = weak.lock()) self->core_.remote_holder(user, broker, moment_now());
      });
    };
    events.relayed = [weak, ioc = &io](relay_message m) {
      asio::post(*ioc, [weak, m = std::move(m)] {
        if (auto self = weak.lock()) self->core_.relayed(m.kind, m.from, m.user, m.frames, moment_now());
      });
    };
    events.group = [weak, ioc = &io](std::string group, std::vector<std::string> members) {
      asio::post(*ioc, [weak, group = std::move(group), members = std::move(members)] {
        if (auto self = weak.lock()) self->core_.remote_group(group, members);
      });
    };
    cluster = make_nats_backbone({comma_list(o.cluster_nats), o.cluster_name, o.broker_name}, std::move(events));
    spdlog::info("cluster '{}': joining through NATS at {} as broker '{}'", o.cluster_name, o.cluster_nats,
                 o.broker_name);
  }
  core_.start(result->groups, std::move(result->recent), result->expired, moment_now());
  listen(acceptor, o.port);
  if (o.tls_port) listen(tls_acceptor, o.tls_port);
  if (o.discovery) discovery.open();

  auto self = shared_from_this();
  asio::co_spawn(io, accept_loop(acceptor, false), [self](std::exception_ptr e) { log_failure("the accept loop", e); });
  if (o.tls_port) {
    asio::co_spawn(io, accept_loop(tls_acceptor, true),
                   [self](std::exception_ptr e) { log_failure("the TLS accept loop", e); });
    spdlog::info("TLS listener on {}:{}{}", o.listen_address, tls_acceptor.local_endpoint().port(),
                 o.tls_require_client_cert ? ", client certificates required" : "");
  }
  if (o.discovery) discovery.start(acceptor.local_endpoint(), o.tls_port ? tls_acceptor.local_endpoint().port() : 0, self);
  if (o.http_port) {
    http.open(o.http_address, o.http_port);
    http.start(self);
    spdlog::info("HTTP endpoint on {}:{}: /metrics, /healthz", o.http_address, http.port());
  }
  schedule_housekeeping();
  spdlog::info("message-broker {} '{}' listening on {}:{}{}, database {}", MA_VERSION, o.broker_name, o.listen_address,
               acceptor.local_endpoint().port(),
               o.discovery ? fmt::format(", discovery on {}:{} via {}", o.discovery_group, discovery.port(),
                                         o.discovery_interface)
                           : std::string(", discovery off"),
               st.path());
}

void broker::impl::listen(acceptor_type& a, std::uint16_t port) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(o.listen_address, ec);
  if (ec) throw std::runtime_error("--listen-address '" + o.listen_address + "' is not an IP address.");
  tcp::endpoint ep(address, port);
  a.open(ep.protocol());
  a.set_option(tcp::acceptor::reuse_address(true));
  a.bind(ep, ec);
  if (ec) {
    throw std::runtime_error("Cannot listen on " + o.listen_address + ":" + std::to_string(port) + " (" +
                             ec.message() + "): is another broker running? Choose another port.");
  }
  a.listen(asio::socket_base::max_listen_connections);
}

void broker::impl::stop(std::function<void()> done) {
  if (stopping) return;
  stopping = true;
  on_stopped = std::move(done);
  spdlog::info("stopping: {} connections to flush", sessions.size());
  boost::system::error_code ignored;
  acceptor.close(ignored);
  tls_acceptor.close(ignored);
  discovery.close();
  http.close();
  // Sessions that do not drain in time are closed by the housekeeping.
  core_.stop(moment_now());
  maybe_finish_stop();
}

void broker::impl::maybe_finish_stop() {
  if (!stopping || !sessions.empty() || !on_stopped) return;
  // Every dead-letter batch of the closed sessions was submitted before this one: when it
  // completes, they are committed.
  auto done = std::move(on_stopped);
  on_stopped = nullptr;
  stopped = true;
  core_timer.cancel();
  housekeeping_timer.cancel();
  submit_jobs();
  st.submit([](database&) {}, [ioc = &io, done = std::move(done)](std::exception_ptr) { asio::post(*ioc, done); });
}

asio::awaitable<void> broker::impl::accept_loop(acceptor_type& a, bool tls) {
  auto self = shared_from_this();
  while (!stopping) {
    auto [ec, sock] = co_await a.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (stopping || ec == asio::error::operation_aborted) co_return;
      co_await pause_after_failed_accept(tls ? "tls port" : "port", ec);
      continue;
    }
    sock.set_option(tcp::no_delay(true), ec);
    // Full: a connection that has not logged in makes room (oldest first), never one that has.
    if (sessions.size() >= o.max_connections && !core_.make_room(moment_now())) {
      refuse(std::move(sock), "The broker has reached max_connections (" + std::to_string(o.max_connections) +
                                  "); try again later or ask the operator to raise it.");
      continue;
    }
    if (const auto budget = memory_budget(o.max_memory_mb); resident_bytes() > budget) {
      refuse(std::move(sock), "The broker is at its memory budget (" + std::to_string(budget >> 20) +
                                  " MiB, max-memory-mb); try again later.");
      continue;
    }
    ++traffic_.connections_accepted;
    const peer_id id = ++next_id;
    auto s = std::make_shared<session>(*this, std::move(sock), id, core_.frame_limit_before_log_in(),
                                       tls ? tls_context : nullptr, tls && o.tls_identity_as_username);
    sessions.emplace(id, s);
    core_.connected(id, s->remote_address(), moment_now());
    s->start();  // no coroutine and no read buffer before the first data
  }
}

void broker::impl::refuse(socket_type sock, std::string why) {
  ++traffic_.connections_refused;
  spdlog::warn("refused a connection: {}", why);
  auto frame = std::make_shared<std::string>(make_error_frame({errc::server_busy, std::move(why), {}, {}}));
  auto s = std::make_shared<socket_type>(std::move(sock));
  asio::async_write(*s, asio::buffer(*frame), [s, frame](boost::system::error_code, std::size_t) {
    boost::system::error_code ignored;
    s->shutdown(tcp::socket::shutdown_both, ignored);
    s->close(ignored);
  });
}

// Parks silent coroutines and closes connections that do not drain.
void broker::impl::schedule_housekeeping() {
  housekeeping_timer.expires_after(housekeeping_interval);
  housekeeping_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->stopped) return;
    const auto now = steady::now();
    for (auto& [id, s] : self->sessions) s->housekeeping(now);
    self->schedule_housekeeping();
  });
}

// ------------------------------------------------------------------------------------------
// the HTTP endpoint: /metrics and /healthz

namespace {
// The store answers in microseconds; one that has not within this is stuck, or the disk is.
constexpr std::chrono::seconds store_limit{2};
}  // namespace

asio::awaitable<http_reply> broker::impl::http_request(std::string path) {
  http_reply reply{404, "text/plain; charset=utf-8", "not found: try /metrics or /healthz\n"};
  if (path == "/metrics" || path == "/healthz") {
    const auto pending = co_await ask_store(store_limit);
    if (path == "/metrics") {
      metrics_snapshot m = snapshot();
      m.pending_dead_letters = pending;
      reply = {200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(m)};
    } else if (auto why = unhealthy(pending.has_value()); !why.empty()) {
      reply = {503, "text/plain; charset=utf-8", why + "\n"};
    } else {
      reply = {200, "text/plain; charset=utf-8", "ok\n"};
    }
  }
  co_return reply;
}

std::string broker::impl::unhealthy(bool store_answered) const {
  if (stopping) return "the broker is shutting down";
  if (!acceptor.is_open()) return "the listener is closed";
  if (!st.file_present()) return "the database file '" + st.path() + "' is missing from its path";
  if (auto why = st.failing(); !why.empty()) return "the store can not commit: " + why;
  if (!store_answered) return fmt::format("the store did not answer within {} s", store_limit.count());
  return {};
}

asio::awaitable<std::optional<std::int64_t>> broker::impl::ask_store(std::chrono::milliseconds limit) {
  // The store's job can not be cancelled: it writes its answer into shared state and ends the
  // wait, which the timer ends too if the store is late.
  struct answer {
    std::int64_t count = 0;  // written on the store's thread, read after the post
    std::optional<std::int64_t> pending;
    bool done = false;
    // Keeps io running until the store has answered: its answer is posted there.
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  };
  auto a = std::make_shared<answer>();
  a->guard.emplace(io.get_executor());
  auto timer = std::make_shared<asio::steady_timer>(io, limit);
  st.submit([a](database& db) { a->count = db.count_all_pending(); },
            [a, timer, ioc = &io](std::exception_ptr e) {
              asio::post(*ioc, [a, timer, e] {
                a->done = true;
                if (!e) a->pending = a->count;
                timer->cancel();
                a->guard.reset();
              });
            },
            on_failure::fail, "counting pending dead letters");
  co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
  co_return a->done ? a->pending : std::nullopt;
}

metrics_snapshot broker::impl::snapshot() const {
  metrics_snapshot m;
  m.version = MA_VERSION;
  m.connections = sessions.size();
  m.online = core_.online_count();
  m.in_flight = core_.in_flight_count();
  m.core = core_.counters();
  m.transport = traffic_;
  m.discovery = discovery.counters();
  m.store_batches = st.batches_committed();
  m.commit_latency = st.commit_latency().read();
  m.store_failing = !st.failing().empty();
  m.database_file_present = st.file_present();
  if (cluster) m.brokers_alive = cluster->brokers_alive();
  return m;
}

// ------------------------------------------------------------------------------------------

broker::broker(asio::io_context& io, const broker_options& o, store& s) : impl_(std::make_shared<impl>(io, o, s)) {}

broker::~broker() {
  boost::system::error_code ignored;
  impl_->stopped = true;
  impl_->acceptor.close(ignored);
  impl_->tls_acceptor.close(ignored);
  impl_->discovery.close();
  impl_->http.close();
  impl_->core_timer.cancel();
  impl_->housekeeping_timer.cancel();
  for (auto& [id, s] : impl_->sessions) s->close_socket();
  impl_->cluster.reset();  // a broker stopping frees its names in the cluster at once
}

std::vector<std::string> broker::reload(const broker_options& fresh) {
  broker_options& o = impl_->o;
  std::vector<std::string> changes;
  auto apply = [&changes](const char* name, auto& current, const auto& next) {
    if (current == next) return;
    changes.push_back(fmt::format("{} changed from {} to {}", name, current, next));
    current = next;
  };
  auto restart_only = [&changes](const char* name, const auto& current, const auto& next) {
    if (current == next) return;
    changes.push_back(fmt::format("{} changed from {} to {}: takes effect after a restart", name, current, next));
  };
  apply("heartbeat-interval-ms", o.heartbeat_interval_ms, fresh.heartbeat_interval_ms);
  apply("eviction-factor", o.eviction_factor, fresh.eviction_factor);
  apply("ack-timeout-ms", o.ack_timeout_ms, fresh.ack_timeout_ms);
  apply("login-timeout-ms", o.login_timeout_ms, fresh.login_timeout_ms);
  apply("max-connections", o.max_connections, fresh.max_connections);
  apply("max-memory-mb", o.max_memory_mb, fresh.max_memory_mb);
  apply("max-frame-bytes", o.max_frame_bytes, fresh.max_frame_bytes);  // new connections
  apply("max-message-bytes", o.max_message_bytes, fresh.max_message_bytes);
  apply("max-outbound-bytes", o.max_outbound_bytes, fresh.max_outbound_bytes);
  apply("max-recipients", o.max_recipients, fresh.max_recipients);
  apply("max-group-members", o.max_group_members, fresh.max_group_members);
  apply("max-groups-per-user", o.max_groups_per_user, fresh.max_groups_per_user);
  apply("max-pending-accepts", o.max_pending_accepts, fresh.max_pending_accepts);
  apply("accept-delay-us", o.accept_delay_us, fresh.accept_delay_us);
  apply("max-delivery-attempts", o.max_delivery_attempts, fresh.max_delivery_attempts);
  apply("dead-letter-ttl-ms", o.dead_letter_ttl_ms, fresh.dead_letter_ttl_ms);
  apply("dedupe-window-ms", o.dedupe_window_ms, fresh.dedupe_window_ms);
  apply("log-level", o.log_level, fresh.log_level);
  apply("discovery-legacy-login", o.discovery_legacy_login, fresh.discovery_legacy_login);
  restart_only("listen-address", o.listen_address, fresh.listen_address);
  restart_only("port", o.port, fresh.port);
  restart_only("discovery", o.discovery, fresh.discovery);
  restart_only("discovery-group", o.discovery_group, fresh.discovery_group);
  restart_only("discovery-port", o.discovery_port, fresh.discovery_port);
  restart_only("discovery-interface", o.discovery_interface, fresh.discovery_interface);
  restart_only("advertise-address", o.advertise_address, fresh.advertise_address);
  restart_only("database", o.database, fresh.database);
  restart_only("broker-name", o.broker_name, fresh.broker_name);
  restart_only("http-port", o.http_port, fresh.http_port);
  restart_only("http-address", o.http_address, fresh.http_address);
  restart_only("persist-accepted", o.persist_accepted, fresh.persist_accepted);
  restart_only("sqlite-synchronous", o.sqlite_synchronous, fresh.sqlite_synchronous);
  reload_passwords(fresh, changes);
  reload_acl(fresh, changes);
  reload_tls(fresh, changes);
  core_settings settings = o;
  settings.broker_name = impl_->core_.settings().broker_name;  // restart only
  settings.persist_accepted = impl_->core_.settings().persist_accepted;
  impl_->core_.reload(settings);
  return changes;
}

// SIGHUP rereads the password file (sessions already logged in stay). A file that does not
// read keeps the users the broker had.
void broker::reload_passwords(const broker_options& fresh, std::vector<std::string>& changes) {
  broker_options& o = impl_->o;
  auto& checker = impl_->passwords;
  try {
    if (fresh.password_file.empty()) {
      if (checker) changes.push_back("password-file removed: log_ins need no password from now on");
      checker.reset();
    } else if (checker) {
      changes.push_back(fmt::format("password-file '{}' read again: {} users", fresh.password_file,
                                    checker->reload(fresh.password_file, cost_of(fresh))));
    } else {
      checker = std::make_unique<password_checker>(fresh.password_file, cost_of(fresh));
      changes.push_back(fmt::format("password-file '{}' read: {} users; every log_in needs its password from now on",
                                    fresh.password_file, checker->users()));
    }
    o.password_file = fresh.password_file;
    o.password_hash_ops = fresh.password_hash_ops;
    o.password_hash_mem_kib = fresh.password_hash_mem_kib;
  } catch (const std::exception& e) {
    changes.push_back(fmt::format("password-file not reloaded, the users stay as they were: {}", e.what()));
  }
}

// SIGHUP rereads the ACL file; a file that does not read keeps the rules the broker had.
void broker::reload_acl(const broker_options& fresh, std::vector<std::string>& changes) {
  try {
    if (fresh.acl_file.empty()) {
      if (!impl_->o.acl_file.empty()) changes.push_back("acl-file removed: everything is allowed from now on");
      impl_->core_.set_acl(nullptr);
    } else {
      auto rules = std::make_shared<const acl>(acl::parse(read_text_file(fresh.acl_file), fresh.acl_file));
      changes.push_back(fmt::format("acl-file '{}' read again: rules for {} users", fresh.acl_file, rules->users()));
      impl_->core_.set_acl(std::move(rules));
    }
    impl_->o.acl_file = fresh.acl_file;
  } catch (const std::exception& e) {
    changes.push_back(fmt::format("acl-file not reloaded, the rules stay as they were: {}", e.what()));
  }
}

// SIGHUP rereads the certificate, key and CA for the connections made from then on; files that
// do not load keep the ones the broker had. The port and the options' on/off need a restart.
void broker::reload_tls(const broker_options& fresh, std::vector<std::string>& changes) {
  broker_options& o = impl_->o;
  if (!o.tls_port) return;
  try {
    broker_options next = o;
    next.tls_cert = fresh.tls_cert;
    next.tls_key = fresh.tls_key;
    next.tls_ca = fresh.tls_ca;
    impl_->tls_context = make_tls_context(next);
    o = next;
    changes.push_back("TLS certificate, key and CA read again: new connections use them");
  } catch (const std::exception& e) {
    changes.push_back(fmt::format("TLS files not reloaded, the old ones stay: {}", e.what()));
  }
}

std::uint16_t broker::tls_port() const {
  boost::system::error_code ec;
  auto ep = impl_->tls_acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void broker::start() { impl_->start(); }
void broker::stop(std::function<void()> done) { impl_->stop(std::move(done)); }
std::uint16_t broker::port() const { return impl_->acceptor.local_endpoint().port(); }
std::uint16_t broker::discovery_port() const { return impl_->discovery.port(); }
std::uint16_t broker::http_port() const { return impl_->http.port(); }

broker_status broker::status() const {
  broker_status st;
  st.connections = impl_->sessions.size();
  st.online = impl_->core_.online_count();
  st.in_flight = impl_->core_.in_flight_count();
  if (impl_->cluster) {
    st.cluster = impl_->o.cluster_name;
    st.brokers_alive = impl_->cluster->brokers_alive();
  }
  return st;
}

}  // namespace ma
