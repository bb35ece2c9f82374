#include "agent/line_editor.hpp"

#include <algorithm>

namespace ma::agent {

namespace {
bool continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }
bool word_char(char c) { return c != ' ' && c != '\t'; }
// The bytes of the UTF-8 character that starts with lead.
std::size_t utf8_length(char lead) {
  const auto u = static_cast<unsigned char>(lead);
  if ((u & 0xE0) == 0xC0) return 2;
  if ((u & 0xF0) == 0xE0) return 3;
  if ((u & 0xF8) == 0xF0) return 4;
  return 1;
}
}  // namespace

line_editor::event line_editor::feed(char byte) {
  if (!escape_.empty()) {
    escape_ += byte;
    // ESC [ parameters final, or ESC O final; a final byte is in 0x40..0x7E.
    const bool introducer = escape_.size() == 2;
    if (introducer && byte != '[' && byte != 'O') {
      escape_.clear();  // Alt+key and the like: ignored
      return event::none;
    }
    const auto u = static_cast<unsigned char>(byte);
    if (!introducer && u >= 0x40 && u <= 0x7E) {
      std::string seq = std::move(escape_);
      escape_.clear();
      return escape_sequence(seq);
    }
    if (escape_.size() > 16) escape_.clear();  // not a sequence we know: dropped
    return event::none;
  }
  return key(byte);
}

line_editor::event line_editor::key(char byte) {
  switch (byte) {
    case '\x1b': escape_ = "\x1b"; return event::none;
    case '\r':
    case '\n': return event::line;
    case '\x7f':
    case '\b': return erase(previous_char(cursor_), cursor_);
    case '\x04':  // Ctrl-D
      if (text_.empty()) return event::end;
      return erase(cursor_, next_char(cursor_));
    case '\x01': return move_to(0);                          // Ctrl-A
    case '\x05': return move_to(text_.size());               // Ctrl-E
    case '\x02': return move_to(previous_char(cursor_));     // Ctrl-B
    case '\x06': return move_to(next_char(cursor_));         // Ctrl-F
    case '\x15': return erase(0, cursor_);                   // Ctrl-U
    case '\x0b': return erase(cursor_, text_.size());        // Ctrl-K
    case '\x17': {                                           // Ctrl-W
      std::size_t from = cursor_;
      while (from > 0 && !word_char(text_[from - 1])) --from;
      while (from > 0 && word_char(text_[from - 1])) --from;
      return erase(from, cursor_);
    }
    case '\x10': return recall(recalled_ == 0 ? 0 : recalled_ - 1);  // Ctrl-P
    case '\x0e': return recall(recalled_ + 1);                        // Ctrl-N
    default: break;
  }
  if (static_cast<unsigned char>(byte) < 0x20 && byte != '\t') return event::none;  // other controls
  return insert(byte);
}

line_editor::event line_editor::escape_sequence(std::string_view seq) {
  const std::string_view body = seq.substr(2);  // after ESC [ or ESC O
  if (body == "A") return recall(recalled_ == 0 ? 0 : recalled_ - 1);
  if (body == "B") return recall(recalled_ + 1);
  if (body == "C") return move_to(next_char(cursor_));
  if (body == "D") return move_to(previous_char(cursor_));
  if (body == "H" || body == "1~" || body == "7~") return move_to(0);
  if (body == "F" || body == "4~" || body == "8~") return move_to(text_.size());
  if (body == "3~") return erase(cursor_, next_char(cursor_));
  return event::none;  // function keys, Page Up/Down...: ignored
}

line_editor::event line_editor::insert(char byte) {
  if (text_.size() >= max_line_bytes) return event::none;
  text_.insert(text_.begin() + static_cast<std::ptrdiff_t>(cursor_), byte);
  ++cursor_;
  // A character of several bytes is drawn once it is whole.
  const std::size_t start = previous_char(cursor_);
  return cursor_ - start >= utf8_length(text_[start]) ? event::changed : event::none;
}

std::size_t line_editor::previous_char(std::size_t at) const {
  if (at == 0) return 0;
  --at;
  while (at > 0 && continuation(text_[at])) --at;
  return at;
}

std::size_t line_editor::next_char(std::size_t at) const {
  if (at >= text_.size()) return text_.size();
  ++at;
  while (at < text_.size() && continuation(text_[at])) ++at;
  return at;
}

line_editor::event line_editor::erase(std::size_t from, std::size_t to) {
  if (from >= to) return event::none;
  text_.erase(from, to - from);
  cursor_ = from;
  return event::changed;
}

line_editor::event line_editor::move_to(std::size_t at) {
  if (at == cursor_) return event::none;
  cursor_ = at;
  return event::changed;
}

line_editor::event line_editor::recall(std::size_t index) {
  if (index > history_.size() || index == recalled_) return event::none;
  if (recalled_ == history_.size()) draft_ = text_;
  recalled_ = index;
  text_ = index == history_.size() ? draft_ : history_[index];
  cursor_ = text_.size();
  return event::changed;
}

std::string line_editor::take_line() {
  std::string line = std::move(text_);
  text_.clear();
  cursor_ = 0;
  draft_.clear();
  if (!line.empty() && (history_.empty() || history_.back() != line)) {
    history_.push_back(line);
    if (history_.size() > max_history) history_.erase(history_.begin());
  }
  recalled_ = history_.size();
  return line;
}

std::string line_editor::render(std::string_view prompt) const {
  std::string out = "\r\x1b[K";
  out += prompt;
  out += text_;
  const auto after = static_cast<std::size_t>(
      std::count_if(text_.begin() + static_cast<std::ptrdiff_t>(cursor_), text_.end(), [](char c) { return !continuation(c); }));
  if (after > 0) out += "\x1b[" + std::to_string(after) + "D";
  return out;
}

}  // namespace ma::agent
