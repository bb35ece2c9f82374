#include "core/encode.hpp"

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

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t plain = 0;  // start of the run not yet copied
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + plain, i - plain);
    plain = i + 1;
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
