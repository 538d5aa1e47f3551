#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace traffik {

// Builds the bucket key for (tenant prefix, throttle uid, identifier) into
// `*out` (reusing its capacity): `prefix:{uid:identifier}`.
//
// Unambiguous and binary-safe: a prefix holds no '{' (config validation) and a
// uid holds no ':' (ValidateThrottleUid), so the first '{' ends the prefix and
// the next ':' ends the uid; the identifier is arbitrary bytes. The braces form
// a Redis Cluster hash tag.
void BuildBucketKey(absl::string_view prefix, absl::string_view uid,
                    absl::string_view identifier, std::string* out);

}  // namespace traffik
