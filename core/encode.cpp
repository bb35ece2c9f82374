#include "core/encode.hpp"

#include <cstdint>
#include <cstring>

#include <boost/json/serialize.hpp>

namespace ma {

std::string make_frame(kind k, const boost::json::object& content) {
  std::string out;
  out.reserve(64);
  out += "{\"message_id\":";
  append_json_string(out, to_string(k));
  out += ",\"message_content\":";
  out += boost::json::serialize(content);
  out += "}\n";
  return out;
}

std::string make_error_frame(const protocol_error& e) {
  boost::json::object content;
  content["error_code"] = to_string(e.code);
  content["error_text"] = e.text;
  if (!e.request_id.empty()) content["request_id"] = e.request_id;
  if (!e.message_uuid.empty()) content["message_uuid"] = e.message_uuid;
  return make_frame(kind::error, content);
}

namespace {

// True if one of the 8 bytes of w needs escaping in a JSON string: below 0x20, '"' or '\\'.
// (Exact: each test is "has a byte less than n" or "has a zero byte", which do not misfire.)
bool needs_escape(std::uint64_t w) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
  auto has_zero = [](std::uint64_t x) { return (x - ones) & ~x & high; };
  return (((w - ones * 0x20) & ~w & high) | has_zero(w ^ (ones * '"')) | has_zero(w ^ (ones * '\\'))) != 0;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t plain = 0;  // start of the run not yet copied
  std::size_t i = 0;
  while (i < s.size()) {
    // Eight plain bytes at a time: a message text is mostly plain (a third of W1's CPU in this
    // function went to the byte loop).
    if (s.size() - i >= 8) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (!needs_escape(w)) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = static_cast<unsigned char>(s[i++]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + plain, i - 1 - plain);
    plain = i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xf];
    }
  }
  out.append(s.data() + plain, s.size() - plain);
  out += '"';
}

}  // namespace ma
