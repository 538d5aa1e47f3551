// End-to-end tests of traffikd on the Redis backend: each test starts real
// redis-server processes (tests/redis/redis_harness.h) and real traffikd
// processes on loopback port 0, talks gRPC to traffikd and inspects Redis
// directly with the harness.
//
// Throttles use long periods (1h) so refill never interferes. Before a test
// relies on Redis, it waits until traffikd has connected (traffikd connects in
// the background; until then a deny tenant fails with UNAVAILABLE).

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "app/health_client.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "redis/redis_harness.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::testing::HasSubstr;
using ::traffik::testing_redis::KeySlot;
using ::traffik::testing_redis::RedisCluster;
using ::traffik::testing_redis::RedisServer;
using ::traffik::testing_redis::RedisServerTls;
using ::traffik::testing_redis::TestPki;

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int64_t kHourMs = 3'600'000;
constexpr auto kRpcTimeout = std::chrono::seconds(5);
constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr auto kHealthTimeout = std::chrono::milliseconds(2000);

// The result of one RPC, with its wall-clock duration.
template <typename Response>
struct Reply {
  grpc::Status status;
  Response response;
  milliseconds elapsed{0};
};

v1::ShouldThrottleRequest Request(const std::string& identifier, const std::string& uid,
                                  const std::string& tenant = "") {
  v1::ShouldThrottleRequest request;
  request.set_identifier(identifier);
  request.set_throttle_uid(uid);
  request.set_tenant(tenant);
  return request;
}

// An inline-spec request (for probes that must not touch configured buckets).
v1::ShouldThrottleRequest InlineRequest(const std::string& identifier, uint64_t limit,
                                        const std::string& tenant,
                                        const std::string& uid = "probe") {
  v1::ShouldThrottleRequest request = Request(identifier, uid, tenant);
  request.mutable_spec()->set_limit(limit);
  request.mutable_spec()->set_period_ms(kHourMs);
  return request;
}

std::unique_ptr<v1::ThrottleService::Stub> NewStub(const std::string& address,
                                                   int channel_tag = 0) {
  grpc::ChannelArguments channel_args;
  // Distinct arguments give distinct connections (no shared subchannel).
  channel_args.SetInt("traffik.e2e.channel", channel_tag);
  return v1::ThrottleService::NewStub(grpc::CreateCustomChannel(
      address, grpc::InsecureChannelCredentials(), channel_args));
}

Reply<v1::ShouldThrottleResponse> Decide(v1::ThrottleService::Stub& stub,
                                         const v1::ShouldThrottleRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  Reply<v1::ShouldThrottleResponse> reply;
  const auto start = Clock::now();
  reply.status = stub.ShouldThrottle(&context, request, &reply.response);
  reply.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  return reply;
}

Reply<v1::ShouldThrottleBatchResponse> DecideBatch(
    v1::ThrottleService::Stub& stub,
    const std::vector<v1::ShouldThrottleRequest>& requests) {
  v1::ShouldThrottleBatchRequest batch;
  for (const auto& request : requests) *batch.add_requests() = request;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  Reply<v1::ShouldThrottleBatchResponse> reply;
  const auto start = Clock::now();
  reply.status = stub.ShouldThrottleBatch(&context, batch, &reply.response);
  reply.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  return reply;
}

std::string Describe(const grpc::Status& status) {
  return absl::StrCat("code ", static_cast<int>(status.error_code()), ": ",
                      status.error_message());
}

// How many times `needle` occurs in `text`.
int CountOccurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// Splits a harness reply rendered as lines (array replies) into a set.
std::set<std::string> Lines(const std::string& text) {
  std::set<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    out.insert(std::string(line));
  }
  return out;
}

// Starts Redis servers and traffikd processes; everything is torn down (on the
// main thread) when the test ends.
class RedisE2eTest : public ::testing::Test {
 protected:
  // Use with ASSERT_NO_FATAL_FAILURE.
  void StartRedis(std::unique_ptr<RedisServer>* out) {
    absl::StatusOr<std::unique_ptr<RedisServer>> server = RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    *out = std::move(*server);
  }

  // Starts traffikd on loopback port 0 with `yaml` as its config file. Use
  // with ASSERT_NO_FATAL_FAILURE.
  void StartTraffikd(const std::string& yaml, TraffikdProcess** out) {
    absl::StatusOr<TempFile> config = TempFile::Create(yaml);
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> process =
        TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen",
                                "127.0.0.1:0", "--config", config->path()});
    ASSERT_TRUE(process.ok()) << process.status();
    configs_.push_back(std::move(*config));
    processes_.push_back(std::move(*process));
    *out = processes_.back().get();
  }

  // Polls a deny tenant with an inline probe until a decision succeeds (traffikd
  // has connected to its Redis), at most `timeout`. Use with
  // ASSERT_NO_FATAL_FAILURE.
  static void WaitUntilDecides(v1::ThrottleService::Stub& stub, const std::string& tenant,
                               const TraffikdProcess& process,
                               milliseconds timeout = kConnectTimeout) {
    const auto deadline = Clock::now() + timeout;
    Reply<v1::ShouldThrottleResponse> reply;
    do {
      reply = Decide(stub, InlineRequest("warmup", 1'000'000, tenant, "warmup"));
      if (reply.status.ok()) return;
      std::this_thread::sleep_for(milliseconds(20));
    } while (Clock::now() < deadline);
    FAIL() << "tenant '" << tenant << "' never decided: " << Describe(reply.status)
           << "\ntraffikd output:\n"
           << process.StderrText();
  }

  // For a fail-open tenant (whose failures look like allowed hits): polls until
  // a limit-1 probe bucket refuses a second hit, which only a bucket actually
  // stored in Redis can do. Use with ASSERT_NO_FATAL_FAILURE.
  static void WaitUntilBackedByRedis(v1::ThrottleService::Stub& stub,
                                     const std::string& tenant,
                                     const TraffikdProcess& process) {
    const auto deadline = Clock::now() + kConnectTimeout;
    int attempt = 0;
    do {
      const auto reply = Decide(stub, InlineRequest("warmup", 1, tenant, "warmup"));
      ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
      if (reply.response.wait_ms() > 0) return;
      if (++attempt > 1) std::this_thread::sleep_for(milliseconds(20));
    } while (Clock::now() < deadline);
    FAIL() << "tenant '" << tenant
           << "' never stored a bucket in Redis\ntraffikd output:\n"
           << process.StderrText();
  }

  std::vector<TempFile> configs_;
  std::vector<std::unique_ptr<TraffikdProcess>> processes_;
};

// ------------------------------------------------------ shared buckets

// Two traffikd replicas on one Redis, one configured throttle of 100 per hour.
// A 5 s Redis command timeout: these tests are about exactness, and under a
// sanitizer on a busy host a coalesced call can take longer than the default
// 250 ms (a timed-out call fails its decisions).
std::string SharedConfig(const std::string& redis_url) {
  return absl::StrCat(R"yaml(
throttles:
  - uid: api
    limit: 100
    period: 1h
tenants:
  - name: default
    backend: )yaml",
                      redis_url, R"yaml(
    redis:
      timeout: 5s
)yaml");
}

// Verifies two traffikd processes sharing one Redis enforce one limit exactly:
// 2 processes x 4 client threads x 50 calls on one key with limit 100 allow
// exactly 100 hits in total, and every call succeeds.
TEST_F(RedisE2eTest, TwoProcessesShareExactLimit) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* first = nullptr;
  TraffikdProcess* second = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(SharedConfig(redis->url()), &first));
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(SharedConfig(redis->url()), &second));
  for (TraffikdProcess* process : {first, second}) {
    auto stub = NewStub(process->grpc_address());
    ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "default", *process));
  }

  constexpr int kThreadsPerProcess = 4;
  constexpr int kCallsPerThread = 50;  // 400 calls in total, limit 100
  std::atomic<int> allowed{0};
  std::atomic<int> throttled{0};
  std::atomic<int> failed{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> threads;
  for (TraffikdProcess* process : {first, second}) {
    const std::string address = process->grpc_address();
    for (int t = 0; t < kThreadsPerProcess; ++t) {
      threads.emplace_back([&, address, t] {
        auto stub = NewStub(address, t + 1);
        for (int i = 0; i < kCallsPerThread; ++i) {
          const auto reply = Decide(*stub, Request("user:shared", "api"));
          if (!reply.status.ok()) {
            ++failed;
            std::lock_guard<std::mutex> lock(mu);
            if (first_error.empty()) first_error = Describe(reply.status);
          } else if (reply.response.wait_ms() == 0) {
            ++allowed;
          } else {
            ++throttled;
          }
        }
      });
    }
  }
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(allowed.load(), 100);
  EXPECT_EQ(throttled.load(), 2 * kThreadsPerProcess * kCallsPerThread - 100);
  // The shared bucket is now empty on both replicas.
  for (TraffikdProcess* process : {first, second}) {
    auto stub = NewStub(process->grpc_address());
    const auto reply = Decide(*stub, Request("user:shared", "api"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    EXPECT_GT(reply.response.wait_ms(), 0u);
    EXPECT_EQ(reply.response.remaining(), 0u);
  }
}

// Verifies the same exactness through ShouldThrottleBatch: 2 processes x 4
// threads x 5 batches of 10 items on one key (400 hits, limit 100) allow
// exactly 100 items in total.
TEST_F(RedisE2eTest, TwoProcessesShareExactLimitBatch) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* first = nullptr;
  TraffikdProcess* second = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(SharedConfig(redis->url()), &first));
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(SharedConfig(redis->url()), &second));
  for (TraffikdProcess* process : {first, second}) {
    auto stub = NewStub(process->grpc_address());
    ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "default", *process));
  }

  constexpr int kThreadsPerProcess = 4;
  constexpr int kBatchesPerThread = 5;
  constexpr int kItemsPerBatch = 10;
  const std::vector<v1::ShouldThrottleRequest> items(kItemsPerBatch,
                                                     Request("user:batch", "api"));
  std::atomic<int> allowed{0};
  std::atomic<int> answered{0};
  std::atomic<int> failed{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> threads;
  for (TraffikdProcess* process : {first, second}) {
    const std::string address = process->grpc_address();
    for (int t = 0; t < kThreadsPerProcess; ++t) {
      threads.emplace_back([&, address, t] {
        auto stub = NewStub(address, t + 1);
        for (int b = 0; b < kBatchesPerThread; ++b) {
          const auto reply = DecideBatch(*stub, items);
          if (!reply.status.ok() || reply.response.responses_size() != kItemsPerBatch) {
            ++failed;
            std::lock_guard<std::mutex> lock(mu);
            if (first_error.empty()) {
              first_error = absl::StrCat(Describe(reply.status), " (",
                                         reply.response.responses_size(), " answers)");
            }
            continue;
          }
          for (const auto& response : reply.response.responses()) {
            ++answered;
            if (response.wait_ms() == 0) ++allowed;
          }
        }
      });
    }
  }
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(answered.load(), 2 * kThreadsPerProcess * kBatchesPerThread * kItemsPerBatch);
  EXPECT_EQ(allowed.load(), 100);
}

// ------------------------------------------------------ tenants and keys

// Verifies tenants on one Redis are isolated by their key prefix: the same
// throttle uid and identifier under prefixes `a` and `b` are independent
// buckets, and Redis holds both `a:uid:{identifier}` and `b:uid:{identifier}`.
TEST_F(RedisE2eTest, TenantsIsolatedByPrefix) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(absl::StrCat(R"yaml(
throttles:
  - uid: search
    limit: 3
    period: 1h
tenants:
  - name: alpha
    prefix: a
    backend: )yaml",
                                                     redis->url(), R"yaml(
  - name: beta
    prefix: b
    backend: )yaml",
                                                     redis->url(), R"yaml(
default_tenant: alpha
)yaml"),
                                        &process));
  auto stub = NewStub(process->grpc_address());
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "alpha", *process));
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "beta", *process));

  // Exhaust alpha's bucket.
  for (int i = 0; i < 3; ++i) {
    const auto reply = Decide(*stub, Request("user:1", "search", "alpha"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    EXPECT_EQ(reply.response.wait_ms(), 0u) << "hit " << i;
  }
  const auto refused = Decide(*stub, Request("user:1", "search", "alpha"));
  ASSERT_TRUE(refused.status.ok()) << Describe(refused.status);
  EXPECT_GT(refused.response.wait_ms(), 0u);

  // beta's bucket with the same uid and identifier is untouched.
  const auto beta = Decide(*stub, Request("user:1", "search", "beta"));
  ASSERT_TRUE(beta.status.ok()) << Describe(beta.status);
  EXPECT_EQ(beta.response.wait_ms(), 0u);
  EXPECT_EQ(beta.response.remaining(), 2u);

  absl::StatusOr<std::string> keys = redis->Command({"KEYS", "*:search:{user:1}"});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(Lines(*keys),
            (std::set<std::string>{"a:search:{user:1}", "b:search:{user:1}"}));
}

// Verifies bucket keys in Redis carry a TTL: 0 < PTTL <= the throttle period
// (the time until the bucket is full again), and a bucket Redis has forgotten
// (deleted) starts full again.
TEST_F(RedisE2eTest, KeysCarryTtl) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(absl::StrCat(R"yaml(
throttles:
  - uid: search
    limit: 3
    period: 1h
tenants:
  - name: default
    backend: )yaml",
                                                     redis->url(), "\n"),
                                        &process));
  auto stub = NewStub(process->grpc_address());
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "default", *process));

  const std::string key = "default:search:{user:ttl}";
  for (int hits = 1; hits <= 3; ++hits) {
    const auto reply = Decide(*stub, Request("user:ttl", "search"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    ASSERT_EQ(reply.response.wait_ms(), 0u);
    absl::StatusOr<std::string> pttl = redis->Command({"PTTL", key});
    ASSERT_TRUE(pttl.ok()) << pttl.status();
    int64_t ms = 0;
    ASSERT_TRUE(absl::SimpleAtoi(*pttl, &ms)) << *pttl;
    EXPECT_GT(ms, 0) << "after " << hits << " hits";
    EXPECT_LE(ms, kHourMs) << "after " << hits << " hits";
    // The TTL is the time until full again: about hits/limit of the period
    // (allowing a little time to have passed).
    EXPECT_GE(ms, hits * kHourMs / 3 - 5'000) << "after " << hits << " hits";
    EXPECT_LE(static_cast<uint64_t>(ms), reply.response.reset_ms() + 1'000);
  }
  absl::StatusOr<std::string> type = redis->Command({"TYPE", key});
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ(*type, "string");

  // Once the key is gone (as when its TTL expires), the bucket is full again.
  ASSERT_TRUE(redis->Command({"DEL", key}).ok());
  const auto reply = Decide(*stub, Request("user:ttl", "search"));
  ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
  EXPECT_EQ(reply.response.wait_ms(), 0u);
  EXPECT_EQ(reply.response.remaining(), 2u);
}

// Verifies a memory tenant and a Redis tenant work side by side in one server
// (enterprise on Redis, free tier in memory): both enforce their limits, and
// only the Redis tenant's buckets appear in Redis.
TEST_F(RedisE2eTest, MemoryAndRedisTenantsTogether) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(absl::StrCat(R"yaml(
throttles:
  - uid: api_quota
    limit: 4
    period: 1h
tenants:
  - name: free
    backend: memory
  - name: enterprise
    backend: )yaml",
                                                     redis->url(), R"yaml(
    quota_multiplier: 2
default_tenant: free
)yaml"),
                                        &process));
  auto stub = NewStub(process->grpc_address());
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "enterprise", *process));

  const auto count_allowed = [&](const std::string& tenant, int calls) {
    int allowed = 0;
    for (int i = 0; i < calls; ++i) {
      const auto reply = Decide(*stub, Request("user:7", "api_quota", tenant));
      EXPECT_TRUE(reply.status.ok()) << tenant << ": " << Describe(reply.status);
      if (reply.status.ok() && reply.response.wait_ms() == 0) ++allowed;
    }
    return allowed;
  };
  EXPECT_EQ(count_allowed("free", 6), 4);
  EXPECT_EQ(count_allowed("enterprise", 12), 8);
  EXPECT_EQ(count_allowed("", 1), 0);  // "" is the default tenant, free

  absl::StatusOr<std::string> enterprise =
      redis->Command({"EXISTS", "enterprise:api_quota:{user:7}"});
  ASSERT_TRUE(enterprise.ok()) << enterprise.status();
  EXPECT_EQ(*enterprise, "1");
  absl::StatusOr<std::string> free_keys = redis->Command({"KEYS", "free:*"});
  ASSERT_TRUE(free_keys.ok()) << free_keys.status();
  EXPECT_EQ(*free_keys, "");
}

// Verifies quota_multiplier applies on Redis as in memory: limit 5 with x2
// reports limit 10 in the response and allows exactly 10 hits; x0.1 floors to 1.
TEST_F(RedisE2eTest, QuotaMultiplierOnRedis) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(absl::StrCat(R"yaml(
throttles:
  - uid: login
    limit: 5
    period: 1h
tenants:
  - name: gold
    quota_multiplier: 2
    backend: )yaml",
                                                     redis->url(), R"yaml(
  - name: tiny
    quota_multiplier: 0.1
    backend: )yaml",
                                                     redis->url(), R"yaml(
default_tenant: gold
)yaml"),
                                        &process));
  auto stub = NewStub(process->grpc_address());
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "gold", *process));

  int allowed = 0;
  for (int i = 0; i < 15; ++i) {
    const auto reply = Decide(*stub, Request("user:9", "login", "gold"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    EXPECT_EQ(reply.response.limit(), 10u);
    if (reply.response.wait_ms() == 0) {
      ++allowed;
      EXPECT_EQ(reply.response.remaining(), static_cast<uint64_t>(10 - allowed));
    }
  }
  EXPECT_EQ(allowed, 10);

  const auto tiny_first = Decide(*stub, Request("user:9", "login", "tiny"));
  ASSERT_TRUE(tiny_first.status.ok()) << Describe(tiny_first.status);
  EXPECT_EQ(tiny_first.response.limit(), 1u);
  EXPECT_EQ(tiny_first.response.wait_ms(), 0u);
  const auto tiny_second = Decide(*stub, Request("user:9", "login", "tiny"));
  ASSERT_TRUE(tiny_second.status.ok()) << Describe(tiny_second.status);
  EXPECT_GT(tiny_second.response.wait_ms(), 0u);

  absl::StatusOr<std::string> keys = redis->Command({"KEYS", "*:login:{user:9}"});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(Lines(*keys),
            (std::set<std::string>{"gold:login:{user:9}", "tiny:login:{user:9}"}));
}

// ------------------------------------------------------ faults

// Tenants `strict` (deny, 200 ms timeout) and `open` (allow) on one Redis, and
// `mem` in memory.
std::string FaultConfig(const std::string& redis_url) {
  return absl::StrCat(R"yaml(
throttles:
  - uid: api
    limit: 1000000
    period: 1h
  - uid: small
    limit: 2
    period: 1h
tenants:
  - name: strict
    backend: )yaml",
                      redis_url, R"yaml(
    on_backend_error: deny
    redis:
      timeout: 200ms
  - name: open
    backend: )yaml",
                      redis_url, R"yaml(
    on_backend_error: allow
  - name: mem
    backend: memory
default_tenant: mem
)yaml");
}

// Verifies a Redis crash under load: afterwards `open` (allow) answers allowed
// even for an exhausted bucket, `strict` (deny) fails UNAVAILABLE naming the
// backend, every call returns in well under a second, `mem` keeps working and
// health stays SERVING; after Redis restarts on the same port, `strict`
// decides again within about 5 s without restarting traffikd, which finally
// exits 0 on SIGTERM.
TEST_F(RedisE2eTest, RedisKilledAndRestartedUnderLoad) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(FaultConfig(redis->url()), &process));
  const std::string address = process->grpc_address();
  const std::string backend_name = redis->url();
  auto stub = NewStub(address);
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "strict", *process));
  ASSERT_NO_FATAL_FAILURE(WaitUntilBackedByRedis(*stub, "open", *process));

  // Exhaust open's `small` bucket while Redis is up, so a fail-open answer is
  // distinguishable from a real one.
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Decide(*stub, Request("user:open", "small", "open")).response.wait_ms(),
              0u);
  }
  {
    const auto reply = Decide(*stub, Request("user:open", "small", "open"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    ASSERT_GT(reply.response.wait_ms(), 0u);
  }

  // Background load on all three tenants; records any unexpected status and
  // the slowest call.
  std::atomic<bool> stop{false};
  std::atomic<int> load_calls{0};
  std::atomic<int> load_unavailable{0};
  std::atomic<int64_t> slowest_ms{0};
  std::mutex mu;
  std::vector<std::string> unexpected;
  std::thread load([&] {
    auto load_stub = NewStub(address, 1);
    int i = 0;
    while (!stop.load()) {
      const std::string tenant = i % 3 == 0 ? "strict" : (i % 3 == 1 ? "open" : "mem");
      const auto reply =
          Decide(*load_stub, Request(absl::StrCat("load:", i % 50), "api", tenant));
      ++i;
      ++load_calls;
      int64_t prev = slowest_ms.load();
      while (reply.elapsed.count() > prev &&
             !slowest_ms.compare_exchange_weak(prev, reply.elapsed.count())) {
      }
      const bool ok_status = reply.status.ok() ||
                             (tenant == "strict" &&
                              reply.status.error_code() == grpc::StatusCode::UNAVAILABLE);
      if (reply.status.error_code() == grpc::StatusCode::UNAVAILABLE) ++load_unavailable;
      if (!ok_status ||
          (reply.status.ok() && tenant != "strict" && reply.response.wait_ms() != 0)) {
        std::lock_guard<std::mutex> lock(mu);
        if (unexpected.size() < 5) {
          unexpected.push_back(absl::StrCat(tenant, ": ", Describe(reply.status),
                                            " wait_ms=", reply.response.wait_ms()));
        }
      }
    }
  });
  std::this_thread::sleep_for(milliseconds(200));

  redis->Kill();

  // Several rounds while Redis is down.
  for (int round = 0; round < 5; ++round) {
    const auto open = Decide(*stub, Request("user:open", "small", "open"));
    ASSERT_TRUE(open.status.ok()) << Describe(open.status);
    EXPECT_EQ(open.response.wait_ms(), 0u) << "fail-open answer expected";
    EXPECT_LT(open.elapsed, milliseconds(1000));

    const auto strict = Decide(*stub, Request("user:strict", "api", "strict"));
    EXPECT_EQ(strict.status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << Describe(strict.status);
    EXPECT_THAT(strict.status.error_message(), HasSubstr(backend_name));
    EXPECT_LT(strict.elapsed, milliseconds(1000));

    const auto mem = Decide(*stub, Request("user:mem", "api", "mem"));
    ASSERT_TRUE(mem.status.ok()) << Describe(mem.status);
    EXPECT_EQ(mem.response.wait_ms(), 0u);
    EXPECT_LT(mem.elapsed, milliseconds(1000));

    const absl::StatusOr<bool> serving = CheckHealth(address, "", kHealthTimeout);
    ASSERT_TRUE(serving.ok()) << serving.status();
    EXPECT_TRUE(*serving);
    std::this_thread::sleep_for(milliseconds(150));
  }
  const absl::StatusOr<bool> service_serving =
      CheckHealth(address, "traffik.v1.ThrottleService", kHealthTimeout);
  ASSERT_TRUE(service_serving.ok()) << service_serving.status();
  EXPECT_TRUE(*service_serving);

  // Backend failures are counted per tenant and policy.
  {
    absl::StatusOr<HttpResponse> metrics = HttpGet(process->metrics_port(), "/metrics");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    const std::optional<double> open_errors =
        SampleValue(metrics->body, "traffik_backend_errors_total",
                    {{"tenant", "open"}, {"policy", "allow"}});
    const std::optional<double> strict_errors =
        SampleValue(metrics->body, "traffik_backend_errors_total",
                    {{"tenant", "strict"}, {"policy", "deny"}});
    EXPECT_GT(open_errors.value_or(0), 0) << metrics->body;
    EXPECT_GT(strict_errors.value_or(0), 0) << metrics->body;
  }

  // Redis comes back (empty) on the same port: strict recovers on its own.
  ASSERT_TRUE(redis->Restart().ok());
  const auto restarted_at = Clock::now();
  Reply<v1::ShouldThrottleResponse> strict;
  do {
    strict = Decide(*stub, Request("user:strict", "api", "strict"));
    if (strict.status.ok()) break;
    std::this_thread::sleep_for(milliseconds(50));
  } while (Clock::now() - restarted_at < std::chrono::seconds(5));
  const auto recovery =
      std::chrono::duration_cast<milliseconds>(Clock::now() - restarted_at);
  ASSERT_TRUE(strict.status.ok())
      << "strict still failing " << recovery.count()
      << " ms after the restart: " << Describe(strict.status) << "\ntraffikd output:\n"
      << process->StderrText();
  EXPECT_EQ(strict.response.wait_ms(), 0u);
  RecordProperty("recovery_ms", static_cast<int>(recovery.count()));
  std::cerr << "strict recovered " << recovery.count() << " ms after Redis restarted\n";

  // open is backed by Redis again: its (new, empty-dataset) bucket counts.
  ASSERT_NO_FATAL_FAILURE(WaitUntilBackedByRedis(*stub, "open", *process));

  stop.store(true);
  load.join();
  EXPECT_GT(load_calls.load(), 10);
  EXPECT_GT(load_unavailable.load(), 0);
  EXPECT_LT(slowest_ms.load(), 1000) << "slowest call under load";
  EXPECT_TRUE(unexpected.empty())
      << "e.g. " << (unexpected.empty() ? "" : unexpected.front());

  ASSERT_TRUE(process->IsRunning()) << process->StderrText();
  // Close the client connection first: an idle open connection delays the
  // exit by seconds (within shutdown_grace), which is not what this test is
  // about.
  stub.reset();
  ASSERT_TRUE(process->SendSignal(SIGTERM));
  const std::optional<int> status = process->WaitExit(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value()) << "still running:\n" << process->StderrText();
  EXPECT_EQ(*status, 0) << process->StderrText();
}

// Verifies a Redis that accepts but stops answering (CLIENT PAUSE) makes
// `strict` calls fail UNAVAILABLE naming the backend within about its 200 ms
// timeout (asserted < 1.5 s) instead of hanging, and that decisions succeed
// again once Redis answers.
TEST_F(RedisE2eTest, UnresponsiveRedisTimesOut) {
  std::unique_ptr<RedisServer> redis;
  ASSERT_NO_FATAL_FAILURE(StartRedis(&redis));
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(FaultConfig(redis->url()), &process));
  auto stub = NewStub(process->grpc_address());
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "strict", *process));

  constexpr int kPauseMs = 3000;
  absl::StatusOr<std::string> paused =
      redis->Command({"CLIENT", "PAUSE", absl::StrCat(kPauseMs), "ALL"});
  ASSERT_TRUE(paused.ok()) << paused.status();
  const auto paused_at = Clock::now();

  int calls = 0;
  milliseconds slowest{0};
  // Only calls that start well inside the pause must fail.
  while (Clock::now() - paused_at < milliseconds(kPauseMs - 1500) || calls < 2) {
    const auto reply =
        Decide(*stub, Request(absl::StrCat("user:p", calls), "api", "strict"));
    ++calls;
    slowest = std::max(slowest, reply.elapsed);
    EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << "call " << calls << " after " << reply.elapsed.count()
        << " ms: " << Describe(reply.status);
    EXPECT_THAT(reply.status.error_message(), HasSubstr(redis->url()));
    EXPECT_LT(reply.elapsed, milliseconds(1500)) << "call " << calls;
    // mem is unaffected meanwhile.
    const auto mem = Decide(*stub, Request("user:mem", "api", "mem"));
    EXPECT_TRUE(mem.status.ok()) << Describe(mem.status);
    EXPECT_LT(mem.elapsed, milliseconds(500));
  }
  std::cerr << calls << " strict calls during the pause, slowest " << slowest.count()
            << " ms\n";

  // After the pause ends, strict decides again on its own.
  const auto deadline = paused_at + milliseconds(kPauseMs) + std::chrono::seconds(5);
  Reply<v1::ShouldThrottleResponse> reply;
  do {
    reply = Decide(*stub, Request("user:after", "api", "strict"));
    if (reply.status.ok()) break;
    std::this_thread::sleep_for(milliseconds(50));
  } while (Clock::now() < deadline);
  EXPECT_TRUE(reply.status.ok()) << Describe(reply.status) << "\ntraffikd output:\n"
                                 << process->StderrText();
  EXPECT_TRUE(process->IsRunning());
}

// ------------------------------------------------------ cluster

// Verifies a tenant on a 3-master Redis Cluster: 300 identifiers spread their
// buckets over all nodes, and an exhausted bucket keeps its state when its slot
// migrates to another node (the next hit is still refused, with no error).
TEST_F(RedisE2eTest, ClusterSpreadsKeysAndSurvivesSlotMigration) {
  absl::StatusOr<std::unique_ptr<RedisCluster>> started = RedisCluster::Start(3);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisCluster& cluster = **started;
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(absl::StrCat(R"yaml(
throttles:
  - uid: api
    limit: 10
    period: 1h
  - uid: small
    limit: 5
    period: 1h
tenants:
  - name: default
    backend: )yaml",
                                                     cluster.seeds_url(), "\n"),
                                        &process));
  auto stub = NewStub(process->grpc_address());
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "default", *process));

  for (int i = 0; i < 300; ++i) {
    const auto reply = Decide(*stub, Request(absl::StrCat("id:", i), "api"));
    ASSERT_TRUE(reply.status.ok()) << "id " << i << ": " << Describe(reply.status);
    ASSERT_EQ(reply.response.wait_ms(), 0u);
    ASSERT_EQ(reply.response.remaining(), 9u);
  }
  absl::StatusOr<std::vector<int64_t>> per_node = cluster.KeysPerNode();
  ASSERT_TRUE(per_node.ok()) << per_node.status();
  ASSERT_EQ(per_node->size(), 3u);
  size_t total = 0;
  for (int n = 0; n < cluster.size(); ++n) {
    EXPECT_GT((*per_node)[n], 0) << "node " << n;
    // Count only this test's buckets (the warm-up probe's key may or may not
    // have expired yet: its TTL is a few ms).
    absl::StatusOr<std::string> keys =
        cluster.node(n).Command({"KEYS", "default:api:{id:*"});
    ASSERT_TRUE(keys.ok()) << keys.status();
    EXPECT_GT(Lines(*keys).size(), 0u) << "node " << n;
    total += Lines(*keys).size();
  }
  EXPECT_EQ(total, 300u);
  // Each bucket lives on the node that owns its slot.
  for (int i : {0, 99, 299}) {
    const std::string key = absl::StrCat("default:api:{id:", i, "}");
    absl::StatusOr<int> owner = cluster.NodeForKey(key);
    ASSERT_TRUE(owner.ok()) << owner.status();
    EXPECT_EQ(cluster.node(*owner).Command({"EXISTS", key}).value_or("?"), "1") << key;
  }

  // Exhaust K, then move its slot to another node.
  const std::string key = "default:small:{victim}";
  for (int i = 0; i < 5; ++i) {
    const auto reply = Decide(*stub, Request("victim", "small"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    ASSERT_EQ(reply.response.wait_ms(), 0u);
  }
  {
    const auto reply = Decide(*stub, Request("victim", "small"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    ASSERT_GT(reply.response.wait_ms(), 0u);
  }
  const int slot = KeySlot(key);
  EXPECT_EQ(cluster.node(0).Command({"CLUSTER", "KEYSLOT", key}).value_or("?"),
            absl::StrCat(slot));
  absl::StatusOr<int> from = cluster.NodeForKey(key);
  ASSERT_TRUE(from.ok()) << from.status();
  const int to = (*from + 1) % cluster.size();
  absl::Status migrated = cluster.MigrateSlot(slot, *from, to);
  ASSERT_TRUE(migrated.ok()) << migrated;
  EXPECT_EQ(cluster.NodeForKey(key).value_or(-1), to);
  EXPECT_EQ(cluster.node(to).Command({"EXISTS", key}).value_or("?"), "1");

  // traffikd follows the MOVED redirect and finds the bucket still empty.
  for (int i = 0; i < 3; ++i) {
    const auto reply = Decide(*stub, Request("victim", "small"));
    ASSERT_TRUE(reply.status.ok())
        << "after migration: " << Describe(reply.status) << "\ntraffikd output:\n"
        << process->StderrText();
    EXPECT_GT(reply.response.wait_ms(), 0u) << "call " << i << " after migration";
    EXPECT_EQ(reply.response.remaining(), 0u);
    EXPECT_EQ(reply.response.limit(), 5u);
  }
  // Other buckets on the old owner still work.
  const auto other = Decide(*stub, Request("someone-else", "small"));
  ASSERT_TRUE(other.status.ok()) << Describe(other.status);
  EXPECT_EQ(other.response.wait_ms(), 0u);
}

// ------------------------------------------------------ TLS

// Verifies a rediss:// tenant end to end: traffikd verifies the TLS server
// (test CA, IP SAN) and presents its client certificate (the server requires
// one); the limit is enforced with buckets stored in that Redis, batches
// included. A second tenant trusting another CA is refused with UNAVAILABLE
// naming its backend, and traffikd logs why (once, not per call).
TEST_F(RedisE2eTest, TlsTenant) {
  absl::StatusOr<std::unique_ptr<TestPki>> pki = TestPki::Create();
  ASSERT_TRUE(pki.ok()) << pki.status();
  RedisServer::Options options;
  options.tls = RedisServerTls{(*pki)->server_cert_file(), (*pki)->server_key_file(),
                               (*pki)->ca_file(), /*auth_clients=*/true};
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start(options);
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::string url = (*redis)->tls_url();
  const std::string yaml = absl::StrCat(R"yaml(
throttles:
  - uid: api
    limit: 3
    period: 1h
tenants:
  - name: secure
    backend: ")yaml",
                                        url, R"yaml("
    on_backend_error: deny
    redis:
      tls:
        ca_file: ")yaml",
                                        (*pki)->ca_file(), R"yaml("
        cert_file: ")yaml",
                                        (*pki)->client_cert_file(), R"yaml("
        key_file: ")yaml",
                                        (*pki)->client_key_file(), R"yaml("
  - name: untrusted
    backend: ")yaml",
                                        url, R"yaml("
    on_backend_error: deny
    redis:
      tls:
        ca_file: ")yaml",
                                        (*pki)->other_ca_file(), R"yaml("
        cert_file: ")yaml",
                                        (*pki)->client_cert_file(), R"yaml("
        key_file: ")yaml",
                                        (*pki)->client_key_file(), R"yaml("
default_tenant: secure
)yaml");
  TraffikdProcess* process = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartTraffikd(yaml, &process));
  auto stub = NewStub(process->grpc_address());
  ASSERT_NO_FATAL_FAILURE(WaitUntilDecides(*stub, "secure", *process));

  for (int i = 0; i < 2; ++i) {
    const auto reply = Decide(*stub, Request("user:tls", "api", "secure"));
    ASSERT_TRUE(reply.status.ok()) << Describe(reply.status);
    EXPECT_EQ(reply.response.wait_ms(), 0u) << i;
  }
  const auto batch = DecideBatch(*stub, {Request("user:tls", "api", "secure"),
                                         Request("user:tls", "api", "secure")});
  ASSERT_TRUE(batch.status.ok()) << Describe(batch.status);
  ASSERT_EQ(batch.response.responses_size(), 2);
  EXPECT_EQ(batch.response.responses(0).wait_ms(), 0u);
  EXPECT_GT(batch.response.responses(1).wait_ms(), 0u);
  // The bucket lives in that Redis (user:tls' key; the warm-up probe's may
  // have expired already: it is full again 3.6 ms after its hit).
  const absl::StatusOr<std::string> keys = (*redis)->Command({"KEYS", "*"});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, HasSubstr("{user:tls}")) << *keys;

  for (int i = 0; i < 5; ++i) {
    const auto refused = Decide(*stub, Request("user:tls", "api", "untrusted"));
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << Describe(refused.status);
    EXPECT_THAT(refused.status.error_message(), HasSubstr(url));
  }
  // Nothing was written for the refused tenant (the warm-up probe's bucket may
  // have expired meanwhile: its key lives until the bucket is full again).
  int keys_after = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*(*redis)->Command({"DBSIZE"}), &keys_after));
  EXPECT_LE(keys_after, 2);
  EXPECT_GE(keys_after, 1);
  const std::string log = process->StderrText();
  EXPECT_EQ(CountOccurrences(log, "certificate verify failed"), 1) << log;
  EXPECT_TRUE(process->IsRunning());
}

}  // namespace
}  // namespace traffik::e2e
