// What a caller hands the store: one operation on the database, what it hears afterwards, and
// what happens when the transaction fails. No thread and no Asio here: the broker core names its
// operations with these types without depending on how the store runs them.
#pragma once

#include <exception>
#include <functional>

#include "storage/database.hpp"

namespace ma {

using store_job = std::function<void(database&)>;
// After the commit (or with the operation's error).
using store_completion = std::function<void(std::exception_ptr)>;
// fail: an error reaches the completion (the caller can say so, e.g. internal_error to a
// sender). retry: work the broker depends on and cannot hand back (moving deliveries to the
// Dead Letter Channel, acknowledgements), run again until it commits.
enum class on_failure { fail, retry };

}  // namespace ma
