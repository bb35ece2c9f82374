// Failed log_ins by source address, and when the next password check from there may start.
// After three failures in a row each check from that address waits 250 ms, doubling up to 8 s
// (the checks of parallel connections are spaced out in turn); a right password from there, or
// 15 minutes without a failure, starts it over. Kept per address, so an attacker slows down
// only itself: a user logging in from another address is not held up. Bounded: past
// max_sources addresses the one that failed longest ago is forgotten. Sans-I/O: time is an
// argument. On the broker's thread.
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace ma {

class login_failures {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  static constexpr int free_failures = 3;
  static constexpr std::chrono::milliseconds first_delay{250};
  static constexpr std::chrono::milliseconds max_delay{8000};
  static constexpr std::chrono::minutes forget_after{15};

  explicit login_failures(std::size_t max_sources = 16384) : max_sources_(max_sources) {}

  // The address part of "host:port" ("[::1]:5" gives "[::1]").
  static std::string_view host_of(std::string_view address);
  // How long each check waits after this many failures in a row.
  static std::chrono::milliseconds delay_after(int failures);

  // Takes the next turn of a check from address: when it may start (now, or later).
  time_point turn(std::string_view address, time_point now);
  void failed(std::string_view address, time_point now);
  void succeeded(std::string_view address);
  std::size_t size() const { return by_address_.size(); }

 private:
  struct source {
    int failures = 0;
    time_point next_turn{};
    time_point last_failure{};
  };
  source* find(std::string_view address, time_point now);

  std::size_t max_sources_;
  boost::unordered_flat_map<std::string, source> by_address_;
};

}  // namespace ma
