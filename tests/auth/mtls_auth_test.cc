// mtls_identity callers (issue 10) over real gRPC TLS in process: a server
// that verifies client certificates against a throwaway CA
// (tests/common/test_certs.h), the ThrottleService with `auth: required`, and
// clients presenting certificates with a URI SAN (SPIFFE ID), a CN, an
// unknown identity, a certificate of another CA, or none.

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "backend/memory/memory_backend.h"
#include "clock/clock.h"
#include "common/test_certs.h"
#include "config/config.h"
#include "engine/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/metrics.h"
#include "service/throttle_service.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using testing_support::CertKeyFiles;
using testing_support::CertSpec;
using testing_support::ReadWholeFile;
using testing_support::TestCerts;

constexpr char kSpiffeId[] = "spiffe://cluster.local/ns/shop/sa/checkout";

std::string ConfigYaml(const TestCerts& certs) {
  return absl::StrCat("tls:\n  cert_file: ", certs.server().cert_file,
                      "\n  key_file: ", certs.server().key_file,
                      "\n  client_ca_file: ", certs.ca_file(), R"yaml(
auth: required
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
  - name: keyed
    api_key_sha256: )yaml",
                      Sha256Hex("tls-key"), R"yaml(
    tenants: [default]
)yaml");
}

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

class MtlsAuthTest : public ::testing::Test {
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
    spiffe.common_name = "some-workload";  // not configured: the URI SAN matches
    spiffe.uri_san = kSpiffeId;
    spiffe_ = issue("spiffe", spiffe);
    CertSpec cn;
    cn.common_name = "reporting.example";
    cn_ = issue("cn", cn);
    CertSpec stranger;
    stranger.common_name = "stranger.example";
    stranger.uri_san = "spiffe://cluster.local/ns/other/sa/x";
    stranger_ = issue("stranger", stranger);
    CertSpec other_ca;
    other_ca.common_name = "reporting.example";
    other_ca.other_ca = true;
    other_ca_ = issue("otherca", other_ca);

    absl::StatusOr<Config> config = ParseConfig(ConfigYaml(*certs_), "mtls.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = new Config(*std::move(config));
    memory_ = new MemoryBackend(clock_, MemoryBackendOptions{1'000'000, 0});
    metrics_ = new Metrics();
    for (const TenantConfig& t : config_->tenants) {
      partitions_[t.name] = memory_->AddPartition(t.name, {uint64_t{1} << 30, 1000});
    }
    auto snap = Snapshot::Build(
        *config_,
        [](const TenantConfig& t) -> absl::StatusOr<Snapshot::TenantBackend> {
          return Snapshot::TenantBackend(memory_, partitions_.at(t.name));
        },
        *metrics_);
    ASSERT_TRUE(snap.ok()) << snap.status();
    engine_ = new Engine(*snap);
    service_ = new ThrottleServiceImpl(*engine_, *metrics_);

    // Client certificates optional, verified against the CA when sent.
    grpc::SslServerCredentialsOptions options(
        GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = Read(certs_->ca_file());
    options.pem_key_cert_pairs.push_back(
        {Read(certs_->server().key_file), Read(certs_->server().cert_file)});
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(options), &port_);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(service_);
    server_ = builder.BuildAndStart().release();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Shutdown();
    delete server_;
    delete service_;
    delete engine_;
    delete metrics_;
    delete memory_;
    delete config_;
    certs_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  // A stub over TLS (server verified against the CA) presenting `client`
  // (none when nullopt); a fresh channel each time, so each gets its own
  // handshake.
  static std::unique_ptr<v1::ThrottleService::Stub> Stub(
      const std::optional<CertKeyFiles>& client) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Read(certs_->ca_file());
    if (client) {
      options.pem_private_key = Read(client->key_file);
      options.pem_cert_chain = Read(client->cert_file);
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return v1::ThrottleService::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", port_), grpc::SslCredentials(options), args));
  }
  static grpc::Status Decide(const std::optional<CertKeyFiles>& client,
                             const std::string& id, const std::string& tenant,
                             const std::optional<std::string>& authorization = {},
                             v1::ShouldThrottleResponse* response = nullptr) {
    v1::ShouldThrottleRequest request;
    request.set_identifier(id);
    request.set_throttle_uid("search");
    request.set_tenant(tenant);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (authorization) context.AddMetadata("authorization", *authorization);
    v1::ShouldThrottleResponse ignored;
    return Stub(client)->ShouldThrottle(&context, request,
                                        response ? response : &ignored);
  }
  // Remaining tokens of a bucket, read from the engine (3: untouched).
  static uint64_t Remaining(const std::string& id, const std::string& tenant) {
    HitRequest hit;
    hit.identifier = id;
    hit.throttle_uid = "search";
    hit.tenant = tenant;
    uint64_t remaining = 0;
    engine_->GetBucket(hit, [&remaining](absl::StatusOr<PeekResult> result) {
      EXPECT_TRUE(result.ok()) << result.status();
      if (result.ok()) remaining = result->as_is.remaining;
    });
    return remaining;
  }

  inline static std::unique_ptr<TestCerts> certs_;
  inline static CertKeyFiles spiffe_, cn_, stranger_, other_ca_;
  inline static FakeClock clock_{1'000'000};
  inline static Config* config_ = nullptr;
  inline static MemoryBackend* memory_ = nullptr;
  inline static Metrics* metrics_ = nullptr;
  inline static absl::flat_hash_map<std::string, MemoryBackend::Partition*> partitions_;
  inline static Engine* engine_ = nullptr;
  inline static ThrottleServiceImpl* service_ = nullptr;
  inline static grpc::Server* server_ = nullptr;
  inline static int port_ = 0;
};

// Verifies a verified client certificate whose URI SAN (SPIFFE ID) is a
// configured mtls_identity is that caller: its tenant decides, another is
// PERMISSION_DENIED and takes nothing.
TEST_F(MtlsAuthTest, UriSanIdentifiesCaller) {
  v1::ShouldThrottleResponse r;
  grpc::Status s = Decide(spiffe_, "uri", "shop", {}, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.remaining(), 2u);
  s = Decide(spiffe_, "uri", "billing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(),
              HasSubstr("caller 'checkout' may not use tenant 'billing'"));
  EXPECT_EQ(Remaining("uri", "billing"), 3u);
}

// Verifies a verified client certificate's subject CN identifies its caller.
TEST_F(MtlsAuthTest, CommonNameIdentifiesCaller) {
  ASSERT_TRUE(Decide(cn_, "cn", "billing").ok());
  EXPECT_EQ(Remaining("cn", "billing"), 2u);
  EXPECT_EQ(Decide(cn_, "cn", "shop").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Remaining("cn", "shop"), 3u);
}

// Verifies a verified certificate naming no caller is UNAUTHENTICATED
// (unknown credential), and TLS without a client certificate is a missing
// credential; neither takes anything.
TEST_F(MtlsAuthTest, UnknownOrNoCertificateIsUnauthenticated) {
  const std::string before = metrics_->RenderText();
  grpc::Status s = Decide(stranger_, "stranger", "shop");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown credential"));
  s = Decide(std::nullopt, "stranger", "shop");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("missing credential"));
  EXPECT_EQ(Remaining("stranger", "shop"), 3u);
  const std::string after = metrics_->RenderText();
  EXPECT_THAT(after,
              HasSubstr("traffik_auth_failures_total{reason=\"unknown_credential\"} 1"));
  EXPECT_THAT(after,
              HasSubstr("traffik_auth_failures_total{reason=\"missing_credential\"} 1"));
}

// Verifies a certificate from another CA, even with a configured CN, never
// reaches the service: the handshake fails.
TEST_F(MtlsAuthTest, CertificateOfAnotherCaIsRefused) {
  grpc::Status s = Decide(other_ca_, "otherca", "billing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_EQ(Remaining("otherca", "billing"), 3u);
}

// Verifies an API key works over TLS too and decides alone: with the key of
// `keyed` and the certificate of `checkout`, the call is `keyed`'s.
TEST_F(MtlsAuthTest, ApiKeyOverTlsDecidesAlone) {
  ASSERT_TRUE(Decide(std::nullopt, "key", "", std::string("Bearer tls-key")).ok());
  EXPECT_EQ(Decide(spiffe_, "key", "shop", std::string("Bearer tls-key")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Decide(spiffe_, "key", "shop", std::string("Bearer wrong")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Remaining("key", "shop"), 3u);
}

}  // namespace
}  // namespace traffik
