#pragma once

#include "absl/strings/string_view.h"

namespace traffik {

// True when `bytes` is well-formed UTF-8 (RFC 3629): no overlong forms, no
// surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequence.
// The empty string is valid.
bool IsValidUtf8(absl::string_view bytes);

}  // namespace traffik
