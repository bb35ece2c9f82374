// The frames queued for one connection, in the form the socket takes them: small frames appended
// into a few reused buffers, large or shared ones as pieces of their own, and the gather list for
// one write. No socket here: the session writes what gather() lists and reports consume(n).
// Not thread-safe; on the broker's thread.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ma {

class outbox {
 public:
  // A frame of this size or more keeps its own string, freed once written, rather than growing
  // the reused buffers for good (a user list of thousands, a big redelivered message).
  static constexpr std::size_t large_frame = 16 * 1024;

  // Appends one frame: write(std::string&) adds it at the end of the last owned buffer that is
  // not being written. Returns how many bytes it added.
  template <class Write>
  std::size_t append(Write&& write) {
    std::string& buffer = tail();
    const std::size_t before = buffer.size();
    write(buffer);
    const std::size_t added = buffer.size() - before;
    bytes_ += added;
    return added;
  }
  void push(std::string frame);
  void push_shared(std::shared_ptr<const std::string> frame);

  bool empty() const noexcept { return pieces_.empty(); }
  // Queued and not yet written.
  std::size_t bytes() const noexcept { return bytes_; }

  // The gather list for one write: the queued pieces from the front, up to 512 of them or
  // 512 KiB. Valid until the next call that changes the outbox.
  using bytes_view = std::span<const char>;
  const std::vector<bytes_view>& gather();
  // An asynchronous write of the gathered pieces is under way: appends go after them until
  // written() says it is over.
  void writing() noexcept { writing_ = scratch_ ? scratch_->buffers.size() : 0; }
  void written() noexcept { writing_ = 0; }
  // n bytes from the front were written: finished pieces go (their buffers kept for reuse, two
  // of them at most), a piece written in part keeps its rest.
  void consume(std::size_t n);
  // Gives every buffer back to the allocator; only when empty and not writing.
  void release_memory();
  // The same once everything is written, when the buffers it would keep are small: a connection
  // sent a frame now and then (presence) holds nothing between frames, and buffers made for a
  // burst of logins do not stay scattered among the sessions made after them. A buffer grown
  // by a stream of frames is kept for the next burst (release_memory gives it back when idle).
  static constexpr std::size_t small_buffer = 1024;
  void release_if_small();
  bool holds_memory() const noexcept { return scratch_ || pieces_.capacity() > 0; }

 private:
  struct piece {
    std::shared_ptr<const std::string> shared;
    std::string own;
    bytes_view view() const { return shared ? bytes_view(*shared) : bytes_view(own); }
    std::size_t size() const { return shared ? shared->size() : own.size(); }
  };
  std::string& tail();

  // What writing needs, made at the first write and given back with the buffers: an idle
  // connection keeps only the pointer.
  struct scratch {
    std::vector<std::string> spare;   // emptied buffers, kept for their capacity
    std::vector<bytes_view> buffers;  // the gather list, reused
  };
  scratch& work();

  std::vector<piece> pieces_;  // a vector: unlike a deque it costs nothing while empty
  std::size_t bytes_ = 0;
  std::size_t writing_ = 0;  // pieces at the front that an asynchronous write holds
  std::unique_ptr<scratch> scratch_;
};

}  // namespace ma
