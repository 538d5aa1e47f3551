#include "bucket/token_bucket.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace traffik {
namespace {

// ceil(a / b) for b > 0.
constexpr uint64_t CeilDiv(uint64_t a, uint64_t b) {
  return a / b + (a % b != 0 ? 1 : 0);
}

}  // namespace

uint64_t ScaledCapacity(uint64_t limit, double multiplier) {
  const long double scaled = std::floor(static_cast<long double>(limit) * multiplier);
  if (scaled < 1) return 1;
  if (scaled >= static_cast<long double>(std::numeric_limits<uint64_t>::max())) {
    return std::numeric_limits<uint64_t>::max();
  }
  return static_cast<uint64_t>(scaled);
}

bool IsValidRate(const Rate& rate) {
  if (rate.capacity == 0 || rate.period_ms == 0) return false;
  return rate.capacity <= kMaxScaledCapacity / rate.period_ms;
}

Decision Decide(const BucketState* state, const Rate& rate, uint64_t cost, int64_t now_ms,
                BucketState* out_state) {
  const uint64_t full = rate.capacity * rate.period_ms;
  uint64_t scaled = full;
  if (state != nullptr) {
    // A state stored under another rate (a reloaded limit, a changed quota
    // multiplier) may hold more than this rate's full: it counts as full.
    scaled = std::min(full, state->scaled_tokens);
    const int64_t elapsed = now_ms - state->last_ms;
    if (elapsed > 0) {
      // After a whole period any bucket is full; below that the product fits
      // (elapsed < period_ms, so elapsed * capacity < full <= 2^53).
      if (static_cast<uint64_t>(elapsed) >= rate.period_ms) {
        scaled = full;
      } else {
        scaled = std::min(full, scaled + static_cast<uint64_t>(elapsed) * rate.capacity);
      }
    }
  }

  Decision d;
  d.limit = rate.capacity;
  const uint64_t need = cost * rate.period_ms;
  if (scaled >= need) {
    scaled -= need;
    d.allowed = true;
    d.wait_ms = 0;
  } else {
    d.allowed = false;
    // One token-ms of refill per ms per unit of capacity.
    d.wait_ms = CeilDiv(need - scaled, rate.capacity);
  }
  d.remaining = scaled / rate.period_ms;
  d.reset_ms = CeilDiv(full - scaled, rate.capacity);

  // Keep the later of the stored time and now so a clock step backwards never
  // refills twice.
  int64_t last = now_ms;
  if (state != nullptr && state->last_ms > now_ms) last = state->last_ms;
  out_state->scaled_tokens = scaled;
  out_state->last_ms = last;
  return d;
}

int64_t FullAtMs(const BucketState& state, const Rate& rate) {
  const uint64_t full = rate.capacity * rate.period_ms;
  const uint64_t missing = full - std::min(full, state.scaled_tokens);
  return state.last_ms + static_cast<int64_t>(CeilDiv(missing, rate.capacity));
}

}  // namespace traffik
