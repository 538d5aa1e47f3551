// End-to-end tests of `auth: required` (issue 10) against the real traffikd on
// the memory backend: every outcome of the API-key checks on ShouldThrottle,
// ShouldThrottleBatch and the AdminService, with the buckets checked untouched
// after every refusal, and the keys never in the logs or /metrics.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/v1/admin.grpc.pb.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kRpcTimeout = std::chrono::seconds(5);

// Distinctive keys, so a leak is found by grepping for them.
constexpr char kCheckoutKey[] = "ck-4f9a1bKEYcheckout-7d21e0";  // api_key_sha256
constexpr char kReportingKey[] = "rp-88c3KEYreporting-0b5f19";  // api_key_file
constexpr char kOpsKey[] = "op-1a2bKEYops-3c4d5e6f";            // api_key_env
constexpr char kViewerKey[] = "vw-77e0KEYviewer-aa0911";        // admin, [shop]
constexpr char kOpsKeyEnv[] = "TRAFFIK_AUTH_E2E_OPS_KEY";

std::string AuthConfig(const std::string& reporting_key_file) {
  return absl::StrCat(R"yaml(
auth: required
admin_api: true
throttles:
  - uid: search
    limit: 3
    period: 1h
tenants:
  - name: default
  - name: shop
  - name: billing
callers:
  - name: checkout
    api_key_sha256: )yaml",
                      Sha256Hex(kCheckoutKey), R"yaml(
    tenants: [shop, default]
  - name: reporting
    api_key_file: )yaml",
                      reporting_key_file, R"yaml(
    tenants: [billing]
  - name: ops
    api_key_env: )yaml",
                      kOpsKeyEnv, R"yaml(
    tenants: "*"
    admin: true
  - name: viewer
    api_key_sha256: )yaml",
                      Sha256Hex(kViewerKey), R"yaml(
    tenants: [shop]
    admin: true
)yaml");
}

v1::ShouldThrottleRequest Hit(const std::string& id, const std::string& tenant = "",
                              bool peek = false) {
  v1::ShouldThrottleRequest r;
  r.set_identifier(id);
  r.set_throttle_uid("search");
  r.set_tenant(tenant);
  r.set_peek(peek);
  return r;
}

// A client context with a deadline and, unless nullopt, `authorization`.
std::unique_ptr<grpc::ClientContext> Context(
    const std::optional<std::string>& authorization) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  if (authorization) context->AddMetadata("authorization", *authorization);
  return context;
}

std::optional<std::string> Bearer(const std::string& key) {
  return absl::StrCat("Bearer ", key);
}

class AuthE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TempFile> key_file =
        TempFile::Create(absl::StrCat(kReportingKey, "\n"), ".key", "traffik-auth-key");
    ASSERT_TRUE(key_file.ok()) << key_file.status();
    absl::StatusOr<TempFile> config = TempFile::Create(AuthConfig(key_file->path()));
    ASSERT_TRUE(config.ok()) << config.status();
    ASSERT_EQ(setenv(kOpsKeyEnv, kOpsKey, 1), 0);  // inherited by traffikd
    auto server =
        TraffikdProcess::Start({"--config", config->path(), "--listen", "127.0.0.1:0",
                                "--metrics-listen", "127.0.0.1:0"});
    unsetenv(kOpsKeyEnv);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    config_ = std::make_unique<TempFile>(*std::move(config));
    key_file_ = std::make_unique<TempFile>(*std::move(key_file));
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
    key_file_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static grpc::Status Decide(const std::optional<std::string>& authorization,
                             const v1::ShouldThrottleRequest& request,
                             v1::ShouldThrottleResponse* response = nullptr) {
    v1::ShouldThrottleResponse ignored;
    auto context = Context(authorization);
    return throttle_->ShouldThrottle(context.get(), request,
                                     response ? response : &ignored);
  }
  static grpc::Status Batch(const std::optional<std::string>& authorization,
                            const std::vector<v1::ShouldThrottleRequest>& requests,
                            v1::ShouldThrottleBatchResponse* response = nullptr,
                            bool all_or_nothing = false) {
    v1::ShouldThrottleBatchRequest request;
    for (const auto& r : requests) *request.add_requests() = r;
    request.set_all_or_nothing(all_or_nothing);
    v1::ShouldThrottleBatchResponse ignored;
    auto context = Context(authorization);
    return throttle_->ShouldThrottleBatch(context.get(), request,
                                          response ? response : &ignored);
  }
  static grpc::Status GetBucket(const std::optional<std::string>& authorization,
                                const std::string& id, const std::string& tenant,
                                v1::GetBucketResponse* response) {
    v1::GetBucketRequest request;
    request.set_identifier(id);
    request.set_throttle_uid("search");
    request.set_tenant(tenant);
    auto context = Context(authorization);
    return admin_->GetBucket(context.get(), request, response);
  }
  // The bucket's remaining tokens, read with the ops (admin, "*") key:
  // 3 means untouched (or never created).
  static uint64_t Remaining(const std::string& id, const std::string& tenant) {
    v1::GetBucketResponse response;
    const grpc::Status status = GetBucket(Bearer(kOpsKey), id, tenant, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.remaining();
  }
  static std::string Metrics() {
    absl::StatusOr<HttpResponse> r = HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->body : "";
  }
  static double Failures(const std::string& reason) {
    return SampleValue(Metrics(), "traffik_auth_failures_total", {{"reason", reason}})
        .value_or(-1);
  }

  inline static std::unique_ptr<TraffikdProcess> server_;
  inline static std::unique_ptr<TempFile> config_;
  inline static std::unique_ptr<TempFile> key_file_;
  inline static std::unique_ptr<v1::ThrottleService::Stub> throttle_;
  inline static std::unique_ptr<v1::AdminService::Stub> admin_;
};

// Verifies a call without credential is UNAUTHENTICATED (single, batch, peek,
// all-or-nothing), counted as missing_credential, and takes nothing.
TEST_F(AuthE2eTest, MissingCredentialIsUnauthenticated) {
  const double before = Failures("missing_credential");
  grpc::Status s = Decide(std::nullopt, Hit("missing", "shop"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("missing credential"));
  EXPECT_EQ(Decide(std::nullopt, Hit("missing", "shop", /*peek=*/true)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Batch(std::nullopt, {Hit("missing", "shop"), Hit("missing")}).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Batch(std::nullopt, {Hit("missing", "shop")}, nullptr, true).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Remaining("missing", "shop"), 3u);
  EXPECT_EQ(Remaining("missing", ""), 3u);
  EXPECT_EQ(Failures("missing_credential"), before + 4);
}

// Verifies an unknown key and every malformed authorization value (other
// scheme, no scheme, two spaces, empty key, an over-long value, two
// authorization entries) are UNAUTHENTICATED as unknown_credential, take
// nothing, and the message never echoes what was sent.
TEST_F(AuthE2eTest, UnknownOrMalformedCredentialIsUnauthenticated) {
  const double before = Failures("unknown_credential");
  const std::vector<std::string> values = {
      "Bearer not-a-configured-key",
      absl::StrCat("Basic ", kCheckoutKey),
      kCheckoutKey,
      absl::StrCat("Bearer  ", kCheckoutKey),
      absl::StrCat("Bearer ", kCheckoutKey, " "),
      "Bearer ",
      absl::StrCat("Bearer ", std::string(5000, 'k')),
  };
  for (const std::string& value : values) {
    grpc::Status s = Decide(value, Hit("unknown", "shop"));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << value;
    EXPECT_THAT(s.error_message(), HasSubstr("unknown credential")) << value;
    EXPECT_THAT(s.error_message(), Not(HasSubstr(kCheckoutKey)));
    EXPECT_THAT(s.error_message(), Not(HasSubstr("not-a-configured-key")));
    EXPECT_EQ(Batch(value, {Hit("unknown", "shop")}).error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << value;
  }
  // The scheme is case-insensitive (RFC 7235): this one is the checkout key.
  EXPECT_TRUE(
      Decide(absl::StrCat("bearer ", kCheckoutKey), Hit("scheme-case", "shop")).ok());
  // Two authorization entries, even both valid, are ambiguous.
  {
    auto context = Context(Bearer(kCheckoutKey));
    context->AddMetadata("authorization", *Bearer(kCheckoutKey));
    v1::ShouldThrottleResponse response;
    EXPECT_EQ(throttle_->ShouldThrottle(context.get(), Hit("unknown", "shop"), &response)
                  .error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(Remaining("unknown", "shop"), 3u);
  EXPECT_EQ(Failures("unknown_credential"), before + 2 * values.size() + 1);
}

// Verifies a valid key on a tenant it is not granted is PERMISSION_DENIED
// naming the caller and the tenant, single and batch (the batch names
// requests[i] and takes nothing, also for its granted items), and that the
// empty tenant is checked as the default tenant.
TEST_F(AuthE2eTest, TenantNotGrantedIsPermissionDenied) {
  const double before = Failures("tenant_not_granted");
  grpc::Status s = Decide(Bearer(kCheckoutKey), Hit("denied", "billing"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(),
              HasSubstr("caller 'checkout' may not use tenant 'billing'"));
  // reporting has [billing] only: "" is the default tenant, not granted.
  s = Decide(Bearer(kReportingKey), Hit("denied", ""));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("tenant 'default'"));
  // An unknown tenant is not granted either (no NOT_FOUND probing).
  EXPECT_EQ(Decide(Bearer(kCheckoutKey), Hit("denied", "nope")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  for (bool all_or_nothing : {false, true}) {
    s = Batch(Bearer(kCheckoutKey),
              {Hit("denied", "shop"), Hit("denied", ""), Hit("denied", "billing")},
              nullptr, all_or_nothing);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(),
                HasSubstr("requests[2]: caller 'checkout' may not use tenant 'billing'"));
  }
  // A hostile tenant is quoted, escaped and truncated.
  s = Decide(Bearer(kCheckoutKey), Hit("denied", std::string(300, 'x') + "\n"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), Not(HasSubstr("\n")));
  EXPECT_LT(s.error_message().size(), 400u);

  EXPECT_EQ(Remaining("denied", "shop"), 3u);
  EXPECT_EQ(Remaining("denied", ""), 3u);
  EXPECT_EQ(Remaining("denied", "billing"), 3u);
  EXPECT_EQ(Failures("tenant_not_granted"), before + 6);
}

// Verifies valid keys from each source (api_key_sha256, api_key_file with its
// newline stripped, api_key_env) decide on their granted tenants, the empty
// tenant as the default one, "*" on every tenant, single and batch, and that
// each accepted call is counted for its caller.
TEST_F(AuthE2eTest, ValidKeysDecide) {
  const std::string m0 = Metrics();
  v1::ShouldThrottleResponse r;
  ASSERT_TRUE(Decide(Bearer(kCheckoutKey), Hit("valid", "shop"), &r).ok());
  EXPECT_EQ(r.remaining(), 2u);
  ASSERT_TRUE(Decide(Bearer(kCheckoutKey), Hit("valid", ""), &r).ok());
  EXPECT_EQ(r.remaining(), 2u);
  ASSERT_TRUE(Decide(Bearer(kCheckoutKey), Hit("valid", "default"), &r).ok());
  EXPECT_EQ(r.remaining(), 1u);
  ASSERT_TRUE(Decide(Bearer(kReportingKey), Hit("valid", "billing"), &r).ok());
  EXPECT_EQ(r.remaining(), 2u);
  for (const char* tenant : {"", "shop", "billing"}) {
    ASSERT_TRUE(Decide(Bearer(kOpsKey), Hit("valid-ops", tenant), &r).ok()) << tenant;
    EXPECT_EQ(r.remaining(), 2u);
  }
  v1::ShouldThrottleBatchResponse b;
  ASSERT_TRUE(Batch(Bearer(kCheckoutKey),
                    {Hit("valid-batch", "shop"), Hit("valid-batch", "")}, &b)
                  .ok());
  ASSERT_EQ(b.responses_size(), 2);
  EXPECT_EQ(b.responses(0).remaining(), 2u);
  ASSERT_TRUE(Batch(Bearer(kOpsKey), {Hit("valid-batch", "billing")}, &b, true).ok());
  EXPECT_TRUE(b.applied());
  EXPECT_EQ(Remaining("valid-batch", "shop"), 2u);
  EXPECT_EQ(Remaining("valid-batch", "billing"), 2u);
  // An unknown tenant with "*" is the engine's NOT_FOUND.
  EXPECT_EQ(Decide(Bearer(kOpsKey), Hit("valid", "nope")).error_code(),
            grpc::StatusCode::NOT_FOUND);

  const std::string m1 = Metrics();
  auto calls = [](const std::string& text, const std::string& caller) {
    return SampleValue(text, "traffik_caller_requests_total", {{"caller", caller}})
        .value_or(0);
  };
  EXPECT_EQ(calls(m1, "checkout") - calls(m0, "checkout"), 4);
  EXPECT_EQ(calls(m1, "reporting") - calls(m0, "reporting"), 1);
  // Decisions keep their labels (no caller label).
  EXPECT_TRUE(
      SampleValue(m1, "traffik_decisions_total",
                  {{"tenant", "shop"}, {"throttle", "search"}, {"result", "allowed"}})
          .has_value());
}

// Verifies the AdminService is for admin callers only (not_admin otherwise),
// within their granted tenants, and UNAUTHENTICATED without a key; a refused
// ResetBuckets removes nothing.
TEST_F(AuthE2eTest, AdminServiceForAdminCallersOnly) {
  ASSERT_TRUE(Decide(Bearer(kCheckoutKey), Hit("admin", "shop")).ok());
  ASSERT_EQ(Remaining("admin", "shop"), 2u);
  const double not_admin = Failures("not_admin");
  v1::GetBucketResponse g;
  grpc::Status s = GetBucket(Bearer(kCheckoutKey), "admin", "shop", &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("caller 'checkout' is not an admin caller"));
  EXPECT_EQ(GetBucket(std::nullopt, "admin", "shop", &g).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // viewer: admin, [shop] only.
  ASSERT_TRUE(GetBucket(Bearer(kViewerKey), "admin", "shop", &g).ok());
  EXPECT_EQ(g.remaining(), 2u);
  EXPECT_EQ(GetBucket(Bearer(kViewerKey), "admin", "billing", &g).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  for (const std::optional<std::string>& who :
       {Bearer(kCheckoutKey), std::optional<std::string>(), Bearer(kViewerKey)}) {
    v1::ResetBucketsRequest reset;
    reset.set_tenant(who == Bearer(kViewerKey) ? "billing" : "shop");
    v1::ResetBucketsResponse removed;
    auto context = Context(who);
    EXPECT_FALSE(admin_->ResetBuckets(context.get(), reset, &removed).ok());
    v1::ListThrottlesRequest list;
    list.set_tenant("shop");
    v1::ListThrottlesResponse throttles;
    auto context2 = Context(who);
    EXPECT_EQ(admin_->ListThrottles(context2.get(), list, &throttles).ok(),
              who == Bearer(kViewerKey));
  }
  EXPECT_EQ(Remaining("admin", "shop"), 2u);
  EXPECT_EQ(Failures("not_admin"), not_admin + 3);
  // An admin caller may reset.
  v1::ResetBucketsRequest reset;
  reset.set_tenant("shop");
  reset.set_throttle_uid("search");
  reset.set_identifier("admin");
  v1::ResetBucketsResponse removed;
  auto context = Context(Bearer(kViewerKey));
  ASSERT_TRUE(admin_->ResetBuckets(context.get(), reset, &removed).ok());
  EXPECT_EQ(removed.removed(), 1u);
}

// Verifies no key appears in traffikd's output or a /metrics scrape after
// every kind of refused and accepted call, and that refusals were logged.
TEST_F(AuthE2eTest, KeysNeverInLogsOrMetrics) {
  for (const char* key : {kCheckoutKey, kReportingKey, kOpsKey, kViewerKey}) {
    Decide(Bearer(key), Hit("leak", "billing"));
    Decide(absl::StrCat("Basic ", key), Hit("leak", "shop"));
    Decide(key, Hit("leak", "shop"));
  }
  ASSERT_TRUE(server_->WaitForStderr("auth: ", std::chrono::seconds(5)));
  const std::string logs = server_->StderrText();
  const std::string metrics = Metrics();
  for (const char* key : {kCheckoutKey, kReportingKey, kOpsKey, kViewerKey}) {
    EXPECT_THAT(logs, Not(HasSubstr(key)));
    EXPECT_THAT(metrics, Not(HasSubstr(key)));
    // Nor a recognisable part of one.
    EXPECT_THAT(logs, Not(HasSubstr("KEY")));
    EXPECT_THAT(metrics, Not(HasSubstr("KEY")));
  }
  EXPECT_THAT(logs, HasSubstr("refused (tenant_not_granted)"));
}

// Verifies the refusal log line is rate-limited: 200 refused calls add at
// most the site's burst (10 lines) plus what refills meanwhile.
TEST_F(AuthE2eTest, RefusalLogIsRateLimited) {
  auto count = [] {
    const std::string logs = server_->StderrText();
    size_t n = 0;
    for (size_t at = logs.find("refused ("); at != std::string::npos;
         at = logs.find("refused (", at + 1)) {
      ++n;
    }
    return n;
  };
  const size_t before = count();
  for (int i = 0; i < 200; ++i) Decide(std::nullopt, Hit("flood", "shop"));
  EXPECT_LE(count() - before, 12u);
  EXPECT_EQ(Remaining("flood", "shop"), 3u);
}

// `auth: off` with callers configured: every call is served as before and a
// presented credential, valid or not, is ignored.
class AuthOffE2eTest : public ::testing::Test {};

// Verifies auth: off ignores credentials (none, unknown, valid) and serves
// the AdminService to anyone, as before issue 10.
TEST_F(AuthOffE2eTest, CredentialsIgnored) {
  absl::StatusOr<TempFile> config =
      TempFile::Create(absl::StrCat(R"yaml(
auth: off
admin_api: true
throttles:
  - uid: search
    limit: 3
    period: 1h
tenants:
  - name: default
  - name: billing
callers:
  - name: checkout
    api_key_sha256: )yaml",
                                    Sha256Hex(kCheckoutKey), R"yaml(
    tenants: [default]
)yaml"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto server =
      TraffikdProcess::Start({"--config", config->path(), "--listen", "127.0.0.1:0",
                              "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel =
      grpc::CreateChannel((*server)->grpc_address(), grpc::InsecureChannelCredentials());
  auto throttle = v1::ThrottleService::NewStub(channel);
  auto admin = v1::AdminService::NewStub(channel);
  for (const std::optional<std::string>& who :
       {std::optional<std::string>(), Bearer("nope"), Bearer(kCheckoutKey)}) {
    v1::ShouldThrottleResponse r;
    auto c1 = Context(who);
    EXPECT_TRUE(throttle->ShouldThrottle(c1.get(), Hit("off", "billing"), &r).ok());
    v1::GetBucketRequest get;
    get.set_identifier("off");
    get.set_throttle_uid("search");
    get.set_tenant("billing");
    v1::GetBucketResponse g;
    auto c2 = Context(who);
    EXPECT_TRUE(admin->GetBucket(c2.get(), get, &g).ok());
  }
}

std::string ReloadConfig(const std::string& key, const std::string& tenants) {
  return absl::StrCat(R"yaml(
auth: required
watch_config: false
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
                      Sha256Hex(key), "\n    tenants: ", tenants, "\n");
}

// Verifies a reload swaps the callers with the config: after SIGHUP the old
// key is unknown, the new key works, and a changed grant applies at once; a
// reload that fails (auth: required without callers) keeps the old callers;
// reloads to auth: off and back to required apply at once.
TEST(AuthReloadE2eTest, ReloadSwapsCallers) {
  absl::StatusOr<TempFile> config =
      TempFile::Create(ReloadConfig(kCheckoutKey, "[shop]"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto server =
      TraffikdProcess::Start({"--config", config->path(), "--listen", "127.0.0.1:0",
                              "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::ThrottleService::NewStub(
      grpc::CreateChannel((*server)->grpc_address(), grpc::InsecureChannelCredentials()));
  auto decide = [&](const std::string& key, const std::string& tenant) {
    v1::ShouldThrottleResponse response;
    auto context = Context(Bearer(key));
    return stub->ShouldThrottle(context.get(), Hit("reload", tenant), &response)
        .error_code();
  };
  auto reload = [&](const std::string& yaml, const std::string& needle) {
    FILE* f = fopen(config->path().c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs(yaml.c_str(), f);
    fclose(f);
    ASSERT_TRUE((*server)->SendSignal(SIGHUP));
    bool seen = false;
    for (int i = 0; i < 100 && !seen; ++i) {
      absl::StatusOr<HttpResponse> page = HttpGet((*server)->metrics_port(), "/metrics");
      seen = page.ok() && absl::StrContains(page->body, needle);
      if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(seen) << needle;
  };
  EXPECT_EQ(decide(kCheckoutKey, "shop"), grpc::StatusCode::OK);
  EXPECT_EQ(decide(kCheckoutKey, ""), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(decide(kViewerKey, "shop"), grpc::StatusCode::UNAUTHENTICATED);

  reload(ReloadConfig(kViewerKey, "[shop, default]"),
         "traffik_config_reloads_total{result=\"success\"} 1");
  EXPECT_EQ(decide(kCheckoutKey, "shop"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(decide(kViewerKey, "shop"), grpc::StatusCode::OK);
  EXPECT_EQ(decide(kViewerKey, ""), grpc::StatusCode::OK);

  reload("auth: required\ncallers: []\n",
         "traffik_config_reloads_total{result=\"error\"} 1");
  EXPECT_EQ(decide(kViewerKey, "shop"), grpc::StatusCode::OK);
  EXPECT_EQ(decide(kCheckoutKey, "shop"), grpc::StatusCode::UNAUTHENTICATED);

  // auth: off and back: credentials ignored, then required again.
  std::string off = ReloadConfig(kViewerKey, "[shop]");
  off.replace(off.find("auth: required"), 14, "auth: off");
  reload(off, "traffik_config_reloads_total{result=\"success\"} 2");
  EXPECT_EQ(decide("anything", "shop"), grpc::StatusCode::OK);
  EXPECT_EQ(decide(kCheckoutKey, ""), grpc::StatusCode::OK);
  reload(ReloadConfig(kViewerKey, "[shop]"),
         "traffik_config_reloads_total{result=\"success\"} 3");
  EXPECT_EQ(decide("anything", "shop"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(decide(kViewerKey, ""), grpc::StatusCode::PERMISSION_DENIED);
}

}  // namespace
}  // namespace traffik::e2e
