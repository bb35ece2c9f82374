#include "auth/passwords.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

#include "core/config.hpp"
#include "core/names.hpp"

namespace ma {
namespace {

constexpr std::string_view argon2id_prefix = "$argon2id$";

// The m= (KiB) and t= of a PHC string, or nullopt if it is not one libsodium can verify.
std::optional<password_cost> cost_of(std::string_view hash) {
  if (!hash.starts_with(argon2id_prefix) || hash.size() >= crypto_pwhash_STRBYTES) return std::nullopt;
  // crypto_pwhash_str_needs_rehash parses the whole string: -1 means it is not a valid one.
  const std::string h(hash);
  if (crypto_pwhash_str_needs_rehash(h.c_str(), crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN) < 0) {
    return std::nullopt;
  }
  auto number_after = [&](std::string_view key) -> std::optional<std::uint64_t> {
    const auto at = hash.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    std::uint64_t v = 0;
    const char* first = hash.data() + at + key.size();
    auto [end, ec] = std::from_chars(first, hash.data() + hash.size(), v);
    if (ec != std::errc() || end == first) return std::nullopt;
    return v;
  };
  auto m = number_after("$m="), t = number_after(",t=");
  if (!m || !t) return std::nullopt;
  return password_cost{*t, *m};
}

}  // namespace

void init_sodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium could not be initialised");
}

std::vector<password_line> parse_password_file(std::string_view text, const std::string& path) {
  init_sodium();
  std::vector<password_line> lines;
  for_each_line(text, [&](std::string_view line, int number) {
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == '#') {
      lines.push_back({{}, {}, std::string(line)});
      return;
    }
    auto where = [&] { return "The password file '" + path + "', line " + std::to_string(number) + ": "; };
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      throw config_error(where() + "expected 'username:HASH'; make the line with 'message-broker passwd'.");
    }
    std::string_view user = line.substr(0, colon), hash = line.substr(colon + 1);
    if (!is_valid_username(user)) {
      throw config_error(where() + "'" + std::string(user.substr(0, 64)) +
                         "' is not a username (1 to 64 of A-Z a-z 0-9 . _ -).");
    }
    if (!cost_of(hash)) {
      throw config_error(where() + "the hash of '" + std::string(user) +
                         "' is not an argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash); set it again "
                         "with 'message-broker passwd'.");
    }
    for (auto& l : lines) {
      if (l.user == user) throw config_error(where() + "'" + std::string(user) + "' has a line already; keep one.");
    }
    lines.push_back({std::string(user), std::string(hash), {}});
  });
  return lines;
}

std::vector<password_line> read_password_file(const std::string& path) {
  return parse_password_file(read_text_file(path), path);
}

void write_password_file(const std::string& path, const std::vector<password_line>& lines) {
  std::string text;
  for (auto& l : lines) {
    text += l.user.empty() ? l.text : l.user + ":" + l.hash;
    text += '\n';
  }
  mode_t mode = 0600;
  struct stat st {};
  const bool existed = ::stat(path.c_str(), &st) == 0;
  if (existed) mode = st.st_mode & 07777;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    return config_error("The password file '" + path + "' could not be written (" + what + ": " + reason +
                        "); it was left as it was.");
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw fail("create");
  ::fchmod(fd, mode);
  // The rewrite keeps the file's owner and group too (root editing the file of a service user):
  // best effort, as only root may give a file away.
  if (existed) (void)!::fchown(fd, st.st_uid, st.st_gid);
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      ::close(fd);
      throw fail("write");
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    throw fail("fsync");
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw fail("rename");
}

bool set_password_line(std::vector<password_line>& lines, std::string_view user, std::string_view hash) {
  auto it = std::find_if(lines.begin(), lines.end(), [&](const password_line& l) { return l.user == user; });
  if (hash.empty()) {
    if (it == lines.end()) return false;
    lines.erase(it);
    return true;
  }
  if (it == lines.end()) {
    lines.push_back({std::string(user), std::string(hash), {}});
  } else {
    it->hash = hash;
  }
  return true;
}

std::string hash_password(std::string_view password, const password_cost& cost) {
  init_sodium();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), cost.ops, cost.mem_kib * 1024,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    throw std::runtime_error("hashing a password failed (out of memory?)");
  }
  return out;
}

password_table::password_table(const std::vector<password_line>& lines, const password_cost& cost) : cost_(cost) {
  for (auto& l : lines) {
    if (!l.user.empty()) users_.emplace_back(l.user, l.hash);
  }
  std::sort(users_.begin(), users_.end());
  dummy_ = hash_password("not a password: the hash verified for unknown names", cost);
}

password_table::verdict password_table::verify(std::string_view user, std::string_view password) const {
  auto it = std::lower_bound(users_.begin(), users_.end(), user,
                             [](const auto& e, std::string_view u) { return e.first < u; });
  const bool known = it != users_.end() && it->first == user;
  const std::string& hash = known ? it->second : dummy_;
  const bool right = crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
  if (!known || !right) return {};
  const auto stored = cost_of(hash);
  return {true, stored && (stored->ops < cost_.ops || stored->mem_kib < cost_.mem_kib)};
}

}  // namespace ma
