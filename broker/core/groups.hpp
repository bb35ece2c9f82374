// The groups the broker knows, in memory as in the database (loaded at start, changed after
// each change committed). Sans-I/O.
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/replies.hpp"
#include "storage/database.hpp"

namespace ma {

class group_table {
 public:
  void load(const std::vector<group_record>& groups);

  bool exists(std::string_view group) const { return groups_.find(group) != groups_.end(); }
  bool is_member(std::string_view group, std::string_view user) const;
  // nullptr when there is no such group.
  const member_set* members(std::string_view group) const;
  // The members a group message of sender goes to: every member but the sender.
  std::vector<std::string> recipients(std::string_view group, std::string_view sender) const;
  // The groups user is a member of, with their members (what get_group_list answers).
  group_map of(std::string_view user) const;
  // How many groups user is a member of.
  std::size_t groups_of(std::string_view user) const;

  void create(const std::string& group, const std::string& creator, const std::vector<std::string>& members);
  void join(const std::string& group, const std::string& user);
  // A group whose last member leaves is gone.
  void leave(std::string_view group, std::string_view user);
  // The group has these members now (none: it is gone), as a cluster's registry says.
  void set(const std::string& group, const std::vector<std::string>& members);

  const group_map& all() const { return groups_; }

 private:
  void add(member_set& set, const std::string& user);

  group_map groups_;
  std::map<std::string, std::size_t, std::less<>> memberships_;  // user: how many groups
};

}  // namespace ma
