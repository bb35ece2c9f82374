// In a cluster: users online at other brokers, and the frames relayed between brokers.
//
// A user whose session is at another broker is a remote peer here: a peer without a connection,
// online under the user's name. So everything that works for a peer works for it as it is: what
// is sent to the user is routed, journaled, held behind its window, timed out and dead-lettered
// here, at the broker that accepted it; its letters are redelivered by this broker's pump when
// the user comes online anywhere; it is in user lists, presence and broadcasts. Its outbox is
// relayed to the user's broker, which writes the frames to the session and relays the session's
// acknowledgements back, where they are read as the remote peer's frames.
#include <spdlog/spdlog.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "broker/core/broker_core.hpp"
#include "core/frames.hpp"

namespace ma {

namespace {

// The message_uuid and sender_username of a receive_message frame; nothing for other frames.
struct delivery_ids {
  std::string uuid;
  std::string sender;
};
std::optional<delivery_ids> delivery_of(std::string_view frame) {
  if (!frame.starts_with(R"({"message_id":"receive_message")")) return std::nullopt;
  // As frames.cpp writes it: the uuid and the sender first, read as they are when they hold no
  // escape; anything else is parsed.
  static constexpr std::string_view head = R"({"message_id":"receive_message","message_content":{"message_uuid":")";
  static constexpr std::string_view between = R"(","sender_username":")";
  if (frame.starts_with(head)) {
    const auto uuid_end = frame.find('"', head.size());
    if (uuid_end != std::string_view::npos && frame.substr(uuid_end).starts_with(between)) {
      const auto sender_at = uuid_end + between.size();
      const auto sender_end = frame.find('"', sender_at);
      const auto uuid = frame.substr(head.size(), uuid_end - head.size());
      const auto sender = frame.substr(sender_at, sender_end - sender_at);
      if (sender_end != std::string_view::npos && uuid.find('\\') == std::string_view::npos &&
          sender.find('\\') == std::string_view::npos) {
        return delivery_ids{std::string(uuid), std::string(sender)};
      }
    }
  }
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(frame, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto* content = v.as_object().if_contains("message_content");
  if (!content || !content->is_object()) return std::nullopt;
  const auto* uuid = content->as_object().if_contains("message_uuid");
  const auto* sender = content->as_object().if_contains("sender_username");
  if (!uuid || !uuid->is_string() || !sender || !sender->is_string()) return std::nullopt;
  return delivery_ids{std::string(uuid->as_string()), std::string(sender->as_string())};
}

// Calls f for each whole line of frames.
template <class F>
void for_each_line(std::string_view frames, F&& f) {
  while (!frames.empty()) {
    const auto end = frames.find('\n');
    const std::string_view line = frames.substr(0, end);
    if (!line.empty()) f(line);
    if (end == std::string_view::npos) break;
    frames.remove_prefix(end + 1);
  }
}

// Relayed deliveries a peer here has not acknowledged, kept for their acknowledgement's way
// back; past this the oldest are forgotten (their broker times them out and redelivers them).
constexpr std::size_t max_relayed_per_peer = 100'000;

}  // namespace

void broker_core::remote_holder(const std::string& user, const std::string& broker, const moment& now) {
  observe(now.steady);
  if (broker.empty()) {
    remote_holders_.erase(user);
  } else {
    remote_holders_[user] = broker;
  }
  peer* p = find_online(user);
  // A session here holds the name (it is being taken over, or its broker was cut off from the
  // registry): the remote peer is made once the session lets the name go (represent_remote).
  if (p && !p->remote) return;
  if (p && !broker.empty() && p->extras->remote_broker == broker) return;
  if (p) drop_remote(*p, now);
  if (!broker.empty()) add_remote(user, broker, now);
  deadline_may_have_moved();
}

void broker_core::represent_remote(const std::string& user, const moment& now) {
  if (!s_.cluster || find_online(user)) return;
  if (auto it = remote_holders_.find(user); it != remote_holders_.end()) add_remote(user, it->second, now);
}

// Online like a log_in: its dead letters are counted, then presence and redelivery.
void broker_core::add_remote(const std::string& user, const std::string& broker, const moment& now) {
  if (stopping_) return;
  const peer_id id = next_remote_id_++;
  auto& p = *peers_.emplace(id, std::make_unique<peer>(id, "broker " + broker, now.steady)).first->second;
  p.remote = true;
  p.username = user;
  p.more().remote_broker = broker;
  // Its acknowledgements take a round trip through NATS: a window keeps what is relayed and not
  // acknowledged bounded, and the rest waits here, in order.
  p.window = static_cast<std::uint32_t>(redelivery_window);
  p.phase = peer_phase::logging_in;
  online_.emplace(p.username, id);
  count_letters(p, {});
}

// The user left its broker (or that broker died, or the user logged in here): what was relayed
// and not acknowledged goes to the Dead Letter Channel here, as for a session that disconnects.
void broker_core::drop_remote(peer& p, const moment& now) {
  spdlog::debug("'{}' no longer online at broker {} ({} unacknowledged)", p.username, p.extras->remote_broker,
                p.in_flight.size() + p.held_count());
  disconnected(p.id, now);
}

void broker_core::remote_group(const std::string& group, const std::vector<std::string>& members) {
  groups_.set(group, members);
}

void broker_core::relayed(relay_kind kind, const std::string& from, const std::string& user, std::string_view frames,
                          const moment& now) {
  observe(now.steady);
  peer* p = find_online(user);
  if (kind == relay_kind::from_user) {
    // The acknowledgements of a remote peer. One whose peer went meanwhile is lost: the letter
    // was dead-lettered when the peer went, and is redelivered (marked) at the user's next login.
    if (!p || !p->remote || p->extras->remote_broker != from) return;
    const peer_id id = p->id;
    for_each_line(frames, [&](std::string_view line) { frame_received(id, line, now); });
    return;
  }
  // For a session here. Relayed frames are not held back: a session that does not read loses
  // them past max_outbound_bytes, and their broker times them out and keeps them as dead letters.
  if (!p || p->remote || !p->open() || p->out.bytes() > s_.max_outbound_bytes) return;
  auto& relayed = p->more().relayed;
  for_each_line(frames, [&](std::string_view line) {
    if (auto d = delivery_of(line)) {
      if (relayed.size() >= max_relayed_per_peer) relayed.erase(relayed.begin());
      relayed.emplace(std::move(d->uuid), peer_extras::relayed_delivery{std::move(d->sender), from});
    }
    append(*p, [&](std::string& b) {
      b += line;
      b += '\n';
    });
  });
  deadline_may_have_moved();
}

bool broker_core::relay_ack(peer& p, const std::string& uuid, const std::string& sender) {
  auto& relayed = p.extras->relayed;
  auto [it, end] = relayed.equal_range(uuid);
  while (it != end && !sender.empty() && it->second.sender != sender) ++it;
  if (it == end) return false;
  std::string frame;
  append_ack_frame(frame, uuid, it->second.sender);
  port_.relay(it->second.broker, relay_kind::from_user, p.username, frame);
  relayed.erase(it);
  return true;
}

void broker_core::relay_outbox(peer_id id, const moment& now) {
  peer* p = find(id);
  if (!p || !p->remote) return;
  p->flush_asked = false;
  // A write at a time, as a socket takes it (outbox::gather, at most 512 KiB but for one larger
  // frame); the port joins those of a burst up to backbone::max_relay_bytes. written() may pump
  // more redeliveries in meanwhile.
  while (p && !p->out.empty()) {
    std::string frames;
    frames.reserve(std::min<std::size_t>(p->out.bytes(), 512 * 1024));
    for (auto piece : p->out.gather()) frames.append(piece.data(), piece.size());
    port_.relay(p->extras->remote_broker, relay_kind::to_user, p->username, frames);
    written(id, frames.size(), now);
    p = find(id);
  }
}

}  // namespace ma
