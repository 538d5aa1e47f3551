// A bounded soak of the real traffikd (issue 11, "Proof that it stays fixed"):
// steady load on a memory tenant and a Redis tenant while Redis is killed and
// restarted, and, in parallel, a hostile client that repeats the attacks the
// issue found (identifier floods, inline-spec refills, non-UTF-8 fields, huge
// tenant names, slow and half-open /metrics connections).
//
// What must hold for the whole run:
//   - traffikd never crashes and exits 0 on SIGTERM within shutdown_grace + 2 s;
//   - every answer is valid (numbers within the bucket's bounds; error codes only
//     those the attack can legitimately get);
//   - no key is allowed more than its exact bucket admits: for a bucket of L
//     tokens per P ms observed over E ms, at most L + floor(E * L / P) hits
//     (plus L per Redis restart for the Redis tenant, whose restart forgets
//     state by design: the harness' Redis has no persistence);
//   - a /metrics scrape succeeds within 3 s throughout;
//   - traffikd's RSS stays within the memory budget + a fixed overhead and is
//     flat after warm-up;
//   - stderr stays small (caller-triggered log lines are rate-limited).
//
// Duration: TRAFFIK_SOAK_SECONDS (default 120). Figures are printed at the end.

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sanitizers.h"
#include "e2e/traffikd_process.h"
#include "gtest/gtest.h"
#include "redis/redis_harness.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::traffik::testing_redis::RedisServer;
using SteadyTime = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kSteadyLimit = 40;       // the configured `steady` throttle
constexpr int64_t kSteadyPeriodMs = 2'000;  // refills 20 tokens/s
constexpr uint64_t kInlineLimit = 10;       // the victim's inline spec
constexpr int64_t kInlinePeriodMs = 3'000;
constexpr int kKeysPerTenant = 8;
constexpr uint64_t kMaxBytes = 32ull << 20;  // memory.max_bytes
// RSS a traffikd has besides its bucket store (binary, gRPC, threads, arenas).
constexpr uint64_t kFixedOverheadBytes = 96ull << 20;

// Sanitizer builds inflate RSS (shadow memory, quarantine): the memory bound
// is checked in plain builds only; everything else holds under them too.
constexpr bool kSanitized = traffik::testing::kUnderSanitizer;

int SoakSeconds() {
  const char* env = std::getenv("TRAFFIK_SOAK_SECONDS");
  int seconds = 120;
  if (env != nullptr && absl::SimpleAtoi(env, &seconds) && seconds >= 10) return seconds;
  return 120;
}

int64_t NowMs() {
  return std::chrono::duration_cast<milliseconds>(SteadyTime::now().time_since_epoch())
      .count();
}

std::unique_ptr<v1::ThrottleService::Stub> NewStub(const std::string& address, int tag) {
  grpc::ChannelArguments args;
  args.SetInt("traffik.soak.channel", tag);  // one connection per stub
  args.SetMaxSendMessageSize(8 << 20);
  return v1::ThrottleService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

grpc::Status Call(v1::ThrottleService::Stub& stub,
                  const v1::ShouldThrottleRequest& request,
                  v1::ShouldThrottleResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return stub.ShouldThrottle(&context, request, response);
}

// Counts answers by gRPC code name, thread-safe.
class CodeCounts {
 public:
  void Add(const std::string& who, grpc::StatusCode code) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[absl::StrCat(who, " ", CodeName(code))];
  }
  std::string Render() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [k, v] : counts_) absl::StrAppend(&out, "  ", k, ": ", v, "\n");
    return out;
  }
  // gRPC and absl share the canonical code numbering and names.
  static std::string CodeName(grpc::StatusCode code) {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> counts_;
};

// One bucket the steady load watches: how many hits it allowed and the span
// over which they were decided.
struct Watched {
  std::string tenant;
  std::string uid;
  std::string identifier;
  bool inline_spec = false;
  uint64_t limit = 0;
  int64_t period_ms = 0;
  std::atomic<uint64_t> allowed{0};
  std::atomic<int64_t> first_send_ms{0};
  std::atomic<int64_t> last_receive_ms{0};
};

// Reads a process's resident set size in bytes (0 when it cannot).
uint64_t RssBytes(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    uint64_t kb = 0;
    if (line.rfind("VmRSS:", 0) == 0 &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(
                             absl::string_view(line).substr(6, line.size() - 6 - 3)),
                         &kb)) {
      return kb * 1024;
    }
  }
  return 0;
}

int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string Config(const std::string& redis_url) {
  return absl::StrFormat(R"(listen: "127.0.0.1:0"
metrics_listen: "127.0.0.1:0"
shutdown_grace: 5s
default_tenant: victim
throttles:
  - uid: steady
    limit: %d
    period: %dms
tenants:
  - name: victim
    backend: memory
  - name: hostile
    backend: memory
  - name: shared
    backend: %s
    on_backend_error: deny
    redis:
      timeout: 200ms
memory:
  max_bytes: %d
  sweep_interval: 1s
)",
                         kSteadyLimit, kSteadyPeriodMs, redis_url, kMaxBytes);
}

// Verifies that under steady load, Redis restarts and every hostile pattern of
// issue 11 at once, traffikd stays up, answers validly, never exceeds an exact
// bucket, keeps /metrics scrapeable and its memory bounded.
TEST(SoakTest, HostileLoadWhileRedisRestarts) {
  const int seconds = SoakSeconds();
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  absl::StatusOr<TempFile> config = TempFile::Create(Config((*redis)->url()));
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> started =
      TraffikdProcess::Start({"--config", config->path()});
  ASSERT_TRUE(started.ok()) << started.status();
  TraffikdProcess& traffikd = **started;
  const std::string address = traffikd.grpc_address();
  const int metrics_port = traffikd.metrics_port();

  // The watched buckets: the configured throttle on the memory and the Redis
  // tenant, and an inline spec on the memory tenant (the refill target).
  std::vector<std::unique_ptr<Watched>> watched;
  for (int k = 0; k < kKeysPerTenant; ++k) {
    for (const char* tenant : {"victim", "shared"}) {
      auto w = std::make_unique<Watched>();
      w->tenant = tenant;
      w->uid = "steady";
      w->identifier = absl::StrCat("user:", k);
      w->limit = kSteadyLimit;
      w->period_ms = kSteadyPeriodMs;
      watched.push_back(std::move(w));
    }
    auto w = std::make_unique<Watched>();
    w->tenant = "victim";
    w->uid = "inl";
    w->identifier = absl::StrCat("user:", k);
    w->inline_spec = true;
    w->limit = kInlineLimit;
    w->period_ms = kInlinePeriodMs;
    watched.push_back(std::move(w));
  }

  std::atomic<bool> stop{false};
  std::atomic<int> redis_restarts{0};
  std::atomic<uint64_t> calls{0};
  CodeCounts codes;
  std::mutex failures_mu;
  std::vector<std::string> failures;
  auto fail = [&](std::string what) {
    std::lock_guard<std::mutex> lock(failures_mu);
    if (failures.size() < 20) failures.push_back(std::move(what));
  };

  std::vector<std::thread> threads;
  // Steady load: 3 threads walk the watched buckets.
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      auto stub = NewStub(address, 100 + t);
      size_t i = static_cast<size_t>(t);
      while (!stop.load()) {
        Watched& w = *watched[i++ % watched.size()];
        v1::ShouldThrottleRequest request;
        request.set_tenant(w.tenant);
        request.set_throttle_uid(w.uid);
        request.set_identifier(w.identifier);
        if (w.inline_spec) {
          request.mutable_spec()->set_limit(w.limit);
          request.mutable_spec()->set_period_ms(static_cast<uint64_t>(w.period_ms));
        }
        v1::ShouldThrottleResponse response;
        const int64_t sent = NowMs();
        int64_t expected = 0;
        w.first_send_ms.compare_exchange_strong(expected, sent);
        const grpc::Status status = Call(*stub, request, &response);
        calls.fetch_add(1);
        codes.Add(absl::StrCat("steady/", w.tenant), status.error_code());
        if (!status.ok()) {
          // Only the Redis tenant may fail, and only as an outage.
          if (w.tenant != "shared" ||
              status.error_code() != grpc::StatusCode::UNAVAILABLE) {
            fail(absl::StrCat("steady ", w.tenant, "/", w.uid, ": ",
                              CodeCounts::CodeName(status.error_code()), " ",
                              status.error_message().substr(0, 200)));
          }
          continue;
        }
        if (response.limit() != w.limit || response.remaining() >= w.limit ||
            response.reset_ms() > static_cast<uint64_t>(w.period_ms) ||
            response.wait_ms() > static_cast<uint64_t>(w.period_ms)) {
          fail(absl::StrCat("invalid answer for ", w.tenant, "/", w.uid, ": limit ",
                            response.limit(), " remaining ", response.remaining(),
                            " reset_ms ", response.reset_ms(), " wait_ms ",
                            response.wait_ms()));
        }
        if (response.wait_ms() == 0) w.allowed.fetch_add(1);
        w.last_receive_ms.store(NowMs());
      }
    });
  }

  // Hostile 1+2: unique 4096-byte identifiers with a long period on the
  // hostile memory tenant, past its share of the budget.
  std::atomic<uint64_t> flood_ok{0}, flood_exhausted{0};
  threads.emplace_back([&] {
    auto stub = NewStub(address, 200);
    uint64_t n = 0;
    std::string identifier(4096, 'x');
    while (!stop.load()) {
      const std::string id = absl::StrCat(n++, ":");
      identifier.replace(0, id.size(), id);
      v1::ShouldThrottleRequest request;
      request.set_tenant("hostile");
      request.set_throttle_uid("flood");
      request.set_identifier(identifier);
      request.mutable_spec()->set_limit(1000);
      request.mutable_spec()->set_period_ms(86'400'000);
      v1::ShouldThrottleResponse response;
      const grpc::Status status = Call(*stub, request, &response);
      calls.fetch_add(1);
      codes.Add("flood", status.error_code());
      if (status.ok()) {
        flood_ok.fetch_add(1);
      } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        flood_exhausted.fetch_add(1);
      } else {
        fail(absl::StrCat("flood: ", CodeCounts::CodeName(status.error_code()), " ",
                          status.error_message().substr(0, 200)));
      }
    }
  });

  // Hostile 3: the victim's inline buckets with a huge spec (a refill attempt
  // before the fix). Hostile 4: non-UTF-8 tenant and uid, binary identifier.
  // Hostile 5: a 2 MB tenant name.
  threads.emplace_back([&] {
    auto stub = NewStub(address, 300);
    uint64_t n = 0;
    const std::string huge_tenant(2 << 20, 't');
    while (!stop.load()) {
      v1::ShouldThrottleRequest request;
      v1::ShouldThrottleResponse response;
      grpc::StatusCode want = grpc::StatusCode::OK;
      switch (n++ % 5) {
        case 0:
        case 1:
          request.set_tenant("victim");
          request.set_throttle_uid("inl");
          request.set_identifier(absl::StrCat("user:", n % kKeysPerTenant));
          request.mutable_spec()->set_limit(uint64_t{1} << 53);
          request.mutable_spec()->set_period_ms(1);
          break;
        case 2:
          request.set_tenant("vic\xfftim");
          request.set_throttle_uid("steady");
          request.set_identifier("user:0");
          want = grpc::StatusCode::INVALID_ARGUMENT;
          break;
        case 3:
          request.set_tenant("hostile");
          request.set_throttle_uid(
              "st\xc3\x28"
              "ady");
          request.set_identifier("\xff\xfe\n");
          want = grpc::StatusCode::INVALID_ARGUMENT;
          break;
        case 4:
          request.set_tenant(huge_tenant);
          request.set_throttle_uid("steady");
          request.set_identifier("user:0");
          want = grpc::StatusCode::INVALID_ARGUMENT;
          break;
      }
      const int64_t start = NowMs();
      const grpc::Status status = Call(*stub, request, &response);
      const int64_t took = NowMs() - start;
      calls.fetch_add(1);
      codes.Add("hostile", status.error_code());
      if (status.error_code() != want) {
        fail(absl::StrCat("hostile case ", (n - 1) % 5, ": got ",
                          CodeCounts::CodeName(status.error_code()), " want ",
                          CodeCounts::CodeName(want)));
      }
      if (status.error_message().size() > 1024) {
        fail(absl::StrCat("hostile case ", (n - 1) % 5, ": message of ",
                          status.error_message().size(), " bytes"));
      }
      if (took > 1000)
        fail(absl::StrCat("hostile case ", (n - 1) % 5, " took ", took, " ms"));
    }
  });

  // Hostile 6: a slow sender, 100 half-open connections and a client that
  // asks for /metrics and never reads, renewed as the server closes them.
  threads.emplace_back([&] {
    std::vector<int> fds;
    int64_t last_trickle = 0;
    int slow = -1;
    while (!stop.load()) {
      for (auto it = fds.begin(); it != fds.end();) {
        char byte;
        const ssize_t n = recv(*it, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
        if (n == 0) {  // closed by the server: open another
          close(*it);
          it = fds.erase(it);
        } else {
          ++it;
        }
      }
      while (fds.size() < 100) {
        const int fd = ConnectLoopback(metrics_port);
        if (fd < 0) break;
        fds.push_back(fd);
      }
      if (slow < 0) {
        slow = ConnectLoopback(metrics_port);
        if (slow >= 0) {
          // A reader that never reads: ask for the page, keep the socket.
          const char request[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
          (void)send(slow, request, sizeof(request) - 1, MSG_NOSIGNAL);
        }
      }
      if (NowMs() - last_trickle >= 1500 && !fds.empty()) {
        (void)send(fds.front(), "G", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        last_trickle = NowMs();
      }
      std::this_thread::sleep_for(milliseconds(200));
    }
    for (int fd : fds) close(fd);
    if (slow >= 0) close(slow);
  });

  // Scrapes: each must succeed within 3 s.
  std::atomic<int> scrapes{0};
  threads.emplace_back([&] {
    while (!stop.load()) {
      const int64_t start = NowMs();
      absl::StatusOr<HttpResponse> page =
          HttpGet(metrics_port, "/metrics", milliseconds(3000));
      const int64_t took = NowMs() - start;
      if (!page.ok() || page->status != 200 || took > 3000) {
        fail(absl::StrCat("scrape failed after ", took, " ms: ",
                          page.ok() ? absl::StrCat("HTTP ", page->status)
                                    : std::string(page.status().message())));
      } else {
        scrapes.fetch_add(1);
      }
      std::this_thread::sleep_for(milliseconds(2000));
    }
  });

  // The main thread: restart Redis every ~15 s and sample RSS.
  std::vector<std::pair<int64_t, uint64_t>> rss;  // (ms since start, bytes)
  const int64_t begin = NowMs();
  int64_t next_restart = begin + 15'000;
  while (NowMs() - begin < seconds * 1000LL) {
    std::this_thread::sleep_for(milliseconds(500));
    rss.emplace_back(NowMs() - begin, RssBytes(traffikd.pid()));
    if (!traffikd.IsRunning()) {
      fail("traffikd died");
      break;
    }
    if (NowMs() >= next_restart) {
      (*redis)->Kill();
      std::this_thread::sleep_for(milliseconds(1000));
      if (absl::Status s = (*redis)->Restart(); !s.ok())
        fail(absl::StrCat("redis: ", s.ToString()));
      redis_restarts.fetch_add(1);
      next_restart = NowMs() + 15'000;
    }
  }
  stop.store(true);
  for (std::thread& t : threads) t.join();

  // Exactness per watched bucket.
  for (const auto& w : watched) {
    const int64_t span = w->last_receive_ms.load() - w->first_send_ms.load() + 1;
    const uint64_t resets = w->tenant == "shared" ? redis_restarts.load() : 0;
    const uint64_t bound =
        (resets + 1) * w->limit +
        static_cast<uint64_t>(span) * w->limit / static_cast<uint64_t>(w->period_ms);
    EXPECT_LE(w->allowed.load(), bound) << w->tenant << "/" << w->uid << "/"
                                        << w->identifier << " over " << span << " ms";
    // Load was steady: each bucket was drained and refilled many times.
    EXPECT_GE(w->allowed.load(), w->limit) << w->tenant << "/" << w->uid;
  }

  // Memory: within the budget + fixed overhead; flat after warm-up (the
  // second half grows by at most 16 MiB over the first half's peak).
  uint64_t max_rss = 0, first_half_max = 0, second_half_max = 0;
  for (const auto& [ms, bytes] : rss) {
    max_rss = std::max(max_rss, bytes);
    if (ms < seconds * 500LL) {
      first_half_max = std::max(first_half_max, bytes);
    } else {
      second_half_max = std::max(second_half_max, bytes);
    }
  }
  if (!kSanitized) {
    EXPECT_LE(max_rss, kMaxBytes + kFixedOverheadBytes);
    EXPECT_LE(second_half_max, first_half_max + (16ull << 20));
  }
  EXPECT_GT(flood_exhausted.load(), 0u) << "the flood never reached the budget";
  EXPECT_GE(scrapes.load(), seconds / 4);

  // Clean stop within shutdown_grace + 2 s.
  const int64_t term = NowMs();
  ASSERT_TRUE(traffikd.SendSignal(SIGTERM));
  const std::optional<int> exit_code = traffikd.WaitExit(milliseconds(7000));
  EXPECT_EQ(exit_code, std::optional<int>(0));
  const int64_t stop_ms = NowMs() - term;
  const std::string log = traffikd.StderrText();
  EXPECT_LT(log.size(), 64u * 1024) << log.substr(0, 4000);

  {
    std::lock_guard<std::mutex> lock(failures_mu);
    for (const std::string& f : failures) ADD_FAILURE() << f;
  }
  std::printf(
      "soak: %d s, %llu calls, %d Redis restarts, %d scrapes, flood ok %llu / "
      "exhausted %llu, max RSS %.1f MiB (first half %.1f, second half %.1f), "
      "SIGTERM to exit %lld ms, stderr %zu bytes\nanswers by code:\n%s",
      seconds, static_cast<unsigned long long>(calls.load()), redis_restarts.load(),
      scrapes.load(), static_cast<unsigned long long>(flood_ok.load()),
      static_cast<unsigned long long>(flood_exhausted.load()), max_rss / 1048576.0,
      first_half_max / 1048576.0, second_half_max / 1048576.0,
      static_cast<long long>(stop_ms), log.size(), codes.Render().c_str());
}

}  // namespace
}  // namespace traffik::e2e
