#include "broker/core/acl.hpp"

#include <algorithm>

#include "core/config.hpp"
#include "core/names.hpp"

namespace ma {

namespace {

std::vector<std::string_view> words_of(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t at = 0;
  while (at < line.size()) {
    const auto start = line.find_first_not_of(" \t", at);
    if (start == std::string_view::npos) break;
    const auto end = std::min(line.find_first_of(" \t", start), line.size());
    words.push_back(line.substr(start, end - start));
    at = end;
  }
  return words;
}

}  // namespace

// "%u" is expanded to user as the match goes.
bool acl::matches(std::string_view glob, std::string_view name, std::string_view user) {
  while (!glob.empty()) {
    if (glob.front() == '*') {
      glob.remove_prefix(1);
      for (std::size_t skip = 0; skip <= name.size(); ++skip) {
        if (matches(glob, name.substr(skip), user)) return true;
      }
      return false;
    }
    if (glob.starts_with("%u")) {
      if (!name.starts_with(user)) return false;
      glob.remove_prefix(2);
      name.remove_prefix(user.size());
      continue;
    }
    if (name.empty() || name.front() != glob.front()) return false;
    glob.remove_prefix(1);
    name.remove_prefix(1);
  }
  return name.empty();
}

acl acl::parse(std::string_view text, const std::string& path) {
  acl out;
  rules* current = nullptr;  // the block being read; nullptr before the first
  for_each_line(text, [&](std::string_view line, int number) {
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    auto words = words_of(line);
    if (words.empty()) return;
    auto fail = [&](const std::string& what) {
      return config_error("The ACL file '" + path + "', line " + std::to_string(number) + ": " + what);
    };
    rules* target = current;
    if (words[0] == "user") {
      if (words.size() != 2 || !is_valid_username(words[1])) {
        throw fail("expected 'user NAME' with a valid username.");
      }
      current = &out.by_user_[std::string(words[1])];
      return;
    }
    if (words[0] == "pattern") {
      if (current) throw fail("'pattern' lines apply to every user: put them before the first 'user' block.");
      words.erase(words.begin());
      target = &out.everyone_;
      if (words.empty()) throw fail("expected 'pattern send GLOB', 'pattern broadcast' or 'pattern group GLOB'.");
    } else if (!target) {
      throw fail("a rule outside a 'user' block: start the block with 'user NAME', or make it a 'pattern' line.");
    }
    if (words[0] == "broadcast" && words.size() == 1) {
      target->broadcast = true;
    } else if ((words[0] == "send" || words[0] == "group") && words.size() == 2) {
      (words[0] == "send" ? target->send : target->group).emplace_back(words[1]);
    } else {
      throw fail("expected 'send GLOB', 'broadcast' or 'group GLOB', got '" + std::string(line.substr(0, 80)) + "'.");
    }
  });
  return out;
}

const acl::rules* acl::of(std::string_view user) const {
  auto it = by_user_.find(user);
  return it == by_user_.end() ? nullptr : &it->second;
}

bool acl::any_matches(const std::vector<std::string>& globs, std::string_view name, std::string_view user) {
  return std::any_of(globs.begin(), globs.end(), [&](const std::string& g) { return matches(g, name, user); });
}

bool acl::may_send(std::string_view user, std::string_view recipient) const {
  const rules* mine = of(user);
  return any_matches(everyone_.send, recipient, user) || (mine && any_matches(mine->send, recipient, user));
}

bool acl::may_broadcast(std::string_view user) const {
  const rules* mine = of(user);
  return everyone_.broadcast || (mine && mine->broadcast);
}

bool acl::may_use_group(std::string_view user, std::string_view group) const {
  const rules* mine = of(user);
  return any_matches(everyone_.group, group, user) || (mine && any_matches(mine->group, group, user));
}

}  // namespace ma
