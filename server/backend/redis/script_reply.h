#pragma once

// Decoding the bucket scripts' replies (bucket_script.h): pure functions over
// hiredis reply objects, no I/O, so they are unit-tested and fuzzed without a
// redis-server (tests/redis/redis_reply_test.cc, fuzz/redis_reply_fuzz.cc).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "backend/backend.h"

struct redisReply;

namespace traffik {

// The bucket script's reply {allowed, wait_ms, remaining, reset_ms}: an array
// of exactly four non-negative integers. `limit` is the bucket's capacity
// (the script does not echo it). nullopt for any other reply.
std::optional<Decision> DecodeDecisionReply(const redisReply& reply, uint64_t limit);

// The bucket script's peek reply {allowed, wait_ms, remaining, reset_ms,
// remaining_now, reset_now}: an array of exactly six non-negative integers.
// nullopt for any other reply.
std::optional<PeekResult> DecodePeekReply(const redisReply& reply, uint64_t limit);

// The all-or-nothing script's reply {applied, then allowed, wait_ms,
// remaining, reset_ms per item}: an array of exactly 1 + 4 * items.size()
// non-negative integers. Each decision's limit is its item's capacity.
// nullopt for any other reply.
std::optional<AllOrNothingResult> DecodeAllOrNothingReply(
    const redisReply& reply, absl::Span<const BucketOp> items);

// One item's entry in the each script's reply (bucket_script.h
// RedisEachScript): the item's decision, or the error Redis gave that item.
struct RedisEachAnswer {
  std::optional<Decision> decision;
  std::string error;  // when !decision: Redis' text, at most kMaxEachErrorBytes
};
inline constexpr size_t kMaxEachErrorBytes = 256;

// One item of an each-script call, as the decoder needs it: its capacity (the
// decision's limit, which the script does not echo) and whether it is a peek.
struct RedisEachItem {
  uint64_t limit = 0;
  bool peek = false;
};

// The each script's reply for `items` (bucket_script.h RedisEachScript): one
// flat array holding, per item in order, 4 non-negative integers (a
// decision), 6 (a peek: its hit) or one error reply (that item's error). One
// answer per item; nullopt for any other shape (a wrong count, a negative or
// non-integer element where an item's integers are due).
std::optional<std::vector<RedisEachAnswer>> DecodeEachReply(
    const redisReply& reply, absl::Span<const RedisEachItem> items);

}  // namespace traffik
