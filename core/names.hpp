// The naming rules of protocol.md.
#pragma once

#include <cstddef>
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
// How many of the first bytes of s a username (A-Z a-z 0-9 . _ -), or a message uuid (and :),
// may hold: where a reader that finds a name's end and checks it in one pass stops.
std::size_t username_run(std::string_view s) noexcept;
std::size_t message_uuid_run(std::string_view s) noexcept;

}  // namespace ma
