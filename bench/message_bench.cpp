// message-bench: the benchmark workloads W1-W8 against message-broker (usage: --help).
//
// It starts the real broker binary (a temporary database, 127.0.0.1, an ephemeral port) for
// each run, or uses one given by --broker. Clients are plain blocking sockets on threads (and
// one epoll loop for the many-agent workloads), parsing only what they must, so that the client
// side costs as little CPU as it can on a 2-core machine. Every workload counts loss and
// duplicates and fails loudly on either. Every loop is bounded in count and time. Every run
// makes uuids of its own, so runs against the same broker are not taken for duplicates.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/processes.hpp"

namespace {

using namespace ma::bench;

const char* const usage = R"(usage: message-bench [OPTIONS]

Runs the benchmark workloads against message-broker and prints, per metric, the median, min
and max over the runs. Every workload runs on the broker's default configuration (persistence
on, as users run it); W1, W3 and W4 run a second time with --persist-accepted off ("off" lines).

  W1  one sender streams to one receiver, pipelined; the receiver acknowledges everything
  W2  the same with a window of 1,000 sends not yet accepted
  W3  round trip A -> broker -> B -> broker -> A, one message at a time (and a bare TCP relay)
  W4  one sender multicasts to 10 receivers
  W5  memory per idle logged-in agent
  W6  a receiver's queue of 50,000 dead letters drained at its login (and after kill -9)
  W7  10,000 agents heartbeating for a minute: the broker's CPU
  W8  W3 with a password file, quiet and while 50 wrong log_ins a second arrive
  W1x, W3x, W4x  W1, W3 and W4 across two brokers of a cluster (three nats-servers on
      loopback, started here): the senders at one broker, the receivers at the other

Options:
  --workloads w1,w2,...    which (default: w1-w7)
  --runs N                 runs per workload (default 3; W5 and W7 run once)
  --json                   one JSON object per metric
  --broker HOST:PORT       use a running broker (with --broker-pid PID for its CPU and memory);
                           its configuration is what it is: no "off" lines
  --broker-binary PATH     the broker to start (default: message-broker beside this program)
  --broker-arg ARG         one more argument for every broker started (repeat it: --broker-arg
                           --sqlite-synchronous --broker-arg full)
  --nats-server PATH        the nats-server for the cross-broker workloads
                           (default: /usr/sbin/nats-server)
  --scale N                every count divided by N, for a quick look
  --w5-conns N, --w7-agents N, --w7-seconds N
  --help                   this text
  --version                the version
)";

using namespace std::chrono_literals;

struct settings {
  std::vector<std::string> workloads{"w1", "w2", "w3", "w4", "w5", "w6", "w7"};
  std::vector<std::string> config;  // broker options of this line: none (the defaults) or persist off
  std::vector<std::string> broker_args;  // --broker-arg: given to every broker started
  int runs = 3;
  bool json = false;
  std::string broker_binary;
  std::string broker;  // host:port of a running broker (then --broker-pid for its CPU)
  int broker_pid = 0;
  bool cross = false;  // the cross-broker line of W1, W3, W4 (w1x, w3x, w4x)
  std::string nats_server = "/usr/sbin/nats-server";
  int payload = 100;
  int w1 = 200'000, w2 = 100'000, w2_window = 1000, w3 = 20'000, w4 = 50'000, w4_subs = 10;
  int w5_conns = 5000, w6 = 50'000, w7_agents = 10'000, w7_seconds = 60;
};

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

// A prefix for the uuids of one run, unique per process and call: a second run against the same
// broker within its dedupe window must not be answered as duplicates.
std::string run_tag() {
  static int calls = 0;
  return std::to_string(::getpid()) + "." + std::to_string(calls++) + "-";
}

// Names what a line ran on.
std::string config_note(const settings& s) {
  return std::string(s.cross ? "across two brokers of a cluster, " : "") +
         (s.config.empty() ? "default configuration (persist-accepted on)" : "persist-accepted off");
}

// Three nats-servers routed into one NATS cluster with JetStream, on loopback, in dir.
class nats_trio {
 public:
  nats_trio(const settings& s, const std::filesystem::path& dir) {
    std::uint16_t client[3], route[3];
    for (int i = 0; i < 3; ++i) client[i] = free_port(), route[i] = free_port();
    std::string routes;
    for (auto p : route) routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") + std::to_string(p);
    for (int i = 0; i < 3; ++i) {
      const std::string name = "n" + std::to_string(i + 1);
      const std::string log = (dir / (name + ".log")).string();
      pids_[i] = spawn({s.nats_server, "-a", "127.0.0.1", "-p", std::to_string(client[i]), "-n", name,
                        "--cluster_name", "bench", "--cluster", "nats://127.0.0.1:" + std::to_string(route[i]),
                        "--routes", routes, "-js", "-sd", (dir / name).string()},
                       log);
      urls_[i] = "nats://127.0.0.1:" + std::to_string(client[i]);
    }
    for (int i = 0; i < 3; ++i) wait_for_log(pids_[i], (dir / ("n" + std::to_string(i + 1) + ".log")).string(), "Server is ready");
  }
  ~nats_trio() {
    for (int pid : pids_) terminate(pid);
  }
  // Server i's URL first, then the others: each broker uses its own server, as on its own machine.
  std::string urls_from(int i) const {
    std::string out = urls_[i];
    for (int j = 0; j < 3; ++j) {
      if (j != i) out += "," + urls_[j];
    }
    return out;
  }

 private:
  int pids_[3]{};
  std::string urls_[3];
};

// --- the broker --------------------------------------------------------------------------------

class broker_process {
 public:
  // extra: the workload's own options, after the line's (settings::config).
  broker_process(const settings& s, std::vector<std::string> extra) : s_(s), extra_(s.broker_args) {
    extra_.insert(extra_.end(), s.config.begin(), s.config.end());
    extra_.insert(extra_.end(), extra.begin(), extra.end());
    if (!s.broker.empty()) {
      const auto colon = s.broker.rfind(':');
      port_ = static_cast<std::uint16_t>(std::stoi(s.broker.substr(colon + 1)));
      pid_ = s.broker_pid;
      external_ = true;
      return;
    }
    dir_ = std::filesystem::temp_directory_path() / ("message-bench-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    start();
  }
  ~broker_process() {
    stop();
    if (!external_) std::filesystem::remove_all(dir_);
  }

  void start() {
    const std::string log = (dir_ / "broker.log").string();
    std::filesystem::remove(log);  // the port is read from it: no stale line from a last run
    // The broker logs its port at info.
    std::vector<std::string> args{s_.broker_binary, "--port", "0", "--discovery", "off", "--database",
                                  (dir_ / "broker.db").string(), "--log-level", "info"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = spawn(args, log);
    std::string text = wait_for_log(pid_, log, "listening on 127.0.0.1:");
    port_ = static_cast<std::uint16_t>(std::stoi(text.substr(text.find("listening on 127.0.0.1:") + 23)));
    // A broker of a cluster takes log_ins once its registry is ready.
    if (std::find(extra_.begin(), extra_.end(), "--cluster-nats") != extra_.end()) {
      wait_for_log(pid_, log, "the registry is ready");
    }
  }

  void forget_pid() { std::erase(started_brokers, pid_); }

  void stop() {
    if (external_ || pid_ <= 0) return;
    terminate(pid_);
    pid_ = -1;
  }

  void kill9() {
    if (external_) fail("W6 after kill -9 needs a broker of its own (no --broker)");
    forget_pid();
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  std::uint16_t port() const { return port_; }
  int pid() const { return pid_; }
  double cpu_s() const { return pid_ > 0 ? proc_cpu_s(pid_) : 0; }
  long rss_kib() const { return pid_ > 0 ? proc_rss_kib(pid_) : 0; }

 private:
  const settings& s_;
  std::vector<std::string> extra_;
  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  int pid_ = -1;
  bool external_ = false;
  static inline int counter_ = 0;
};

// --- a connection ------------------------------------------------------------------------------

constexpr std::string_view receive_prefix = R"({"message_id":"receive_message")";
constexpr std::string_view accepted_prefix = R"({"message_id":"message_accepted")";

void log_in(int fd, line_reader& r, const std::string& name, const std::string& password = {}) {
  write_all(fd, R"({"message_id":"log_in","message_content":{"sender_username":")" + name + "\"" +
                    (password.empty() ? std::string() : R"(,"password":")" + password + "\"") + "}}\n");
  r.wait_for(R"({"message_id":"acknowledge_log_in")");
}

std::string send_frame(const std::string& to, const std::string& uuid, const std::string& text) {
  return R"({"message_id":"send_message","message_content":{"receiver_username":")" + to +
         R"(","message_uuid":")" + uuid + R"(","message_text":")" + text + "\"}}\n";
}

std::string multicast_frame(const std::string& to_json, const std::string& uuid, const std::string& text) {
  return R"({"message_id":"multicast_message","message_content":{"receiver_usernames":)" + to_json +
         R"(,"message_uuid":")" + uuid + R"(","message_text":")" + text + "\"}}\n";
}

// The broker(s) of a run: one; or, on the cross-broker line, two brokers of a cluster over three
// nats-servers, the senders at the first (tx) and the receivers at the second (rx).
class broker_setup {
 public:
  broker_setup(const settings& s, std::vector<std::string> extra) {
    if (!s.cross) {
      tx_ = std::make_unique<broker_process>(s, std::move(extra));
      return;
    }
    if (!s.broker.empty()) fail("the cross-broker workloads start brokers of their own (no --broker)");
    dir_ = std::filesystem::temp_directory_path() / ("message-bench-nats-" + std::to_string(::getpid()) + "-" + run_tag());
    std::filesystem::create_directories(dir_);
    nats_ = std::make_unique<nats_trio>(s, dir_);
    auto member = [&](int i, const char* name) {
      auto e = extra;
      e.insert(e.end(), {"--cluster-nats", nats_->urls_from(i), "--cluster-name", "bench", "--broker-name", name});
      return e;
    };
    tx_ = std::make_unique<broker_process>(s, member(0, "bench-a"));
    rx_ = std::make_unique<broker_process>(s, member(1, "bench-b"));
  }
  ~broker_setup() {
    tx_.reset();
    rx_.reset();
    nats_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::uint16_t tx_port() const { return tx_->port(); }
  std::uint16_t rx_port() const { return rx_ ? rx_->port() : tx_->port(); }
  double cpu_s() const { return tx_->cpu_s() + (rx_ ? rx_->cpu_s() : 0); }
  // In a cluster a log_in reaches the other broker a moment later: waits until the sending
  // broker lists every name online.
  void wait_listed(const std::vector<std::string>& names) const {
    if (!rx_) return;
    const int fd = connect_to(tx_port());
    line_reader r(fd);
    log_in(fd, r, "bench-observer-" + run_tag());
    const auto deadline = clock_type::now() + 30s;
    for (;;) {
      write_all(fd, "{\"message_id\":\"get_user_list\",\"message_content\":{}}\n");
      const std::string list = r.wait_for(R"({"message_id":"user_list")");
      if (std::all_of(names.begin(), names.end(),
                      [&](const std::string& n) { return list.find("\"" + n + "\"") != std::string::npos; })) {
        break;
      }
      if (clock_type::now() > deadline) fail("the receivers were not listed at the sending broker within 30 s");
      std::this_thread::sleep_for(20ms);
    }
    ::close(fd);
  }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<nats_trio> nats_;
  std::unique_ptr<broker_process> tx_, rx_;
};

// The sequence number in a receive_message line, or -1.
std::int64_t seq_of(std::string_view line) {
  const auto at = line.find(R"("message_text":")");
  if (at == std::string_view::npos || at + 16 + 15 > line.size()) return -1;
  std::int64_t v = 0;
  for (std::size_t i = at + 16; i < at + 16 + 15; ++i) {
    if (line[i] < '0' || line[i] > '9') return -1;
    v = v * 10 + (line[i] - '0');
  }
  return v;
}

std::string_view uuid_of(std::string_view line) {
  const auto at = line.find(R"("message_uuid":")");
  if (at == std::string_view::npos) return {};
  const auto start = at + 16;
  const auto end = line.find('"', start);
  return line.substr(start, end - start);
}

// A receiver: counts unique and duplicate sequence numbers, acknowledges in batches.
struct receiver {
  explicit receiver(std::size_t n) : seen(n, 0) {}
  std::vector<std::uint8_t> seen;
  std::uint64_t unique = 0, dups = 0, bad = 0;
  clock_type::time_point first{}, last{};

  // Reads until want unique messages arrived, or nothing came for idle.
  void run(int fd, std::uint64_t want, std::chrono::milliseconds idle = 5s) {
    line_reader r(fd);
    std::string ack;
    while (unique < want) {
      ack.assign(R"({"message_id":"acknowledge_message","message_content":{"message_uuids":[)");
      bool any = false;
      const bool got = r.read_some(
          [&](std::string_view line) {
            if (line.substr(0, receive_prefix.size()) != receive_prefix) return;
            const auto now = clock_type::now();
            if (first == clock_type::time_point{}) first = now;
            last = now;
            const auto seq = seq_of(line);
            if (seq < 0 || static_cast<std::size_t>(seq) >= seen.size()) {
              ++bad;
            } else if (seen[static_cast<std::size_t>(seq)]) {
              ++dups;
            } else {
              seen[static_cast<std::size_t>(seq)] = 1;
              ++unique;
            }
            if (any) ack += ',';
            ack += '"';
            ack += uuid_of(line);
            ack += '"';
            any = true;
          },
          static_cast<int>(idle.count()));
      if (!got) break;
      if (any) {
        ack += "]}}\n";
        write_all(fd, ack);
      }
    }
  }
};

// Drains a sender's socket, counting message_accepted frames.
struct accept_counter {
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<bool> stop{false};
  std::thread t;
  void start(int fd) {
    t = std::thread([this, fd] {
      line_reader r(fd);
      while (!stop) {
        r.read_some(
            [&](std::string_view line) {
              if (line.substr(0, accepted_prefix.size()) == accepted_prefix) accepted.fetch_add(1, std::memory_order_relaxed);
            },
            100);
      }
    });
  }
  void finish() {
    stop = true;
    if (t.joinable()) t.join();
  }
  bool wait(std::uint64_t n, std::chrono::seconds limit) {
    const auto deadline = clock_type::now() + limit;
    while (accepted < n && clock_type::now() < deadline) std::this_thread::sleep_for(200us);
    return accepted >= n;
  }
};

// --- results -------------------------------------------------------------------------------

struct metric {
  std::string name;
  double value;
  std::string unit;
};
struct run_result {
  std::string workload;
  std::vector<metric> metrics;  // the first is the headline
  std::string note;
};

void check_loss(const std::string& w, std::uint64_t unique, std::uint64_t want, std::uint64_t dups) {
  if (unique != want || dups != 0) {
    fail(w + ": LOSS OR DUPLICATES: " + std::to_string(unique) + " of " + std::to_string(want) + " unique, " +
         std::to_string(dups) + " duplicates");
  }
}

// --- W1 and W2: one sender streams n messages to one receiver --------------------------------

// window 0: pipelined without limit; otherwise at most window sends not yet accepted. The rate
// counts until the last message arrived and (with a window) the last send was accepted.
run_result stream(const settings& s, const std::string& name, std::vector<std::string> broker_args, int count,
                  int window, const std::string& note) {
  broker_setup b(s, std::move(broker_args));
  const int tx = connect_to(b.tx_port()), rx = connect_to(b.rx_port());
  line_reader rtx(tx), rrx(rx);
  log_in(tx, rtx, name + "-sender");
  log_in(rx, rrx, name + "-receiver");
  b.wait_listed({name + "-receiver"});
  const std::uint64_t n = static_cast<std::uint64_t>(count);
  receiver recv(n);
  accept_counter acks;
  acks.start(tx);
  const std::string tag = name + "-" + run_tag();
  const double cpu0 = b.cpu_s();
  const auto start = clock_type::now();
  std::thread sender([&] {
    std::string batch;
    const std::size_t batch_bytes = window ? 16 * 1024 : 64 * 1024;
    for (std::uint64_t i = 0; i < n; ++i) {
      while (window && i >= acks.accepted + static_cast<std::uint64_t>(window)) {
        if (!batch.empty()) {
          write_all(tx, batch);
          batch.clear();
        }
        std::this_thread::sleep_for(20us);
      }
      batch += send_frame(name + "-receiver", tag + std::to_string(i), payload(i, s.payload));
      if (batch.size() > batch_bytes) {
        write_all(tx, batch);
        batch.clear();
      }
    }
    write_all(tx, batch);
  });
  recv.run(rx, n);
  sender.join();
  const bool all_accepted = acks.wait(n, 60s);
  const auto end = window ? std::max(clock_type::now(), recv.last) : recv.last;
  const double cpu = b.cpu_s() - cpu0;
  acks.finish();
  ::close(tx);
  ::close(rx);
  if (!all_accepted) fail(name + ": not every send was accepted");
  check_loss(name, recv.unique, n, recv.dups);
  const double secs = seconds(end - start);
  return {name,
          {{"rate", static_cast<double>(n) / secs, "msg/s"},
           {"broker_cpu_us_per_msg", cpu * 1e6 / static_cast<double>(n), "us"},
           {"lost", static_cast<double>(n - recv.unique), ""},
           {"dups", static_cast<double>(recv.dups), ""}},
          note};
}

// W1: pipelined, every message acknowledged by the receiver.
run_result w1(const settings& s) {
  return stream(s, "W1", {}, s.w1, 0, config_note(s) + ", receiver acknowledges every message");
}

// W2: acknowledged both ways, a window of unaccepted sends.
run_result w2(const settings& s) {
  return stream(s, "W2", {}, s.w2, s.w2_window, config_note(s) + ", window " + std::to_string(s.w2_window));
}

// --- W3: round trip A -> broker -> B -> broker -> A, one at a time, and a bare TCP relay -------

std::pair<double, double> percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

std::vector<double> relay_round_trips(int count, int size) {
  // relay: A <-> relay <-> B(echo); the same four hops as through a broker.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(listener, 4);
  socklen_t len = sizeof a;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
  const std::uint16_t port = ntohs(a.sin_port);
  const int client_a = connect_to(port);
  const int relay_a = ::accept(listener, nullptr, nullptr);
  const int client_b = connect_to(port);
  const int relay_b = ::accept(listener, nullptr, nullptr);
  ::setsockopt(relay_a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(relay_b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto pump = [](int from, int to) {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n <= 0) return;
      try {
        write_all(to, std::string_view(buf, static_cast<std::size_t>(n)));
      } catch (...) {
        return;
      }
    }
  };
  std::thread ab(pump, relay_a, relay_b), ba(pump, relay_b, relay_a);
  std::thread echo([client_b] {
    line_reader r(client_b);
    while (r.read_some([&](std::string_view line) {
      std::string back(line);
      back += '\n';
      write_all(client_b, back);
    })) {
    }
  });
  std::vector<double> rtt;
  line_reader r(client_a);
  const std::string line = std::string(static_cast<std::size_t>(size), 'x') + "\n";
  for (int i = 0; i < count + 1000; ++i) {
    const auto t0 = clock_type::now();
    write_all(client_a, line);
    bool got = false;
    while (!got) {
      if (!r.read_some([&](std::string_view) { got = true; }, 5000)) fail("W3: the bare relay stopped");
    }
    if (i >= 1000) rtt.push_back(seconds(clock_type::now() - t0) * 1e6);
  }
  for (int fd : {client_a, client_b}) ::shutdown(fd, SHUT_RDWR);
  ab.join();
  ba.join();
  echo.join();
  for (int fd : {client_a, client_b, relay_a, relay_b, listener}) ::close(fd);
  return rtt;
}

// n round trips (after 1,000 to warm up) between w3-a and w3-b on the broker at port, in us.
// after_log_in runs once both are logged in.
std::vector<double> round_trips(const settings& s, const broker_setup& b, int n, const std::string& password = {},
                                const std::function<void()>& after_log_in = {}) {
  const int fa = connect_to(b.tx_port()), fb = connect_to(b.rx_port());
  line_reader ra(fa), rb(fb);
  log_in(fa, ra, "w3-a", password);
  log_in(fb, rb, "w3-b", password);
  b.wait_listed({"w3-b"});
  if (after_log_in) after_log_in();
  std::atomic<bool> done{false};
  std::thread echo([&] {
    // B answers each message with one to A, and acknowledges it.
    while (!done) {
      rb.read_some(
          [&](std::string_view line) {
            if (line.substr(0, receive_prefix.size()) != receive_prefix) return;
            const auto uuid = uuid_of(line);
            const auto seq = seq_of(line);
            std::string out = send_frame("w3-a", "back-" + std::string(uuid), payload(static_cast<std::uint64_t>(seq), s.payload));
            out += R"({"message_id":"acknowledge_message","message_content":{"message_uuid":")" + std::string(uuid) + "\"}}\n";
            write_all(fb, out);
          },
          100);
    }
  });
  const std::string prefix = "w3-" + run_tag();
  std::vector<double> rtt;
  std::vector<std::uint8_t> seen(static_cast<std::size_t>(n + 1000), 0);
  std::uint64_t dups = 0;
  std::string pending_ack;  // A acknowledges the answer together with its next message
  for (int i = 0; i < n + 1000; ++i) {
    const auto t0 = clock_type::now();
    write_all(fa, send_frame("w3-b", prefix + std::to_string(i), payload(static_cast<std::uint64_t>(i), s.payload)) +
                      pending_ack);
    pending_ack.clear();
    bool got = false;
    while (!got) {
      if (!ra.read_some([&](std::string_view line) {
            if (line.substr(0, receive_prefix.size()) != receive_prefix) return;
            const auto seq = seq_of(line);
            if (seq >= 0 && seq < static_cast<std::int64_t>(seen.size())) {
              if (seen[static_cast<std::size_t>(seq)]++) ++dups;
            }
            if (seq == i) got = true;
            pending_ack += R"({"message_id":"acknowledge_message","message_content":{"message_uuid":")" +
                           std::string(uuid_of(line)) + "\"}}\n";
          }, 5000)) {
        fail("W3: no answer within 5 s to round trip " + std::to_string(i));
      }
    }
    if (i >= 1000) rtt.push_back(seconds(clock_type::now() - t0) * 1e6);
  }
  done = true;
  echo.join();
  if (!pending_ack.empty()) write_all(fa, pending_ack);  // nothing left to redeliver to a next call
  ::close(fa);
  ::close(fb);
  if (dups) fail("W3: duplicates");
  return rtt;
}

run_result w3(const settings& s) {
  broker_setup b(s, {});
  const int n = s.w3;
  const auto [p50, p99] = percentiles(round_trips(s, b, n));
  const auto [floor50, floor99] = percentiles(relay_round_trips(n, s.payload));
  return {"W3",
          {{"p50_us", p50, "us"},
           {"p99_us", p99, "us"},
           {"relay_p50_us", floor50, "us"},
           {"relay_p99_us", floor99, "us"},
           {"p50_over_relay", p50 / floor50, "x"}},
          config_note(s) + "; relay = bare TCP relay, same four hops"};
}

// --- W8: W3 while wrong passwords arrive ------------------------------------------------------
// The broker with a password file at the default cost (argon2id, 64 MiB); W3's round trips with
// no other traffic, then while log_ins with wrong passwords arrive at 50 a second from 200
// loopback addresses (so that the per-address slowing leaves the checks to be done). Password
// checks run on worker threads: the round trips should not notice them beyond the CPU they take.

run_result w8(const settings& s) {
  const auto dir = std::filesystem::temp_directory_path() / ("message-bench-pw-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "passwords").string();
  for (const char* user : {"w3-a", "w3-b"}) {
    const std::string cmd = "printf 'bench-secret\\n' | '" + s.broker_binary + "' passwd --password-file '" + file +
                            "' " + user + " > /dev/null";
    if (std::system(cmd.c_str()) != 0) fail("W8: message-broker passwd failed");
  }
  broker_setup b(s, {"--password-file", file});
  const int n = s.w3 / 2;
  const auto quiet = percentiles(round_trips(s, b, n, "bench-secret"));
  const double cpu_before = b.cpu_s();
  std::atomic<bool> done{false};
  std::atomic<int> sent{0};
  std::thread flood;
  auto start_flood = [&] { flood = std::thread([&] {
    std::deque<std::pair<clock_type::time_point, int>> open;  // closed after 10 s (the login timeout)
    for (int i = 0; !done && i < 100'000; ++i) {
      const auto now = clock_type::now();
      while (!open.empty() && now - open.front().first > 10s) {
        ::close(open.front().second);
        open.pop_front();
      }
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in from{}, to{};
      from.sin_family = to.sin_family = AF_INET;
      from.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + static_cast<std::uint32_t>(i % 200));
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      to.sin_port = htons(b.tx_port());
      if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0 &&
          ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) {
        const std::string frame = R"({"message_id":"log_in","message_content":{"sender_username":"w3-a","password":"guess-)" +
                                  std::to_string(i) + "\"}}\n";
        (void)!::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL);
        open.emplace_back(now, fd);
        ++sent;
      } else {
        ::close(fd);
      }
      std::this_thread::sleep_until(now + 20ms);
    }
    for (auto& [t, fd] : open) ::close(fd);
  });
  std::this_thread::sleep_for(2s);  // the flood under way
  };
  std::pair<double, double> flooded;
  try {
    // Logged in before the flood: a flood of logins delays logins (server_busy past 32 checks).
    flooded = percentiles(round_trips(s, b, n, "bench-secret", start_flood));
  } catch (...) {
    done = true;
    if (flood.joinable()) flood.join();
    throw;
  }
  const double cpu = b.cpu_s() - cpu_before;
  done = true;
  if (flood.joinable()) flood.join();
  std::filesystem::remove_all(dir);
  return {"W8",
          {{"p50_us_no_logins", quiet.first, "us"},
           {"p99_us_no_logins", quiet.second, "us"},
           {"p50_us_wrong_logins", flooded.first, "us"},
           {"p99_us_wrong_logins", flooded.second, "us"},
           {"wrong_logins_sent", static_cast<double>(sent), "log_ins"},
           {"broker_cpu_s_meanwhile", cpu, "s"}},
          "W3 with a password file (argon2id, 64 MiB), then while 50 wrong log_ins a second arrive from 200 addresses"};
}

// --- W4: one sender to ten receivers -------------------------------------------------------

run_result w4(const settings& s) {
  broker_setup b(s, {});
  const int tx = connect_to(b.tx_port());
  line_reader rtx(tx);
  log_in(tx, rtx, "w4-sender");
  std::vector<int> rx;
  std::vector<std::string> receivers;
  std::string names = "[";
  for (int i = 0; i < s.w4_subs; ++i) {
    rx.push_back(connect_to(b.rx_port()));
    line_reader r(rx.back());
    receivers.push_back("w4-r" + std::to_string(i));
    log_in(rx.back(), r, receivers.back());
    names += (i ? ",\"" : "\"") + receivers.back() + "\"";
  }
  names += "]";
  b.wait_listed(receivers);
  const std::uint64_t n = static_cast<std::uint64_t>(s.w4);
  std::vector<receiver> recv(rx.size(), receiver(n));
  accept_counter acks;
  acks.start(tx);
  const double cpu0 = b.cpu_s();
  const auto start = clock_type::now();
  std::vector<std::thread> readers;
  for (std::size_t i = 0; i < rx.size(); ++i) readers.emplace_back([&, i] { recv[i].run(rx[i], n); });
  std::string batch;
  const std::string tag = "w4-" + run_tag();
  for (std::uint64_t i = 0; i < n; ++i) {
    batch += multicast_frame(names, tag + std::to_string(i), payload(i, s.payload));
    if (batch.size() > 64 * 1024) {
      write_all(tx, batch);
      batch.clear();
    }
  }
  write_all(tx, batch);
  for (auto& t : readers) t.join();
  const double cpu = b.cpu_s() - cpu0;
  acks.wait(n, 30s);
  acks.finish();
  clock_type::time_point last{};
  std::uint64_t total = 0, min_per = n;
  for (auto& r : recv) {
    check_loss("W4", r.unique, n, r.dups);
    last = std::max(last, r.last);
    total += r.unique;
    min_per = std::min(min_per, r.unique);
  }
  ::close(tx);
  for (int fd : rx) ::close(fd);
  return {"W4",
          {{"rate", static_cast<double>(total) / seconds(last - start), "deliveries/s"},
           {"broker_cpu_us_per_delivery", cpu * 1e6 / static_cast<double>(total), "us"},
           {"min_per_receiver", static_cast<double>(min_per), ""}},
          "multicast_message to " + std::to_string(s.w4_subs) + " receivers, " + config_note(s)};
}

// --- many agents: W5 idle, W7 heartbeating -------------------------------------------------

// 24 characters: the prefix, then the number, zero-padded (w5-000000000000000000042).
std::string agent_name(const std::string& prefix, int i) {
  std::string n = std::to_string(i);
  return prefix + std::string(24 - prefix.size() - n.size(), '0') + n;
}

// Connects and logs in n agents; their sockets are non-blocking afterwards. Reads every
// socket's acknowledgement, draining presence updates on the way.
std::vector<int> many_agents(std::uint16_t port, int n, const std::string& prefix) {
  std::vector<int> fds;
  fds.reserve(static_cast<std::size_t>(n));
  const int ep = ::epoll_create1(0);
  std::vector<std::string> partial(static_cast<std::size_t>(n));
  std::vector<bool> logged(static_cast<std::size_t>(n), false);
  int logged_in = 0;
  auto drain = [&](int timeout_ms) {
    epoll_event events[256];
    const int k = ::epoll_wait(ep, events, 256, timeout_ms);
    char buf[65536];
    for (int e = 0; e < k; ++e) {
      const auto idx = events[e].data.u32;
      for (;;) {
        const ssize_t r = ::recv(fds[idx], buf, sizeof buf, MSG_DONTWAIT);
        if (r <= 0) break;
        if (!logged[idx]) {
          partial[idx].append(buf, static_cast<std::size_t>(r));
          if (partial[idx].find("acknowledge_log_in") != std::string::npos) {
            logged[idx] = true;
            ++logged_in;
            partial[idx].clear();
            partial[idx].shrink_to_fit();
          }
        }
      }
    }
  };
  for (int i = 0; i < n; ++i) {
    const int fd = connect_to(port);
    fds.push_back(fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<std::uint32_t>(i);
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    write_all(fd, R"({"message_id":"log_in","message_content":{"sender_username":")" + agent_name(prefix, i) + "\"}}\n");
    if (i % 100 == 99) drain(0);
  }
  const auto deadline = clock_type::now() + 120s;
  while (logged_in < n && clock_type::now() < deadline) drain(50);
  if (logged_in < n) fail("only " + std::to_string(logged_in) + " of " + std::to_string(n) + " agents logged in");
  ::close(ep);
  return fds;
}

// Reads and drops whatever waits on the sockets; returns how many were closed by the broker.
int drain_all(const std::vector<int>& fds) {
  char buf[65536];
  int closed = 0;
  for (int fd : fds) {
    for (;;) {
      const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r == 0) {
        ++closed;
        break;
      }
      if (r < 0) break;
    }
  }
  return closed;
}

run_result w5(const settings& s) {
  broker_process b(s, {"--max-connections", std::to_string(s.w5_conns + 100)});
  std::this_thread::sleep_for(200ms);
  const long before = b.rss_kib();
  auto fds = many_agents(b.port(), s.w5_conns, "w5-");
  std::this_thread::sleep_for(3s);  // idle: presence updates delivered, queues empty, buffers released
  drain_all(fds);
  // The steady state: past the idle second after which buffers go back, and the next trim of
  // the heap (every 2 s), as a connection idle for long is.
  std::this_thread::sleep_for(3s);
  drain_all(fds);
  const long after = b.rss_kib();
  for (int fd : fds) ::close(fd);
  return {"W5",
          {{"kib_per_conn", static_cast<double>(after - before) / s.w5_conns, "KiB"},
           {"rss_before_kib", static_cast<double>(before), "KiB"},
           {"rss_after_kib", static_cast<double>(after), "KiB"}},
          std::to_string(s.w5_conns) + " idle logged-in agents, names of 24 characters"};
}

run_result w7(const settings& s) {
  broker_process b(s, {"--max-connections", std::to_string(s.w7_agents + 100)});
  auto fds = many_agents(b.port(), s.w7_agents, "w7-");
  drain_all(fds);
  const std::string heartbeat = "{\"message_id\":\"heartbeat\",\"message_content\":{}}\n";
  const auto interval = 10s * 3 / 4;  // the default 10 s, a little early
  const auto start = clock_type::now();
  const double cpu0 = b.cpu_s();
  std::vector<clock_type::time_point> due(fds.size());
  for (std::size_t i = 0; i < fds.size(); ++i) due[i] = start + interval * static_cast<long>(i) / static_cast<long>(fds.size());
  int closed = 0;
  while (clock_type::now() - start < std::chrono::seconds(s.w7_seconds)) {
    const auto now = clock_type::now();
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (due[i] <= now) {
        write_all(fds[i], heartbeat);
        due[i] = now + interval;
      }
    }
    closed += drain_all(fds);
    std::this_thread::sleep_for(10ms);
  }
  const double wall = seconds(clock_type::now() - start);
  const double cpu = b.cpu_s() - cpu0;
  // Everyone still online?
  const int check = connect_to(b.port());
  line_reader r(check);
  log_in(check, r, "w7-check");
  write_all(check, "{\"message_id\":\"get_user_list\",\"message_content\":{}}\n");
  const std::string list = r.wait_for(R"({"message_id":"user_list")");
  // {"message_id":"user_list","message_content":{"user_list":[...]}}: one comma before the
  // list, then one between each two names.
  const auto online = std::count(list.begin(), list.end(), ',');
  ::close(check);
  for (int fd : fds) ::close(fd);
  if (closed > 0 || online < s.w7_agents + 1) {
    fail("W7: " + std::to_string(closed) + " agents were disconnected, " + std::to_string(online) + " online");
  }
  return {"W7",
          {{"broker_cpu_percent", cpu / wall * 100, "% of a core"},
           {"online", static_cast<double>(online - 1), ""},
           {"seconds", wall, "s"}},
          std::to_string(s.w7_agents) + " agents heartbeating every 7.5 s (granted 10 s)"};
}

// --- W6: a receiver offline, its queue, then it logs in (and after kill -9) --------------------

std::pair<double, std::uint64_t> w6_drain(std::uint16_t port, std::uint64_t n) {
  const int rx = connect_to(port);
  receiver recv(n);
  const auto start = clock_type::now();
  write_all(rx, R"({"message_id":"log_in","message_content":{"sender_username":"w6-receiver"}})" "\n");
  recv.run(rx, n, 10s);
  ::close(rx);
  check_loss("W6", recv.unique, n, recv.dups);
  return {seconds(recv.last - start), recv.unique};
}

void w6_fill(std::uint16_t port, const settings& s) {
  const int tx = connect_to(port);
  line_reader r(tx);
  log_in(tx, r, "w6-sender");
  const std::uint64_t n = static_cast<std::uint64_t>(s.w6);
  accept_counter acks;
  acks.start(tx);
  std::string batch;
  const std::string tag = "w6-" + run_tag();
  for (std::uint64_t i = 0; i < n; ++i) {
    batch += send_frame("w6-receiver", tag + std::to_string(i), payload(i, s.payload));
    if (batch.size() > 64 * 1024) {
      write_all(tx, batch);
      batch.clear();
    }
  }
  write_all(tx, batch);
  if (!acks.wait(n, 120s)) fail("W6: not every message was accepted");
  acks.finish();
  ::close(tx);
}

run_result w6(const settings& s) {
  const std::uint64_t n = static_cast<std::uint64_t>(s.w6);
  double drain_s, crash_drain_s;
  std::uint64_t survived;
  {
    broker_process b(s, {});
    w6_fill(b.port(), s);
    drain_s = w6_drain(b.port(), n).first;
  }
  {
    broker_process b(s, {});
    w6_fill(b.port(), s);
    b.kill9();
    b.start();
    auto [secs, got] = w6_drain(b.port(), n);
    crash_drain_s = secs;
    survived = got;
  }
  return {"W6",
          {{"drain_s", drain_s, "s"},
           {"survived_kill9", static_cast<double>(survived), "of " + std::to_string(n)},
           {"drain_after_kill9_s", crash_drain_s, "s"}},
          "journal on; drain = log_in until the last of " + std::to_string(n) + " arrived"};
}

// --- main ----------------------------------------------------------------------------------


// Per metric: the median, min and max over the runs.
void print(const settings& s, const std::vector<run_result>& results) {
  for (std::size_t m = 0; m < results[0].metrics.size(); ++m) {
    std::vector<double> v;
    for (auto& r : results) v.push_back(r.metrics[m].value);
    std::sort(v.begin(), v.end());
    const auto& mm = results[0].metrics[m];
    if (s.json) {
      std::printf("{\"workload\":\"%s\",\"metric\":\"%s\",\"median\":%.3f,\"min\":%.3f,\"max\":%.3f,\"unit\":\"%s\","
                  "\"runs\":%zu}\n",
                  results[0].workload.c_str(), mm.name.c_str(), v[v.size() / 2], v.front(), v.back(), mm.unit.c_str(),
                  v.size());
    } else {
      std::printf("%-6s %-28s %14.2f %14.2f %14.2f  %s\n", m == 0 ? results[0].workload.c_str() : "", mm.name.c_str(),
                  v[v.size() / 2], v.front(), v.back(), mm.unit.c_str());
    }
  }
  if (!s.json) std::printf("       (%s)\n", results[0].note.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  ma::bench::program_name = "message-bench";
  settings s;
  s.broker_binary = (std::filesystem::path(argv[0]).parent_path() / "message-broker").string();
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(k + " needs a value");
      return argv[++i];
    };
    if (k == "--help" || k == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else if (k == "--version") {
      std::puts("message-bench " MA_VERSION);
      return 0;
    } else if (k == "--workloads") s.workloads = split(value(), ',');
    else if (k == "--runs") s.runs = std::stoi(value());
    else if (k == "--json") s.json = true;
    else if (k == "--broker") s.broker = value();
    else if (k == "--broker-pid") s.broker_pid = std::stoi(value());
    else if (k == "--broker-binary") s.broker_binary = value();
    else if (k == "--broker-arg") s.broker_args.push_back(value());
    else if (k == "--nats-server") s.nats_server = value();
    else if (k == "--w5-conns") s.w5_conns = std::stoi(value());
    else if (k == "--w7-agents") s.w7_agents = std::stoi(value());
    else if (k == "--w7-seconds") s.w7_seconds = std::stoi(value());
    else if (k == "--scale") {
      // A quick look: every count divided by N.
      const int f = std::stoi(value());
      s.w1 /= f, s.w2 /= f, s.w3 /= f, s.w4 /= f, s.w5_conns /= f, s.w6 /= f, s.w7_agents /= f;
    } else {
      fail("unknown option " + k + " (message-bench --help lists them)");
    }
  }
  // W5 and W7 need a descriptor per agent, here and in the broker (which inherits the limit).
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &lim);
  ::signal(SIGPIPE, SIG_IGN);

  std::map<std::string, std::function<run_result(const settings&)>> all{
      {"w1", w1}, {"w2", w2}, {"w3", w3}, {"w4", w4}, {"w5", w5}, {"w6", w6}, {"w7", w7}, {"w8", w8},
      {"w1x", w1}, {"w3x", w3}, {"w4x", w4}};
  if (!s.json) std::printf("%-6s %-28s %14s %14s %14s  %s\n", "", "metric", "median", "min", "max", "unit");
  const std::vector<std::string> persist_off{"--persist-accepted", "off"};
  for (const auto& w : s.workloads) {
    auto it = all.find(w);
    if (it == all.end()) fail("unknown workload " + w);
    const int runs = (w == "w5" || w == "w7") ? 1 : s.runs;  // one fresh broker per run already; W7 takes a minute
    // A running broker (--broker) has the configuration it has: no second line.
    const bool cross = w.ends_with('x');
    const bool second_line = s.broker.empty() && (w == "w1" || w == "w3" || w == "w4");
    for (const auto& config : {std::vector<std::string>{}, persist_off}) {
      if (!config.empty() && !second_line) break;
      settings line = s;
      line.config = config;
      line.cross = cross;
      std::vector<run_result> results;
      for (int r = 0; r < runs; ++r) {
        try {
          results.push_back(it->second(line));
          if (cross) results.back().workload += "x";
          if (!config.empty()) results.back().workload += " off";
        } catch (const std::exception& e) {
          fail(w + ": " + e.what());
        }
      }
      print(s, results);
    }
  }
  return 0;
}
