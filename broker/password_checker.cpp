#include "broker/password_checker.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <thread>

namespace ma {

namespace {
// Each check takes a core and the cost's memory for tens of milliseconds: one thread fewer than
// the cores (the network thread keeps one), at least 1, at most 4.
unsigned pool_threads() { return std::clamp(std::thread::hardware_concurrency(), 2u, 5u) - 1; }
}  // namespace

password_checker::password_checker(std::string path, const password_cost& cost) : pool_(pool_threads()) {
  reload(std::move(path), cost);
}

password_checker::~password_checker() { pool_.join(); }

std::size_t password_checker::reload(std::string path, const password_cost& cost) {
  auto table = std::make_shared<const password_table>(read_password_file(path), cost);
  std::lock_guard lock(mutex_);
  path_ = std::move(path);
  cost_ = cost;
  table_ = std::move(table);
  return table_->size();
}

std::size_t password_checker::users() const {
  std::lock_guard lock(mutex_);
  return table_->size();
}

void password_checker::check(std::string user, std::string password, std::function<void(bool)> done) {
  std::shared_ptr<const password_table> table;
  {
    std::lock_guard lock(mutex_);
    table = table_;
  }
  boost::asio::post(pool_, [this, table = std::move(table), user = std::move(user), password = std::move(password),
                            done = std::move(done)] {
    const auto verdict = table->verify(user, password);
    if (verdict.needs_rehash) rehash(user, password);
    done(verdict.ok);
  });
}

void password_checker::rehash(const std::string& user, const std::string& password) {
  std::lock_guard lock(mutex_);
  try {
    auto lines = read_password_file(path_);
    set_password_line(lines, user, hash_password(password, cost_));
    // Used from now on even if the file can not be written (the unit keeps it read-only to the
    // broker): one warning per user until the file is read again, not one per login.
    table_ = std::make_shared<const password_table>(lines, cost_);
    write_password_file(path_, lines);
    spdlog::info("the password of '{}' was hashed again at the configured cost in '{}'", user, path_);
  } catch (const std::exception& e) {
    spdlog::warn("the password of '{}' was hashed again at the configured cost but not stored ({}); "
                 "'message-broker passwd' stores it",
                 user, e.what());
  }
}

}  // namespace ma
