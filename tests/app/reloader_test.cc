// ConfigReloader: reading, validating and applying the config file; metrics
// and log lines.
#include "app/reloader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "app/reload_helpers.h"
#include "app/sha256.h"
#include "clock/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using reload_test::Hit;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kGood[] = R"yaml(listen: "127.0.0.1:0"
metrics_listen: ""
throttles:
  - {uid: api, limit: 2, period: 1h}
tenants:
  - {name: t}
default_tenant: t
)yaml";

class ReloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/traffik-reloader-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/traffik.yaml";
    Write(kGood);
    absl::StatusOr<Config> config = LoadConfigFile(path_);
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*config, clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    server_->metrics().SetConfigHash(Sha256Hex(kGood));
    reloader_ = std::make_unique<ConfigReloader>(
        *server_, path_, *config, Sha256Hex(kGood),
        [this](const std::string& line) { log_.push_back(line); });
  }
  void TearDown() override {
    reloader_.reset();
    server_.reset();
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  void Write(const std::string& text) { std::ofstream(path_, std::ios::trunc) << text; }
  std::string Metrics() { return server_->metrics().RenderText(); }

  FakeClock clock_;
  std::string dir_;
  std::string path_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<ConfigReloader> reloader_;
  std::vector<std::string> log_;
};

// Verifies that an invalid file is rejected with one log line naming
// file:line:col, counted as result="error", and the running config keeps
// serving (the bucket state too).
TEST_F(ReloaderTest, BadConfigKeepsServing) {
  ASSERT_TRUE(Hit(server_->engine(), "t", "api", "u")->allowed);
  Write(R"yaml(throttles:
  - {uid: api, limit: 2, period: 5x}
)yaml");
  absl::Status status = reloader_->Reload(/*only_if_changed=*/false);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_THAT(log_[0], HasSubstr(absl::StrCat(path_,
                                              ":2:34: throttles[0].period: bad "
                                              "duration '5x'")));
  EXPECT_THAT(Metrics(), HasSubstr("traffik_config_reloads_total{result=\"error\"} 1"));
  EXPECT_THAT(Metrics(), HasSubstr("traffik_config_reloads_total{result=\"success\"} 0"));
  EXPECT_THAT(Metrics(), HasSubstr(absl::StrCat("traffik_config_info{config_hash=\"",
                                                Sha256Hex(kGood), "\"} 1")));
  // Still the old config, with the bucket's state: one token left.
  absl::StatusOr<Decision> d = Hit(server_->engine(), "t", "api", "u");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->remaining, 0u);
}

// Verifies a successful reload: counted, timestamped, and traffik_config_info
// moves to the new file's SHA-256 (exactly one series).
TEST_F(ReloaderTest, SuccessUpdatesMetrics) {
  const std::string next = absl::StrCat(kGood, "max_batch_size: 7\n");
  Write(next);
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/false).ok());
  const std::string text = Metrics();
  EXPECT_THAT(text, HasSubstr("traffik_config_reloads_total{result=\"success\"} 1"));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("traffik_config_info{config_hash=\"",
                                           Sha256Hex(next), "\"} 1")));
  EXPECT_THAT(text, Not(HasSubstr(Sha256Hex(kGood))));
  EXPECT_THAT(text,
              Not(HasSubstr("traffik_config_last_reload_success_timestamp_seconds 0\n")));
  EXPECT_EQ(server_->engine().snapshot()->max_batch_size(), 7u);
  EXPECT_EQ(reloader_->running().max_batch_size, 7u);
}

// Verifies that a listen change is logged and ignored (the server stays on its
// port) while the rest of the new config applies.
TEST_F(ReloaderTest, ListenChangeIgnoredRestApplies) {
  const std::string address = server_->grpc_address();
  const std::string next = R"yaml(listen: "127.0.0.1:1"
metrics_listen: ""
throttles:
  - {uid: api, limit: 2, period: 1h}
  - {uid: more, limit: 1, period: 1m}
tenants:
  - {name: t}
default_tenant: t
)yaml";
  Write(next);
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/false).ok());
  EXPECT_EQ(server_->grpc_address(), address);
  EXPECT_EQ(reloader_->running().listen, "127.0.0.1:0");
  bool logged = false;
  for (const std::string& line : log_) {
    logged = logged || (absl::StrContains(line, "listen") &&
                        absl::StrContains(line, "kept until restart"));
  }
  EXPECT_TRUE(logged);
  EXPECT_TRUE(Hit(server_->engine(), "t", "more", "u")->allowed);
}

// Verifies that admin_api keeps its running value until restart (the gRPC
// server's services are fixed), with a log line, while the rest applies.
TEST_F(ReloaderTest, AdminApiChangeKeptUntilRestart) {
  Write(absl::StrCat(kGood, "admin_api: true\nmax_batch_size: 9\n"));
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/false).ok());
  EXPECT_FALSE(reloader_->running().admin_api);
  EXPECT_EQ(reloader_->running().max_batch_size, 9u);
  bool logged = false;
  for (const std::string& line : log_) {
    logged = logged || (absl::StrContains(line, "admin_api") &&
                        absl::StrContains(line, "kept until restart"));
  }
  EXPECT_TRUE(logged);
}

// Verifies that the file watch's reload skips a file whose content did not
// change (no log line, no metric), while SIGHUP's reload does not.
TEST_F(ReloaderTest, UnchangedFileSkippedOnlyByWatch) {
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/true).ok());
  EXPECT_TRUE(log_.empty());
  EXPECT_THAT(Metrics(), HasSubstr("traffik_config_reloads_total{result=\"success\"} 0"));
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/false).ok());
  EXPECT_THAT(Metrics(), HasSubstr("traffik_config_reloads_total{result=\"success\"} 1"));
}

// Verifies that a missing file is a rejected reload, not a crash.
TEST_F(ReloaderTest, MissingFileRejected) {
  unlink(path_.c_str());
  EXPECT_EQ(reloader_->Reload(/*only_if_changed=*/true).code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(Metrics(), HasSubstr("traffik_config_reloads_total{result=\"error\"} 1"));
}

// Verifies Sha256Hex against the FIPS 180-2 test vector.
TEST(Sha256Test, KnownVector) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// Verifies the envoy rule files are re-read by every forced reload (SIGHUP):
// new rules apply, a bad rule file is rejected naming it while the running
// rules keep serving; a watch-triggered reload with traffik.yaml unchanged
// does not re-read them (its hash covers traffik.yaml only).
TEST_F(ReloaderTest, EnvoyRuleFilesReloadWithTheConfig) {
  const std::string rl = dir_ + "/rl";
  ASSERT_EQ(mkdir(rl.c_str(), 0755), 0);
  auto write_rule = [&](const std::string& text) {
    std::ofstream(rl + "/a.yaml", std::ios::trunc) << text;
  };
  write_rule("domain: one\n");
  Write(absl::StrCat(kGood, "envoy:\n  config_dirs: [rl]\n"));
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/false).ok());
  EXPECT_NE(reloader_->running().envoy.rules->FindDomain("one"), nullptr);

  write_rule("domain: two\n");
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/true).ok());
  EXPECT_NE(reloader_->running().envoy.rules->FindDomain("one"), nullptr);
  ASSERT_TRUE(reloader_->Reload(/*only_if_changed=*/false).ok());
  EXPECT_EQ(reloader_->running().envoy.rules->FindDomain("one"), nullptr);
  EXPECT_NE(reloader_->running().envoy.rules->FindDomain("two"), nullptr);

  write_rule(
      "domain: three\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n");
  absl::Status status = reloader_->Reload(/*only_if_changed=*/false);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr(rl + "/a.yaml:4:24: descriptors[0].rate_limit.unit"));
  EXPECT_NE(reloader_->running().envoy.rules->FindDomain("two"), nullptr);

  unlink((rl + "/a.yaml").c_str());
  rmdir(rl.c_str());
}

}  // namespace
}  // namespace traffik
