// The chat's line editor, without I/O: bytes from a terminal in non-canonical mode go in, one
// at a time; what to draw comes out. It edits at a cursor (arrows, Home/End, Ctrl-A/E/B/F),
// deletes whole UTF-8 characters (Backspace, Delete, Ctrl-D on a non-empty line), kills
// (Ctrl-U to the start, Ctrl-K to the end, Ctrl-W the word before), and recalls earlier lines
// (Up/Down). Columns are counted one per character (wide characters are not measured).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ma::agent {

class line_editor {
 public:
  static constexpr std::size_t max_line_bytes = 64 * 1024;  // more typed is ignored
  static constexpr std::size_t max_history = 500;

  enum class event {
    none,     // nothing to draw (inside an escape sequence, or a key that changed nothing)
    changed,  // the line or the cursor changed: draw render() again
    line,     // Enter: take_line() has it
    end,      // Ctrl-D on an empty line: the input is over
  };

  event feed(char byte);
  // The line Enter finished (kept in the history unless empty or the same as the last one);
  // the editor is empty again.
  std::string take_line();

  const std::string& text() const { return text_; }
  std::size_t cursor() const { return cursor_; }  // in bytes, on a character boundary
  // Redraws the terminal's current row: prompt, the line, the cursor at its place.
  std::string render(std::string_view prompt) const;

 private:
  event key(char byte);
  event escape_sequence(std::string_view seq);
  event insert(char byte);
  std::size_t previous_char(std::size_t at) const;
  std::size_t next_char(std::size_t at) const;
  event erase(std::size_t from, std::size_t to);
  event move_to(std::size_t at);
  event recall(std::size_t index);

  std::string text_;
  std::size_t cursor_ = 0;
  std::string escape_;  // an escape sequence being read
  std::vector<std::string> history_;
  std::size_t recalled_ = 0;  // history_.size(): the line being typed, not a recalled one
  std::string draft_;         // the line being typed, kept while earlier ones are recalled
};

}  // namespace ma::agent
