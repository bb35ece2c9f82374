// Runs a real binary of ours as a child process, with its stderr in a file to read from.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "tests/support/temp_dir.hpp"

namespace ma::test {

class child_process {
 public:
  // Starts path with args and the extra environment ("NAME=value"); stdout and stderr go to
  // log_file.
  // Its standard input is input_file (/dev/null by default).
  child_process(const std::string& path, const std::vector<std::string>& args, const std::string& log_file,
                const std::vector<std::string>& env = {}, const std::string& input_file = "/dev/null");
  ~child_process();  // SIGKILL if still running
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  // Waits until the log has a line matching re; returns its first capture group.
  std::optional<std::string> wait_for_log(const std::regex& re, std::chrono::milliseconds timeout);
  void signal(int signo);
  // The exit status, or nullopt if it did not end in time. Killed by a signal: 128 + signo.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::string log_file_;
  std::optional<int> status_;
};

// Arguments for the real broker binary: 127.0.0.1, an ephemeral port, discovery off, its
// database in dir.
std::vector<std::string> broker_args(const temp_dir& dir);
// The port of a broker started with an ephemeral port, from its "listening on" log line.
std::optional<std::uint16_t> listening_port(child_process& broker, std::chrono::milliseconds timeout);

// The environment for a broker whose memory a test measures: under AddressSanitizer freed
// memory waits in a quarantine (256 MiB by default) before it is reused, which RSS would count.
inline const std::vector<std::string> small_quarantine = {
    "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=4"};

// Runs a command to the end; returns (exit status, stdout + stderr). With input, that is its
// standard input (else it has none).
std::pair<int, std::string> run_command(const std::string& path, const std::vector<std::string>& args,
                                        const std::optional<std::string>& input = std::nullopt,
                                        const std::vector<std::string>& env = {});

}  // namespace ma::test
