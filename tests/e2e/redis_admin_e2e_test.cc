// End-to-end tests of the admin API on Redis: the real traffikd (admin_api:
// true) with one tenant on a standalone redis-server and one on a 3-node Redis
// Cluster, driven over gRPC and inspected with the harness.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "redis/redis_harness.h"
#include "traffik/v1/admin.grpc.pb.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::traffik::testing_redis::RedisCluster;
using ::traffik::testing_redis::RedisServer;

constexpr auto kRpcTimeout = std::chrono::seconds(5);

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
}

v1::ShouldThrottleRequest Hit(const std::string& id, const std::string& uid,
                              const std::string& tenant, bool peek = false) {
  v1::ShouldThrottleRequest r;
  r.set_identifier(id);
  r.set_throttle_uid(uid);
  r.set_tenant(tenant);
  r.set_peek(peek);
  return r;
}

class RedisAdminE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto redis = RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = std::move(*redis);
    auto cluster = RedisCluster::Start(3);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(*cluster);
    // Prefixes with glob characters: a reset must not read them as patterns.
    const std::string yaml = absl::StrCat(R"yaml(
admin_api: true
throttles:
  - uid: api
    limit: 3
    period: 1h
tenants:
  - name: default
  - name: solo
    prefix: "so*lo"
    backend: )yaml",
                                          redis_->url(), R"yaml(
  - name: clustered
    prefix: "cl[u]ster"
    quota_multiplier: 2
    backend: )yaml",
                                          cluster_->seeds_url(), "\n");
    auto config = TempFile::Create(yaml);
    ASSERT_TRUE(config.ok()) << config.status();
    auto server = TraffikdProcess::Start(
        {"--config", config->path(), "--listen", "127.0.0.1:0", "--metrics-listen", ""});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    config_ = std::make_unique<TempFile>(*std::move(config));
    auto channel =
        grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials());
    throttle_ = v1::ThrottleService::NewStub(channel);
    admin_ = v1::AdminService::NewStub(channel);
    // traffikd connects in the background: wait until both tenants decide.
    for (const char* tenant : {"solo", "clustered"}) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      grpc::Status status;
      do {
        v1::ShouldThrottleResponse response;
        v1::ShouldThrottleRequest probe = Hit("warmup", "warmup", tenant, true);
        probe.mutable_spec()->set_limit(1);
        probe.mutable_spec()->set_period_ms(1000);
        grpc::ClientContext context;
        SetDeadline(&context);
        status = throttle_->ShouldThrottle(&context, probe, &response);
        if (!status.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      } while (!status.ok() && std::chrono::steady_clock::now() < deadline);
      ASSERT_TRUE(status.ok()) << tenant << ": " << status.error_message();
    }
  }
  static void TearDownTestSuite() {
    throttle_.reset();
    admin_.reset();
    server_.reset();
    config_.reset();
    cluster_.reset();
    redis_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static v1::ShouldThrottleResponse MustDecide(const v1::ShouldThrottleRequest& request) {
    v1::ShouldThrottleResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = throttle_->ShouldThrottle(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }
  static uint64_t MustReset(const std::string& tenant, const std::string& uid,
                            const std::string& id) {
    v1::ResetBucketsRequest request;
    request.set_tenant(tenant);
    request.set_throttle_uid(uid);
    request.set_identifier(id);
    v1::ResetBucketsResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = admin_->ResetBuckets(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.removed();
  }
  static v1::GetBucketResponse MustGet(const std::string& tenant, const std::string& id,
                                       uint32_t cost = 0) {
    v1::GetBucketRequest request;
    request.set_tenant(tenant);
    request.set_throttle_uid("api");
    request.set_identifier(id);
    request.set_cost(cost);
    v1::GetBucketResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = admin_->GetBucket(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }
  static int64_t ClusterKeys() {
    auto per_node = cluster_->KeysPerNode();
    EXPECT_TRUE(per_node.ok());
    int64_t total = 0;
    for (int64_t n : *per_node) total += n;
    return total;
  }
  static int64_t SoloKeys() {
    int64_t n = -1;
    auto reply = redis_->Command({"DBSIZE"});
    EXPECT_TRUE(reply.ok() && absl::SimpleAtoi(*reply, &n));
    return n;
  }

  inline static std::unique_ptr<RedisServer> redis_;
  inline static std::unique_ptr<RedisCluster> cluster_;
  inline static std::unique_ptr<TraffikdProcess> server_;
  inline static std::unique_ptr<TempFile> config_;
  inline static std::unique_ptr<v1::ThrottleService::Stub> throttle_;
  inline static std::unique_ptr<v1::AdminService::Stub> admin_;
};

// Verifies peek and GetBucket take nothing on Redis: 100 of each leave the
// bucket's remaining unchanged and create no key; a drained bucket reports
// its wait.
TEST_F(RedisAdminE2eTest, PeekTakesNothing) {
  for (const char* tenant : {"solo", "clustered"}) {
    SCOPED_TRACE(tenant);
    const uint64_t limit = std::string(tenant) == "solo" ? 3 : 6;
    MustDecide(Hit("peeker", "api", tenant));
    const int64_t keys = SoloKeys() + ClusterKeys();
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(MustDecide(Hit("peeker", "api", tenant, true)).remaining(), limit - 2);
      EXPECT_EQ(MustGet(tenant, "peeker").remaining(), limit - 1);
      EXPECT_EQ(MustGet(tenant, absl::StrCat("fresh", i)).remaining(), limit);
    }
    EXPECT_EQ(SoloKeys() + ClusterKeys(), keys);
    for (uint64_t i = 1; i < limit; ++i) MustDecide(Hit("peeker", "api", tenant));
    const v1::GetBucketResponse drained = MustGet(tenant, "peeker");
    EXPECT_EQ(drained.remaining(), 0u);
    EXPECT_GT(drained.wait_ms(), 0u);
    EXPECT_GT(MustDecide(Hit("peeker", "api", tenant, true)).wait_ms(), 0u);
  }
}

// Verifies ResetBuckets on Redis Cluster (SCAN on every master) and on a
// standalone Redis, for one bucket, a throttle and the tenant: the buckets are
// full again, `removed` counts them, and the other tenant's keys stay.
TEST_F(RedisAdminE2eTest, ResetBuckets) {
  // Start from empty tenants, whatever other tests left.
  MustReset("clustered", "", "");
  MustReset("solo", "", "");
  const int64_t other_keys = SoloKeys() + ClusterKeys();
  for (int i = 0; i < 60; ++i) {
    const std::string id = absl::StrCat("user:", i);
    MustDecide(Hit(id, "api", "clustered"));
    MustDecide(Hit(id, "api", "solo"));
    v1::ShouldThrottleRequest inline_hit = Hit(id, "adhoc", "clustered");
    inline_hit.mutable_spec()->set_limit(5);
    inline_hit.mutable_spec()->set_period_ms(3'600'000);
    MustDecide(inline_hit);
  }
  auto per_node = cluster_->KeysPerNode();
  ASSERT_TRUE(per_node.ok());
  for (int64_t n : *per_node) EXPECT_GT(n, 0);  // spread over every master

  EXPECT_EQ(MustGet("clustered", "user:7").remaining(), 5u);
  EXPECT_EQ(MustReset("clustered", "api", "user:7"), 1u);
  EXPECT_EQ(MustGet("clustered", "user:7").remaining(), 6u);
  EXPECT_EQ(MustReset("clustered", "api", ""), 59u);
  EXPECT_EQ(MustGet("clustered", "user:8").remaining(), 6u);
  EXPECT_EQ(MustReset("clustered", "", ""), 60u);  // the inline "adhoc" buckets
  EXPECT_EQ(MustGet("solo", "user:8").remaining(), 2u);
  EXPECT_EQ(MustReset("solo", "", ""), 60u);
  EXPECT_EQ(SoloKeys() + ClusterKeys(), other_keys);
}

}  // namespace
}  // namespace traffik::e2e
