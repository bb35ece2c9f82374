// Serializing frames: one JSON object and its '\n'.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>

#include "core/errc.hpp"
#include "core/kind.hpp"

namespace ma {

// {"message_id":KIND,"message_content":CONTENT}\n
std::string make_frame(kind k, const boost::json::object& content);
// The error frame for e, echoing its request_id and message_uuid where it has them.
std::string make_error_frame(const protocol_error& e);
// Appends s as a JSON string literal (quoted, escaped); s must be valid UTF-8.
void append_json_string(std::string& out, std::string_view s);
// The length of the start of s that a JSON string carries as it is: up to the first '"', '\\'
// or control byte, or also the first byte of 0x80 and above if ascii (s.size() if there is
// none). Reads sixteen bytes at a time (eight without SSE2).
std::size_t plain_json_run(std::string_view s, bool ascii = false) noexcept;

}  // namespace ma
