// Permissions (--acl-file): who may send to whom, broadcast, and use which groups. The file:
//
//   # comments and blank lines
//   pattern send %u.*        lines before the first block apply to every user
//   pattern group public-*
//   user alice               a block: the lines up to the next block are alice's
//   send *
//   broadcast
//   group ops
//
// Rules: `send GLOB` (recipients of direct and multicast messages), `broadcast`, `group GLOB`
// (groups the user may create, join and send to). GLOB matches whole names; `*` stands for any
// run of characters and `%u` for the user's own name. What no rule allows is refused. Leaving a
// group, lists and acknowledgements need no rule. Immutable once parsed; sans-I/O.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ma {

class acl {
 public:
  // Parses the file's text; throws config_error naming path and the line of anything it does
  // not understand.
  static acl parse(std::string_view text, const std::string& path);

  bool may_send(std::string_view user, std::string_view recipient) const;
  bool may_broadcast(std::string_view user) const;
  bool may_use_group(std::string_view user, std::string_view group) const;
  std::size_t users() const { return by_user_.size(); }

  // True if glob (with %u standing for user) matches the whole of name.
  static bool matches(std::string_view glob, std::string_view name, std::string_view user);

 private:
  struct rules {
    std::vector<std::string> send, group;
    bool broadcast = false;
  };
  const rules* of(std::string_view user) const;
  static bool any_matches(const std::vector<std::string>& globs, std::string_view name, std::string_view user);

  rules everyone_;
  std::map<std::string, rules, std::less<>> by_user_;
};

}  // namespace ma
