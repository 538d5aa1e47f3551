// Unit tests of the client's once-per-burst failure log (private class), on a
// fake clock.

#include "failure_log.h"

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik::client_internal {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class FailureLogTest : public ::testing::Test {
 protected:
  FailureLog Make(std::chrono::milliseconds interval) {
    return FailureLog(
        "127.0.0.1:1", interval,
        [this](const std::string& line) { lines_.push_back(line); },
        [this] { return now_; });
  }

  std::vector<std::string> lines_;
  FailureLog::TimePoint now_{std::chrono::hours(1)};
};

// Verifies a burst of failures writes one line naming target, code, message and policy.
TEST_F(FailureLogTest, OneLinePerBurst) {
  FailureLog log = Make(std::chrono::milliseconds(0));
  for (int i = 0; i < 5; ++i) {
    log.OnFailure(absl::UnavailableError("connection refused"), FailurePolicy::kAllow);
  }
  ASSERT_THAT(lines_, SizeIs(1));
  EXPECT_THAT(lines_[0],
              AllOf(HasSubstr("127.0.0.1:1"), HasSubstr("UNAVAILABLE"),
                    HasSubstr("connection refused"), HasSubstr("policy allow")));
}

// Verifies a success ends the burst, so the next failure logs again.
TEST_F(FailureLogTest, SuccessStartsNewBurst) {
  FailureLog log = Make(std::chrono::milliseconds(0));
  log.OnFailure(absl::UnavailableError("down"), FailurePolicy::kDeny);
  log.OnFailure(absl::UnavailableError("down"), FailurePolicy::kDeny);
  log.OnSuccess();
  log.OnSuccess();
  log.OnFailure(absl::DeadlineExceededError("slow"), FailurePolicy::kDeny);
  log.OnFailure(absl::DeadlineExceededError("slow"), FailurePolicy::kDeny);
  ASSERT_THAT(lines_, SizeIs(2));
  EXPECT_THAT(lines_[1], AllOf(HasSubstr("DEADLINE_EXCEEDED"), HasSubstr("policy deny"),
                               HasSubstr("2 failure(s)")));  // one unlogged + this one
}

// Verifies lines are at least the interval apart; a burst started sooner logs once it has
// passed.
TEST_F(FailureLogTest, IntervalLimitsLines) {
  FailureLog log = Make(std::chrono::seconds(10));
  log.OnFailure(absl::UnavailableError("down"), FailurePolicy::kRaise);
  log.OnSuccess();
  now_ += std::chrono::seconds(1);
  log.OnFailure(absl::UnavailableError("down"), FailurePolicy::kRaise);  // too soon
  EXPECT_THAT(lines_, SizeIs(1));
  now_ += std::chrono::seconds(9);
  log.OnFailure(absl::UnavailableError("down"),
                FailurePolicy::kRaise);  // same burst, now due
  log.OnFailure(absl::UnavailableError("down"), FailurePolicy::kRaise);
  EXPECT_THAT(lines_, SizeIs(2));
  now_ += std::chrono::hours(1);
  log.OnFailure(absl::UnavailableError("down"), FailurePolicy::kRaise);  // logged already
  EXPECT_THAT(lines_, SizeIs(2));
}

}  // namespace
}  // namespace traffik::client_internal
