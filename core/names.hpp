// The naming rules of protocol.md.
#pragma once

#include <string_view>

namespace ma {

inline constexpr std::size_t max_username_chars = 64;
inline constexpr std::size_t max_message_uuid_chars = 128;
inline constexpr std::size_t max_request_id_chars = 256;

// 1 to 64 characters of A-Z a-z 0-9 . _ -
bool is_valid_username(std::string_view name) noexcept;
// Group names follow the username rule.
bool is_valid_group_name(std::string_view name) noexcept;
// 1 to 128 characters of A-Z a-z 0-9 . _ : -
bool is_valid_message_uuid(std::string_view uuid) noexcept;

}  // namespace ma
