#include "core/names.hpp"

namespace ma {
namespace {

bool is_name_char(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

bool is_valid_username(std::string_view name) noexcept {
  if (name.empty() || name.size() > max_username_chars) return false;
  for (char c : name) {
    if (!is_name_char(c)) return false;
  }
  return true;
}

bool is_valid_group_name(std::string_view name) noexcept { return is_valid_username(name); }

bool is_valid_message_uuid(std::string_view uuid) noexcept {
  if (uuid.empty() || uuid.size() > max_message_uuid_chars) return false;
  for (char c : uuid) {
    if (!is_name_char(c) && c != ':') return false;
  }
  return true;
}

}  // namespace ma
