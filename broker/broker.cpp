#include "broker/broker.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/multicast.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <malloc.h>

#include <deque>
#include <future>
#include <map>
#include <set>
#include <optional>
#include <unordered_map>

#include <boost/unordered/unordered_flat_map.hpp>

#include "broker/dedupe.hpp"
#include "broker/in_flight.hpp"
#include "broker/letter_warnings.hpp"
#include "broker/outbox.hpp"
#include "core/clock.hpp"
#include "core/duration.hpp"
#include "core/encode.hpp"
#include "core/framer.hpp"
#include "core/frames.hpp"
#include "core/request.hpp"
#include "core/uuid.hpp"
#include "storage/store.hpp"

namespace ma {

namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using udp = asio::ip::udp;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr int protocol_version = 1;
// Above this many online users, update_user_set carries user_count instead of user_list.
constexpr std::size_t max_user_list_in_updates = 1000;
// Up to this many online users, presence changes go out one by one, at once.
constexpr std::size_t presence_immediate_below = 64;
constexpr auto presence_batch = 100ms;
// Redeliveries sent and not yet acknowledged, per session, before the pager waits.
constexpr std::size_t redelivery_window = 1000;
constexpr int redelivery_page = 500;
constexpr std::size_t max_datagram = 1400;
constexpr int discovery_replies_per_second = 20;
constexpr std::size_t max_dedupe_entries = 2'000'000;
constexpr auto close_flush_limit = 2s;
constexpr auto backpressure_limit = 200ms;
constexpr auto busy_gap = 100ms;   // a session whose data comes closer than this keeps its coroutine
constexpr auto park_after = 1s;    // of silence, before the sweep parks a busy session's coroutine
constexpr auto letter_warning_interval = 10s;

std::string_view status_of(bool live) { return live ? "relayed" : "dead_lettered"; }

}  // namespace

struct broker::impl : std::enable_shared_from_this<broker::impl> {
  impl(asio::io_context& io, const broker_options& o, store& s)
      : io(io),
        o(o),
        st(s),
        acceptor(io),
        udp_socket(io),
        decoder(o.max_message_bytes),
        datagram_decoder(max_datagram),
        ack_timer(io),
        sweep_timer(io),
        expiry_timer(io) {}

  asio::io_context& io;
  broker_options o;
  store& st;
  tcp::acceptor acceptor;
  udp::socket udp_socket;
  request_decoder decoder;
  request_decoder datagram_decoder;

  std::uint64_t next_session_id = 0;
  std::unordered_map<std::uint64_t, std::shared_ptr<session>> sessions;
  std::map<std::string, session*> online;  // receiving sessions, sorted: user lists come out in order
  std::multimap<std::string, session*> send_only;  // sessions that only send, by user
  std::map<std::string, std::set<std::string>> groups;

  dedupe_table dedupe{max_dedupe_entries};
  using dedupe_entry = dedupe_table::entry;
  std::chrono::milliseconds dedupe_window() const { return bounded_ms(o.dedupe_window_ms); }

  // One recipient of a message being accepted.
  struct target {
    std::string name;
    session* to;  // online and with room: a live delivery; else a dead letter for reason
    dead_letter_reason reason;
    std::int64_t seq;
  };

  struct ack_deadline {
    steady::time_point at;
    std::weak_ptr<session> s;
    std::uint64_t id;
  };
  std::deque<ack_deadline> ack_deadlines;  // in deadline order: the timeout is the same for all
  asio::steady_timer ack_timer;
  bool ack_timer_armed = false;
  asio::steady_timer sweep_timer;
  asio::steady_timer expiry_timer;

  struct rate {
    steady::time_point window;
    int count = 0;
  };
  std::unordered_map<std::string, rate> discovery_rates;

  letter_warnings warnings{letter_warning_interval};
  asio::steady_timer warnings_timer{io};
  bool warnings_armed = false;
  // Logs the parked and expired letters now, or after the interval (letter_warnings).
  void warn_letters(const counts_by_recipient& parked, const counts_by_recipient& expired);
  void flush_warnings();

  bool stopping = false;
  std::function<void()> on_stopped;
  steady::time_point last_trim{};

  // --- lifecycle
  void start();
  void stop(std::function<void()> done);
  void maybe_finish_stop();
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> discovery_loop();
  void schedule_sweep();
  void schedule_expiry_sweep();

  // --- sessions
  void start_session(const std::shared_ptr<session>& s);
  void on_session_closed(const std::shared_ptr<session>& s);
  asio::awaitable<void> handle_frame(std::shared_ptr<session> s, std::string_view frame);
  void handle_heartbeat(session& s, const request& r);
  asio::awaitable<void> handle_log_in(std::shared_ptr<session> s, request r);
  void handle_log_out(session& s, const request& r);
  void handle_user_list(session& s, const request& r);
  void handle_message(session& s, request& r);
  void handle_ack(session& s, const request& r);
  asio::awaitable<void> handle_group(std::shared_ptr<session> s, request r);
  void handle_group_list(session& s, const request& r);
  asio::awaitable<void> redeliver(std::shared_ptr<session> s);

  // --- relay
  json::array online_names() const {  // sorted, as online is
    json::array users;
    for (auto& [name, _] : online) users.emplace_back(name);
    return users;
  }
  session* find_online(const std::string& name) const {
    auto it = online.find(name);
    return it == online.end() ? nullptr : it->second;
  }
  void deliver(session& to, const message_ptr& m, std::int64_t seq);
  void send_live(session& to, const message_ptr& m, std::int64_t seq);
  // Sends what waits in to.held while its receive window has room and no backlog is being
  // redelivered.
  void refill(session& to);
  void refill_soon(session& to);
  void register_in_flight(session& to, delivery d);
  void finish_accept(dedupe_entry& e, const std::string& uuid);
  void on_ack_timer();
  void arm_ack_timer();
  void dead_letter(std::vector<failed_delivery> failed, dead_letter_reason reason);
  // A receipt for the sender of m: to the session that sent it while it is connected, else to
  // every session of that user.
  template <class Write>
  void notify_sender(const accepted_message& m, Write&& write);
  // Appends a frame (write as in session::append) to every session of user.
  template <class Write>
  void notify_all_sessions(const std::string& user, Write&& write);
  // Sessions with frames queued since the last flush (session::kick).
  std::vector<std::shared_ptr<session>> to_flush;
  bool flush_posted = false;
  void queue_flush(session& s);

  void presence(const std::string& who, bool joined);
  void flush_presence(const std::string& except);
  std::vector<std::string> presence_joined, presence_left;
  asio::steady_timer presence_timer{io};
  bool presence_timer_armed = false;
  void send_error(session& s, errc code, std::string text, const request* r = nullptr);
  // Removes s from online or send_only; true if it held its name (was online).
  bool forget_name(session& s);

  // Runs job on the store's thread; then done(error) on the broker's thread, if the broker
  // still exists. The store's thread keeps no reference to the broker: whatever done captures
  // moves to the broker's thread, so nothing of the broker is destroyed on the store's thread.
  void submit(store::job job, std::function<void(std::exception_ptr)> done,
              store::on_failure policy = store::on_failure::fail, const char* name = "operation") {
    std::weak_ptr<impl> weak = weak_from_this();
    st.submit(
        std::move(job),
        [weak, ioc = &io, done = std::move(done)](std::exception_ptr e) mutable {
          asio::post(*ioc, [weak, e, done = std::move(done)] {
            if (auto self = weak.lock()) done(e);
          });
        },
        policy, name);
  }

  std::chrono::milliseconds ack_timeout() const { return bounded_ms(o.ack_timeout_ms); }
  // Silence after which a session is evicted: its interval times the factor, saturated.
  std::chrono::milliseconds evict_after(const session& s) const;
};

// Where a coroutine sleeps until other code wakes it or a deadline passes. The timer lives in
// the sleeping coroutine's frame, so a session that waits for nothing holds no timer. One
// sleeper at a time; a wake with nobody asleep is lost, so sleepers test their condition first.
class wake_point {
 public:
  asio::awaitable<void> sleep_until(steady::time_point deadline) {
    asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
    timer_ = &timer;
    struct forget {
      asio::steady_timer*& t;
      ~forget() { t = nullptr; }
    } on_exit{timer_};
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  void wake() {
    if (timer_) timer_->cancel();
  }

 private:
  asio::steady_timer* timer_ = nullptr;
};

// One TCP connection, on the broker's thread. While data comes in, a coroutine (run) reads and
// handles it; an idle connection has no coroutine, only a callback waiting for data
// (wait_for_data). What the broker sends is appended to the session's output and written with
// one non-blocking call at the end of each burst of work (flush_now); only a socket that cannot
// take it all gets asynchronous writes (write_rest), for as long as it stays full.
struct session : std::enable_shared_from_this<session> {
  session(broker::impl& b, tcp::socket sock, std::uint64_t id)
      : b(b),
        socket(std::move(sock)),
        framer(b.o.max_frame_bytes),
        id(id),
        connected_at(steady::now()),
        last_activity(connected_at) {
    boost::system::error_code ignored;
    socket.non_blocking(true, ignored);  // for flush_now's direct writes; async operations are unaffected
  }

  broker::impl& b;
  tcp::socket socket;
  line_framer framer;
  outbox out;
  std::uint64_t id;
  bool closing = false;  // flush what is queued, then close
  bool closed = false;
  steady::time_point closing_since{};
  steady::time_point connected_at;
  steady::time_point last_activity;
  steady::time_point last_read{};  // unlike last_activity, not set at connect
  bool busy = false;               // the last read came within busy_gap of the one before
  std::string peer;

  std::string username;
  bool logged_in = false;
  bool send_only = false;  // gets no deliveries, redeliveries or presence; holds no name
  std::chrono::milliseconds heartbeat{};
  std::size_t window = 0;  // at most this many unacknowledged deliveries; 0: no limit
  bool window_full() const { return window != 0 && in_flight.size() >= window; }

  in_flight_set in_flight;

  // Backpressure: a recipient whose unsent data passes a quarter of max_outbound_bytes makes
  // the senders that feed it stop reading (TCP then slows them down) until it drains to an
  // eighth, for at most backpressure_limit. A recipient that does not drain in that time is
  // marked slow: senders no longer wait for it, and what passes max_outbound_bytes goes to
  // the Dead Letter Channel (queue_overflow) until it catches up.
  std::weak_ptr<session> blocked_on;            // set on a sender by the frame it just sent
  std::vector<std::weak_ptr<session>> stalled;  // on a recipient: senders waiting for it
  wake_point room;                              // a stalled sender sleeps here
  bool slow = false;

  bool draining = false;  // redelivering dead letters: live messages wait in held
  // Live deliveries not handed to the socket yet (backlog being redelivered, window full), in
  // order from held_next. Never attempted: they count no attempt when the session ends.
  std::vector<std::pair<message_ptr, std::int64_t>> held;
  std::size_t held_next = 0;
  bool refill_posted = false;
  std::size_t held_count() const { return held.size() - held_next; }
  std::size_t redeliveries_in_flight = 0;
  wake_point redelivery_room;  // the redelivery pager sleeps here while its window is full

  asio::cancellation_signal stop_reading;  // begin_close ends a wait or read for data
  wake_point written;                      // a closing reader waits here for the writer

  // Queues a frame (outbox::append, push, push_shared) and has it written after this burst.
  template <class Write>
  void append(Write&& write) {
    out.append(std::forward<Write>(write));
    kick();
  }
  void push(std::string frame) {
    out.push(std::move(frame));
    kick();
  }
  void push_shared(std::shared_ptr<const std::string> frame) {
    out.push_shared(std::move(frame));
    kick();
  }

  // Something was queued: write it once the current burst of work is done (the broker flushes
  // every kicked session in one posted handler), so the frames of a burst share one write.
  void kick() {
    if (flush_queued) return;
    flush_queued = true;
    b.queue_flush(*this);
  }
  bool flush_queued = false;

  // Writes what is queued with one non-blocking call, unless write_rest is at work. What the
  // socket does not take at once is left to write_rest.
  void flush_now() {
    flush_queued = false;
    if (closed || writer_active || out.empty()) return;
    boost::system::error_code ec;
    const std::size_t n = socket.write_some(out.gather(), ec);
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      spdlog::debug("session {}: write failed: {}", id, ec.message());
      boost::system::error_code ignored;
      socket.close(ignored);  // the reader fails and ends the session
      return;
    }
    consume(n);
    if (!out.empty()) {
      writer_active = true;
      write_rest();
    }
  }
  bool writer_active = false;  // write_rest is at work: the socket was full

  // Writes what the socket did not take at once, and whatever is queued meanwhile, with
  // asynchronous writes (no coroutine: a full socket is common under load).
  void write_rest() {
    const auto& buffers = out.gather();
    out.writing();
    asio::async_write(socket, buffers, [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
      self->out.written();
      if (ec) {
        spdlog::debug("session {}: write failed: {}", self->id, ec.message());
      } else {
        self->consume(n);
        if (!self->out.empty() && !self->closed) return self->write_rest();
      }
      self->writer_active = false;
      self->written.wake();
    });
  }

  // n bytes from the front of the queue were written.
  void consume(std::size_t n) {
    if (n == 0) return;
    out.consume(n);
    last_write = steady::now();
    if (draining) redelivery_room.wake();
    if (!stalled.empty() || slow) release_stalled();
  }

  // Stop reading; what is queued goes out, then the connection closes (the sweep closes it if
  // that takes longer than close_flush_limit).
  void begin_close() {
    if (closing) return;
    closing = true;
    closing_since = steady::now();
    stop_reading.emit(asio::cancellation_type::terminal);
    room.wake();
  }

  // A read-side completion token that begin_close cancels.
  auto until_closing() {
    return asio::bind_cancellation_slot(stop_reading.slot(), asio::as_tuple(asio::use_awaitable));
  }

  // The session's coroutine, started when data arrives: it reads and hands complete frames to
  // handle_input. It returns true when the session is over (after finish, if it was closing),
  // and false when it parks: an idle session has no coroutine, whose frames would cost about
  // 1.5 KiB, only a callback waiting for data (wait_for_data), about 200 bytes. A busy session
  // (data came within busy_gap) keeps waiting in the coroutine, so relaying pays no new
  // coroutine per burst; the sweep parks it once it has been silent for park_after.
  asio::awaitable<bool> run() {
    boost::system::error_code ec;
    bool filled = true;  // the socket is readable
    while (!closing) {
      if (!filled && framer.buffered() == 0) {
        framer.release_if_idle();  // no read buffer while idle
        if (!busy) {
          wait_for_data();
          co_return false;
        }
        awaiting_data = true;
        std::tie(ec) = co_await socket.async_wait(tcp::socket::wait_read, until_closing());
        awaiting_data = false;
        if (std::exchange(park_requested, false) && ec == asio::error::operation_aborted && !closing) {
          wait_for_data();
          co_return false;
        }
        if (ec) break;
      }
      auto space = framer.prepare();
      std::size_t n = 0;
      std::tie(ec, n) = co_await socket.async_read_some(asio::buffer(space.data(), space.size()), until_closing());
      if (ec) {
        if (ec != asio::error::eof && ec != asio::error::operation_aborted) {
          spdlog::debug("session {}: read failed: {}", id, ec.message());
        }
        break;
      }
      filled = n == space.size();
      framer.commit(n);
      const auto now = steady::now();
      busy = now - last_read < busy_gap;
      last_read = last_activity = now;
      co_await handle_input();
    }
    if (closing) co_await finish();  // else the peer left or the socket failed: nothing more to say
    co_return true;
  }

  // Handles the complete frames that were read.
  asio::awaitable<void> handle_input() {
    auto self = shared_from_this();
    while (!closing) {
      auto r = framer.next();
      if (r.st == line_framer::status::need_more) break;
      if (r.st == line_framer::status::too_large) {
        frame_too_large();
        break;
      }
      co_await b.handle_frame(self, r.line);
      if (auto to = blocked_on.lock()) {
        blocked_on.reset();
        co_await wait_for_room(*to);
      }
    }
  }

  // Closing: what is queued goes out, then the send side shuts down.
  asio::awaitable<void> finish() {
    flush_now();
    while (writer_active && !closed) co_await written.sleep_until(steady::time_point::max());
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_send, ignored);
  }

  // Waits for the next data without a coroutine; data, an error or begin_close start run(),
  // which tells them apart.
  void wait_for_data() {
    // It keeps the broker alive too, like a running coroutine's completion does.
    auto on_ready = [self = shared_from_this(), broker = b.shared_from_this()](boost::system::error_code) {
      broker->start_session(self);
    };
    socket.async_wait(tcp::socket::wait_read, asio::bind_cancellation_slot(stop_reading.slot(), std::move(on_ready)));
  }

  // Called by the sweep for a session silent for park_after.
  void park() {
    if (!awaiting_data || closing || park_requested) return;
    park_requested = true;
    stop_reading.emit(asio::cancellation_type::terminal);
  }
  bool awaiting_data = false;  // run() waits for data in the coroutine
  bool park_requested = false;

  void frame_too_large() {
    b.send_error(*this, errc::frame_too_large,
                 "A frame was longer than max_frame_bytes (" + std::to_string(b.o.max_frame_bytes) +
                     "); the connection is closed: send smaller messages, one JSON object per line.");
    begin_close();
  }

  asio::awaitable<void> wait_for_room(session& to) {
    const auto limit = steady::now() + backpressure_limit;
    to.stalled.push_back(weak_from_this());
    while (!to.closed && !to.closing && !closing && to.out.bytes() > b.o.max_outbound_bytes / 8) {
      if (steady::now() >= limit) {
        to.slow = true;
        break;
      }
      co_await room.sleep_until(limit);
    }
  }

  // After a write: senders waiting for this session may go on once it has drained.
  void release_stalled() {
    if (out.bytes() > b.o.max_outbound_bytes / 8) return;
    slow = false;
    for (auto& w : stalled) {
      if (auto s = w.lock()) s->room.wake();
    }
    stalled.clear();
  }

  // Called by the sweep: a session that wrote nothing for a while gives its buffers back, so
  // an idle connection costs a few KiB, not the largest frame it ever sent.
  void release_idle_buffers(steady::time_point now) {
    if (!out.empty() || writer_active || now - last_write < 1s) return;
    out.release_memory();
  }
  steady::time_point last_write{};
};

std::chrono::milliseconds broker::impl::evict_after(const session& s) const {
  return bounded_ms(saturating_mul_ms(static_cast<std::uint64_t>(s.heartbeat.count()), o.eviction_factor));
}

template <class Write>
void broker::impl::notify_all_sessions(const std::string& user, Write&& write) {
  if (session* s = find_online(user); s && !s->closing) s->append(write);
  auto range = send_only.equal_range(user);
  for (auto it = range.first; it != range.second; ++it) {
    if (!it->second->closing) it->second->append(write);
  }
}

template <class Write>
void broker::impl::notify_sender(const accepted_message& m, Write&& write) {
  if (auto origin = m.origin.lock(); origin && !origin->closed && !origin->closing) return origin->append(write);
  notify_all_sessions(m.rec.sender, write);
}

// ------------------------------------------------------------------------------------------
// lifecycle

void broker::impl::start() {
  // Recovery first: what the last run accepted and never saw acknowledged is a dead letter now.
  struct loaded {
    std::int64_t recovered = 0;
    std::vector<group_record> groups;
    std::vector<accepted_pair> recent;
    counts_by_recipient expired;
  };
  auto result = std::make_shared<loaded>();
  std::promise<void> done;
  const auto window = dedupe_window();
  st.submit(
      [result, window](database& db) {
        const auto now = now_ms();
        result->recovered = db.recover(now);
        result->expired = db.sweep_expired(now);
        result->groups = db.list_groups();
        db.forget_accepted(now - window, max_dedupe_entries);
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
  for (auto& g : result->groups) groups[g.name] = std::set<std::string>(g.members.begin(), g.members.end());
  // The dedupe window goes on across the restart: what was accepted within it is answered
  // again with its first statuses, whether it was acknowledged since or not.
  const auto loaded_at = steady::now();
  for (auto& p : result->recent) {
    dedupe_entry& e = dedupe.remember(dedupe_table::key_of(p.sender, p.message_uuid), loaded_at, window);
    e.done = true;
    e.many = p.status.starts_with('[');
    e.status = std::move(p.status);
    e.at = loaded_at;
  }
  warn_letters({}, result->expired);

  boost::system::error_code ec;
  const auto address = asio::ip::make_address(o.listen_address, ec);
  if (ec) throw std::runtime_error("--listen-address '" + o.listen_address + "' is not an IP address.");
  tcp::endpoint ep(address, o.port);
  acceptor.open(ep.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(ep, ec);
  if (ec) {
    throw std::runtime_error("Cannot listen on " + o.listen_address + ":" + std::to_string(o.port) + " (" +
                             ec.message() + "): is another broker running? Choose another --port.");
  }
  acceptor.listen(asio::socket_base::max_listen_connections);

  if (o.discovery) {
    const auto group = asio::ip::make_address(o.discovery_group);
    const auto iface = asio::ip::make_address(o.discovery_interface);
    if (!group.is_v4() || !iface.is_v4()) {
      throw std::runtime_error("Discovery needs IPv4 --discovery-group and --discovery-interface addresses.");
    }
    udp_socket.open(udp::v4());
    udp_socket.set_option(udp::socket::reuse_address(true));
    udp_socket.bind(udp::endpoint(asio::ip::address_v4::any(), o.discovery_port), ec);
    if (ec) {
      throw std::runtime_error("Cannot bind the discovery port " + std::to_string(o.discovery_port) + " (" +
                               ec.message() + "): choose another --discovery-port or set --discovery off.");
    }
    udp_socket.set_option(asio::ip::multicast::join_group(group.to_v4(), iface.to_v4()), ec);
    if (ec) {
      throw std::runtime_error("Cannot join the discovery group " + o.discovery_group + " on " +
                               o.discovery_interface + " (" + ec.message() +
                               "): check --discovery-interface, or set --discovery off.");
    }
    udp_socket.set_option(asio::ip::multicast::enable_loopback(true));
  }

  auto self = shared_from_this();
  asio::co_spawn(io, accept_loop(), [self](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("the accept loop stopped: {}", ex.what());
      }
    }
  });
  if (o.discovery) {
    asio::co_spawn(io, discovery_loop(), [self](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("discovery stopped: {}", ex.what());
        }
      }
    });
  }
  schedule_sweep();
  schedule_expiry_sweep();
  spdlog::info("message-broker '{}' listening on {}:{}{}", o.broker_name, o.listen_address,
               acceptor.local_endpoint().port(),
               o.discovery ? fmt::format(", discovery on {}:{} via {}", o.discovery_group,
                                         udp_socket.local_endpoint().port(), o.discovery_interface)
                           : std::string(", discovery off"));
}

void broker::impl::stop(std::function<void()> done) {
  if (stopping) return;
  stopping = true;
  on_stopped = std::move(done);
  spdlog::info("stopping: {} connections to flush", sessions.size());
  boost::system::error_code ignored;
  acceptor.close(ignored);
  udp_socket.close(ignored);
  sweep_timer.cancel();
  expiry_timer.cancel();
  presence_timer.cancel();
  warnings_timer.cancel();
  // Sessions that do not drain in time are closed by the sweep.
  schedule_sweep();
  for (auto& [id, s] : sessions) s->begin_close();
  maybe_finish_stop();
}

void broker::impl::maybe_finish_stop() {
  if (!stopping || !sessions.empty() || !on_stopped) return;
  // Every dead-letter batch of the closed sessions was submitted before this one: when it
  // completes, they are committed.
  auto done = std::move(on_stopped);
  on_stopped = nullptr;
  ack_timer.cancel();
  sweep_timer.cancel();
  submit([](database&) {}, [done = std::move(done)](std::exception_ptr) { done(); });
}

asio::awaitable<void> broker::impl::accept_loop() {
  auto self = shared_from_this();
  while (!stopping) {
    auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (stopping || ec == asio::error::operation_aborted) co_return;
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer pause(io, 100ms);
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    sock.set_option(tcp::no_delay(true), ec);
    if (sessions.size() >= o.max_connections) {
      auto frame = std::make_shared<std::string>(make_error_frame(
          {errc::server_busy,
           "The broker has reached max_connections (" + std::to_string(o.max_connections) +
               "); try again later or ask the operator to raise it.",
           {},
           {}}));
      auto s = std::make_shared<tcp::socket>(std::move(sock));
      asio::async_write(*s, asio::buffer(*frame), [s, frame](boost::system::error_code, std::size_t) {
        boost::system::error_code ignored;
        s->shutdown(tcp::socket::shutdown_both, ignored);
        s->close(ignored);
      });
      spdlog::warn("refused a connection: max_connections ({}) reached", o.max_connections);
      continue;
    }
    auto s = std::make_shared<session>(*this, std::move(sock), ++next_session_id);
    auto remote = s->socket.remote_endpoint(ec);
    s->peer = ec ? std::string("?") : remote.address().to_string() + ":" + std::to_string(remote.port());
    sessions.emplace(s->id, s);
    spdlog::debug("session {}: connected from {}", s->id, s->peer);
    s->wait_for_data();  // no coroutine and no read buffer before the first data
  }
}

// Starts the session's coroutine: at accept, and each time data arrives for an idle session.
void broker::impl::start_session(const std::shared_ptr<session>& s) {
  asio::co_spawn(io, s->run(), [self = shared_from_this(), s](std::exception_ptr e, bool over) {
    if (e) {
      over = true;
      try {
        std::rethrow_exception(e);
      } catch (const boost::system::system_error& ex) {
        if (ex.code() != asio::error::operation_aborted) spdlog::warn("session {}: {}", s->id, ex.what());
      } catch (const std::exception& ex) {
        spdlog::error("session {}: ended by an error: {}", s->id, ex.what());
      }
    }
    if (over) self->on_session_closed(s);
  });
}

void broker::impl::schedule_sweep() {
  // Often enough to evict close to the deadline; rarely enough to cost nothing when idle.
  auto tick = std::chrono::milliseconds(std::min(o.heartbeat_interval_ms, o.login_timeout_ms) / 4);
  tick = std::clamp<std::chrono::milliseconds>(tick, 5ms, 1000ms);
  if (stopping) tick = 100ms;
  sweep_timer.expires_after(tick);
  auto self = shared_from_this();
  sweep_timer.async_wait([self](boost::system::error_code ec) {
    if (ec) return;
    const auto now = steady::now();
    std::vector<std::shared_ptr<session>> to_kill;
    for (auto& [id, s] : self->sessions) {
      if (s->closed) continue;
      s->release_idle_buffers(now);
      if (now - s->last_activity > park_after) s->park();
      if (s->closing) {
        if (now - s->closing_since > close_flush_limit) {
          boost::system::error_code ignored;
          s->socket.close(ignored);
        }
        continue;
      }
      if (!s->logged_in) {
        if (now - s->connected_at > bounded_ms(self->o.login_timeout_ms)) to_kill.push_back(s);
      } else if (now - s->last_activity > self->evict_after(*s)) {
        to_kill.push_back(s);
      }
    }
    for (auto& s : to_kill) {
      if (!s->logged_in) {
        spdlog::info("session {}: no log_in within {} ms, closing", s->id, self->o.login_timeout_ms);
        self->send_error(*s, errc::login_timeout,
                         "No log_in arrived within login_timeout_ms (" + std::to_string(self->o.login_timeout_ms) +
                             "); the connection is closed: log in right after connecting.");
      } else {
        const auto silence = self->evict_after(*s).count();
        spdlog::info("session {}: '{}' evicted after {} ms of silence", s->id, s->username, silence);
        self->send_error(*s, errc::heartbeat_timeout,
                         "Nothing arrived for " + std::to_string(silence) +
                             " ms; you were evicted: send a heartbeat every heartbeat_interval_ms.");
      }
      s->begin_close();
    }
    // Give freed memory back to the system now and then: a login storm leaves large freed
    // buffers behind that would otherwise stay resident for good.
    if (now - self->last_trim > 2s) {
      self->last_trim = now;
      ::malloc_trim(0);
    }
    self->schedule_sweep();
  });
}

void broker::impl::warn_letters(const counts_by_recipient& parked, const counts_by_recipient& expired) {
  for (auto& [who, n] : parked) warnings.add_parked(who, n);
  for (auto& [who, n] : expired) warnings.add_expired(who, n);
  flush_warnings();
}

void broker::impl::flush_warnings() {
  for (auto& line : warnings.due(steady::now())) spdlog::warn("{}", line);
  const auto next = warnings.next_due();
  if (!next || warnings_armed || stopping) return;
  warnings_armed = true;
  warnings_timer.expires_at(*next);
  warnings_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->warnings_armed = false;
    if (!ec) self->flush_warnings();
  });
}

void broker::impl::schedule_expiry_sweep() {
  expiry_timer.expires_after(60s);
  auto self = shared_from_this();
  expiry_timer.async_wait([self](boost::system::error_code ec) {
    if (ec || self->stopping) return;
    auto expired = std::make_shared<counts_by_recipient>();
    const auto window = self->dedupe_window();
    self->submit(
        [expired, window](database& db) {
          const auto now = now_ms();
          *expired = db.sweep_expired(now);
          db.forget_accepted(now - window, max_dedupe_entries);
        },
        [self, expired](std::exception_ptr e) {
          if (!e) self->warn_letters({}, *expired);
        });
    self->schedule_expiry_sweep();
  });
}

// ------------------------------------------------------------------------------------------
// discovery

asio::awaitable<void> broker::impl::discovery_loop() {
  auto self = shared_from_this();
  std::array<char, 2048> buf;
  udp::endpoint from;
  while (!stopping) {
    auto [ec, n] = co_await udp_socket.async_receive_from(asio::buffer(buf), from, asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (stopping || ec == asio::error::operation_aborted) co_return;
      continue;
    }
    if (n > max_datagram) continue;  // oversized: dropped, never answered
    auto r = datagram_decoder.decode_datagram(std::string_view(buf.data(), n));
    if (!r) continue;  // malformed: dropped, never answered
    // Bound the replies one source gets, so the broker can not be used to amplify traffic.
    const auto now = steady::now();
    if (discovery_rates.size() > 10'000) discovery_rates.clear();
    auto& rate = discovery_rates[from.address().to_string()];
    if (now - rate.window > 1s) rate = {now, 0};
    if (++rate.count > discovery_replies_per_second) continue;

    // The address to announce: configured, else the listen address, else the local address
    // that faces the asker.
    std::string host = o.advertise_address;
    if (host.empty()) {
      const auto listen = acceptor.local_endpoint().address();
      if (!listen.is_unspecified()) {
        host = listen.to_string();
      } else {
        udp::socket probe(io);
        boost::system::error_code pec;
        probe.connect(udp::endpoint(from.address(), from.port()), pec);
        host = pec ? std::string("127.0.0.1") : probe.local_endpoint(pec).address().to_string();
      }
    }
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    const std::string address = host + ":" + std::to_string(acceptor.local_endpoint().port());

    json::object content;
    udp::endpoint to = from;
    std::string reply;
    if (r->k == kind::discover_broker) {
      content["broker_name"] = o.broker_name;
      content["broker_address"] = address;
      content["protocol_version"] = protocol_version;
      content["online_users"] = online.size();
      if (!r->request_id.empty()) content["request_id"] = r->request_id;
      reply = make_frame(kind::broker_announce, content);
    } else {
      content["broker_address"] = address;
      if (!r->request_id.empty()) content["request_id"] = r->request_id;
      if (r->sender_port) to.port(*r->sender_port);
      reply = make_frame(kind::acknowledge_log_in, content);
    }
    reply.pop_back();  // a datagram is one object, no newline needed
    co_await udp_socket.async_send_to(asio::buffer(reply), to, asio::as_tuple(asio::use_awaitable));
  }
}

// ------------------------------------------------------------------------------------------
// sessions

void broker::impl::send_error(session& s, errc code, std::string text, const request* r) {
  protocol_error e{code, std::move(text), r ? r->request_id : std::string(), r ? r->message_uuid : std::string()};
  s.push(make_error_frame(e));
}

asio::awaitable<void> broker::impl::handle_frame(std::shared_ptr<session> s, std::string_view frame) {
  spdlog::debug("session {}: <- {}", s->id, frame.substr(0, 200));
  auto decoded = decoder.decode(frame);
  if (!decoded) {
    s->push(make_error_frame(decoded.error()));
    co_return;
  }
  request& r = *decoded;
  if (!s->logged_in && r.k != kind::log_in && r.k != kind::heartbeat) {
    send_error(*s, errc::not_logged_in,
               std::string(to_string(r.k)) + " needs a session: send log_in with your sender_username first.", &r);
    co_return;
  }
  switch (r.k) {
    case kind::log_in:
      co_await handle_log_in(s, std::move(r));
      break;
    case kind::heartbeat:
      handle_heartbeat(*s, r);
      break;
    case kind::log_out:
      handle_log_out(*s, r);
      break;
    case kind::get_user_list:
      handle_user_list(*s, r);
      break;
    case kind::send_message:
    case kind::multicast_message:
    case kind::broadcast_message:
    case kind::group_message:
      handle_message(*s, r);
      break;
    case kind::acknowledge_message:
      handle_ack(*s, r);
      break;
    case kind::create_group:
    case kind::join_group:
    case kind::leave_group:
      co_await handle_group(s, std::move(r));
      break;
    case kind::get_group_list:
      handle_group_list(*s, r);
      break;
    default:
      send_error(*s, errc::unknown_message_id, std::string(to_string(r.k)) + " is not sent to the broker.", &r);
  }
}

void broker::impl::handle_heartbeat(session& s, const request& r) {
  json::object c;
  if (!r.request_id.empty()) c["request_id"] = r.request_id;
  s.push(make_frame(kind::acknowledge_heartbeat, c));
}

asio::awaitable<void> broker::impl::handle_log_in(std::shared_ptr<session> s, request r) {
  if (s->logged_in) {
    send_error(*s, errc::already_logged_in,
               "This connection is already logged in as '" + s->username + "'; open another connection for another user.",
               &r);
    co_return;
  }
  // A send-only session holds no name: it may sit beside the user's receiving session.
  if (!r.send_only && online.count(r.username)) {
    send_error(*s, errc::username_taken,
               "The username '" + r.username + "' is online on another connection; choose another name.", &r);
    co_return;
  }
  if (stopping) co_return;
  // The name is held from here, so no other session can take it while the store answers.
  s->username = r.username;
  s->logged_in = true;
  s->send_only = r.send_only;
  s->window = r.receive_window ? static_cast<std::size_t>(*r.receive_window) : 0;
  if (s->send_only) {
    send_only.emplace(s->username, s.get());
  } else {
    online[s->username] = s.get();
  }
  // The broker grants its own interval, or a longer one the agent asks for (up to 10 times).
  auto granted = std::min(o.heartbeat_interval_ms, max_duration_ms);
  if (r.heartbeat_interval_ms) {
    granted = std::clamp(*r.heartbeat_interval_ms, granted, saturating_mul_ms(granted, 10));
  }
  s->heartbeat = std::chrono::milliseconds(granted);
  s->last_activity = steady::now();

  std::int64_t pending = 0;
  try {
    const std::string name = s->username;
    auto count = [name](database& db) { return db.count_pending(name); };
    pending = co_await st.run(std::move(count));
  } catch (const std::exception& e) {
    spdlog::error("session {}: counting the dead letters of '{}' failed: {}", s->id, s->username, e.what());
    forget_name(*s);
    s->logged_in = false;
    send_error(*s, errc::internal_error,
               "The broker could not read its database; try logging in again in a moment.", &r);
    co_return;
  }
  if (s->closed || s->closing) co_return;

  json::object c;
  c["sender_username"] = s->username;
  c["user_list"] = online_names();
  c["heartbeat_interval_ms"] = granted;
  c["ack_timeout_ms"] = o.ack_timeout_ms;
  c["max_frame_bytes"] = o.max_frame_bytes;
  c["pending_dead_letters"] = pending;
  c["broker_name"] = o.broker_name;
  c["protocol_version"] = protocol_version;
  if (!r.request_id.empty()) c["request_id"] = r.request_id;
  if (s->send_only) c["send_only"] = true;
  if (s->window) c["receive_window"] = s->window;
  s->push(make_frame(kind::acknowledge_log_in, c));
  spdlog::info("session {}: '{}' logged in from {}{} ({} pending dead letters)", s->id, s->username, s->peer,
               s->send_only ? ", send-only" : "", pending);
  if (s->send_only) co_return;  // no presence, no redelivery
  presence(s->username, true);
  if (pending > 0) {
    s->draining = true;
    asio::co_spawn(io, redeliver(s), [s](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("session {}: redelivery to '{}' stopped: {}", s->id, s->username, ex.what());
      }
    });
  }
}

void broker::impl::handle_log_out(session& s, const request& r) {
  json::object c;
  if (!r.request_id.empty()) c["request_id"] = r.request_id;
  s.push(make_frame(kind::acknowledge_log_out, c));
  spdlog::info("session {}: '{}' logged out", s.id, s.username);
  s.begin_close();
}

void broker::impl::handle_user_list(session& s, const request& r) {
  json::object c;
  c["user_list"] = online_names();
  if (!r.request_id.empty()) c["request_id"] = r.request_id;
  s.push(make_frame(kind::user_list, c));
}

void broker::impl::presence(const std::string& who, bool joined) {
  (joined ? presence_joined : presence_left).push_back(who);
  // Few users: tell them at once. Many: one update per presence_batch for all the changes in
  // it, or a login storm of N agents would cost N * N frames.
  if (online.size() <= presence_immediate_below) {
    flush_presence(who);
    return;
  }
  if (presence_timer_armed) return;
  presence_timer_armed = true;
  presence_timer.expires_after(presence_batch);
  auto self = shared_from_this();
  presence_timer.async_wait([self](boost::system::error_code ec) {
    self->presence_timer_armed = false;
    if (!ec) self->flush_presence({});
  });
}

void broker::impl::flush_presence(const std::string& except) {
  if (presence_joined.empty() && presence_left.empty()) return;
  json::object c;
  if (online.size() <= max_user_list_in_updates) c["user_list"] = online_names();
  c["user_count"] = online.size();
  auto names = [](std::vector<std::string>& v) {
    json::array a;
    for (auto& n : v) a.emplace_back(n);
    v.clear();
    return a;
  };
  if (!presence_joined.empty()) c["joined"] = names(presence_joined);
  if (!presence_left.empty()) c["left"] = names(presence_left);
  auto frame = std::make_shared<const std::string>(make_frame(kind::update_user_set, c));
  for (auto& [name, s] : online) {
    if (name != except && !s->closing) s->push_shared(frame);
  }
}

bool broker::impl::forget_name(session& s) {
  if (s.send_only) {
    auto range = send_only.equal_range(s.username);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == &s) {
        send_only.erase(it);
        break;
      }
    }
    return false;
  }
  auto it = online.find(s.username);
  if (it == online.end() || it->second != &s) return false;
  online.erase(it);
  return true;
}

void broker::impl::on_session_closed(const std::shared_ptr<session>& s) {
  s->closed = true;
  s->redelivery_room.wake();
  for (auto& w : s->stalled) {
    if (auto sender = w.lock()) sender->room.wake();
  }
  s->stalled.clear();
  boost::system::error_code ignored;
  s->socket.close(ignored);
  sessions.erase(s->id);
  if (s->logged_in) {
    if (forget_name(*s)) presence(s->username, false);
    spdlog::info("session {}: '{}' disconnected ({} unacknowledged)", s->id, s->username,
                 s->in_flight.size() + s->held_count());
  } else {
    spdlog::debug("session {}: closed before logging in", s->id);
  }
  std::vector<failed_delivery> failed;
  failed.reserve(s->in_flight.size() + s->held_count());
  // In the order they were sent, so that redelivery keeps the order.
  for (auto& d : s->in_flight.drain()) failed.push_back({s->username, std::move(d), true});
  for (std::size_t i = s->held_next; i < s->held.size(); ++i) {
    auto& [m, seq] = s->held[i];
    failed.push_back({s->username, delivery{m, seq, 0, 1, m->rec.accepted_at}, false});
  }
  s->held.clear();
  s->held_next = 0;
  s->redeliveries_in_flight = 0;
  if (!failed.empty()) {
    dead_letter(std::move(failed), stopping ? dead_letter_reason::broker_restart
                                            : dead_letter_reason::recipient_disconnected);
  }
  maybe_finish_stop();
}

// ------------------------------------------------------------------------------------------
// relay

void broker::impl::handle_message(session& s, request& r) {
  std::string uuid = r.message_uuid.empty() ? make_message_uuid() : std::move(r.message_uuid);
  std::string key = dedupe_table::key_of(s.username, uuid);
  if (auto* found = dedupe.find(key); found && !found->failed) {
    auto& e = *found;
    if (e.done) {
      s.append([&](std::string& b) { e.append_accepted(b, uuid, true, r.request_id); });
    } else {
      e.more_waiters.emplace_back(s.weak_from_this(), r.request_id);
    }
    return;
  }

  auto m = std::make_shared<accepted_message>();
  message_record& rec = m->rec;
  rec.sender = s.username;
  rec.body = std::move(r.body);
  rec.accepted_at = now_ms();
  rec.expires_at = saturating_add(rec.accepted_at, bounded_ms(r.ttl_ms ? *r.ttl_ms : o.dead_letter_ttl_ms));
  m->sent_at = format_iso8601_fixed(rec.accepted_at);
  m->origin = s.weak_from_this();

  std::vector<std::string> recipients;
  switch (r.k) {
    case kind::send_message:
      rec.ch = channel::direct;
      recipients = std::move(r.receivers);
      break;
    case kind::multicast_message:
      rec.ch = channel::multicast;
      recipients = std::move(r.receivers);
      break;
    case kind::broadcast_message:
      rec.ch = channel::broadcast;
      for (auto& [name, _] : online) {
        if (name != s.username) recipients.push_back(name);
      }
      break;
    default: {
      rec.ch = channel::group;
      auto g = groups.find(r.group_name);
      if (g == groups.end()) {
        send_error(s, errc::unknown_group,
                   "There is no group '" + r.group_name + "'; create it with create_group or check get_group_list.", &r);
        return;
      }
      if (!g->second.count(s.username)) {
        send_error(s, errc::not_group_member,
                   "You are not a member of '" + r.group_name + "'; join_group first to send to it.", &r);
        return;
      }
      rec.group_name = r.group_name;
      for (auto& member : g->second) {
        if (member != s.username) recipients.push_back(member);
      }
    }
  }

  std::vector<target> targets;
  targets.reserve(recipients.size());
  bool any_dead = false;
  int live = 0;
  for (auto& name : recipients) {
    target t{std::move(name), nullptr, dead_letter_reason::recipient_offline, 0};
    if (session* to = find_online(t.name); to && !to->closing) {
      if (to->out.bytes() > o.max_outbound_bytes) {
        t.reason = dead_letter_reason::queue_overflow;
      } else {
        t.to = to;
        ++live;
        // Backpressure: the sender's reader waits after this frame.
        if (!to->slow && to != &s && to->out.bytes() > o.max_outbound_bytes / 4 && s.blocked_on.expired()) {
          s.blocked_on = to->weak_from_this();
        }
      }
    }
    any_dead = any_dead || !t.to;
    targets.push_back(std::move(t));
  }
  m->fan_out = live > 1;

  dedupe_entry& e = dedupe.remember(std::move(key), steady::now(), dedupe_window());
  e.many = r.k != kind::send_message;
  if (e.many) {
    std::string arr = "[";
    for (auto& t : targets) {
      if (arr.size() > 1) arr += ',';
      arr += "{\"receiver_username\":";
      append_json_string(arr, t.name);
      arr += ",\"status\":\"";
      arr += status_of(t.to != nullptr);
      arr += "\"}";
    }
    arr += ']';
    e.status = std::move(arr);
  } else {
    e.status = status_of(targets.front().to != nullptr);
  }
  e.first_waiter = s.weak_from_this();
  e.first_request_id = std::move(r.request_id);
  rec.message_uuid = std::move(uuid);

  const bool persist = o.persist_accepted;
  if (!persist) {
    for (auto& t : targets) {
      if (t.to) deliver(*t.to, m, 0);
    }
    if (!any_dead) {
      finish_accept(e, rec.message_uuid);
      return;
    }
  }

  // The store's part. Sessions are named by weak pointers from here: the commit takes a while.
  struct pending {
    std::vector<target> targets;
    std::vector<std::weak_ptr<session>> to;
  };
  auto p = std::make_shared<pending>();
  p->to.reserve(targets.size());
  for (auto& t : targets) p->to.push_back(t.to ? t.to->weak_from_this() : std::weak_ptr<session>());
  p->targets = std::move(targets);
  // The dedupe entry outlives the commit: an entry is only forgotten once done.
  dedupe_entry* entry = &e;

  // The pair is remembered in the same transaction: once message_accepted is out, a resend
  // is a duplicate also after a crash, until the dedupe window ends.
  auto job = [m, p, persist, status = e.status](database& db) {
    const auto now = now_ms();
    for (auto& t : p->targets) {
      if (t.to) {
        if (persist) t.seq = db.journal(m->rec, t.name);
      } else {
        db.dead_letter_new(m->rec, t.name, t.reason, now);
      }
    }
    db.remember_accepted(m->rec.sender, m->rec.message_uuid, m->rec.accepted_at, status);
  };
  auto done = [this, m, p, persist, entry](std::exception_ptr err) {
    if (err) {
      // Nothing of it was committed: the sender hears internal_error, never message_accepted,
      // and the same uuid may be sent again.
      auto& e = *entry;
      e.failed = true;
      e.done = true;
      auto notify_failed = [&](const std::weak_ptr<session>& w, const std::string& request_id) {
        if (auto s = w.lock(); s && !s->closed) {
          s->push(make_error_frame({errc::internal_error,
                                    "The broker could not store the message; it was not accepted: send it again.",
                                    request_id, m->rec.message_uuid}));
        }
      };
      notify_failed(e.first_waiter, e.first_request_id);
      for (auto& [w, request_id] : e.more_waiters) notify_failed(w, request_id);
      e.more_waiters.clear();
      return;
    }
    if (persist) {
      std::vector<failed_delivery> gone;
      for (std::size_t i = 0; i < p->targets.size(); ++i) {
        auto& t = p->targets[i];
        if (!t.to) continue;
        auto to = p->to[i].lock();
        if (to && !to->closed && !to->closing) {
          this->deliver(*to, m, t.seq);
        } else {
          gone.push_back({t.name, delivery{m, t.seq, 0, 1, m->rec.accepted_at}, false});
        }
      }
      if (!gone.empty()) this->dead_letter(std::move(gone), dead_letter_reason::recipient_disconnected);
    }
    this->finish_accept(*entry, m->rec.message_uuid);
  };
  submit(std::move(job), std::move(done), store::on_failure::fail, "accept");
}

void broker::impl::finish_accept(dedupe_entry& e, const std::string& uuid) {
  e.done = true;
  e.at = steady::now();
  if (auto s = e.first_waiter.lock(); s && !s->closed) {
    s->append([&](std::string& b) { e.append_accepted(b, uuid, false, e.first_request_id); });
  }
  e.first_waiter.reset();
  std::string().swap(e.first_request_id);
  for (auto& [w, request_id] : e.more_waiters) {
    if (auto s = w.lock(); s && !s->closed) {
      s->append([&](std::string& b) { e.append_accepted(b, uuid, true, request_id); });
    }
  }
  e.more_waiters.clear();
  e.more_waiters.shrink_to_fit();
}

void broker::impl::queue_flush(session& s) {
  to_flush.push_back(s.shared_from_this());
  if (flush_posted) return;
  flush_posted = true;
  asio::post(io, [self = shared_from_this()] {
    self->flush_posted = false;
    auto sessions = std::move(self->to_flush);
    self->to_flush.clear();
    for (auto& s : sessions) s->flush_now();
  });
}

void broker::impl::deliver(session& to, const message_ptr& m, std::int64_t seq) {
  // Behind the backlog, or behind what already waits for room in the window: order holds.
  if (to.draining || to.held_count() > 0 || to.window_full()) {
    to.held.emplace_back(m, seq);
    return;
  }
  send_live(to, m, seq);
}

void broker::impl::refill(session& to) {
  while (!to.draining && !to.closing && !to.closed && to.held_count() > 0 && !to.window_full()) {
    auto [m, seq] = std::move(to.held[to.held_next++]);
    send_live(to, m, seq);
  }
  if (to.held_next == to.held.size()) {
    to.held.clear();
    to.held_next = 0;
  } else if (to.held_next > 1024 && to.held_next > to.held.size() / 2) {
    to.held.erase(to.held.begin(), to.held.begin() + static_cast<std::ptrdiff_t>(to.held_next));
    to.held_next = 0;
  }
}

// After the burst of frames being handled: acknowledgements followed by log_out in one write
// (listen --count) free the window but get nothing more handed to them.
void broker::impl::refill_soon(session& to) {
  if (to.refill_posted || to.held_count() == 0) return;
  to.refill_posted = true;
  asio::post(io, [self = shared_from_this(), s = to.shared_from_this()] {
    s->refill_posted = false;
    self->refill(*s);
  });
}

void broker::impl::send_live(session& to, const message_ptr& m, std::int64_t seq) {
  if (m->fan_out) {
    // Serialized once; each recipient's buffer gets head + its name + tail.
    if (m->frame.head.empty()) m->frame = make_receive_frame(m->header());
    to.append([&](std::string& b) {
      b += m->frame.head;
      append_json_string(b, to.username);
      b += m->frame.tail;
    });
  } else {
    to.append([&](std::string& b) { append_live_frame(b, m->header(), to.username); });
  }
  register_in_flight(to, delivery{m, seq, 0, 1, now_ms()});
}

void broker::impl::register_in_flight(session& to, delivery d) {
  const std::uint64_t id = to.in_flight.add(std::move(d));
  ack_deadlines.push_back({saturating_add(steady::now(), ack_timeout()), to.weak_from_this(), id});
  arm_ack_timer();
}

void broker::impl::arm_ack_timer() {
  if (ack_timer_armed || ack_deadlines.empty() || (stopping && sessions.empty())) return;
  ack_timer_armed = true;
  ack_timer.expires_at(ack_deadlines.front().at);
  auto self = shared_from_this();
  ack_timer.async_wait([self](boost::system::error_code ec) {
    self->ack_timer_armed = false;
    if (ec) return;
    self->on_ack_timer();
  });
}

void broker::impl::on_ack_timer() {
  const auto now = steady::now();
  std::vector<failed_delivery> expired;
  while (!ack_deadlines.empty() && ack_deadlines.front().at <= now) {
    auto entry = std::move(ack_deadlines.front());
    ack_deadlines.pop_front();
    auto s = entry.s.lock();
    if (!s) continue;
    auto d = s->in_flight.take(entry.id);
    if (!d) continue;  // acknowledged in time
    if (d->dead_letter_id) {
      --s->redeliveries_in_flight;
      s->redelivery_room.wake();
    }
    expired.push_back({s->username, std::move(*d), true});
    refill_soon(*s);
  }
  if (!expired.empty()) dead_letter(std::move(expired), dead_letter_reason::ack_timeout);
  arm_ack_timer();
}

void broker::impl::dead_letter(std::vector<failed_delivery> failed, dead_letter_reason reason) {
  auto batch = std::make_shared<std::vector<failed_delivery>>(std::move(failed));
  auto parked = std::make_shared<counts_by_recipient>();
  const int max_attempts = static_cast<int>(o.max_delivery_attempts);
  auto job = [batch, parked, reason, max_attempts](database& db) {
    const auto now = now_ms();
    parked->clear();  // a retried job starts afresh
    for (auto& f : *batch) {
      if (f.d.dead_letter_id) {
        if (db.record_attempt(f.d.dead_letter_id, f.d.attempt, f.d.started, to_string(reason), now, max_attempts)) {
          parked->emplace_back(f.receiver, 1);
        }
      } else if (f.d.seq) {
        db.dead_letter_journaled(f.d.seq, reason, now, f.attempted);
      } else {
        db.dead_letter_new(f.d.msg->rec, f.receiver, reason, now);
      }
    }
  };
  auto done = [this, batch, parked, reason](std::exception_ptr err) {
    if (err) {
      spdlog::error("{} deliveries could not be moved to the Dead Letter Channel ({}); journaled ones are "
                    "recovered at the next start",
                    batch->size(), to_string(reason));
      return;
    }
    this->warn_letters(*parked, {});
    for (auto& f : *batch) {
      if (f.d.dead_letter_id) continue;  // already a dead letter: its sender heard so before
      this->notify_sender(*f.d.msg, [&](std::string& b) {
        append_dead_lettered_frame(b, f.d.msg->rec.message_uuid, f.receiver, to_string(reason));
      });
    }
  };
  // Retried until it commits: a delivery that left the session lives only here until then.
  submit(std::move(job), std::move(done), store::on_failure::retry, "move to the Dead Letter Channel");
}


void broker::impl::handle_ack(session& s, const request& r) {
  std::vector<std::int64_t> seqs;
  std::vector<delivery> redelivered;
  auto late = std::make_shared<std::vector<std::string>>();
  const sys_ms now = now_ms();
  std::string delivered_at;
  for (const std::string& uuid : r.ack_uuids) {
    auto taken = s.in_flight.take(uuid, r.ack_sender);
    if (!taken) {
      late->push_back(uuid);
      continue;
    }
    delivery d = std::move(*taken);
    if (delivered_at.empty()) delivered_at = format_iso8601(now);
    notify_sender(*d.msg, [&](std::string& b) { append_delivered_frame(b, uuid, s.username, delivered_at); });
    if (d.dead_letter_id) {
      --s.redeliveries_in_flight;
      s.redelivery_room.wake();
      redelivered.push_back(std::move(d));
    } else if (d.seq) {
      seqs.push_back(d.seq);
    }
  }
  refill_soon(s);
  if (seqs.empty() && redelivered.empty() && late->empty()) return;
  const int max_attempts = static_cast<int>(o.max_delivery_attempts);
  auto late_senders = std::make_shared<std::vector<std::vector<std::string>>>();
  auto job = [seqs = std::move(seqs), redelivered = std::move(redelivered), late, late_senders,
              receiver = s.username, ack_sender = r.ack_sender, now, max_attempts](database& db) {
    late_senders->clear();  // a retried job starts afresh
    for (auto seq : seqs) db.acknowledge(seq);
    for (auto& d : redelivered) db.record_attempt(d.dead_letter_id, d.attempt, d.started, "acknowledged", now, max_attempts);
    for (auto& uuid : *late) late_senders->push_back(db.mark_delivered(receiver, uuid, ack_sender, now));
  };
  auto done = [this, late, late_senders, receiver = s.username, now](std::exception_ptr err) {
    if (err) {
      spdlog::error("acknowledgements from '{}' could not be stored; the messages stay journaled", receiver);
      return;
    }
    const std::string at = format_iso8601(now);
    for (std::size_t i = 0; i < late_senders->size(); ++i) {
      for (auto& sender : (*late_senders)[i]) {
        this->notify_all_sessions(sender, [&](std::string& b) { append_delivered_frame(b, (*late)[i], receiver, at); });
      }
    }
  };
  // Retried until it commits: an acknowledgement lost here would deliver the message again.
  submit(std::move(job), std::move(done), store::on_failure::retry, "acknowledgement");
}

asio::awaitable<void> broker::impl::redeliver(std::shared_ptr<session> s) {
  std::int64_t after = 0;
  const std::string name = s->username;
  for (;;) {
    auto page_of = [name, after](database& db) { return db.pending_for(name, after, redelivery_page); };
    auto page = co_await st.run(std::move(page_of));
    if (s->closed || s->closing) co_return;
    if (page.empty()) break;
    after = page.back().seq;
    for (auto& letter : page) {
      // Pace: a bounded number unacknowledged and a bounded amount unsent, so a large backlog
      // neither floods memory nor starves the session's live traffic.
      while (!s->closed && !s->closing &&
             (s->redeliveries_in_flight >= redelivery_window || s->window_full() ||
              s->out.bytes() > o.max_outbound_bytes / 2)) {
        co_await s->redelivery_room.sleep_until(steady::time_point::max());
      }
      if (s->closed || s->closing) co_return;
      auto m = std::make_shared<accepted_message>();
      m->rec.message_uuid = std::move(letter.message_uuid);
      m->rec.sender = std::move(letter.sender);
      m->rec.ch = letter.ch;
      m->rec.group_name = std::move(letter.group_name);
      m->rec.body = std::move(letter.body);
      std::copy_n(letter.accepted_at.begin(), std::min(letter.accepted_at.size(), m->sent_at.size()), m->sent_at.begin());
      const int attempt = letter.attempts + 1;
      s->push(make_redelivery_frame(m->header(), s->username, attempt, to_string(letter.reason)));
      ++s->redeliveries_in_flight;
      register_in_flight(*s, delivery{m, 0, letter.id, attempt, now_ms()});
    }
  }
  // The backlog is out: what arrived meanwhile follows, in the order it was accepted.
  s->draining = false;
  refill(*s);
  spdlog::info("session {}: redelivery to '{}' done", s->id, s->username);
}

asio::awaitable<void> broker::impl::handle_group(std::shared_ptr<session> s, request r) {
  const std::string name = r.group_name;
  const std::string user = s->username;
  auto g = groups.find(name);
  bool ok = true;
  try {
    if (r.k == kind::create_group) {
      if (g != groups.end()) {
        send_error(*s, errc::invalid_field, "The group '" + name + "' exists already; use join_group to enter it.", &r);
        co_return;
      }
      auto members = r.members;
      auto create = [name, user, members](database& db) { return db.create_group(name, user, members, now_ms()); };
      ok = co_await st.run(std::move(create));
      if (ok) {
        auto& set = groups[name];
        set.insert(user);
        set.insert(r.members.begin(), r.members.end());
      }
    } else if (r.k == kind::join_group) {
      if (g == groups.end()) {
        send_error(*s, errc::unknown_group, "There is no group '" + name + "'; create it with create_group.", &r);
        co_return;
      }
      auto join = [name, user](database& db) { return db.join_group(name, user, now_ms()); };
      ok = co_await st.run(std::move(join));
      if (ok) groups[name].insert(user);
    } else {
      if (g == groups.end()) {
        send_error(*s, errc::unknown_group, "There is no group '" + name + "'; check get_group_list.", &r);
        co_return;
      }
      if (!g->second.count(user)) {
        send_error(*s, errc::not_group_member, "You are not a member of '" + name + "', so you can not leave it.", &r);
        co_return;
      }
      auto leave = [name, user](database& db) { return db.leave_group(name, user); };
      ok = co_await st.run(std::move(leave));
      if (ok) {
        auto it = groups.find(name);
        if (it != groups.end()) {
          it->second.erase(user);
          if (it->second.empty()) groups.erase(it);
        }
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("group change by '{}' failed: {}", user, e.what());
    if (!s->closed) send_error(*s, errc::internal_error, "The broker could not store the group change; try again.", &r);
    co_return;
  }
  if (s->closed) co_return;
  if (!ok) {
    send_error(*s,
               r.k == kind::create_group ? errc::invalid_field : errc::unknown_group,
               r.k == kind::create_group ? "The group '" + name + "' exists already; use join_group to enter it."
                                         : "There is no group '" + name + "'.",
               &r);
    co_return;
  }
  json::object c;
  c["group_name"] = name;
  json::array members;
  if (auto it = groups.find(name); it != groups.end()) {
    for (auto& m : it->second) members.emplace_back(m);
  }
  c["group_members"] = std::move(members);
  if (!r.request_id.empty()) c["request_id"] = r.request_id;
  s->push(make_frame(kind::acknowledge_group, c));
}

void broker::impl::handle_group_list(session& s, const request& r) {
  json::array list;
  for (auto& [name, members] : groups) {
    json::object g;
    g["group_name"] = name;
    json::array m;
    for (auto& member : members) m.emplace_back(member);
    g["group_members"] = std::move(m);
    list.push_back(std::move(g));
  }
  json::object c;
  c["groups"] = std::move(list);
  if (!r.request_id.empty()) c["request_id"] = r.request_id;
  s.push(make_frame(kind::group_list, c));
}

// ------------------------------------------------------------------------------------------

broker::broker(asio::io_context& io, const broker_options& o, store& s) : impl_(std::make_shared<impl>(io, o, s)) {}

broker::~broker() {
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->udp_socket.close(ignored);
  impl_->ack_timer.cancel();
  impl_->sweep_timer.cancel();
  impl_->expiry_timer.cancel();
  impl_->presence_timer.cancel();
  impl_->warnings_timer.cancel();
  for (auto& [id, s] : impl_->sessions) s->socket.close(ignored);
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
  apply("max-frame-bytes", o.max_frame_bytes, fresh.max_frame_bytes);  // new connections
  apply("max-message-bytes", o.max_message_bytes, fresh.max_message_bytes);
  apply("max-outbound-bytes", o.max_outbound_bytes, fresh.max_outbound_bytes);
  apply("max-delivery-attempts", o.max_delivery_attempts, fresh.max_delivery_attempts);
  apply("dead-letter-ttl-ms", o.dead_letter_ttl_ms, fresh.dead_letter_ttl_ms);
  apply("dedupe-window-ms", o.dedupe_window_ms, fresh.dedupe_window_ms);
  apply("log-level", o.log_level, fresh.log_level);
  impl_->decoder.set_max_message_bytes(o.max_message_bytes);
  restart_only("listen-address", o.listen_address, fresh.listen_address);
  restart_only("port", o.port, fresh.port);
  restart_only("discovery", o.discovery, fresh.discovery);
  restart_only("discovery-group", o.discovery_group, fresh.discovery_group);
  restart_only("discovery-port", o.discovery_port, fresh.discovery_port);
  restart_only("discovery-interface", o.discovery_interface, fresh.discovery_interface);
  restart_only("advertise-address", o.advertise_address, fresh.advertise_address);
  restart_only("database", o.database, fresh.database);
  restart_only("broker-name", o.broker_name, fresh.broker_name);
  restart_only("persist-accepted", o.persist_accepted, fresh.persist_accepted);
  restart_only("sqlite-synchronous", o.sqlite_synchronous, fresh.sqlite_synchronous);
  return changes;
}

void broker::start() { impl_->start(); }
void broker::stop(std::function<void()> done) { impl_->stop(std::move(done)); }
std::uint16_t broker::port() const { return impl_->acceptor.local_endpoint().port(); }
std::uint16_t broker::discovery_port() const {
  return impl_->udp_socket.is_open() ? impl_->udp_socket.local_endpoint().port() : 0;
}

broker_status broker::status() const {
  broker_status st;
  st.connections = impl_->sessions.size();
  st.online = impl_->online.size();
  for (auto& [id, s] : impl_->sessions) st.in_flight += s->in_flight.size();
  return st;
}

}  // namespace ma
