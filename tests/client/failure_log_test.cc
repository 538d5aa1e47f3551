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

// Verifies a status message is quoted, escaped (no raw newline reaches the log) and
// cut to 256 bytes, so caller text echoed by a server cannot forge or flood lines.
TEST_F(FailureLogTest, MessageEscapedAndTruncated) {
  FailureLog log = Make(std::chrono::milliseconds(0));
  const std::string message = "bad\nforged line" + std::string(5000, 'x');
  log.OnFailure(absl::InvalidArgumentError(message), FailurePolicy::kAllow);
  ASSERT_THAT(lines_, SizeIs(1));
  EXPECT_EQ(lines_[0].find('\n'), std::string::npos);
  EXPECT_THAT(lines_[0], AllOf(HasSubstr("\"bad\\nforged line"), HasSubstr("x\"..."),
                               HasSubstr("returned as errors, not policy allow")));
  EXPECT_LT(lines_[0].size(), 600u);
}

}  // namespace
}  // namespace traffik::client_internal
