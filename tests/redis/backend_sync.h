#pragma once

// Blocking wrappers over the asynchronous Backend calls, for tests: each
// waits for the backend's callback (bounded by the backend's own deadlines).

#include <cstdint>
#include <future>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/backend.h"

namespace traffik::testing_redis {

inline absl::StatusOr<Decision> DecideSync(Backend& backend, const std::string& key,
                                           const Rate& rate, uint64_t cost = 1) {
  std::promise<absl::StatusOr<Decision>> promise;
  backend.Decide(key, rate, cost, [&promise](absl::StatusOr<Decision> d) {
    promise.set_value(std::move(d));
  });
  return promise.get_future().get();
}

inline absl::StatusOr<std::vector<Decision>> BatchSync(Backend& backend,
                                                       const std::vector<BucketOp>& ops) {
  std::promise<absl::StatusOr<std::vector<Decision>>> promise;
  backend.DecideBatch(ops, [&promise](absl::StatusOr<std::vector<Decision>> d) {
    promise.set_value(std::move(d));
  });
  return promise.get_future().get();
}

inline absl::StatusOr<AllOrNothingResult> AllOrNothingSync(
    Backend& backend, const std::vector<BucketOp>& ops) {
  std::promise<absl::StatusOr<AllOrNothingResult>> promise;
  backend.DecideAllOrNothing(ops, [&promise](absl::StatusOr<AllOrNothingResult> d) {
    promise.set_value(std::move(d));
  });
  return promise.get_future().get();
}

}  // namespace traffik::testing_redis
