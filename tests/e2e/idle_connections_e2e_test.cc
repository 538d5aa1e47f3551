// End-to-end tests of traffikd with many client connections: it raises its own
// soft open-file limit at startup, and holds thousands of idle gRPC
// connections (each a channel that made one call) while still answering. The
// client side is bench/idle_connections (what bench/run_idle_bench.sh holds
// 10,000 of).

#include <sys/resource.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/fd_limit.h"
#include "e2e/traffikd_process.h"
#include "gtest/gtest.h"
#include "idle_connections.h"

namespace traffik::e2e {
namespace {

// A soft limit well below the connections held: the usual default (1024)
// scaled down to keep the test small.
constexpr rlim_t kLowSoftLimit = 256;
constexpr int kHeldConnections = 2000;
// Descriptors each process needs besides the connections.
constexpr rlim_t kSpareFds = 256;

// The soft and hard "Max open files" of process `pid`, from /proc.
std::optional<OpenFileLimit> ProcessOpenFileLimit(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(file, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "Max open files")) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(rest, ' ', absl::SkipWhitespace());
    OpenFileLimit limit;
    if (fields.size() < 2 || !absl::SimpleAtoi(fields[0], &limit.soft) ||
        !absl::SimpleAtoi(fields[1], &limit.hard)) {
      return std::nullopt;
    }
    return limit;
  }
  return std::nullopt;
}

// Starts traffikd (memory, loopback port 0) with a soft open-file limit of
// `soft` and this process's hard limit: the child inherits the limits at fork,
// and this process's soft limit is restored right after.
absl::StatusOr<std::unique_ptr<TraffikdProcess>> StartWithSoftLimit(rlim_t soft) {
  struct rlimit saved {};
  if (getrlimit(RLIMIT_NOFILE, &saved) != 0) {
    return absl::InternalError("getrlimit failed");
  }
  struct rlimit lowered = saved;
  lowered.rlim_cur = soft;
  if (setrlimit(RLIMIT_NOFILE, &lowered) != 0) {
    return absl::InternalError("setrlimit failed");
  }
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> process = TraffikdProcess::Start(
      {"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  setrlimit(RLIMIT_NOFILE, &saved);
  return process;
}

// Makes sure the hard limit is at least `needed` (raising it needs root) and
// the soft one equals it. False if it cannot.
bool EnsureHardLimit(rlim_t needed) {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  if (limit.rlim_max < needed) {
    limit.rlim_max = needed;
    limit.rlim_cur = needed;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  }
  return RaiseOpenFileLimitToHard().ok();
}

// Verifies traffikd started with a low soft open-file limit raises it to the
// hard limit (and says so on stderr).
TEST(IdleConnectionsE2eTest, RaisesSoftOpenFileLimitToHard) {
  if (!EnsureHardLimit(kLowSoftLimit * 4)) {
    GTEST_SKIP() << "cannot raise the hard open-file limit above " << kLowSoftLimit * 4;
  }
  absl::StatusOr<OpenFileLimit> own = GetOpenFileLimit();
  ASSERT_TRUE(own.ok()) << own.status();
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> traffikd =
      StartWithSoftLimit(kLowSoftLimit);
  ASSERT_TRUE(traffikd.ok()) << traffikd.status();

  std::optional<OpenFileLimit> limit = ProcessOpenFileLimit((*traffikd)->pid());
  ASSERT_TRUE(limit.has_value());
  EXPECT_EQ(limit->hard, own->hard);
  EXPECT_EQ(limit->soft, own->hard);
  EXPECT_NE((*traffikd)->StderrText().find("raised the open-file limit from 256 to " +
                                           std::to_string(own->hard)),
            std::string::npos)
      << (*traffikd)->StderrText();
}

// Verifies traffikd started with a soft open-file limit of 256 holds 2,000
// idle gRPC connections (from two source addresses), answers a new one, and
// still answers on every held one.
TEST(IdleConnectionsE2eTest, HoldsThousandsOfIdleConnectionsPastALowSoftLimit) {
  if (!EnsureHardLimit(kHeldConnections + kSpareFds)) {
    GTEST_SKIP() << "cannot raise the open-file limit to " << kHeldConnections + kSpareFds
                 << " (raising the hard limit needs root with CAP_SYS_RESOURCE)";
  }
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> traffikd =
      StartWithSoftLimit(kLowSoftLimit);
  ASSERT_TRUE(traffikd.ok()) << traffikd.status();

  absl::StatusOr<std::vector<in_addr>> sources = bench::AddressRange("127.0.0.2", 2);
  ASSERT_TRUE(sources.ok()) << sources.status();
  bench::IdleConnectionOptions options;
  options.target = (*traffikd)->grpc_address();
  options.connections = kHeldConnections;
  options.sources = *sources;
  options.threads = 4;
  options.call_deadline = std::chrono::milliseconds(5000);
  absl::StatusOr<std::unique_ptr<bench::IdleConnections>> held =
      bench::IdleConnections::Open(options);
  ASSERT_TRUE(held.ok()) << held.status() << "\ntraffikd output:\n"
                         << (*traffikd)->StderrText().substr(0, 4000);

  options.connections = 1;
  options.sources.clear();
  absl::StatusOr<std::unique_ptr<bench::IdleConnections>> fresh =
      bench::IdleConnections::Open(options);
  EXPECT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ((*held)->Verify(), kHeldConnections);
  EXPECT_TRUE((*traffikd)->IsRunning());
}

}  // namespace
}  // namespace traffik::e2e
