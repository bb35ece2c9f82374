// "message-broker dead-letters ...": the operator's view of the Dead Letter Channel, on the
// database file directly (WAL lets it run beside a live broker).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace ma {

// args are the words after "dead-letters". Returns the exit status: 0 done, 1 the database
// refused, 2 bad usage. Output to out, errors (one sentence) to err.
int run_dead_letters_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace ma
