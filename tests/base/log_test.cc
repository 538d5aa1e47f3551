#include "base/log.h"

#include <google/protobuf/stubs/logging.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "app/log_handlers.h"
#include "clock/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RateLimitedLogTest : public ::testing::Test {
 protected:
  LogSink Capture() {
    return [this](absl::string_view line) {
      MutexLock lock(&mu_);
      lines_.emplace_back(line);
    };
  }
  std::vector<std::string> Lines() {
    MutexLock lock(&mu_);
    return lines_;
  }

  FakeClock clock_;
  Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

// Verifies a site writes `burst` lines, drops the rest, and says how many it
// dropped before the next line once the budget refills.
TEST_F(RateLimitedLogTest, BurstThenSummary) {
  RateLimitedLog log("site", LogLimit{3, 60'000}, clock_, Capture());
  for (int i = 0; i < 10; ++i) log.Write(absl::StrCat("line ", i));
  EXPECT_THAT(Lines(), ElementsAre("line 0", "line 1", "line 2"));
  clock_.AdvanceMs(19'999);  // not yet one token (60 s / 3)
  log.Write("line 10");
  EXPECT_EQ(Lines().size(), 3u);
  clock_.AdvanceMs(1);
  log.Write("line 11");
  EXPECT_THAT(Lines(), ElementsAre("line 0", "line 1", "line 2",
                                   "site: suppressed 8 similar lines", "line 11"));
  clock_.AdvanceMs(60'000);
  log.Write("line 12");  // nothing suppressed since: no summary
  EXPECT_EQ(Lines().back(), "line 12");
  EXPECT_EQ(Lines().size(), 6u);
}

// Verifies a line is made safe: newlines and non-ASCII bytes escaped, cut at
// kMaxLogLineBytes with its full length.
TEST_F(RateLimitedLogTest, LinesAreEscapedAndCut) {
  RateLimitedLog log("site", LogLimit{10, 1000}, clock_, Capture());
  log.Write("a\nfake: line\xff");
  log.Write(std::string(1 << 20, 'x'));
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "a\\x0afake: line\\xff");
  EXPECT_LE(lines[1].size(), kMaxLogLineBytes + 32);
  EXPECT_THAT(lines[1], HasSubstr("(1048576 bytes)"));
}

// Verifies the limit is exact under concurrent writers: N threads, M lines
// each, exactly `burst` written with the clock standing still.
TEST_F(RateLimitedLogTest, ExactUnderThreads) {
  RateLimitedLog log("site", LogLimit{5, 60'000}, clock_, Capture());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&log] {
      for (int i = 0; i < 1000; ++i) log.Write("x");
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Lines().size(), 5u);
  clock_.AdvanceMs(60'000);
  log.Write("y");
  EXPECT_EQ(Lines().back(), "y");
  EXPECT_EQ(Lines()[5], "site: suppressed 7995 similar lines");
}

// Verifies sites are limited separately, and sites beyond kMaxSites share one
// limiter so unbounded site names cannot grow memory or floods.
TEST_F(RateLimitedLogTest, SitesAreSeparateAndBounded) {
  LogSites sites(LogLimit{1, 60'000}, clock_, Capture());
  sites.Write("a.cc:1", "a");
  sites.Write("a.cc:1", "a again");
  sites.Write("b.cc:2", "b");
  EXPECT_THAT(Lines(), ElementsAre("a", "b"));
  for (size_t i = 0; i < 2 * LogSites::kMaxSites; ++i) {
    sites.Write(absl::StrCat("site ", i), "many");
  }
  // 254 more own sites, then one shared limiter with a burst of 1.
  EXPECT_EQ(Lines().size(), 2u + (LogSites::kMaxSites - 2) + 1);
}

// Verifies the installed handler routes protobuf's log lines through the
// rate-limited sites (so a flood of them writes `burst` lines).
TEST_F(RateLimitedLogTest, ProtobufLinesAreRateLimited) {
  LogSites sites(LogLimit{2, 60'000}, clock_, Capture());
  InstallLogHandlers(sites);
  for (int i = 0; i < 100; ++i) GOOGLE_LOG(ERROR) << "bad message " << i;
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr("protobuf ERROR"));
  EXPECT_THAT(lines[0], HasSubstr("bad message 0"));
  InstallLogHandlers(ProcessLog());  // `sites` dies with this test
}

}  // namespace
}  // namespace traffik
