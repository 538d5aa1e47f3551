#include "base/fd_limit.h"

#include <sys/resource.h>

#include "gtest/gtest.h"

namespace traffik {
namespace {

// Restores the process's open-file limits on destruction.
class SavedOpenFileLimit {
 public:
  SavedOpenFileLimit() { getrlimit(RLIMIT_NOFILE, &saved_); }
  ~SavedOpenFileLimit() { setrlimit(RLIMIT_NOFILE, &saved_); }
  const struct rlimit& saved() const { return saved_; }

 private:
  struct rlimit saved_ {};
};

// Verifies a lowered soft open-file limit is raised to the unchanged hard one.
TEST(FdLimitTest, RaisesSoftLimitToHard) {
  SavedOpenFileLimit saved;
  struct rlimit lowered = saved.saved();
  lowered.rlim_cur = lowered.rlim_max / 2;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  ASSERT_EQ(GetOpenFileLimit()->soft, lowered.rlim_cur);

  absl::StatusOr<OpenFileLimit> raised = RaiseOpenFileLimitToHard();
  ASSERT_TRUE(raised.ok()) << raised.status();
  EXPECT_EQ(raised->soft, saved.saved().rlim_max);
  EXPECT_EQ(raised->hard, saved.saved().rlim_max);
  EXPECT_EQ(GetOpenFileLimit()->soft, saved.saved().rlim_max);
}

// Verifies a soft limit already at the hard one is left as it is.
TEST(FdLimitTest, LeavesSoftLimitAtHardAlone) {
  SavedOpenFileLimit saved;
  struct rlimit at_hard = saved.saved();
  at_hard.rlim_cur = at_hard.rlim_max;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &at_hard), 0);

  absl::StatusOr<OpenFileLimit> raised = RaiseOpenFileLimitToHard();
  ASSERT_TRUE(raised.ok()) << raised.status();
  EXPECT_EQ(raised->soft, at_hard.rlim_max);
  EXPECT_EQ(raised->hard, at_hard.rlim_max);
}

}  // namespace
}  // namespace traffik
