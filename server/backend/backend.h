#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bucket/token_bucket.h"

namespace traffik {

// One hit on one bucket, as handed to a backend.
struct BucketOp {
  std::string key;  // binary-safe bucket key (see engine/key.h)
  Rate rate;        // valid (IsValidRate)
  uint64_t cost;    // 1 <= cost <= rate.capacity
};

using DecisionCallback = absl::AnyInvocable<void(absl::StatusOr<Decision>) &&>;
using BatchCallback = absl::AnyInvocable<void(absl::StatusOr<std::vector<Decision>>) &&>;

// A store of token buckets. Asynchronous: each call completes its callback
// exactly once, either inline on the calling thread (memory) or later from the
// backend's own I/O thread (network backends), so a caller never waits on a
// socket. A backend error (kUnavailable, kDeadlineExceeded) is reported
// through the callback; being over the limit is a normal Decision.
//
// Implementations are thread-safe.
class Backend {
 public:
  virtual ~Backend() = default;

  // A short human-readable name for logs and error messages ("memory", a URL
  // without credentials, ...). Never contains secrets.
  virtual absl::string_view Name() const = 0;

  // True when Decide/DecideBatch always run their callback before returning
  // (so a caller may keep its state on the stack).
  virtual bool CompletesInline() const { return false; }

  // Takes `cost` tokens from bucket `key` if it holds that many.
  virtual void Decide(absl::string_view key, const Rate& rate, uint64_t cost,
                      DecisionCallback done) = 0;

  // Applies `ops` in order, as if each were a separate Decide call; answers in
  // the same order.
  virtual void DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) = 0;
};

}  // namespace traffik
