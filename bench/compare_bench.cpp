// compare-bench: the same workloads, the same client-side code, against Mosquitto, nats-server
// and message-broker, each started here on loopback (bench/peers.hpp), and one table with our
// ratio to each (usage: --help). bench/compare runs it.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/peers.hpp"
#include "bench/processes.hpp"

namespace {

using namespace ma::bench;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

const char* const usage = R"(usage: compare-bench [OPTIONS]

Runs the workloads against Mosquitto (MQTT), nats-server (NATS) and message-broker with the same
workload code, each broker started on 127.0.0.1 for every run and stopped by its pid, and prints
the median (min-max) of the runs with our ratio to each peer. Throughputs are higher-better,
times lower-better.

  W1  one sender streams --w1 messages to one receiver without waiting: msg/s, broker CPU us/msg
      (MQTT QoS 0, core NATS; ours: no wait for message_accepted, every message acknowledged)
  W2  the same with the broker's acknowledgement, --window in flight: msg/s
      (MQTT QoS 1, JetStream on file storage; ours: message_accepted)
  W3  round trips A -> B -> A, one at a time: p50 and p99 in microseconds
  W4  one sender to 10 receivers of one topic (ours: multicast): deliveries/s, CPU us/delivery
  W5  idle connections logged in (names of 24 characters): broker KiB per connection
  W6  --w6 messages queued for an offline receiver, then it connects: seconds to drain
      (an MQTT persistent session at QoS 1, a JetStream durable consumer, ours' Dead Letter Channel)

Options:
  --workloads w1,w2,...   which (default: all)
  --brokers mosquitto,nats,ours   which (default: all three)
  --runs N                runs of each (default 3)
  --broker-binary PATH    message-broker (default: the one beside this program)
  --w1 N --w2 N --w3 N --w4 N --w5 N --w6 N   sizes (defaults 200000 100000 5000 20000 5000 50000)
  --window N              W2's window (default 1000)
  --payload BYTES         message size (default 100)
  --version, --help
)";

struct settings {
  std::vector<std::string> workloads{"w1", "w2", "w3", "w4", "w5", "w6"};
  std::vector<std::string> brokers{"mosquitto", "nats", "ours"};
  int runs = 3;
  std::string broker_binary;
  int w1 = 200'000, w2 = 100'000, w3 = 5'000, w4 = 20'000, w5 = 5'000, w6 = 50'000, window = 1000, payload = 100;
};

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

std::uint64_t seq_of(std::string_view p) {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < 15 && i < p.size(); ++i) n = n * 10 + static_cast<std::uint64_t>(p[i] - '0');
  return n;
}

// Counts what a receiver got: distinct sequence numbers and duplicates; waits for a total.
class tally {
 public:
  explicit tally(std::uint64_t expected) : seen_(expected, false) {}
  void add(std::string_view p) {
    const auto seq = seq_of(p);
    std::lock_guard lock(mutex_);
    if (seq >= seen_.size()) return;
    if (seen_[seq]) {
      ++duplicates_;
    } else {
      seen_[seq] = true;
      ++distinct_;
    }
    if (distinct_ == seen_.size()) cv_.notify_all();
  }
  // True when every one came within the limit.
  bool wait_all(std::chrono::seconds limit) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return distinct_ == seen_.size(); });
  }
  std::uint64_t distinct() const {
    std::lock_guard lock(mutex_);
    return distinct_;
  }
  std::uint64_t duplicates() const {
    std::lock_guard lock(mutex_);
    return duplicates_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<bool> seen_;
  std::uint64_t distinct_ = 0, duplicates_ = 0;
};

void check_complete(const std::string& what, const tally& t, std::uint64_t want, bool ok) {
  if (!ok || t.distinct() != want) {
    fail(what + ": " + std::to_string(t.distinct()) + " of " + std::to_string(want) + " arrived within the limit");
  }
}

// One measured figure of one run.
using figures = std::map<std::string, double>;

class run_dir {
 public:
  run_dir() : path_(fs::temp_directory_path() / ("compare-bench-" + std::to_string(::getpid()) + "-" + std::to_string(n_++))) {
    fs::create_directories(path_);
  }
  ~run_dir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  static inline int n_ = 0;
};

std::unique_ptr<broker> start(const settings& s, const std::string& name, const fs::path& dir) {
  if (name == "mosquitto") return start_mosquitto(dir);
  if (name == "nats") return start_nats(dir);
  return start_ours(dir, s.broker_binary);
}

std::string unique(const std::string& prefix) {
  static std::atomic<int> n{0};
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

// W1 and W2: one sender, one receiver.
figures stream(const settings& s, broker& b, int count, bool acked) {
  const std::string topic = unique(acked ? "w2" : "w1");
  if (acked) b.prepare_acked(topic);
  tally got(static_cast<std::uint64_t>(count));
  connect_options ro{unique("receiver"), {topic}, [&](std::string_view p) { got.add(p); }};
  auto receiver = b.connect(ro);
  connect_options so{unique("sender"), {}, nullptr};
  so.window = s.window;
  auto sender = b.connect(so);
  const double cpu0 = proc_cpu_s(b.pid());
  const auto t0 = clock_type::now();
  for (int i = 0; i < count; ++i) {
    const auto p = payload(static_cast<std::uint64_t>(i), s.payload);
    acked ? sender->publish_acked(topic, p) : sender->publish(topic, p);
  }
  sender->flush();
  if (acked) sender->wait_acked();
  check_complete(acked ? "W2" : "W1", got, static_cast<std::uint64_t>(count), got.wait_all(120s));
  const double t = seconds(clock_type::now() - t0);
  const double cpu = proc_cpu_s(b.pid()) - cpu0;
  if (got.duplicates() > 0) fail("duplicates: " + std::to_string(got.duplicates()));
  return {{"msg/s", count / t}, {"broker CPU us/msg", cpu * 1e6 / count}};
}

// W3: A sends, B sends it back, A waits for it before the next.
figures round_trips(const settings& s, broker& b) {
  const std::string ta = unique("w3a"), tb = unique("w3b");
  std::mutex m;
  std::condition_variable cv;
  std::optional<std::uint64_t> back;
  connect_options ao{unique("a"), {ta}, [&](std::string_view p) {
                       std::lock_guard lock(m);
                       back = seq_of(p);
                       cv.notify_all();
                     }};
  ao.low_latency = true;
  auto a = b.connect(ao);
  connection* bp = nullptr;
  connect_options bo{unique("b"), {tb}, [&](std::string_view p) { bp->publish(ta, p); }};
  bo.low_latency = true;
  auto bc = b.connect(bo);
  bp = bc.get();
  const int warmup = 500;
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(s.w3));
  for (int i = 0; i < warmup + s.w3; ++i) {
    const auto seq = static_cast<std::uint64_t>(i);
    const auto p = payload(seq, s.payload);
    const auto t0 = clock_type::now();
    a->publish(tb, p);
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, 30s, [&] { return back == seq; })) fail("W3: round trip " + std::to_string(i) + " never came back");
    if (i >= warmup) us.push_back(seconds(clock_type::now() - t0) * 1e6);
  }
  std::sort(us.begin(), us.end());
  return {{"p50 us", us[us.size() / 2]}, {"p99 us", us[us.size() * 99 / 100]}};
}

// W4: one sender, ten receivers of one topic.
figures fan_out(const settings& s, broker& b) {
  const std::string topic = unique("w4");
  constexpr int receivers = 10;
  std::vector<std::unique_ptr<tally>> got;
  std::vector<std::unique_ptr<connection>> rs;
  for (int i = 0; i < receivers; ++i) {
    got.push_back(std::make_unique<tally>(static_cast<std::uint64_t>(s.w4)));
    connect_options o{unique("r"), {topic}, [t = got.back().get()](std::string_view p) { t->add(p); }};
    rs.push_back(b.connect(o));
  }
  auto sender = b.connect({unique("sender"), {}, nullptr});
  const double cpu0 = proc_cpu_s(b.pid());
  const auto t0 = clock_type::now();
  for (int i = 0; i < s.w4; ++i) sender->publish(topic, payload(static_cast<std::uint64_t>(i), s.payload));
  sender->flush();
  for (auto& t : got) check_complete("W4", *t, static_cast<std::uint64_t>(s.w4), t->wait_all(120s));
  const double t = seconds(clock_type::now() - t0);
  const double cpu = proc_cpu_s(b.pid()) - cpu0;
  const double deliveries = static_cast<double>(s.w4) * receivers;
  return {{"deliveries/s", deliveries / t}, {"broker CPU us/delivery", cpu * 1e6 / deliveries}};
}

// Reads, without waiting, whatever each connection has been sent.
void read_what_waits(const std::vector<int>& fds) {
  char buf[65536];
  for (int fd : fds) {
    while (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
  }
}

// W5: idle connections, logged in.
figures idle(const settings& s, broker& b) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &r);
  std::this_thread::sleep_for(200ms);
  const long before = proc_rss_kib(b.pid());
  std::vector<int> fds;
  for (int i = 0; i < s.w5; ++i) {
    std::string name = unique("idle");
    name.resize(24, 'x');
    fds.push_back(b.idle_connection(name));
  }
  // An idle client still reads what it is sent (ours: the presence of those who came after
  // it); past the second after which an idle session gives back its buffers (ours), and the
  // broker's next trim.
  // Then, with nothing more to read, the steady state: past ours' idle second and its next
  // trim of the heap (every 2 s), as a connection idle for long is.
  std::this_thread::sleep_for(3s);
  read_what_waits(fds);
  std::this_thread::sleep_for(3s);
  read_what_waits(fds);
  const long after = proc_rss_kib(b.pid());
  for (int fd : fds) ::close(fd);
  return {{"KiB/connection", static_cast<double>(after - before) / s.w5}};
}

// W6: a queue for an offline receiver, drained when it connects.
figures drain(const settings& s, broker& b) {
  const std::string topic = unique("w6"), who = unique("w6r");
  b.durable_queue(who, topic);
  {
    connect_options so{unique("sender"), {}, nullptr};
    so.window = s.window;
    auto sender = b.connect(so);
    for (int i = 0; i < s.w6; ++i) sender->publish_acked(topic, payload(static_cast<std::uint64_t>(i), s.payload));
    sender->wait_acked();
  }
  tally got(static_cast<std::uint64_t>(s.w6));
  const auto t0 = clock_type::now();
  connect_options ro{who, {topic}, [&](std::string_view p) { got.add(p); }};
  ro.durable = true;
  auto receiver = b.connect(ro);
  check_complete("W6", got, static_cast<std::uint64_t>(s.w6), got.wait_all(120s));
  return {{"drain s", seconds(clock_type::now() - t0)}};
}

figures run_one(const settings& s, const std::string& w, broker& b) {
  if (w == "w1") return stream(s, b, s.w1, false);
  if (w == "w2") return stream(s, b, s.w2, true);
  if (w == "w3") return round_trips(s, b);
  if (w == "w4") return fan_out(s, b);
  if (w == "w5") return idle(s, b);
  if (w == "w6") return drain(s, b);
  fail("unknown workload " + w);
}

struct summary {
  double median = 0, min = 0, max = 0;
};
summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

bool lower_is_better(const std::string& metric) {
  return metric.find("us") != std::string::npos || metric.find(" s") != std::string::npos ||
         metric.find("KiB") != std::string::npos;
}

std::string format(double v) {
  char b[64];
  if (v >= 1000) {
    std::snprintf(b, sizeof b, "%.0f", v);
    std::string s = b;
    for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
    return s;
  }
  // Three significant digits below 10: a drain of 0.14 s is 0.143 or 0.136 against a target.
  std::snprintf(b, sizeof b, v >= 10 ? "%.1f" : v >= 1 ? "%.2f" : "%.3f", v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  program_name = "compare-bench";
  settings s;
  s.broker_binary = (fs::path(argv[0]).parent_path() / "message-broker").string();
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(k + " needs a value (--help)");
      return argv[++i];
    };
    // The options that take a number, and where it goes.
    const std::map<std::string, int*> numbers = {{"--runs", &s.runs}, {"--w1", &s.w1},         {"--w2", &s.w2},
                                                 {"--w3", &s.w3},     {"--w4", &s.w4},         {"--w5", &s.w5},
                                                 {"--w6", &s.w6},     {"--window", &s.window}, {"--payload", &s.payload}};
    if (auto n = numbers.find(k); n != numbers.end()) {
      *n->second = std::stoi(value());
    } else if (k == "--help" || k == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else if (k == "--version") {
      std::printf("compare-bench %s\n", MA_VERSION);
      return 0;
    } else if (k == "--workloads") {
      s.workloads = split(value(), ',');
    } else if (k == "--brokers") {
      s.brokers = split(value(), ',');
    } else if (k == "--broker-binary") {
      s.broker_binary = value();
    } else {
      fail("unknown option " + k + " (--help)");
    }
  }
  for (auto& b : s.brokers) {
    if (b != "mosquitto" && b != "nats" && b != "ours") fail("--brokers: '" + b + "' is not one of mosquitto, nats, ours");
  }
  // results[workload][metric][broker] = every run's figure
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>> results;
  std::vector<std::pair<std::string, std::string>> order;  // (workload, metric) as first seen
  for (const auto& w : s.workloads) {
    for (int r = 0; r < s.runs; ++r) {
      for (const auto& name : s.brokers) {  // interleaved: the machine's mood falls on all alike
        run_dir dir;
        auto b = start(s, name, dir.path());
        for (auto& [metric, v] : run_one(s, w, *b)) {
          if (results[w][metric].empty()) order.emplace_back(w, metric);
          results[w][metric][name].push_back(v);
          std::fprintf(stderr, "%s %s run %d: %s %s\n", w.c_str(), name.c_str(), r + 1, metric.c_str(), format(v).c_str());
        }
      }
    }
  }
  std::printf("| workload | metric |");
  for (auto& b : s.brokers) std::printf(" %s |", b.c_str());
  const bool ours = std::find(s.brokers.begin(), s.brokers.end(), "ours") != s.brokers.end();
  if (ours) {
    for (auto& b : s.brokers) {
      if (b != "ours") std::printf(" ours vs %s |", b.c_str());
    }
  }
  std::printf("\n|---|---|");
  for (std::size_t i = 0; i < s.brokers.size() + (ours ? s.brokers.size() - 1 : 0); ++i) std::printf("---|");
  std::printf("\n");
  for (auto& [w, metric] : order) {
    auto& by = results[w][metric];
    std::printf("| %s | %s |", w.c_str(), metric.c_str());
    for (auto& b : s.brokers) {
      const auto m = summarize(by[b]);
      std::printf(" %s (%s-%s) |", format(m.median).c_str(), format(m.min).c_str(), format(m.max).c_str());
    }
    if (ours) {
      const double mine = summarize(by["ours"]).median;
      for (auto& b : s.brokers) {
        if (b == "ours") continue;
        const double theirs = summarize(by[b]).median;
        // Above 1: ours is better, whichever way the metric points.
        const double ratio = lower_is_better(metric) ? theirs / mine : mine / theirs;
        std::printf(" %.2fx |", ratio);
      }
    }
    std::printf("\n");
  }
  return 0;
}
