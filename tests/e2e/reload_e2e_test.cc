// End to end: a real traffikd reloads its config file on SIGHUP and when a
// Kubernetes-style ConfigMap directory swaps its `..data` symlink.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <signal.h>
#include <stdio.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Config(int limit, const std::string& more_throttles = "") {
  return absl::StrCat("throttles:\n  - {uid: api, limit: ", limit, ", period: 1h}\n",
                      more_throttles, "tenants:\n  - {name: default}\n");
}

// A ConfigMap volume as the kubelet writes it: traffik.yaml -> ..data/traffik.yaml,
// ..data -> ..<version>; Update() writes a new version and swaps ..data.
class ConfigMapDir {
 public:
  ConfigMapDir() {
    char dir[] = "/tmp/traffik-configmap-XXXXXX";
    if (mkdtemp(dir) != nullptr) dir_ = dir;
  }
  ~ConfigMapDir() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  std::string path() const { return dir_ + "/traffik.yaml"; }
  void Update(const std::string& text) {
    const std::string version = absl::StrCat("..v", ++version_);
    fs::create_directory(dir_ + "/" + version);
    std::ofstream(dir_ + "/" + version + "/traffik.yaml") << text;
    fs::create_directory_symlink(version, dir_ + "/..data_tmp");
    rename((dir_ + "/..data_tmp").c_str(), (dir_ + "/..data").c_str());
    if (version_ == 1) fs::create_symlink("..data/traffik.yaml", path());
    if (version_ > 1) fs::remove_all(dir_ + "/..v" + std::to_string(version_ - 1));
  }

 private:
  std::string dir_;
  int version_ = 0;
};

class ReloadE2eTest : public ::testing::Test {
 protected:
  void Start(const std::string& yaml, bool watch = true) {
    dir_.Update(watch ? yaml : yaml + "watch_config: false\n");
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> process =
        TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen",
                                "127.0.0.1:0", "--config", dir_.path()});
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = *std::move(process);
    stub_ = v1::ThrottleService::NewStub(grpc::CreateChannel(
        process_->grpc_address(), grpc::InsecureChannelCredentials()));
  }
  grpc::Status Call(const std::string& uid, v1::ShouldThrottleResponse* response) {
    v1::ShouldThrottleRequest request;
    request.set_throttle_uid(uid);
    request.set_identifier("user:1");
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    return stub_->ShouldThrottle(&context, request, response);
  }
  std::string Metrics() {
    absl::StatusOr<HttpResponse> page = HttpGet(process_->metrics_port(), "/metrics");
    EXPECT_TRUE(page.ok()) << page.status();
    return page.ok() ? page->body : "";
  }
  // Waits at most 5 s until the metrics contain `needle`.
  bool WaitForMetric(const std::string& needle) {
    for (int i = 0; i < 100; ++i) {
      if (absl::StrContains(Metrics(), needle)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  ConfigMapDir dir_;
  std::unique_ptr<TraffikdProcess> process_;
  std::unique_ptr<v1::ThrottleService::Stub> stub_;
};

// Verifies SIGHUP: a drained bucket stays drained, a raised limit applies as
// documented (tokens kept), a new throttle serves, and the metrics show the
// success and the new file's SHA-256.
TEST_F(ReloadE2eTest, SighupKeepsBucketsAndAppliesChanges) {
  Start(Config(2), /*watch=*/false);
  v1::ShouldThrottleResponse r;
  ASSERT_TRUE(Call("api", &r).ok());
  ASSERT_TRUE(Call("api", &r).ok());
  ASSERT_TRUE(Call("api", &r).ok());
  ASSERT_GT(r.wait_ms(), 0u);  // drained

  const std::string next =
      Config(2, "  - {uid: new, limit: 1, period: 1m}\n") + "watch_config: false\n";
  dir_.Update(next);
  ASSERT_TRUE(process_->SendSignal(SIGHUP));
  ASSERT_TRUE(WaitForMetric("traffik_config_reloads_total{result=\"success\"} 1"));
  EXPECT_THAT(Metrics(), HasSubstr(absl::StrCat("traffik_config_info{config_hash=\"",
                                                Sha256Hex(next), "\"} 1")));
  ASSERT_TRUE(Call("api", &r).ok());
  EXPECT_GT(r.wait_ms(), 0u);  // still drained
  ASSERT_TRUE(Call("new", &r).ok());
  EXPECT_EQ(r.wait_ms(), 0u);

  // A raised limit keeps the tokens the bucket holds (none): still drained.
  dir_.Update(Config(5) + "watch_config: false\n");
  ASSERT_TRUE(process_->SendSignal(SIGHUP));
  ASSERT_TRUE(WaitForMetric("traffik_config_reloads_total{result=\"success\"} 2"));
  ASSERT_TRUE(Call("api", &r).ok());
  EXPECT_EQ(r.limit(), 5u);
  EXPECT_GT(r.wait_ms(), 0u);
}

// Verifies that a bad config on SIGHUP is rejected with one log line naming
// file:line:col, counted as an error, and the old config keeps serving.
TEST_F(ReloadE2eTest, BadConfigKeepsServing) {
  Start(Config(5), /*watch=*/false);
  v1::ShouldThrottleResponse r;
  ASSERT_TRUE(Call("api", &r).ok());
  dir_.Update("throttles:\n  - {uid: api, limit: 0, period: 1h}\n");
  ASSERT_TRUE(process_->SendSignal(SIGHUP));
  ASSERT_TRUE(WaitForMetric("traffik_config_reloads_total{result=\"error\"} 1"));
  const std::string log = process_->StderrText();
  EXPECT_THAT(log, HasSubstr(absl::StrCat("config reload rejected, the running "
                                          "configuration keeps serving: ",
                                          dir_.path(), ":2:")));
  EXPECT_THAT(log, HasSubstr("throttles[0].limit"));
  // One line for the rejected reload, nothing else about it.
  size_t lines = 0;
  for (size_t at = log.find("config reload"); at != std::string::npos;
       at = log.find("config reload", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u);
  ASSERT_TRUE(Call("api", &r).ok());
  EXPECT_EQ(r.remaining(), 3u);  // the old limit, the bucket's state kept
  EXPECT_THAT(Metrics(), HasSubstr("traffik_config_reloads_total{result=\"success\"} 0"));
}

// Verifies the file watch: swapping the ConfigMap's ..data symlink reloads
// without a signal.
TEST_F(ReloadE2eTest, ConfigMapSwapReloads) {
  Start(Config(5));
  v1::ShouldThrottleResponse r;
  ASSERT_EQ(Call("new", &r).error_code(), grpc::StatusCode::NOT_FOUND);
  dir_.Update(Config(5, "  - {uid: new, limit: 1, period: 1m}\n"));
  ASSERT_TRUE(WaitForMetric("traffik_config_reloads_total{result=\"success\"} 1"));
  ASSERT_TRUE(Call("new", &r).ok());
  EXPECT_EQ(r.wait_ms(), 0u);
}

// Verifies the watch covers the envoy rule files' directory: a ConfigMap
// swap there (traffik.yaml unchanged) reloads; a bad rule file is refused,
// naming it, and counted as an error.
TEST_F(ReloadE2eTest, EnvoyRuleFileSwapReloads) {
  ConfigMapDir rules;  // its "traffik.yaml" is a rule file (*.yaml) here
  rules.Update("domain: one\n");
  const std::string dir = fs::path(rules.path()).parent_path();
  Start(absl::StrCat(Config(5), "envoy:\n  config_dirs: ['", dir, "']\n"));
  rules.Update("domain: two\n");
  ASSERT_TRUE(WaitForMetric("traffik_config_reloads_total{result=\"success\"} 1"));
  rules.Update(
      "domain: three\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n");
  ASSERT_TRUE(WaitForMetric("traffik_config_reloads_total{result=\"error\"} 1"));
  EXPECT_TRUE(process_->WaitForStderr("traffik.yaml:4:24: descriptors[0].rate_limit.unit",
                                      std::chrono::seconds(5)))
      << process_->StderrText();
}

// Verifies that a listen change is logged and ignored: traffikd keeps serving
// on its port, and the rest of the file applies.
TEST_F(ReloadE2eTest, ListenChangeIgnored) {
  Start(Config(5), /*watch=*/false);
  dir_.Update("listen: \"127.0.0.1:1\"\n" +
              Config(5, "  - {uid: new, limit: 1, period: 1m}\n") +
              "watch_config: false\n");
  ASSERT_TRUE(process_->SendSignal(SIGHUP));
  ASSERT_TRUE(WaitForMetric("traffik_config_reloads_total{result=\"success\"} 1"));
  EXPECT_TRUE(process_->WaitForStderr("listen changed; kept until restart",
                                      std::chrono::seconds(5)));
  v1::ShouldThrottleResponse r;
  ASSERT_TRUE(Call("new", &r).ok());
}

}  // namespace
}  // namespace traffik::e2e
