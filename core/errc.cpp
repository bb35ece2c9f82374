#include "core/errc.hpp"

namespace ma {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::malformed_json: return "malformed_json";
    case errc::invalid_envelope: return "invalid_envelope";
    case errc::unknown_message_id: return "unknown_message_id";
    case errc::missing_field: return "missing_field";
    case errc::invalid_field: return "invalid_field";
    case errc::frame_too_large: return "frame_too_large";
    case errc::message_too_large: return "message_too_large";
    case errc::not_logged_in: return "not_logged_in";
    case errc::already_logged_in: return "already_logged_in";
    case errc::invalid_username: return "invalid_username";
    case errc::username_taken: return "username_taken";
    case errc::auth_failed: return "auth_failed";
    case errc::unknown_group: return "unknown_group";
    case errc::not_group_member: return "not_group_member";
    case errc::login_timeout: return "login_timeout";
    case errc::heartbeat_timeout: return "heartbeat_timeout";
    case errc::server_busy: return "server_busy";
    case errc::internal_error: return "internal_error";
    case errc::session_taken_over: return "session_taken_over";
    case errc::not_authorized: return "not_authorized";
  }
  return "internal_error";
}

std::optional<errc> errc_from_string(std::string_view text) noexcept {
  for (errc code : all_errcs) {
    if (to_string(code) == text) return code;
  }
  return std::nullopt;
}

bool closes_connection(errc code) noexcept {
  return code == errc::frame_too_large || code == errc::login_timeout ||
         code == errc::heartbeat_timeout || code == errc::server_busy || code == errc::auth_failed ||
         code == errc::session_taken_over;
}

}  // namespace ma
