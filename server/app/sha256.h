#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace traffik {

// The SHA-256 of `data` as 64 lower-case hex digits (OpenSSL libcrypto).
std::string Sha256Hex(absl::string_view data);

}  // namespace traffik
