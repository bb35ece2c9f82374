#include "core/clock.hpp"


namespace ma {

sys_ms now_ms() noexcept {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

std::string format_iso8601(sys_ms t) {
  const auto text = format_iso8601_fixed(t);
  return std::string(text.data(), text.size());
}

iso8601_text format_iso8601_fixed(sys_ms t) noexcept {
  using namespace std::chrono;
  // Under load many messages are stamped in the same millisecond: the last one is kept.
  thread_local sys_ms last_time = sys_ms::min();
  thread_local iso8601_text last_text{};
  if (t == last_time) return last_text;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  // Digits by hand: this runs for every stored row, and snprintf is the slow part of it.
  iso8601_text out{'0', '0', '0', '0', '-', '0', '0', '-', '0', '0', 'T', '0',
                   '0', ':', '0', '0', ':', '0', '0', '.', '0', '0', '0', 'Z'};
  auto put = [&out](std::size_t pos, std::size_t len, unsigned v) {
    for (std::size_t i = pos + len; i-- > pos; v /= 10) out[i] = static_cast<char>('0' + v % 10);
  };
  put(0, 4, static_cast<unsigned>(static_cast<int>(ymd.year())));
  put(5, 2, static_cast<unsigned>(ymd.month()));
  put(8, 2, static_cast<unsigned>(ymd.day()));
  put(11, 2, static_cast<unsigned>(hms.hours().count()));
  put(14, 2, static_cast<unsigned>(hms.minutes().count()));
  put(17, 2, static_cast<unsigned>(hms.seconds().count()));
  put(20, 3, static_cast<unsigned>(hms.subseconds().count()));
  last_time = t;
  last_text = out;
  return out;
}

std::optional<sys_ms> parse_iso8601(std::string_view s) noexcept {
  using namespace std::chrono;
  // YYYY-MM-DDTHH:MM:SS.mmmZ
  if (s.size() != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
      s[16] != ':' || s[19] != '.' || s[23] != 'Z') {
    return std::nullopt;
  }
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    out = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  int y, mo, d, h, mi, sec, ms;
  if (!num(0, 4, y) || !num(5, 2, mo) || !num(8, 2, d) || !num(11, 2, h) || !num(14, 2, mi) ||
      !num(17, 2, sec) || !num(20, 3, ms)) {
    return std::nullopt;
  }
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 59) return std::nullopt;
  return sys_ms{sys_days{ymd}.time_since_epoch() + hours{h} + minutes{mi} + seconds{sec} +
                milliseconds{ms}};
}

}  // namespace ma
