// Options from the command line and from a config file of "name = value" lines, the names being
// the long options without "--". The command line wins over the file, the file over defaults.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace CLI {
class App;
}

namespace ma {

// A bad option value, a bad config file line, or an unreadable file. what() names the option
// or the file and line. Programs exit with status 2 on it.
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct config_entry {
  std::string name;
  std::string value;
  int line = 0;
};

// Parses the text of a config file: '#' starts a comment, blank lines are skipped, quotes
// around a value are removed. Throws config_error naming file_name and the line.
std::vector<config_entry> parse_config_text(std::string_view text, std::string_view file_name);

enum class option_source { default_value, file, command_line };
std::string_view to_string(option_source s) noexcept;

struct resolved_option {
  std::string name;  // long name without "--"
  std::string value;
  option_source source;
};

// Parses args (argv without the program name) into app, taking from the file named by the
// option config_option (e.g. "--config") every top-level option the command line did not set.
// Returns each top-level long option with its value and where it came from. Throws
// config_error; lets CLI::CallForHelp and CLI::CallForVersion through for the caller.
std::vector<resolved_option> parse_with_config(CLI::App& app, std::vector<std::string> args,
                                               const std::string& config_option);

// Reads a whole file; throws config_error naming it.
std::string read_text_file(const std::string& path);

}  // namespace ma
