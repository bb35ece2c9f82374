// UTC timestamps as protocol.md and the database write them: ISO 8601 with milliseconds,
// "2026-11-26T07:06:11.123Z". Fixed width, so text order is time order.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ma {

using sys_ms = std::chrono::time_point<std::chrono::system_clock, std::chrono::milliseconds>;

sys_ms now_ms() noexcept;
std::string format_iso8601(sys_ms t);
// The same 24 characters without an allocation.
using iso8601_text = std::array<char, 24>;
iso8601_text format_iso8601_fixed(sys_ms t) noexcept;
// Parses exactly the format above; nullopt for anything else.
std::optional<sys_ms> parse_iso8601(std::string_view text) noexcept;

}  // namespace ma
