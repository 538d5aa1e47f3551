#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;

// A temp directory with three small files (contents do not matter to the
// parser: the server checks them), removed afterwards.
class TlsConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/traffik-tls-config-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    for (const char* name : {"tls.crt", "tls.key", "ca.crt"}) {
      std::ofstream(absl::StrCat(dir_, "/", name)) << "x\n";
    }
  }
  void TearDown() override {
    for (const char* name : {"tls.crt", "tls.key", "ca.crt"}) {
      unlink(absl::StrCat(dir_, "/", name).c_str());
    }
    rmdir(dir_.c_str());
  }
  std::string File(const char* name) const { return absl::StrCat(dir_, "/", name); }

  absl::StatusOr<Config> Parse(const std::string& tls_block) const {
    return ParseConfig(absl::StrCat("tls:\n", tls_block), "test.yaml");
  }

  std::string dir_;
};

// Verifies plaintext is the default: no `tls:` means no TLS.
TEST_F(TlsConfigTest, DefaultIsPlaintext) {
  absl::StatusOr<Config> config = ParseConfig("listen: 127.0.0.1:0\n", "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->tls.has_value());
  EXPECT_FALSE(DefaultConfig().tls.has_value());
}

// Verifies every tls key is read.
TEST_F(TlsConfigTest, FullTlsBlockParses) {
  absl::StatusOr<Config> config = Parse(absl::StrCat(
      "  cert_file: ", File("tls.crt"), "\n  key_file: ", File("tls.key"),
      "\n  client_ca_file: ", File("ca.crt"), "\n  require_client_cert: true\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->tls.has_value());
  EXPECT_EQ(config->tls->cert_file, File("tls.crt"));
  EXPECT_EQ(config->tls->key_file, File("tls.key"));
  EXPECT_EQ(config->tls->client_ca_file, File("ca.crt"));
  EXPECT_TRUE(config->tls->require_client_cert);

  config = Parse(absl::StrCat("  cert_file: ", File("tls.crt"),
                              "\n  key_file: ", File("tls.key"), "\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->tls->client_ca_file, "");
  EXPECT_FALSE(config->tls->require_client_cert);
}

// Verifies cert_file and key_file are required together, each error naming
// the missing field with the file's position.
TEST_F(TlsConfigTest, CertAndKeyRequiredTogether) {
  absl::StatusOr<Config> config =
      Parse(absl::StrCat("  cert_file: ", File("tls.crt"), "\n"));
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              HasSubstr("test.yaml:2:14: tls.key_file: required with cert_file"));
  config = Parse(absl::StrCat("  key_file: ", File("tls.key"), "\n"));
  EXPECT_THAT(config.status().message(),
              HasSubstr("tls.cert_file: required with key_file"));
  config = Parse("  require_client_cert: false\n");
  EXPECT_THAT(config.status().message(),
              HasSubstr("tls: cert_file and key_file are required"));
  config = ParseConfig("tls: {}\n", "test.yaml");
  EXPECT_THAT(config.status().message(),
              HasSubstr("tls: cert_file and key_file are required"));
}

// Verifies require_client_cert needs client_ca_file.
TEST_F(TlsConfigTest, RequireClientCertNeedsCa) {
  absl::StatusOr<Config> config = Parse(absl::StrCat("  cert_file: ", File("tls.crt"),
                                                     "\n  key_file: ", File("tls.key"),
                                                     "\n  require_client_cert: true\n"));
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              HasSubstr("tls.require_client_cert: needs tls.client_ca_file"));
}

// Verifies a missing, unreadable or directory file is an error naming the
// field and the path, and that unknown keys and wrong types are refused.
TEST_F(TlsConfigTest, FilesMustBeReadable) {
  absl::StatusOr<Config> config = Parse(absl::StrCat(
      "  cert_file: ", File("tls.crt"), "\n  key_file: ", File("nope.key"), "\n"));
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("tls.key_file: cannot read"));
  EXPECT_THAT(config.status().message(), HasSubstr("nope.key"));
  EXPECT_THAT(config.status().message(), HasSubstr("no such file"));

  config =
      Parse(absl::StrCat("  cert_file: ", dir_, "\n  key_file: ", File("tls.key"), "\n"));
  EXPECT_THAT(config.status().message(), HasSubstr("tls.cert_file: "));
  EXPECT_THAT(config.status().message(), HasSubstr("is a directory"));

  config = Parse(absl::StrCat("  cert_file: ", File("tls.crt"),
                              "\n  key_file: ", File("tls.key"),
                              "\n  client_ca_file: ", File("missing-ca.crt"), "\n"));
  EXPECT_THAT(config.status().message(), HasSubstr("tls.client_ca_file: cannot read"));

  if (geteuid() != 0) {  // root reads any file
    chmod(File("tls.key").c_str(), 0);
    config = Parse(absl::StrCat("  cert_file: ", File("tls.crt"),
                                "\n  key_file: ", File("tls.key"), "\n"));
    EXPECT_THAT(config.status().message(), HasSubstr("tls.key_file: cannot read"));
    chmod(File("tls.key").c_str(), 0600);
  }

  config = Parse(absl::StrCat("  cert_file: ", File("tls.crt"),
                              "\n  key_file: ", File("tls.key"), "\n  ca_file: x\n"));
  EXPECT_THAT(config.status().message(), HasSubstr("tls: unknown key 'ca_file'"));
  config = Parse(absl::StrCat("  cert_file: ", File("tls.crt"), "\n  key_file: ",
                              File("tls.key"), "\n  require_client_cert: maybe\n"));
  EXPECT_THAT(config.status().message(), HasSubstr("tls.require_client_cert"));
  config = Parse(absl::StrCat("  cert_file: \"\"\n  key_file: ", File("tls.key"), "\n"));
  EXPECT_THAT(config.status().message(), HasSubstr("tls.cert_file: must not be empty"));
}

}  // namespace
}  // namespace traffik
