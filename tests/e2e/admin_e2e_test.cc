// End-to-end tests of the admin API (traffik.v1.AdminService) and of peek on
// ShouldThrottle against the real traffikd on the memory backend: each suite
// starts traffikd on loopback port 0 with its own config and talks gRPC to it.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/v1/admin.grpc.pb.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::testing::HasSubstr;

constexpr auto kRpcTimeout = std::chrono::seconds(5);

constexpr char kAdminConfig[] = R"yaml(
admin_api: true
throttles:
  - uid: search
    limit: 3
    period: 1h
  - uid: login
    limit: 5
    period: 1m
tenants:
  - name: default
  - name: gold
    quota_multiplier: 2
  - name: resets
)yaml";

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
}

v1::ShouldThrottleRequest Hit(const std::string& id, const std::string& uid,
                              const std::string& tenant = "", bool peek = false) {
  v1::ShouldThrottleRequest r;
  r.set_identifier(id);
  r.set_throttle_uid(uid);
  r.set_tenant(tenant);
  r.set_peek(peek);
  return r;
}

// One traffikd with `yaml` for the whole suite, and stubs to it.
class AdminE2eBase : public ::testing::Test {
 protected:
  static void StartServer(const std::string& yaml) {
    absl::StatusOr<TempFile> config = TempFile::Create(yaml);
    ASSERT_TRUE(config.ok()) << config.status();
    auto server =
        TraffikdProcess::Start({"--config", config->path(), "--listen", "127.0.0.1:0",
                                "--metrics-listen", "127.0.0.1:0"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    config_ = std::make_unique<TempFile>(*std::move(config));
    auto channel =
        grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials());
    throttle_ = v1::ThrottleService::NewStub(channel);
    admin_ = v1::AdminService::NewStub(channel);
  }
  static void TearDownTestSuite() {
    throttle_.reset();
    admin_.reset();
    server_.reset();
    config_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static grpc::Status Decide(const v1::ShouldThrottleRequest& request,
                             v1::ShouldThrottleResponse* response) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return throttle_->ShouldThrottle(&context, request, response);
  }
  static v1::ShouldThrottleResponse MustDecide(const v1::ShouldThrottleRequest& request) {
    v1::ShouldThrottleResponse response;
    const grpc::Status status = Decide(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }
  static grpc::Status Get(const std::string& id, const std::string& uid,
                          v1::GetBucketResponse* response, uint32_t cost = 0,
                          const std::string& tenant = "") {
    v1::GetBucketRequest request;
    request.set_identifier(id);
    request.set_throttle_uid(uid);
    request.set_tenant(tenant);
    request.set_cost(cost);
    grpc::ClientContext context;
    SetDeadline(&context);
    return admin_->GetBucket(&context, request, response);
  }
  static grpc::Status Reset(const std::string& tenant, const std::string& uid,
                            const std::string& id, uint64_t* removed) {
    v1::ResetBucketsRequest request;
    request.set_tenant(tenant);
    request.set_throttle_uid(uid);
    request.set_identifier(id);
    v1::ResetBucketsResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = admin_->ResetBuckets(&context, request, &response);
    *removed = response.removed();
    return status;
  }
  static grpc::Status List(const std::string& tenant, v1::ListThrottlesResponse* out) {
    v1::ListThrottlesRequest request;
    request.set_tenant(tenant);
    grpc::ClientContext context;
    SetDeadline(&context);
    return admin_->ListThrottles(&context, request, out);
  }
  static std::string Metrics() {
    absl::StatusOr<HttpResponse> r = HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->body : "";
  }

  inline static std::unique_ptr<TraffikdProcess> server_;
  inline static std::unique_ptr<TempFile> config_;
  inline static std::unique_ptr<v1::ThrottleService::Stub> throttle_;
  inline static std::unique_ptr<v1::AdminService::Stub> admin_;
};

class AdminE2eTest : public AdminE2eBase {
 protected:
  static void SetUpTestSuite() { StartServer(kAdminConfig); }
};

// Verifies ListThrottles lists the configured throttles sorted by uid, after
// the tenant's multiplier, and NOT_FOUND for an unknown tenant.
TEST_F(AdminE2eTest, ListThrottles) {
  v1::ListThrottlesResponse def;
  ASSERT_TRUE(List("", &def).ok());
  ASSERT_EQ(def.throttles_size(), 2);
  EXPECT_EQ(def.throttles(0).uid(), "login");
  EXPECT_EQ(def.throttles(0).limit(), 5u);
  EXPECT_EQ(def.throttles(0).period_ms(), 60'000u);
  EXPECT_EQ(def.throttles(1).uid(), "search");
  EXPECT_EQ(def.throttles(1).period_ms(), 3'600'000u);
  v1::ListThrottlesResponse gold;
  ASSERT_TRUE(List("gold", &gold).ok());
  EXPECT_EQ(gold.throttles(1).limit(), 6u);
  v1::ListThrottlesResponse none;
  EXPECT_EQ(List("nobody", &none).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Verifies peek takes nothing: after 100 peeks (ShouldThrottle with peek and
// GetBucket) the bucket's remaining is unchanged and peeks at new identifiers
// create no bucket (traffik_buckets unchanged).
TEST_F(AdminE2eTest, PeekTakesNothing) {
  ASSERT_EQ(MustDecide(Hit("peek-user", "search")).remaining(), 2u);
  const std::string before = Metrics();
  for (int i = 0; i < 100; ++i) {
    const v1::ShouldThrottleResponse p = MustDecide(Hit("peek-user", "search", "", true));
    EXPECT_EQ(p.wait_ms(), 0u);
    EXPECT_EQ(p.remaining(), 1u);  // what the hit would leave
    MustDecide(Hit(absl::StrCat("peek-new-", i), "search", "", true));
    v1::GetBucketResponse g;
    ASSERT_TRUE(Get(absl::StrCat("peek-new-", i), "login", &g).ok());
    EXPECT_EQ(g.remaining(), 5u);
  }
  v1::GetBucketResponse g;
  ASSERT_TRUE(Get("peek-user", "search", &g).ok());
  EXPECT_EQ(g.remaining(), 2u);
  EXPECT_EQ(MustDecide(Hit("peek-user", "search")).remaining(), 1u);
  const std::string after = Metrics();
  EXPECT_EQ(
      SampleValue(after, "traffik_buckets", {{"backend", "memory"}}),
      SampleValue(before, "traffik_buckets", {{"backend", "memory"}}).value_or(-1) + 0);
  // Peeks are not decisions.
  EXPECT_EQ(
      SampleValue(after, "traffik_decisions_total",
                  {{"tenant", "default"}, {"throttle", "search"}, {"result", "allowed"}}),
      SampleValue(before, "traffik_decisions_total",
                  {{"tenant", "default"}, {"throttle", "search"}, {"result", "allowed"}})
              .value_or(-1) +
          1);
}

// Verifies GetBucket on a drained bucket reports the wait a hit would get
// (and ShouldThrottle with peek the same), the bucket as it stands, and that
// cost 0 means 1 and a cost above capacity is OUT_OF_RANGE.
TEST_F(AdminE2eTest, GetBucketOnDrainedBucket) {
  for (int i = 0; i < 3; ++i) MustDecide(Hit("drained", "search"));
  v1::GetBucketResponse g;
  ASSERT_TRUE(Get("drained", "search", &g).ok());
  EXPECT_GT(g.wait_ms(), 1'190'000u);
  EXPECT_LE(g.wait_ms(), 1'200'000u);
  EXPECT_EQ(g.limit(), 3u);
  EXPECT_EQ(g.remaining(), 0u);
  EXPECT_GT(g.reset_ms(), 3'590'000u);
  const v1::ShouldThrottleResponse p = MustDecide(Hit("drained", "search", "", true));
  EXPECT_GT(p.wait_ms(), 1'190'000u);
  v1::GetBucketResponse big;
  EXPECT_EQ(Get("drained", "search", &big, 4).error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  v1::GetBucketResponse unknown;
  EXPECT_EQ(Get("drained", "nope", &unknown).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::GetBucketResponse empty;
  EXPECT_EQ(Get("", "search", &empty).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Verifies ResetBuckets for one bucket, a throttle and a tenant: the buckets
// are full again, `removed` counts them, other tenants keep theirs; an
// identifier without throttle_uid is INVALID_ARGUMENT; admin calls are
// counted in traffik_admin_requests_total.
TEST_F(AdminE2eTest, ResetBuckets) {
  for (const char* id : {"r1", "r2"}) {
    for (int i = 0; i < 3; ++i) {
      MustDecide(Hit(id, "search"));
      MustDecide(Hit(id, "search", "resets"));
    }
    MustDecide(Hit(id, "login", "resets"));
    MustDecide(Hit(id, "search", "gold"));
  }
  uint64_t removed = 0;
  // Empty tenant: the default tenant.
  ASSERT_TRUE(Reset("", "search", "r1", &removed).ok());
  EXPECT_EQ(removed, 1u);
  EXPECT_EQ(MustDecide(Hit("r1", "search", "", true)).wait_ms(), 0u);
  EXPECT_GT(MustDecide(Hit("r2", "search", "", true)).wait_ms(), 0u);
  EXPECT_GT(MustDecide(Hit("r1", "search", "resets", true)).wait_ms(), 0u);
  ASSERT_TRUE(Reset("resets", "search", "", &removed).ok());
  EXPECT_EQ(removed, 2u);
  EXPECT_EQ(MustDecide(Hit("r2", "search", "resets", true)).wait_ms(), 0u);
  v1::GetBucketResponse g;
  ASSERT_TRUE(Get("r1", "login", &g, 0, "resets").ok());
  EXPECT_EQ(g.remaining(), 4u);  // another throttle's buckets stay
  ASSERT_TRUE(Reset("gold", "", "", &removed).ok());
  EXPECT_EQ(removed, 2u);
  EXPECT_GT(MustDecide(Hit("r2", "search", "", true)).wait_ms(), 0u);  // other tenant
  EXPECT_EQ(Reset("", "", "r1", &removed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reset("nobody", "", "", &removed).error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string metrics = Metrics();
  EXPECT_GE(SampleValue(metrics, "traffik_admin_requests_total",
                        {{"rpc", "ResetBuckets"}, {"code", "OK"}})
                .value_or(0),
            3);
  EXPECT_GE(SampleValue(metrics, "traffik_admin_requests_total",
                        {{"rpc", "ResetBuckets"}, {"code", "INVALID_ARGUMENT"}})
                .value_or(0),
            1);
}

// Verifies peek in batches: per item in an ordinary batch; an all_or_nothing
// batch of peeks is a dry run; mixing is INVALID_ARGUMENT.
TEST_F(AdminE2eTest, PeekInBatches) {
  v1::ShouldThrottleBatchRequest batch;
  *batch.add_requests() = Hit("batch-peek", "search");
  *batch.add_requests() = Hit("batch-peek", "search", "", true);
  *batch.add_requests() = Hit("batch-peek", "search");
  v1::ShouldThrottleBatchResponse response;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(throttle_->ShouldThrottleBatch(&context, batch, &response).ok());
  }
  EXPECT_EQ(response.responses(1).remaining(), 1u);
  EXPECT_EQ(response.responses(2).remaining(), 1u);
  v1::ShouldThrottleBatchRequest dry;
  dry.set_all_or_nothing(true);
  *dry.add_requests() = Hit("batch-peek", "search", "", true);
  *dry.add_requests() = Hit("batch-peek", "search", "", true);
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(throttle_->ShouldThrottleBatch(&context, dry, &response).ok());
  }
  EXPECT_FALSE(response.applied());  // 1 left, 2 wanted
  dry.mutable_requests(1)->set_peek(false);
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status mixed = throttle_->ShouldThrottleBatch(&context, dry, &response);
    EXPECT_EQ(mixed.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(mixed.error_message(), HasSubstr("peek"));
  }
  v1::GetBucketResponse g;
  ASSERT_TRUE(Get("batch-peek", "search", &g).ok());
  EXPECT_EQ(g.remaining(), 1u);
}

// The default config: no admin_api.
class AdminDisabledE2eTest : public AdminE2eBase {
 protected:
  static void SetUpTestSuite() {
    StartServer("throttles:\n  - {uid: search, limit: 3, period: 1h}\n");
  }
};

// Verifies that without `admin_api: true` every admin RPC is UNIMPLEMENTED
// (the service is not registered) while peek on ShouldThrottle, which is no
// admin call, works.
TEST_F(AdminDisabledE2eTest, AdminRpcsUnimplemented) {
  uint64_t removed = 0;
  EXPECT_EQ(Reset("", "search", "x", &removed).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  v1::GetBucketResponse g;
  EXPECT_EQ(Get("x", "search", &g).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  v1::ListThrottlesResponse l;
  EXPECT_EQ(List("", &l).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  MustDecide(Hit("x", "search"));
  EXPECT_EQ(MustDecide(Hit("x", "search", "", true)).remaining(), 1u);
  EXPECT_EQ(MustDecide(Hit("x", "search")).remaining(), 1u);
}

}  // namespace
}  // namespace traffik::e2e
