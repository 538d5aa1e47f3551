#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace traffik {

// The most bytes of a caller's value QuoteForMessage copies by default.
inline constexpr size_t kMaxQuotedBytes = 64;

// Quotes bytes a caller sent (tenant, uid, identifier, ...) for an error
// message or a log line, so no caller value reaches either raw or whole:
//   - in single quotes; `'` and `\` are escaped as \' and \\;
//   - \n, \r and \t as such; every other byte outside printable ASCII
//     (0x20..0x7e), i.e. control characters and all non-ASCII bytes, as \xNN;
//   - at most `max` bytes of the input are shown; a longer value ends with
//     "…" (U+2026) inside the quotes and is followed by its full length,
//     e.g. 'aaaa…' (2097152 bytes).
// So the result is one line of printable ASCII (plus that ellipsis), at most
// 4 * max + 40 bytes whatever the input.
std::string QuoteForMessage(absl::string_view bytes, size_t max = kMaxQuotedBytes);

}  // namespace traffik
