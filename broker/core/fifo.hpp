// fifo<T>: a deque in blocks of 4 KiB, for the broker's queues that grow by one entry a message
// (dedupe entries, waiting accepts, ack deadlines). std::deque's blocks are 512 bytes: for a
// dedupe entry (48 bytes), an allocation every tenth message.
#pragma once

#include <boost/container/deque.hpp>
#include <boost/container/options.hpp>

namespace ma {

template <class T>
using fifo = boost::container::deque<T, void, boost::container::deque_options_t<boost::container::block_bytes<4096>>>;

}  // namespace ma
