// The deliveries sent to one session and not yet acknowledged. Sans-I/O; one per session, on
// the broker's thread.
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/core/delivery.hpp"

namespace ma {

// The deliveries sent to one session and not yet acknowledged, by id (the order they were sent
// in) and by message_uuid. The uuid keys view the uuid inside each delivery's message, which the
// delivery keeps alive; an entry leaves both maps together. Flat maps: no allocation per entry.
class in_flight_set {
 public:
  // Returns the delivery's id: ids increase in the order deliveries are added.
  std::uint64_t add(delivery d);
  // The delivery an acknowledgement names (sender empty: any sender), removed.
  std::optional<delivery> take(std::string_view uuid, std::string_view sender);
  // The delivery with this id, removed, if it is still in flight.
  std::optional<delivery> take(std::uint64_t id);
  // Everything, in the order sent; the set is empty afterwards.
  std::vector<delivery> drain();

  std::size_t size() const { return m_ ? m_->by_id.size() : 0; }
  // Gives the maps' memory back while nothing is in flight (an idle peer keeps a pointer).
  void release_memory() {
    if (size() == 0) m_.reset();
  }

 private:
  // An acknowledgement naming sender (empty: any) is for d.
  static bool sent_by(const delivery& d, std::string_view sender);
  bool matches(std::uint64_t id, std::string_view sender) const;
  delivery remove(std::uint64_t id);
  void promote_more(std::string_view uuid);

  struct maps {
    boost::unordered_flat_map<std::uint64_t, delivery> by_id;
    boost::unordered_flat_map<std::string_view, std::uint64_t> by_uuid;
    std::unordered_multimap<std::string_view, std::uint64_t> more;
  };
  std::uint64_t next_ = 0;
  std::unique_ptr<maps> m_;  // made at the first delivery
};

}  // namespace ma
