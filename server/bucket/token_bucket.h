#pragma once

#include <cstdint>

namespace traffik {

// A throttle's rate: `capacity` tokens, refilled continuously over `period_ms`.
struct Rate {
  uint64_t capacity = 0;   // tokens; >= 1
  uint64_t period_ms = 0;  // ms to refill an empty bucket; >= 1
};

// The largest capacity * period_ms product a rate may have. Bucket state is
// kept in "token-milliseconds" (tokens * period_ms) so refill is exact integer
// arithmetic with no drift; 2^53 keeps every value exact in a double as well,
// so a Lua script (Redis) computes bit-identical answers.
inline constexpr uint64_t kMaxScaledCapacity = uint64_t{1} << 53;
// The rule as messages name it.
inline constexpr char kMaxScaledCapacityText[] = "2^53";

// A tenant's capacity for a throttle of `limit` tokens:
// max(1, floor(limit * multiplier)), saturating at UINT64_MAX (computed in
// long double, so a limit just above 2^53 is not rounded into range).
uint64_t ScaledCapacity(uint64_t limit, double multiplier);

// True when `rate` is usable: capacity >= 1, period_ms >= 1 and
// capacity * period_ms <= kMaxScaledCapacity.
bool IsValidRate(const Rate& rate);

// The persistent state of one bucket. `scaled_tokens` = tokens * period_ms,
// in [0, capacity * period_ms]; `last_ms` is the clock time of the last update.
struct BucketState {
  uint64_t scaled_tokens = 0;
  int64_t last_ms = 0;
};

// The answer for one hit.
struct Decision {
  bool allowed = false;
  uint64_t wait_ms = 0;    // 0 when allowed; else ms until this hit would pass (>= 1)
  uint64_t limit = 0;      // capacity in tokens
  uint64_t remaining = 0;  // whole tokens left after the decision
  uint64_t reset_ms = 0;   // ms until the bucket is full again
};

// The token-bucket arithmetic shared by every backend: a pure function.
//
// `state` is the bucket's stored state, or nullptr for a bucket that does not
// exist yet (a new bucket is full). On return `*out_state` holds the state to
// store (it may alias `state`). Requires IsValidRate(rate) and
// cost <= rate.capacity. A refused hit takes nothing; the refill up to
// `now_ms` is still applied, which changes no observable answer. A cost of 0
// takes nothing and describes the bucket as it stands (remaining, reset_ms).
//
// A clock that appears to go backwards is treated as no time passing. A state
// written under another rate is read clamped to this rate's full
// (capacity * period_ms), so every answer stays within the rate's bounds.
Decision Decide(const BucketState* state, const Rate& rate, uint64_t cost, int64_t now_ms,
                BucketState* out_state);

// The clock time at which a bucket in `state` is full again: from then on the
// bucket is indistinguishable from a new one and can be dropped at no loss.
// (A state above the rate's full is full: `state.last_ms`.)
int64_t FullAtMs(const BucketState& state, const Rate& rate);

}  // namespace traffik
