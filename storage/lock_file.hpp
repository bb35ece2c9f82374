// One broker per database: an exclusive lock on "<database>.lock", held for the broker's
// lifetime and released by the kernel when the process ends however it ends (kill -9 too).
// The file holds the owner's pid, for the sentence another broker prints when it is refused.
#pragma once

#include <string>

namespace ma {

class database_lock {
 public:
  // Throws std::runtime_error naming the database and the pid of the broker that holds it.
  explicit database_lock(const std::string& database_path);
  ~database_lock();
  database_lock(const database_lock&) = delete;
  database_lock& operator=(const database_lock&) = delete;

  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace ma
