// mtls_identity callers end to end (issue 10): the real traffikd with `tls:`
// (client certificates verified against a throwaway CA, not required) and
// `auth: required`; clients present certificates made in the test.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "common/test_certs.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/v1/admin.grpc.pb.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::testing::HasSubstr;
using testing_support::CertKeyFiles;
using testing_support::CertSpec;
using testing_support::ReadWholeFile;
using testing_support::TestCerts;

constexpr char kSpiffeId[] = "spiffe://cluster.local/ns/shop/sa/checkout";
constexpr char kOpsKey[] = "ops-KEY-over-tls-5e1d";

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

class MtlsAuthE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto certs = TestCerts::Create();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = std::move(*certs);
    auto issue = [](const std::string& name, const CertSpec& spec) {
      absl::StatusOr<CertKeyFiles> files = certs_->Issue(name, spec);
      EXPECT_TRUE(files.ok()) << files.status();
      return files.ok() ? *files : CertKeyFiles();
    };
    CertSpec spiffe;
    spiffe.common_name = "some-workload";
    spiffe.uri_san = kSpiffeId;
    spiffe_ = issue("spiffe", spiffe);
    CertSpec cn;
    cn.common_name = "reporting.example";
    cn_ = issue("cn", cn);
    CertSpec stranger;
    stranger.common_name = "stranger.example";
    stranger_ = issue("stranger", stranger);
    CertSpec other_ca;
    other_ca.common_name = "reporting.example";
    other_ca.other_ca = true;
    other_ca_ = issue("otherca", other_ca);

    absl::StatusOr<TempFile> config =
        TempFile::Create(absl::StrCat("tls:\n  cert_file: ", certs_->server().cert_file,
                                      "\n  key_file: ", certs_->server().key_file,
                                      "\n  client_ca_file: ", certs_->ca_file(), R"yaml(
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
    mtls_identity: )yaml",
                                      kSpiffeId, R"yaml(
    tenants: [shop]
  - name: reporting
    mtls_identity: reporting.example
    tenants: [billing]
  - name: ops
    api_key_sha256: )yaml",
                                      Sha256Hex(kOpsKey), R"yaml(
    tenants: "*"
    admin: true
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
    certs_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static std::shared_ptr<grpc::Channel> Channel(
      const std::optional<CertKeyFiles>& client) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Read(certs_->ca_file());
    if (client) {
      options.pem_private_key = Read(client->key_file);
      options.pem_cert_chain = Read(client->cert_file);
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(server_->grpc_address(),
                                     grpc::SslCredentials(options), args);
  }
  static grpc::Status Decide(const std::optional<CertKeyFiles>& client,
                             const std::string& id, const std::string& tenant,
                             const std::optional<std::string>& authorization = {}) {
    v1::ShouldThrottleRequest request;
    request.set_identifier(id);
    request.set_throttle_uid("search");
    request.set_tenant(tenant);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (authorization) context.AddMetadata("authorization", *authorization);
    v1::ShouldThrottleResponse response;
    return v1::ThrottleService::NewStub(Channel(client))
        ->ShouldThrottle(&context, request, &response);
  }
  // Remaining tokens, read by the ops caller over TLS (3: untouched).
  static uint64_t Remaining(const std::string& id, const std::string& tenant) {
    v1::GetBucketRequest request;
    request.set_identifier(id);
    request.set_throttle_uid("search");
    request.set_tenant(tenant);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    context.AddMetadata("authorization", absl::StrCat("Bearer ", kOpsKey));
    v1::GetBucketResponse response;
    grpc::Status s = v1::AdminService::NewStub(Channel(std::nullopt))
                         ->GetBucket(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.remaining();
  }

  inline static std::unique_ptr<TestCerts> certs_;
  inline static CertKeyFiles spiffe_, cn_, stranger_, other_ca_;
  inline static std::unique_ptr<TraffikdProcess> server_;
  inline static std::unique_ptr<TempFile> config_;
};

// Verifies a client certificate's URI SAN (SPIFFE ID) and subject CN each
// identify their caller in traffikd: granted tenants decide, others are
// PERMISSION_DENIED and take nothing.
TEST_F(MtlsAuthE2eTest, CertificateIdentifiesCaller) {
  grpc::Status s = Decide(spiffe_, "cert", "shop");
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = Decide(spiffe_, "cert", "billing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("caller 'checkout'"));
  s = Decide(cn_, "cert", "billing");
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Decide(cn_, "cert", "").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Remaining("cert", "shop"), 2u);
  EXPECT_EQ(Remaining("cert", "billing"), 2u);
  EXPECT_EQ(Remaining("cert", ""), 3u);
}

// Verifies a certificate naming no caller is UNAUTHENTICATED, TLS without a
// client certificate or key is a missing credential, a certificate of another
// CA fails the handshake; an API key over TLS works. Nothing is taken.
TEST_F(MtlsAuthE2eTest, UnknownMissingAndForeignCertificates) {
  grpc::Status s = Decide(stranger_, "other", "shop");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown credential"));
  s = Decide(std::nullopt, "other", "shop");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("missing credential"));
  s = Decide(other_ca_, "other", "billing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_EQ(Remaining("other", "shop"), 3u);
  EXPECT_EQ(Remaining("other", "billing"), 3u);
  EXPECT_TRUE(
      Decide(std::nullopt, "other", "billing", absl::StrCat("Bearer ", kOpsKey)).ok());
  EXPECT_EQ(Remaining("other", "billing"), 2u);
  EXPECT_THAT(server_->StderrText(), ::testing::Not(HasSubstr(kOpsKey)));
}

}  // namespace
}  // namespace traffik::e2e
