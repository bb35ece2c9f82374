// "message-broker passwd": adds, replaces or deletes a user's line in the password file
// (--password-file), in the manner of mosquitto_passwd. The password is read from standard
// input (one line), or asked twice without echo when standard input is a terminal.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace ma {

// args are the words after "passwd". Returns the exit status: 0 done, 1 the file could not be
// read or written (the sentence says why), 2 bad usage. in is read when it is not a terminal.
int run_passwd_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                       std::ostream& err);

}  // namespace ma
