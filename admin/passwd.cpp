#include "admin/passwd.hpp"

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <optional>

#include "admin/command_line.hpp"
#include "auth/passwords.hpp"
#include "core/config.hpp"
#include "core/names.hpp"
#include "core/terminal.hpp"

namespace ma {
int run_passwd_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                       std::ostream& err) {
  CLI::App app{"Add, replace or delete a user's line in the broker's password file.", "message-broker passwd"};
  std::string path, user;
  bool remove = false;
  password_cost cost;
  app.add_option("--password-file", path, "The password file (created with mode 0600 if missing)")->required();
  app.add_flag("--delete", remove, "Delete the user's line instead");
  app.add_option("--password-hash-ops", cost.ops, "argon2id passes (as the broker's option)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000}));
  app.add_option("--password-hash-mem-kib", cost.mem_kib, "argon2id memory in KiB (as the broker's option)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{8}, std::uint64_t{4} * 1024 * 1024));
  app.add_option("user", user, "The username")->required();
  if (auto status = parse_command(app, args, out, err)) return *status;
  if (!is_valid_username(user)) {
    err << "message-broker passwd: '" << user.substr(0, 64) << "' is not a username (1 to 64 of A-Z a-z 0-9 . _ -).\n";
    return 2;
  }
  try {
    std::vector<password_line> lines;
    if (std::filesystem::exists(path)) lines = read_password_file(path);
    if (remove) {
      if (!set_password_line(lines, user, "")) {
        err << "message-broker passwd: '" << user << "' has no line in '" << path << "'; nothing was changed.\n";
        return 1;
      }
    } else {
      std::optional<std::string> password;
      if (&in == &std::cin && stdin_is_terminal()) {
        password = read_secret("Password: ", err);
        auto again = read_secret("Password again: ", err);
        if (password && again != password) {
          err << "message-broker passwd: the two passwords differ; nothing was changed.\n";
          return 1;
        }
      } else {
        password = read_line(in);
      }
      if (!password || password->empty()) {
        err << "message-broker passwd: no password was given (one line on standard input); nothing was changed.\n";
        return 1;
      }
      set_password_line(lines, user, hash_password(*password, cost));
    }
    write_password_file(path, lines);
    out << (remove ? "deleted '" : "set the password of '") << user << "' in " << path << '\n';
  } catch (const std::exception& e) {
    err << "message-broker passwd: " << e.what() << '\n';
    return 1;
  }
  return 0;
}

}  // namespace ma
