// A mutation fuzzer of the project's own for what a hostile client controls first: the line
// framer and the request decoder (and the error frame built from what they refuse). It starts
// from valid frames of every kind, mutates them (bytes flipped, inserted, deleted, spliced,
// repeated, JSON-ish tokens dropped in), feeds them through the framer in random chunks and
// decodes every line, checking what must always hold: no crash (the sanitizer build catches
// memory errors), every refusal a known error code with a sentence, every error frame valid
// UTF-8, no frame longer than the framer's limit.
//
//   frames-fuzz [SECONDS] [SEED]    ctest runs it for 3 seconds; run it longer by hand.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/encode.hpp"
#include "core/framer.hpp"
#include "core/request.hpp"
#include "core/utf8.hpp"

namespace {

using namespace ma;

const std::vector<std::string> seeds = {
    R"({"message_id":"log_in","message_content":{"sender_username":"alice","heartbeat_interval_ms":5000,"receive_window":10,"send_only":false}})",
    R"({"message_id":"heartbeat","message_content":{"request_id":"r1"}})",
    R"({"message_id":"send_message","message_content":{"receiver_username":"bob","message_text":"hi","payload":{"a":[1,2.5,-3e9,null,true]},"message_uuid":"u-1","ttl_ms":1000}})",
    R"({"message_id":"multicast_message","message_content":{"receiver_usernames":["a","b","c"],"message_text":"\u00e9\ud83d\ude00"}})",
    R"({"message_id":"broadcast_message","message_content":{"payload":"x"}})",
    R"({"message_id":"group_message","message_content":{"group_name":"ops","message_text":"deploy"}})",
    R"({"message_id":"create_group","message_content":{"group_name":"ops","group_members":["bob","carol"]}})",
    R"({"message_id":"join_group","message_content":{"group_name":"ops"}})",
    R"({"message_id":"acknowledge_message","message_content":{"message_uuids":["u-1","u-2"],"sender_username":"alice"}})",
    R"({"message_id":"get_user_list"})",
    R"({"message_id":"get_group_list","message_content":{}})",
    R"({"message_id":"log_out","message_content":{}})",
    R"({"message_id":"discover_broker","message_content":{"request_id":"d"}})",
};
const std::vector<std::string> tokens = {"{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "null",
                                         "1e999", "-0", "true", "\n", "\r\n", "\xff", "\xc3", "\xe2\x82",
                                         "\"message_id\"", "\"message_content\"", "9999999999999999999999"};

std::string mutate(std::string s, std::mt19937_64& rng) {
  auto pick = [&](std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % n); };
  const int rounds = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < rounds; ++i) {
    switch (rng() % 7) {
      case 0:
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:
        s.insert(pick(s.size() + 1), 1, static_cast<char>(rng() % 256));
        break;
      case 2:
        if (!s.empty()) s.erase(pick(s.size()), 1 + pick(8));
        break;
      case 3:
        s.insert(pick(s.size() + 1), tokens[pick(tokens.size())]);
        break;
      case 4: {
        const std::string& other = seeds[pick(seeds.size())];
        const std::size_t at = pick(other.size());
        s = s.substr(0, pick(s.size() + 1)) + other.substr(at);
        break;
      }
      case 5:
        if (!s.empty() && s.size() < 100'000) {
          const std::size_t at = pick(s.size()), n = 1 + pick(std::min<std::size_t>(s.size() - at, 64));
          s.insert(at, s.substr(at, n * (1 + pick(50))));
        }
        break;
      default:
        if (!s.empty()) s[pick(s.size())] = "{}[]\",:\\0a \t"[pick(13)];
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20261202;
  std::mt19937_64 rng(seed);
  constexpr std::size_t max_frame = 4096;
  request_decoder decoder(1024);
  std::map<std::string, std::uint64_t> outcomes;
  std::uint64_t executions = 0, findings = 0;
  auto finding = [&](const std::string& what, const std::string& input) {
    if (++findings <= 5) std::fprintf(stderr, "finding: %s (input of %zu bytes)\n", what.c_str(), input.size());
  };
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    for (int batch = 0; batch < 64; ++batch) {
      std::string input = mutate(seeds[rng() % seeds.size()], rng) + "\n";
      if (rng() % 4 == 0) input += mutate(seeds[rng() % seeds.size()], rng) + "\n";
      line_framer framer(max_frame, 64 + rng() % 4096);
      std::string_view rest = input;
      bool too_large = false;
      while (!rest.empty() && !too_large) {
        auto space = framer.prepare();
        if (space.empty()) break;
        const std::size_t n = std::min<std::size_t>({space.size(), rest.size(), 1 + rng() % 512});
        std::copy_n(rest.data(), n, space.data());
        framer.commit(n);
        rest.remove_prefix(n);
        for (;;) {
          auto f = framer.next();
          if (f.st == line_framer::status::need_more) break;
          if (f.st == line_framer::status::too_large) {
            ++outcomes["frame_too_large"];
            too_large = true;
            break;
          }
          ++executions;
          if (f.line.size() > max_frame) finding("a frame longer than the limit", input);
          auto r = rng() % 8 == 0 ? decoder.decode_datagram(f.line) : decoder.decode(f.line);
          if (r) {
            ++outcomes["ok " + std::string(to_string(r->k))];
            continue;
          }
          const protocol_error& e = r.error();
          ++outcomes[std::string(to_string(e.code))];
          if (e.text.size() < 20 || e.text.back() != '.') finding("an error without a sentence: " + e.text, input);
          const std::string frame = make_error_frame(e);
          if (first_invalid_utf8(frame)) finding("an error frame that is not UTF-8", input);
        }
      }
    }
  }
  std::printf("frames-fuzz: %llu executions in %.1f s (seed %llu), %llu findings, %zu distinct outcomes:\n",
              static_cast<unsigned long long>(executions), seconds, static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(findings), outcomes.size());
  for (auto& [what, n] : outcomes) std::printf("  %-28s %llu\n", what.c_str(), static_cast<unsigned long long>(n));
  return findings == 0 ? 0 : 1;
}
