#pragma once

// Decoding the bucket scripts' replies (bucket_script.h): pure functions over
// hiredis reply objects, no I/O, so they are unit-tested and fuzzed without a
// redis-server (tests/redis/redis_reply_test.cc, fuzz/redis_reply_fuzz.cc).

#include <cstdint>
#include <optional>
#include <string>

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

// Whether `reply` is the each script's reply shape for `items` items: an
// array of exactly that many entries.
bool IsEachReply(const redisReply& reply, size_t items);

// The each script's entry for one item: the 4-integer decision reply, or for
// a peek (`peek`) the 6-integer peek reply (its hit), or an error reply
// (answer.error). `limit` is the item's capacity. nullopt for anything else.
std::optional<RedisEachAnswer> DecodeEachEntry(const redisReply& entry, uint64_t limit,
                                               bool peek);

}  // namespace traffik
