// What the broker core needs of the broker's options: the part of broker_options
// (broker/options.hpp) that it is built from, with protocol.md's defaults.
#pragma once

#include <cstdint>
#include <string>

namespace ma {

struct core_settings {
  std::string broker_name = "message-broker";
  std::uint64_t heartbeat_interval_ms = 10'000;
  std::uint32_t eviction_factor = 3;
  std::uint64_t ack_timeout_ms = 10'000;
  std::uint64_t login_timeout_ms = 10'000;
  std::uint64_t max_frame_bytes = 1024 * 1024;
  std::uint64_t max_message_bytes = 256 * 1024;
  std::uint64_t max_outbound_bytes = 8 * 1024 * 1024;
  std::uint32_t max_recipients = 1000;     // receiver_usernames of one multicast_message
  std::uint32_t max_group_members = 1000;  // members of one group
  std::uint32_t max_groups_per_user = 100;  // groups one user may be a member of
  // Messages of one session waiting for the store: past it the session is read no further. A
  // streaming sender has two batches waiting in the normal course (one committing, one
  // filling) and a read more: at 1,024 a W1 sender was held every few commits, the broker idle
  // meanwhile.
  std::uint32_t max_pending_accepts = 4096;
  std::uint32_t max_delivery_attempts = 5;
  std::uint64_t dead_letter_ttl_ms = 7ULL * 24 * 3600 * 1000;
  std::uint64_t dedupe_window_ms = 10 * 60 * 1000;
  // How long letters that are done are kept (their bodies and attempts, for an operator) before
  // the broker's own sweep removes them; 0 keeps them until a purge.
  std::uint64_t delivered_retention_ms = 7ULL * 24 * 3600 * 1000;
  std::uint64_t parked_retention_ms = 30ULL * 24 * 3600 * 1000;
  std::uint64_t expired_retention_ms = 7ULL * 24 * 3600 * 1000;
  bool persist_accepted = true;
  // How long an accept batch waits before it goes to the store (persist-accepted on): a live
  // delivery acknowledged meanwhile is never journaled. message_accepted comes that much later.
  // 0 here, for the core's tests; the broker's default is broker_options'.
  std::uint64_t accept_delay_us = 0;
  // With a password file every log_in is checked against it (port::check_password), and a
  // correct one takes over a name that is online. The core reads only whether there is one.
  std::string password_file;
  // One broker of a cluster (--cluster-nats): a log_in's name is claimed in the whole cluster
  // (port::claim_name) before it is acknowledged, and released when its session ends.
  bool cluster = false;
};

}  // namespace ma
