// The client library's api_key against traffikd with `auth: required`
// (issue 10): a valid key decides, and a credential error (unknown key, no
// key, tenant not granted) is returned as an error under every failure
// policy, never turned into "allowed" by FailurePolicy::kAllow.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/client.h"

namespace traffik::e2e {
namespace {

constexpr char kKey[] = "client-KEY-3f0c9a";

class ClientAuthE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TempFile> config =
        TempFile::Create(absl::StrCat(R"yaml(
auth: required
throttles:
  - uid: search
    limit: 3
    period: 1h
tenants:
  - name: default
  - name: shop
callers:
  - name: app
    api_key_sha256: )yaml",
                                      Sha256Hex(kKey), R"yaml(
    tenants: [shop]
)yaml"));
    ASSERT_TRUE(config.ok()) << config.status();
    auto server =
        TraffikdProcess::Start({"--config", config->path(), "--listen", "127.0.0.1:0",
                                "--metrics-listen", "127.0.0.1:0"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    config_ = std::make_unique<TempFile>(*std::move(config));
  }
  static void TearDownTestSuite() {
    server_.reset();
    config_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  // A client with `api_key` (none if empty) whose default policy is kAllow,
  // logging into `log_`.
  std::shared_ptr<Client> NewClient(const std::string& api_key) {
    ClientOptions options;
    options.target = server_->grpc_address();
    options.deadline = std::chrono::milliseconds(5000);
    options.failure_policy = FailurePolicy::kAllow;
    options.api_key = api_key;
    options.log = [this](const std::string& line) { log_.push_back(line); };
    absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *client : nullptr;
  }
  static ThrottleRequest Hit(const std::string& tenant) {
    ThrottleRequest r;
    r.identifier = "client-user";
    r.throttle_uid = "search";
    r.tenant = tenant;
    return r;
  }

  std::vector<std::string> log_;
  inline static std::unique_ptr<TraffikdProcess> server_;
  inline static std::unique_ptr<TempFile> config_;
};

// Verifies ClientOptions::api_key is sent and a granted tenant decides.
TEST_F(ClientAuthE2eTest, ValidKeyDecides) {
  std::shared_ptr<Client> client = NewClient(kKey);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<ThrottleResult> r = client->Check(Hit("shop"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->allowed);
  EXPECT_EQ(r->source, ThrottleResult::Source::kServer);
}

// Verifies credential errors stay errors under kAllow (and kDeny), single and
// batch: UNAUTHENTICATED for no or a wrong key, PERMISSION_DENIED for a
// tenant not granted; the failure is logged without the key.
TEST_F(ClientAuthE2eTest, CredentialErrorsNeverAllowed) {
  struct Case {
    std::string key;
    std::string tenant;
    absl::StatusCode code;
  };
  for (const Case& c : {Case{"", "shop", absl::StatusCode::kUnauthenticated},
                        Case{"wrong-key", "shop", absl::StatusCode::kUnauthenticated},
                        Case{kKey, "default", absl::StatusCode::kPermissionDenied}}) {
    std::shared_ptr<Client> client = NewClient(c.key);
    ASSERT_NE(client, nullptr);
    for (FailurePolicy policy : {FailurePolicy::kAllow, FailurePolicy::kDeny}) {
      absl::StatusOr<ThrottleResult> r = client->Check(Hit(c.tenant), policy);
      EXPECT_EQ(r.status().code(), c.code) << c.key << " " << c.tenant;
      absl::StatusOr<BatchResult> b =
          client->CheckBatch({Hit(c.tenant)}, {.policy = policy});
      EXPECT_EQ(b.status().code(), c.code) << c.key << " " << c.tenant;
    }
  }
  EXPECT_FALSE(log_.empty());
  for (const std::string& line : log_)
    EXPECT_THAT(line, ::testing::Not(::testing::HasSubstr("KEY")));
}

}  // namespace
}  // namespace traffik::e2e
