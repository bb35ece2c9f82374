// nats-server with JetStream, over cnats: publish is core NATS, publish_acked a JetStream
// asynchronous publish to a stream on file storage; a durable receiver is a JetStream durable
// consumer of such a stream, acknowledging each message.
#include <nats/nats.h>

#include <condition_variable>
#include <mutex>

#include "bench/peers.hpp"
#include "bench/processes.hpp"

namespace ma::bench {

namespace {

using namespace std::chrono_literals;

std::string subject_of(const std::string& t) { return "bench." + t; }

void check(natsStatus s, const std::string& what) {
  if (s != NATS_OK) fail("nats: " + what + ": " + natsStatus_GetText(s));
}

class nats_connection : public connection {
 public:
  nats_connection(const std::string& url, const connect_options& o) : o_(o) {
    natsOptions* opts = nullptr;
    check(natsOptions_Create(&opts), "options");
    natsOptions_SetURL(opts, url.c_str());
    natsOptions_SetName(opts, o.name.c_str());
    // Each publish goes out at once instead of waiting for the flusher thread to gather more:
    // round trips (W3) are not held back; streams cost more CPU on the client's side only.
    if (o.low_latency) natsOptions_SetSendAsap(opts, true);
    check(natsConnection_Connect(&nc_, opts), "connect");
    natsOptions_Destroy(opts);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = o.window;
    check(natsConnection_JetStream(&js_, nc_, &jo), "JetStream context");
    for (auto& t : o.topics) {
      natsSubscription* sub = nullptr;
      if (o.durable) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Config.Durable = o.name.c_str();
        so.Config.MaxAckPending = o.window;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        check(js_Subscribe(&sub, js_, subject_of(t).c_str(), &nats_connection::on_msg, this, nullptr, &so, &jerr),
              "durable subscription of " + o.name);
      } else {
        check(natsConnection_Subscribe(&sub, nc_, subject_of(t).c_str(), &nats_connection::on_msg, this),
              "subscription");
      }
      natsSubscription_SetPendingLimits(sub, -1, -1);  // never a slow consumer that drops
      subs_.push_back(sub);
    }
    check(natsConnection_Flush(nc_), "flush");  // the subscriptions are at the server
  }
  ~nats_connection() override {
    for (auto* s : subs_) natsSubscription_Destroy(s);
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
  }
  void publish(const std::string& topic, std::string_view payload) override {
    check(natsConnection_Publish(nc_, subject_of(topic).c_str(), payload.data(), static_cast<int>(payload.size())),
          "publish");
  }
  void publish_acked(const std::string& topic, std::string_view payload) override {
    check(js_PublishAsync(js_, subject_of(topic).c_str(), payload.data(), static_cast<int>(payload.size()), nullptr),
          "JetStream publish");
  }
  void wait_acked() override {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 120'000;
    check(js_PublishAsyncComplete(js_, &po), "JetStream acknowledgements");
  }

 private:
  static void on_msg(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
    auto& c = *static_cast<nats_connection*>(self);
    if (c.o_.on_message) c.o_.on_message(std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
    natsMsg_Destroy(msg);  // a JetStream message is acknowledged by cnats after this returns
  }

  connect_options o_;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  std::vector<natsSubscription*> subs_;
};

class nats_broker : public broker {
 public:
  explicit nats_broker(const std::filesystem::path& dir) : port_(free_port()) {
    pid_ = spawn({"/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", std::to_string(port_), "-js", "-sd",
                  (dir / "jetstream").string()},
                 (dir / "nats-server.log").string());
    wait_until_listening(pid_, port_);
    url_ = "nats://127.0.0.1:" + std::to_string(port_);
  }
  ~nats_broker() override { terminate(pid_); }
  std::string name() const override { return "nats"; }
  int pid() const override { return pid_; }
  std::unique_ptr<connection> connect(const connect_options& o) override {
    return std::make_unique<nats_connection>(url_, o);
  }
  // The durable consumer is made when the receiver connects; the stream holds the queue.
  void durable_queue(const std::string&, const std::string& topic) override { prepare_acked(topic); }
  // A stream on file storage that keeps what is published to topic.
  void prepare_acked(const std::string& topic) override {
    natsConnection* nc = nullptr;
    check(natsConnection_ConnectTo(&nc, url_.c_str()), "connect");
    jsCtx* js = nullptr;
    check(natsConnection_JetStream(&js, nc, nullptr), "JetStream context");
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const std::string stream = "BENCH_" + topic, subject = subject_of(topic);
    const char* subjects[] = {subject.c_str()};
    cfg.Name = stream.c_str();
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    check(js_AddStream(&si, js, &cfg, nullptr, &jerr), "stream " + stream);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  int idle_connection(const std::string& name) override {
    const int fd = connect_to(port_);
    line_reader r(fd);
    r.wait_for("INFO ");
    write_all(fd, "CONNECT {\"verbose\":false,\"name\":\"" + name + "\"}\r\nPING\r\n");
    r.wait_for("PONG");
    return fd;
  }

 private:
  std::uint16_t port_;
  int pid_ = -1;
  std::string url_;
};

}  // namespace

std::unique_ptr<broker> start_nats(const std::filesystem::path& dir) { return std::make_unique<nats_broker>(dir); }

}  // namespace ma::bench
