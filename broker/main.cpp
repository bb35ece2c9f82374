// message-broker: parses the options, then runs the broker until SIGTERM or SIGINT.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>
#include <vector>

#include "broker/admin.hpp"
#include "broker/options.hpp"
#include <iostream>

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "dead-letters") {
    return ma::run_dead_letters_command({args.begin() + 1, args.end()}, std::cout, std::cerr);
  }
  ma::broker_command cmd;
  try {
    cmd = ma::parse_broker_command_line(args);
  } catch (const ma::config_error& e) {
    std::fprintf(stderr, "message-broker: %s\nRun 'message-broker --help' for the options.\n", e.what());
    return 2;
  }
  if (cmd.help) {
    std::fputs(cmd.help_text.c_str(), stdout);
    return 0;
  }
  if (cmd.check_config) {
    std::fputs(ma::format_resolved(cmd.resolved).c_str(), stdout);
    std::puts("configuration ok");
    return 0;
  }
  spdlog::error("the broker service is not built yet; only --check-config works");
  return 1;
}
