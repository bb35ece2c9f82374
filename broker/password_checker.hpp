// Checks log_in passwords against the password file on threads of its own: argon2id is slow by
// design, and never runs on the network thread. The file is read at construction and again by
// reload() (SIGHUP). A right password whose hash is cheaper than the configured cost is hashed
// again at that cost and written back to the file.
#pragma once

#include <boost/asio/thread_pool.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "auth/passwords.hpp"

namespace ma {

class password_checker {
 public:
  // Reads path; throws config_error with a sentence naming the file (and line) on failure.
  password_checker(std::string path, const password_cost& cost);
  // Waits for the checks under way.
  ~password_checker();
  password_checker(const password_checker&) = delete;
  password_checker& operator=(const password_checker&) = delete;

  // Verifies on the pool; done(right) runs on a pool thread.
  void check(std::string user, std::string password, std::function<void(bool right)> done);
  // Reads the file again (or another one); on failure throws config_error and keeps the users it
  // had. Returns how many users it has now.
  std::size_t reload(std::string path, const password_cost& cost);
  std::size_t users() const;

 private:
  void rehash(const std::string& user, const std::string& password);

  boost::asio::thread_pool pool_;
  mutable std::mutex mutex_;
  std::string path_;
  password_cost cost_;
  std::shared_ptr<const password_table> table_;
};

}  // namespace ma
