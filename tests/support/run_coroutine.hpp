// Runs one awaitable to completion on an io_context and rethrows what escaped it.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <stdexcept>

namespace ma::test {

template <class Awaitable>
void run_coroutine(boost::asio::io_context& io, Awaitable a,
                   std::chrono::steady_clock::duration limit = std::chrono::seconds(60)) {
  std::exception_ptr error;
  bool done = false;
  boost::asio::co_spawn(io, std::move(a), [&](std::exception_ptr e) {
    error = e;
    done = true;
  });
  io.restart();
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    if (io.run_one_for(std::chrono::milliseconds(100)) == 0 && io.stopped()) io.restart();
  }
  if (!done) throw std::runtime_error("run_coroutine: the coroutine did not finish in time");
  if (error) std::rethrow_exception(error);
}

}  // namespace ma::test
