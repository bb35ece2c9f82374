// Incremental framer for newline-delimited JSON (protocol.md, "Transports").
//
// Sans-I/O: a reader asks for space with prepare(), reads into it, commit()s the byte count,
// then calls next() until it says need_more. Frames are views into the framer's buffer, valid
// until the next prepare()/push(). "\r\n" is accepted, empty lines are skipped, and a frame
// longer than max_frame_bytes is reported as too_large without buffering more than the limit.
// The buffer grows on demand and release_if_idle() frees it, so an idle connection holds none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace ma {

class line_framer {
 public:
  enum class status { frame, need_more, too_large };
  struct next_result {
    status st;
    std::string_view line;  // the frame without its line ending, when st == frame
  };

  explicit line_framer(std::size_t max_frame_bytes, std::size_t read_chunk = 16 * 1024);

  // Space to read into. Call next() until need_more first; then the span is never empty
  // (it is empty only after too_large). Invalidates the frames returned before.
  std::span<char> prepare();
  void commit(std::size_t n) noexcept;
  next_result next() noexcept;

  // For callers that already hold the bytes: copies them in and calls on_frame(line) for each
  // complete frame. Returns false once a frame is too large (the rest is not looked at).
  template <class OnFrame>
  bool feed(std::string_view bytes, OnFrame&& on_frame) {
    while (!bytes.empty()) {
      auto space = prepare();
      if (space.empty()) return false;
      const std::size_t n = space.size() < bytes.size() ? space.size() : bytes.size();
      for (std::size_t i = 0; i < n; ++i) space[i] = bytes[i];
      commit(n);
      bytes.remove_prefix(n);
      for (;;) {
        auto r = next();
        if (r.st == status::too_large) return false;
        if (r.st == status::need_more) break;
        on_frame(r.line);
      }
    }
    return !failed_;
  }

  // Bytes of a partial frame held for the next read.
  std::size_t buffered() const noexcept { return end_ - begin_; }
  // Frees the buffer when it holds nothing.
  void release_if_idle() noexcept;
  bool failed() const noexcept { return failed_; }
  // A new limit for the frames from here on (a connection that logged in may send larger ones).
  void set_max_frame_bytes(std::size_t n) noexcept { max_frame_ = clamp(n); }

 private:
  // Offsets in 32 bits: a frame is at most 1 GiB (the broker's --max-frame-bytes), and every
  // idle connection holds a framer (40 bytes instead of 64).
  using offset = std::uint32_t;
  static constexpr std::size_t max_limit = 0xffff'0000u;  // a larger max_frame_bytes is cut to this
  static offset clamp(std::size_t n) noexcept { return static_cast<offset>(n < max_limit ? n : max_limit); }
  offset max_frame_;
  offset chunk_;
  std::unique_ptr<char[]> buf_;
  offset cap_ = 0;
  offset begin_ = 0;  // start of the unconsumed bytes
  offset scan_ = 0;   // where the search for '\n' resumes
  offset end_ = 0;    // end of the committed bytes
  bool failed_ = false;
};

}  // namespace ma
