#include "core/encode.hpp"

#include <bit>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// The bytes of w that need escaping in a JSON string (below 0x20, '"', '\\'), and with ascii
// also those of 0x80 and above: their high bits. Above the first such byte a plain byte may be
// marked too (a borrow), never below it: the lowest mark is exact.
std::uint64_t special_bytes(std::uint64_t w, bool ascii) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
  auto zero_bytes = [](std::uint64_t x) { return (x - ones) & ~x & high; };
  return ((w - ones * 0x20) & ~w & high) | zero_bytes(w ^ (ones * '"')) | zero_bytes(w ^ (ones * '\\')) |
         (ascii ? w & high : 0);
}

#if defined(__SSE2__)
// A bit for each of the 16 bytes of w that needs escaping (or is beyond ASCII, if ascii).
unsigned special_bytes_16(__m128i w, bool ascii) noexcept {
  __m128i marks = _mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('"')), _mm_cmpeq_epi8(w, _mm_set1_epi8('\\')));
  // Below 0x20: as signed bytes, 0x80 and above are below it too.
  marks = _mm_or_si128(marks, ascii ? _mm_cmplt_epi8(w, _mm_set1_epi8(0x20))
                                    : _mm_cmpeq_epi8(_mm_min_epu8(w, _mm_set1_epi8(0x1f)), w));
  return static_cast<unsigned>(_mm_movemask_epi8(marks));
}
unsigned special_bytes_16(const char* p, bool ascii) noexcept {
  return special_bytes_16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), ascii);
}
#endif

}  // namespace

std::size_t plain_json_run(std::string_view s, bool ascii) noexcept {
  std::size_t i = 0;
#if defined(__SSE2__)
  // Sixteen bytes at a time; the last sixteen overlap what was read (their marks below i are
  // dropped). A shorter string goes in one register as two overlapping halves; without SSE2,
  // or below four bytes, the word and byte loops below.
  if (s.size() >= 16) {
    for (; s.size() - i >= 16; i += 16) {
      if (const unsigned marks = special_bytes_16(s.data() + i, ascii)) return i + std::countr_zero(marks);
    }
    if (i == s.size()) return i;
    const std::size_t last = s.size() - 16;
    const unsigned marks = special_bytes_16(s.data() + last, ascii) >> (i - last);
    return marks ? i + std::countr_zero(marks) : s.size();
  }
  if (s.size() >= 8) {
    // Names and uuids: the first eight bytes and the last eight (overlapping) in one register.
    std::uint64_t first, last;
    std::memcpy(&first, s.data(), 8);
    std::memcpy(&last, s.data() + s.size() - 8, 8);
    const unsigned marks =
        special_bytes_16(_mm_set_epi64x(static_cast<long long>(last), static_cast<long long>(first)), ascii);
    if (marks & 0xff) return std::countr_zero(marks);
    return marks ? s.size() - 8 + std::countr_zero(marks >> 8) : s.size();
  }
  if (s.size() >= 4) {
    // Likewise four and four ("relayed"); the register's upper half is not looked at.
    std::uint32_t first, last;
    std::memcpy(&first, s.data(), 4);
    std::memcpy(&last, s.data() + s.size() - 4, 4);
    const unsigned marks =
        special_bytes_16(_mm_set_epi32(0, 0, static_cast<int>(last), static_cast<int>(first)), ascii) & 0xff;
    if (marks & 0xf) return std::countr_zero(marks);
    return marks ? s.size() - 4 + std::countr_zero(marks >> 4) : s.size();
  }
#endif
  // Eight bytes at a time, the last eight overlapping likewise.
  auto word_marks = [&](std::size_t at) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + at, 8);
    static_assert(std::endian::native == std::endian::little, "the first byte is the lowest");
    return special_bytes(w, ascii);
  };
  if (s.size() >= 8) {
    for (; s.size() - i >= 8; i += 8) {
      if (const std::uint64_t marks = word_marks(i)) return i + static_cast<std::size_t>(std::countr_zero(marks)) / 8;
    }
    if (i == s.size()) return i;
    // No byte below i is marked, so no borrow reaches below the first mark above it either.
    const std::size_t last = s.size() - 8;
    const std::uint64_t marks = word_marks(last) >> (8 * (i - last));
    return marks ? i + static_cast<std::size_t>(std::countr_zero(marks)) / 8 : s.size();
  }
  for (; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == '"' || c == '\\' || (ascii && c >= 0x80)) return i;
  }
  return i;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  if (plain_json_run(s) == s.size()) {
    // Names, uuids, most texts: the quotes and the bytes in one append (the frames of a message
    // hold nine such strings).
    const std::size_t at = out.size();
    out.append(s.size() + 2, '"');
    if (!s.empty()) std::memcpy(out.data() + at + 1, s.data(), s.size());
    return;
  }
  out += '"';
  // Plain runs are copied whole (message texts are mostly plain: a byte loop here was W1's
  // largest function of our own).
  for (std::size_t run = plain_json_run(s); run < s.size(); run = plain_json_run(s)) {
    out.append(s.data(), run);
    const unsigned char c = static_cast<unsigned char>(s[run]);
    s.remove_prefix(run + 1);
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
  out.append(s);
  out += '"';
}

}  // namespace ma
