#include "failure_log.h"

#include <cstdio>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace traffik::client_internal {
namespace {

// The longest part of a status message that a log line quotes.
constexpr size_t kMaxMessageBytes = 256;

}  // namespace

const char* FailurePolicyName(FailurePolicy policy) {
  switch (policy) {
    case FailurePolicy::kAllow:
      return "allow";
    case FailurePolicy::kDeny:
      return "deny";
    case FailurePolicy::kRaise:
      return "raise";
  }
  return "unknown";
}

FailureLog::FailureLog(std::string target, std::chrono::milliseconds interval, Sink sink,
                       Clock clock)
    : target_(std::move(target)),
      interval_(interval),
      sink_(std::move(sink)),
      clock_(clock ? std::move(clock)
                   : Clock([] { return std::chrono::steady_clock::now(); })) {}

void FailureLog::OnSuccess() {
  if (!in_burst_.load(std::memory_order_relaxed)) return;
  absl::MutexLock lock(&mu_);
  in_burst_.store(false, std::memory_order_relaxed);
}

void FailureLog::OnFailure(const absl::Status& status, FailurePolicy policy) {
  std::string line;
  {
    absl::MutexLock lock(&mu_);
    if (!in_burst_.load(std::memory_order_relaxed)) {
      in_burst_.store(true, std::memory_order_relaxed);
      logged_this_burst_ = false;
    }
    ++unlogged_;
    const TimePoint now = clock_();
    if (logged_this_burst_ || (last_line_.has_value() && now - *last_line_ < interval_)) {
      return;
    }
    logged_this_burst_ = true;
    last_line_ = now;
    // The message may carry caller text (traffikd quotes what it echoes, but
    // an older or foreign server might not): escaped and cut.
    const absl::string_view message = status.message();
    const bool cut = message.size() > kMaxMessageBytes;
    line = absl::StrCat(
        "traffik client: calls to ", target_, " are failing (",
        absl::StatusCodeToString(status.code()), ": \"",
        absl::CHexEscape(message.substr(0, kMaxMessageBytes)), cut ? "\"...)" : "\")",
        IsOutage(status) ? "; policy " : "; returned as errors, not policy ",
        FailurePolicyName(policy), "; ", unlogged_,
        " failure(s) since the last such line; further failures are not "
        "logged until a call succeeds");
    unlogged_ = 0;
  }
  if (sink_) {
    sink_(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

}  // namespace traffik::client_internal
