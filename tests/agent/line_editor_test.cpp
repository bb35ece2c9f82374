// The chat's line editor, fed the bytes a terminal sends for each key.
#include "agent/line_editor.hpp"

#include <gtest/gtest.h>

namespace ma::agent {
namespace {

using event = line_editor::event;

// Feeds keys; returns the last event.
event type(line_editor& e, std::string_view keys) {
  event last = event::none;
  for (char c : keys) last = e.feed(c);
  return last;
}

const std::string left = "\x1b[D", right = "\x1b[C", up = "\x1b[A", down = "\x1b[B", home = "\x1b[H",
                  end_key = "\x1b[F", del = "\x1b[3~", backspace = "\x7f";

TEST(LineEditor, InsertsAndDeletesAtTheCursor) {
  line_editor e;
  EXPECT_EQ(type(e, "helo"), event::changed);
  EXPECT_EQ(type(e, left + "l"), event::changed);
  EXPECT_EQ(e.text(), "hello");
  EXPECT_EQ(type(e, home + "oh, " + end_key + "!"), event::changed);
  EXPECT_EQ(e.text(), "oh, hello!");
  type(e, home + del + del + del + del);
  EXPECT_EQ(e.text(), "hello!");
  EXPECT_EQ(type(e, "\x01"), event::none);  // Ctrl-A at the start already
  type(e, "\x05" + backspace);
  EXPECT_EQ(e.text(), "hello");
  EXPECT_EQ(type(e, "\r"), event::line);
  EXPECT_EQ(e.take_line(), "hello");
  EXPECT_EQ(e.text(), "");
  EXPECT_EQ(e.cursor(), 0u);
}

TEST(LineEditor, MovesAndDeletesWholeUtf8Characters) {
  line_editor e;
  // "é" is two bytes, "€" three: nothing to draw until the character is whole.
  EXPECT_EQ(e.feed('\xc3'), event::none);
  EXPECT_EQ(e.feed('\xa9'), event::changed);
  EXPECT_EQ(type(e, "\xe2\x82"), event::none);
  EXPECT_EQ(e.feed('\xac'), event::changed);
  type(e, "x" + left + left + backspace);  // the cursor before "€": deletes "é" whole
  EXPECT_EQ(e.text(), "\xe2\x82\xacx");
  EXPECT_EQ(e.cursor(), 0u);
  type(e, right);
  EXPECT_EQ(e.cursor(), 3u);
  type(e, del);
  EXPECT_EQ(e.text(), "\xe2\x82\xac");
  // The cursor goes back one column per character after it, not one per byte.
  type(e, home);
  EXPECT_EQ(e.render("> "), "\r\x1b[K> \xe2\x82\xac\x1b[1D");
  type(e, end_key);
  EXPECT_EQ(e.render("> "), "\r\x1b[K> \xe2\x82\xac");
}

TEST(LineEditor, KillsAndRecallsEarlierLines) {
  line_editor e;
  type(e, "/to bob first\r");
  e.take_line();
  type(e, "second\r");
  e.take_line();
  type(e, "draft");
  EXPECT_EQ(type(e, up), event::changed);
  EXPECT_EQ(e.text(), "second");
  type(e, up);
  EXPECT_EQ(e.text(), "/to bob first");
  EXPECT_EQ(type(e, up), event::none);  // the oldest
  type(e, down + down);
  EXPECT_EQ(e.text(), "draft");  // the line being typed comes back
  type(e, "\x17");               // Ctrl-W: the word before the cursor
  EXPECT_EQ(e.text(), "");
  type(e, "one two three" + left + left + left + left + left + "\x0b");  // Ctrl-K: to the end
  EXPECT_EQ(e.text(), "one two ");
  type(e, "\x15");  // Ctrl-U: to the start
  EXPECT_EQ(e.text(), "");
  EXPECT_EQ(type(e, "\x04"), event::end);  // Ctrl-D on an empty line
}

TEST(LineEditor, IgnoresKeysItDoesNotKnowAndBoundsTheLine) {
  line_editor e;
  type(e, "a\x1b[15~\x1b[5~\x1bxb\x07");  // F5, Page Up, Alt+x, a bell
  EXPECT_EQ(e.text(), "ab");
  for (std::size_t i = 0; i < line_editor::max_line_bytes + 10; ++i) e.feed('z');
  EXPECT_EQ(e.text().size(), line_editor::max_line_bytes);
}

}  // namespace
}  // namespace ma::agent
