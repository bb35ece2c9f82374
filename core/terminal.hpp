// Asking a person for a secret (a password) on the terminal, for the command-line programs.
#pragma once

#include <iosfwd>
#include <optional>
#include <string>

namespace ma {

// True if standard input is a terminal.
bool stdin_is_terminal();
// Writes prompt to err and reads one line from standard input with echo off (restored however
// it ends); nullopt at the end of the input.
std::optional<std::string> read_secret(const char* prompt, std::ostream& err);
// One line of in without its line end ("\n" or "\r\n"); nullopt at the end of the input.
std::optional<std::string> read_line(std::istream& in);

}  // namespace ma
