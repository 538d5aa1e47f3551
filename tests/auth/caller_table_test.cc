// CallerTable (auth/caller_table.h): authentication from presented
// credentials and the tenant grant, without a transport.
#include "auth/caller_table.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;

Config TestConfig() {
  absl::StatusOr<Config> config = ParseConfig(absl::StrCat(R"yaml(
auth: required
default_tenant: shop
tenants:
  - name: shop
  - name: billing
callers:
  - name: checkout
    api_key_sha256: )yaml",
                                                           Sha256Hex("key-one"), R"yaml(
    tenants: [shop]
  - name: other
    api_key_sha256: )yaml",
                                                           Sha256Hex("key-two"), R"yaml(
    tenants: "*"
)yaml"),
                                              "t.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  // mtls_identity callers need tls.client_ca_file, whose file ParseConfig
  // checks: added here (the table reads no file).
  config->tls = TlsConfig{"server.crt", "server.key", "clients-ca.crt", false};
  CallerConfig spiffe;
  spiffe.name = "spiffe";
  spiffe.mtls_identity = "spiffe://cluster.local/ns/a/sa/b";
  spiffe.tenants = {"billing"};
  CallerConfig cn;
  cn.name = "cn";
  cn.mtls_identity = "client.example";
  cn.tenants = {"shop"};
  config->callers.push_back(spiffe);
  config->callers.push_back(cn);
  return *config;
}

PresentedCredentials Key(absl::string_view authorization) {
  PresentedCredentials c;
  c.authorization_count = 1;
  c.authorization = authorization;
  return c;
}

class CallerTableTest : public ::testing::Test {
 protected:
  CallerTableTest() : config_(TestConfig()), table_(config_, /*metrics=*/nullptr) {}

  // The caller's name, or the failure's label.
  std::string Who(const PresentedCredentials& credentials) {
    AuthFailure failure = AuthFailure::kNotAdmin;
    absl::StatusOr<const Caller*> caller = table_.Authenticate(credentials, &failure);
    if (caller.ok()) return (*caller)->name;
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated);
    return AuthFailureName(failure);
  }

  Config config_;
  CallerTable table_;
};

// Verifies API keys: each configured key finds its caller; no entry is
// missing; an unknown key, other schemes, bad separators, empty, over-long
// and two entries are unknown; the scheme is case-insensitive.
TEST_F(CallerTableTest, ApiKeys) {
  EXPECT_TRUE(table_.required());
  EXPECT_EQ(Who(Key("Bearer key-one")), "checkout");
  EXPECT_EQ(Who(Key("Bearer key-two")), "other");
  EXPECT_EQ(Who(Key("BEARER key-two")), "other");
  EXPECT_EQ(Who(PresentedCredentials()), "missing_credential");
  for (absl::string_view bad :
       {"Bearer key-three", "Basic key-one", "key-one", "Bearer  key-one",
        "Bearer key-one ", "Bearer", "Bearer ", "Bearerkey-one", "Bearer\tkey-one",
        "Bearer key\x01one"}) {
    EXPECT_EQ(Who(Key(bad)), "unknown_credential") << bad;
  }
  const std::string long_key = absl::StrCat("Bearer ", std::string(5000, 'k'));
  EXPECT_EQ(Who(Key(long_key)), "unknown_credential");
  PresentedCredentials two = Key("Bearer key-one");
  two.authorization_count = 2;
  EXPECT_EQ(Who(two), "unknown_credential");
}

// Verifies certificate identities: a URI SAN or the CN finds its caller
// (URI SANs tried first); an unknown identity is unknown; a key, when sent,
// decides alone.
TEST_F(CallerTableTest, PeerIdentities) {
  PresentedCredentials c;
  c.peer_identities = {"spiffe://cluster.local/ns/a/sa/b", "client.example"};
  EXPECT_EQ(Who(c), "spiffe");
  c.peer_identities = {"spiffe://elsewhere", "client.example"};
  EXPECT_EQ(Who(c), "cn");
  c.peer_identities = {"spiffe://elsewhere", "nobody.example"};
  EXPECT_EQ(Who(c), "unknown_credential");
  c.peer_identities = {"client.example"};
  c.authorization_count = 1;
  c.authorization = "Bearer wrong";
  EXPECT_EQ(Who(c), "unknown_credential");
  c.authorization = "Bearer key-two";
  EXPECT_EQ(Who(c), "other");
}

// Verifies the tenant grant: granted names, "" as the configured default
// tenant, "*" for any (even unknown) tenant, and a refusal's message quoting
// and truncating the tenant.
TEST_F(CallerTableTest, TenantGrant) {
  AuthFailure failure;
  const Caller* checkout = *table_.Authenticate(Key("Bearer key-one"), &failure);
  const Caller* other = *table_.Authenticate(Key("Bearer key-two"), &failure);
  EXPECT_TRUE(table_.CheckTenant(*checkout, "shop").ok());
  EXPECT_TRUE(table_.CheckTenant(*checkout, "").ok());  // default_tenant: shop
  absl::Status s = table_.CheckTenant(*checkout, "billing");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "caller 'checkout' may not use tenant 'billing'");
  s = table_.CheckTenant(*checkout, std::string(500, 'x') + "'\n");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("(502 bytes)"));
  EXPECT_LT(s.message().size(), 200u);
  for (absl::string_view t : {"", "shop", "billing", "unknown"}) {
    EXPECT_TRUE(table_.CheckTenant(*other, t).ok()) << t;
  }
}

// Verifies certificate identities are ignored (missing credential) when
// the config has no tls.client_ca_file: nothing vouches for them then.
TEST(CallerTableNoClientCaTest, IdentitiesIgnored) {
  Config config = TestConfig();
  config.tls->client_ca_file.clear();
  CallerTable table(config, nullptr);
  PresentedCredentials c;
  c.peer_identities = {"client.example"};
  AuthFailure failure = AuthFailure::kNotAdmin;
  EXPECT_EQ(table.Authenticate(c, &failure).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(failure, AuthFailure::kMissingCredential);
  config.tls.reset();
  CallerTable plaintext(config, nullptr);
  failure = AuthFailure::kNotAdmin;
  EXPECT_FALSE(plaintext.Authenticate(c, &failure).ok());
  EXPECT_EQ(failure, AuthFailure::kMissingCredential);
}

// Verifies a table from a config without auth is not required.
TEST(CallerTableOffTest, OffByDefault) {
  CallerTable table(DefaultConfig(), nullptr);
  EXPECT_FALSE(table.required());
  EXPECT_EQ(table.size(), 0u);
}

}  // namespace
}  // namespace traffik
