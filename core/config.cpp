#include "core/config.hpp"

#include "core/duration.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace ma {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string long_name(const CLI::Option& opt) {
  const auto& names = opt.get_lnames();
  return names.empty() ? std::string() : names.front();
}

// Edit distance (insertions, deletions, substitutions, and swaps of two neighbours).
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// The candidate nearest to word, if near enough to be a typo of it.
std::string nearest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    const std::size_t d = distance(word, c);
    if (d < best_distance) best = c, best_distance = d;
  }
  return best;
}

// Calls f(option, "--name") for each long name of the options of app and of the subcommands
// that were chosen, and on_command(name) for each subcommand of those.
template <class F, class G>
void for_each_long_option(const CLI::App& app, F&& f, G&& on_command) {
  for (const CLI::Option* opt : app.get_options()) {
    for (const auto& n : opt->get_lnames()) f(*opt, "--" + n);
  }
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    on_command(sub->get_name());
    if (sub->parsed()) for_each_long_option(*sub, f, on_command);
  }
}

// Runs CLI11 and turns its parse errors into config_error, keeping help and version requests.
void run_cli(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());  // CLI11 takes them in reverse order
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    throw;
  } catch (const CLI::CallForAllHelp&) {
    throw;
  } catch (const CLI::CallForVersion&) {
    throw;
  } catch (const CLI::ParseError& e) {
    throw config_error(parse_error_sentence(app, e));
  }
}

}  // namespace

std::string mistyped_argument_hint(const CLI::App& app) {
  std::vector<std::string> options, commands;
  for_each_long_option(
      app, [&](const CLI::Option&, std::string name) { options.push_back(std::move(name)); },
      [&](const std::string& command) { commands.push_back(command); });
  for (const auto& arg : app.remaining(true)) {
    if (arg.starts_with("--")) {
      const std::string name = arg.substr(0, arg.find('='));
      if (std::find(options.begin(), options.end(), name) != options.end()) continue;
      const std::string near = nearest(name, options);
      return "'" + name + "' is not an option here" + (near.empty() ? "" : "; did you mean " + near + "?");
    }
    if (!arg.starts_with("-") && app.get_subcommands().empty() && !commands.empty()) {
      const std::string near = nearest(arg, commands);
      if (!near.empty()) return "'" + arg + "' is not a command; did you mean " + near + "?";
    }
  }
  return {};
}

std::string parse_error_sentence(const CLI::App& app, const CLI::ParseError& e) {
  // An option or command mistyped gets the nearest one, rather than CLI11's list of the
  // arguments it could not place.
  if (std::string hint = mistyped_argument_hint(app); !hint.empty()) return hint;
  const std::string what = e.what();
  std::smatch m;
  static const std::regex not_in(R"(^(--[\w-]+): (.*) not in \{(.*)\}$)");
  if (std::regex_match(what, m, not_in)) {
    std::string values = m[3];
    for (std::size_t at = 0; (at = values.find(',', at)) != std::string::npos; at += 2) values.replace(at, 1, ", ");
    return m[1].str() + ": '" + m[2].str() + "' is not one of: " + values + ".";
  }
  static const std::regex not_converted(R"(^Could not convert: (--[\w-]+) = (.*)$)");
  if (std::regex_match(what, m, not_converted)) {
    std::string type;  // of the option named, as its --help shows it
    for_each_long_option(
        app, [&](const CLI::Option& opt, const std::string& name) {
          if (name == m[1]) type = opt.get_type_name();
        },
        [](const std::string&) {});
    if (type.find("BOOLEAN") != std::string::npos) {
      return m[1].str() + ": '" + m[2].str() + "' is not on or off (true/false, yes/no and 1/0 work too).";
    }
    return m[1].str() + ": '" + m[2].str() + "' is not a value it takes" + (type.empty() ? "" : " (" + type + ")") + ".";
  }
  return what;
}

CLI::Option* add_duration_option(CLI::App& app, const std::string& name, std::uint64_t& ms, const std::string& help,
                                 std::uint64_t min_ms) {
  const CLI::Validator as_ms(
      [min_ms](std::string& v) -> std::string {
        const auto parsed = parse_duration_ms(v);
        if (!parsed) {
          return "'" + v + "' is not a duration of at most 100 years: give milliseconds (1500) or a number with "
                 "a unit (500ms, 10s, 5m, 2h, 7d)";
        }
        if (*parsed < min_ms) return "'" + v + "' is shorter than " + std::to_string(min_ms) + " ms";
        v = std::to_string(*parsed);
        return {};
      },
      "DURATION");
  return app.add_option(name, ms, help + " (ms, or with a unit: 500ms, 10s, 5m, 2h, 7d)")->transform(as_ms);
}

std::vector<std::string> comma_list(std::string_view value) {
  std::vector<std::string> items;
  while (true) {
    const std::size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) items.emplace_back(item);
    if (comma == std::string_view::npos) return items;
    value.remove_prefix(comma + 1);
  }
}

std::vector<config_entry> parse_config_text(std::string_view text, std::string_view file_name) {
  std::vector<config_entry> entries;
  for_each_line(text, [&](std::string_view line, int line_no) {
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) return;
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      throw config_error(std::string(file_name) + " line " + std::to_string(line_no) +
                         ": expected 'name = value', got '" + std::string(line) + "'.");
    }
    std::string_view name = trim(line.substr(0, eq));
    std::string_view value = trim(line.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    if (name.starts_with("--")) name.remove_prefix(2);
    if (name.empty()) {
      throw config_error(std::string(file_name) + " line " + std::to_string(line_no) + ": the option name is missing.");
    }
    entries.push_back({std::string(name), std::string(value), line_no});
  });
  return entries;
}

std::string_view to_string(option_source s) noexcept {
  switch (s) {
    case option_source::default_value: return "default";
    case option_source::file: return "file";
    case option_source::command_line: return "command line";
  }
  return "default";
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config_error("Cannot read the config file '" + path + "': check that it exists and is readable.");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<resolved_option> parse_with_config(CLI::App& app, std::vector<std::string> args,
                                               const std::string& config_option) {
  run_cli(app, args);

  std::set<std::string> from_command_line;
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->count() > 0) from_command_line.insert(long_name(*opt));
  }

  std::set<std::string> from_file;
  const CLI::Option* config = app.get_option_no_throw(config_option);
  if (config && config->count() > 0) {
    const std::string path = config->as<std::string>();
    const std::vector<config_entry> entries = parse_config_text(read_text_file(path), path);
    std::vector<std::string> file_args;
    for (const config_entry& e : entries) {
      const CLI::Option* opt = app.get_option_no_throw("--" + e.name);
      if (!opt || opt->get_lnames().empty() || "--" + e.name == config_option) {
        throw config_error(path + " line " + std::to_string(e.line) + ": '" + e.name + "' is not an option here.");
      }
      if (from_command_line.count(e.name)) continue;
      from_file.insert(e.name);
      file_args.push_back("--" + e.name + "=" + e.value);
    }
    if (!file_args.empty()) {
      file_args.insert(file_args.end(), args.begin(), args.end());
      try {
        run_cli(app, std::move(file_args));
      } catch (const config_error& e) {
        throw config_error(path + ": " + e.what());
      }
    }
  }

  std::vector<resolved_option> resolved;
  for (const CLI::Option* opt : app.get_options()) {
    const std::string name = long_name(*opt);
    if (name.empty() || name == "help" || name == "version") continue;
    resolved_option r{name, {}, option_source::default_value};
    if (opt->count() > 0) {
      const auto& results = opt->results();
      for (std::size_t i = 0; i < results.size(); ++i) r.value += (i ? "," : "") + results[i];
      r.source = from_command_line.count(name) ? option_source::command_line : option_source::file;
    } else {
      r.value = opt->get_default_str();
    }
    resolved.push_back(std::move(r));
  }
  return resolved;
}

}  // namespace ma
