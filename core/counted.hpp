// Counts in sentences: "1 pending dead letter", "2 pending dead letters".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ma {

// n and thing, with an s unless n is 1 (thing is a noun phrase that takes an s).
inline std::string counted(std::uint64_t n, std::string_view thing) {
  std::string out = std::to_string(n);
  out += ' ';
  out += thing;
  if (n != 1) out += 's';
  return out;
}

}  // namespace ma
