#include "app/tls.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/test_certs.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/metrics.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_support::CertKeyFiles;
using testing_support::CertSpec;
using testing_support::ReadWholeFile;
using testing_support::TestCerts;

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

// Verifies which hosts count as loopback for the plaintext warning.
TEST(TlsTest, LoopbackHosts) {
  for (const char* host :
       {"127.0.0.1", "127.1.2.3", "127.255.255.255", "localhost", "LocalHost", "::1"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
  for (const char* host : {"0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "127.0.0",
                           "127.0.0.1.5", "127.0.0.256", "127.0.0.-1", "127.0.0.+1",
                           "example.com", "", "::ffff:127.0.0.1", "1127.0.0.1"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

// Verifies the warning is given for plaintext on a non-loopback address only.
TEST(TlsTest, PlaintextListenWarning) {
  Config config = DefaultConfig();
  config.listen = "0.0.0.0:50051";
  std::optional<std::string> warning = PlaintextListenWarning(config);
  ASSERT_TRUE(warning.has_value());
  EXPECT_THAT(*warning, HasSubstr("0.0.0.0:50051"));
  EXPECT_THAT(*warning, HasSubstr("without TLS"));
  config.listen = "[::]:50051";
  EXPECT_TRUE(PlaintextListenWarning(config).has_value());
  config.listen = "127.0.0.1:0";
  EXPECT_FALSE(PlaintextListenWarning(config).has_value());
  config.listen = "[::1]:0";
  EXPECT_FALSE(PlaintextListenWarning(config).has_value());
  config.listen = "0.0.0.0:50051";
  config.tls = TlsConfig{.cert_file = "c", .key_file = "k"};
  EXPECT_FALSE(PlaintextListenWarning(config).has_value());
}

class TlsPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<TestCerts>> certs = TestCerts::Create();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *std::move(certs);
  }
  std::unique_ptr<TestCerts> certs_;
};

// Verifies a good pair is accepted with its serial and subject, and broken
// ones are refused naming the problem, never echoing the key.
TEST_F(TlsPairTest, CheckKeyCertPair) {
  const std::string cert = Read(certs_->server().cert_file);
  const std::string key = Read(certs_->server().key_file);
  absl::StatusOr<CertificateInfo> info = CheckKeyCertPair(cert, key);
  ASSERT_TRUE(info.ok()) << info.status();
  absl::StatusOr<std::string> serial = TestCerts::Serial(certs_->server().cert_file);
  ASSERT_TRUE(serial.ok());
  EXPECT_EQ(info->serial, *serial);
  EXPECT_THAT(info->subject, HasSubstr("CN=traffik-test-server"));
  EXPECT_FALSE(info->not_after.empty());
  // The key and chain in one text (what gRPC is given) read the same.
  EXPECT_TRUE(CheckKeyCertPair(key + cert, key + cert).ok());

  absl::StatusOr<CertKeyFiles> broken = certs_->MismatchedPair("broken");
  ASSERT_TRUE(broken.ok());
  absl::StatusOr<CertificateInfo> mismatch =
      CheckKeyCertPair(Read(broken->cert_file), Read(broken->key_file));
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.status().message(), HasSubstr("does not belong"));

  EXPECT_THAT(CheckKeyCertPair("", key).status().message(),
              HasSubstr("no PEM certificate"));
  EXPECT_THAT(CheckKeyCertPair(
                  "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key)
                  .status()
                  .message(),
              HasSubstr("does not parse"));
  absl::StatusOr<CertificateInfo> bad_key = CheckKeyCertPair(cert, "not a key");
  EXPECT_THAT(bad_key.status().message(), HasSubstr("key: does not parse"));
  absl::StatusOr<CertificateInfo> cert_as_key = CheckKeyCertPair(cert, cert);
  EXPECT_FALSE(cert_as_key.ok());
  for (const absl::Status& s :
       {mismatch.status(), bad_key.status(), cert_as_key.status()}) {
    EXPECT_THAT(s.message(), Not(HasSubstr("BEGIN")));
  }
  EXPECT_TRUE(
      CheckCaBundle(Read(certs_->ca_file()) + Read(certs_->other_ca_file())).ok());
  EXPECT_FALSE(CheckCaBundle("").ok());
}

// Verifies the watch counts and logs each change of the files once: a good
// new pair as a success (served() follows), a broken one as an error (served()
// stays), an unchanged file not at all.
TEST_F(TlsPairTest, WatchCountsEachChangeOnce) {
  const std::string cert_file = certs_->dir() + "/live.crt";
  const std::string key_file = certs_->dir() + "/live.key";
  auto put = [&](const std::string& cert, const std::string& key) {
    std::ofstream(cert_file, std::ios::trunc) << cert;
    std::ofstream(key_file, std::ios::trunc) << key;
  };
  put(Read(certs_->server().cert_file), Read(certs_->server().key_file));
  Metrics metrics;
  std::mutex mu;
  std::vector<std::string> lines;
  TlsConfig tls{.cert_file = cert_file, .key_file = key_file};
  absl::StatusOr<std::unique_ptr<TlsCertificateWatch>> watch = TlsCertificateWatch::Start(
      tls, metrics,
      [&](const std::string& line) {
        std::lock_guard<std::mutex> lock(mu);
        lines.push_back(line);
      },
      std::chrono::hours(1));  // rounds only by CheckNow
  ASSERT_TRUE(watch.ok()) << watch.status();
  const std::string first_serial = (*watch)->served().serial;
  auto count = [&](const char* result) {
    return absl::StrCat("traffik_tls_certificate_reloads_total{result=\"", result,
                        "\"} ");
  };

  (*watch)->CheckNow();  // nothing changed
  EXPECT_THAT(metrics.RenderText(), HasSubstr(count("success") + "0"));

  absl::StatusOr<CertKeyFiles> broken = certs_->MismatchedPair("broken");
  ASSERT_TRUE(broken.ok());
  put(Read(broken->cert_file), Read(broken->key_file));
  (*watch)->CheckNow();
  (*watch)->CheckNow();
  EXPECT_THAT(metrics.RenderText(), HasSubstr(count("error") + "1"));
  EXPECT_EQ((*watch)->served().serial, first_serial);

  absl::StatusOr<CertKeyFiles> next =
      certs_->Issue("next", CertSpec{.common_name = "next", .server = true});
  ASSERT_TRUE(next.ok());
  put(Read(next->cert_file), Read(next->key_file));
  (*watch)->CheckNow();
  (*watch)->CheckNow();
  EXPECT_THAT(metrics.RenderText(), HasSubstr(count("success") + "1"));
  EXPECT_THAT(metrics.RenderText(), HasSubstr(count("error") + "1"));
  absl::StatusOr<std::string> serial = TestCerts::Serial(next->cert_file);
  ASSERT_TRUE(serial.ok());
  EXPECT_EQ((*watch)->served().serial, *serial);

  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(lines.size(), 2u) << ::testing::PrintToString(lines);
  EXPECT_THAT(lines[0],
              HasSubstr("TLS certificate reload failed, the previous certificate"));
  EXPECT_THAT(lines[0], HasSubstr(first_serial));
  EXPECT_THAT(lines[1],
              HasSubstr(absl::StrCat("TLS certificate reloaded: serial ", *serial)));
}

// Verifies a key file that disappears (and comes back) is a change like any
// other: an error while it is gone, the pair served all along.
TEST_F(TlsPairTest, WatchMissingKeyFile) {
  const std::string cert_file = certs_->dir() + "/live.crt";
  const std::string key_file = certs_->dir() + "/live.key";
  std::ofstream(cert_file) << Read(certs_->server().cert_file);
  std::ofstream(key_file) << Read(certs_->server().key_file);
  Metrics metrics;
  std::vector<std::string> lines;
  absl::StatusOr<std::unique_ptr<TlsCertificateWatch>> watch = TlsCertificateWatch::Start(
      TlsConfig{.cert_file = cert_file, .key_file = key_file}, metrics,
      [&](const std::string& line) { lines.push_back(line); }, std::chrono::hours(1));
  ASSERT_TRUE(watch.ok()) << watch.status();
  const std::string serial = (*watch)->served().serial;
  ASSERT_EQ(std::remove(key_file.c_str()), 0);
  (*watch)->CheckNow();
  (*watch)->CheckNow();
  EXPECT_THAT(metrics.RenderText(),
              HasSubstr("traffik_tls_certificate_reloads_total{result=\"error\"} 1"));
  EXPECT_EQ((*watch)->served().serial, serial);
  std::ofstream(key_file) << Read(certs_->server().key_file);
  (*watch)->CheckNow();
  EXPECT_THAT(metrics.RenderText(),
              HasSubstr("traffik_tls_certificate_reloads_total{result=\"success\"} 1"));
  ASSERT_EQ(lines.size(), 2u) << ::testing::PrintToString(lines);
  EXPECT_THAT(lines[0], HasSubstr("tls.key_file: cannot read"));
}

// Verifies a change of the client CA bundle is checked like the pair: a good
// bundle counted as a success, a broken one as an error (and logged).
TEST_F(TlsPairTest, WatchChecksClientCaChanges) {
  const std::string ca_file = certs_->dir() + "/live-ca.crt";
  std::ofstream(ca_file, std::ios::trunc) << Read(certs_->ca_file());
  Metrics metrics;
  std::mutex mu;
  std::vector<std::string> lines;
  absl::StatusOr<std::unique_ptr<TlsCertificateWatch>> watch = TlsCertificateWatch::Start(
      TlsConfig{.cert_file = certs_->server().cert_file,
                .key_file = certs_->server().key_file,
                .client_ca_file = ca_file,
                .require_client_cert = true},
      metrics,
      [&](const std::string& line) {
        std::lock_guard<std::mutex> lock(mu);
        lines.push_back(line);
      },
      std::chrono::hours(1));
  ASSERT_TRUE(watch.ok()) << watch.status();
  std::ofstream(ca_file, std::ios::trunc)
      << Read(certs_->ca_file()) << Read(certs_->other_ca_file());
  (*watch)->CheckNow();
  std::ofstream(ca_file, std::ios::trunc) << "garbage";
  (*watch)->CheckNow();
  (*watch)->CheckNow();
  const std::string text = metrics.RenderText();
  EXPECT_THAT(text,
              HasSubstr("traffik_tls_certificate_reloads_total{result=\"success\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("traffik_tls_certificate_reloads_total{result=\"error\"} 1"));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(lines.size(), 2u) << ::testing::PrintToString(lines);
  EXPECT_THAT(lines[0], HasSubstr("TLS client CA bundle reloaded"));
  EXPECT_THAT(lines[1],
              HasSubstr("TLS client CA reload failed, the previous bundle keeps"));
}

// Verifies an unusable pair at start is an error naming the fields.
TEST_F(TlsPairTest, WatchRefusesBrokenPairAtStart) {
  absl::StatusOr<CertKeyFiles> broken = certs_->MismatchedPair("broken");
  ASSERT_TRUE(broken.ok());
  Metrics metrics;
  absl::StatusOr<std::unique_ptr<TlsCertificateWatch>> watch = TlsCertificateWatch::Start(
      TlsConfig{.cert_file = broken->cert_file, .key_file = broken->key_file}, metrics,
      [](const std::string&) {});
  EXPECT_EQ(watch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(watch.status().message(), HasSubstr("tls.cert_file/tls.key_file"));
  watch =
      TlsCertificateWatch::Start(TlsConfig{.cert_file = certs_->server().cert_file,
                                           .key_file = certs_->server().key_file,
                                           .client_ca_file = certs_->server().key_file},
                                 metrics, [](const std::string&) {});
  EXPECT_THAT(watch.status().message(), HasSubstr("tls.client_ca_file"));
}

}  // namespace
}  // namespace traffik
