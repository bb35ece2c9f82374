// What the broker's two accept loops (the agents' port and the HTTP endpoint) share.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

namespace ma {

// An accept failed. Logs it as "<who>: accept failed: ...", then waits 100 ms: a failure such as
// EMFILE (no file descriptor left) leaves the connection queued, so an accept at once would fail
// at once again, and the loop would spin on a core and flood the log.
boost::asio::awaitable<void> pause_after_failed_accept(const char* who, boost::system::error_code ec);

}  // namespace ma
