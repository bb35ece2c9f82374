#include "tests/support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace ma::test {

child_process::child_process(const std::string& path, const std::vector<std::string>& args,
                             const std::string& log_file, const std::vector<std::string>& env,
                             const std::string& input_file)
    : log_file_(log_file) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    const int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    const int in = ::open(input_file.c_str(), O_RDONLY);
    if (in >= 0) ::dup2(in, 0);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    ::execv(path.c_str(), argv.data());
    ::_exit(127);
  }
}

child_process::~child_process() {
  if (!status_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
  }
}

std::string child_process::log() const {
  std::ifstream in(log_file_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::optional<std::string> child_process::wait_for_log(const std::regex& re, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::smatch m;
    const std::string text = log();
    if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

void child_process::signal(int signo) { ::kill(pid_, signo); }

std::vector<std::string> broker_args(const temp_dir& dir) {
  return {"--port", "0", "--discovery", "off", "--database", dir.file("broker.db")};
}

std::optional<std::uint16_t> listening_port(child_process& broker, std::chrono::milliseconds timeout) {
  static const std::regex listening(R"(listening on 127\.0\.0\.1:(\d+))");
  auto port = broker.wait_for_log(listening, timeout);
  if (!port) return std::nullopt;
  return static_cast<std::uint16_t>(std::stoi(*port));
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

std::pair<int, std::string> run_command(const std::string& path, const std::vector<std::string>& args,
                                        const std::optional<std::string>& input, const std::vector<std::string>& env) {
  char name[] = "/tmp/ma-command-XXXXXX";
  const int fd = ::mkstemp(name);
  ::close(fd);
  char in_name[] = "/tmp/ma-input-XXXXXX";
  const int in_fd = ::mkstemp(in_name);
  if (input) (void)!::write(in_fd, input->data(), input->size());
  ::close(in_fd);
  int status;
  {
    child_process p(path, args, name, env, in_name);
    status = p.wait(std::chrono::seconds(60)).value_or(-1);
  }
  ::unlink(in_name);
  std::ifstream in(name);
  std::stringstream s;
  s << in.rdbuf();
  ::unlink(name);
  return {status, s.str()};
}

}  // namespace ma::test
