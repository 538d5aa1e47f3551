// The `envoy:` section of the config file (config.h EnvoyConfig).

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;

constexpr char kTenants[] = R"(
tenants:
  - name: default
  - name: edge
)";

class EnvoyConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/envoy_config_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(mkdir((dir_ + "/rl").c_str(), 0755), 0);
    Write("rl/a.yaml", R"(domain: web
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
)");
  }
  void TearDown() override {
    ASSERT_EQ(std::system(("rm -rf '" + dir_ + "'").c_str()), 0);
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  // Writes `text` as traffik.yaml in the temp dir and loads it.
  absl::StatusOr<Config> Load(const std::string& text) {
    Write("traffik.yaml", text);
    return LoadConfigFile(dir_ + "/traffik.yaml");
  }
  std::string dir_;
};

// Verifies without `envoy:` the section is off and the rules are an empty set.
TEST_F(EnvoyConfigTest, AbsentSection) {
  absl::StatusOr<Config> c = ParseConfig("listen: 127.0.0.1:1\n", "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->envoy.enabled);
  ASSERT_NE(c->envoy.rules, nullptr);
  EXPECT_TRUE(c->envoy.rules->domains().empty());
  EXPECT_FALSE(c->envoy.response_headers);
  EXPECT_EQ(c->envoy.TenantFor("any", c->default_tenant), "default");
  EXPECT_NE(DefaultConfig().envoy.rules, nullptr);
  c = ParseConfig("envoy:\n", "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->envoy.enabled);
  EXPECT_TRUE(c->envoy.rules->domains().empty());
}

// Verifies relative config_dirs resolve against the config file's directory and the rules
// load.
TEST_F(EnvoyConfigTest, LoadsRulesRelativeToTheConfigFile) {
  absl::StatusOr<Config> c = Load(absl::StrCat(kTenants, R"(
envoy:
  config_dirs: [rl]
  tenant_for_domain: edge
  response_headers: true
)"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->envoy.enabled);
  EXPECT_EQ(c->envoy.config_dirs, std::vector<std::string>{dir_ + "/rl"});
  EXPECT_TRUE(c->envoy.response_headers);
  ASSERT_NE(c->envoy.rules->FindDomain("web"), nullptr);
  EXPECT_EQ(c->envoy.TenantFor("web", c->default_tenant), "edge");
  EXPECT_EQ(c->envoy.TenantFor("other", c->default_tenant), "edge");
  // Absolute paths stay as written.
  c = Load(absl::StrCat("envoy:\n  config_dirs: ['", dir_, "/rl']\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->envoy.config_dirs, std::vector<std::string>{dir_ + "/rl"});
}

// Verifies the map form of tenant_for_domain, falling back to default_tenant.
TEST_F(EnvoyConfigTest, TenantPerDomain) {
  absl::StatusOr<Config> c = Load(absl::StrCat(kTenants, R"(
default_tenant: default
envoy:
  tenant_for_domain:
    web: edge
    api: default
)"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->envoy.TenantFor("web", c->default_tenant), "edge");
  EXPECT_EQ(c->envoy.TenantFor("api", c->default_tenant), "default");
  EXPECT_EQ(c->envoy.TenantFor("unlisted", c->default_tenant), "default");
}

// Verifies every tenant named in tenant_for_domain must exist; the error names the field.
TEST_F(EnvoyConfigTest, UnknownTenants) {
  absl::StatusOr<Config> c =
      Load(absl::StrCat(kTenants, "envoy:\n  tenant_for_domain: gold\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      c.status().message(),
      HasSubstr("traffik.yaml:6:22: envoy.tenant_for_domain: unknown tenant 'gold' "
                "(defined tenants: default, edge)"));
  c = Load(absl::StrCat(kTenants,
                        "envoy:\n  tenant_for_domain:\n    web: edge\n    api: nope\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(
      c.status().message(),
      HasSubstr("traffik.yaml:8:10: envoy.tenant_for_domain.api: unknown tenant 'nope'"));
}

// Verifies a bad rule file fails the config, naming the rule file, descriptor path and
// problem.
TEST_F(EnvoyConfigTest, BadRuleFileFailsTheConfig) {
  Write("rl/b.yaml",
        "domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n");
  absl::StatusOr<Config> c = Load("envoy:\n  config_dirs: [rl]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              HasSubstr(dir_ + "/rl/b.yaml:4:24: descriptors[0].rate_limit.unit: invalid "
                               "rate limit unit 'fortnight'"));
  EXPECT_THAT(c.status().message(), HasSubstr("traffik.yaml: envoy.config_dirs"));
  // A domain in two directories.
  ASSERT_EQ(mkdir((dir_ + "/rl2").c_str(), 0755), 0);
  Write("rl/b.yaml", "domain: api\n");
  Write("rl2/c.yaml", "domain: web\n");
  c = Load("envoy:\n  config_dirs: [rl, rl2]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr(dir_ + "/rl2/c.yaml:1:1: domain: duplicate domain 'web'"));
}

// Verifies a missing or non-directory config_dirs entry is reported at its field.
TEST_F(EnvoyConfigTest, MissingDirectory) {
  absl::StatusOr<Config> c = Load("envoy:\n  config_dirs: [rl, nope]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("traffik.yaml:2:21: envoy.config_dirs[1]: directory '" + dir_ +
                        "/nope': No such file or directory"));
  c = Load("envoy:\n  config_dirs: [rl/a.yaml]\n");
  EXPECT_THAT(c.status().message(), HasSubstr("is not a directory"));
}

// Verifies the section's own syntax errors.
TEST_F(EnvoyConfigTest, SyntaxErrors) {
  auto error = [&](const std::string& text) {
    absl::StatusOr<Config> c = ParseConfig(text, "t.yaml");
    EXPECT_FALSE(c.ok());
    return c.ok() ? std::string() : std::string(c.status().message());
  };
  EXPECT_THAT(
      error("envoy:\n  config_dirs: rl\n"),
      HasSubstr("t.yaml:2:16: envoy.config_dirs: expected a list of directories"));
  EXPECT_THAT(error("envoy:\n  config_dirs: ['']\n"),
              HasSubstr("envoy.config_dirs[0]: must not be empty"));
  EXPECT_THAT(error("envoy:\n  response_headers: yes\n"),
              HasSubstr("envoy.response_headers: expected a boolean"));
  EXPECT_THAT(error("envoy:\n  tenant_for_domain: [a]\n"),
              HasSubstr("envoy.tenant_for_domain: expected a tenant name or a map"));
  EXPECT_THAT(error("envoy:\n  tenant_for_domain: {a: default, a: default}\n"),
              HasSubstr("duplicate domain 'a'"));
  EXPECT_THAT(error("envoy:\n  domains: x\n"), HasSubstr("envoy: unknown key 'domains'"));
}

}  // namespace
}  // namespace traffik
