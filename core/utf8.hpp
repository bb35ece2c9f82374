// UTF-8, as every frame must be: checking text before it is sent, and editing it by character.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ma {

// The offset of the first byte that is not part of well-formed UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included), or nullopt when all of s is.
std::optional<std::size_t> first_invalid_utf8(std::string_view s) noexcept;

// Removes the last character (all of its bytes) of s; nothing when s is empty.
void erase_last_utf8_char(std::string& s) noexcept;

}  // namespace ma
