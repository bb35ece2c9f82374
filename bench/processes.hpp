// What the benchmark programs share: the processes they start (brokers, nats-servers, stopped
// by pid, also when a run fails), what /proc says of them, and blocking loopback sockets read a
// line at a time.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ma::bench {

using clock_type = std::chrono::steady_clock;

// The processes spawn() started and terminate() has not stopped: fail() kills them.
extern std::vector<int> started_brokers;
// The name fail() puts before its sentence.
extern const char* program_name;

// Says what failed on stderr, kills every process started, exits 1.
[[noreturn]] void fail(const std::string& what);

// Forks and runs args (args[0] a path) with stdout and stderr to log; the pid.
int spawn(std::vector<std::string> args, const std::string& log);
// Waits until log holds what; fails when pid exits first or after 60 s. Returns the log.
std::string wait_for_log(int pid, const std::string& log, const std::string& what);
// SIGTERM, then SIGKILL after 15 s.
void terminate(int pid);
// A TCP port on 127.0.0.1 that was free a moment ago.
std::uint16_t free_port();
// Until a connection to 127.0.0.1:port succeeds; fails if pid exits first or after 60 s.
void wait_until_listening(int pid, std::uint16_t port);

// The CPU time a process has used (user + system), and its resident memory.
double proc_cpu_s(int pid);
long proc_rss_kib(int pid);

// The non-empty parts of s between sep ("w1,w3" -> w1, w3), for options that take lists.
std::vector<std::string> split(const std::string& s, char sep);

// The payload of message seq: 15 digits, a space, 'x' filler to size bytes (printable, so that
// every protocol carries it as it is).
std::string payload(std::uint64_t seq, int size);

// A blocking TCP connection to 127.0.0.1:port with TCP_NODELAY; fails when it can not connect.
int connect_to(std::uint16_t port);
void write_all(int fd, std::string_view data);

// Reads lines from a blocking socket, a buffer at a time.
class line_reader {
 public:
  explicit line_reader(int fd) : fd_(fd), buf_(1 << 20) {}
  // Calls on_line for every complete line of the next read; false on close or timeout.
  template <class F>
  bool read_some(F&& on_line, int timeout_ms = 30'000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    if (end_ == buf_.size()) {
      if (begin_ == 0) buf_.resize(buf_.size() * 2);
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    const ssize_t n = ::recv(fd_, buf_.data() + end_, buf_.size() - end_, 0);
    if (n <= 0) return false;
    end_ += static_cast<std::size_t>(n);
    for (;;) {
      const void* nl = std::memchr(buf_.data() + begin_, '\n', end_ - begin_);
      if (!nl) break;
      const std::size_t at = static_cast<std::size_t>(static_cast<const char*>(nl) - buf_.data());
      on_line(std::string_view(buf_.data() + begin_, at - begin_));
      begin_ = at + 1;
    }
    if (begin_ == end_) begin_ = end_ = 0;
    return true;
  }
  // Reads until a line starting with prefix arrives; returns it (copied).
  std::string wait_for(std::string_view prefix, int timeout_ms = 30'000);

 private:
  int fd_;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;
};

}  // namespace ma::bench
