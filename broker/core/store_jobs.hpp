// The broker's operations on its database, named, in one place (in the manner of a repository):
// each returns the job to submit and where its result lands once it committed. Every job can
// run again from the start (the store re-runs a batch without an operation that failed alone,
// and retries whole batches): outputs are cleared first. Times are arguments, taken when the
// broker decided, never read on the store's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "broker/core/delivery.hpp"
#include "storage/job.hpp"

namespace ma {

template <class Result>
struct named_job {
  store_job run;
  std::shared_ptr<Result> result = std::make_shared<Result>();
};

namespace store_jobs {

// One recipient of a message being accepted: a live delivery (journaled in its slot of the
// message's journal_slots, unless acknowledged first), or a dead letter for reason. seq is the
// journal row, written by the job (0: none).
struct accept_target {
  std::string name;
  bool live = false;
  dead_letter_reason reason = dead_letter_reason::recipient_offline;
  int slot = delivery::no_slot;
  std::int64_t seq = 0;
  peer_id to = 0;  // the broker's: the peer a live delivery goes to (the store ignores it)
};
// A vector, not a small_vector with one inline: an item is moved five times on its way to the
// store, and a small_vector's move costs more than the allocation it spares.
using accept_targets = std::vector<accept_target>;

// Messages being accepted, gathered while the store is busy: one job, one transaction and one
// completion for all of them. The broker's thread adds to the batch until the store's thread
// seals it by starting the job; then the broker starts a new one. (One job per message cost
// more in queueing, waking and posting back than its rows cost SQLite.)
class accept_batch {
 public:
  struct item {
    message_ptr m;
    accept_targets targets;
    std::string status;  // the dedupe pair's, as message_accepted says it
    sys_ms at;
  };
  // Broker's thread: false once the batch is sealed.
  bool add(item&& i) {
    std::lock_guard lock(mutex_);
    if (sealed_) return false;
    items_.push_back(std::move(i));
    return true;
  }
  // Store's thread, by each run of the job; and the broker's, by the completion (a transaction
  // that failed before it began never ran the job). The items are not added to any more.
  std::vector<item>& seal() {
    std::lock_guard lock(mutex_);
    sealed_ = true;
    return items_;
  }

 private:
  std::mutex mutex_;
  bool sealed_ = false;
  std::vector<item> items_;
};

// The accept of each message of the batch: the journal rows of its live deliveries not yet
// acknowledged, its dead letters, and its (sender, uuid) pair with its status, in one
// transaction, before message_accepted goes out. Each item's targets get their seqs.
store_job accept(std::shared_ptr<accept_batch> batch, bool persist);

// Moves failed deliveries to the Dead Letter Channel (a redelivery records its attempt instead).
// The result: the letters that this parked, by recipient.
named_job<counts_by_recipient> dead_letter(std::shared_ptr<const std::vector<failed_delivery>> batch,
                                           dead_letter_reason reason, sys_ms now, int max_attempts);

// A recipient's acknowledgements: journal rows deleted, redeliveries marked delivered, and late
// ones (the message was dead-lettered first) looked up. The result: for each late uuid, the
// senders whose letters it marked delivered.
struct acknowledgements {
  std::string receiver;
  std::string ack_sender;  // empty: any
  std::vector<std::pair<message_ptr, int>> journaled;  // (message, slot): rows the accept claimed
  std::vector<delivery> redelivered;
  std::vector<std::string> late;
};
named_job<std::vector<std::vector<std::string>>> acknowledge(std::shared_ptr<const acknowledgements> acks, sys_ms now);

named_job<std::int64_t> count_pending(std::string user);
// The next page of a recipient's pending letters after seq after, for the redelivery pump:
// with fold_first (its first page, while acknowledged redeliveries wait to be folded) it folds
// them all first, so that no page needs to look each letter up in `redelivered`
// (database::pending_for, folded).
named_job<std::vector<ma::dead_letter>> redelivery_page(std::string user, std::int64_t after, int limit,
                                                        bool fold_first);

// Each result is false when the group existed already (create) or did not exist (join, leave).
named_job<bool> create_group(std::string group, std::string creator, std::vector<std::string> members, sys_ms now);
named_job<bool> join_group(std::string group, std::string user, sys_ms now);
named_job<bool> leave_group(std::string group, std::string user);

// Folds the oldest at_most acknowledged redeliveries into their letters; the result is how many.
named_job<std::int64_t> fold_redelivered(std::int64_t at_most);

// How long done letters are kept (0: until a purge), per state.
struct retention {
  std::chrono::milliseconds delivered{0}, parked{0}, expired{0};
};
struct sweep_result {
  counts_by_recipient expired;  // letters that expired now
  std::int64_t removed_delivered = 0, removed_parked = 0, removed_expired = 0;  // past their retention
};
// Letters removed per state and sweep at most: a backlog goes in steps, one a sweep.
inline constexpr int max_removed_per_sweep = 10'000;

// The periodic sweep: letters past their expiry, dedupe pairs past the window, and letters done
// longer ago than their retention.
named_job<sweep_result> expire(sys_ms now, std::chrono::milliseconds dedupe_window, std::int64_t max_pairs,
                               retention keep);

}  // namespace store_jobs
}  // namespace ma
