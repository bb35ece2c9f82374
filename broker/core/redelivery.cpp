// The redelivery pump: a peer that logs in with pending dead letters gets them page by page,
// paced by its room (a bounded number unacknowledged, a bounded amount unsent), before the live
// deliveries that arrived meanwhile.
#include <spdlog/spdlog.h>

#include "broker/core/broker_core.hpp"
#include "broker/core/store_jobs.hpp"
#include "core/frames.hpp"

namespace ma {

void broker_core::start_redelivery(peer& p) {
  p.redelivery = std::make_unique<redelivery_pump>();
  fetch_page(p);
}

void broker_core::fetch_page(peer& p) {
  auto& r = *p.redelivery;
  r.reading = true;
  // Its own acknowledgements are for letters at or below r.after; those of earlier sessions are
  // folded before the first page.
  const bool fold_first = r.after == 0 && unfolded_ > 0;
  auto job = store_jobs::redelivery_page(p.username, r.after, redelivery_page, fold_first);
  auto done = [this, id = p.id, page = job.result](std::exception_ptr e, const moment& now) {
    peer* q = find(id);
    if (!q || !q->open()) return;
    if (e) {
      spdlog::error("session {}: redelivery to '{}' stopped: its dead letters could not be read", id, q->username);
      page->clear();
    }
    page_fetched(id, std::move(*page), now);
  };
  submit(std::move(job.run), std::move(done), on_failure::fail, "redelivery page");
}

void broker_core::page_fetched(peer_id id, std::vector<ma::dead_letter> page, const moment& now) {
  peer* p = find(id);
  if (!p || !p->redelivery) return;
  auto& r = *p->redelivery;
  r.reading = false;
  if (page.empty()) {
    r.exhausted = true;
  } else {
    r.after = page.back().seq;
    for (auto& letter : page) {
      r.bytes += letter.body.size();
      r.letters.push_back(std::move(letter));
    }
  }
  pump(*p, now);
  deadline_may_have_moved();
}

// Sends what was read while the peer has room, reads the next page while fewer than two pages
// wait (one, if their bodies are large), and ends the redelivery once nothing more was found and
// everything went out.
void broker_core::pump(peer& p, const moment& now) {
  if (!p.redelivery) return;
  auto& r = *p.redelivery;
  while (!r.letters.empty() && p.open() && p.redeliveries_in_flight < redelivery_window && !p.window_full() &&
         p.out.bytes() <= s_.max_outbound_bytes / 2) {
    ma::dead_letter letter = std::move(r.letters.front());
    r.letters.pop_front();
    r.bytes -= letter.body.size();
    auto m = std::make_shared<accepted_message>();
    m->rec.message_uuid = std::move(letter.message_uuid);
    m->rec.sender = std::move(letter.sender);
    m->rec.ch = letter.ch;
    m->rec.group_name = std::move(letter.group_name);
    m->rec.body = std::move(letter.body);
    std::copy_n(letter.accepted_at.begin(), std::min(letter.accepted_at.size(), m->sent_at.size()), m->sent_at.begin());
    const int attempt = letter.attempts + 1;
    append(p, [&](std::string& b) { append_redelivery_frame(b, m->header(), p.username, attempt, to_string(letter.reason)); });
    ++p.redeliveries_in_flight;
    ++counters_.redelivered;
    register_in_flight(p, delivery{m, delivery::no_slot, letter.id, attempt, now.wall}, now.steady);
  }
  // (Otherwise an acknowledgement, an ack timeout or a write calls again.)
  if (r.reading || !p.open()) return;
  // Reading ahead keeps the pump fed while the store is busy with the acknowledgements: with
  // one page ahead, W6's drain waited for pages a third of its time.
  const std::size_t page = static_cast<std::size_t>(redelivery_page);
  if (!r.exhausted && (r.letters.size() < page ||
                       (r.letters.size() < 2 * page && r.bytes < redelivery_read_ahead_bytes))) {
    return fetch_page(p);
  }
  if (r.exhausted && r.letters.empty()) {
    // The backlog is out: what arrived meanwhile follows, in the order it was accepted.
    p.redelivery.reset();
    refill(p, now);
    spdlog::info("session {}: redelivery to '{}' done", p.id, p.username);
    deadline_may_have_moved();
  }
}

}  // namespace ma
