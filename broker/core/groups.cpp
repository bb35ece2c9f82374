#include "broker/core/groups.hpp"

namespace ma {

void group_table::load(const std::vector<group_record>& groups) {
  groups_.clear();
  memberships_.clear();
  for (auto& g : groups) {
    auto& set = groups_[g.name];
    for (auto& m : g.members) add(set, m);
  }
}

void group_table::add(member_set& set, const std::string& user) {
  if (set.insert(user).second) ++memberships_[user];
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

group_map group_table::of(std::string_view user) const {
  group_map mine;
  if (groups_of(user) == 0) return mine;
  for (auto& [name, members] : groups_) {
    if (members.find(user) != members.end()) mine.emplace(name, members);
  }
  return mine;
}

std::size_t group_table::groups_of(std::string_view user) const {
  auto it = memberships_.find(user);
  return it == memberships_.end() ? 0 : it->second;
}

void group_table::create(const std::string& group, const std::string& creator, const std::vector<std::string>& members) {
  auto& set = groups_[group];
  add(set, creator);
  for (auto& m : members) add(set, m);
}

void group_table::join(const std::string& group, const std::string& user) { add(groups_[group], user); }

void group_table::leave(std::string_view group, std::string_view user) {
  auto g = groups_.find(group);
  if (g == groups_.end()) return;
  if (auto m = g->second.find(user); m != g->second.end()) {
    g->second.erase(m);
    if (auto c = memberships_.find(user); c != memberships_.end() && --c->second == 0) memberships_.erase(c);
  }
  if (g->second.empty()) groups_.erase(g);
}

void group_table::set(const std::string& group, const std::vector<std::string>& members) {
  if (auto g = groups_.find(group); g != groups_.end()) {
    for (auto& m : std::vector<std::string>(g->second.begin(), g->second.end())) leave(group, m);
  }
  if (members.empty()) return;
  auto& set = groups_[group];
  for (auto& m : members) add(set, m);
}

}  // namespace ma
