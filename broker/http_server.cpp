#include "broker/http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <spdlog/spdlog.h>

#include <set>
#include <stdexcept>

#include "broker/listener.hpp"

namespace ma {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {
constexpr std::size_t max_connections = 16;
constexpr std::uint32_t max_header_bytes = 8 * 1024;
constexpr auto io_deadline = 10s;  // to read a request, or to write a reply
}  // namespace

struct http_server::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& io, handler h) : io(io), acceptor(io), on_request(std::move(h)) {}

  asio::io_context& io;
  tcp::acceptor acceptor;
  handler on_request;
  bool closed = false;
  std::set<std::shared_ptr<beast::tcp_stream>> streams;  // open connections, closed by close()

  asio::awaitable<void> accept_loop(std::shared_ptr<void> keep) {
    auto self = shared_from_this();
    while (!closed) {
      auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (closed || ec == asio::error::operation_aborted) co_return;
        co_await pause_after_failed_accept("http", ec);
        continue;
      }
      if (streams.size() >= max_connections) {
        boost::system::error_code ignored;
        sock.close(ignored);  // scrapes are few; a flood is not served
        continue;
      }
      auto stream = std::make_shared<beast::tcp_stream>(std::move(sock));
      streams.insert(stream);
      asio::co_spawn(io, serve(stream), [self, stream, keep](std::exception_ptr e) {
        self->streams.erase(stream);
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& x) {
            spdlog::warn("http: a request failed: {}", x.what());
          }
        }
      });
    }
  }

  asio::awaitable<void> serve(std::shared_ptr<beast::tcp_stream> stream) {
    beast::flat_buffer buffer(2 * max_header_bytes);
    for (;;) {
      http::request_parser<http::empty_body> parser;
      parser.header_limit(max_header_bytes);
      parser.body_limit(0);
      stream->expires_after(io_deadline);
      auto [ec, n] = co_await http::async_read(*stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
          closed) {
        break;
      }
      http::response<http::string_body> res;
      res.version(11);
      res.set(http::field::server, "message-broker");
      bool keep_alive = false;
      if (ec) {
        res.result(http::status::bad_request);
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = "bad request: " + ec.message() + "\n";
      } else {
        const auto& req = parser.get();
        keep_alive = req.keep_alive();
        if (req.method() != http::verb::get && req.method() != http::verb::head) {
          res.result(http::status::method_not_allowed);
          res.set(http::field::allow, "GET, HEAD");
          res.set(http::field::content_type, "text/plain; charset=utf-8");
          res.body() = "only GET and HEAD\n";
        } else {
          std::string path(req.target());
          if (auto q = path.find('?'); q != std::string::npos) path.resize(q);
          http_reply reply = co_await on_request(path);
          res.result(reply.status);
          res.set(http::field::content_type, reply.content_type);
          res.body() = std::move(reply.body);
        }
        if (req.method() == http::verb::head) {
          res.content_length(res.body().size());
          res.body().clear();
        }
      }
      if (res[http::field::content_length].empty()) res.prepare_payload();
      res.keep_alive(keep_alive);
      stream->expires_after(io_deadline);
      auto [wec, wn] = co_await http::async_write(*stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !keep_alive || closed) break;
    }
    boost::system::error_code ignored;
    stream->socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream->close();
  }
};

http_server::http_server(asio::io_context& io, handler h) : impl_(std::make_shared<impl>(io, std::move(h))) {}

http_server::~http_server() { close(); }

void http_server::open(const std::string& address, std::uint16_t port) {
  boost::system::error_code ec;
  const auto a = asio::ip::make_address(address, ec);
  if (ec) throw std::runtime_error("--http-address '" + address + "' is not an IP address.");
  tcp::endpoint ep(a, port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep, ec);
  if (ec) {
    throw std::runtime_error("Cannot serve HTTP on " + address + ":" + std::to_string(port) + " (" + ec.message() +
                             "): choose another --http-port, or 0 for none.");
  }
  impl_->acceptor.listen();
}

void http_server::start(std::shared_ptr<void> keep) {
  asio::co_spawn(impl_->io, impl_->accept_loop(std::move(keep)), asio::detached);
}

void http_server::close() {
  impl_->closed = true;
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  for (auto& s : impl_->streams) s->socket().close(ignored);
}

std::uint16_t http_server::port() const {
  boost::system::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

}  // namespace ma
