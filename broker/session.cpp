#include "broker/session.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ssl/error.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "broker/metrics.hpp"
#include "broker/core/broker_core.hpp"

namespace ma {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// Plain operator new at the size asked for. Asio replaces std::allocator by its per-thread
// cache, which hands out any cached block large enough; an idle connection's wait keeps its
// block for as long as the connection idles, so it should be no larger than it needs.
template <class T>
struct exact_allocator {
  using value_type = T;
  exact_allocator() = default;
  template <class U>
  exact_allocator(const exact_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p); }
  template <class U>
  bool operator==(const exact_allocator<U>&) const noexcept { return true; }
};

// The outbox's gather list as an Asio buffer sequence, without a copy: it stays as it is while
// a write of it is at work (outbox::writing).
class gathered {
 public:
  using view = outbox::bytes_view;
  class iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using value_type = asio::const_buffer;
    using difference_type = std::ptrdiff_t;
    using pointer = const asio::const_buffer*;
    using reference = asio::const_buffer;
    iterator() = default;
    explicit iterator(const view* p) : p_(p) {}
    asio::const_buffer operator*() const { return {p_->data(), p_->size()}; }
    iterator& operator++() {
      ++p_;
      return *this;
    }
    iterator operator++(int) { return iterator(p_++); }
    iterator& operator--() {
      --p_;
      return *this;
    }
    iterator operator--(int) { return iterator(p_--); }
    bool operator==(const iterator&) const = default;

   private:
    const view* p_ = nullptr;
  };
  explicit gathered(const std::vector<view>& v) : begin_(v.data()), end_(v.data() + v.size()) {}
  iterator begin() const { return iterator(begin_); }
  iterator end() const { return iterator(end_); }

 private:
  const view* begin_;
  const view* end_;
};

// Read at most this much at once (the buffer is given back while the connection is idle). A
// streaming sender's read then holds some 150 messages of 100 bytes: W1's broker took about 6%
// less CPU than with 16 KiB, in fewer reads, writes and wake-ups (docs/performance.md, tenth
// round).
constexpr std::size_t read_chunk = 32 * 1024;
constexpr auto busy_gap = 100ms;          // data closer than this keeps the coroutine
constexpr auto park_after = 1s;           // of silence, before a busy coroutine parks
constexpr auto close_flush_limit = 2s;    // a closing connection that does not drain is closed
}  // namespace

moment moment_now() { return {steady::now(), now_ms()}; }

asio::awaitable<void> wake_point::sleep_until(steady_time deadline) {
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  timer_ = &timer;
  struct forget {
    asio::steady_timer*& t;
    ~forget() { t = nullptr; }
  } on_exit{timer_};
  co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
}

void wake_point::wake() {
  if (timer_) timer_->cancel();
}

session::session(session_host& host, socket_type socket, peer_id id, std::size_t max_frame_bytes,
                 std::shared_ptr<asio::ssl::context> tls, bool identity_from_certificate)
    : host_(host),
      socket_(std::move(socket)),
      framer_(max_frame_bytes, read_chunk),
      id_(id),
      identity_from_certificate_(identity_from_certificate) {
  boost::system::error_code ignored;
  if (tls) {
    tls_ = std::make_unique<tls_part>(socket_, std::move(tls));
  } else {
    socket_.non_blocking(true, ignored);  // for flush's direct writes; asynchronous operations are unaffected
  }
}

std::string session::remote_address() {
  boost::system::error_code ec;
  auto remote = socket_.remote_endpoint(ec);
  return ec ? std::string("?") : remote.address().to_string() + ":" + std::to_string(remote.port());
}

void session::start() {
  if (!tls_) return wait_for_data();
  handshaking_ = true;
  asio::co_spawn(socket_.get_executor(), handshake(),
                 [self = shared_from_this(), keep = host_.keep_alive()](std::exception_ptr e) {
                   if (e) self->ended();
                 });
}

// The TLS handshake, then reading as on plain TCP. A failed handshake (plaintext on the TLS
// port, a certificate the CA did not sign, a close by the login timeout) ends the session
// with nothing written: the peer can not read frames.
asio::awaitable<void> session::handshake() {
  auto [ec] = co_await tls_->stream.async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
  handshaking_ = false;
  if (ec || reading_ == read_state::closing || !socket_.is_open()) {
    spdlog::info("session {}: TLS handshake from {} failed: {}", id_, remote_address(),
                 ec ? ec.message() : std::string("closed meanwhile"));
    ended();
    co_return;
  }
  std::string name;
  if (identity_from_certificate_) {
    if (X509* cert = SSL_get1_peer_certificate(tls_->stream.native_handle())) {
      char cn[256] = {};
      if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0) name = cn;
      X509_free(cert);
    }
  }
  spdlog::debug("session {}: TLS established ({}){}", id_, SSL_get_version(tls_->stream.native_handle()),
                name.empty() ? std::string() : ", certificate of '" + name + "'");
  host_.tls_established(id_, name);
  flush();  // what the core queued meanwhile (an error) goes out now
  spawn();
}

// A read-side completion token that begin_close and park cancel.
auto session::until_closing() {
  return asio::bind_cancellation_slot(stop_reading_.slot(), asio::as_tuple(asio::use_awaitable));
}

// Waits for the next data without a coroutine; data, an error or begin_close start run(),
// which tells them apart.
//
// No cancellation slot: begin_close starts run() itself, and this callback, when the socket's
// close ends its wait, finds the session no longer idle (a slot would cost every idle
// connection an allocation). Its operation is allocated at its own size (exact_allocator).
// The coroutine's reads leave their cancellation handler in stop_reading_: it goes too.
void session::wait_for_data() {
  if (reading_ == read_state::closing) return spawn();
  reading_ = read_state::idle;
  stop_reading_.slot().clear();  // the last read's cancellation handler keeps its memory until cleared
  auto on_ready = [self = shared_from_this(), keep = host_.keep_alive()](boost::system::error_code) {
    if (self->reading_ == read_state::idle) self->spawn();
  };
  socket_.async_wait(tcp::socket::wait_read, asio::bind_allocator(exact_allocator<void>(), std::move(on_ready)));
}

void session::spawn() {
  asio::co_spawn(socket_.get_executor(), run(),
                 [self = shared_from_this(), keep = host_.keep_alive()](std::exception_ptr e, bool over) {
                   if (e) {
                     over = true;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       spdlog::error("session {}: ended by an error: {}", self->id_, ex.what());
                     }
                   }
                   if (over) self->ended();
                 });
}

// Returns true when the session is over (after finish, if it was closing), false when it
// parks: an idle session keeps no coroutine, only a callback waiting for data.
asio::awaitable<bool> session::run() {
  boost::system::error_code ec;
  bool filled = true;  // the socket is readable
  if (reading_ != read_state::closing) reading_ = read_state::reading;
  for (;;) {
    handle_buffered();
    if (reading_ == read_state::closing) break;
    if (reading_ == read_state::held) {
      co_await resumed_.sleep_until(steady_time::max());
      continue;
    }
    if (!filled && framer_.buffered() == 0 && !tls_) {
      framer_.release_if_idle();  // no read buffer while idle
      if (!busy_) {
        wait_for_data();
        co_return false;
      }
      reading_ = read_state::waiting;
      std::tie(ec) = co_await socket_.async_wait(tcp::socket::wait_read, until_closing());
      if (reading_ == read_state::parking && ec == asio::error::operation_aborted) {
        wait_for_data();
        co_return false;
      }
      if (reading_ == read_state::closing) break;
      reading_ = read_state::reading;
      if (ec) break;
    }
    auto space = framer_.prepare();
    std::size_t n = 0;
    // (Not a conditional expression: g++ 12 evaluates both co_awaits of one.)
    if (tls_) {
      std::tie(ec, n) = co_await tls_->stream.async_read_some(asio::buffer(space.data(), space.size()), until_closing());
    } else {
      std::tie(ec, n) = co_await socket_.async_read_some(asio::buffer(space.data(), space.size()), until_closing());
    }
    host_.traffic().bytes_in += n;
    if (ec == asio::ssl::error::stream_truncated) ec = asio::error::eof;  // a TLS peer that closed without close_notify
    if (ec == asio::error::eof && reading_ == read_state::reading) {
      // A half-close: the answers still due go out before the connection closes.
      reading_ = read_state::held;
      host_.core().finished_sending(id_, moment_now());
      while (reading_ != read_state::closing && socket_.is_open()) co_await resumed_.sleep_until(steady_time::max());
      break;
    }
    if (ec) {
      if (ec != asio::error::eof && ec != asio::error::operation_aborted) {
        spdlog::debug("session {}: read failed: {}", id_, ec.message());
      }
      break;
    }
    filled = n == space.size();
    framer_.commit(n);
    const auto now = steady::now();
    busy_ = now - last_read_ < busy_gap;
    last_read_ = now;
  }
  if (reading_ == read_state::closing) co_await finish();  // else the peer left or the socket failed
  co_return true;
}

void session::handle_buffered() {
  if (framer_.buffered() == 0) return;
  const moment now = moment_now();
  broker_core& core = host_.core();
  while (reading_ == read_state::reading) {
    auto r = framer_.next();
    if (r.st == line_framer::status::need_more) break;
    if (r.st == line_framer::status::too_large) {
      core.frame_too_large(id_, now);
      break;
    }
    core.frame_received(id_, r.line, now);
  }
}

// Closing: what is queued goes out, then the send side shuts down.
asio::awaitable<void> session::finish() {
  flush();
  while (writing_ == write_state::async && socket_.is_open()) co_await written_.sleep_until(steady_time::max());
  co_await shutdown_send();
}

// TLS sends close_notify first; its async_shutdown also waits for the peer's, which may never
// come: a timer closes the socket after a second, which ends it.
asio::awaitable<void> session::shutdown_send() {
  boost::system::error_code ignored;
  if (tls_ && socket_.is_open()) {
    asio::steady_timer limit(socket_.get_executor(), 1s);
    limit.async_wait([this, keep = shared_from_this()](boost::system::error_code ec) {
      if (!ec) close_socket();
    });
    co_await tls_->stream.async_shutdown(asio::as_tuple(asio::use_awaitable));
    limit.cancel();
  }
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
}

void session::hold() {
  if (reading_ == read_state::reading) reading_ = read_state::held;
}

void session::resume() {
  if (reading_ != read_state::held) return;
  reading_ = read_state::reading;
  resumed_.wake();
}

void session::begin_close() {
  if (handshaking_) close_socket();  // no frame can reach a peer that has not shaken hands
  if (reading_ == read_state::closing) return;
  const bool idle = reading_ == read_state::idle;
  reading_ = read_state::closing;
  closing_since_ = steady::now();
  stop_reading_.emit(asio::cancellation_type::terminal);  // a coroutine's wait or read
  resumed_.wake();
  if (idle) spawn();  // no coroutine: one starts to finish (the callback waiting for data ends with the socket)
}

void session::housekeeping(steady_time now) {
  if (reading_ == read_state::waiting && now - last_read_ > park_after) {
    reading_ = read_state::parking;
    stop_reading_.emit(asio::cancellation_type::terminal);
  }
  if (reading_ == read_state::closing && now - closing_since_ > close_flush_limit) close_socket();
}

void session::close_socket() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

// Writes what is queued with one non-blocking call, unless asynchronous writes are at work.
// What the socket does not take at once is left to write_rest.
void session::flush() {
  if (handshaking_) return;  // what is queued goes out after the handshake
  outbox* out = host_.core().outbox_to_flush(id_);
  if (!out || writing_ == write_state::async || out->empty() || !socket_.is_open()) return;
  if (tls_) {
    writing_ = write_state::async;
    return write_rest();
  }
  boost::system::error_code ec;
  const std::size_t n = socket_.write_some(gathered(out->gather()), ec);
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
    spdlog::debug("session {}: write failed: {}", id_, ec.message());
    return close_socket();  // the reader fails and ends the session
  }
  host_.traffic().bytes_out += n;
  host_.core().written(id_, n, moment_now());
  out = host_.core().outbox_of(id_);
  if (out && !out->empty()) {
    writing_ = write_state::async;
    write_rest();
  }
}

// Writes what the socket did not take at once, and whatever is queued meanwhile (no coroutine:
// a full socket is common under load).
void session::write_rest() {
  outbox& out = *host_.core().outbox_of(id_);
  gathered buffers(out.gather());
  out.writing();
  auto done = [self = shared_from_this(), keep = host_.keep_alive()](boost::system::error_code ec, std::size_t n) {
    broker_core& core = self->host_.core();
    outbox* out = core.outbox_of(self->id_);
    if (out) out->written();
    if (ec) {
      spdlog::debug("session {}: write failed: {}", self->id_, ec.message());
    } else if (out) {
      self->host_.traffic().bytes_out += n;
      core.written(self->id_, n, moment_now());
      if (!out->empty() && self->socket_.is_open()) return self->write_rest();
    }
    self->writing_ = write_state::direct;
    self->written_.wake();
    if (self->ending_) self->ended();
  };
  if (tls_) {
    asio::async_write(tls_->stream, buffers, std::move(done));
  } else {
    asio::async_write(socket_, buffers, std::move(done));
  }
}

void session::ended() {
  close_socket();
  if (writing_ == write_state::async) {  // its completion comes soon, with the socket closed
    ending_ = true;
    return;
  }
  ending_ = false;
  host_.session_ended(id_);
}

}  // namespace ma
