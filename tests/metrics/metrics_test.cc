#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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
using Clock = std::chrono::steady_clock;

// Connects to 127.0.0.1:port within 1 s (a full backlog must not hang the
// test); -1 on failure. `rcvbuf` > 0 shrinks the receive buffer (a client that
// will not read).
int Connect(int port, int rcvbuf = 0) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  const timeval connect_timeout{1, 0};  // Linux applies SO_SNDTIMEO to connect()
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &connect_timeout, sizeof(connect_timeout));
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

// One scrape with every socket wait bounded by `timeout`: the whole response,
// or what arrived before the timeout.
std::string Scrape(int port, std::chrono::milliseconds timeout) {
  const int fd = Connect(port);
  if (fd < 0) return "connect failed";
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[65536];
  ssize_t n;
  const Clock::time_point deadline = Clock::now() + timeout;
  while (Clock::now() < deadline && (n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// True once the server has closed `fd` (EOF or reset), waiting at most
// `timeout`; reads and drops whatever arrives.
bool ClosedByPeer(int fd, std::chrono::milliseconds timeout) {
  timeval tv{0, 100'000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const Clock::time_point deadline = Clock::now() + timeout;
  char buf[65536];
  while (Clock::now() < deadline) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
  }
  return false;
}

// A client that sends a request head one byte every `interval` on its own
// thread until destroyed.
class Trickler {
 public:
  Trickler(int port, std::chrono::milliseconds interval) : fd_(Connect(port)) {
    thread_ = std::thread([this, interval] {
      const std::string head =
          "GET /metrics HTTP/1.1\r\nHost: a-very-slow-client\r\n\r\n";
      for (char c : head) {
        if (::send(fd_, &c, 1, MSG_NOSIGNAL) != 1) return;
        std::unique_lock<std::mutex> lock(mu_);
        if (cv_.wait_for(lock, interval, [this] { return stop_; })) return;
      }
    });
  }
  ~Trickler() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    ::close(fd_);
  }

 private:
  const int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Sends a scrape request on a connection with a tiny receive window and never
// reads: the server's write blocks once the socket buffers are full.
int StuckReader(int port) {
  const int fd = Connect(port, 4096);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  return fd;
}

// A page larger than any socket buffer.
std::string BigPage() { return std::string(24 << 20, 'x'); }

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

// Verifies requests claiming an HTTP version other than 1.0 or 1.1 (found by
// the /metrics fuzzer: evhttp echoed "HTTP/0.1" and overflowed numbers back)
// get 505, written as HTTP/1.1, and 1.0 is still served in 1.0.
TEST_F(HttpExposerTest, OnlyHttp1Served) {
  auto exposer = HttpExposer::Start("127.0.0.1:0", [] { return std::string("up 1\n"); });
  ASSERT_TRUE(exposer.ok());
  const int port = (*exposer)->port();
  EXPECT_THAT(Exchange(port, "GET /metrics HTTP/0.1\r\n\r\n"),
              StartsWith("HTTP/1.1 505 HTTP Version Not Supported"));
  EXPECT_THAT(Exchange(port, "HEAD /metrics HTTP/1.99999999999999999990\r\n\r\n"),
              StartsWith("HTTP/1.1 505"));
  // evhttp itself refuses major versions above 1.
  EXPECT_THAT(Exchange(port, "GET /metrics HTTP/2.0\r\n\r\n"),
              StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(Exchange(port, "GET /metrics HTTP/1.0\r\n\r\n"),
              StartsWith("HTTP/1.0 200 OK"));
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

// Verifies a scrape succeeds within 3 s while a client sends its head one
// byte every 1.5 s and 100 half-open connections are open.
TEST_F(HttpExposerTest, ScrapeSucceedsBesideSlowAndHalfOpenClients) {
  auto exposer = HttpExposer::Start("127.0.0.1:0", [] { return std::string("up 1\n"); });
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  Trickler slow(port, std::chrono::milliseconds(1500));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::vector<int> half_open;
  for (int i = 0; i < 100; ++i) half_open.push_back(Connect(port));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const Clock::time_point start = Clock::now();
  const std::string resp = Scrape(port, std::chrono::milliseconds(3000));
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(3000));
  EXPECT_THAT(resp, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(resp, HasSubstr("\r\n\r\nup 1\n"));
  for (int fd : half_open) {
    if (fd >= 0) ::close(fd);
  }
}

// Verifies a client that never reads a large answer does not block other
// scrapes.
TEST_F(HttpExposerTest, NonReadingClientDoesNotBlockScrapes) {
  auto exposer = HttpExposer::Start("127.0.0.1:0", BigPage);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  const int stuck = StuckReader(port);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string resp = Scrape(port, std::chrono::milliseconds(3000));
  EXPECT_THAT(resp, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(resp, HasSubstr("Content-Length: 25165824"));
  EXPECT_GE(resp.size(), size_t{24 << 20});
  ::close(stuck);
}

// Verifies the destructor returns promptly while a client that never reads a
// large answer is connected.
TEST_F(HttpExposerTest, DestructorDoesNotWaitOnClient) {
  auto exposer = HttpExposer::Start("127.0.0.1:0", BigPage);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int stuck = StuckReader((*exposer)->port());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::unique_ptr<HttpExposer> owned = *std::move(exposer);
  const Clock::time_point start = Clock::now();
  std::future<void> destroyed =
      std::async(std::launch::async, [&owned] { owned.reset(); });
  const bool prompt =
      destroyed.wait_for(std::chrono::seconds(1)) == std::future_status::ready;
  EXPECT_TRUE(prompt) << "destructor still waiting after 1 s";
  ::close(stuck);  // unblocks a destructor that waits on the client
  destroyed.wait();
  if (prompt) {
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
  }
}

// Verifies the request head must arrive within head_timeout however slowly
// its bytes trickle in, and the answer must be written within write_timeout.
TEST_F(HttpExposerTest, HeadAndWriteDeadlines) {
  HttpExposerOptions options;
  options.head_timeout = std::chrono::milliseconds(500);
  options.write_timeout = std::chrono::milliseconds(500);
  auto exposer = HttpExposer::Start("127.0.0.1:0", BigPage, options);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();

  const int slow = Connect(port);
  const Clock::time_point start = Clock::now();
  bool closed = false;
  for (char c : std::string("GET /metrics HTTP/1.1\r\nHost: slow\r\n")) {
    if (::send(slow, &c, 1, MSG_NOSIGNAL) != 1) {
      closed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (Clock::now() - start > std::chrono::milliseconds(2000)) break;
  }
  EXPECT_TRUE(closed || ClosedByPeer(slow, std::chrono::milliseconds(1000)));
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(2000));
  ::close(slow);

  const int stuck = StuckReader(port);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the deadline
  // Reading now gets what was buffered, then the reset: never the whole page.
  size_t received = 0;
  char buf[65536];
  ssize_t n;
  timeval tv{1, 0};
  ::setsockopt(stuck, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while ((n = ::recv(stuck, buf, sizeof(buf), 0)) > 0) received += static_cast<size_t>(n);
  EXPECT_LT(received, size_t{24 << 20});
  EXPECT_TRUE(n == 0 || errno == ECONNRESET) << "errno " << errno;
  ::close(stuck);
}

// Verifies at the connection cap the oldest idle connection (nothing sent,
// past idle_grace) is closed so that a scrape gets in.
TEST_F(HttpExposerTest, CapClosesOldestWaitingConnection) {
  HttpExposerOptions options;
  options.max_connections = 4;
  options.idle_grace = std::chrono::milliseconds(0);
  auto exposer = HttpExposer::Start(
      "127.0.0.1:0", [] { return std::string("up 1\n"); }, options);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    idle.push_back(Connect(port));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(Scrape(port, std::chrono::milliseconds(3000)),
              StartsWith("HTTP/1.1 200 OK"));
  EXPECT_TRUE(ClosedByPeer(idle[0], std::chrono::milliseconds(1000)));
  EXPECT_FALSE(ClosedByPeer(idle[3], std::chrono::milliseconds(200)));
  for (int fd : idle) ::close(fd);
}

// Verifies scrapes keep succeeding at the connection cap while clients that
// never send a head reconnect as fast as the server closes them: a scrape
// whose head is already waiting in its socket is never the one closed, even
// when it is accepted in the same batch as many idle connections.
TEST_F(HttpExposerTest, ScrapesSurviveIdleConnectionChurnAtTheCap) {
  HttpExposerOptions options;
  options.max_connections = 8;
  auto exposer = HttpExposer::Start(
      "127.0.0.1:0", [] { return std::string("up 1\n"); }, options);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  std::atomic<bool> stop{false};
  std::vector<std::thread> churners;
  for (int t = 0; t < 2; ++t) {
    churners.emplace_back([&] {
      std::vector<int> fds;
      while (!stop.load()) {
        for (auto it = fds.begin(); it != fds.end();) {
          char byte;
          const ssize_t n = ::recv(*it, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
          if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            ::close(*it);
            it = fds.erase(it);
          } else {
            ++it;
          }
        }
        while (fds.size() < 12) {
          const int fd = Connect(port);
          if (fd < 0) break;
          fds.push_back(fd);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      for (int fd : fds) ::close(fd);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  int failed = 0;
  std::string first_failure;
  for (int i = 0; i < 60; ++i) {
    const std::string resp = Scrape(port, std::chrono::milliseconds(3000));
    if (resp.rfind("HTTP/1.1 200 OK", 0) != 0) {
      if (failed++ == 0) first_failure = resp.empty() ? "(closed, no answer)" : resp;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop.store(true);
  for (std::thread& t : churners) t.join();
  EXPECT_EQ(failed, 0) << "first failure: " << first_failure.substr(0, 200);
}

// Verifies the pure routing of method and request-target.
TEST(RouteMetricsRequestTest, Routes) {
  EXPECT_EQ(RouteMetricsRequest("GET", "/metrics").status, 200);
  EXPECT_TRUE(RouteMetricsRequest("GET", "/metrics?x=1").serve_metrics);
  EXPECT_TRUE(RouteMetricsRequest("HEAD", "/metrics").head_only);
  EXPECT_EQ(RouteMetricsRequest("GET", "http://h:9/metrics").status, 200);
  EXPECT_EQ(RouteMetricsRequest("GET", "HTTP://h").status, 404);
  EXPECT_EQ(RouteMetricsRequest("POST", "/metrics").status, 405);
  EXPECT_EQ(RouteMetricsRequest("GET", "/").status, 404);
  EXPECT_EQ(RouteMetricsRequest("GET", "/metrics/").status, 404);
  EXPECT_EQ(RouteMetricsRequest("", "").status, 404);
  EXPECT_EQ(RouteMetricsRequest("get", "/metrics").status, 405);
  EXPECT_EQ(RouteMetricsRequest(std::string_view("G\0T", 3), "/metrics\xff").status, 404);
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
