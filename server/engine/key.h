#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace traffik {

// Builds the bucket key for (tenant prefix, throttle uid, identifier) into
// `*out` (reusing its capacity): `prefix:uid:{identifier}`.
//
// Unambiguous and binary-safe: a prefix holds no '{' (config validation) and a
// uid holds no ':' or '{' (ValidateThrottleUid), so the first '{' starts the
// identifier, the ':' before it ends the uid and the ':' before the uid ends
// the prefix; the identifier is arbitrary bytes.
//
// The braces form a Redis Cluster hash tag around the identifier alone, so
// every throttle of one identifier (in any tenant) maps to the same hash slot
// and an all-or-nothing batch over them runs as one script. (An identifier
// starting with '}' makes the tag empty; Redis then hashes the whole key.)
void BuildBucketKey(absl::string_view prefix, absl::string_view uid,
                    absl::string_view identifier, std::string* out);

}  // namespace traffik
