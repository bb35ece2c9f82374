#include "admin/command_line.hpp"

#include <CLI/CLI.hpp>
#include <ostream>

#include "core/config.hpp"

namespace ma {

std::optional<int> parse_command(CLI::App& app, const std::vector<std::string>& args, std::ostream& out,
                                 std::ostream& err) {
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    err << app.get_name() << ": " << parse_error_sentence(app, e) << "\n";
    return 2;
  }
  return std::nullopt;
}

}  // namespace ma
