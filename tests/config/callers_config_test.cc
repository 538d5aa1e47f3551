// The `auth` and `callers` config keys (issue 10): the credential variants,
// and every error naming the field, never a key.
#include "config/callers_config.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "s3cr3t-KEYvalue-0123";
constexpr char kTenants[] = R"yaml(
tenants:
  - name: default
  - name: shop
)yaml";

absl::StatusOr<Config> Parse(const std::string& callers, const std::string& extra = "") {
  return ParseConfig(absl::StrCat(kTenants, extra, "callers:\n", callers), "t.yaml");
}

// A temp file holding `contents`, removed at the end of the test.
class KeyFile {
 public:
  explicit KeyFile(const std::string& contents) {
    char tmpl[] = "/tmp/traffik-callers-test-XXXXXX";
    int fd = mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    path_ = tmpl;
    EXPECT_EQ(write(fd, contents.data(), contents.size()),
              static_cast<ssize_t>(contents.size()));
    close(fd);
  }
  ~KeyFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A `tls:` block with a client CA, every file `pem`.
std::string Tls(const KeyFile& pem) {
  return absl::StrCat("tls:\n  cert_file: ", pem.path(), "\n  key_file: ", pem.path(),
                      "\n  client_ca_file: ", pem.path(), "\n");
}

// Verifies auth is off with no callers by default, also in the embedded config.
TEST(CallersConfigTest, DefaultsOff) {
  EXPECT_EQ(DefaultConfig().auth, AuthMode::kOff);
  EXPECT_TRUE(DefaultConfig().callers.empty());
  auto c = ParseConfig("listen: \"127.0.0.1:0\"\n", "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->auth, AuthMode::kOff);
}

// Verifies the three API-key sources give the same digest (the file's one
// trailing newline, or CRLF, stripped), upper-case hex is accepted, and
// tenants, "*" and admin are read.
TEST(CallersConfigTest, KeySourcesAgree) {
  const std::string digest = Sha256Digest(kKey);
  KeyFile pem("not checked at load");
  KeyFile file(absl::StrCat(kKey, "\n"));
  KeyFile crlf(absl::StrCat(kKey, "\r\n"));
  ASSERT_EQ(setenv("TRAFFIK_CALLERS_TEST_KEY", kKey, 1), 0);
  std::string hex = Sha256Hex(kKey);
  for (char& c : hex) c = static_cast<char>(toupper(c));
  for (const std::string& credential :
       {absl::StrCat("api_key_sha256: ", Sha256Hex(kKey)),
        absl::StrCat("api_key_sha256: ", hex),
        absl::StrCat("api_key_file: ", file.path()),
        absl::StrCat("api_key_file: ", crlf.path()),
        std::string("api_key_env: TRAFFIK_CALLERS_TEST_KEY")}) {
    auto c = Parse(absl::StrCat("  - name: a\n    ", credential,
                                "\n    tenants: [shop]\n    admin: true\n"
                                "  - name: b.c-D_9\n    mtls_identity: spiffe://x/y\n"
                                "    tenants: \"*\"\n"),
                   absl::StrCat("auth: required\n", Tls(pem)));
    ASSERT_TRUE(c.ok()) << credential << ": " << c.status();
    EXPECT_EQ(c->auth, AuthMode::kRequired);
    ASSERT_EQ(c->callers.size(), 2u);
    EXPECT_EQ(c->callers[0].api_key_digest, digest) << credential;
    EXPECT_EQ(c->callers[0].tenants, std::vector<std::string>{"shop"});
    EXPECT_FALSE(c->callers[0].all_tenants);
    EXPECT_TRUE(c->callers[0].admin);
    EXPECT_EQ(c->callers[1].mtls_identity, "spiffe://x/y");
    EXPECT_TRUE(c->callers[1].api_key_digest.empty());
    EXPECT_TRUE(c->callers[1].all_tenants);
    EXPECT_FALSE(c->callers[1].admin);
  }
  unsetenv("TRAFFIK_CALLERS_TEST_KEY");
}

// Verifies each config error names its field with file:line:col, and that no
// message holds the key (from the file, the environment or a pasted value).
TEST(CallersConfigTest, Errors) {
  KeyFile empty("\n");
  KeyFile two_newlines(absl::StrCat(kKey, "\n\n"));
  KeyFile spaced(absl::StrCat(kKey, " x"));
  ASSERT_EQ(setenv("TRAFFIK_CALLERS_TEST_EMPTY", "", 1), 0);
  ASSERT_EQ(setenv("TRAFFIK_CALLERS_TEST_BAD", absl::StrCat(kKey, "\t").c_str(), 1), 0);
  unsetenv("TRAFFIK_CALLERS_TEST_UNSET");
  const std::string ok_hex = Sha256Hex(kKey);
  const std::string other_hex = Sha256Hex("other");
  KeyFile pem("not checked at load");
  struct Case {
    std::string callers;
    std::string extra;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"  - name: a\n    tenants: [shop]\n", "",
       "callers[0]: missing a credential: one of api_key_sha256"},
      {absl::StrCat("  - api_key_sha256: ", ok_hex, "\n    tenants: [shop]\n"), "",
       "callers[0]: missing required key 'name'"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex, "\n"), "",
       "callers[0]: missing required key 'tenants'"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex,
                    "\n    mtls_identity: x\n    tenants: [shop]\n"),
       "", "callers[0].mtls_identity: a caller has exactly one credential"},
      {absl::StrCat("  - name: a b\n    api_key_sha256: ", ok_hex,
                    "\n    tenants: [shop]\n"),
       "", "callers[0].name: caller name 'a b' must be 1..64 characters"},
      {absl::StrCat("  - name: ", std::string(65, 'n'), "\n    api_key_sha256: ", ok_hex,
                    "\n    tenants: [shop]\n"),
       "", "must be 1..64 characters"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", kKey, "\n    tenants: [shop]\n"),
       "", "callers[0].api_key_sha256: expected 64 hex digits"},
      {absl::StrCat("  - name: a\n    api_key_file: ", empty.path(),
                    "\n    tenants: [shop]\n"),
       "", "callers[0].api_key_file: key file"},
      {absl::StrCat("  - name: a\n    api_key_file: ", two_newlines.path(),
                    "\n    tenants: [shop]\n"),
       "", "holds a byte outside printable ASCII or a space"},
      {absl::StrCat("  - name: a\n    api_key_file: ", spaced.path(),
                    "\n    tenants: [shop]\n"),
       "", "holds a byte outside printable ASCII or a space"},
      {"  - name: a\n    api_key_file: /nonexistent/key\n    tenants: [shop]\n", "",
       "callers[0].api_key_file: cannot read key file '/nonexistent/key'"},
      {"  - name: a\n    api_key_env: TRAFFIK_CALLERS_TEST_UNSET\n    tenants: [shop]\n",
       "",
       "callers[0].api_key_env: environment variable 'TRAFFIK_CALLERS_TEST_UNSET' is not "
       "set"},
      {"  - name: a\n    api_key_env: TRAFFIK_CALLERS_TEST_EMPTY\n    tenants: [shop]\n",
       "",
       "callers[0].api_key_env: environment variable 'TRAFFIK_CALLERS_TEST_EMPTY' is "
       "empty"},
      {"  - name: a\n    api_key_env: TRAFFIK_CALLERS_TEST_BAD\n    tenants: [shop]\n",
       "",
       "callers[0].api_key_env: environment variable 'TRAFFIK_CALLERS_TEST_BAD' holds a "
       "byte"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex,
                    "\n    tenants: [nope]\n"),
       "",
       "callers[0].tenants[0]: unknown tenant 'nope' (defined tenants: default, shop)"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex, "\n    tenants: all\n"),
       "", "callers[0].tenants: expected a list of tenant names or \"*\""},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex,
                    "\n    tenants: [shop, shop]\n"),
       "", "callers[0].tenants[1]: duplicate tenant 'shop'"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex,
                    "\n    tenants: [shop]\n  - name: a\n    api_key_sha256: ", other_hex,
                    "\n    tenants: [shop]\n"),
       "", "callers[1]: duplicate caller name 'a' (callers[0], caller 'a')"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex,
                    "\n    tenants: [shop]\n  - name: b\n    api_key_sha256: ",
                    absl::AsciiStrToUpper(ok_hex), "\n    tenants: [shop]\n"),
       "", "callers[1]: the same API key as another caller (callers[0], caller 'a')"},
      {"  - name: a\n    mtls_identity: spiffe://x\n    tenants: [shop]\n"
       "  - name: b\n    mtls_identity: spiffe://x\n    tenants: [shop]\n",
       Tls(pem), "callers[1]: duplicate mtls_identity 'spiffe://x'"},
      {"  - name: a\n    mtls_identity: spiffe://x\n    tenants: [shop]\n", "",
       "callers[0].mtls_identity: needs tls.client_ca_file"},
      {"  - name: a\n    mtls_identity: spiffe://x\n    tenants: [shop]\n",
       absl::StrCat("tls:\n  cert_file: ", pem.path(), "\n  key_file: ", pem.path(),
                    "\n"),
       "callers[0].mtls_identity: needs tls.client_ca_file"},
      {absl::StrCat("  - name: a\n    api_key_sha256: ", ok_hex,
                    "\n    tenants: [shop]\n    admin: maybe\n"),
       "", "callers[0].admin: expected a boolean"},
      {absl::StrCat("  - name: a\n    api_key: ", kKey, "\n    tenants: [shop]\n"), "",
       "callers[0]: unknown key 'api_key'"},
      {"  []\n", "auth: required\n", "auth: auth: required needs at least one entry"},
      {"  []\n", "auth: on\n", "auth: expected off or required, got 'on'"},
  };
  for (const Case& c : cases) {
    auto config = Parse(c.callers, c.extra);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.callers;
    EXPECT_THAT(config.status().message(), HasSubstr(c.expected)) << c.callers;
    EXPECT_THAT(config.status().message(), HasSubstr("t.yaml:")) << c.callers;
    EXPECT_THAT(config.status().message(), Not(HasSubstr("KEYvalue"))) << c.callers;
  }
  // auth: required without a callers key at all.
  auto none = ParseConfig("auth: required\n", "t.yaml");
  EXPECT_THAT(none.status().message(),
              HasSubstr("t.yaml:1:7: auth: auth: required needs at least one entry"));
  unsetenv("TRAFFIK_CALLERS_TEST_EMPTY");
  unsetenv("TRAFFIK_CALLERS_TEST_BAD");
}

}  // namespace
}  // namespace traffik
