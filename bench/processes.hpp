// What the benchmark programs share: the processes they start (brokers, nats-servers, stopped
// by pid, also when a run fails), what /proc says of them, and blocking loopback sockets read a
// line at a time.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
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
  // Calls on_line for every complete line waiting, reading first if none is; false on close or
  // timeout.
  template <class F>
  bool read_some(F&& on_line, int timeout_ms = 30'000) {
    if (!has_line() && !fill(timeout_ms)) return false;
    while (auto line = next_line()) on_line(*line);
    return true;
  }
  // Reads until a line starting with prefix arrives; returns it (copied). The lines before it
  // are dropped; those after it stay for read_some (a broker may send them in the same write:
  // a redelivery's first frames right behind acknowledge_log_in).
  std::string wait_for(std::string_view prefix, int timeout_ms = 30'000);

 private:
  bool has_line() const { return std::memchr(buf_.data() + begin_, '\n', end_ - begin_) != nullptr; }
  // The next complete line, taken from the buffer (valid until the next fill).
  std::optional<std::string_view> next_line();
  // One read into the buffer; false on close or timeout.
  bool fill(int timeout_ms);

  int fd_;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;
};

}  // namespace ma::bench
