#include "common/test_certs.h"

#include <chrono>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik::testing_support {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Text(const std::string& cert_file) {
  absl::StatusOr<std::string> text =
      RunOpenssl({"x509", "-in", cert_file, "-noout", "-text"});
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

std::string PublicKey(const std::string& file, bool is_cert) {
  absl::StatusOr<std::string> text =
      is_cert ? RunOpenssl({"x509", "-in", file, "-noout", "-pubkey"})
              : RunOpenssl({"pkey", "-in", file, "-pubout"});
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

// Verifies the CA, the server certificate (IP + DNS SANs, chained to the CA) and
// the unrelated CA are made, within a few seconds.
TEST(TestCertsTest, CreatesCaServerAndOtherCa) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<TestCerts>> certs = TestCerts::Create();
  ASSERT_TRUE(certs.ok()) << certs.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  const TestCerts& c = **certs;
  EXPECT_TRUE(RunOpenssl({"verify", "-CAfile", c.ca_file(), c.server().cert_file}).ok());
  EXPECT_FALSE(
      RunOpenssl({"verify", "-CAfile", c.other_ca_file(), c.server().cert_file}).ok());
  const std::string text = Text(c.server().cert_file);
  EXPECT_THAT(text, HasSubstr("IP Address:127.0.0.1"));
  EXPECT_THAT(text, HasSubstr("DNS:localhost"));
  EXPECT_THAT(text, HasSubstr("CN = traffik-test-server"));
  EXPECT_EQ(PublicKey(c.server().cert_file, true), PublicKey(c.server().key_file, false));
}

// Verifies client certificates carry the given CN and URI SAN, chain to the CA
// that was asked for, and get distinct serials.
TEST(TestCertsTest, IssuesClientCertificates) {
  absl::StatusOr<std::unique_ptr<TestCerts>> certs = TestCerts::Create();
  ASSERT_TRUE(certs.ok()) << certs.status();
  TestCerts& c = **certs;
  absl::StatusOr<CertKeyFiles> alice = c.Issue(
      "alice",
      CertSpec{.common_name = "alice", .uri_san = "spiffe://cluster.local/ns/a/sa/b"});
  ASSERT_TRUE(alice.ok()) << alice.status();
  const std::string text = Text(alice->cert_file);
  EXPECT_THAT(text, HasSubstr("CN = alice"));
  EXPECT_THAT(text, HasSubstr("URI:spiffe://cluster.local/ns/a/sa/b"));
  EXPECT_THAT(text, HasSubstr("TLS Web Client Authentication"));
  EXPECT_TRUE(RunOpenssl({"verify", "-CAfile", c.ca_file(), alice->cert_file}).ok());

  absl::StatusOr<CertKeyFiles> mallory =
      c.Issue("mallory", CertSpec{.common_name = "mallory", .other_ca = true});
  ASSERT_TRUE(mallory.ok()) << mallory.status();
  EXPECT_THAT(Text(mallory->cert_file), Not(HasSubstr("URI:")));
  EXPECT_FALSE(RunOpenssl({"verify", "-CAfile", c.ca_file(), mallory->cert_file}).ok());
  EXPECT_TRUE(
      RunOpenssl({"verify", "-CAfile", c.other_ca_file(), mallory->cert_file}).ok());

  absl::StatusOr<std::string> serial_a = TestCerts::Serial(alice->cert_file);
  absl::StatusOr<std::string> serial_m = TestCerts::Serial(mallory->cert_file);
  ASSERT_TRUE(serial_a.ok() && serial_m.ok());
  EXPECT_NE(*serial_a, *serial_m);
  EXPECT_FALSE(c.Issue("bad/name", CertSpec{.common_name = "x"}).ok());
  EXPECT_FALSE(c.Issue("ok", CertSpec{.common_name = "a/CN=b"}).ok());
}

// Verifies the mismatched pair's key does not belong to its certificate.
TEST(TestCertsTest, MismatchedPairDoesNotMatch) {
  absl::StatusOr<std::unique_ptr<TestCerts>> certs = TestCerts::Create();
  ASSERT_TRUE(certs.ok()) << certs.status();
  absl::StatusOr<CertKeyFiles> pair = (*certs)->MismatchedPair("broken");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_NE(PublicKey(pair->cert_file, true), PublicKey(pair->key_file, false));
  EXPECT_TRUE(
      RunOpenssl({"verify", "-CAfile", (*certs)->ca_file(), pair->cert_file}).ok());
}

}  // namespace
}  // namespace traffik::testing_support
