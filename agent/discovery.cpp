#include "message_agent/discovery.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/multicast.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>

#include "core/uuid.hpp"

namespace ma::agent {

namespace asio = boost::asio;
namespace json = boost::json;
using udp = asio::ip::udp;
using namespace asio::experimental::awaitable_operators;

asio::awaitable<std::vector<discovered_broker>> discover(const discovery_settings& s) {
  auto ex = co_await asio::this_coro::executor;
  const auto target_address = asio::ip::make_address(s.group);
  udp::socket sock(ex, udp::v4());
  if (target_address.is_multicast()) {
    sock.set_option(asio::ip::multicast::outbound_interface(asio::ip::make_address_v4(s.interface)));
    sock.set_option(asio::ip::multicast::hops(1));
    sock.set_option(asio::ip::multicast::enable_loopback(true));
  }
  const std::string request_id = make_message_uuid();
  const std::string query =
      R"({"message_id":"discover_broker","message_content":{"request_id":")" + request_id + "\"}}";
  co_await sock.async_send_to(asio::buffer(query), udp::endpoint(target_address, s.port), asio::use_awaitable);

  std::vector<discovered_broker> found;
  asio::steady_timer deadline(ex, s.timeout);
  std::array<char, 2048> buf;
  for (;;) {
    udp::endpoint from;
    auto result = co_await (sock.async_receive_from(asio::buffer(buf), from, asio::as_tuple(asio::use_awaitable)) ||
                            deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (result.index() == 1) break;  // the timeout
    auto [ec, n] = std::get<0>(result);
    if (ec) break;
    boost::system::error_code pec;
    auto v = json::parse(std::string_view(buf.data(), n), pec);
    if (pec || !v.is_object()) continue;
    const auto* id = v.as_object().if_contains("message_id");
    const auto* c = v.as_object().if_contains("message_content");
    if (!id || !c || !id->is_string() || id->as_string() != "broker_announce" || !c->is_object()) continue;
    const auto& content = c->as_object();
    const auto* rid = content.if_contains("request_id");
    if (rid && rid->is_string() && rid->as_string() != request_id) continue;  // someone else's answer
    discovered_broker b;
    if (auto* f = content.if_contains("broker_name"); f && f->is_string()) b.name = f->as_string();
    if (auto* f = content.if_contains("broker_address"); f && f->is_string()) b.address = f->as_string();
    if (auto* f = content.if_contains("tls_address"); f && f->is_string()) b.tls_address = f->as_string();
    if (auto* f = content.if_contains("protocol_version"); f && f->is_int64()) b.protocol_version = static_cast<int>(f->as_int64());
    if (auto* f = content.if_contains("online_users"); f && f->is_int64()) b.online_users = f->as_int64();
    if (b.address.empty()) continue;
    bool seen = false;
    for (auto& other : found) seen = seen || other.address == b.address;
    if (!seen) found.push_back(std::move(b));
    if (s.first_answer_only) break;
  }
  co_return found;
}

}  // namespace ma::agent
