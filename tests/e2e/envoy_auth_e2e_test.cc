// `auth: required` on Envoy's rate-limit service (issue 10): the real traffikd
// with two Envoy domains on different tenants and callers granted one or all.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "e2e/traffikd_process.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik::e2e {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using ::testing::HasSubstr;

constexpr char kShopKey[] = "envoy-shop-KEY-91c2";
constexpr char kAllKey[] = "envoy-all-KEY-04ab";

constexpr char kShopDomain[] = R"yaml(
domain: shop_rl
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 5
)yaml";
constexpr char kDefaultDomain[] = R"yaml(
domain: default_rl
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 5
)yaml";

class EnvoyAuthE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/traffik-envoy-auth-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    rules_dir_ = tmpl;
    std::ofstream(rules_dir_ + "/shop.yaml") << kShopDomain;
    std::ofstream(rules_dir_ + "/default.yaml") << kDefaultDomain;
    absl::StatusOr<TempFile> config = TempFile::Create(absl::StrCat(
        "tenants:\n  - name: default\n  - name: shop\n"
        "envoy:\n  config_dirs: [",
        rules_dir_,
        "]\n  tenant_for_domain:\n    shop_rl: shop\n    default_rl: default\n"
        "auth: required\ncallers:\n"
        "  - name: shop-proxy\n    api_key_sha256: ",
        Sha256Hex(kShopKey),
        "\n    tenants: [shop]\n"
        "  - name: edge\n    api_key_sha256: ",
        Sha256Hex(kAllKey), "\n    tenants: \"*\"\n"));
    ASSERT_TRUE(config.ok()) << config.status();
    auto server =
        TraffikdProcess::Start({"--config", config->path(), "--listen", "127.0.0.1:0",
                                "--metrics-listen", "127.0.0.1:0"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    config_ = std::make_unique<TempFile>(*std::move(config));
    stub_ = rls::RateLimitService::NewStub(
        grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    stub_.reset();
    server_.reset();
    config_.reset();
    if (!rules_dir_.empty()) std::filesystem::remove_all(rules_dir_);
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static grpc::Status Call(const std::optional<std::string>& key,
                           const std::string& domain, const std::string& user,
                           rls::RateLimitResponse* response) {
    rls::RateLimitRequest request;
    request.set_domain(domain);
    auto* e = request.add_descriptors()->add_entries();
    e->set_key("user");
    e->set_value(user);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (key) context.AddMetadata("authorization", absl::StrCat("Bearer ", *key));
    return stub_->ShouldRateLimit(&context, request, response);
  }
  // limit_remaining after one more hit by the all-tenants caller.
  static uint32_t RemainingAfterHit(const std::string& domain, const std::string& user) {
    rls::RateLimitResponse response;
    grpc::Status s = Call(kAllKey, domain, user, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.statuses_size() == 1 ? response.statuses(0).limit_remaining() : 99;
  }

  inline static std::string rules_dir_;
  inline static std::unique_ptr<TraffikdProcess> server_;
  inline static std::unique_ptr<TempFile> config_;
  inline static std::unique_ptr<rls::RateLimitService::Stub> stub_;
};

// Verifies ShouldRateLimit without a key or with an unknown one is
// UNAUTHENTICATED and takes nothing, also on an unknown domain.
TEST_F(EnvoyAuthE2eTest, NoOrUnknownKeyIsUnauthenticated) {
  rls::RateLimitResponse r;
  EXPECT_EQ(Call(std::nullopt, "shop_rl", "anon", &r).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(std::string("nope"), "shop_rl", "anon", &r).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(std::nullopt, "no_such_domain", "anon", &r).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(RemainingAfterHit("shop_rl", "anon"), 4u);
}

// Verifies a caller decides on the domains of its granted tenant only: the
// other domain's tenant is PERMISSION_DENIED naming it, and takes nothing;
// an unknown domain (no bucket) is answered OK.
TEST_F(EnvoyAuthE2eTest, DomainTenantMustBeGranted) {
  rls::RateLimitResponse r;
  grpc::Status s = Call(std::string(kShopKey), "shop_rl", "bob", &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.statuses(0).limit_remaining(), 4u);
  s = Call(std::string(kShopKey), "default_rl", "bob", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(),
              HasSubstr("caller 'shop-proxy' may not use tenant 'default'"));
  EXPECT_EQ(RemainingAfterHit("default_rl", "bob"), 4u);
  EXPECT_EQ(RemainingAfterHit("shop_rl", "bob"), 3u);
  rls::RateLimitResponse unknown;
  EXPECT_TRUE(Call(std::string(kShopKey), "no_such_domain", "bob", &unknown).ok());
  EXPECT_THAT(server_->StderrText(), ::testing::Not(HasSubstr("KEY")));
}

}  // namespace
}  // namespace traffik::e2e
