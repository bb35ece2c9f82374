#include "message_agent/client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <deque>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "core/encode.hpp"
#include "core/framer.hpp"
#include "core/frames.hpp"
#include "core/utf8.hpp"
#include "core/uuid.hpp"

namespace ma::agent {

namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::size_t max_frame_bytes = 4 * 1024 * 1024;
constexpr std::size_t remembered_messages = 100'000;

// A one-shot completion that resumes its coroutine on the coroutine's own executor. The first
// complete() wins; later ones (a timeout after the answer, say) do nothing.
template <class T>
struct waiter {
  std::function<void(std::exception_ptr, T)> fn;
  std::optional<asio::steady_timer> timer;
  bool done = false;

  void complete(std::exception_ptr e, T v) {
    if (done) return;
    done = true;
    if (timer) timer->cancel();
    auto f = std::move(fn);
    f(e, std::move(v));
  }
};
template <class T>
using waiter_ptr = std::shared_ptr<waiter<T>>;

// An awaitable that registers a waiter with reg(waiter) and completes when the waiter does.
// Not a coroutine itself, and callers keep the returned awaitable in a named variable before
// co_await: g++ 12 destroys lambda temporaries in a co_await expression twice.
template <class T, class Register>
auto make_async(Register reg) {
  return asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr, T)>(
      [reg = std::move(reg)](auto handler) mutable {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        auto w = std::make_shared<waiter<T>>();
        auto work = std::make_shared<asio::executor_work_guard<asio::associated_executor_t<decltype(handler)>>>(
            asio::make_work_guard(*h));
        w->fn = [h, work](std::exception_ptr e, T v) {
          asio::post(work->get_executor(), [h, work, e, v = std::move(v)]() mutable {
            work->reset();
            std::move(*h)(e, std::move(v));
          });
        };
        reg(w);
      },
      asio::use_awaitable);
}

// Items for whoever waits for them (the first waiter that has not timed out), or kept, at most
// cap of them, until somebody asks.
template <class T>
struct mailbox {
  std::deque<T> items;
  std::deque<waiter_ptr<std::optional<T>>> waiters;
  std::size_t cap = SIZE_MAX;

  void put(T v) {
    while (!waiters.empty()) {
      auto w = std::move(waiters.front());
      waiters.pop_front();
      if (!w->done) return w->complete(nullptr, std::move(v));
    }
    items.push_back(std::move(v));
    if (items.size() > cap) items.pop_front();
  }
  // Hands w the oldest item; false if there is none.
  bool take(const waiter_ptr<std::optional<T>>& w) {
    if (items.empty()) return false;
    auto v = std::move(items.front());
    items.pop_front();
    w->complete(nullptr, std::move(v));
    return true;
  }
  void wait(waiter_ptr<std::optional<T>> w) {
    std::erase_if(waiters, [](const auto& old) { return old->done; });
    waiters.push_back(std::move(w));
  }
  void fail(std::exception_ptr e) {
    auto ws = std::move(waiters);
    waiters.clear();
    for (auto& w : ws) w->complete(e, {});
  }
};

std::exception_ptr closed_error() { return std::make_exception_ptr(connection_error("The client is closed.")); }

std::vector<std::string> strings_of(const json::value* v) {
  std::vector<std::string> out;
  if (v && v->is_array()) {
    for (auto& s : v->as_array()) {
      if (s.is_string()) out.emplace_back(s.as_string());
    }
  }
  return out;
}

std::string string_of(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

group_info group_of(const json::object& o) {
  return {string_of(o, "group_name"), strings_of(o.if_contains("group_members"))};
}

}  // namespace

struct client::impl : std::enable_shared_from_this<client::impl> {
  impl(asio::any_io_executor ex, settings s) : ex(ex), s(std::move(s)), wake(ex), framer(max_frame_bytes) {}

  asio::any_io_executor ex;
  settings s;
  std::optional<tcp::socket> sock;
  // With settings::tls: the context (made once) and the stream over sock, per connection.
  std::unique_ptr<asio::ssl::context> tls_context;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  asio::steady_timer wake;
  line_framer framer;
  std::deque<std::string> out;

  bool logged_in = false;
  bool closed = false;
  std::exception_ptr ended;  // the broker's error that ended the client (end_for_good)
  bool ever_logged_in = false;
  // The broker connected to (or tried next): 0 is settings::host:port, the rest the fallbacks.
  std::size_t current = 0;
  const std::string& host() const { return current == 0 ? s.host : s.fallback_brokers[current - 1].first; }
  std::uint16_t port() const { return current == 0 ? s.port : s.fallback_brokers[current - 1].second; }
  std::function<void(bool)> connection_watcher;
  void say(log_level level, const std::string& line) const {
    if (s.log) s.log(level, line);
  }
  login_info info;
  std::uint64_t reconnect_count = 0;
  std::uint64_t next_id = 0;
  std::string login_request_id;
  waiter_ptr<login_info> connect_waiter;

  std::unordered_map<std::string, waiter_ptr<json::object>> requests;
  struct pending_send {
    std::string request_id;
    std::string frame;
    waiter_ptr<json::object> w;
  };
  std::deque<pending_send> sends;  // not yet accepted, in the order sent

  std::unordered_multimap<std::string, waiter_ptr<std::optional<delivery_report>>> delivered_waiters;
  std::unordered_map<std::string, delivery_report> delivered_seen;
  std::deque<std::string> delivered_order;

  mailbox<message> inbox;
  mailbox<presence_event> presence_box{.items = {}, .waiters = {}, .cap = 10'000};

  std::unordered_set<std::string> surfaced;  // sender + '\n' + uuid of messages handed out
  std::deque<std::string> surfaced_order;

  std::string new_request_id() { return "c" + std::to_string(++next_id); }

  void push(std::string frame) {
    if (!sock) return;
    out.push_back(std::move(frame));
    wake.cancel_one();
  }

  // --- the connection --------------------------------------------------------------------

  // TLS 1.2 or later over the connected socket, the broker's certificate checked against the CA
  // and host. Throws boost::system::system_error (the connect's catch turns it into a
  // connection_error).
  asio::awaitable<void> shake_hands() {
    namespace ssl = asio::ssl;
    if (!tls_context) {
      auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
      ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      if (s.tls_ca.empty()) {
        ctx->set_default_verify_paths();
      } else {
        ctx->load_verify_file(s.tls_ca);
      }
      if (!s.tls_cert.empty()) ctx->use_certificate_chain_file(s.tls_cert);
      if (!s.tls_key.empty()) ctx->use_private_key_file(s.tls_key, ssl::context::pem);
      ctx->set_verify_mode(ssl::verify_peer);
      tls_context = std::move(ctx);
    }
    tls = std::make_unique<ssl::stream<tcp::socket&>>(*sock, *tls_context);
    tls->set_verify_callback(ssl::host_name_verification(host()));
    boost::system::error_code not_ip;
    asio::ip::make_address(host(), not_ip);
    if (not_ip) SSL_set_tlsext_host_name(tls->native_handle(), host().c_str());  // SNI names hosts, not addresses
    co_await tls->async_handshake(ssl::stream_base::client, asio::use_awaitable);
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    auto backoff = s.backoff_min;
    for (;;) {
      if (closed) co_return;
      bool connected = false;
      // Every broker once, from the current one on; the first that answers is the current one.
      const std::size_t brokers = 1 + s.fallback_brokers.size();
      for (std::size_t tried = 0; tried < brokers && !connected; ++tried) {
        try {
          tcp::resolver resolver(ex);
          auto endpoints = co_await resolver.async_resolve(host(), std::to_string(port()), asio::use_awaitable);
          sock.emplace(ex);
          co_await asio::async_connect(*sock, endpoints, asio::use_awaitable);
          sock->set_option(tcp::no_delay(true));
          if (s.tls) co_await shake_hands();
          connected = true;
        } catch (const boost::system::system_error& e) {
          tls.reset();
          sock.reset();
          if (tried + 1 < brokers) {
            current = (current + 1) % brokers;
            continue;
          }
          if (!ever_logged_in) {
            const bool tls_failed = s.tls && e.code().category() == asio::error::get_ssl_category();
            const std::string where = host() + ":" + std::to_string(port()) +
                                      (brokers > 1 ? " (nor at the " + std::to_string(brokers - 1) +
                                                     (brokers == 2 ? " other broker given)" : " other brokers given)")
                                               : "");
            if (connect_waiter) {
              connect_waiter->complete(
                  std::make_exception_ptr(connection_error(
                      tls_failed ? "The TLS handshake with the broker at " + where + " failed (" +
                                       e.code().message() + "): check --tls-ca, the port (its TLS one) "
                                       "and the name the broker's certificate carries."
                                 : "Cannot connect to the broker at " + where + " (" + e.code().message() +
                                       "): is it running? Check --broker.")),
                  {});
            }
            co_return;
          }
        }
      }
      if (connected) {
        framer = line_framer(max_frame_bytes);
        out.clear();
        login_request_id = new_request_id();
        json::object c;
        c["sender_username"] = s.username;
        if (s.password) c["password"] = *s.password;
        c["request_id"] = login_request_id;
        if (s.heartbeat_interval_ms) c["heartbeat_interval_ms"] = *s.heartbeat_interval_ms;
        if (s.send_only) c["send_only"] = true;
        if (s.receive_window) c["receive_window"] = *s.receive_window;
        out.push_back(make_frame(kind::log_in, c));
        co_await (reader() || writer() || heartbeats());
        const bool was_logged_in = logged_in;
        logged_in = false;
        boost::system::error_code ignored;
        tls.reset();
        if (sock) sock->close(ignored);
        sock.reset();
        // Requests other than sends can not be answered by a new connection.
        auto lost = std::move(requests);
        requests.clear();
        for (auto& [id, w] : lost) {
          w->complete(std::make_exception_ptr(connection_error("The connection to the broker dropped.")), {});
        }
        if (was_logged_in) backoff = s.backoff_min;
        current = (current + 1) % brokers;  // its broker may be gone: another one first
      }
      if (closed) co_return;
      if (!s.reconnect || !ever_logged_in) {
        if (connect_waiter && !ever_logged_in) {
          connect_waiter->complete(std::make_exception_ptr(connection_error("The broker closed the connection.")), {});
        }
        fail_all(std::make_exception_ptr(connection_error("The connection to the broker dropped.")));
        closed = true;
        co_return;
      }
      if (connection_watcher) connection_watcher(false);
      say(log_level::info, "connection lost; reconnecting to " + host() + ":" + std::to_string(port()) + " in " +
                               std::to_string(backoff.count()) + " ms");
      asio::steady_timer pause(ex, backoff);
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      backoff = std::min(backoff * 2, s.backoff_max);
    }
  }

  asio::awaitable<void> reader() {
    for (;;) {
      auto space = framer.prepare();
      // (Not a conditional expression: g++ 12 evaluates both co_awaits of one.)
      boost::system::error_code ec;
      std::size_t n = 0;
      if (tls) {
        std::tie(ec, n) = co_await tls->async_read_some(asio::buffer(space.data(), space.size()),
                                                        asio::as_tuple(asio::use_awaitable));
      } else {
        std::tie(ec, n) = co_await sock->async_read_some(asio::buffer(space.data(), space.size()),
                                                         asio::as_tuple(asio::use_awaitable));
      }
      if (ec) co_return;
      framer.commit(n);
      for (;;) {
        auto r = framer.next();
        if (r.st == line_framer::status::need_more) break;
        if (r.st == line_framer::status::too_large) co_return;
        handle_frame(r.line);
      }
    }
  }

  asio::awaitable<void> writer() {
    std::vector<asio::const_buffer> buffers;
    for (;;) {
      if (out.empty()) {
        wake.expires_at(steady::time_point::max());
        co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      buffers.clear();
      for (auto& f : out) {
        if (buffers.size() == 256) break;
        buffers.push_back(asio::buffer(f));
      }
      const std::size_t n = buffers.size();
      boost::system::error_code ec;
      if (tls) {
        std::tie(ec, std::ignore) = co_await asio::async_write(*tls, buffers, asio::as_tuple(asio::use_awaitable));
      } else {
        std::tie(ec, std::ignore) = co_await asio::async_write(*sock, buffers, asio::as_tuple(asio::use_awaitable));
      }
      if (ec) co_return;
      out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n));
    }
  }

  asio::awaitable<void> heartbeats() {
    asio::steady_timer t(ex);
    for (;;) {
      if (!logged_in) {
        // The interval is granted at login; look again shortly.
        t.expires_after(20ms);
        co_await t.async_wait(asio::use_awaitable);
        continue;
      }
      // A little early, so a heartbeat is never the one that arrives too late.
      t.expires_after(std::chrono::milliseconds(info.heartbeat_interval_ms) * 3 / 4);
      co_await t.async_wait(asio::use_awaitable);
      if (logged_in) push("{\"message_id\":\"heartbeat\",\"message_content\":{}}\n");
    }
  }

  // --- frames from the broker --------------------------------------------------------------

  void handle_frame(std::string_view line) {
    boost::system::error_code ec;
    auto v = json::parse(line, ec);
    if (ec || !v.is_object()) {
      say(log_level::warn, "the broker sent a line that is not a JSON object");
      return;
    }
    auto& env = v.as_object();
    const std::string id = string_of(env, "message_id");
    auto* cv = env.if_contains("message_content");
    if (!cv || !cv->is_object()) return;
    json::object& c = cv->as_object();
    const std::string request_id = string_of(c, "request_id");

    if (id == "receive_message") return on_message(c);
    if (id == "acknowledge_log_in" && request_id == login_request_id) return on_logged_in(c);
    if (id == "message_accepted") {
      on_accepted(request_id, c, nullptr);
      return;
    }
    if (id == "message_delivered") return on_delivered(c);
    if (id == "update_user_set") return on_presence(c);
    if (id == "message_dead_lettered") {
      say(log_level::debug, string_of(c, "message_uuid") + " to " + string_of(c, "receiver_username") +
                                " went to the Dead Letter Channel (" + string_of(c, "reason") + ")");
      return on_report(string_of(c, "message_uuid"), {string_of(c, "receiver_username"), {}, string_of(c, "reason")});
    }
    if (id == "error") {
      auto err = std::make_exception_ptr(broker_error(string_of(c, "error_code"), string_of(c, "error_text")));
      if (!request_id.empty() && request_id == login_request_id) return on_login_refused(c, err);
      if (!request_id.empty()) {
        if (on_accepted(request_id, c, err)) return;
        if (auto it = requests.find(request_id); it != requests.end()) {
          auto w = it->second;
          requests.erase(it);
          w->complete(err, {});
          return;
        }
      }
      if (string_of(c, "error_code") == "session_taken_over") return end_for_good(err);
      say(log_level::warn, "the broker says " + string_of(c, "error_code") + ": " + string_of(c, "error_text"));
      return;
    }
    if (!request_id.empty()) {
      if (auto it = requests.find(request_id); it != requests.end()) {
        auto w = it->second;
        requests.erase(it);
        w->complete(nullptr, std::move(c));
      }
    }
  }

  void on_logged_in(const json::object& c) {
    logged_in = true;
    info.broker_name = string_of(c, "broker_name");
    info.user_list = strings_of(c.if_contains("user_list"));
    info.heartbeat_interval_ms = 10'000;
    if (auto* v = c.if_contains("heartbeat_interval_ms"); v && v->is_number()) info.heartbeat_interval_ms = v->to_number<std::uint64_t>();
    if (auto* v = c.if_contains("ack_timeout_ms"); v && v->is_number()) info.ack_timeout_ms = v->to_number<std::uint64_t>();
    if (auto* v = c.if_contains("pending_dead_letters"); v && v->is_number()) info.pending_dead_letters = v->to_number<std::int64_t>();
    const bool again = ever_logged_in;
    if (again) ++reconnect_count;
    ever_logged_in = true;
    // What the broker had not accepted goes again, in order, with the same uuids.
    for (auto& p : sends) push(p.frame);
    if (connect_waiter) {
      auto w = std::move(connect_waiter);
      connect_waiter.reset();
      w->complete(nullptr, info);
    }
    if (again && connection_watcher) connection_watcher(true);
  }

  // Another connection took the name over, or the password is no longer right: reconnecting
  // would take it back (or guess), so the client ends; every waiting call gets err.
  void end_for_good(std::exception_ptr err) {
    say(log_level::warn, "the broker ended this session for good: " + [&] {
      try {
        std::rethrow_exception(err);
      } catch (const std::exception& e) {
        return std::string(e.what());
      }
    }());
    closed = true;
    ended = err;
    fail_all(err);
    boost::system::error_code ignored;
    if (sock) sock->close(ignored);
  }
  // What a call on a closed client fails with: why the broker ended it, if it did.
  std::exception_ptr closed_reason() const { return ended ? ended : closed_error(); }

  void on_login_refused(const json::object& c, std::exception_ptr err) {
    if (ever_logged_in && string_of(c, "error_code") == "auth_failed") return end_for_good(err);
    if (!ever_logged_in && connect_waiter) {
      auto w = std::move(connect_waiter);
      connect_waiter.reset();
      closed = true;
      w->complete(err, {});
    } else {
      // Reconnecting: the broker may not have noticed the old connection drop yet.
      say(log_level::info, "log_in again refused (" + string_of(c, "error_code") + "); retrying");
    }
    boost::system::error_code ignored;
    if (sock) sock->close(ignored);
  }

  // True if request_id belonged to a send.
  bool on_accepted(const std::string& request_id, json::object& c, std::exception_ptr err) {
    for (auto it = sends.begin(); it != sends.end(); ++it) {
      if (it->request_id != request_id) continue;
      auto w = it->w;
      sends.erase(it);
      w->complete(err, std::move(c));
      return true;
    }
    return false;
  }

  void on_delivered(const json::object& c) {
    on_report(string_of(c, "message_uuid"), {string_of(c, "receiver_username"), string_of(c, "delivered_at"), {}});
  }

  void on_report(const std::string& uuid, const delivery_report& r) {
    auto range = delivered_waiters.equal_range(uuid);
    if (range.first != range.second) {
      std::vector<waiter_ptr<std::optional<delivery_report>>> ws;
      for (auto it = range.first; it != range.second; ++it) ws.push_back(it->second);
      delivered_waiters.erase(uuid);
      for (auto& w : ws) w->complete(nullptr, r);
      return;
    }
    if (delivered_seen.emplace(uuid, r).second) {
      delivered_order.push_back(uuid);
      if (delivered_order.size() > remembered_messages) {
        delivered_seen.erase(delivered_order.front());
        delivered_order.pop_front();
      }
    }
  }

  void on_message(const json::object& c) {
    message m;
    m.message_uuid = string_of(c, "message_uuid");
    m.sender = string_of(c, "sender_username");
    m.receiver = string_of(c, "receiver_username");
    m.channel = string_of(c, "channel");
    m.group_name = string_of(c, "group_name");
    m.sent_at = string_of(c, "sent_at");
    if (auto* t = c.if_contains("message_text"); t && t->is_string()) m.text = std::string(t->as_string());
    if (auto* p = c.if_contains("payload")) m.payload_json = json::serialize(*p);
    if (auto* r = c.if_contains("redelivery"); r && r->is_bool()) m.redelivery = r->as_bool();
    if (auto* a = c.if_contains("attempt"); a && a->is_int64()) m.attempt = static_cast<int>(a->as_int64());
    m.dead_letter_reason = string_of(c, "dead_letter_reason");
    m.content_json = json::serialize(c);
    const std::string key = m.sender + '\n' + m.message_uuid;
    if (surfaced.count(key)) {
      // Handed out before a reconnect: acknowledge it again, do not hand it out twice.
      acknowledge(m);
      return;
    }
    surfaced.insert(key);
    surfaced_order.push_back(key);
    if (surfaced_order.size() > remembered_messages) {
      surfaced.erase(surfaced_order.front());
      surfaced_order.pop_front();
    }
    inbox.put(std::move(m));
  }

  void on_presence(const json::object& c) {
    presence_event p{strings_of(c.if_contains("joined")), strings_of(c.if_contains("left")),
                     strings_of(c.if_contains("user_list"))};
    presence_box.put(std::move(p));
  }

  void acknowledge(const message& m) {
    if (!logged_in) return;  // the broker redelivers it after the reconnect, and it is acknowledged then
    std::string f;
    append_ack_frame(f, m.message_uuid, m.sender);
    push(std::move(f));
  }

  void fail_all(std::exception_ptr e) {
    auto reqs = std::move(requests);
    requests.clear();
    for (auto& [id, w] : reqs) w->complete(e, {});
    auto ss = std::move(sends);
    sends.clear();
    for (auto& p : ss) p.w->complete(e, {});
    auto dw = std::move(delivered_waiters);
    delivered_waiters.clear();
    for (auto& [id, w] : dw) w->complete(e, {});
    inbox.fail(e);
    presence_box.fail(e);
  }

  // The next item of box, or nothing after timeout.
  template <class T>
  auto next_from(mailbox<T>& box, std::chrono::milliseconds timeout) {
    return make_async<std::optional<T>>([self = shared_from_this(), &box, timeout](waiter_ptr<std::optional<T>> w) {
      if (box.take(w)) return;
      if (self->closed) return w->complete(self->closed_reason(), {});
      box.wait(w);
      self->arm_timeout(w, timeout);
    });
  }

  // --- requests ----------------------------------------------------------------------------

  // After timeout, on_timeout(waiter&) completes w if nothing else did first; by default with
  // an empty result (nothing came).
  template <class T, class OnTimeout>
  void arm_timeout(const waiter_ptr<T>& w, std::chrono::milliseconds timeout, OnTimeout on_timeout) {
    w->timer.emplace(ex, timeout);
    std::weak_ptr<waiter<T>> weak = w;
    w->timer->async_wait([weak, on_timeout = std::move(on_timeout)](boost::system::error_code ec) mutable {
      if (ec) return;
      if (auto w = weak.lock(); w && !w->done) on_timeout(*w);
    });
  }
  template <class T>
  void arm_timeout(const waiter_ptr<T>& w, std::chrono::milliseconds timeout) {
    arm_timeout(w, timeout, [](waiter<T>& w) { w.complete(nullptr, T{}); });
  }

  // A request's answer that does not come in time fails it: a frame the broker could not
  // match to it (or a broker that stopped reading) must not leave the caller waiting forever.
  template <class T, class Forget>
  void arm_request_timeout(const waiter_ptr<T>& w, std::string what, Forget forget) {
    const std::string text = what + " within " + std::to_string(s.request_timeout.count()) + " ms.";
    arm_timeout(w, s.request_timeout, [text, forget = std::move(forget)](waiter<T>& w) mutable {
      forget();
      w.complete(std::make_exception_ptr(timeout_error(text)), {});
    });
  }

  auto request(kind k, json::object content) {
    auto self = shared_from_this();
    return make_async<json::object>([self, k, content = std::move(content)](waiter_ptr<json::object> w) mutable {
      if (self->closed || !self->logged_in) {
        w->complete(std::make_exception_ptr(connection_error("Not connected to the broker.")), {});
        return;
      }
      const std::string id = self->new_request_id();
      content["request_id"] = id;
      std::string frame = make_frame(k, content);
      if (auto e = utf8_error(frame, "The request")) return w->complete(e, {});  // checked before it is sent
      self->requests[id] = w;
      self->push(std::move(frame));
      std::weak_ptr<impl> weak = self;
      self->arm_request_timeout(w, "The broker did not answer " + std::string(to_string(k)), [weak, id] {
        if (auto me = weak.lock()) me->requests.erase(id);
      });
    });
  }

  auto send_message(kind k, json::object content, const outgoing& m) {
    auto self = shared_from_this();
    content["message_uuid"] = m.message_uuid.empty() ? make_message_uuid() : m.message_uuid;
    if (m.text) {
      check_utf8(*m.text, "The message text");
      content["message_text"] = *m.text;
    }
    if (m.payload_json) {
      boost::system::error_code ec;
      json::value payload = json::parse(*m.payload_json, ec);
      if (ec) throw invalid_argument("The payload is not JSON (" + ec.message() + "); nothing was sent.");
      content["payload"] = std::move(payload);
    }
    if (m.ttl_ms) content["ttl_ms"] = *m.ttl_ms;
    return make_async<json::object>([self, k, content = std::move(content)](waiter_ptr<json::object> w) mutable {
      if (self->closed) {
        w->complete(self->closed_reason(), {});
        return;
      }
      const std::string id = self->new_request_id();
      content["request_id"] = id;
      std::string frame = make_frame(k, content);
      if (auto e = utf8_error(frame, "The message")) return w->complete(e, {});  // names and uuids too
      if (self->logged_in) self->push(frame);  // else it goes at the next login
      self->sends.push_back({id, std::move(frame), w});
      std::weak_ptr<impl> weak = self;
      self->arm_request_timeout(w, "The broker did not answer " + std::string(to_string(k)), [weak, id] {
        auto me = weak.lock();
        if (!me) return;
        std::erase_if(me->sends, [&id](const pending_send& p) { return p.request_id == id; });
      });
    });
  }

  // invalid_argument if text is not UTF-8, else nullptr.
  static std::exception_ptr utf8_error(std::string_view text, const char* what) {
    const auto bad = first_invalid_utf8(text);
    if (!bad) return nullptr;
    return std::make_exception_ptr(
        invalid_argument(std::string(what) + " is not valid UTF-8 (at byte " + std::to_string(*bad) +
                         "); nothing was sent: send text as UTF-8, or binary data encoded (base64) in a payload."));
  }
  static void check_utf8(std::string_view text, const char* what) {
    if (auto e = utf8_error(text, what)) std::rethrow_exception(e);
  }
};

namespace {

send_result result_of(const json::object& c) {
  send_result r;
  r.message_uuid = string_of(c, "message_uuid");
  if (auto* d = c.if_contains("duplicate"); d && d->is_bool()) r.duplicate = d->as_bool();
  if (auto* rs = c.if_contains("recipients"); rs && rs->is_array()) {
    for (auto& x : rs->as_array()) {
      if (x.is_object()) r.recipients.push_back({string_of(x.as_object(), "receiver_username"), string_of(x.as_object(), "status")});
    }
  } else {
    r.recipients.push_back({"", string_of(c, "status")});
  }
  return r;
}

}  // namespace

client::client(asio::any_io_executor ex, settings s) : impl_(std::make_shared<impl>(ex, std::move(s))) {}

client::~client() {
  impl_->closed = true;
  boost::system::error_code ignored;
  if (impl_->sock) impl_->sock->close(ignored);
  impl_->wake.cancel();
}

asio::awaitable<login_info> client::connect() {
  auto self = impl_;
  auto op = make_async<login_info>([self](waiter_ptr<login_info> w) {
    self->connect_waiter = w;
    // No answer to log_in: the client gives up (and does not reconnect).
    std::weak_ptr<impl> weak = self;
    self->arm_request_timeout(w, "The broker at " + self->host() + ":" + std::to_string(self->port()) +
                                     " did not answer log_in", [weak] {
      auto me = weak.lock();
      if (!me) return;
      me->connect_waiter.reset();
      me->closed = true;
      boost::system::error_code ignored;
      if (me->sock) me->sock->close(ignored);
    });
    asio::co_spawn(self->ex, self->run(), [self](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        self->say(log_level::error, std::string("the connection loop stopped: ") + ex.what());
      }
      if (self->connect_waiter) self->connect_waiter->complete(e, {});
    });
  });
  co_return co_await std::move(op);
}

asio::awaitable<void> client::close() {
  auto self = impl_;
  if (self->closed) co_return;
  if (self->logged_in) {
    json::object c;
    auto op = self->request(kind::log_out, std::move(c));
    try {
      co_await std::move(op);
    } catch (const std::exception&) {
      // Closing anyway.
    }
  }
  self->closed = true;
  boost::system::error_code ignored;
  if (self->sock) self->sock->close(ignored);
  self->fail_all(closed_error());
}

asio::awaitable<send_result> client::send(std::string to, outgoing m) {
  json::object c;
  c["receiver_username"] = to;
  auto op = impl_->send_message(kind::send_message, std::move(c), m);
  co_return result_of(co_await std::move(op));
}

asio::awaitable<send_result> client::multicast(std::vector<std::string> to, outgoing m) {
  json::object c;
  json::array a;
  for (auto& t : to) a.emplace_back(t);
  c["receiver_usernames"] = std::move(a);
  auto op = impl_->send_message(kind::multicast_message, std::move(c), m);
  co_return result_of(co_await std::move(op));
}

asio::awaitable<send_result> client::broadcast(outgoing m) {
  json::object c;
  auto op = impl_->send_message(kind::broadcast_message, std::move(c), m);
  co_return result_of(co_await std::move(op));
}

asio::awaitable<send_result> client::group_send(std::string group, outgoing m) {
  json::object c;
  c["group_name"] = group;
  auto op = impl_->send_message(kind::group_message, std::move(c), m);
  co_return result_of(co_await std::move(op));
}

asio::awaitable<std::optional<delivery_report>> client::delivered(std::string message_uuid,
                                                                  std::chrono::milliseconds timeout) {
  auto self = impl_;
  auto op = make_async<std::optional<delivery_report>>([self, message_uuid, timeout](waiter_ptr<std::optional<delivery_report>> w) {
    if (auto it = self->delivered_seen.find(message_uuid); it != self->delivered_seen.end()) {
      w->complete(nullptr, it->second);
      return;
    }
    if (self->closed) {
      w->complete(self->closed_reason(), {});
      return;
    }
    self->delivered_waiters.emplace(message_uuid, w);
    self->arm_timeout(w, timeout);
  });
  co_return co_await std::move(op);
}

asio::awaitable<std::optional<message>> client::receive(std::chrono::milliseconds timeout) {
  auto op = impl_->next_from(impl_->inbox, timeout);
  co_return co_await std::move(op);
}

void client::acknowledge(const message& m) { impl_->acknowledge(m); }

void client::acknowledge(const std::vector<message>& ms) {
  if (ms.empty() || !impl_->logged_in) return;
  std::string f = "{\"message_id\":\"acknowledge_message\",\"message_content\":{\"message_uuids\":[";
  for (std::size_t i = 0; i < ms.size(); ++i) {
    if (i) f += ',';
    append_json_string(f, ms[i].message_uuid);
  }
  f += "]}}\n";
  impl_->push(std::move(f));
}

asio::awaitable<void> client::consume(std::function<void(const message&)> handler) {
  for (;;) {
    std::optional<message> m;
    try {
      m = co_await receive(std::chrono::hours(24));
    } catch (const connection_error&) {
      if (impl_->closed) co_return;
      throw;
    }
    if (!m) continue;
    handler(*m);
    acknowledge(*m);
  }
}

asio::awaitable<std::optional<presence_event>> client::next_presence(std::chrono::milliseconds timeout) {
  auto op = impl_->next_from(impl_->presence_box, timeout);
  co_return co_await std::move(op);
}

asio::awaitable<std::vector<std::string>> client::users() {
  json::object c;
  auto op = impl_->request(kind::get_user_list, std::move(c));
  auto r = co_await std::move(op);
  co_return strings_of(r.if_contains("user_list"));
}

asio::awaitable<group_info> client::create_group(std::string name, std::vector<std::string> members) {
  json::object c;
  c["group_name"] = name;
  json::array a;
  for (auto& m : members) a.emplace_back(m);
  c["group_members"] = std::move(a);
  auto op = impl_->request(kind::create_group, std::move(c));
  co_return group_of(co_await std::move(op));
}

asio::awaitable<group_info> client::join_group(std::string name) {
  json::object c;
  c["group_name"] = name;
  auto op = impl_->request(kind::join_group, std::move(c));
  co_return group_of(co_await std::move(op));
}

asio::awaitable<group_info> client::leave_group(std::string name) {
  json::object c;
  c["group_name"] = name;
  auto op = impl_->request(kind::leave_group, std::move(c));
  co_return group_of(co_await std::move(op));
}

asio::awaitable<std::vector<group_info>> client::groups() {
  json::object c;
  auto op = impl_->request(kind::get_group_list, std::move(c));
  auto r = co_await std::move(op);
  std::vector<group_info> out;
  if (auto* gs = r.if_contains("groups"); gs && gs->is_array()) {
    for (auto& g : gs->as_array()) {
      if (g.is_object()) out.push_back(group_of(g.as_object()));
    }
  }
  co_return out;
}

void client::on_connection(std::function<void(bool connected)> watcher) { impl_->connection_watcher = std::move(watcher); }

const login_info& client::login() const { return impl_->info; }
const std::string& client::username() const { return impl_->s.username; }
std::uint64_t client::reconnects() const { return impl_->reconnect_count; }

}  // namespace ma::agent
