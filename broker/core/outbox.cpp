#include "broker/core/outbox.hpp"

#include <algorithm>

namespace ma {

namespace {

constexpr std::size_t max_pieces_per_write = 512;
constexpr std::size_t max_bytes_per_write = 512 * 1024;
constexpr std::size_t max_buffer = 256 * 1024;  // an owned buffer is not appended to past this
constexpr std::size_t spare_buffers = 2;
// Owned buffers are never short strings: a short string keeps its bytes inside the string
// object, which moves when pieces_ grows, and an asynchronous write may still point at them.
// With its bytes on the heap, a moved string keeps them where they were.
constexpr std::size_t min_owned_capacity = 256;
constexpr std::size_t short_string = 15;  // what a std::string holds inside itself

}  // namespace

void outbox::push(std::string frame) {
  if (frame.size() >= large_frame) return push_shared(std::make_shared<const std::string>(std::move(frame)));
  append([&frame](std::string& b) { b.append(frame); });
}

void outbox::push_shared(std::shared_ptr<const std::string> frame) {
  bytes_ += frame->size();
  pieces_.push_back(piece{std::move(frame), {}});
}

outbox::scratch& outbox::work() {
  if (!scratch_) scratch_ = std::make_unique<scratch>();
  return *scratch_;
}

const std::vector<outbox::bytes_view>& outbox::gather() {
  auto& buffers = work().buffers;
  buffers.clear();
  std::size_t bytes = 0;
  for (const piece& p : pieces_) {
    if (buffers.size() == max_pieces_per_write || bytes >= max_bytes_per_write) break;
    buffers.push_back(p.view());
    bytes += p.size();
  }
  return buffers;
}

void outbox::consume(std::size_t n) {
  if (n == 0) return;
  bytes_ -= n;
  std::size_t i = 0;
  while (i < pieces_.size() && n >= pieces_[i].size()) {
    n -= pieces_[i].size();
    piece& done = pieces_[i];
    if (!done.shared && work().spare.size() < spare_buffers && done.own.capacity() <= max_buffer) {
      done.own.clear();
      scratch_->spare.push_back(std::move(done.own));
    }
    ++i;
  }
  if (n > 0 && i < pieces_.size()) {  // a piece written in part: keep its rest, owned
    piece& part = pieces_[i];
    if (part.shared) {
      if (part.shared->size() - n <= short_string) part.own.reserve(min_owned_capacity);
      part.own.assign(part.shared->data() + n, part.shared->size() - n);
      part.shared.reset();
    } else {
      part.own.erase(0, n);
    }
  }
  pieces_.erase(pieces_.begin(), pieces_.begin() + static_cast<std::ptrdiff_t>(i));
}

void outbox::release_memory() {
  if (!pieces_.empty() || writing_ != 0) return;
  scratch_.reset();
  std::vector<piece>().swap(pieces_);
}

void outbox::release_if_small() {
  if (!pieces_.empty() || writing_ != 0) return;
  if (scratch_ && std::any_of(scratch_->spare.begin(), scratch_->spare.end(),
                              [](const std::string& b) { return b.capacity() > small_buffer; })) {
    return;
  }
  release_memory();
}

std::string& outbox::tail() {
  if (pieces_.size() > writing_ && !pieces_.back().shared && pieces_.back().own.size() < max_buffer) {
    return pieces_.back().own;
  }
  piece p;
  if (scratch_ && !scratch_->spare.empty()) {
    p.own.swap(scratch_->spare.back());
    scratch_->spare.pop_back();
  }
  if (p.own.capacity() <= short_string) p.own.reserve(min_owned_capacity);
  pieces_.push_back(std::move(p));
  return pieces_.back().own;
}

}  // namespace ma
