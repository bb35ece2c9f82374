// What the operator's commands share: parsing their words with CLI11.
#pragma once

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace ma {

// Parses args into app. Returns the exit status to end with at once (0 after printing the help
// to out, 2 after a usage error to err, prefixed with app's name), or nullopt to go on.
std::optional<int> parse_command(CLI::App& app, const std::vector<std::string>& args, std::ostream& out,
                                 std::ostream& err);

}  // namespace ma
