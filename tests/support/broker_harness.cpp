#include "tests/support/broker_harness.hpp"

#include <cerrno>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <future>

namespace ma::test {

namespace json = boost::json;

broker_options test_options(const temp_dir& dir) {
  broker_options o;
  o.port = 0;
  o.discovery = false;
  o.discovery_port = 0;
  o.database = dir.file("broker.db");
  o.broker_name = "test-broker";
  o.log_level = "warn";
  return o;
}

running_broker::running_broker(broker_options o, int busy_timeout_ms) : o_(std::move(o)) {
  store::settings settings{{o_.database, o_.sqlite_synchronous == "full"}};
  settings.db.busy_timeout_ms = busy_timeout_ms;
  store_ = std::make_unique<store>(settings);
  broker_ = std::make_unique<broker>(io_, o_, *store_);
  broker_->start();
  port_ = broker_->port();
  discovery_port_ = broker_->discovery_port();
  thread_ = std::thread([this] {
    auto guard = boost::asio::make_work_guard(io_);
    io_.run();
  });
}

running_broker::~running_broker() {
  std::promise<void> stopped;
  boost::asio::post(io_, [&] { broker_->stop([&] { stopped.set_value(); }); });
  if (stopped.get_future().wait_for(20s) != std::future_status::ready) ADD_FAILURE() << "the broker did not stop";
  io_.stop();
  thread_.join();
  broker_.reset();
  store_.reset();
}

void running_broker::on_broker_thread(std::function<void()> fn) {
  std::promise<void> done;
  boost::asio::post(io_, [&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

broker_status running_broker::status() {
  broker_status s;
  on_broker_thread([&] { s = broker_->status(); });
  return s;
}

int connect_loopback(std::uint16_t port, int receive_buffer, const char* from) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (receive_buffer > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in source{};
  source.sin_family = AF_INET;
  if (::inet_pton(AF_INET, from, &source.sin_addr) != 1 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) {
    ::close(fd);
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::size_t send_without_blocking(int fd, std::string_view chunk, std::size_t max_bytes,
                                  std::chrono::steady_clock::time_point until) {
  std::size_t sent = 0;
  while (sent < max_bytes && std::chrono::steady_clock::now() < until) {
    const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } else {
      break;  // closed by the broker
    }
  }
  return sent;
}

client::client(std::uint16_t port, int receive_buffer, const char* from) {
  fd_ = connect_loopback(port, receive_buffer, from);
  if (fd_ < 0) {
    ADD_FAILURE() << "cannot connect to 127.0.0.1:" << port;
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

client::~client() {
  if (fd_ >= 0) ::close(fd_);
}

void client::shutdown_send() { ::shutdown(fd_, SHUT_WR); }

void client::send_raw(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return;  // the broker closed: later reads tell
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void client::send(std::string_view kind, json::object content) {
  json::object env;
  env["message_id"] = kind;
  env["message_content"] = std::move(content);
  send_raw(json::serialize(env) + "\n");
}

bool client::read_frame(std::chrono::milliseconds timeout, json::object& out) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto nl = buf_.find('\n');
    if (nl != std::string::npos) {
      const std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      boost::system::error_code ec;
      auto v = json::parse(line, ec);
      if (ec || !v.is_object()) {
        ADD_FAILURE() << "the broker sent a line that is not a JSON object: " << line;
        continue;
      }
      out = std::move(v.as_object());
      return true;
    }
    if (eof_) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) {
      eof_ = true;
      continue;
    }
    buf_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::optional<json::object> client::recv(std::chrono::milliseconds timeout) {
  if (!backlog_.empty()) {
    auto f = std::move(backlog_.front());
    backlog_.pop_front();
    return f;
  }
  json::object f;
  if (!read_frame(timeout, f)) return std::nullopt;
  return f;
}

json::object client::expect(std::string_view kind, std::chrono::milliseconds timeout) {
  for (auto it = backlog_.begin(); it != backlog_.end(); ++it) {
    if (it->at("message_id").as_string() == kind) {
      auto f = std::move(*it);
      backlog_.erase(it);
      return f;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    json::object f;
    if (left.count() <= 0 || !read_frame(left, f)) {
      std::string seen;
      for (auto& b : backlog_) seen += json::serialize(b) + "\n";
      ADD_FAILURE() << "no " << kind << " arrived in time" << (eof_ ? " (the connection closed)" : "")
                    << "; frames waiting: " << (seen.empty() ? "none" : seen);
      return {};
    }
    if (f.at("message_id").as_string() == kind) return f;
    backlog_.push_back(std::move(f));
  }
}

json::object client::expect_content(std::string_view kind, std::chrono::milliseconds timeout) {
  auto f = expect(kind, timeout);
  if (f.empty()) return {};
  return f.at("message_content").as_object();
}

json::object client::expect_error(std::string_view code, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string others;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto c = expect_content("error", std::max(left, std::chrono::milliseconds(1)));
    if (c.empty()) {
      ADD_FAILURE() << "no error " << code << " arrived; other errors: " << others;
      return {};
    }
    if (c.at("error_code").as_string() == code) {
      EXPECT_GT(c.at("error_text").as_string().size(), 20u);
      return c;
    }
    others += json::serialize(c) + " ";
  }
}

bool client::quiet_of(std::string_view kind, std::chrono::milliseconds wait) {
  for (auto& b : backlog_) {
    if (b.at("message_id").as_string() == kind) return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    json::object f;
    if (left.count() <= 0 || !read_frame(left, f)) return true;
    if (f.at("message_id").as_string() == kind) {
      backlog_.push_back(std::move(f));
      return false;
    }
    backlog_.push_back(std::move(f));
  }
}

bool client::closed_within(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    json::object f;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (read_frame(std::max(left, std::chrono::milliseconds(0)), f)) {
      backlog_.push_back(std::move(f));
      continue;
    }
    if (eof_) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

json::object client::log_in(const std::string& name, json::object extra) {
  extra["sender_username"] = name;
  send("log_in", std::move(extra));
  return expect_content("acknowledge_log_in");
}

}  // namespace ma::test
