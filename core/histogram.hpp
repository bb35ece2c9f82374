// A latency histogram in the shape Prometheus reads (cumulative buckets, a count and a sum):
// fixed bounds from 50 µs to 5 s, written by one thread and read by another without a lock.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace ma {

class latency_histogram {
 public:
  static constexpr std::array<double, 14> bounds_seconds = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                            0.01,    0.025,  0.05,    0.1,    0.25,   1,      5};
  struct snapshot {
    std::array<std::uint64_t, bounds_seconds.size()> at_most{};  // cumulative, one per bound
    std::uint64_t count = 0;                                      // every observation (+Inf)
    double sum_seconds = 0;
  };

  void observe(std::chrono::nanoseconds d) {
    const double s = std::chrono::duration<double>(d).count();
    std::size_t i = 0;
    while (i < bounds_seconds.size() && s > bounds_seconds[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(static_cast<std::uint64_t>(d.count() < 0 ? 0 : d.count()), std::memory_order_relaxed);
  }

  snapshot read() const {
    snapshot out;
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      running += counts_[i].load(std::memory_order_relaxed);
      if (i < out.at_most.size()) out.at_most[i] = running;
    }
    out.count = running;
    out.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return out;
  }

 private:
  std::array<std::atomic<std::uint64_t>, bounds_seconds.size() + 1> counts_{};  // the last: above every bound
  std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace ma
