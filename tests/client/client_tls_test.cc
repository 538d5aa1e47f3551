// The client library's and traffikctl's TLS and API-key options: against the
// real traffikd over real TLS (certificates made in the test), and against a
// small in-process ThrottleService that records the `authorization` metadata
// it receives and answers a chosen error (the failure-policy regression
// tests: a credential error is never turned into "allowed").

#include <grpcpp/grpcpp.h>
#include <stdio.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/test_certs.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/client.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_support::CertKeyFiles;
using testing_support::CertSpec;
using testing_support::TestCerts;

constexpr char kApiKey[] = "tk_test_0123456789abcdef";

// A ThrottleService on 127.0.0.1:0 answering every call with `answer` (OK:
// allowed), recording each call's `authorization` metadata.
class FakeThrottleService final : public v1::ThrottleService::Service {
 public:
  explicit FakeThrottleService(grpc::Status answer) : answer_(std::move(answer)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeThrottleService() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  std::vector<std::string> authorizations() {
    std::lock_guard<std::mutex> lock(mu_);
    return authorizations_;
  }

  grpc::Status ShouldThrottle(grpc::ServerContext* context,
                              const v1::ShouldThrottleRequest*,
                              v1::ShouldThrottleResponse* response) override {
    Record(*context);
    response->set_limit(10);
    response->set_remaining(9);
    return answer_;
  }
  grpc::Status ShouldThrottleBatch(grpc::ServerContext* context,
                                   const v1::ShouldThrottleBatchRequest* request,
                                   v1::ShouldThrottleBatchResponse* response) override {
    Record(*context);
    for (int i = 0; i < request->requests_size(); ++i)
      response->add_responses()->set_limit(10);
    return answer_;
  }

 private:
  void Record(const grpc::ServerContext& context) {
    std::lock_guard<std::mutex> lock(mu_);
    auto [begin, end] = context.client_metadata().equal_range("authorization");
    if (begin == end) authorizations_.push_back("(none)");
    for (auto it = begin; it != end; ++it) {
      authorizations_.emplace_back(it->second.data(), it->second.size());
    }
  }

  const grpc::Status answer_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::vector<std::string> authorizations_;
};

ThrottleRequest Hit() {
  ThrottleRequest request;
  request.identifier = "client-tls-test";
  request.throttle_uid = "t";
  return request;
}

// Log lines of a client, collected.
struct LogLines {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu);
      lines.push_back(line);
    };
  }
};

// Verifies the API key is sent as `authorization: Bearer <key>` on single and
// batch calls, and nothing is sent without one.
TEST(ClientApiKeyTest, SentAsBearerMetadataOnEveryCall) {
  FakeThrottleService fake(grpc::Status::OK);
  ClientOptions options;
  options.target = fake.address();
  options.deadline = std::chrono::seconds(2);
  options.api_key = kApiKey;
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Check(Hit()).ok());
  ASSERT_TRUE((*client)->CheckBatch({Hit(), Hit()}).ok());
  ASSERT_TRUE((*client)->CheckBatch({Hit()}, BatchOptions{.all_or_nothing = true}).ok());
  const std::string bearer = absl::StrCat("Bearer ", kApiKey);
  EXPECT_THAT(fake.authorizations(), ::testing::ElementsAre(bearer, bearer, bearer));

  options.api_key.clear();
  absl::StatusOr<std::shared_ptr<Client>> anonymous = Client::Create(options);
  ASSERT_TRUE(anonymous.ok());
  ASSERT_TRUE((*anonymous)->Check(Hit()).ok());
  EXPECT_EQ(fake.authorizations().back(), "(none)");
}

// Verifies unusable keys and TLS options are refused at Create, without the
// key in the message.
TEST(ClientApiKeyTest, BadOptionsRefused) {
  ClientOptions options;
  options.api_key = absl::StrCat(kApiKey, "\n");
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(client.status().message(), Not(HasSubstr(kApiKey)));
  options.api_key = std::string(kMaxApiKeyBytes + 1, 'k');
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);

  options.api_key = kApiKey;
  options.tls = ClientTlsOptions{.cert_file = "/nonexistent.crt"};
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.tls = ClientTlsOptions{.ca_file = "/nonexistent/ca.crt"};
  client = Client::Create(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(client.status().message(), HasSubstr("tls.ca_file"));
}

// Verifies UNAUTHENTICATED, PERMISSION_DENIED and INVALID_ARGUMENT answers are
// returned as errors under the kAllow and kDeny policies, single and batch
// (never "allowed"), logged once per burst without the key; an outage still
// follows the policy.
TEST(ClientApiKeyTest, CredentialErrorsAreNeverAllowed) {
  for (const grpc::Status& answer :
       {grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no or unknown credential"),
        grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "tenant not granted"),
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad request")}) {
    SCOPED_TRACE(answer.error_message());
    FakeThrottleService fake(answer);
    LogLines log;
    ClientOptions options;
    options.target = fake.address();
    options.deadline = std::chrono::seconds(2);
    options.api_key = kApiKey;
    options.failure_policy = FailurePolicy::kAllow;
    options.log = log.sink();
    absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
    ASSERT_TRUE(client.ok());
    const auto code = static_cast<absl::StatusCode>(answer.error_code());
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ((*client)->Check(Hit()).status().code(), code);
      EXPECT_EQ((*client)->Check(Hit(), FailurePolicy::kDeny).status().code(), code);
      EXPECT_EQ((*client)->CheckBatch({Hit(), Hit()}).status().code(), code);
      EXPECT_EQ((*client)
                    ->CheckBatch({Hit()}, BatchOptions{.policy = FailurePolicy::kAllow})
                    .status()
                    .code(),
                code);
    }
    std::lock_guard<std::mutex> lock(log.mu);
    EXPECT_EQ(log.lines.size(), 1u) << ::testing::PrintToString(log.lines);
    for (const std::string& line : log.lines) EXPECT_THAT(line, Not(HasSubstr(kApiKey)));
  }
  // An outage (nothing listening) is still the policy's.
  ClientOptions options;
  {
    FakeThrottleService gone(grpc::Status::OK);
    options.target = gone.address();
  }
  options.deadline = std::chrono::milliseconds(500);
  options.failure_policy = FailurePolicy::kAllow;
  options.log = [](const std::string&) {};
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<ThrottleResult> result = (*client)->Check(Hit());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->allowed);
  EXPECT_EQ(result->source, ThrottleResult::Source::kFailurePolicy);
}

// The real traffikd over TLS, with the CA (and a client certificate when
// `mtls`).
class ClientTlsTest : public ::testing::Test {
 protected:
  void StartServer(bool mtls) {
    absl::StatusOr<std::unique_ptr<TestCerts>> certs = TestCerts::Create();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *std::move(certs);
    absl::StatusOr<CertKeyFiles> alice =
        certs_->Issue("alice", CertSpec{.common_name = "alice"});
    ASSERT_TRUE(alice.ok()) << alice.status();
    alice_ = *alice;
    std::string yaml = absl::StrCat(
        "throttles:\n  - uid: t\n    limit: 1000\n    period: 1s\ntls:\n  cert_file: ",
        certs_->server().cert_file, "\n  key_file: ", certs_->server().key_file, "\n");
    if (mtls) {
      absl::StrAppend(&yaml, "  client_ca_file: ", certs_->ca_file(),
                      "\n  require_client_cert: true\n");
    }
    absl::StatusOr<e2e::TempFile> file = e2e::TempFile::Create(yaml);
    ASSERT_TRUE(file.ok());
    config_.emplace(*std::move(file));
    absl::StatusOr<std::unique_ptr<e2e::TraffikdProcess>> process =
        e2e::TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen", "",
                                     "--config", config_->path()});
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
  }

  absl::StatusOr<ThrottleResult> CheckWith(std::optional<ClientTlsOptions> tls,
                                           const std::string& target = "") {
    ClientOptions options;
    options.target = target.empty() ? server_->grpc_address() : target;
    options.deadline = std::chrono::seconds(2);
    options.tls = std::move(tls);
    options.log = [](const std::string&) {};
    absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
    if (!client.ok()) return client.status();
    return (*client)->Check(Hit());
  }

  std::unique_ptr<TestCerts> certs_;
  CertKeyFiles alice_;
  std::optional<e2e::TempFile> config_;
  std::unique_ptr<e2e::TraffikdProcess> server_;
};

// Verifies the client's TLS options against a TLS traffikd: the right CA
// works (by address or with a server name), plaintext and another CA are
// refused, and a wrong server name is refused.
TEST_F(ClientTlsTest, ServerAuthenticated) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mtls=*/false));
  absl::StatusOr<ThrottleResult> ok =
      CheckWith(ClientTlsOptions{.ca_file = certs_->ca_file()});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->allowed);
  EXPECT_TRUE(CheckWith(ClientTlsOptions{.ca_file = certs_->ca_file(),
                                         .server_name = "localhost"})
                  .ok());
  EXPECT_EQ(CheckWith(std::nullopt).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(
      CheckWith(ClientTlsOptions{.ca_file = certs_->other_ca_file()}).status().code(),
      absl::StatusCode::kUnavailable);
  EXPECT_EQ(CheckWith(ClientTlsOptions{.ca_file = certs_->ca_file(),
                                       .server_name = "not-the-server.example"})
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
}

// Verifies the client certificate options against a traffikd requiring one.
TEST_F(ClientTlsTest, MutualTls) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mtls=*/true));
  EXPECT_TRUE(CheckWith(ClientTlsOptions{.ca_file = certs_->ca_file(),
                                         .cert_file = alice_.cert_file,
                                         .key_file = alice_.key_file})
                  .ok());
  EXPECT_EQ(CheckWith(ClientTlsOptions{.ca_file = certs_->ca_file()}).status().code(),
            absl::StatusCode::kUnavailable);
}

// --- traffikctl ---

struct CtlRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

std::string ShellQuote(const std::string& arg) {
  std::string out = "'";
  for (const char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

CtlRun RunCtl(const std::vector<std::string>& args) {
  std::string command = absl::StrCat("timeout 20 ", ShellQuote(TRAFFIKCTL_PATH));
  for (const std::string& arg : args) absl::StrAppend(&command, " ", ShellQuote(arg));
  absl::StrAppend(&command, " </dev/null 2>&1");
  CtlRun run;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) run.out.append(buffer, n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// Verifies traffikctl's --api-key-file (one trailing newline stripped) and
// --api-key-env send the key as metadata, on client and admin commands alike
// and never print it.
TEST(TraffikctlCredentialsTest, ApiKeyFromFileOrEnv) {
  FakeThrottleService fake(grpc::Status::OK);
  absl::StatusOr<e2e::TempFile> key_file =
      e2e::TempFile::Create(absl::StrCat(kApiKey, "\n"), ".key", "traffikctl-key");
  ASSERT_TRUE(key_file.ok());
  CtlRun run = RunCtl({"--target", fake.address(), "--api-key-file", key_file->path(),
                       "check", "t", "someone"});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  setenv("TRAFFIK_TEST_API_KEY", kApiKey, 1);
  run = RunCtl({"--target", fake.address(), "--api-key-env", "TRAFFIK_TEST_API_KEY",
                "check", "t", "someone"});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_THAT(run.out, Not(HasSubstr(kApiKey)));
  const std::string bearer = absl::StrCat("Bearer ", kApiKey);
  EXPECT_THAT(fake.authorizations(), ::testing::ElementsAre(bearer, bearer));

  // An unset variable, and both sources at once, are usage errors.
  run = RunCtl({"--target", fake.address(), "--api-key-env",
                "NO_SUCH_VARIABLE_FOR_TRAFFIK", "check", "t", "x"});
  EXPECT_EQ(run.exit_code, 2) << run.out;
  EXPECT_THAT(run.out, HasSubstr("NO_SUCH_VARIABLE_FOR_TRAFFIK is not set"));
  run = RunCtl({"--target", fake.address(), "--api-key-file", key_file->path(),
                "--api-key-env", "TRAFFIK_TEST_API_KEY", "check", "t", "x"});
  EXPECT_EQ(run.exit_code, 2) << run.out;
  unsetenv("TRAFFIK_TEST_API_KEY");
}

// Verifies traffikctl's --tls-* flags against a TLS traffikd requiring client
// certificates: check, health and an admin command's connection.
TEST_F(ClientTlsTest, TraffikctlTlsFlags) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mtls=*/true));
  const std::string target = server_->grpc_address();
  const std::vector<std::string> tls = {"--tls-ca",   certs_->ca_file(),
                                        "--tls-cert", alice_.cert_file,
                                        "--tls-key",  alice_.key_file};
  auto with = [&](std::vector<std::string> args) {
    std::vector<std::string> all = {"--target", target};
    all.insert(all.end(), tls.begin(), tls.end());
    all.insert(all.end(), args.begin(), args.end());
    return all;
  };
  CtlRun run = RunCtl(with({"check", "t", "someone"}));
  EXPECT_EQ(run.exit_code, 0) << run.out;
  run = RunCtl(with({"health"}));
  EXPECT_EQ(run.exit_code, 0) << run.out;
  // Reaches the server over TLS; it has no admin API: UNIMPLEMENTED, not
  // UNAVAILABLE.
  run = RunCtl(with({"throttles"}));
  EXPECT_EQ(run.exit_code, 2) << run.out;
  EXPECT_THAT(run.out, HasSubstr("UNIMPLEMENTED"));

  run = RunCtl(
      {"--target", target, "--tls-ca", certs_->ca_file(), "check", "t", "someone"});
  EXPECT_EQ(run.exit_code, 2) << run.out;
  EXPECT_THAT(run.out, HasSubstr("UNAVAILABLE"));
  run = RunCtl({"--target", target, "check", "t", "someone"});
  EXPECT_EQ(run.exit_code, 2) << run.out;
  run = RunCtl({"--target", target, "--tls-cert", alice_.cert_file, "check", "t", "x"});
  EXPECT_EQ(run.exit_code, 2) << run.out;
  EXPECT_THAT(run.out, HasSubstr("tls.cert_file and tls.key_file go together"));
}

// Verifies the quickstart example takes the same TLS and API-key flags: over
// TLS to the real traffikd, and the key as metadata to the fake service.
TEST_F(ClientTlsTest, QuickstartExampleFlags) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mtls=*/true));
  auto run = [](std::vector<std::string> args) {
    std::string command = absl::StrCat("timeout 20 ", ShellQuote(QUICKSTART_PATH));
    for (const std::string& arg : args) absl::StrAppend(&command, " ", ShellQuote(arg));
    absl::StrAppend(&command, " </dev/null >/dev/null 2>&1");
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(
      run({"--target", server_->grpc_address(), "--tls-ca", certs_->ca_file(),
           "--tls-cert", alice_.cert_file, "--tls-key", alice_.key_file, "t", "someone"}),
      0);
  EXPECT_EQ(run({"--target", server_->grpc_address(), "--tls-ca", certs_->ca_file(), "t",
                 "someone"}),
            2);
  EXPECT_EQ(run({"--target", server_->grpc_address(), "t", "someone"}), 2);

  FakeThrottleService fake(grpc::Status::OK);
  setenv("TRAFFIK_TEST_QUICKSTART_KEY", kApiKey, 1);
  EXPECT_EQ(run({"--target", fake.address(), "--api-key-env",
                 "TRAFFIK_TEST_QUICKSTART_KEY", "t", "someone"}),
            0);
  unsetenv("TRAFFIK_TEST_QUICKSTART_KEY");
  EXPECT_THAT(fake.authorizations(),
              ::testing::ElementsAre(absl::StrCat("Bearer ", kApiKey)));
}

}  // namespace
}  // namespace traffik
