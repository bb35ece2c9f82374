// Message UUIDs the broker makes where a sender gave none (RFC 4122 version 4, lower case).
#pragma once

#include <string>

namespace ma {

// Thread-safe: each thread has its own generator.
std::string make_message_uuid();

}  // namespace ma
