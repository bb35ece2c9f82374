// message-broker: parses the options, then runs the broker until SIGTERM or SIGINT.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "admin/dead_letters.hpp"
#include "admin/passwd.hpp"
#include "broker/broker.hpp"
#include "broker/options.hpp"
#include "broker/service.hpp"
#include "storage/lock_file.hpp"
#include "storage/store.hpp"

namespace {

// glibc's malloc keeps at most 7 freed blocks of each size per thread (its tcache); the broker
// frees a store batch's messages together, hundreds at a time, and past the seventh each free
// and the allocation after it go through the arena's bins: 9% of the instructions of a message
// in W1 (docs/performance.md). The count is a tunable that glibc reads only when a program
// starts, so the broker starts itself again, once, with it set. A GLIBC_TUNABLES already set
// (to anything) is the operator's and is left alone; under AddressSanitizer (its own malloc)
// there is nothing to tune.
void restart_with_a_larger_malloc_cache(char** argv) {
#if !defined(__SANITIZE_ADDRESS__)
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return;
  // The binary's own path, not /proc/self/exe: the process keeps its name (ps, pgrep, the
  // journal) only if it is run again as itself.
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec || ::setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=512", 1) != 0) return;
  ::execv(self.c_str(), argv);
  ::unsetenv("GLIBC_TUNABLES");  // could not (the binary replaced meanwhile, say): run as it is
#else
  (void)argv;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "dead-letters") {
    return ma::run_dead_letters_command({args.begin() + 1, args.end()}, std::cout, std::cerr);
  }
  if (!args.empty() && args[0] == "passwd") {
    return ma::run_passwd_command({args.begin() + 1, args.end()}, std::cin, std::cout, std::cerr);
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
  restart_with_a_larger_malloc_cache(argv);
  const ma::broker_options& o = cmd.options;
  ma::setup_logging(o.log_level);

  try {
    const auto dir = std::filesystem::path(o.database).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    if (ec) {
      throw std::runtime_error("Cannot create the folder '" + dir.string() + "' of the database '" + o.database + "' (" +
                               ec.message() + "): create it for the broker's user, or give --database a file in a "
                               "folder it can write.");
    }
    // One broker per database, for as long as this process lives.
    ma::database_lock lock(o.database);
    // io first: the store, destroyed before it, may still post completions to it.
    boost::asio::io_context io(1);
    // The signals are caught from here on, before the store opens and the broker says it
    // listens: one that comes before its handler waits for it (a SIGTERM right after the
    // "listening" line or READY=1 used to end the process with the default action).
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    boost::asio::signal_set hangup(io, SIGHUP);
    ma::store store(ma::store::settings{{o.database, o.sqlite_synchronous == "full"}});
    ma::broker broker(io, o, store);
    broker.start();
    ma::service_notifier notifier(io, broker, store);
    notifier.ready();

    signals.async_wait([&](boost::system::error_code ec, int signo) {
      if (ec) return;
      spdlog::info("signal {}: shutting down", signo);
      notifier.stopping();
      broker.stop([&io] { io.stop(); });
      // A second signal stops at once; the journal still holds every accepted message.
      signals.async_wait([&io](boost::system::error_code e, int) {
        if (!e) io.stop();
      });
    });

    // SIGHUP: read the options again (the config file may have changed) and apply what can
    // change while running.
    std::function<void(boost::system::error_code, int)> on_hangup = [&](boost::system::error_code ec, int) {
      if (ec) return;
      try {
        const auto fresh = ma::parse_broker_command_line(args);
        const auto changes = broker.reload(fresh.options);
        spdlog::set_level(spdlog::level::from_str(fresh.options.log_level));
        if (changes.empty()) spdlog::info("SIGHUP: configuration reloaded, nothing changed");
        for (const auto& line : changes) spdlog::info("SIGHUP: {}", line);
      } catch (const std::exception& e) {
        spdlog::error("SIGHUP: the configuration was not reloaded: {}", e.what());
      }
      hangup.async_wait(on_hangup);
    };
    hangup.async_wait(on_hangup);
    io.run();
    spdlog::info("stopped");
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  return 0;
}
