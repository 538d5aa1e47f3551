#pragma once

// The Lua scripts the Redis backend runs (bucket_script.h), each with its
// SHA-1 digest computed here, so no SCRIPT LOAD round trip is needed: a call
// goes out as EVALSHA with the local digest, and a node that does not hold the
// script (NOSCRIPT: restarted, flushed, a new cluster node) gets that one call
// again as EVAL, which loads the script there for the EVALSHAs that follow.
// Pure, no I/O, so it is unit-tested without a redis-server
// (tests/redis/script_registry_test.cc).

#include <array>
#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace traffik {

// The lowercase hex SHA-1 of `data`, as SCRIPT LOAD returns it for a body.
std::string Sha1Hex(absl::string_view data);

enum class RedisScriptId : size_t {
  kBucket = 0,        // RedisBucketScript()
  kAllOrNothing = 1,  // RedisAllOrNothingScript()
  kEach = 2,          // RedisEachScript()
};

// How to invoke a script: the command's first two arguments.
struct RedisScriptCall {
  absl::string_view verb;       // "EVALSHA" or "EVAL"
  absl::string_view first_arg;  // the digest (EVALSHA) or the body (EVAL)
};

// Immutable after construction; thread-safe. The views it returns live as
// long as the registry.
class RedisScriptRegistry {
 public:
  // The backend's scripts (bucket_script.h).
  RedisScriptRegistry();
  // These bodies instead (tests).
  RedisScriptRegistry(std::string bucket, std::string all_or_nothing, std::string each);

  RedisScriptRegistry(const RedisScriptRegistry&) = delete;
  RedisScriptRegistry& operator=(const RedisScriptRegistry&) = delete;

  const std::string& Body(RedisScriptId id) const { return entry(id).body; }
  const std::string& Sha1(RedisScriptId id) const { return entry(id).sha1; }

  // EVALSHA with the digest; EVAL with the body when `use_eval` (the op got
  // NOSCRIPT once already).
  RedisScriptCall Call(RedisScriptId id, bool use_eval) const;

  // Whether an op that got `error` back should be sent again with EVAL: a
  // NOSCRIPT error to a call that was not already an EVAL (at most one retry).
  static bool ShouldRetryWithEval(absl::string_view error, bool used_eval);

 private:
  struct Entry {
    std::string body;
    std::string sha1;
  };
  const Entry& entry(RedisScriptId id) const { return entries_[static_cast<size_t>(id)]; }

  std::array<Entry, 3> entries_;
};

}  // namespace traffik
