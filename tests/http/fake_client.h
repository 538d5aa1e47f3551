#pragma once

// A scripted traffik::Client for unit tests of the HTTP/WebSocket core: no
// network; records every call; answers with `responder` (default: allowed).

#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "base/mutex.h"
#include "traffik/client.h"

namespace traffik::testing {

class FakeClient : public Client {
 public:
  // Answers one hit. Default: allowed, limit 10, remaining 9, reset 1 s.
  using Responder = std::function<absl::StatusOr<ThrottleResult>(const ThrottleRequest&)>;

  // One RPC as the fake saw it.
  struct Call {
    std::vector<ThrottleRequest> requests;  // 1 for Check, n for CheckBatch
    bool batch = false;
    std::optional<FailurePolicy> policy;
    bool all_or_nothing = false;  // BatchOptions::all_or_nothing
  };

  static ThrottleResult Allowed(
      uint64_t limit = 10, uint64_t remaining = 9,
      std::chrono::milliseconds reset = std::chrono::seconds(1)) {
    ThrottleResult r;
    r.allowed = true;
    r.limit = limit;
    r.remaining = remaining;
    r.reset = reset;
    return r;
  }
  static ThrottleResult Refused(
      std::chrono::milliseconds wait, uint64_t limit = 10,
      std::chrono::milliseconds reset = std::chrono::seconds(10)) {
    ThrottleResult r;
    r.allowed = false;
    r.wait = wait;
    r.limit = limit;
    r.remaining = 0;
    r.reset = reset;
    return r;
  }

  void set_responder(Responder responder) {
    MutexLock lock(&mu_);
    responder_ = std::move(responder);
  }
  // Every RPC fails with `status` (the policy is recorded, not applied).
  void set_failure(absl::Status status) {
    MutexLock lock(&mu_);
    failure_ = std::move(status);
  }

  std::vector<Call> calls() const {
    MutexLock lock(&mu_);
    return calls_;
  }
  size_t rpc_count() const {
    MutexLock lock(&mu_);
    return calls_.size();
  }

  absl::StatusOr<ThrottleResult> Check(
      const ThrottleRequest& request, std::optional<FailurePolicy> policy = {}) override {
    MutexLock lock(&mu_);
    calls_.push_back(Call{{request}, false, policy});
    if (!failure_.ok()) return failure_;
    return Answer(request);
  }
  void CheckAsync(const ThrottleRequest& request,
                  std::function<void(absl::StatusOr<ThrottleResult>)> done,
                  std::optional<FailurePolicy> policy = {}) override {
    done(Check(request, policy));
  }
  using Client::CheckBatch;  // the deprecated forms
  using Client::CheckBatchAsync;
  // All or nothing: applied iff every answer allows (the fake takes nothing).
  absl::StatusOr<BatchResult> CheckBatch(const std::vector<ThrottleRequest>& requests,
                                         const BatchOptions& options = {}) override {
    MutexLock lock(&mu_);
    calls_.push_back(Call{requests, true, options.policy, options.all_or_nothing});
    if (!failure_.ok()) return failure_;
    BatchResult result;
    result.all_or_nothing = options.all_or_nothing;
    for (const ThrottleRequest& request : requests) {
      absl::StatusOr<ThrottleResult> r = Answer(request);
      if (!r.ok()) return r.status();
      if (options.all_or_nothing && !r->allowed) result.applied = false;
      result.results.push_back(*r);
    }
    return result;
  }
  void CheckBatchAsync(const std::vector<ThrottleRequest>& requests,
                       std::function<void(absl::StatusOr<BatchResult>)> done,
                       const BatchOptions& options = {}) override {
    done(CheckBatch(requests, options));
  }
  absl::StatusOr<bool> Healthy(const std::string& /*service*/ = "") override {
    return true;
  }
  ClientStats stats() const override {
    MutexLock lock(&mu_);
    ClientStats s;
    s.rpcs = calls_.size();
    return s;
  }

 private:
  absl::StatusOr<ThrottleResult> Answer(const ThrottleRequest& request) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return responder_ ? responder_(request) : Allowed();
  }

  mutable Mutex mu_;
  Responder responder_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace traffik::testing
