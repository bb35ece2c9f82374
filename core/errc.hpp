// Protocol error codes (protocol.md, "Errors") and the error value that carries one.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ma {

enum class errc {
  malformed_json,
  invalid_envelope,
  unknown_message_id,
  missing_field,
  invalid_field,
  frame_too_large,
  message_too_large,
  not_logged_in,
  already_logged_in,
  invalid_username,
  username_taken,
  auth_failed,
  unknown_group,
  not_group_member,
  login_timeout,
  heartbeat_timeout,
  server_busy,
  internal_error,
  session_taken_over,
  not_authorized,
};

inline constexpr errc all_errcs[] = {
    errc::malformed_json,     errc::invalid_envelope, errc::unknown_message_id, errc::missing_field,
    errc::invalid_field,      errc::frame_too_large,  errc::message_too_large,  errc::not_logged_in,
    errc::already_logged_in,  errc::invalid_username, errc::username_taken,     errc::auth_failed,
    errc::unknown_group,      errc::not_group_member, errc::login_timeout,      errc::heartbeat_timeout,
    errc::server_busy,        errc::internal_error,   errc::session_taken_over, errc::not_authorized,
};

// The wire string of a code, e.g. "frame_too_large".
std::string_view to_string(errc code) noexcept;
std::optional<errc> errc_from_string(std::string_view text) noexcept;

// True for the codes after which the broker closes the connection.
bool closes_connection(errc code) noexcept;

// A protocol error: the code, one sentence a person can act on, and what the error frame
// echoes of the request that caused it (empty where it had none).
struct protocol_error {
  errc code;
  std::string text;
  std::string request_id;
  std::string message_uuid;
};

}  // namespace ma
