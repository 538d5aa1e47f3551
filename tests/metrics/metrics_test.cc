#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/http_exposer.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Sends `request` to 127.0.0.1:port and returns the whole response.
std::string Exchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  ::send(fd, request.data(), request.size(), 0);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

class HttpExposerTest : public ::testing::Test {};

// Verifies GET /metrics answers 200 with the rendered text, on a chosen port.
TEST_F(HttpExposerTest, ServesMetrics) {
  auto exposer = HttpExposer::Start("127.0.0.1:0", [] { return std::string("up 1\n"); });
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  ASSERT_GT((*exposer)->port(), 0);
  const std::string resp =
      Exchange((*exposer)->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(resp, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(resp, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(resp, HasSubstr("\r\n\r\nup 1\n"));
}

// Verifies other paths get 404 and other methods 405.
TEST_F(HttpExposerTest, OtherPathsAndMethods) {
  auto exposer = HttpExposer::Start("127.0.0.1:0", [] { return std::string("up 1\n"); });
  ASSERT_TRUE(exposer.ok());
  EXPECT_THAT(Exchange((*exposer)->port(), "GET / HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Exchange((*exposer)->port(), "POST /metrics HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(Exchange((*exposer)->port(), "garbage\r\n\r\n"),
              StartsWith("HTTP/1.1 400"));
}

// Verifies a taken port and a malformed address are clear startup errors.
TEST_F(HttpExposerTest, BindErrors) {
  auto first = HttpExposer::Start("127.0.0.1:0", [] { return std::string(); });
  ASSERT_TRUE(first.ok());
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  auto second = HttpExposer::Start(taken, [] { return std::string(); });
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(taken));
  EXPECT_EQ(HttpExposer::Start("nonsense", [] { return std::string(); }).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      HttpExposer::Start("127.0.0.1:99999", [] { return std::string(); }).status().code(),
      absl::StatusCode::kInvalidArgument);
}

class MetricsTest : public ::testing::Test {
 protected:
  Metrics metrics_;
};

// Verifies the series carry HELP/TYPE and follow naming conventions.
TEST_F(MetricsTest, RendersSeries) {
  DecisionCounters c = metrics_.ForThrottle("gold", "api");
  c.allowed->Increment();
  metrics_.CountError(absl::StatusCode::kNotFound);
  metrics_.ObserveLatency(Rpc::kShouldThrottle, 30'000);  // 30 us
  metrics_.AddBucketSource(
      "memory", [] { return uint64_t{7}; }, [] { return uint64_t{2}; });
  const std::string text = metrics_.RenderText();
  EXPECT_THAT(text, HasSubstr("# TYPE traffik_decisions_total counter"));
  EXPECT_THAT(
      text,
      HasSubstr("traffik_decisions_total{result=\"allowed\",tenant=\"gold\",throttle="
                "\"api\"} 1"));
  EXPECT_THAT(text, HasSubstr("traffik_errors_total{code=\"NOT_FOUND\"} 1"));
  EXPECT_THAT(text, HasSubstr("# TYPE traffik_decision_duration_seconds histogram"));
  EXPECT_THAT(
      text,
      HasSubstr("traffik_decision_duration_seconds_bucket{rpc=\"ShouldThrottle\",le="
                "\"5e-05\"} 1"));
  EXPECT_THAT(text, HasSubstr("traffik_buckets{backend=\"memory\"} 7"));
  EXPECT_THAT(text, HasSubstr("traffik_bucket_evictions_total{backend=\"memory\"} 2"));
  EXPECT_THAT(text, Not(HasSubstr("exposer_")));
}

// Verifies histogram buckets are cumulative and the sum is in seconds.
TEST_F(MetricsTest, HistogramCumulative) {
  metrics_.ObserveLatency(Rpc::kShouldThrottleBatch, 2'000'000);      // 2 ms
  metrics_.ObserveLatency(Rpc::kShouldThrottleBatch, 2'000'000'000);  // 2 s
  const std::string text = metrics_.RenderText();
  EXPECT_THAT(
      text,
      HasSubstr("traffik_decision_duration_seconds_bucket{rpc=\"ShouldThrottleBatch\","
                "le=\"0.001\"} 0"));
  EXPECT_THAT(
      text,
      HasSubstr("traffik_decision_duration_seconds_bucket{rpc=\"ShouldThrottleBatch\","
                "le=\"0.0025\"} 1"));
  EXPECT_THAT(
      text,
      HasSubstr("traffik_decision_duration_seconds_bucket{rpc=\"ShouldThrottleBatch\","
                "le=\"+Inf\"} 2"));
  EXPECT_THAT(
      text,
      HasSubstr("traffik_decision_duration_seconds_sum{rpc=\"ShouldThrottleBatch\"} "
                "2.002"));
}

}  // namespace
}  // namespace traffik
