// The operator's HTTP endpoint (--http-port): a small HTTP/1.1 server on the broker's
// io_context that answers GET (and HEAD) with what its handler returns for the path. It reads
// requests of at most 8 KiB of headers and no body, with a deadline, at most 16 connections at
// once; anything else gets 4xx and the connection closes.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
}

namespace ma {

struct http_reply {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class http_server {
 public:
  // Called with the request's path (without the query); 404 when it returns status 404.
  using handler = std::function<boost::asio::awaitable<http_reply>(std::string path)>;

  http_server(boost::asio::io_context& io, handler h);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds and listens; throws std::runtime_error with a sentence when it can not.
  void open(const std::string& address, std::uint16_t port);
  // Serves until close(); keep (the broker) is held while a connection is served.
  void start(std::shared_ptr<void> keep);
  void close();
  std::uint16_t port() const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace ma
