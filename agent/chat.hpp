// message-agent chat: an interactive session on a connected client, reading the terminal.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "message_agent/client.hpp"

namespace ma::agent {

// Runs until /quit, end of input, or the client is closed. On a terminal, incoming messages
// and presence changes are printed above the line being typed, which is redrawn; elsewhere
// (a pipe) lines are read and printed as they come.
boost::asio::awaitable<void> run_chat(client& c);

}  // namespace ma::agent
