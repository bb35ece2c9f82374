#include "broker/core/groups.hpp"

namespace ma {

void group_table::load(const std::vector<group_record>& groups) {
  groups_.clear();
  for (auto& g : groups) groups_[g.name] = member_set(g.members.begin(), g.members.end());
}

bool group_table::is_member(std::string_view group, std::string_view user) const {
  auto g = groups_.find(group);
  return g != groups_.end() && g->second.find(user) != g->second.end();
}

const member_set* group_table::members(std::string_view group) const {
  auto g = groups_.find(group);
  return g == groups_.end() ? nullptr : &g->second;
}

std::vector<std::string> group_table::recipients(std::string_view group, std::string_view sender) const {
  std::vector<std::string> out;
  if (auto* m = members(group)) {
    out.reserve(m->size());
    for (auto& member : *m) {
      if (member != sender) out.push_back(member);
    }
  }
  return out;
}

std::size_t group_table::groups_of(std::string_view user) const {
  std::size_t n = 0;
  for (auto& [name, members] : groups_) n += members.find(user) != members.end() ? 1 : 0;
  return n;
}

void group_table::create(const std::string& group, const std::string& creator, const std::vector<std::string>& members) {
  auto& set = groups_[group];
  set.insert(creator);
  set.insert(members.begin(), members.end());
}

void group_table::join(const std::string& group, const std::string& user) { groups_[group].insert(user); }

void group_table::leave(std::string_view group, std::string_view user) {
  auto g = groups_.find(group);
  if (g == groups_.end()) return;
  if (auto m = g->second.find(user); m != g->second.end()) g->second.erase(m);
  if (g->second.empty()) groups_.erase(g);
}

}  // namespace ma
