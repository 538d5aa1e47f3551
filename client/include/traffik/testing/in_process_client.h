#pragma once

// An in-process traffik::Client: decides hits locally with traffikd's own
// token-bucket arithmetic, so an application can unit-test its throttled
// handlers without a traffikd (and run in development without one).
//
//   auto clock = std::make_shared<traffik::testing::FakeClock>();
//   traffik::testing::InProcessOptions options;
//   options.clock = clock;
//   options.throttles["login"] = {3, std::chrono::minutes(1)};
//   std::shared_ptr<traffik::Client> client =
//       traffik::testing::InProcessClient::Create(options).value();
//   ... three logins pass, the fourth is refused (wait 20000 ms) ...
//   clock->Advance(std::chrono::seconds(20));  // one token back
//
// It answers as a traffikd with a memory backend and the same throttles
// would, for the same sequence of hits at the same times: the same
// allowed / wait / limit / remaining / reset, the same bucket identities
// (an inline spec is part of its bucket's identity; a configured throttle
// wins over an inline spec with its uid; identifiers longer than
// max_identifier_bytes are digested as the gRPC client does), the same
// error codes (kInvalidArgument, kNotFound, kPermissionDenied, kOutOfRange;
// a batch with an invalid item fails whole with kInvalidArgument), and
// all-or-nothing batches take nothing when one item is refused.
//
// Differences from the gRPC client: no network, so no outages except a full
// bucket table (kResourceExhausted, see max_buckets), to which the failure
// policy applies; no short-circuit cache (every answer has source kServer);
// CheckAsync / CheckBatchAsync run `done` inline; stats().rpcs counts the
// calls decided (each Check or CheckBatch), stats().failures the failed ones.
//
// Thread-safe: one mutex around the bucket table.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "traffik/client.h"

namespace traffik::testing {

// The time source of an InProcessClient: milliseconds since an arbitrary
// origin, never decreasing. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::milliseconds Now() const = 0;
};

// std::chrono::steady_clock (the default).
class SteadyClock final : public Clock {
 public:
  std::chrono::milliseconds Now() const override;
};

// A clock that moves only when told to, for tests. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(
      std::chrono::milliseconds start = std::chrono::milliseconds(1'000'000))
      : now_ms_(start.count()) {}
  std::chrono::milliseconds Now() const override {
    return std::chrono::milliseconds(now_ms_.load(std::memory_order_relaxed));
  }
  // Moves the clock forward by `delta` (a negative delta is ignored: the
  // clock never goes back).
  void Advance(std::chrono::milliseconds delta) {
    if (delta.count() > 0) now_ms_.fetch_add(delta.count(), std::memory_order_relaxed);
  }

 private:
  std::atomic<int64_t> now_ms_;
};

// A tenant of an InProcessClient (traffikd's `tenants:` entry).
struct InProcessTenant {
  // Every throttle's limit is multiplied by this: max(1, floor(limit * m)).
  double quota_multiplier = 1.0;
  // Whether requests may bring their own ThrottleSpec for uids that are not
  // configured (kPermissionDenied otherwise).
  bool allow_inline_specs = true;
};

// What an InProcessClient decides with: the parts of a traffikd config that
// change an answer. Defaults match traffikd's defaults.
struct InProcessOptions {
  // Configured throttles (traffikd's `throttles:`), by uid.
  std::map<std::string, ThrottleSpec> throttles{};
  // Tenants by name; empty: one tenant named `default_tenant` with the
  // defaults above. Requests with an empty tenant use `default_tenant`.
  std::map<std::string, InProcessTenant> tenants{};
  std::string default_tenant = "default";
  // null: SteadyClock. Share a FakeClock with the test to drive time.
  std::shared_ptr<const Clock> clock{};
  // Applied to outages (here: a full bucket table) of calls without a policy.
  FailurePolicy failure_policy = FailurePolicy::kRaise;
  std::chrono::milliseconds deny_wait{1000};  // the wait reported by kDeny
  // Identifiers longer than this are decided in their digest form
  // (WireIdentifier), as the gRPC client sends them.
  size_t max_identifier_bytes = kDefaultMaxIdentifierBytes;
  size_t max_batch_size = 1000;  // a larger batch: kInvalidArgument
  // At most this many buckets are kept (a bucket that is full again is
  // dropped when room is needed, at no loss); a new bucket beyond that is
  // kResourceExhausted, as traffikd's memory backend answers.
  size_t max_buckets = 1'000'000;
};

class InProcessClient final : public Client {
 public:
  // kInvalidArgument for unusable options: a throttle that traffikd would
  // refuse (empty or invalid uid, limit 0, period <= 0, limit * period_ms
  // above 2^53 after a tenant's multiplier), a quota_multiplier <= 0, a
  // default_tenant that is not in `tenants`, max_identifier_bytes below
  // kDigestIdentifierBytes, max_batch_size or max_buckets 0, deny_wait < 0.
  static absl::StatusOr<std::shared_ptr<InProcessClient>> Create(
      InProcessOptions options = {});

  ~InProcessClient() override;
  InProcessClient(const InProcessClient&) = delete;
  InProcessClient& operator=(const InProcessClient&) = delete;

  absl::StatusOr<ThrottleResult> Check(const ThrottleRequest& request,
                                       std::optional<FailurePolicy> policy = {}) override;
  void CheckAsync(const ThrottleRequest& request,
                  std::function<void(absl::StatusOr<ThrottleResult>)> done,
                  std::optional<FailurePolicy> policy = {}) override;
  using Client::CheckBatch;  // the deprecated forms
  using Client::CheckBatchAsync;
  absl::StatusOr<BatchResult> CheckBatch(const std::vector<ThrottleRequest>& requests,
                                         const BatchOptions& options = {}) override;
  void CheckBatchAsync(const std::vector<ThrottleRequest>& requests,
                       std::function<void(absl::StatusOr<BatchResult>)> done,
                       const BatchOptions& options = {}) override;
  // True for "" and "traffik.v1.ThrottleService"; kNotFound for other services.
  absl::StatusOr<bool> Healthy(const std::string& service = "") override;
  ClientStats stats() const override;

  // Forgets every bucket (all full again), e.g. between test cases.
  void Reset();
  // Buckets stored now (those not full).
  size_t bucket_count() const;

 private:
  struct State;
  explicit InProcessClient(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace traffik::testing
