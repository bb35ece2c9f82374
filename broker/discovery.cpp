#include "broker/discovery.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/multicast.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "broker/options.hpp"
#include "core/replies.hpp"

namespace ma {

namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {
constexpr std::size_t max_datagram = 1400;
}

bool reply_rate_limit::allow(const std::string& source, time_point now) {
  slot& s = table_[std::hash<std::string>{}(source) % table_.size()];
  const bool running = now - s.window <= std::chrono::seconds(1);
  if (s.source != source) {
    if (running && s.count > 0) return false;  // another source's second is still running
    s = {source, now, 0};
  } else if (!running) {
    s.window = now;
    s.count = 0;
  }
  return ++s.count <= per_second;
}

std::string announce_address(std::string_view advertise, std::string_view listen_host, bool listen_unspecified,
                             std::string_view facing_host, std::uint16_t port) {
  std::string host(!advertise.empty() ? advertise : !listen_unspecified ? listen_host : facing_host);
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

discovery_responder::discovery_responder(asio::io_context& io, const broker_options& o,
                                         std::function<std::size_t()> online)
    : io_(io), o_(o), online_(std::move(online)), socket_(io), decoder_(max_datagram) {}

void discovery_responder::open() {
  const auto group = asio::ip::make_address(o_.discovery_group);
  const auto iface = asio::ip::make_address(o_.discovery_interface);
  if (!group.is_v4() || !iface.is_v4()) {
    throw std::runtime_error("Discovery needs IPv4 --discovery-group and --discovery-interface addresses.");
  }
  boost::system::error_code ec;
  socket_.open(udp::v4());
  socket_.set_option(udp::socket::reuse_address(true));
  socket_.bind(udp::endpoint(asio::ip::address_v4::any(), o_.discovery_port), ec);
  if (ec) {
    throw std::runtime_error("Cannot bind the discovery port " + std::to_string(o_.discovery_port) + " (" +
                             ec.message() + "): choose another --discovery-port or set --discovery off.");
  }
  socket_.set_option(asio::ip::multicast::join_group(group.to_v4(), iface.to_v4()), ec);
  if (ec) {
    throw std::runtime_error("Cannot join the discovery group " + o_.discovery_group + " on " +
                             o_.discovery_interface + " (" + ec.message() +
                             "): check --discovery-interface, or set --discovery off.");
  }
  socket_.set_option(asio::ip::multicast::enable_loopback(true));
  open_ = true;
}

void discovery_responder::start(asio::ip::tcp::endpoint listen, std::uint16_t tls_port, std::shared_ptr<void> keep) {
  listen_ = listen;
  tls_port_ = tls_port;
  keep_ = std::move(keep);
  receive();
}

void discovery_responder::close() {
  open_ = false;
  keep_.reset();
  boost::system::error_code ignored;
  socket_.close(ignored);
}

std::uint16_t discovery_responder::port() const {
  boost::system::error_code ec;
  return socket_.is_open() ? socket_.local_endpoint(ec).port() : 0;
}

void discovery_responder::receive() {
  if (!open_) return;
  socket_.async_receive_from(asio::buffer(buf_), from_, [this, keep = keep_](boost::system::error_code ec, std::size_t n) {
    if (ec == asio::error::operation_aborted || !open_) return;
    if (!ec) answer(n);
  });
}

void discovery_responder::answer(std::size_t n) {
  auto next = [this] { receive(); };
  auto drop = [&](std::uint64_t& why) {
    ++why;
    next();
  };
  if (n > max_datagram) return drop(counters_.malformed);  // oversized: dropped, never answered
  auto r = decoder_.decode_datagram(std::string_view(buf_.data(), n));
  if (!r) return drop(counters_.malformed);  // malformed: dropped, never answered
  if (r->k == kind::log_in && !o_.discovery_legacy_login) return drop(counters_.legacy_off);  // opt-in: see the option
  if (!limit_.allow(from_.address().to_string(), std::chrono::steady_clock::now())) {
    return drop(counters_.rate_limited);
  }
  ++counters_.answered;

  std::string facing = "127.0.0.1";
  const bool unspecified = listen_.address().is_unspecified();
  if (o_.advertise_address.empty() && unspecified) {
    udp::socket probe(io_);
    boost::system::error_code pec;
    probe.connect(udp::endpoint(from_.address(), from_.port()), pec);
    if (!pec) facing = probe.local_endpoint(pec).address().to_string();
  }
  const std::string address =
      announce_address(o_.advertise_address, listen_.address().to_string(), unspecified, facing, listen_.port());
  udp::endpoint to = from_;
  const std::string_view request_id =
      r->request_id.size() <= max_echoed_request_id ? std::string_view(r->request_id) : std::string_view();
  if (r->k == kind::discover_broker) {
    const std::string tls_address =
        tls_port_ ? announce_address(o_.advertise_address, listen_.address().to_string(), unspecified, facing, tls_port_)
                  : std::string();
    reply_ = make_broker_announce(o_.broker_name, address, online_(), request_id, tls_address);
  } else {
    if (r->sender_port) to.port(*r->sender_port);
    reply_ = make_datagram_log_in_ack(address, request_id);
  }
  socket_.async_send_to(asio::buffer(reply_), to, [this, keep = keep_](boost::system::error_code ec, std::size_t) {
    if (ec == asio::error::operation_aborted || !open_) return;
    receive();
  });
}

}  // namespace ma
