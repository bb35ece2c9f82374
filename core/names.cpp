#include "core/names.hpp"

#include <array>

namespace ma {
namespace {

// What each byte may be: 1 in a name, 2 in a message uuid. (A table: a uuid is checked for
// every message and every acknowledgement.)
constexpr unsigned char name_char = 1, uuid_char = 2;
constexpr std::array<unsigned char, 256> char_classes = [] {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const bool name = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
    t[static_cast<std::size_t>(c)] = static_cast<unsigned char>((name ? name_char | uuid_char : 0) |
                                                                (c == ':' ? uuid_char : 0));
  }
  return t;
}();

bool all_of_class(std::string_view s, unsigned char cls) noexcept {
  for (char c : s) {
    if ((char_classes[static_cast<unsigned char>(c)] & cls) == 0) return false;
  }
  return true;
}

}  // namespace

bool is_valid_username(std::string_view name) noexcept {
  return !name.empty() && name.size() <= max_username_chars && all_of_class(name, name_char);
}

bool is_valid_group_name(std::string_view name) noexcept { return is_valid_username(name); }

bool is_valid_message_uuid(std::string_view uuid) noexcept {
  return !uuid.empty() && uuid.size() <= max_message_uuid_chars && all_of_class(uuid, uuid_char);
}

}  // namespace ma
