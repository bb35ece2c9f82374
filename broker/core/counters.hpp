// What the broker core counts, for /metrics: totals since the broker started, kept and read on
// the broker's thread.
#pragma once

#include <array>
#include <cstdint>
#include <iterator>

#include "core/errc.hpp"
#include "storage/database.hpp"

namespace ma {

struct core_counters {
  std::uint64_t accepted = 0;    // messages committed and answered with message_accepted
  std::uint64_t duplicates = 0;  // sends of a (sender, uuid) pair already accepted
  std::uint64_t relayed = 0;     // deliveries handed to an online recipient at once
  std::uint64_t delivered = 0;   // deliveries acknowledged by their recipient (redeliveries too)
  std::uint64_t redelivered = 0;  // dead letters sent again
  std::uint64_t parked = 0;      // letters parked after their last attempt
  std::uint64_t expired = 0;     // letters whose ttl passed before they were delivered
  std::array<std::uint64_t, std::size(all_dead_letter_reasons)> dead_lettered{};  // by reason
  std::array<std::uint64_t, std::size(all_errcs)> errors{};  // error frames sent, by error_code
  // Errors answered to connections that had not logged in (a refused log_in), by error_code.
  std::array<std::uint64_t, std::size(all_errcs)> refused_log_ins{};
};

}  // namespace ma
