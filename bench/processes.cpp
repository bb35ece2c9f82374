#include "bench/processes.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace ma::bench {

using namespace std::chrono_literals;

std::vector<int> started_brokers;
const char* program_name = "bench";

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", program_name, what.c_str());
  for (int pid : started_brokers) {
    if (pid > 0) ::kill(pid, SIGKILL);
  }
  std::exit(1);
}

int spawn(std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int pid = ::fork();
  if (pid > 0) started_brokers.push_back(pid);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::dup2(fd, 1);
    ::execv(args[0].c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

std::string wait_for_log(int pid, const std::string& log, const std::string& what) {
  const auto deadline = clock_type::now() + 60s;
  while (clock_type::now() < deadline) {
    std::ifstream f(log);
    std::string text((std::istreambuf_iterator<char>(f)), {});
    if (text.find(what) != std::string::npos) return text;
    int st;
    if (::waitpid(pid, &st, WNOHANG) == pid) fail(log + ": the process exited at start: " + text);
    std::this_thread::sleep_for(5ms);
  }
  fail(log + ": no '" + what + "' within 60 s");
}

void terminate(int pid) {
  std::erase(started_brokers, pid);
  ::kill(pid, SIGTERM);
  const auto deadline = clock_type::now() + 15s;
  int st;
  while (::waitpid(pid, &st, WNOHANG) != pid) {
    if (clock_type::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return;
    }
    std::this_thread::sleep_for(5ms);
  }
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

double proc_cpu_s(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), {});
  const auto close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(s.substr(close + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long proc_rss_kib(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

int connect_to(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fail("cannot connect to the broker");
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      throw std::runtime_error("write failed");
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::optional<std::string_view> line_reader::next_line() {
  const void* nl = std::memchr(buf_.data() + begin_, '\n', end_ - begin_);
  if (!nl) return std::nullopt;
  const std::size_t at = static_cast<std::size_t>(static_cast<const char*>(nl) - buf_.data());
  const std::string_view line(buf_.data() + begin_, at - begin_);
  begin_ = at + 1;
  return line;
}

bool line_reader::fill(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  if (begin_ == end_) begin_ = end_ = 0;
  if (end_ == buf_.size()) {
    if (begin_ == 0) buf_.resize(buf_.size() * 2);
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  const ssize_t n = ::recv(fd_, buf_.data() + end_, buf_.size() - end_, 0);
  if (n <= 0) return false;
  end_ += static_cast<std::size_t>(n);
  return true;
}

std::string line_reader::wait_for(std::string_view prefix, int timeout_ms) {
  const auto deadline = clock_type::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    while (auto line = next_line()) {
      if (line->substr(0, prefix.size()) == prefix) return std::string(*line);
    }
    if (clock_type::now() > deadline) throw std::runtime_error("timed out waiting for " + std::string(prefix));
    if (!fill(1000) && clock_type::now() > deadline) {
      throw std::runtime_error("connection closed waiting for " + std::string(prefix));
    }
  }
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

std::string payload(std::uint64_t seq, int size) {
  char digits[32];
  std::snprintf(digits, sizeof digits, "%015" PRIu64 " ", seq);
  std::string p(digits);
  if (static_cast<int>(p.size()) < size) p.append(static_cast<std::size_t>(size) - p.size(), 'x');
  return p;
}

void wait_until_listening(int pid, std::uint16_t port) {
  const auto deadline = clock_type::now() + 60s;
  while (clock_type::now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (up) return;
    int st;
    if (::waitpid(pid, &st, WNOHANG) == pid) fail("a broker exited at its start (its log is in the run's folder)");
    std::this_thread::sleep_for(10ms);
  }
  fail("a broker did not listen on port " + std::to_string(port) + " within 60 s");
}

}  // namespace ma::bench
