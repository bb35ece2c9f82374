// Which acknowledgements may be late ones: the (recipient, message_uuid) pairs of deliveries
// that were sent and then moved to the Dead Letter Channel (ack timeout, disconnect), most
// recent first, at most a fixed number. An acknowledgement that names neither a delivery in
// flight nor one of these costs no database lookup, so floods of invented uuids cost little.
// Sans-I/O.
#pragma once

#include <boost/unordered/unordered_flat_set.hpp>

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>

namespace ma {

class late_acks {
 public:
  explicit late_acks(std::size_t capacity) : capacity_(capacity) {}

  void remember(std::string_view receiver, std::string_view uuid);
  bool may_be_late(std::string_view receiver, std::string_view uuid) const;
  std::size_t size() const { return keys_.size(); }

 private:
  static std::string key_of(std::string_view receiver, std::string_view uuid);

  std::size_t capacity_;
  std::deque<std::string> order_;  // oldest first
  boost::unordered_flat_set<std::string> keys_;
};

}  // namespace ma
