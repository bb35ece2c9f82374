#include "core/terminal.hpp"

#include <termios.h>
#include <unistd.h>

#include <iostream>

namespace ma {

bool stdin_is_terminal() { return ::isatty(STDIN_FILENO) == 1; }

std::optional<std::string> read_line(std::istream& in) {
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::optional<std::string> read_secret(const char* prompt, std::ostream& err) {
  err << prompt << std::flush;
  termios old{};
  const bool tty = ::tcgetattr(STDIN_FILENO, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  auto line = read_line(std::cin);
  if (tty) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
  err << '\n';
  return line;
}

}  // namespace ma
