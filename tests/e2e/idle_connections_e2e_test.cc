// End-to-end tests of traffikd with many client connections: it raises its own
// soft open-file limit at startup, and holds thousands of idle gRPC
// connections (each a channel that made one call) while still answering. The
// client side is bench/idle_connections (what bench/run_idle_bench.sh holds
// 10,000 of).

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

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

// The kernel's timer on every ESTABLISHED socket whose local port is `port`,
// from /proc/net/tcp and /proc/net/tcp6: (timer kind, seconds until it fires);
// kind 2 is the keepalive timer, 0 none.
std::vector<std::pair<int, double>> ServerSideTimers(int port) {
  std::vector<std::pair<int, double>> timers;
  const double ticks_per_s = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream file(path);
    std::string line;
    std::getline(file, line);  // header
    while (std::getline(file, line)) {
      // sl local rem st tx:rx tr:when retrnsmt ...
      std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (fields.size() < 6 || fields[3] != "01") continue;
      const size_t colon = fields[1].rfind(':');
      uint32_t local_port = 0;
      if (colon == std::string::npos ||
          !absl::SimpleHexAtoi(fields[1].substr(colon + 1), &local_port) ||
          local_port != static_cast<uint32_t>(port)) {
        continue;
      }
      std::vector<std::string> timer = absl::StrSplit(fields[5], ':');
      uint32_t kind = 0;
      uint64_t when = 0;
      if (timer.size() != 2 || !absl::SimpleHexAtoi(timer[0], &kind) ||
          !absl::SimpleHexAtoi(timer[1], &when)) {
        continue;
      }
      timers.emplace_back(static_cast<int>(kind),
                          static_cast<double>(when) / ticks_per_s);
    }
  }
  return timers;
}

// Verifies every connection traffikd accepts has the kernel's TCP keepalive
// on, first probe 2 h after the last traffic (it replaces gRPC's keepalive
// pings, whose per-connection timer made every call dearer).
TEST(IdleConnectionsE2eTest, AcceptedConnectionsHaveTcpKeepalive) {
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> traffikd =
      TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen", ""});
  ASSERT_TRUE(traffikd.ok()) << traffikd.status();
  bench::IdleConnectionOptions options;
  options.target = (*traffikd)->grpc_address();
  options.connections = 3;
  options.threads = 1;
  absl::StatusOr<std::unique_ptr<bench::IdleConnections>> held =
      bench::IdleConnections::Open(options);
  ASSERT_TRUE(held.ok()) << held.status();

  // Right after the call the kernel may show a loss-probe/retransmit timer
  // (kind 1, a fraction of a second) instead: wait at most 5 s for it to go.
  std::vector<std::pair<int, double>> timers;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (true) {
    timers = ServerSideTimers((*traffikd)->grpc_port());
    bool settled = true;
    for (const auto& timer : timers) settled = settled && timer.first != 1;
    if (settled || std::chrono::steady_clock::now() > give_up) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(timers.size(), 3u);
  for (const auto& [kind, seconds] : timers) {
    EXPECT_EQ(kind, 2) << "not the keepalive timer";
    EXPECT_GT(seconds, 7200 - 60);
    EXPECT_LE(seconds, 7200 + 1);
  }
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
