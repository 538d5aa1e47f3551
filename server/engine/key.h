#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace traffik {

// Bucket keys. Two forms:
//
//   configured throttle:  prefix:uid:{identifier}
//   inline spec:          prefix:uid:{identifier}#<limit>/<period_ms>
//
// <limit> and <period_ms> are the spec exactly as the caller sent it (decimal,
// no leading zeros; before the tenant's quota multiplier, so changing the
// multiplier does not re-key a bucket). The spec is part of an inline
// bucket's identity: a call with another spec on the same uid and identifier
// uses another bucket and can never refill this one, and no inline key equals
// a configured one (configured keys end in '}', inline keys in a digit).
// Configured keys are unchanged from v0.1, so stored state stays valid.
//
// Unambiguous and binary-safe: a prefix holds no '{' (config validation) and a
// uid holds no ':' or '{' (ValidateThrottleUid), so the first '{' starts the
// identifier, the ':' before it ends the uid and the ':' before the uid ends
// the prefix. The identifier is arbitrary bytes (it may hold '}' or '#'); it
// ends at the last '}' of a configured key, and at the '}' before the
// trailing "#<digits>/<digits>" of an inline key (digits parse unambiguously
// from the end). ParseBucketKey inverts both.
//
// The braces form a Redis Cluster hash tag around the identifier, and the
// spec suffix stays outside it, so every throttle of one identifier (in any
// tenant, configured or inline, any spec) maps to the same hash slot and an
// all-or-nothing batch over them runs as one script. (An identifier holding
// '}' shortens the tag to its part before the first '}', the same for all of
// its keys; one starting with '}' makes the tag empty and Redis hashes the
// whole key.)

// The one home of the throttle uid rule, for configured and requested uids
// alike: 1..256 bytes of valid UTF-8, no control characters, no ':', '{' or
// '}' (they delimit bucket keys, see above). Returns kInvalidArgument naming
// the problem (the uid quoted, escaped and truncated).
inline constexpr size_t kMaxThrottleUidBytes = 256;
absl::Status ValidateThrottleUid(std::string_view uid);

// Builds the key of a configured throttle's bucket into `*out` (reusing its
// capacity).
void BuildBucketKey(absl::string_view prefix, absl::string_view uid,
                    absl::string_view identifier, std::string* out);

// Builds the key of an inline spec's bucket into `*out`: `limit` and
// `period_ms` are the raw spec values from the request.
void BuildInlineBucketKey(absl::string_view prefix, absl::string_view uid,
                          absl::string_view identifier, uint64_t limit,
                          uint64_t period_ms, std::string* out);

// Envoy RLS buckets (service/envoy_service.h) use the same two forms, with a
// uid built from the config by EnvoyBucketUid and the identifier
// envoy::Match::bucket_id (the descriptor's entries, length-prefixed):
//
//   configured limit:  prefix:\x1fenvoy/<domain>/<rule path>:{bucket_id}
//   limit override:    prefix:\x1fenvoy/<domain>/<rule path>:{bucket_id}#<rpu>/<unit_ms>
//
// <domain> and <rule path> are percent-encoded (every byte outside printable
// ASCII and each of "%/:{}#" as %XX), so the uid holds no ':', '{' or '}'
// and the first and second '/' split it unambiguously. The leading 0x1f byte
// is a control character, which ValidateThrottleUid refuses in a traffik.v1
// uid: no traffik.v1 call can name (or refill) an Envoy bucket. A uid whose
// encoding exceeds kMaxThrottleUidBytes is "\x1fenvoy#" followed by the
// SHA-256 (hex) of the length-prefixed domain and path. An override that no
// rule matched uses an empty rule path ("\x1fenvoy/<domain>/"; a rule's path
// is never empty).
std::string EnvoyBucketUid(absl::string_view domain, absl::string_view rule_path);

// The parts of a bucket key (views into it).
struct BucketKeyParts {
  absl::string_view prefix;
  absl::string_view uid;
  absl::string_view identifier;
  bool is_inline = false;
  uint64_t limit = 0;  // inline only: the raw spec
  uint64_t period_ms = 0;
};

// Splits a key built by the functions above; nullopt when `key` is not one.
std::optional<BucketKeyParts> ParseBucketKey(absl::string_view key);

// Selecting stored buckets (admin resets). `uid` empty: every bucket under
// `prefix`; else `identifier` empty: every bucket of that uid (configured and
// inline specs); else the buckets of that uid and identifier (the configured
// one and the inline specs'). An empty `uid` with an `identifier` is not a
// selection (the engine rejects it).
//
// The literal start shared by every selected key: "prefix:", "prefix:uid:{"
// or "prefix:uid:{identifier}".
std::string BucketKeyPrefix(absl::string_view prefix, absl::string_view uid,
                            absl::string_view identifier);
// True when `key` is a bucket key (ParseBucketKey) of exactly that prefix,
// uid and identifier (an empty uid / identifier matches any). A key that only
// starts like one ("prefix:" of another tenant whose prefix is longer, an
// identifier that continues past the given one) does not match.
bool BucketKeyMatches(absl::string_view key, absl::string_view prefix,
                      absl::string_view uid, absl::string_view identifier);

}  // namespace traffik
