#include "core/names.hpp"

#include <array>
#include <bit>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace ma {
namespace {

// What each byte may be: 1 in a name, 2 in a message uuid. (A table: a uuid is checked for
// every message and every acknowledgement; sixteen bytes at a time with SSE2.)
constexpr unsigned char name_char = 1, uuid_char = 2;
constexpr std::array<unsigned char, 256> char_classes = [] {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const bool name = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
    t[static_cast<std::size_t>(c)] = static_cast<unsigned char>((name ? name_char | uuid_char : 0) |
                                                                (c == ':' ? uuid_char : 0));
  }
  return t;
}();

#if defined(__SSE2__)
// A bit for each of the 16 bytes at p that a name may hold (and with uuid, a uuid).
unsigned name_bytes_16(const char* p, bool uuid) noexcept {
  const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  auto in_range = [](__m128i x, char lo, char hi) {  // unsigned
    return _mm_and_si128(_mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(lo)), x),
                         _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(hi)), x));
  };
  auto is = [&w](char c) { return _mm_cmpeq_epi8(w, _mm_set1_epi8(c)); };
  // Setting 0x20 folds A-Z onto a-z, and nothing else onto them.
  __m128i ok = _mm_or_si128(in_range(_mm_or_si128(w, _mm_set1_epi8(0x20)), 'a', 'z'), in_range(w, '0', '9'));
  ok = _mm_or_si128(ok, _mm_or_si128(is('.'), _mm_or_si128(is('_'), is('-'))));
  if (uuid) ok = _mm_or_si128(ok, is(':'));
  return static_cast<unsigned>(_mm_movemask_epi8(ok));
}
#endif

std::size_t run_of_class(std::string_view s, unsigned char cls) noexcept {
  std::size_t i = 0;
#if defined(__SSE2__)
  for (; s.size() - i >= 16; i += 16) {
    const unsigned ok = name_bytes_16(s.data() + i, cls == uuid_char);
    if (ok != 0xffff) return i + static_cast<std::size_t>(std::countr_one(ok));
  }
#endif
  while (i < s.size() && (char_classes[static_cast<unsigned char>(s[i])] & cls) != 0) ++i;
  return i;
}

bool all_of_class(std::string_view s, unsigned char cls) noexcept { return run_of_class(s, cls) == s.size(); }

}  // namespace

bool is_valid_username(std::string_view name) noexcept {
  return !name.empty() && name.size() <= max_username_chars && all_of_class(name, name_char);
}

bool is_valid_group_name(std::string_view name) noexcept { return is_valid_username(name); }

bool is_valid_message_uuid(std::string_view uuid) noexcept {
  return !uuid.empty() && uuid.size() <= max_message_uuid_chars && all_of_class(uuid, uuid_char);
}

std::size_t username_run(std::string_view s) noexcept { return run_of_class(s, name_char); }

std::size_t message_uuid_run(std::string_view s) noexcept { return run_of_class(s, uuid_char); }

}  // namespace ma
