// The password file (--password-file): one "username:HASH" a line, HASH a PHC string of
// argon2id made by libsodium's crypto_pwhash_str; '#' comments and blank lines are kept as
// they are when the file is rewritten. Hashing and verifying are slow by design (tens of
// milliseconds and tens of MiB each): call them on a worker thread, never on a network thread.
// Everything here is safe to call from any thread; a password_table is immutable once built.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ma {

// What a new hash costs (libsodium's opslimit and memlimit). The defaults are libsodium's
// "interactive" ones: about 50 ms and 64 MiB on a current core.
struct password_cost {
  std::uint64_t ops = 2;
  std::uint64_t mem_kib = 64 * 1024;
};

// One line of the file: a user's entry, or any other line (comment, blank) kept as it was.
struct password_line {
  std::string user;  // empty: not an entry
  std::string hash;
  std::string text;  // the line itself, for the lines that are not entries
};

// Parses the file's text. Throws config_error naming path and the line number of a malformed
// line (no ':', a bad username, a hash that is not an argon2id PHC string, a name twice).
std::vector<password_line> parse_password_file(std::string_view text, const std::string& path);
// Reads and parses the file; throws config_error if it can not be read.
std::vector<password_line> read_password_file(const std::string& path);
// Writes lines to path atomically (a temporary file beside it, then rename) with mode 0600, or
// the mode, owner and group the file had. Throws config_error naming the file.
void write_password_file(const std::string& path, const std::vector<password_line>& lines);
// Sets user's hash (a new line at the end if it has none) or, with hash empty, removes its
// line. Returns false if there was nothing to remove.
bool set_password_line(std::vector<password_line>& lines, std::string_view user, std::string_view hash);

// The PHC string of password at that cost. Throws std::runtime_error if libsodium fails (out
// of memory).
std::string hash_password(std::string_view password, const password_cost& cost);

class password_table {
 public:
  struct verdict {
    bool ok = false;
    bool needs_rehash = false;  // ok, but hashed at a lower cost than the table's
  };

  // The entries of lines; cost is what needs_rehash compares with, and what the dummy hash
  // (verified for unknown names) costs.
  password_table(const std::vector<password_line>& lines, const password_cost& cost);

  // Right password for a known user. An unknown name costs the same time as a wrong password
  // (a dummy hash is verified), so names can not be probed by timing.
  verdict verify(std::string_view user, std::string_view password) const;
  std::size_t size() const { return users_.size(); }

 private:
  std::vector<std::pair<std::string, std::string>> users_;  // sorted by name
  std::string dummy_;
  password_cost cost_;
};

// libsodium's initialisation, once per process; throws std::runtime_error if it fails.
void init_sodium();

}  // namespace ma
