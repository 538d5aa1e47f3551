// End-to-end tests of traffikd's lifecycle under hostile or busy clients: what
// SIGTERM does to calls in flight, and that no /metrics client can hold the
// process past its shutdown bound. Each test starts the real traffikd on
// loopback port 0.

#include <arpa/inet.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using Clock = std::chrono::steady_clock;

// Starts traffikd on loopback with `yaml` as its config file.
std::unique_ptr<TraffikdProcess> StartWithConfig(const std::string& yaml,
                                                 std::optional<TempFile>& config) {
  absl::StatusOr<TempFile> file = TempFile::Create(yaml);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return nullptr;
  config = std::move(*file);
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> process =
      TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen",
                              "127.0.0.1:0", "--config", config->path()});
  EXPECT_TRUE(process.ok()) << process.status();
  return process.ok() ? std::move(*process) : nullptr;
}

// Keeps `target` ShouldThrottle calls in flight on one channel (callback API)
// until Stop(); records each call's start time and final status.
class LoadGenerator {
 public:
  LoadGenerator(const std::string& address, int target) : target_(target) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stub_ = v1::ThrottleService::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }

  ~LoadGenerator() {
    Stop();
    WaitIdle(std::chrono::seconds(20));
  }

  void Start() {
    for (int i = 0; i < target_; ++i) Issue();
  }

  // No new calls after this; calls in flight still finish.
  void Stop() { stopping_.store(true); }

  // Waits until no call is in flight; false on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(
                                    +[](int* n) { return *n == 0; }, &in_flight_),
                                absl::FromChrono(timeout));
  }

  struct Outcome {
    Clock::time_point started;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Outcome> outcomes() {
    absl::MutexLock lock(&mu_);
    return outcomes_;
  }

 private:
  struct Call {
    grpc::ClientContext context;
    v1::ShouldThrottleRequest request;
    v1::ShouldThrottleResponse response;
    Clock::time_point started;
  };

  void Issue() {
    if (stopping_.load()) return;
    auto* call = new Call;
    call->request.set_identifier(absl::StrCat("load-", counter_.fetch_add(1) % 1000));
    call->request.set_throttle_uid("load");
    call->request.mutable_spec()->set_limit(1'000'000'000);
    call->request.mutable_spec()->set_period_ms(1000);
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(10));
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
    }
    call->started = Clock::now();
    stub_->async()->ShouldThrottle(
        &call->context, &call->request, &call->response,
        [this, call](grpc::Status status) {
          {
            absl::MutexLock lock(&mu_);
            outcomes_.push_back(
                {call->started, status.error_code(), status.error_message()});
          }
          delete call;
          // Keep the load up while calls succeed.
          if (status.ok()) Issue();
          absl::MutexLock lock(&mu_);
          --in_flight_;
        });
  }

  const int target_;
  std::unique_ptr<v1::ThrottleService::Stub> stub_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> counter_{0};
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

class LifecycleTest : public ::testing::Test {};

// Verifies every call started before SIGTERM is answered OK (none CANCELLED)
// while a client keeps 32 calls in flight on the memory backend; repeated
// because the race it guards against is intermittent.
TEST_F(LifecycleTest, SigtermAnswersEveryCallStartedBeforeIt) {
  constexpr int kRounds = 10;
  constexpr int kInFlight = 32;
  int rounds_failed = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::optional<TempFile> config;
    std::unique_ptr<TraffikdProcess> process =
        StartWithConfig("shutdown_grace: 10s\n", config);
    ASSERT_NE(process, nullptr);
    LoadGenerator load(process->grpc_address(), kInFlight);
    load.Start();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const Clock::time_point signalled = Clock::now();
    ASSERT_TRUE(process->SendSignal(SIGTERM));
    const std::optional<int> exit_code = process->WaitExit(std::chrono::seconds(12));
    load.Stop();
    ASSERT_TRUE(load.WaitIdle(std::chrono::seconds(12)));
    ASSERT_TRUE(exit_code.has_value()) << process->StderrText();
    EXPECT_EQ(*exit_code, 0) << process->StderrText();

    int before_ok = 0, before_failed = 0, after = 0;
    std::map<grpc::StatusCode, int> after_codes;
    std::string first_failure;
    for (const LoadGenerator::Outcome& o : load.outcomes()) {
      if (o.started >= signalled) {
        ++after;
        ++after_codes[o.code];
        continue;
      }
      if (o.code == grpc::StatusCode::OK) {
        ++before_ok;
      } else {
        if (before_failed++ == 0) {
          first_failure = absl::StrCat("code ", o.code, " '", o.message, "'");
        }
      }
    }
    EXPECT_GT(before_ok, kInFlight) << "round " << round << ": no load before SIGTERM";
    EXPECT_EQ(before_failed, 0)
        << "round " << round << ": " << before_failed << " of "
        << before_ok + before_failed
        << " calls started before SIGTERM failed; first: " << first_failure;
    if (before_failed > 0) ++rounds_failed;
    std::string after_text;
    for (const auto& [code, n] : after_codes)
      absl::StrAppend(&after_text, " ", code, ":", n);
    std::printf("round %d: %d ok before SIGTERM, %d failed; %d after (code:count%s)\n",
                round, before_ok, before_failed, after, after_text.c_str());
  }
  EXPECT_EQ(rounds_failed, 0) << rounds_failed << " of " << kRounds << " rounds failed";
}

// A config whose /metrics page is several MB (one decision series per
// tenant x throttle x result), so a client that does not read it fills the
// socket buffers and the server's write blocks.
std::string LargeMetricsConfig() {
  std::string yaml = "shutdown_grace: 1s\nthrottles:\n";
  for (int t = 0; t < 400; ++t) {
    absl::StrAppend(&yaml, "  - uid: throttle-with-a-long-name-", t,
                    "\n    limit: 10\n    period: 1h\n");
  }
  yaml += "tenants:\n  - name: default\n";
  for (int t = 0; t < 60; ++t) {
    absl::StrAppend(&yaml, "  - name: tenant-with-a-long-name-", t, "\n");
  }
  return yaml;
}

// Connects to 127.0.0.1:port with a tiny receive buffer; -1 on failure.
int ConnectTinyWindow(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Verifies SIGTERM exits within shutdown_grace + 2 s while a /metrics client
// has asked for the (large) page and never reads it.
TEST_F(LifecycleTest, SigtermExitsWhileMetricsClientRefusesToRead) {
  std::optional<TempFile> config;
  std::unique_ptr<TraffikdProcess> process =
      StartWithConfig(LargeMetricsConfig(), config);
  ASSERT_NE(process, nullptr);
  ASSERT_GT(process->metrics_port(), 0);
  const absl::StatusOr<HttpResponse> page = HttpGet(process->metrics_port(), "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_GT(page->body.size(), 4u << 20) << "the page must exceed the socket buffers";

  const int stuck = ConnectTinyWindow(process->metrics_port());
  ASSERT_GE(stuck, 0);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(stuck, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the write blocks

  const Clock::time_point signalled = Clock::now();
  ASSERT_TRUE(process->SendSignal(SIGTERM));
  const std::optional<int> exit_code = process->WaitExit(std::chrono::seconds(3));
  ::close(stuck);
  ASSERT_TRUE(exit_code.has_value())
      << "still running 3 s after SIGTERM (shutdown_grace 1 s):\n"
      << process->StderrText();
  EXPECT_EQ(*exit_code, 0) << process->StderrText();
  EXPECT_LT(Clock::now() - signalled, std::chrono::seconds(3));
}

// Verifies --check-config refuses an out-of-range duration with the file,
// line, column, field and accepted range, and exits 1.
TEST_F(LifecycleTest, CheckConfigRefusesOutOfRangeDuration) {
  absl::StatusOr<TempFile> config =
      TempFile::Create("memory:\n  sweep_interval: 106800d\n");
  ASSERT_TRUE(config.ok()) << config.status();
  const RunResult result = RunTraffikd({"--check-config", "--config", config->path()});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_THAT(
      result.output,
      ::testing::HasSubstr(absl::StrCat(
          config->path(),
          ":2:19: memory.sweep_interval: duration '106800d' is out of range: must be "
          "0 (off) or 100ms..1h")));
}

}  // namespace
}  // namespace traffik::e2e
