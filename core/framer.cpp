#include "core/framer.hpp"

#include <algorithm>
#include <cstring>

namespace ma {

line_framer::line_framer(std::size_t max_frame_bytes, std::size_t read_chunk)
    : max_frame_(clamp(max_frame_bytes)), chunk_(clamp(std::max<std::size_t>(read_chunk, 64))) {}

std::span<char> line_framer::prepare() {
  if (failed_) return {};
  // The most a frame may occupy unterminated: the frame, '\r' and the '\n' that ends it.
  const std::size_t limit = max_frame_ + 2;
  const std::size_t pending = end_ - begin_;
  if (begin_ > 0 && (pending == 0 || cap_ - end_ < chunk_)) {
    std::memmove(buf_.get(), buf_.get() + begin_, pending);
    scan_ -= begin_;
    end_ = static_cast<offset>(pending);
    begin_ = 0;
  }
  if (cap_ - end_ < chunk_ && cap_ < limit) {
    // Never more than the limit: no byte past it is ever read into (a connection before log_in
    // holds 16 KiB at most though the broker reads 32 KiB at a time).
    std::size_t new_cap = std::max(std::size_t{cap_} * 2, std::size_t{chunk_});
    new_cap = std::min(std::max(new_cap, std::size_t{end_} + chunk_), limit);
    auto bigger = std::make_unique_for_overwrite<char[]>(new_cap);  // no need to zero a read's worth
    if (end_ > 0) std::memcpy(bigger.get(), buf_.get(), end_);
    buf_ = std::move(bigger);
    cap_ = static_cast<offset>(new_cap);
  }
  // Never hold more than the limit of one partial frame.
  if (pending >= limit) return {};
  const std::size_t room = std::min<std::size_t>(cap_ - end_, limit - pending);
  return {buf_.get() + end_, room};
}

void line_framer::commit(std::size_t n) noexcept { end_ += static_cast<offset>(n); }  // n <= prepare()'s room

line_framer::next_result line_framer::next() noexcept {
  if (failed_) return {status::too_large, {}};
  for (;;) {
    const char* base = buf_.get();
    const void* nl = scan_ < end_ ? std::memchr(base + scan_, '\n', end_ - scan_) : nullptr;
    if (!nl) {
      scan_ = end_;
      // An unterminated frame may still end in '\r' before its '\n'.
      if (end_ - begin_ > max_frame_ + 1) {
        failed_ = true;
        return {status::too_large, {}};
      }
      return {status::need_more, {}};
    }
    const std::size_t nl_pos = static_cast<const char*>(nl) - base;
    std::size_t line_end = nl_pos;
    if (line_end > begin_ && base[line_end - 1] == '\r') --line_end;
    const std::size_t start = begin_;
    begin_ = scan_ = static_cast<offset>(nl_pos + 1);
    if (line_end - start > max_frame_) {
      failed_ = true;
      return {status::too_large, {}};
    }
    if (line_end == start) continue;  // empty line
    return {status::frame, std::string_view(base + start, line_end - start)};
  }
}

void line_framer::release_if_idle() noexcept {
  if (begin_ == end_) {
    buf_.reset();
    cap_ = begin_ = scan_ = end_ = 0;
  }
}

}  // namespace ma
