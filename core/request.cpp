#include "core/request.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parser.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "core/duration.hpp"
#include "core/encode.hpp"
#include "core/utf8.hpp"
#include "core/names.hpp"

namespace json = boost::json;

namespace ma {
namespace {

std::string kind_name(kind k) { return std::string(to_string(k)); }

// False if v holds a number that is not finite: 1e400, or an integer of more than 309 digits,
// which the parser reads as infinity and no JSON text can carry.
bool all_numbers_finite(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: return std::isfinite(v.get_double());
    case json::kind::array:
      for (const json::value& item : v.get_array()) {
        if (!all_numbers_finite(item)) return false;
      }
      return true;
    case json::kind::object:
      for (const auto& item : v.get_object()) {
        if (!all_numbers_finite(item.value())) return false;
      }
      return true;
    default: return true;
  }
}

// Reads the fields of one request's content and builds the errors that name them.
class content_reader {
 public:
  content_reader(kind k, const json::object& content, request& out) : k_(k), c_(content), out_(out) {}

  protocol_error fail(errc code, std::string text) const {
    return protocol_error{code, std::move(text), out_.request_id, out_.message_uuid};
  }

  // nullptr when absent.
  const json::value* find(std::string_view key) const {
    auto it = c_.find(key);
    return it == c_.end() ? nullptr : &it->value();
  }

  std::optional<protocol_error> required_string(std::string_view key, std::string_view what,
                                                std::string& dst) const {
    const json::value* v = find(key);
    if (!v) return fail(errc::missing_field, kind_name(k_) + " needs " + std::string(key) + ", " + std::string(what) + ".");
    if (!v->is_string()) return fail(errc::invalid_field, std::string(key) + " must be a string: " + std::string(what) + ".");
    dst.assign(v->get_string().data(), v->get_string().size());
    return std::nullopt;
  }

  std::optional<protocol_error> optional_string(std::string_view key, std::string_view what,
                                                std::optional<std::string>& dst) const {
    const json::value* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) return fail(errc::invalid_field, std::string(key) + " must be a string: " + std::string(what) + ".");
    dst.emplace(v->get_string().data(), v->get_string().size());
    return std::nullopt;
  }

  // A whole number from 0 (or 1 if positive) to max; unit names it in the sentence.
  std::optional<protocol_error> optional_count(std::string_view key, std::string_view what, bool positive,
                                               std::optional<std::uint64_t>& dst,
                                               std::uint64_t max = max_duration_ms,
                                               std::string_view unit = "milliseconds") const {
    const json::value* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    std::optional<std::uint64_t> n;
    if (v->is_uint64()) n = v->get_uint64();
    else if (v->is_int64() && v->get_int64() >= 0) n = static_cast<std::uint64_t>(v->get_int64());
    if (!n || (positive && *n == 0) || *n > max) {
      return fail(errc::invalid_field, std::string(key) + " must be a whole number of " + std::string(unit) +
                                           " from " + (positive ? "1" : "0") + " to " + std::to_string(max) + ": " +
                                           std::string(what) + ".");
    }
    dst = n;
    return std::nullopt;
  }

  std::optional<protocol_error> optional_bool(std::string_view key, std::string_view what, bool& dst) const {
    const json::value* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_bool()) return fail(errc::invalid_field, std::string(key) + " must be true or false: " + std::string(what) + ".");
    dst = v->get_bool();
    return std::nullopt;
  }

  std::optional<protocol_error> username(std::string_view key, std::string_view what, std::string& dst) const {
    if (auto e = required_string(key, what, dst)) return e;
    if (!is_valid_username(dst)) return bad_username(key, dst);
    return std::nullopt;
  }

  protocol_error bad_username(std::string_view key, std::string_view name) const {
    return fail(errc::invalid_username,
                std::string(key) + " '" + std::string(utf8_prefix(name, 80)) +
                    "' is not a valid username: use 1 to 64 characters of A-Z a-z 0-9 . _ -.");
  }

  std::optional<protocol_error> group_name(std::string& dst) const {
    if (auto e = required_string("group_name", "the name of the group", dst)) return e;
    if (!is_valid_group_name(dst)) {
      return fail(errc::invalid_field, "group_name '" + std::string(utf8_prefix(dst, 80)) +
                                           "' is not a valid group name: use 1 to 64 characters of A-Z a-z 0-9 . _ -.");
    }
    return std::nullopt;
  }

  // An array of usernames, repeats removed, order kept.
  template <class Names>
  std::optional<protocol_error> username_array(std::string_view key, std::string_view what, bool required,
                                               bool non_empty, Names& dst) const {
    const json::value* v = find(key);
    if (!v || v->is_null()) {
      if (!required) return std::nullopt;
      return fail(errc::missing_field, kind_name(k_) + " needs " + std::string(key) + ", " + std::string(what) + ".");
    }
    if (!v->is_array() || (non_empty && v->get_array().empty())) {
      return fail(errc::invalid_field, std::string(key) + " must be " + (non_empty ? "a non-empty" : "an") +
                                           " array of usernames: " + std::string(what) + ".");
    }
    for (const json::value& item : v->get_array()) {
      if (!item.is_string()) {
        return fail(errc::invalid_field, std::string(key) + " must hold only strings: " + std::string(what) + ".");
      }
      std::string_view name(item.get_string().data(), item.get_string().size());
      if (!is_valid_username(name)) return bad_username(key, name);
      if (std::find(dst.begin(), dst.end(), name) == dst.end()) dst.emplace_back(name);
    }
    return std::nullopt;
  }

  std::optional<protocol_error> message_uuid() const {
    const json::value* v = find("message_uuid");
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string() || !is_valid_message_uuid(std::string_view(v->get_string().data(), v->get_string().size()))) {
      return fail(errc::invalid_field,
                  "message_uuid must be 1 to 128 characters of A-Z a-z 0-9 . _ : - (or leave it out and the broker makes one).");
    }
    return std::nullopt;
  }

  // message_text and/or payload, serialized as the stored body.
  std::optional<protocol_error> body() const {
    const json::value* text = find("message_text");
    const json::value* payload = find("payload");
    if (text && text->is_null()) text = nullptr;  // payload null stays: null is a JSON payload
    if (!text && !payload) {
      return fail(errc::missing_field, kind_name(k_) + " needs message_text (a string) or payload (any JSON), or both.");
    }
    if (text && !text->is_string()) {
      return fail(errc::invalid_field, "message_text must be a string; put structured data in payload.");
    }
    if (payload && !all_numbers_finite(*payload)) {
      return fail(errc::invalid_field,
                  "payload holds a number too large for JSON (it would be Infinity): send it as a string.");
    }
    out_.body.clear();
    if (text) out_.body.reserve(text->get_string().size() + 24);
    out_.body += '{';
    if (text) {
      out_.body += "\"message_text\":";
      append_json_string(out_.body, std::string_view(text->get_string().data(), text->get_string().size()));
    }
    if (payload) {
      if (text) out_.body += ',';
      out_.body += "\"payload\":";
      out_.body += json::serialize(*payload);
    }
    out_.body += '}';
    return std::nullopt;
  }

  std::optional<protocol_error> message_common() const {
    if (auto e = message_uuid()) return e;
    if (auto e = body()) return e;
    return optional_count("ttl_ms", "how long the message may wait for delivery", false, out_.ttl_ms);
  }

 private:
  kind k_;
  const json::object& c_;
  request& out_;
};

std::optional<protocol_error> read_content(kind k, content_reader& r, request& out) {
  switch (k) {
    case kind::log_in:
      if (auto e = r.username("sender_username", "the username to log in as", out.username)) return e;
      if (auto e = r.optional_string("password", "the password of the username", out.password)) return e;
      if (auto e = r.optional_bool("send_only", "true for a session that only sends (no deliveries)", out.send_only)) {
        return e;
      }
      if (auto e = r.optional_count("receive_window", "the most unacknowledged messages the agent takes at once", true,
                                    out.receive_window, max_receive_window, "messages")) {
        return e;
      }
      return r.optional_count("heartbeat_interval_ms", "how often the agent will send heartbeats", true,
                              out.heartbeat_interval_ms);
    case kind::log_out:
    case kind::heartbeat:
    case kind::get_user_list:
    case kind::get_group_list:
      return std::nullopt;
    case kind::send_message:
      out.receivers.emplace_back();
      if (auto e = r.username("receiver_username", "the name of the user to deliver to", out.receivers.back())) return e;
      return r.message_common();
    case kind::multicast_message:
      if (auto e = r.username_array("receiver_usernames", "the names of the users to deliver to", true, true, out.receivers)) return e;
      return r.message_common();
    case kind::broadcast_message:
      return r.message_common();
    case kind::group_message:
      if (auto e = r.group_name(out.group_name)) return e;
      return r.message_common();
    case kind::create_group:
      if (auto e = r.group_name(out.group_name)) return e;
      return r.username_array("group_members", "the users to put in the group", false, false, out.members);
    case kind::join_group:
    case kind::leave_group:
      return r.group_name(out.group_name);
    case kind::acknowledge_message: {
      const json::value* one = r.find("message_uuid");
      const json::value* many = r.find("message_uuids");
      if (one && one->is_null()) one = nullptr;
      if (many && many->is_null()) many = nullptr;
      if (!one && !many) {
        return r.fail(errc::missing_field,
                      "acknowledge_message needs message_uuid, or message_uuids (an array), naming what was received.");
      }
      if (one && !one->is_null()) {
        if (auto e = r.message_uuid()) return e;
        out.ack_uuids.push_back(out.message_uuid);
      }
      if (many) {
        if (!many->is_array() || many->get_array().empty()) {
          return r.fail(errc::invalid_field, "message_uuids must be a non-empty array of message uuids.");
        }
        out.ack_uuids.reserve(out.ack_uuids.size() + many->get_array().size());
        for (const json::value& item : many->get_array()) {
          if (!item.is_string() ||
              !is_valid_message_uuid(std::string_view(item.get_string().data(), item.get_string().size()))) {
            return r.fail(errc::invalid_field,
                          "message_uuids must hold only message uuids: 1 to 128 characters of A-Z a-z 0-9 . _ : -.");
          }
          out.ack_uuids.emplace_back(item.get_string().data(), item.get_string().size());
        }
      }
      if (const json::value* s = r.find("sender_username"); s && !s->is_null()) {
        if (auto e = r.username("sender_username", "the sender of the acknowledged message", out.ack_sender)) return e;
      }
      return std::nullopt;
    }
    case kind::discover_broker:
      return std::nullopt;
    default:
      return r.fail(errc::unknown_message_id, kind_name(k) + " is sent by the broker, not to it.");
  }
}

// k is the literal: its length first, then its bytes, compared as constants (a string_view's ==
// calls memcmp for its run-time length; the reader compares a few keys a frame).
template <std::size_t N>
bool is(std::string_view k, const char (&literal)[N]) {
  return k.size() == N - 1 && std::memcmp(k.data(), literal, N - 1) == 0;
}

// The kinds that plain_frame reads (the traffic first: kind_from_string tries all of them).
std::optional<kind> plain_kind(std::string_view v) {
  for (kind k : {kind::send_message, kind::acknowledge_message, kind::multicast_message, kind::group_message,
                 kind::broadcast_message}) {
    if (v == to_string(k)) return k;
  }
  return std::nullopt;
}

// The shortcut for the frames that make up nearly all traffic, the four message kinds and
// acknowledge_message, written plainly: message_id first, then message_content with keys that
// kind knows, each once; strings without escapes (message_text may hold UTF-8, the others
// ASCII); no nulls; ttl_ms as plain digits. It reads them where they are, without a JSON tree
// (the tree was a third of the broker's instructions in W1). For anything else, valid or not,
// read() returns false and the frame goes through the full decoder, which also writes every
// error: the shortcut only has to be right about what it accepts, and accepts only what the
// full decoder would accept as the same request.
class plain_frame {
 public:
  explicit plain_frame(std::string_view frame) : p_(frame.data()), end_(frame.data() + frame.size()) {}

  // Fills out (a fresh request) and says whether the frame was plain; out is garbage if not.
  bool read(request& out, std::size_t max_message_bytes) {
    std::string_view k, v;
    if (!punct('{') || !word(k, username_run) || !is(k, "message_id") || !punct(':') || !word(v, username_run)) return false;
    const std::optional<kind> which = plain_kind(v);
    if (!which) return false;
    out.k = *which;
    if (!punct(',') || !word(k, username_run) || !is(k, "message_content") || !punct(':') || !punct('{')) return false;
    std::optional<std::string_view> receiver, uuid, text, request_id, sender, group;
    std::optional<std::uint64_t> ttl;
    bool receivers = false, uuids = false;
    const bool message = out.k != kind::acknowledge_message;
    auto once = [](auto& field) { return !field.has_value(); };
    do {
      if (!word(k, username_run) || !punct(':')) return false;
      if (is(k, "message_uuid") && once(uuid)) {
        if (!word(v, message_uuid_run)) return false;
        uuid = v;
      } else if (is(k, "request_id") && once(request_id)) {
        if (!string(v)) return false;
        request_id = v;
      } else if (message && is(k, "message_text") && once(text)) {
        if (!string(v, true)) return false;
        text = v;
      } else if (message && is(k, "ttl_ms") && once(ttl)) {
        ttl.emplace();
        if (!whole_number(*ttl)) return false;
      } else if (out.k == kind::send_message && is(k, "receiver_username") && once(receiver)) {
        if (!word(v, username_run)) return false;
        receiver = v;
      } else if (out.k == kind::multicast_message && is(k, "receiver_usernames") && !receivers) {
        // Repeats removed, order kept, as the full decoder does.
        receivers = true;
        if (!punct('[')) return false;
        do {
          if (!word(v, username_run) || !name_length(v)) return false;
          if (std::find(out.receivers.begin(), out.receivers.end(), v) == out.receivers.end()) {
            out.receivers.emplace_back(v);
          }
        } while (punct(','));
        if (!punct(']')) return false;
      } else if (out.k == kind::group_message && is(k, "group_name") && once(group)) {
        if (!word(v, username_run)) return false;
        group = v;
      } else if (!message && is(k, "sender_username") && once(sender)) {
        if (!word(v, username_run)) return false;
        sender = v;
      } else if (!message && is(k, "message_uuids") && !uuids) {
        uuids = true;
        if (!punct('[')) return false;
        do {
          if (!word(v, message_uuid_run) || !uuid_length(v)) return false;
          out.ack_uuids.emplace_back(v);
        } while (punct(','));
        if (!punct(']')) return false;
      } else {
        return false;
      }
    } while (punct(','));
    if (!punct('}') || !punct('}')) return false;
    skip_space();
    if (p_ != end_) return false;

    if (request_id) {
      if (request_id->size() > max_request_id_chars) return false;
      out.request_id = *request_id;
    }
    if (uuid) {
      if (!uuid_length(*uuid)) return false;
      out.message_uuid = *uuid;
    }
    if (!message) {
      if (!uuid && !uuids) return false;
      if (uuid) out.ack_uuids.insert(out.ack_uuids.begin(), out.message_uuid);
      if (sender) {
        if (!name_length(*sender)) return false;
        out.ack_sender = *sender;
      }
      return true;
    }
    switch (out.k) {
      case kind::send_message:
        if (!receiver || !name_length(*receiver)) return false;
        out.receivers.emplace_back(*receiver);
        break;
      case kind::multicast_message:
        if (!receivers) return false;
        break;
      case kind::group_message:
        if (!group || !name_length(*group)) return false;
        out.group_name = *group;
        break;
      default:
        break;
    }
    if (!text || (ttl && *ttl > max_duration_ms)) return false;
    out.ttl_ms = ttl;
    // What append_json_string writes for a text without escapes, quoted as it is.
    constexpr std::string_view head = R"({"message_text":")", tail = R"("})";
    if (head.size() + text->size() + tail.size() > max_message_bytes) return false;
    out.body.reserve(head.size() + text->size() + tail.size());
    out.body.append(head).append(*text).append(tail);
    return true;
  }

 private:
  void skip_space() {
    if (p_ != end_ && static_cast<unsigned char>(*p_) > ' ') return;  // the usual case
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool punct(char c) {
    skip_space();
    if (p_ == end_ || *p_ != c) return false;
    ++p_;
    return true;
  }

  // A string of the bytes run accepts (names and uuids, and the keys): its end found and its
  // bytes checked in one pass. Anything else in it (an escape too) leaves the frame to the full
  // decoder.
  bool word(std::string_view& out, std::size_t (*run)(std::string_view) noexcept) {
    if (!punct('"')) return false;
    const std::string_view rest(p_, static_cast<std::size_t>(end_ - p_));
    const std::size_t n = run(rest);
    if (n == rest.size() || rest[n] != '"') return false;
    out = rest.substr(0, n);
    p_ += n + 1;
    return true;
  }
  // The lengths a word read with username_run or message_uuid_run must have to be valid.
  static bool name_length(std::string_view v) { return !v.empty() && v.size() <= max_username_chars; }
  static bool uuid_length(std::string_view v) { return !v.empty() && v.size() <= max_message_uuid_chars; }

  // A string without escapes or control bytes: ASCII, or valid UTF-8 if utf8.
  bool string(std::string_view& out, bool utf8 = false) {
    if (!punct('"')) return false;
    const std::string_view rest(p_, static_cast<std::size_t>(end_ - p_));
    const std::size_t ascii = plain_json_run(rest, true);
    std::size_t n = ascii;
    if (utf8 && n < rest.size() && static_cast<unsigned char>(rest[n]) >= 0x80) {
      n += plain_json_run(rest.substr(n));
      if (first_invalid_utf8(rest.substr(ascii, n - ascii))) return false;
    }
    if (n == rest.size() || rest[n] != '"') return false;
    out = rest.substr(0, n);
    p_ += n + 1;
    return true;
  }

  // Digits only: no sign, fraction, exponent or leading zero; at most 15 of them.
  bool whole_number(std::uint64_t& n) {
    skip_space();
    const char* start = p_;
    n = 0;
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') n = n * 10 + static_cast<std::uint64_t>(*p_++ - '0');
    const auto digits = p_ - start;
    if (digits == 0 || digits > 15 || (digits > 1 && *start == '0')) return false;
    return p_ == end_ || (*p_ != '.' && *p_ != 'e' && *p_ != 'E');
  }

  const char* p_;
  const char* end_;
};

}  // namespace

struct request_decoder::impl {
  std::size_t max_message_bytes;
  // Each frame's values live in a fresh monotonic_resource that starts in this buffer. (Made
  // anew rather than release()d: Boost 1.81's release() keeps doubling its next block size.)
  alignas(std::max_align_t) unsigned char first_block[2048];
  std::optional<json::monotonic_resource> memory;
  json::parser parser;

  explicit impl(std::size_t max_bytes) : max_message_bytes(max_bytes) {}

  // The plain reader fills the request in place (a request is a dozen members to move).
  result<request> decode(std::string_view frame) {
    result<request> out(std::in_place);
    if (frame.size() <= max_message_bytes && plain_frame(frame).read(*out, max_message_bytes)) {
      ++plain_frames;
      return out;
    }
    out = run(frame, false);
    return out;
  }

  std::uint64_t plain_frames = 0;

  result<request> run(std::string_view frame, bool datagram) {
    parser.reset();  // drops the previous frame's value before its memory goes
    memory.emplace(first_block, sizeof first_block);
    parser.reset(json::storage_ptr(&*memory));
    boost::system::error_code ec;
    parser.write(frame.data(), frame.size(), ec);
    if (ec) {
      return protocol_error{errc::malformed_json,
                            "The frame is not valid JSON (" + ec.message() +
                                "): send one JSON object per line, UTF-8, ended by a newline.",
                            {}, {}};
    }
    const json::value root = parser.release();
    const json::object* envelope = root.if_object();
    if (!envelope) {
      return protocol_error{errc::invalid_envelope,
                            "The frame must be a JSON object {\"message_id\": KIND, \"message_content\": {...}}.", {}, {}};
    }
    request out;
    const json::value* content_value = envelope->if_contains("message_content");
    static const json::object empty;
    const json::object* content = &empty;
    if (content_value && !content_value->is_null()) {
      content = content_value->if_object();
      if (!content) {
        return protocol_error{errc::invalid_envelope, "message_content must be a JSON object (it may be {}).", {}, {}};
      }
    }
    // What the error frame echoes, read before anything else can fail.
    if (const json::value* rid = content->if_contains("request_id"); rid && !rid->is_null()) {
      if (!rid->is_string() || rid->get_string().size() > max_request_id_chars) {
        return protocol_error{errc::invalid_field, "request_id must be a string of at most 256 characters.", {}, {}};
      }
      out.request_id.assign(rid->get_string().data(), rid->get_string().size());
    }
    if (const json::value* uuid = content->if_contains("message_uuid"); uuid && uuid->is_string()) {
      std::string_view u(uuid->get_string().data(), uuid->get_string().size());
      if (is_valid_message_uuid(u)) out.message_uuid.assign(u);
    }
    auto fail = [&](errc code, std::string text) {
      return protocol_error{code, std::move(text), out.request_id, out.message_uuid};
    };

    const json::value* id = envelope->if_contains("message_id");
    if (!id || !id->is_string()) {
      return fail(errc::invalid_envelope,
                  "Every frame needs a string message_id naming its kind, e.g. "
                  "{\"message_id\":\"heartbeat\",\"message_content\":{}}.");
    }
    const std::string_view name(id->get_string().data(), id->get_string().size());
    const std::optional<kind> k = kind_from_string(name);
    if (!k) {
      return fail(errc::unknown_message_id,
                  "message_id '" + std::string(utf8_prefix(name, 64)) + "' is not a kind this broker knows; see protocol.md for the list.");
    }
    out.k = *k;
    if (datagram) {
      if (*k != kind::discover_broker && *k != kind::log_in) {
        return fail(errc::unknown_message_id, "The discovery port answers only discover_broker and log_in.");
      }
    } else if (!is_agent_request(*k)) {
      return fail(errc::unknown_message_id, std::string(name) + " is not sent to the broker over TCP.");
    }
    if (frame.size() > max_message_bytes && json::serialize(*content).size() > max_message_bytes) {
      return fail(errc::message_too_large, "The message content is larger than max_message_bytes (" +
                                               std::to_string(max_message_bytes) + "); send it in smaller parts.");
    }
    content_reader reader(*k, *content, out);
    if (auto e = read_content(*k, reader, out)) return std::move(*e);
    // The body as stored and relayed can be longer than the frame (numbers are re-serialized).
    if (out.body.size() > max_message_bytes) {
      return fail(errc::message_too_large, "The message body is larger than max_message_bytes (" +
                                               std::to_string(max_message_bytes) + ") as stored; send it in smaller parts.");
    }
    if (datagram && *k == kind::log_in) {
      std::optional<std::uint64_t> port;
      if (auto e = reader.optional_count("sender_port", "the UDP port to answer", true, port, 65535, "a UDP port")) {
        return std::move(*e);
      }
      if (port) out.sender_port = static_cast<std::uint16_t>(*port);
    }
    return out;
  }
};

request_decoder::request_decoder(std::size_t max_message_bytes) : impl_(std::make_unique<impl>(max_message_bytes)) {}
request_decoder::~request_decoder() = default;

void request_decoder::set_max_message_bytes(std::size_t n) noexcept { impl_->max_message_bytes = n; }

result<request> request_decoder::decode(std::string_view frame) { return impl_->decode(frame); }
result<request> request_decoder::decode_in_full(std::string_view frame) { return impl_->run(frame, false); }
std::uint64_t request_decoder::plain_frames() const noexcept { return impl_->plain_frames; }
result<request> request_decoder::decode_datagram(std::string_view datagram) { return impl_->run(datagram, true); }

}  // namespace ma
