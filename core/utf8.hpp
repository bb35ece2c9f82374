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

// At most max_bytes of s, cut before a character that would not fit whole (s is UTF-8), so
// that text quoting a value stays valid UTF-8.
std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes) noexcept;

// At most max_bytes of s (any bytes) for a log line: printable ASCII and whole UTF-8 characters
// as they are, every control byte and every byte that is not part of valid UTF-8 as \xNN, so
// that a frame can not inject terminal escapes or fake lines into the log.
std::string escape_for_log(std::string_view s, std::size_t max_bytes);

}  // namespace ma
