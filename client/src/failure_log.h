#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "traffik/client.h"

namespace traffik::client_internal {

// Logs failed calls once per burst. A burst is a run of failures with no
// success in between: its first failure writes one line, the rest write
// nothing. Lines are also at least `interval` apart: a burst that starts
// sooner is logged when the interval has passed (if it is still going on).
//
// Thread-safe.
class FailureLog {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Clock = std::function<TimePoint()>;
  using Sink = std::function<void(const std::string&)>;

  // `sink` empty: lines go to stderr. `clock` empty: steady_clock::now.
  FailureLog(std::string target, std::chrono::milliseconds interval, Sink sink,
             Clock clock = {});

  FailureLog(const FailureLog&) = delete;
  FailureLog& operator=(const FailureLog&) = delete;

  // A call succeeded: the current burst (if any) ends.
  void OnSuccess();
  // A call failed with `status`; `policy` is the call's policy (it applies
  // only when IsOutage(status); other errors are returned as errors, and the
  // line says so). The status message is quoted, escaped and cut to 256 bytes.
  void OnFailure(const absl::Status& status, FailurePolicy policy);

 private:
  const std::string target_;
  const std::chrono::milliseconds interval_;
  const Sink sink_;
  const Clock clock_;

  // Read without the lock on the success path (the common case).
  std::atomic<bool> in_burst_{false};
  absl::Mutex mu_;
  bool logged_this_burst_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<TimePoint> last_line_ ABSL_GUARDED_BY(mu_);
  uint64_t unlogged_ ABSL_GUARDED_BY(mu_) = 0;  // failures since the last line
};

// "allow", "deny" or "raise".
const char* FailurePolicyName(FailurePolicy policy);

}  // namespace traffik::client_internal
