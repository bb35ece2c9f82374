#include "broker/listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace ma {

namespace asio = boost::asio;

asio::awaitable<void> pause_after_failed_accept(const char* who, boost::system::error_code ec) {
  spdlog::warn("{}: accept failed: {}", who, ec.message());
  asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
  co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
}

}  // namespace ma
