#include "broker/service.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>

#include "broker/broker.hpp"
#include "core/counted.hpp"
#include "storage/store.hpp"

namespace ma {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// %* : the syslog priority of the message's level.
class priority_flag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    char p = '6';
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: p = '7'; break;
      case spdlog::level::info: p = '6'; break;
      case spdlog::level::warn: p = '4'; break;
      case spdlog::level::err: p = '3'; break;
      case spdlog::level::critical: p = '2'; break;
      default: break;
    }
    dest.push_back(p);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<priority_flag>(); }
};

}  // namespace

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("message-broker");
  if (std::getenv("JOURNAL_STREAM")) {
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<priority_flag>('*').set_pattern("<%*>%v");
    logger->set_formatter(std::move(f));
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

struct service_notifier::impl : std::enable_shared_from_this<service_notifier::impl> {
  impl(asio::io_context& io, broker& b, store& s) : io(io), timer(io), b(b), st(s) {}
  asio::io_context& io;
  asio::steady_timer timer;
  broker& b;
  store& st;
  bool enabled = std::getenv("NOTIFY_SOCKET") != nullptr;
  std::chrono::microseconds watchdog{0};
  bool stopped = false;
  bool probe_in_flight = false;
  bool database_answered = true;  // recovery at start just used it
  std::int64_t pending = 0;

  void tick() {
    if (stopped) return;
    if (watchdog.count() > 0 && database_answered) {
      sd_notify(0, "WATCHDOG=1");
      database_answered = false;
    }
    if (!probe_in_flight) {
      // The probe is a whole store transaction (BEGIN IMMEDIATE ... COMMIT): it answers only
      // if the database can be written.
      probe_in_flight = true;
      auto count = std::make_shared<std::int64_t>(0);
      std::weak_ptr<impl> weak = weak_from_this();
      auto& ioc = io;
      st.submit([count](database& db) { *count = db.count_all_pending(); },
                [weak, count, &ioc](std::exception_ptr e) {
                  asio::post(ioc, [weak, count, e] {
                    auto self = weak.lock();
                    if (!self) return;
                    self->probe_in_flight = false;
                    if (e) return;
                    self->database_answered = true;
                    self->pending = *count;
                  });
                });
    }
    const auto s = b.status();
    std::string status = "STATUS=" + counted(s.online, "agent") + " online, " + counted(s.in_flight, "message") +
                         " in flight, " + counted(static_cast<std::uint64_t>(pending), "pending dead letter");
    if (!s.cluster.empty()) {
      status += ", cluster '" + s.cluster + "' with " + counted(static_cast<std::uint64_t>(s.brokers_alive), "broker") + " alive";
    }
    if (!st.file_present()) {
      status = "STATUS=the database file " + st.path() + " was deleted: not accepting messages until it is restored";
    }
    sd_notify(0, status.c_str());
    schedule();
  }

  void schedule() {
    auto period = watchdog.count() > 0 ? std::chrono::duration_cast<std::chrono::milliseconds>(watchdog / 2)
                                       : std::chrono::milliseconds(5s);
    period = std::clamp<std::chrono::milliseconds>(period, 10ms, 5s);
    timer.expires_after(period);
    std::weak_ptr<impl> weak = weak_from_this();
    timer.async_wait([weak](boost::system::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->tick();
    });
  }
};

service_notifier::service_notifier(asio::io_context& io, broker& b, store& s) : impl_(std::make_shared<impl>(io, b, s)) {
  std::uint64_t usec = 0;
  if (impl_->enabled && sd_watchdog_enabled(0, &usec) > 0) impl_->watchdog = std::chrono::microseconds(usec);
}

service_notifier::~service_notifier() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

void service_notifier::ready() {
  if (!impl_->enabled) return;
  sd_notify(0, "READY=1");
  if (impl_->watchdog.count() > 0) spdlog::info("systemd watchdog every {} ms", impl_->watchdog.count() / 1000);
  impl_->tick();
}

void service_notifier::stopping() {
  if (!impl_->enabled) return;
  impl_->stopped = true;
  impl_->timer.cancel();
  sd_notify(0, "STOPPING=1");
}

}  // namespace ma
