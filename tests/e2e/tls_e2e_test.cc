// End-to-end tests of TLS on traffikd's gRPC port, over real TLS with
// certificates made in the test (TestCerts): refusals (plaintext, wrong CA,
// no client certificate), mutual TLS, certificate rotation behind a symlink
// while a client keeps calling, broken new pairs, --health-check over TLS,
// the non-loopback plaintext warning, and `tls:` on a config reload.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/test_certs.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_support::CertKeyFiles;
using testing_support::CertSpec;
using testing_support::ReadWholeFile;
using testing_support::TestCerts;
using Clock = std::chrono::steady_clock;

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

int CountOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// TLS channel credentials: the CA to trust and optionally a client pair.
std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(
    const std::string& ca_file,
    const std::optional<CertKeyFiles>& client = std::nullopt) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = Read(ca_file);
  if (client) {
    ssl.pem_cert_chain = Read(client->cert_file);
    ssl.pem_private_key = Read(client->key_file);
  }
  return grpc::SslCredentials(ssl);
}

// A stub on a channel of its own (its own TCP connection and handshake).
std::unique_ptr<v1::ThrottleService::Stub> NewStub(
    const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::ThrottleService::NewStub(
      grpc::CreateCustomChannel(address, std::move(credentials), args));
}

// One ShouldThrottle call; `presented_cert` receives the PEM certificate the
// server presented (when the call got that far).
grpc::Status CallOnce(v1::ThrottleService::Stub& stub,
                      std::string* presented_cert = nullptr) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::ShouldThrottleRequest request;
  request.set_identifier("tls-e2e");
  request.set_throttle_uid("t");
  v1::ShouldThrottleResponse response;
  grpc::Status status = stub.ShouldThrottle(&context, request, &response);
  if (presented_cert != nullptr) {
    presented_cert->clear();
    if (std::shared_ptr<const grpc::AuthContext> auth = context.auth_context()) {
      for (const grpc::string_ref& value : auth->FindPropertyValues("x509_pem_cert")) {
        presented_cert->assign(value.data(), value.size());
      }
    }
  }
  return status;
}

// The YAML of a server with a throttle "t" and `tls_block` (indented lines
// under `tls:`, or "" for plaintext).
std::string ConfigYaml(const std::string& tls_block) {
  std::string yaml = "throttles:\n  - uid: t\n    limit: 1000000\n    period: 1s\n";
  if (!tls_block.empty()) absl::StrAppend(&yaml, "tls:\n", tls_block);
  return yaml;
}

std::string TlsBlock(const std::string& cert, const std::string& key,
                     const std::string& client_ca = "", bool require = false) {
  std::string block = absl::StrCat("  cert_file: ", cert, "\n  key_file: ", key, "\n");
  if (!client_ca.empty()) absl::StrAppend(&block, "  client_ca_file: ", client_ca, "\n");
  if (require) absl::StrAppend(&block, "  require_client_cert: true\n");
  return block;
}

class TlsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<TestCerts>> certs = TestCerts::Create();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *std::move(certs);
  }

  // Starts traffikd on 127.0.0.1:0 with `yaml`; metrics on when `metrics`.
  std::unique_ptr<TraffikdProcess> Start(const std::string& yaml, bool metrics = false) {
    absl::StatusOr<TempFile> file = TempFile::Create(yaml);
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return nullptr;
    config_ = std::move(*file);
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> process = TraffikdProcess::Start(
        {"--listen", "127.0.0.1:0", "--metrics-listen", metrics ? "127.0.0.1:0" : "",
         "--config", config_->path()});
    EXPECT_TRUE(process.ok()) << process.status();
    return process.ok() ? std::move(*process) : nullptr;
  }

  std::optional<double> TlsReloads(TraffikdProcess& process, const std::string& result) {
    absl::StatusOr<HttpResponse> scrape = HttpGet(process.metrics_port(), "/metrics");
    if (!scrape.ok()) return std::nullopt;
    return SampleValue(scrape->body, "traffik_tls_certificate_reloads_total",
                       {{"result", result}});
  }

  std::unique_ptr<TestCerts> certs_;
  std::optional<TempFile> config_;
};

// Verifies a TLS port refuses a plaintext client and a client trusting
// another CA, and serves a client trusting its CA.
TEST_F(TlsE2eTest, RefusesPlaintextAndWrongCa) {
  std::unique_ptr<TraffikdProcess> server =
      Start(ConfigYaml(TlsBlock(certs_->server().cert_file, certs_->server().key_file)));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();

  grpc::Status plaintext =
      CallOnce(*NewStub(address, grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE)
      << plaintext.error_message();
  grpc::Status wrong_ca =
      CallOnce(*NewStub(address, TlsCredentials(certs_->other_ca_file())));
  EXPECT_EQ(wrong_ca.error_code(), grpc::StatusCode::UNAVAILABLE)
      << wrong_ca.error_message();

  std::string presented;
  grpc::Status good =
      CallOnce(*NewStub(address, TlsCredentials(certs_->ca_file())), &presented);
  EXPECT_TRUE(good.ok()) << good.error_message();
  EXPECT_EQ(presented, Read(certs_->server().cert_file));
}

// Verifies require_client_cert: no client certificate and one from another CA
// are refused, the CA's client certificate is served.
TEST_F(TlsE2eTest, MutualTlsRequired) {
  std::unique_ptr<TraffikdProcess> server = Start(ConfigYaml(
      TlsBlock(certs_->server().cert_file, certs_->server().key_file, certs_->ca_file(),
               /*require=*/true)));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  absl::StatusOr<CertKeyFiles> alice =
      certs_->Issue("alice", CertSpec{.common_name = "alice"});
  ASSERT_TRUE(alice.ok()) << alice.status();
  absl::StatusOr<CertKeyFiles> mallory =
      certs_->Issue("mallory", CertSpec{.common_name = "mallory", .other_ca = true});
  ASSERT_TRUE(mallory.ok()) << mallory.status();

  grpc::Status none = CallOnce(*NewStub(address, TlsCredentials(certs_->ca_file())));
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAVAILABLE) << none.error_message();
  grpc::Status foreign =
      CallOnce(*NewStub(address, TlsCredentials(certs_->ca_file(), *mallory)));
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::UNAVAILABLE)
      << foreign.error_message();
  grpc::Status good =
      CallOnce(*NewStub(address, TlsCredentials(certs_->ca_file(), *alice)));
  EXPECT_TRUE(good.ok()) << good.error_message();
}

// Verifies client_ca_file without require_client_cert: a client without a
// certificate is served, a certificate from another CA is still refused.
TEST_F(TlsE2eTest, MutualTlsOptional) {
  std::unique_ptr<TraffikdProcess> server = Start(ConfigYaml(TlsBlock(
      certs_->server().cert_file, certs_->server().key_file, certs_->ca_file())));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  absl::StatusOr<CertKeyFiles> mallory =
      certs_->Issue("mallory", CertSpec{.common_name = "mallory", .other_ca = true});
  ASSERT_TRUE(mallory.ok()) << mallory.status();
  grpc::Status none = CallOnce(*NewStub(address, TlsCredentials(certs_->ca_file())));
  EXPECT_TRUE(none.ok()) << none.error_message();
  grpc::Status foreign =
      CallOnce(*NewStub(address, TlsCredentials(certs_->ca_file(), *mallory)));
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::UNAVAILABLE)
      << foreign.error_message();
}

// Verifies an unusable pair at startup is a startup error naming the fields.
TEST_F(TlsE2eTest, BrokenPairAtStartupFails) {
  absl::StatusOr<CertKeyFiles> broken = certs_->MismatchedPair("broken");
  ASSERT_TRUE(broken.ok()) << broken.status();
  absl::StatusOr<TempFile> file =
      TempFile::Create(ConfigYaml(TlsBlock(broken->cert_file, broken->key_file)));
  ASSERT_TRUE(file.ok());
  RunResult run = RunTraffikd(
      {"--listen", "127.0.0.1:0", "--metrics-listen", "", "--config", file->path()});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_THAT(run.output, HasSubstr("tls.cert_file/tls.key_file"));
  EXPECT_THAT(run.output, HasSubstr("the key does not belong to the certificate"));
  EXPECT_THAT(run.output, Not(HasSubstr("BEGIN")));  // no key material
}

// A directory laid out as Kubernetes mounts a Secret: tls.crt and tls.key are
// symlinks through "..data", itself a symlink to the current version's
// directory; Swap() makes a new version current in one rename, as the kubelet
// (and so cert-manager's rotations) does.
class SecretDir {
 public:
  explicit SecretDir(const std::string& parent) : dir_(parent + "/secret") {
    std::filesystem::create_directories(dir_);
  }
  std::string cert() const { return dir_ + "/tls.crt"; }
  std::string key() const { return dir_ + "/tls.key"; }

  // Makes (`cert_pem`, `key_pem`) the current version.
  void Swap(const std::string& cert_pem, const std::string& key_pem) {
    const std::string version = absl::StrCat("..v", ++versions_);
    std::filesystem::create_directories(dir_ + "/" + version);
    std::ofstream(dir_ + "/" + version + "/tls.crt") << cert_pem;
    std::ofstream(dir_ + "/" + version + "/tls.key") << key_pem;
    const std::string tmp = dir_ + "/..data_tmp";
    std::filesystem::remove(tmp);
    std::filesystem::create_directory_symlink(version, tmp);
    std::filesystem::rename(tmp, dir_ + "/..data");  // atomic
    if (versions_ == 1) {
      std::filesystem::create_symlink("..data/tls.crt", cert());
      std::filesystem::create_symlink("..data/tls.key", key());
    }
  }

 private:
  std::string dir_;
  int versions_ = 0;
};

// Keeps calling on one channel (one connection) until stopped; counts calls
// and failures.
class SteadyCaller {
 public:
  SteadyCaller(const std::string& address,
               std::shared_ptr<grpc::ChannelCredentials> creds)
      : stub_(NewStub(address, std::move(creds))), thread_([this] { Run(); }) {}
  ~SteadyCaller() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int calls() const { return calls_.load(); }
  int failures() const { return failures_.load(); }
  std::string first_failure() const { return first_failure_; }  // after Stop()

 private:
  void Run() {
    while (!stop_.load()) {
      grpc::Status status = CallOnce(*stub_);
      calls_.fetch_add(1);
      if (!status.ok() && failures_.fetch_add(1) == 0)
        first_failure_ = status.error_message();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  std::unique_ptr<v1::ThrottleService::Stub> stub_;
  std::atomic<bool> stop_{false};
  std::atomic<int> calls_{0};
  std::atomic<int> failures_{0};
  std::string first_failure_;
  std::thread thread_;
};

// Waits (at most `timeout`) until a new connection is presented `cert_pem`;
// returns how long that took, or nullopt.
std::optional<std::chrono::milliseconds> WaitForPresented(
    const std::string& address, const std::string& ca_file, const std::string& cert_pem,
    std::chrono::milliseconds timeout) {
  const auto start = Clock::now();
  while (Clock::now() - start < timeout) {
    std::string presented;
    if (CallOnce(*NewStub(address, TlsCredentials(ca_file)), &presented).ok() &&
        presented == cert_pem) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return std::nullopt;
}

// Verifies a rotation behind the Secret's symlink is served to new
// connections within 10 s, logged and counted, while a client that keeps
// calling on its open connection sees no failed call.
TEST_F(TlsE2eTest, RotationPickedUpWithoutFailedCalls) {
  SecretDir secret(certs_->dir());
  secret.Swap(Read(certs_->server().cert_file), Read(certs_->server().key_file));
  absl::StatusOr<CertKeyFiles> next = certs_->Issue(
      "server-next", CertSpec{.common_name = "traffik-test-server-next", .server = true});
  ASSERT_TRUE(next.ok()) << next.status();
  std::unique_ptr<TraffikdProcess> server =
      Start(ConfigYaml(TlsBlock(secret.cert(), secret.key())), /*metrics=*/true);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();

  SteadyCaller caller(address, TlsCredentials(certs_->ca_file()));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  secret.Swap(Read(next->cert_file), Read(next->key_file));
  std::optional<std::chrono::milliseconds> took = WaitForPresented(
      address, certs_->ca_file(), Read(next->cert_file), std::chrono::seconds(10));
  ASSERT_TRUE(took.has_value()) << "the new certificate was not served within 10 s\n"
                                << server->StderrText();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  caller.Stop();
  EXPECT_GT(caller.calls(), 20);
  EXPECT_EQ(caller.failures(), 0) << caller.first_failure();

  absl::StatusOr<std::string> serial = TestCerts::Serial(next->cert_file);
  ASSERT_TRUE(serial.ok());
  EXPECT_TRUE(
      server->WaitForStderr(absl::StrCat("TLS certificate reloaded: serial ", *serial),
                            std::chrono::seconds(5)))
      << server->StderrText();
  EXPECT_THAT(server->StderrText(), HasSubstr("CN=traffik-test-server-next"));
  EXPECT_EQ(TlsReloads(*server, "success"), 1);
  EXPECT_EQ(TlsReloads(*server, "error"), 0);
}

// Verifies a broken new pair (key of another certificate, then an
// unparseable certificate) is logged once and counted as an error, and the
// previous certificate keeps being served to new connections; a good pair
// after them is served again.
TEST_F(TlsE2eTest, BrokenNewPairKeepsThePreviousOne) {
  SecretDir secret(certs_->dir());
  const std::string first_cert = Read(certs_->server().cert_file);
  secret.Swap(first_cert, Read(certs_->server().key_file));
  absl::StatusOr<CertKeyFiles> broken = certs_->MismatchedPair("broken");
  ASSERT_TRUE(broken.ok()) << broken.status();
  absl::StatusOr<CertKeyFiles> next = certs_->Issue(
      "server-next", CertSpec{.common_name = "traffik-test-server-next", .server = true});
  ASSERT_TRUE(next.ok()) << next.status();
  std::unique_ptr<TraffikdProcess> server =
      Start(ConfigYaml(TlsBlock(secret.cert(), secret.key())), /*metrics=*/true);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();

  auto wait_errors = [&](double n) {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      if (TlsReloads(*server, "error") == n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  auto still_first = [&] {
    // Long enough for gRPC's own watcher to have looked at the files too.
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    std::string presented;
    grpc::Status status =
        CallOnce(*NewStub(address, TlsCredentials(certs_->ca_file())), &presented);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(presented, first_cert);
  };

  // The key of another certificate.
  secret.Swap(Read(broken->cert_file), Read(broken->key_file));
  ASSERT_TRUE(wait_errors(1)) << server->StderrText();
  still_first();
  // A certificate that does not parse, with the right key.
  secret.Swap(
      "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
      Read(certs_->server().key_file));
  ASSERT_TRUE(wait_errors(2)) << server->StderrText();
  still_first();
  EXPECT_EQ(TlsReloads(*server, "success"), 0);
  const std::string log = server->StderrText();
  EXPECT_EQ(CountOf(log, "TLS certificate reload failed"), 2) << log;
  EXPECT_THAT(log, HasSubstr("the key does not belong to the certificate"));
  EXPECT_THAT(log, HasSubstr("certificate 1 does not parse"));

  // A good pair again.
  secret.Swap(Read(next->cert_file), Read(next->key_file));
  EXPECT_TRUE(WaitForPresented(address, certs_->ca_file(), Read(next->cert_file),
                               std::chrono::seconds(10))
                  .has_value())
      << server->StderrText();
  EXPECT_TRUE(server->WaitForStderr("TLS certificate reloaded", std::chrono::seconds(5)));
}

// Verifies --health-check over TLS: the CA flag (and the client certificate
// flags for a server requiring one) make it work; without them, or with
// another CA, it fails.
TEST_F(TlsE2eTest, HealthCheckOverTls) {
  std::unique_ptr<TraffikdProcess> server = Start(ConfigYaml(
      TlsBlock(certs_->server().cert_file, certs_->server().key_file, certs_->ca_file(),
               /*require=*/true)));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  absl::StatusOr<CertKeyFiles> alice =
      certs_->Issue("alice", CertSpec{.common_name = "alice"});
  ASSERT_TRUE(alice.ok()) << alice.status();

  RunResult good =
      RunTraffikd({"--health-check", address, "--tls-ca", certs_->ca_file(), "--tls-cert",
                   alice->cert_file, "--tls-key", alice->key_file});
  EXPECT_EQ(good.exit_code, 0) << good.output;
  EXPECT_THAT(good.output, HasSubstr("SERVING"));
  RunResult by_name =
      RunTraffikd({"--health-check", absl::StrCat("localhost:", server->grpc_port()),
                   "--tls-ca", certs_->ca_file(), "--tls-cert", alice->cert_file,
                   "--tls-key", alice->key_file, "--tls-server-name", "localhost"});
  EXPECT_EQ(by_name.exit_code, 0) << by_name.output;

  RunResult no_cert =
      RunTraffikd({"--health-check", address, "--tls-ca", certs_->ca_file()});
  EXPECT_EQ(no_cert.exit_code, 1) << no_cert.output;
  RunResult plaintext = RunTraffikd({"--health-check", address});
  EXPECT_EQ(plaintext.exit_code, 1) << plaintext.output;
  RunResult wrong_ca =
      RunTraffikd({"--health-check", address, "--tls-ca", certs_->other_ca_file(),
                   "--tls-cert", alice->cert_file, "--tls-key", alice->key_file});
  EXPECT_EQ(wrong_ca.exit_code, 1) << wrong_ca.output;
  RunResult wrong_name =
      RunTraffikd({"--health-check", address, "--tls-ca", certs_->ca_file(), "--tls-cert",
                   alice->cert_file, "--tls-key", alice->key_file, "--tls-server-name",
                   "not-the-server.example"});
  EXPECT_EQ(wrong_name.exit_code, 1) << wrong_name.output;

  RunResult half =
      RunTraffikd({"--health-check", address, "--tls-cert", alice->cert_file});
  EXPECT_EQ(half.exit_code, 2) << half.output;
  EXPECT_THAT(half.output, HasSubstr("--tls-cert and --tls-key go together"));
  RunResult stray = RunTraffikd({"--tls-ca", certs_->ca_file()});
  EXPECT_EQ(stray.exit_code, 2) << stray.output;
}

// Verifies plaintext on a non-loopback address logs exactly one warning line
// at start, and loopback (127.0.0.1) or TLS log none.
TEST_F(TlsE2eTest, NonLoopbackPlaintextWarnsOnce) {
  constexpr char kWarning[] = "WARNING: gRPC listens on";
  {
    // Bound to every address for the test's few hundred milliseconds only.
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> open =
        TraffikdProcess::Start({"--listen", "0.0.0.0:0", "--metrics-listen", ""});
    ASSERT_TRUE(open.ok()) << open.status();
    EXPECT_EQ(CountOf((*open)->StderrText(), kWarning), 1) << (*open)->StderrText();
    EXPECT_THAT((*open)->StderrText(), HasSubstr("without TLS"));
  }
  {
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> loopback =
        TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen", ""});
    ASSERT_TRUE(loopback.ok()) << loopback.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(CountOf((*loopback)->StderrText(), kWarning), 0)
        << (*loopback)->StderrText();
  }
  {
    absl::StatusOr<TempFile> file = TempFile::Create(
        ConfigYaml(TlsBlock(certs_->server().cert_file, certs_->server().key_file)));
    ASSERT_TRUE(file.ok());
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> tls = TraffikdProcess::Start(
        {"--listen", "0.0.0.0:0", "--metrics-listen", "", "--config", file->path()});
    ASSERT_TRUE(tls.ok()) << tls.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(CountOf((*tls)->StderrText(), kWarning), 0) << (*tls)->StderrText();
  }
}

// Verifies a config reload that changes `tls:` keeps the running TLS and
// says so (the port is not re-bound), like `listen`.
TEST_F(TlsE2eTest, ReloadKeepsTls) {
  std::unique_ptr<TraffikdProcess> server =
      Start(ConfigYaml(TlsBlock(certs_->server().cert_file, certs_->server().key_file)));
  ASSERT_NE(server, nullptr);
  {
    std::ofstream out(config_->path(), std::ios::trunc);
    out << ConfigYaml(TlsBlock(certs_->server().cert_file, certs_->server().key_file,
                               certs_->ca_file(), /*require=*/true));
  }
  ASSERT_TRUE(server->SendSignal(SIGHUP));
  EXPECT_TRUE(server->WaitForStderr("tls changed; kept until restart",
                                    std::chrono::seconds(5)))
      << server->StderrText();
  // Still no client certificate asked for.
  grpc::Status status =
      CallOnce(*NewStub(server->grpc_address(), TlsCredentials(certs_->ca_file())));
  EXPECT_TRUE(status.ok()) << status.error_message();
}

}  // namespace
}  // namespace traffik::e2e
