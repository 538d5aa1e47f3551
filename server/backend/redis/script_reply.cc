#include "backend/redis/script_reply.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <vector>

namespace traffik {
namespace {

// The elements of `reply` as integers, when it is an array of exactly `n`
// non-negative integers.
std::optional<std::vector<long long>> NonNegativeIntegers(const redisReply& reply,
                                                          size_t n) {
  if (reply.type != REDIS_REPLY_ARRAY || reply.elements != n) return std::nullopt;
  std::vector<long long> v(n);
  for (size_t i = 0; i < n; ++i) {
    const redisReply* e = reply.element[i];
    if (e == nullptr || e->type != REDIS_REPLY_INTEGER || e->integer < 0) {
      return std::nullopt;
    }
    v[i] = e->integer;
  }
  return v;
}

// {allowed, wait_ms, remaining, reset_ms} starting at v[at].
Decision DecisionAt(const std::vector<long long>& v, size_t at, uint64_t limit) {
  Decision d;
  d.allowed = v[at] == 1;
  d.wait_ms = static_cast<uint64_t>(v[at + 1]);
  d.limit = limit;
  d.remaining = static_cast<uint64_t>(v[at + 2]);
  d.reset_ms = static_cast<uint64_t>(v[at + 3]);
  return d;
}

}  // namespace

std::optional<Decision> DecodeDecisionReply(const redisReply& reply, uint64_t limit) {
  const std::optional<std::vector<long long>> v = NonNegativeIntegers(reply, 4);
  if (!v) return std::nullopt;
  return DecisionAt(*v, 0, limit);
}

std::optional<PeekResult> DecodePeekReply(const redisReply& reply, uint64_t limit) {
  const std::optional<std::vector<long long>> v = NonNegativeIntegers(reply, 6);
  if (!v) return std::nullopt;
  PeekResult result;
  result.hit = DecisionAt(*v, 0, limit);
  result.as_is.allowed = true;  // a hit of cost 0
  result.as_is.limit = limit;
  result.as_is.remaining = static_cast<uint64_t>((*v)[4]);
  result.as_is.reset_ms = static_cast<uint64_t>((*v)[5]);
  return result;
}

std::optional<AllOrNothingResult> DecodeAllOrNothingReply(
    const redisReply& reply, absl::Span<const BucketOp> items) {
  const size_t n = items.size();
  const std::optional<std::vector<long long>> v = NonNegativeIntegers(reply, 1 + 4 * n);
  if (!v) return std::nullopt;
  AllOrNothingResult result;
  result.applied = (*v)[0] == 1;
  result.decisions.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    result.decisions.push_back(DecisionAt(*v, 1 + 4 * i, items[i].rate.capacity));
  }
  return result;
}

std::optional<std::vector<RedisEachAnswer>> DecodeEachReply(
    const redisReply& reply, absl::Span<const RedisEachItem> items) {
  if (reply.type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<RedisEachAnswer> answers(items.size());
  size_t at = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (at < reply.elements && reply.element[at] != nullptr &&
        reply.element[at]->type == REDIS_REPLY_ERROR) {
      const redisReply& e = *reply.element[at++];
      answers[i].error.assign(e.str, std::min<size_t>(e.len, kMaxEachErrorBytes));
      continue;
    }
    const size_t n = items[i].peek ? 6 : 4;
    if (reply.elements - at < n) return std::nullopt;
    long long v[6];
    for (size_t k = 0; k < n; ++k) {
      const redisReply* e = reply.element[at + k];
      if (e == nullptr || e->type != REDIS_REPLY_INTEGER || e->integer < 0) {
        return std::nullopt;
      }
      v[k] = e->integer;
    }
    at += n;
    Decision d;
    d.allowed = v[0] == 1;
    d.wait_ms = static_cast<uint64_t>(v[1]);
    d.limit = items[i].limit;
    d.remaining = static_cast<uint64_t>(v[2]);
    d.reset_ms = static_cast<uint64_t>(v[3]);
    answers[i].decision = d;
  }
  if (at != reply.elements) return std::nullopt;
  return answers;
}

}  // namespace traffik
