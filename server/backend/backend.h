#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bucket/token_bucket.h"

namespace traffik {

// A backend's per-tenant state (the memory backend's share of its budget),
// opaque to everyone else: a backend hands out its own partitions, and the
// engine passes a tenant's partition with each of its hits. A backend that
// keeps no per-tenant state (Redis) ignores it; nullptr is always allowed.
class BackendPartition {
 protected:
  ~BackendPartition() = default;
};

// One hit on one bucket, as handed to a backend.
struct BucketOp {
  std::string key;  // binary-safe bucket key (see engine/key.h)
  Rate rate;        // valid (IsValidRate)
  uint64_t cost;    // 1 <= cost <= rate.capacity
  // The tenant's partition on this backend (from the backend that decides
  // the op), or nullptr.
  BackendPartition* partition = nullptr;
  // Answer as the hit would be answered, but take nothing and create no
  // bucket (DecideBatch: this op only; DecideAllOrNothing: a dry run when set
  // on every op, see there).
  bool peek = false;
};

// What Backend::Peek answers: the decision a hit would get, and the bucket as
// it stands; nothing is written.
struct PeekResult {
  Decision hit;    // as Decide would answer for the cost (nothing taken)
  Decision as_is;  // the bucket with nothing taken: remaining, reset_ms
};
using PeekCallback = absl::AnyInvocable<void(absl::StatusOr<PeekResult>) &&>;

// Which buckets Backend::Reset forgets: every stored key that starts with the
// literal bytes `key_prefix` and that `matches` accepts (null: all of them).
// Built by the engine, which alone knows the key layout (engine/key.h); a
// network backend narrows its scan with `key_prefix` and checks each key it
// finds with `matches`. `matches` is called on any thread, possibly the
// backend's I/O thread; it must not block.
struct BucketSelector {
  std::string key_prefix;
  std::function<bool(absl::string_view key)> matches;
  // Every bucket of the tenant: a backend that keeps the tenant's buckets in
  // its own partition drops the whole partition (including buckets stored
  // under a key prefix the tenant no longer has) instead of filtering.
  bool whole_partition = false;
};
using CountCallback = absl::AnyInvocable<void(absl::StatusOr<uint64_t>) &&>;

using DecisionCallback = absl::AnyInvocable<void(absl::StatusOr<Decision>) &&>;
using BatchCallback = absl::AnyInvocable<void(absl::StatusOr<std::vector<Decision>>) &&>;

// The answer to an all-or-nothing batch (Backend::DecideAllOrNothing).
struct AllOrNothingResult {
  // One per op, in op order.
  std::vector<Decision> decisions;
  // True when every op was allowed and all their tokens were taken; false
  // when nothing was taken from any bucket.
  bool applied = false;
};
using AllOrNothingCallback =
    absl::AnyInvocable<void(absl::StatusOr<AllOrNothingResult>) &&>;

// A store of token buckets. Asynchronous: each call completes its callback
// exactly once, either inline on the calling thread (memory) or later from the
// backend's own I/O thread (network backends), so a caller never waits on a
// socket. A backend error (kUnavailable, kDeadlineExceeded) is reported
// through the callback; being over the limit is a normal Decision. A backend
// with bounded storage answers kResourceExhausted when a tenant's share has no
// room for a new bucket (nothing is taken): that is not an outage.
//
// Implementations are thread-safe.
class Backend {
 public:
  virtual ~Backend() = default;

  // A short human-readable name for logs and error messages ("memory", a URL
  // without credentials, ...). Never contains secrets.
  virtual absl::string_view Name() const = 0;

  // True when Decide/DecideBatch/DecideAllOrNothing always run their callback before
  // returning (so a caller may keep its state on the stack).
  virtual bool CompletesInline() const { return false; }

  // Takes `cost` tokens from bucket `key` if it holds that many.
  virtual void Decide(absl::string_view key, const Rate& rate, uint64_t cost,
                      DecisionCallback done) = 0;

  // The same for a tenant: `partition` is the tenant's partition on this
  // backend (or nullptr). The default ignores it.
  virtual void DecideIn(BackendPartition* partition, absl::string_view key,
                        const Rate& rate, uint64_t cost, DecisionCallback done) {
    (void)partition;
    Decide(key, rate, cost, std::move(done));
  }

  // Applies `ops` in order, as if each were a separate Decide call; answers in
  // the same order.
  virtual void DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) = 0;

  // All or nothing, atomically with respect to every other decision: `ops`
  // are evaluated in order as if each were a separate Decide call (a repeated
  // key sees the tokens earlier ops took). If every op is allowed, all their
  // tokens are taken: decisions are those of the evaluation, applied = true.
  // Otherwise no bucket changes (none is created) and applied = false; each
  // decision then describes its bucket as it stands with nothing taken
  // (remaining, reset_ms), with allowed/wait_ms from the in-order evaluation
  // (so at least one op is refused). Empty `ops`: applied, no decisions.
  //
  // kFailedPrecondition when this backend cannot decide these keys together
  // (Redis Cluster: keys in different hash slots); nothing is taken. Other
  // errors as for Decide.
  //
  // Every op with `peek` set: a dry run, answered exactly as above (applied
  // says whether the batch would apply) but nothing is written. (The engine
  // never mixes peek and non-peek ops here.)
  virtual void DecideAllOrNothing(absl::Span<const BucketOp> ops,
                                  AllOrNothingCallback done) = 0;

  // The admin operations.

  // What Decide(key, rate, cost) would answer now, and the bucket as it
  // stands, without taking anything or creating a bucket. `partition` as for
  // DecideIn. Errors as for Decide.
  virtual void Peek(BackendPartition* partition, absl::string_view key, const Rate& rate,
                    uint64_t cost, PeekCallback done) = 0;

  // Forgets the buckets `selector` picks in `partition` (the tenant's; a
  // backend without partitions looks at every key it stores), answering how
  // many it removed. Not atomic with respect to concurrent decisions: a
  // bucket hit while the reset runs may survive it or be recreated. A network
  // backend runs the whole scan on its I/O thread and never blocks the
  // caller; a failure midway answers the error (what was removed stays
  // removed).
  virtual void Reset(BackendPartition* partition, BucketSelector selector,
                     CountCallback done) = 0;
};

}  // namespace traffik
