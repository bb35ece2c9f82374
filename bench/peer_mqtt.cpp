// Mosquitto, over MQTT 3.1.1 with libmosquitto: publish is QoS 0, publish_acked QoS 1; a
// durable receiver is a persistent session (clean_session off) subscribed with QoS 1.
#include <mosquitto.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <mutex>

#include "bench/peers.hpp"
#include "bench/processes.hpp"

namespace ma::bench {

namespace {

using namespace std::chrono_literals;

std::string topic_of(const std::string& t) { return "bench/" + t; }

class mqtt_connection : public connection {
 public:
  mqtt_connection(std::uint16_t port, const connect_options& o) : o_(o) {
    static std::once_flag init;
    std::call_once(init, [] { mosquitto_lib_init(); });
    m_ = mosquitto_new(o.name.c_str(), !o.durable, this);
    if (!m_) fail("mosquitto_new failed");
    mosquitto_max_inflight_messages_set(m_, static_cast<unsigned>(o.window));
    mosquitto_connect_callback_set(m_, [](mosquitto*, void* self, int rc) {
      static_cast<mqtt_connection*>(self)->signal([&](mqtt_connection& c) { c.connected_ = rc == 0 ? 1 : -1; });
    });
    mosquitto_subscribe_callback_set(m_, [](mosquitto*, void* self, int, int, const int*) {
      static_cast<mqtt_connection*>(self)->signal([](mqtt_connection& c) { ++c.subscribed_; });
    });
    mosquitto_publish_callback_set(m_, [](mosquitto*, void* self, int) {
      static_cast<mqtt_connection*>(self)->signal([](mqtt_connection& c) { --c.unacked_; });
    });
    mosquitto_message_callback_set(m_, [](mosquitto*, void* self, const mosquitto_message* msg) {
      auto& c = *static_cast<mqtt_connection*>(self);
      if (c.o_.on_message) c.o_.on_message(std::string_view(static_cast<const char*>(msg->payload), msg->payloadlen));
    });
    if (mosquitto_connect(m_, "127.0.0.1", port, 600) != MOSQ_ERR_SUCCESS) fail("cannot connect to mosquitto");
    if (mosquitto_loop_start(m_) != MOSQ_ERR_SUCCESS) fail("mosquitto_loop_start failed");  // its own thread
    wait([&] { return connected_ != 0; });
    if (connected_ < 0) fail("mosquitto refused the connection of " + o.name);
    for (auto& t : o.topics) mosquitto_subscribe(m_, nullptr, topic_of(t).c_str(), o.durable ? 1 : 0);
    wait([&] { return subscribed_ == static_cast<int>(o.topics.size()); });
  }
  ~mqtt_connection() override {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, false);
    mosquitto_destroy(m_);
  }
  void publish(const std::string& topic, std::string_view payload) override {
    mosquitto_publish(m_, nullptr, topic_of(topic).c_str(), static_cast<int>(payload.size()), payload.data(), 0, false);
  }
  void publish_acked(const std::string& topic, std::string_view payload) override {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return unacked_ < o_.window; });
      ++unacked_;
    }
    mosquitto_publish(m_, nullptr, topic_of(topic).c_str(), static_cast<int>(payload.size()), payload.data(), 1, false);
  }
  void wait_acked() override {
    wait([&] { return unacked_ == 0; });
  }

 private:
  template <class F>
  void signal(F f) {
    std::lock_guard lock(mutex_);
    f(*this);
    cv_.notify_all();
  }
  template <class P>
  void wait(P ready) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, 120s, ready)) fail("mosquitto: no answer within 120 s for " + o_.name);
  }

  connect_options o_;
  mosquitto* m_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  int connected_ = 0;
  int subscribed_ = 0;
  int unacked_ = 0;
};

class mosquitto_broker : public broker {
 public:
  explicit mosquitto_broker(const std::filesystem::path& dir) : port_(free_port()) {
    const auto conf = dir / "mosquitto.conf";
    std::ofstream(conf) << "listener " << port_ << " 127.0.0.1\n"
                        << "allow_anonymous true\n"
                        << "persistence true\n"
                        << "persistence_location " << dir.string() << "/\n"
                        // Queues and windows as large as the workloads' (the defaults, 1000
                        // queued and 20 in flight, would drop W6's queue and throttle it).
                        << "max_queued_messages 0\n"
                        << "max_inflight_messages 1000\n"
                        << "log_dest stderr\n"
                        // Started by root, mosquitto would become the user 'mosquitto', which
                        // may not write in dir.
                        << (::geteuid() == 0 ? "user root\n" : "");
    pid_ = spawn({"/usr/sbin/mosquitto", "-c", conf.string()}, (dir / "mosquitto.log").string());
    wait_until_listening(pid_, port_);
  }
  ~mosquitto_broker() override { terminate(pid_); }
  std::string name() const override { return "mosquitto"; }
  int pid() const override { return pid_; }
  std::unique_ptr<connection> connect(const connect_options& o) override {
    return std::make_unique<mqtt_connection>(port_, o);
  }
  void durable_queue(const std::string& who, const std::string& topic) override {
    connect_options o;
    o.name = who;
    o.topics = {topic};
    o.durable = true;
    mqtt_connection(port_, o);  // subscribes the persistent session, then leaves
  }
  int idle_connection(const std::string& name) override {
    const int fd = connect_to(port_);
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 600 s.
    std::string p = {'\x10', static_cast<char>(12 + name.size()), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0x02, 0x58, 0,
                     static_cast<char>(name.size())};
    p += name;
    write_all(fd, p);
    char connack[4];
    if (::recv(fd, connack, sizeof connack, MSG_WAITALL) != 4 || connack[0] != 0x20 || connack[3] != 0) {
      fail("mosquitto did not accept the idle connection " + name);
    }
    return fd;
  }

 private:
  std::uint16_t port_;
  int pid_ = -1;
};

}  // namespace

std::unique_ptr<broker> start_mosquitto(const std::filesystem::path& dir) {
  return std::make_unique<mosquitto_broker>(dir);
}

}  // namespace ma::bench
