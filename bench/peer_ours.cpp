// message-broker on its defaults (persistence on), over its NDJSON protocol with plain blocking
// sockets: publish is a send that does not wait for message_accepted, publish_acked one of at
// most `window` not yet accepted. Every received message is acknowledged (acknowledge_message,
// one frame for what one read brought), as the protocol asks of a receiver. A durable receiver
// is just a user: what is sent while it is away waits in the Dead Letter Channel.
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "bench/peers.hpp"
#include "bench/processes.hpp"

namespace ma::bench {

namespace {

using namespace std::chrono_literals;

constexpr std::string_view receive_prefix = R"({"message_id":"receive_message")";
constexpr std::string_view accepted_prefix = R"({"message_id":"message_accepted")";
constexpr std::string_view error_prefix = R"({"message_id":"error")";

// The string value after needle ("key":") in a line of ours (the values the bench sends have
// no escapes). The needles are constants: a needle built per call was two allocations a message.
constexpr std::string_view text_field = R"("message_text":")";
constexpr std::string_view uuid_field = R"("message_uuid":")";
std::string_view field(std::string_view line, std::string_view needle) {
  const auto at = line.find(needle);
  if (at == std::string_view::npos) return {};
  const auto start = at + needle.size();
  const auto end = line.find('"', start);
  return end == std::string_view::npos ? std::string_view() : line.substr(start, end - start);
}

// Who receives what is published to a topic: the users connected (or queued) with it.
class topic_table {
 public:
  void add(const std::string& topic, const std::string& user) {
    std::lock_guard lock(mutex_);
    users_[topic].push_back(user);
  }
  std::vector<std::string> users(const std::string& topic) const {
    std::lock_guard lock(mutex_);
    auto it = users_.find(topic);
    return it == users_.end() ? std::vector<std::string>() : it->second;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<std::string>> users_;
};

class ours_connection : public connection {
 public:
  ours_connection(std::uint16_t port, const connect_options& o, topic_table& topics)
      : o_(o), topics_(topics), fd_(connect_to(port)), reader_(fd_) {
    static std::atomic<int> tags{0};
    tag_ = std::to_string(::getpid()) + "-" + std::to_string(tags++) + "-";
    for (auto& t : o.topics) topics_.add(t, o.name);
    write_all(fd_, R"({"message_id":"log_in","message_content":{"sender_username":")" + o.name + "\"}}\n");
    reader_.wait_for(R"({"message_id":"acknowledge_log_in")");
    thread_ = std::thread([this] { read(); });
  }
  ~ours_connection() override {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  void publish(const std::string& topic, std::string_view payload) override { send(topic, payload); }
  void publish_acked(const std::string& topic, std::string_view payload) override {
    {
      std::unique_lock lock(mutex_);
      if (unaccepted_ >= o_.window) {
        lock.unlock();
        flush();  // what waits for room must have gone out
        lock.lock();
      }
      if (!cv_.wait_for(lock, 120s, [&] { return unaccepted_ < o_.window; })) fail("ours: no message_accepted in 120 s");
      ++unaccepted_;
    }
    send(topic, payload);
  }
  void wait_acked() override {
    flush();
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, 120s, [&] { return unaccepted_ <= 0; })) fail("ours: no message_accepted in 120 s");
  }
  void flush() override {
    std::lock_guard lock(write_mutex_);
    if (!out_.empty()) write_all(fd_, out_);
    out_.clear();
  }

 private:
  // A frame's start up to its uuid, for topic: its receivers do not change during a workload.
  const std::string& head_of(const std::string& topic) {
    auto it = heads_.find(topic);
    if (it != heads_.end()) return it->second;
    const auto to = topics_.users(topic);
    if (to.empty()) fail("ours: nobody receives topic " + topic);
    std::string head;
    if (to.size() == 1) {
      head = R"({"message_id":"send_message","message_content":{"receiver_username":")" + to[0] + "\"";
    } else {
      head = R"({"message_id":"multicast_message","message_content":{"receiver_usernames":[)";
      for (std::size_t i = 0; i < to.size(); ++i) head += (i ? ",\"" : "\"") + to[i] + "\"";
      head += "]";
    }
    head += R"(,"message_uuid":")" + tag_;
    return heads_.emplace(topic, std::move(head)).first->second;
  }

  // Gathers frames up to 64 KiB a write (libmosquitto and cnats gather too), except for round
  // trips (low_latency), which go out at once.
  void send(const std::string& topic, std::string_view payload) {
    const std::string& head = head_of(topic);
    std::lock_guard lock(write_mutex_);
    out_ += head;
    out_ += std::to_string(next_++);
    out_ += R"(","message_text":")";
    out_ += payload;
    out_ += "\"}}\n";
    if (o_.low_latency || out_.size() >= 64 * 1024) {
      write_all(fd_, out_);
      out_.clear();
    }
  }

  void read() {
    std::string acks;
    while (!stopping_) {
      int accepted = 0;
      acks.clear();
      const bool more = reader_.read_some([&](std::string_view line) {
        if (line.starts_with(receive_prefix)) {
          if (o_.on_message) o_.on_message(field(line, text_field));
          acks += acks.empty() ? "\"" : ",\"";
          acks += field(line, uuid_field);
          acks += '"';
        } else if (line.starts_with(accepted_prefix)) {
          ++accepted;
        } else if (line.starts_with(error_prefix)) {
          fail("ours: the broker answered " + std::string(line));
        }
      }, 1000);
      if (!acks.empty()) {
        std::lock_guard lock(write_mutex_);
        try {
          write_all(fd_, R"({"message_id":"acknowledge_message","message_content":{"message_uuids":[)" + acks + "]}}\n");
        } catch (const std::runtime_error&) {
          if (stopping_) return;  // closed under it by the destructor
          fail("ours: the broker closed the connection of " + o_.name);
        }
      }
      if (accepted > 0) {
        std::lock_guard lock(mutex_);
        unaccepted_ -= accepted;
        cv_.notify_all();
      }
      if (!more && !stopping_) {
        pollfd p{fd_, POLLIN, 0};
        char c;
        if (::poll(&p, 1, 0) > 0 && ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) return;  // closed
      }
    }
  }

  connect_options o_;
  topic_table& topics_;
  int fd_;
  line_reader reader_;
  std::string tag_;
  std::uint64_t next_ = 0;
  std::map<std::string, std::string> heads_;
  std::mutex write_mutex_;
  std::string out_;  // frames not written yet (write_mutex_)
  std::mutex mutex_;
  std::condition_variable cv_;
  int unaccepted_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

class ours_broker : public broker {
 public:
  ours_broker(const std::filesystem::path& dir, const std::string& binary) : port_(free_port()) {
    pid_ = spawn({binary, "--port", std::to_string(port_), "--discovery", "off", "--database",
                  (dir / "broker.db").string()},
                 (dir / "broker.log").string());
    wait_until_listening(pid_, port_);
  }
  ~ours_broker() override { terminate(pid_); }
  std::string name() const override { return "ours"; }
  int pid() const override { return pid_; }
  std::unique_ptr<connection> connect(const connect_options& o) override {
    return std::make_unique<ours_connection>(port_, o, topics_);
  }
  void durable_queue(const std::string& who, const std::string& topic) override { topics_.add(topic, who); }
  int idle_connection(const std::string& name) override {
    const int fd = connect_to(port_);
    write_all(fd, R"({"message_id":"log_in","message_content":{"sender_username":")" + name + "\"}}\n");
    line_reader r(fd);
    r.wait_for(R"({"message_id":"acknowledge_log_in")");
    return fd;
  }

 private:
  std::uint16_t port_;
  int pid_ = -1;
  topic_table topics_;
};

}  // namespace

std::unique_ptr<broker> start_ours(const std::filesystem::path& dir, const std::string& binary) {
  return std::make_unique<ours_broker>(dir, binary);
}

}  // namespace ma::bench
