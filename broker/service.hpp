// Running as a service: logs that fit the journal, and sd_notify (READY, STATUS, WATCHDOG,
// STOPPING) where systemd asked for it. No Asio or libsystemd in this header.
#pragma once

#include <memory>
#include <string>

namespace boost::asio {
class io_context;
}

namespace ma {

class broker;
class store;

// spdlog to stderr at level. Under systemd (JOURNAL_STREAM set) lines carry a syslog priority
// prefix (<3> error, <4> warning, <6> info, <7> debug) and no timestamp of their own, so that
// journalctl -p filters work; otherwise the usual spdlog format.
void setup_logging(const std::string& level);

// Tells systemd about the broker, only where NOTIFY_SOCKET is set (otherwise every call does
// nothing). The watchdog ping (WATCHDOG_USEC set) goes out at half the interval, and only when
// the event loop turned and the database answered a probe since the last ping: a stuck loop or
// a dead database lets systemd restart the broker. STATUS= is kept current on the same tick.
class service_notifier {
 public:
  service_notifier(boost::asio::io_context& io, broker& b, store& s);
  ~service_notifier();
  void ready();     // READY=1 and the ticks begin
  void stopping();  // STOPPING=1 and the ticks end
  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace ma
