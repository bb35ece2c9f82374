// compare-bench's brokers: Mosquitto (MQTT 3.1.1, libmosquitto), nats-server (NATS, cnats) and
// message-broker (NDJSON over TCP, plain sockets), each started by this process on loopback
// and stopped by its pid, behind one interface, so that the workloads (compare_bench.cpp) are
// the same code for all three.
//
// Addressing: a client receives what is published to the topics it is connected with. MQTT
// topics and NATS subjects are "bench/T" and "bench.T"; message-broker has users, so a topic is
// the users connected with it: one is a send_message, several a multicast_message.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ma::bench {

// Called with each message's payload, on a thread of the client's, never twice at once for one
// connection.
using message_handler = std::function<void(std::string_view payload)>;

struct connect_options {
  std::string name;                 // client id, username
  std::vector<std::string> topics;  // what it receives
  message_handler on_message;       // none: a publisher only
  // A session whose messages wait while it is away (MQTT clean_session off with QoS 1,
  // message-broker's Dead Letter Channel; NATS: see broker::durable_queue).
  bool durable = false;
  int window = 1000;  // acknowledged publishes in flight at most
  bool low_latency = false;  // round trips: no client-side batching of publishes (NATS)
};

class connection {
 public:
  virtual ~connection() = default;
  // Hands payload to the broker for topic without waiting for it (MQTT QoS 0, core NATS;
  // message-broker: no wait for message_accepted).
  virtual void publish(const std::string& topic, std::string_view payload) = 0;
  // The same with the broker's acknowledgement (MQTT QoS 1, JetStream, message_accepted),
  // blocking while `window` are unacknowledged.
  virtual void publish_acked(const std::string& topic, std::string_view payload) = 0;
  // Until every acknowledged publish has been acknowledged.
  virtual void wait_acked() = 0;
  // Hands the broker what the client still holds of its publishes (a client that gathers
  // them, as libmosquitto and cnats do by themselves).
  virtual void flush() {}
};

class broker {
 public:
  virtual ~broker() = default;
  virtual std::string name() const = 0;  // mosquitto, nats, ours
  virtual int pid() const = 0;
  // Connected (and subscribed) when it returns.
  virtual std::unique_ptr<connection> connect(const connect_options& o) = 0;
  // W2: whatever the broker needs before publish_acked to topic (a JetStream stream).
  virtual void prepare_acked(const std::string& topic) { (void)topic; }
  // W6: makes the place where what is published to topic waits for the durable receiver `who`
  // (an MQTT persistent session subscribed once, a JetStream stream, nothing for ours).
  virtual void durable_queue(const std::string& who, const std::string& topic) = 0;
  // W5: opens a bare connection that logs in as name and stays idle (a socket, no library);
  // the file descriptor.
  virtual int idle_connection(const std::string& name) = 0;
};

// Starts each broker in dir on a free port of 127.0.0.1, as the comparison runs it: Mosquitto
// with persistence on, nats-server with JetStream, message-broker on its defaults.
std::unique_ptr<broker> start_mosquitto(const std::filesystem::path& dir);
std::unique_ptr<broker> start_nats(const std::filesystem::path& dir);
std::unique_ptr<broker> start_ours(const std::filesystem::path& dir, const std::string& binary);

}  // namespace ma::bench
