#include "storage/lock_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ma {

database_lock::database_lock(const std::string& database_path) : path_(database_path + ".lock") {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    const std::string beside = "Cannot make the lock file '" + path_ + "' beside the database '" + database_path + "': ";
    if (err == EROFS) {
      throw std::runtime_error(beside + "its folder is on a read-only file system. Give --database a file on a "
                               "writable one (the broker writes the database, its WAL and this lock file there).");
    }
    if (err == ENOSPC) {
      throw std::runtime_error(beside + "the disk is full. Free space on it, or give --database a file on another disk.");
    }
    if (err == EACCES || err == EPERM) {
      throw std::runtime_error(beside + "the broker may not write in its folder (" + std::strerror(err) +
                               "). Let the broker's user write there, or give --database a file in a folder it can "
                               "write.");
    }
    throw std::runtime_error(beside + std::strerror(err) + ".");
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw std::runtime_error("The database '" + database_path + "' is in use by another message-broker (pid " +
                               (pid.empty() ? std::string("unknown") : pid) +
                               "): stop that one first, or give --database another file.");
    }
    throw std::runtime_error("Cannot lock '" + path_ + "' (" + std::strerror(err) + ").");
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    // The lock holds all the same; only the pid in the refusal of another broker is missing.
  }
}

database_lock::~database_lock() {
  if (fd_ >= 0) ::close(fd_);  // the file stays: removing it would race with a broker starting
}

}  // namespace ma
