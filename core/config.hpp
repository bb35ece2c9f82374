// Options from the command line and from a config file of "name = value" lines, the names being
// the long options without "--". The command line wins over the file, the file over defaults.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace CLI {
class App;
class Option;
class ParseError;
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

// Calls f(line, number) for each line of text, numbered from 1, without its "\n" or "\r\n":
// the one line loop of the files people write (config, password and ACL files).
template <class F>
void for_each_line(std::string_view text, F&& f) {
  int number = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    f(line, ++number);
  }
}

// The items of an option that lists several values separated by commas ("a:1, b:2"), spaces
// around each trimmed, empty ones dropped.
std::vector<std::string> comma_list(std::string_view value);

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

// An option that takes a duration (parse_duration_ms: "1500", "500ms", "10s", "5m", "7d") into
// ms, from min_ms to max_duration_ms; a bad one is refused with a sentence saying the forms.
CLI::Option* add_duration_option(CLI::App& app, const std::string& name, std::uint64_t& ms, const std::string& help,
                                 std::uint64_t min_ms = 1);

// After a CLI11 parse error: for the first argument app could not place, "'--prot' is not an
// option here; did you mean --port?" (or "'sned' is not a command; did you mean send?"), or
// empty when there is none.
std::string mistyped_argument_hint(const CLI::App& app);
// What to tell the user after a CLI11 parse error: the hint above, or for a value an option
// does not take, its valid values ("--sqlite-synchronous: 'fast' is not one of: normal, full";
// "--discovery: 'maybe' is not on or off"), else CLI11's own text.
std::string parse_error_sentence(const CLI::App& app, const CLI::ParseError& e);

// Reads a whole file; throws config_error naming it.
std::string read_text_file(const std::string& path);

}  // namespace ma
