#include "core/utf8.hpp"

namespace ma {

std::optional<std::size_t> first_invalid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // no overlong forms
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return std::nullopt;
}

std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes) noexcept {
  if (s.size() <= max_bytes) return s;
  std::size_t end = max_bytes;
  // A continuation byte (10xxxxxx) at the cut means its character started before it.
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

std::string escape_for_log(std::string_view s, std::size_t max_bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  const std::string_view cut = s.substr(0, max_bytes);
  std::string out;
  out.reserve(cut.size());
  std::size_t i = 0;
  while (i < cut.size()) {
    const auto c = static_cast<unsigned char>(cut[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A whole, valid multi-byte character passes; anything else is escaped byte by byte.
    if (c >= 0x80) {
      const std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      if (i + len <= cut.size() && !first_invalid_utf8(cut.substr(i, len))) {
        out.append(cut.substr(i, len));
        i += len;
        continue;
      }
    }
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 0xf];
    ++i;
  }
  if (s.size() > max_bytes) out += "...";
  return out;
}

}  // namespace ma
