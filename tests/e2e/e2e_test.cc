// End-to-end tests: each test starts the real traffikd binary on loopback port
// 0 and talks gRPC (decisions, health) and HTTP (/metrics) to it, or runs it to
// completion to check its command line and config handling.
//
// Throttles use long periods (1h) so refill never interferes, except in the
// refill test, which uses a short one and sleeps.

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "app/health_client.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "traffik/v1/errors.pb.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::e2e {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kHourMs = 3'600'000;
constexpr auto kRpcTimeout = std::chrono::seconds(5);
constexpr auto kHealthTimeout = std::chrono::milliseconds(2000);
constexpr char kServiceName[] = "traffik.v1.ThrottleService";
constexpr char kPromtool[] = "/usr/bin/promtool";

// A config with two configured throttles and tenants covering the quota
// multiplier and the inline-spec switch.
constexpr char kConfigYaml[] = R"yaml(
throttles:
  - uid: search
    limit: 3
    period: 1h
  - uid: login
    limit: 5
    period: 1h
tenants:
  - name: default
  - name: gold
    quota_multiplier: 2
  - name: tiny
    quota_multiplier: 0.1
  - name: closed
    allow_inline_specs: false
)yaml";

// The arguments every server gets: loopback, port 0 for both listeners.
std::vector<std::string> LoopbackArgs() {
  return {"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"};
}

v1::ShouldThrottleRequest InlineRequest(const std::string& identifier, uint64_t limit,
                                        uint64_t period_ms, uint32_t cost = 0,
                                        const std::string& tenant = "",
                                        const std::string& uid = "inline-test") {
  v1::ShouldThrottleRequest request;
  request.set_identifier(identifier);
  request.set_throttle_uid(uid);
  request.set_tenant(tenant);
  request.set_cost(cost);
  request.mutable_spec()->set_limit(limit);
  request.mutable_spec()->set_period_ms(period_ms);
  return request;
}

v1::ShouldThrottleRequest ConfiguredRequest(const std::string& identifier,
                                            const std::string& uid,
                                            const std::string& tenant = "",
                                            uint32_t cost = 0) {
  v1::ShouldThrottleRequest request;
  request.set_identifier(identifier);
  request.set_throttle_uid(uid);
  request.set_tenant(tenant);
  request.set_cost(cost);
  return request;
}

// The result of one RPC.
template <typename Response>
struct Reply {
  grpc::Status status;
  Response response;
};

// Runs `command` through the shell; returns its exit status and output.
std::pair<int, std::string> RunShell(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// Starts traffikd for one test and offers gRPC helpers. Each derived fixture
// is one area of the contract.
class TraffikdTest : public ::testing::Test {
 protected:
  // Starts traffikd on loopback port 0, with `yaml` as its config file unless
  // empty, plus `extra_args`. Use with ASSERT_NO_FATAL_FAILURE.
  void StartServer(const std::string& yaml = "",
                   const std::vector<std::string>& extra_args = {}) {
    std::vector<std::string> args = LoopbackArgs();
    if (!yaml.empty()) {
      absl::StatusOr<TempFile> config = TempFile::Create(yaml);
      ASSERT_TRUE(config.ok()) << config.status();
      args.push_back("--config");
      args.push_back(config->path());
      config_ = std::move(*config);
    }
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> process =
        TraffikdProcess::Start(args);
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = std::move(*process);
    stub_ = NewStub();
  }

  std::unique_ptr<v1::ThrottleService::Stub> NewStub(int channel_tag = 0) const {
    grpc::ChannelArguments channel_args;
    // Distinct arguments give distinct connections (no shared subchannel).
    channel_args.SetInt("traffik.e2e.channel", channel_tag);
    return v1::ThrottleService::NewStub(grpc::CreateCustomChannel(
        process_->grpc_address(), grpc::InsecureChannelCredentials(), channel_args));
  }

  static Reply<v1::ShouldThrottleResponse> Decide(
      v1::ThrottleService::Stub& stub, const v1::ShouldThrottleRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    Reply<v1::ShouldThrottleResponse> reply;
    reply.status = stub.ShouldThrottle(&context, request, &reply.response);
    return reply;
  }

  Reply<v1::ShouldThrottleResponse> Decide(const v1::ShouldThrottleRequest& request) {
    return Decide(*stub_, request);
  }

  Reply<v1::ShouldThrottleBatchResponse> DecideBatch(
      const std::vector<v1::ShouldThrottleRequest>& requests) {
    v1::ShouldThrottleBatchRequest batch;
    for (const auto& request : requests) *batch.add_requests() = request;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    Reply<v1::ShouldThrottleBatchResponse> reply;
    reply.status = stub_->ShouldThrottleBatch(&context, batch, &reply.response);
    return reply;
  }

  // Expects `request` to be refused with `code` and a message containing
  // `message_part`.
  void ExpectError(const v1::ShouldThrottleRequest& request, grpc::StatusCode code,
                   const std::string& message_part) {
    const Reply<v1::ShouldThrottleResponse> reply = Decide(request);
    EXPECT_EQ(reply.status.error_code(), code) << reply.status.error_message();
    EXPECT_THAT(reply.status.error_message(), HasSubstr(message_part));
  }

  // Counts how many of `n` identical calls are allowed; all must succeed.
  int CountAllowed(const v1::ShouldThrottleRequest& request, int n) {
    int allowed = 0;
    for (int i = 0; i < n; ++i) {
      const Reply<v1::ShouldThrottleResponse> reply = Decide(request);
      EXPECT_TRUE(reply.status.ok()) << reply.status.error_message();
      if (reply.response.wait_ms() == 0) ++allowed;
    }
    return allowed;
  }

  std::optional<TempFile> config_;
  std::unique_ptr<TraffikdProcess> process_;
  std::unique_ptr<v1::ThrottleService::Stub> stub_;
};

// ------------------------------------------------------------- decisions

// Default config (no --config): inline specs on the default tenant.
class DecisionTest : public TraffikdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer()); }
};

// Verifies a first hit on a new bucket is allowed and reports limit, remaining and reset.
TEST_F(DecisionTest, FirstCallAllowedWithLimitRemainingAndReset) {
  const auto reply = Decide(InlineRequest("user:1", 10, kHourMs));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.wait_ms(), 0u);
  EXPECT_EQ(reply.response.limit(), 10u);
  EXPECT_EQ(reply.response.remaining(), 9u);
  // One token refills in period / limit = 360 s.
  EXPECT_LE(reply.response.reset_ms(), 360'000u);
  EXPECT_GE(reply.response.reset_ms(), 350'000u);
}

// Verifies a bucket of N allows exactly N hits, then refuses with wait_ms > 0 and
// remaining 0.
TEST_F(DecisionTest, ExhaustBucket) {
  const auto request = InlineRequest("user:2", 5, kHourMs);
  for (uint64_t i = 0; i < 5; ++i) {
    const auto reply = Decide(request);
    ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
    EXPECT_EQ(reply.response.wait_ms(), 0u) << "hit " << i;
    EXPECT_EQ(reply.response.remaining(), 4 - i) << "hit " << i;
  }
  for (int i = 0; i < 3; ++i) {
    const auto reply = Decide(request);
    ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
    // One token takes period / limit = 720 s to refill.
    EXPECT_GT(reply.response.wait_ms(), 0u);
    EXPECT_LE(reply.response.wait_ms(), 720'000u);
    EXPECT_GE(reply.response.wait_ms(), 710'000u);
    EXPECT_EQ(reply.response.remaining(), 0u);
    EXPECT_EQ(reply.response.limit(), 5u);
    EXPECT_LE(reply.response.reset_ms(), kHourMs);
    EXPECT_GE(reply.response.reset_ms(), kHourMs - 10'000);
  }
}

// Verifies different identifiers (including binary ones) have independent buckets.
TEST_F(DecisionTest, IdentifiersAreIndependent) {
  const std::string binary_a("id\0a", 4);
  const std::string binary_b("id\0b", 4);
  for (const std::string& id : {std::string("alice"), std::string("bob"), binary_a}) {
    EXPECT_EQ(CountAllowed(InlineRequest(id, 2, kHourMs), 3), 2) << id;
  }
  EXPECT_EQ(CountAllowed(InlineRequest(binary_b, 2, kHourMs), 3), 2);
}

// Verifies different throttle uids on the same identifier have independent buckets.
TEST_F(DecisionTest, ThrottleUidsAreIndependent) {
  EXPECT_EQ(CountAllowed(InlineRequest("carol", 2, kHourMs, 0, "", "uid-a"), 3), 2);
  EXPECT_EQ(CountAllowed(InlineRequest("carol", 2, kHourMs, 0, "", "uid-b"), 3), 2);
}

// Verifies cost takes that many tokens, 0 means 1, and a refused hit takes nothing.
TEST_F(DecisionTest, CostTakesTokens) {
  auto reply = Decide(InlineRequest("dave", 10, kHourMs, 4));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.wait_ms(), 0u);
  EXPECT_EQ(reply.response.remaining(), 6u);

  reply = Decide(InlineRequest("dave", 10, kHourMs, 0));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.remaining(), 5u);

  reply = Decide(InlineRequest("dave", 10, kHourMs, 6));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_GT(reply.response.wait_ms(), 0u);
  EXPECT_EQ(reply.response.remaining(), 5u);  // nothing taken
  // One missing token refills in 360 s.
  EXPECT_LE(reply.response.wait_ms(), 360'000u);
  EXPECT_GE(reply.response.wait_ms(), 350'000u);

  reply = Decide(InlineRequest("dave", 10, kHourMs, 5));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.wait_ms(), 0u);
  EXPECT_EQ(reply.response.remaining(), 0u);
}

// Verifies tokens refill continuously over the period and wait_ms is a usable retry time.
TEST_F(DecisionTest, RefillsOverPeriod) {
  // 2 tokens per 200 ms: one token per 100 ms.
  const auto request = InlineRequest("erin", 2, 200);
  EXPECT_EQ(CountAllowed(request, 2), 2);
  auto reply = Decide(request);
  ASSERT_TRUE(reply.status.ok());
  ASSERT_GT(reply.response.wait_ms(), 0u);
  EXPECT_GE(reply.response.wait_ms(), 1u);
  EXPECT_LE(reply.response.wait_ms(), 100u);

  std::this_thread::sleep_for(std::chrono::milliseconds(reply.response.wait_ms() + 20));
  reply = Decide(request);
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.wait_ms(), 0u);

  // After a full period and more, the bucket is full again.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  reply = Decide(request);
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.wait_ms(), 0u);
  EXPECT_EQ(reply.response.remaining(), 1u);
  EXPECT_LE(reply.response.reset_ms(), 100u);
}

// ------------------------------------------------------ configured throttles

// The YAML config above: configured throttles, multipliers, a closed tenant.
class ConfiguredThrottleTest : public TraffikdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer(kConfigYaml)); }
};

// Verifies a throttle from the YAML config applies by uid, without a spec.
TEST_F(ConfiguredThrottleTest, ConfiguredThrottleFromYaml) {
  auto reply = Decide(ConfiguredRequest("frank", "search"));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.limit(), 3u);
  EXPECT_EQ(reply.response.remaining(), 2u);
  EXPECT_EQ(CountAllowed(ConfiguredRequest("frank", "search"), 4), 2);
  EXPECT_EQ(CountAllowed(ConfiguredRequest("frank", "login"), 6), 5);
}

// Verifies the tenant quota multiplier scales capacity (gold x2, tiny x0.1 floors to 1).
TEST_F(ConfiguredThrottleTest, TenantQuotaMultiplier) {
  auto reply = Decide(ConfiguredRequest("gina", "search", "gold"));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.limit(), 6u);
  EXPECT_EQ(reply.response.remaining(), 5u);
  EXPECT_EQ(CountAllowed(ConfiguredRequest("gina", "search", "gold"), 7), 5);

  reply = Decide(InlineRequest("gina", 5, kHourMs, 0, "gold"));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.limit(), 10u);

  // max(1, floor(3 * 0.1)) = 1.
  reply = Decide(ConfiguredRequest("gina", "search", "tiny"));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.limit(), 1u);
  EXPECT_EQ(reply.response.remaining(), 0u);
  EXPECT_EQ(CountAllowed(ConfiguredRequest("gina", "search", "tiny"), 2), 0);
}

// Verifies tenants have independent buckets and "" selects the default tenant.
TEST_F(ConfiguredThrottleTest, TenantsAreIndependent) {
  EXPECT_EQ(CountAllowed(ConfiguredRequest("hank", "search", ""), 4), 3);
  // Same bucket under its explicit name.
  EXPECT_EQ(CountAllowed(ConfiguredRequest("hank", "search", "default"), 1), 0);
  EXPECT_EQ(CountAllowed(ConfiguredRequest("hank", "search", "gold"), 7), 6);
  EXPECT_EQ(CountAllowed(ConfiguredRequest("hank", "search", "closed"), 4), 3);
}

// Verifies a configured throttle wins over an inline spec with the same uid.
TEST_F(ConfiguredThrottleTest, ConfiguredWinsOverSpec) {
  const auto request = InlineRequest("ivan", 100, 1000, 0, "", "search");
  const auto reply = Decide(request);
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.limit(), 3u);
  EXPECT_EQ(reply.response.remaining(), 2u);
  EXPECT_EQ(CountAllowed(request, 3), 2);
}

// Verifies an inline spec on a tenant with allow_inline_specs: false is
// PERMISSION_DENIED.
TEST_F(ConfiguredThrottleTest, InlineSpecForbiddenOnClosedTenant) {
  ExpectError(InlineRequest("judy", 5, kHourMs, 0, "closed"),
              grpc::StatusCode::PERMISSION_DENIED, "closed");
  // Configured throttles still work there.
  const auto reply = Decide(ConfiguredRequest("judy", "search", "closed"));
  EXPECT_TRUE(reply.status.ok()) << reply.status.error_message();
}

// ------------------------------------------------------------------ errors

// Errors on single decisions, against the YAML config.
class ErrorTest : public TraffikdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer(kConfigYaml)); }
};

// Verifies an empty identifier is INVALID_ARGUMENT naming the identifier.
TEST_F(ErrorTest, EmptyIdentifier) {
  ExpectError(InlineRequest("", 5, kHourMs), grpc::StatusCode::INVALID_ARGUMENT,
              "identifier");
  ExpectError(ConfiguredRequest("", "search"), grpc::StatusCode::INVALID_ARGUMENT,
              "identifier");
}

// Verifies an identifier over max_identifier_bytes (default 4096) is INVALID_ARGUMENT.
TEST_F(ErrorTest, IdentifierTooLong) {
  ExpectError(ConfiguredRequest(std::string(4097, 'x'), "search"),
              grpc::StatusCode::INVALID_ARGUMENT, "identifier");
  const auto reply = Decide(ConfiguredRequest(std::string(4096, 'x'), "search"));
  EXPECT_TRUE(reply.status.ok()) << reply.status.error_message();
}

// Verifies an unknown throttle without a spec is NOT_FOUND naming the uid.
TEST_F(ErrorTest, UnknownThrottleWithoutSpec) {
  ExpectError(ConfiguredRequest("kate", "no-such-throttle"), grpc::StatusCode::NOT_FOUND,
              "no-such-throttle");
}

// Verifies an unknown tenant is NOT_FOUND naming the tenant.
TEST_F(ErrorTest, UnknownTenant) {
  ExpectError(ConfiguredRequest("kate", "search", "no-such-tenant"),
              grpc::StatusCode::NOT_FOUND, "no-such-tenant");
  ExpectError(InlineRequest("kate", 5, kHourMs, 0, "no-such-tenant"),
              grpc::StatusCode::NOT_FOUND, "no-such-tenant");
}

// Verifies a cost above the bucket's capacity is OUT_OF_RANGE and takes nothing.
TEST_F(ErrorTest, CostAboveCapacity) {
  ExpectError(ConfiguredRequest("liam", "search", "", 4), grpc::StatusCode::OUT_OF_RANGE,
              "cost");
  ExpectError(InlineRequest("liam", 5, kHourMs, 6), grpc::StatusCode::OUT_OF_RANGE,
              "cost");
  // Capacity after the multiplier: gold allows cost 6 on "search" but not 7.
  ExpectError(ConfiguredRequest("liam", "search", "gold", 7),
              grpc::StatusCode::OUT_OF_RANGE, "cost");
  const auto reply = Decide(ConfiguredRequest("liam", "search", "gold", 6));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.wait_ms(), 0u);
  EXPECT_EQ(reply.response.remaining(), 0u);
  // The refused hits took nothing from the default tenant's bucket.
  const auto fresh = Decide(ConfiguredRequest("liam", "search"));
  ASSERT_TRUE(fresh.status.ok());
  EXPECT_EQ(fresh.response.remaining(), 2u);
}

// Verifies a spec with limit 0 or period_ms 0 is INVALID_ARGUMENT naming the field.
TEST_F(ErrorTest, BadSpec) {
  ExpectError(InlineRequest("mia", 0, kHourMs), grpc::StatusCode::INVALID_ARGUMENT,
              "limit");
  ExpectError(InlineRequest("mia", 5, 0), grpc::StatusCode::INVALID_ARGUMENT, "period");
}

// Verifies a malformed throttle uid (empty, or containing ':') is INVALID_ARGUMENT.
TEST_F(ErrorTest, BadThrottleUid) {
  const auto empty = Decide(InlineRequest("nina", 5, kHourMs, 0, "", ""));
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << empty.status.error_message();
  const auto colon = Decide(InlineRequest("nina", 5, kHourMs, 0, "", "a:b"));
  EXPECT_EQ(colon.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << colon.status.error_message();
}

// Limits set in the config file.
class ConfigLimitsTest : public TraffikdTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartServer("max_identifier_bytes: 8\n"));
  }
};

// Verifies max_identifier_bytes from the config bounds identifiers, in singles and
// batches.
TEST_F(ConfigLimitsTest, MaxIdentifierBytes) {
  ExpectError(InlineRequest("123456789", 5, kHourMs), grpc::StatusCode::INVALID_ARGUMENT,
              "identifier");
  const auto reply = Decide(InlineRequest("12345678", 5, kHourMs));
  EXPECT_TRUE(reply.status.ok()) << reply.status.error_message();

  const auto batch = DecideBatch(
      {InlineRequest("12345678", 5, kHourMs), InlineRequest("123456789", 5, kHourMs)});
  EXPECT_EQ(batch.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << batch.status.error_message();
  EXPECT_THAT(batch.status.error_message(), HasSubstr("requests[1]"));
}

// ------------------------------------------------------------------- batch

// Batches against the YAML config, with max_batch_size 4.
class BatchTest : public TraffikdTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(
        StartServer(absl::StrCat(kConfigYaml, "max_batch_size: 4\n")));
  }
};

// Verifies batch answers come in request order, as if decided one by one.
TEST_F(BatchTest, AnswersInRequestOrder) {
  const auto reply = DecideBatch({
      InlineRequest("oscar", 1, kHourMs),
      InlineRequest("oscar", 1, kHourMs),
      ConfiguredRequest("oscar", "login", "", 2),
      ConfiguredRequest("oscar", "search", "gold"),
  });
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  ASSERT_EQ(reply.response.responses_size(), 4);
  const auto& r = reply.response.responses();
  EXPECT_EQ(r[0].wait_ms(), 0u);
  EXPECT_EQ(r[0].limit(), 1u);
  EXPECT_GT(r[1].wait_ms(), 0u);  // the first item emptied the bucket
  EXPECT_EQ(r[2].wait_ms(), 0u);
  EXPECT_EQ(r[2].limit(), 5u);
  EXPECT_EQ(r[2].remaining(), 3u);
  EXPECT_EQ(r[3].wait_ms(), 0u);
  EXPECT_EQ(r[3].limit(), 6u);
  EXPECT_EQ(r[3].remaining(), 5u);
}

// Verifies a batch with an invalid item is rejected whole, naming its index, taking no
// tokens.
TEST_F(BatchTest, InvalidItemRejectsWholeBatch) {
  auto reply = DecideBatch({
      ConfiguredRequest("paul", "search"), ConfiguredRequest("paul", "login"),
      ConfiguredRequest("", "search"),  // empty identifier
  });
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << reply.status.error_message();
  EXPECT_THAT(reply.status.error_message(), HasSubstr("requests[2]"));

  reply = DecideBatch({
      ConfiguredRequest("paul", "search"),
      InlineRequest("paul", 0, kHourMs),  // limit 0
      ConfiguredRequest("paul", "login"),
  });
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << reply.status.error_message();
  EXPECT_THAT(reply.status.error_message(), HasSubstr("requests[1]"));

  // Neither batch took a token: both buckets are still full.
  auto single = Decide(ConfiguredRequest("paul", "search"));
  ASSERT_TRUE(single.status.ok());
  EXPECT_EQ(single.response.remaining(), 2u);
  single = Decide(ConfiguredRequest("paul", "login"));
  ASSERT_TRUE(single.status.ok());
  EXPECT_EQ(single.response.remaining(), 4u);
}

// Verifies a batch above max_batch_size is INVALID_ARGUMENT and takes no tokens.
TEST_F(BatchTest, TooLargeBatch) {
  std::vector<v1::ShouldThrottleRequest> requests(5, ConfiguredRequest("quinn", "login"));
  const auto reply = DecideBatch(requests);
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << reply.status.error_message();
  const auto single = Decide(ConfiguredRequest("quinn", "login"));
  ASSERT_TRUE(single.status.ok());
  EXPECT_EQ(single.response.remaining(), 4u);
}

// ------------------------------------------------------------------ health

class HealthTest : public TraffikdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer()); }
};

// Verifies health is SERVING for "" and traffik.v1.ThrottleService while running.
TEST_F(HealthTest, ServingForBothNames) {
  for (const std::string service : {"", kServiceName}) {
    const absl::StatusOr<bool> serving =
        CheckHealth(process_->grpc_address(), service, kHealthTimeout);
    ASSERT_TRUE(serving.ok()) << serving.status();
    EXPECT_TRUE(*serving) << "service '" << service << "'";
  }
}

// Verifies an unknown service name is NOT_FOUND, and the message names the address.
TEST_F(HealthTest, UnknownServiceIsNotFound) {
  const absl::StatusOr<bool> serving =
      CheckHealth(process_->grpc_address(), "no.such.Service", kHealthTimeout);
  EXPECT_EQ(serving.status().code(), absl::StatusCode::kNotFound) << serving.status();
  EXPECT_THAT(std::string(serving.status().message()),
              HasSubstr(process_->grpc_address()));
}

// Verifies a health check against a closed port is an error naming the address.
TEST_F(HealthTest, NothingListeningIsUnavailable) {
  int port = 0;
  {
    absl::StatusOr<HeldPort> held = HeldPort::Listen();
    ASSERT_TRUE(held.ok()) << held.status();
    port = held->port();
  }  // released: nothing listens there now
  const std::string address = absl::StrCat("127.0.0.1:", port);
  const absl::StatusOr<bool> serving = CheckHealth(address, "", kHealthTimeout);
  EXPECT_EQ(serving.status().code(), absl::StatusCode::kUnavailable) << serving.status();
  EXPECT_THAT(std::string(serving.status().message()), HasSubstr(address));
}

// ----------------------------------------------------------------- metrics

class MetricsTest : public TraffikdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer(kConfigYaml)); }

  std::string Scrape() {
    absl::StatusOr<HttpResponse> response = HttpGet(process_->metrics_port(), "/metrics");
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return "";
    EXPECT_EQ(response->status, 200) << response->body;
    return response->body;
  }
};

constexpr char kSecretIdentifier[] = "secret-identifier-7f3a9c";

// Verifies the decision, latency, bucket and error series are present with the right
// counts.
TEST_F(MetricsTest, SeriesPresent) {
  EXPECT_EQ(CountAllowed(InlineRequest(kSecretIdentifier, 2, kHourMs), 3), 2);
  EXPECT_EQ(CountAllowed(ConfiguredRequest(kSecretIdentifier, "search", "gold"), 1), 1);
  ExpectError(InlineRequest("", 2, kHourMs), grpc::StatusCode::INVALID_ARGUMENT,
              "identifier");

  const std::string text = Scrape();
  EXPECT_EQ(
      SampleValue(text, "traffik_decisions_total",
                  {{"tenant", "default"}, {"throttle", "inline"}, {"result", "allowed"}}),
      2.0)
      << text;
  EXPECT_EQ(SampleValue(
                text, "traffik_decisions_total",
                {{"tenant", "default"}, {"throttle", "inline"}, {"result", "throttled"}}),
            1.0)
      << text;
  EXPECT_EQ(
      SampleValue(text, "traffik_decisions_total",
                  {{"tenant", "gold"}, {"throttle", "search"}, {"result", "allowed"}}),
      1.0)
      << text;
  EXPECT_EQ(SampleValue(text, "traffik_errors_total", {{"code", "INVALID_ARGUMENT"}}),
            1.0)
      << text;
  EXPECT_TRUE(
      SampleValue(text, "traffik_decision_duration_seconds_bucket", {{"le", "+Inf"}})
          .has_value())
      << text;
  const std::optional<double> count =
      SampleValue(text, "traffik_decision_duration_seconds_count");
  ASSERT_TRUE(count.has_value()) << text;
  EXPECT_GE(*count, 4.0);
  EXPECT_TRUE(SampleValue(text, "traffik_decision_duration_seconds_sum").has_value());
  const std::optional<double> buckets = SampleValue(text, "traffik_buckets");
  ASSERT_TRUE(buckets.has_value()) << text;
  EXPECT_GE(*buckets, 2.0);
  EXPECT_TRUE(SampleValue(text, "traffik_bucket_evictions_total").has_value()) << text;
  EXPECT_THAT(text, AllOf(HasSubstr("# TYPE traffik_decisions_total counter"),
                          HasSubstr("# TYPE traffik_decision_duration_seconds histogram"),
                          HasSubstr("# TYPE traffik_buckets gauge")));
}

// Verifies identifiers never appear in the metrics output.
TEST_F(MetricsTest, NoIdentifierInOutput) {
  EXPECT_EQ(CountAllowed(InlineRequest(kSecretIdentifier, 1, kHourMs), 2), 1);
  EXPECT_EQ(CountAllowed(ConfiguredRequest(kSecretIdentifier, "login"), 1), 1);
  const std::string text = Scrape();
  ASSERT_FALSE(text.empty());
  EXPECT_THAT(text, Not(HasSubstr("secret-identifier")));
}

// Verifies `promtool check metrics` accepts the scraped text.
TEST_F(MetricsTest, PromtoolAcceptsOutput) {
  ASSERT_EQ(access(kPromtool, X_OK), 0)
      << kPromtool << " is missing: install Debian's `prometheus` package";
  EXPECT_EQ(CountAllowed(InlineRequest("rose", 1, kHourMs), 2), 1);
  ExpectError(ConfiguredRequest("rose", "nope"), grpc::StatusCode::NOT_FOUND, "nope");
  const std::string text = Scrape();
  ASSERT_FALSE(text.empty());
  absl::StatusOr<TempFile> file = TempFile::Create(text, ".prom", "traffik-metrics");
  ASSERT_TRUE(file.ok()) << file.status();
  const auto [exit_code, output] =
      RunShell(absl::StrCat(kPromtool, " check metrics < '", file->path(), "'"));
  EXPECT_EQ(exit_code, 0) << output << "\n--- scraped text:\n" << text;
}

// Verifies unknown paths on the metrics port are 404.
TEST_F(MetricsTest, UnknownPathIsNotFound) {
  absl::StatusOr<HttpResponse> response = HttpGet(process_->metrics_port(), "/nope");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 404);
}

// ---------------------------------------------------------------- shutdown

class ShutdownTest : public TraffikdTest {};

// Verifies SIGTERM drains and exits 0 with the draining and stopped lines.
TEST_F(ShutdownTest, SigtermExitsZero) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const int port = process_->grpc_port();
  ASSERT_TRUE(process_->SendSignal(SIGTERM));
  const std::optional<int> status = process_->WaitExit(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value()) << "still running:\n" << process_->StderrText();
  EXPECT_EQ(*status, 0) << process_->StderrText();
  EXPECT_THAT(process_->StderrText(),
              AllOf(HasSubstr("traffikd: received SIGTERM, draining"),
                    HasSubstr("traffikd: stopped")));
  EXPECT_FALSE(CanConnect(port));
}

// Verifies SIGINT also stops the server with exit 0.
TEST_F(ShutdownTest, SigintExitsZero) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_TRUE(process_->SendSignal(SIGINT));
  const std::optional<int> status = process_->WaitExit(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value()) << "still running:\n" << process_->StderrText();
  EXPECT_EQ(*status, 0) << process_->StderrText();
  EXPECT_THAT(process_->StderrText(), HasSubstr("traffikd: stopped"));
}

// Verifies an open, idle client connection does not hold the exit past shutdown_grace.
TEST_F(ShutdownTest, ExitsWithinShutdownGrace) {
  ASSERT_NO_FATAL_FAILURE(StartServer("shutdown_grace: 1s\n"));
  const auto reply = Decide(InlineRequest("uma", 5, kHourMs));  // connects stub_
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  ASSERT_TRUE(process_->SendSignal(SIGTERM));
  // Grace plus a generous margin for a loaded machine.
  const std::optional<int> status = process_->WaitExit(std::chrono::seconds(4));
  ASSERT_TRUE(status.has_value()) << "still running:\n" << process_->StderrText();
  EXPECT_EQ(*status, 0) << process_->StderrText();
}

// Verifies that during drain_delay health is NOT_SERVING while decisions still work.
TEST_F(ShutdownTest, DrainDelayReportsNotServing) {
  ASSERT_NO_FATAL_FAILURE(StartServer("drain_delay: 2s\nshutdown_grace: 1s\n"));
  const std::string address = process_->grpc_address();
  const auto signalled = std::chrono::steady_clock::now();
  ASSERT_TRUE(process_->SendSignal(SIGTERM));

  bool not_serving = false;
  while (std::chrono::steady_clock::now() - signalled < std::chrono::milliseconds(1500)) {
    const absl::StatusOr<bool> serving = CheckHealth(address, "", kHealthTimeout);
    if (serving.ok() && !*serving) {
      not_serving = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(not_serving) << "health never went NOT_SERVING:\n"
                           << process_->StderrText();
  const absl::StatusOr<bool> service = CheckHealth(address, kServiceName, kHealthTimeout);
  ASSERT_TRUE(service.ok()) << service.status();
  EXPECT_FALSE(*service);

  // Still in the drain delay: the server keeps answering.
  EXPECT_TRUE(process_->IsRunning());
  const auto reply = Decide(InlineRequest("sam", 5, kHourMs));
  EXPECT_TRUE(reply.status.ok()) << reply.status.error_message();

  const std::optional<int> status = process_->WaitExit(std::chrono::seconds(15));
  ASSERT_TRUE(status.has_value()) << "still running:\n" << process_->StderrText();
  EXPECT_EQ(*status, 0) << process_->StderrText();
  EXPECT_GE(std::chrono::steady_clock::now() - signalled,
            std::chrono::milliseconds(1900));
  EXPECT_THAT(process_->StderrText(), HasSubstr("traffikd: stopped"));
}

// ------------------------------------------------------------- command line

class CommandLineTest : public TraffikdTest {};

constexpr char kBadConfigYaml[] = R"yaml(throttles:
  - uid: search
    limit: 3
    period: 5x
)yaml";

// Verifies --check-config accepts a valid config: exit 0, prints OK, listens nowhere.
TEST_F(CommandLineTest, CheckConfigOk) {
  absl::StatusOr<TempFile> config = TempFile::Create(kConfigYaml);
  ASSERT_TRUE(config.ok()) << config.status();
  const RunResult result = RunTraffikd({"--check-config", "--config", config->path()});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, HasSubstr("OK"));
  EXPECT_THAT(result.output, Not(HasSubstr("listening")));
}

// Verifies a bad config exits 1 naming the file, the field path and the problem.
TEST_F(CommandLineTest, BadConfigExitsOneNamingFileAndField) {
  absl::StatusOr<TempFile> config = TempFile::Create(kBadConfigYaml);
  ASSERT_TRUE(config.ok()) << config.status();
  for (const bool check_only : {true, false}) {
    std::vector<std::string> args = LoopbackArgs();
    if (check_only) args.push_back("--check-config");
    args.insert(args.end(), {"--config", config->path()});
    const RunResult result = RunTraffikd(args);
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_THAT(result.output,
                AllOf(HasSubstr(config->path()), HasSubstr("throttles[0].period"),
                      HasSubstr("bad duration")));
    EXPECT_THAT(result.output, Not(HasSubstr("listening")));
  }
}

// Verifies a missing config file exits 1 naming the path.
TEST_F(CommandLineTest, MissingConfigFileExitsOne) {
  const std::string path = "/nonexistent/traffik-e2e/missing.yaml";
  const RunResult result = RunTraffikd(
      {"--config", path, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_THAT(result.output, HasSubstr(path));
}

// Verifies a bad config is reported before binding: with both ports taken the
// error is still the config error, and no startup line appears.
TEST_F(CommandLineTest, NothingListensAfterBadConfig) {
  absl::StatusOr<TempFile> config = TempFile::Create(kBadConfigYaml);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<HeldPort> grpc_port = HeldPort::Listen();
  absl::StatusOr<HeldPort> metrics_port = HeldPort::Listen();
  ASSERT_TRUE(grpc_port.ok() && metrics_port.ok());
  const RunResult result =
      RunTraffikd({"--config", config->path(), "--listen",
                   absl::StrCat("127.0.0.1:", grpc_port->port()), "--metrics-listen",
                   absl::StrCat("127.0.0.1:", metrics_port->port())});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_THAT(result.output, HasSubstr("throttles[0].period"));
  EXPECT_THAT(result.output, Not(HasSubstr("listening")));
  EXPECT_THAT(result.output, Not(HasSubstr("in use")));
}

// Verifies a taken gRPC port exits 1 with a message naming the address.
TEST_F(CommandLineTest, TakenPortExitsOne) {
  absl::StatusOr<HeldPort> held = HeldPort::Listen();
  ASSERT_TRUE(held.ok()) << held.status();
  const std::string address = absl::StrCat("127.0.0.1:", held->port());
  const RunResult result =
      RunTraffikd({"--listen", address, "--metrics-listen", "127.0.0.1:0"});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_THAT(result.output, HasSubstr(address));
  EXPECT_THAT(result.output, Not(HasSubstr("traffikd: listening")));
}

// Verifies a second traffikd on a running one's gRPC port exits 1 (no SO_REUSEPORT
// sharing).
TEST_F(CommandLineTest, PortOfRunningTraffikdExitsOne) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const RunResult result = RunTraffikd(
      {"--listen", process_->grpc_address(), "--metrics-listen", "127.0.0.1:0"});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_THAT(result.output, HasSubstr(process_->grpc_address()));
}

// Verifies an unknown flag exits 2 naming the flag.
TEST_F(CommandLineTest, UnknownFlagExitsTwo) {
  const RunResult result = RunTraffikd({"--bogus-flag", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_THAT(result.output, HasSubstr("--bogus-flag"));
  EXPECT_THAT(result.output, Not(HasSubstr("listening")));
}

// Verifies a flag without its value exits 2 naming the flag.
TEST_F(CommandLineTest, MissingFlagValueExitsTwo) {
  const RunResult result = RunTraffikd({"--listen", "127.0.0.1:0", "--config"});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_THAT(result.output, HasSubstr("--config"));
}

// Verifies --flag=value works for every flag and an empty --metrics-listen= turns metrics
// off.
TEST_F(CommandLineTest, EqualsFormAndMetricsOff) {
  absl::StatusOr<TempFile> config = TempFile::Create(kConfigYaml);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> process = TraffikdProcess::Start(
      {"--config=" + config->path(), "--listen=127.0.0.1:0", "--metrics-listen="});
  ASSERT_TRUE(process.ok()) << process.status();
  process_ = std::move(*process);
  stub_ = NewStub();
  EXPECT_GT(process_->grpc_port(), 0);
  EXPECT_EQ(process_->metrics_port(), 0);
  EXPECT_THAT(process_->StderrText(), HasSubstr("metrics=off"));
  const auto reply = Decide(ConfiguredRequest("tara", "search"));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.limit(), 3u);  // the config was loaded
}

// Verifies --help and --version exit 0 with some output.
TEST_F(CommandLineTest, HelpAndVersion) {
  const RunResult help = RunTraffikd({"--help"});
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_THAT(help.output, HasSubstr("--config"));
  const RunResult version = RunTraffikd({"--version"});
  EXPECT_EQ(version.exit_code, 0) << version.output;
  EXPECT_FALSE(version.output.empty());
}

// -------------------------------------------------------------- concurrency

class ConcurrencyTest : public TraffikdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer()); }
};

// Verifies 8 threads x 50 hits on one key with limit 100 allow exactly 100.
TEST_F(ConcurrencyTest, ExactlyLimitAllowedAcrossThreads) {
  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 50;
  std::atomic<int> allowed{0};
  std::atomic<int> refused{0};
  std::atomic<int> failed{0};
  std::mutex first_error_mu;
  std::string first_error;  // what the first failed call answered
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = NewStub(t + 1);  // one connection per thread
      const auto request = InlineRequest("shared-key", 100, kHourMs);
      for (int i = 0; i < kCallsPerThread; ++i) {
        const auto reply = Decide(*stub, request);
        if (!reply.status.ok()) {
          ++failed;
          std::lock_guard<std::mutex> lock(first_error_mu);
          if (first_error.empty()) {
            first_error = absl::StrCat("code ", reply.status.error_code(), ": ",
                                       reply.status.error_message());
          }
        } else if (reply.response.wait_ms() == 0) {
          ++allowed;
        } else {
          ++refused;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0) << "first failure: " << first_error;
  EXPECT_EQ(allowed.load(), 100);
  EXPECT_EQ(refused.load(), kThreads * kCallsPerThread - 100);
}

// Verifies concurrent batches on one key with limit 100 allow exactly 100 items.
TEST_F(ConcurrencyTest, ExactlyLimitAllowedAcrossBatches) {
  constexpr int kThreads = 8;
  constexpr int kBatchesPerThread = 5;
  constexpr int kBatchSize = 10;
  std::atomic<int> allowed{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = NewStub(t + 1);
      v1::ShouldThrottleBatchRequest batch;
      for (int i = 0; i < kBatchSize; ++i) {
        *batch.add_requests() = InlineRequest("shared-batch-key", 100, kHourMs);
      }
      for (int b = 0; b < kBatchesPerThread; ++b) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
        v1::ShouldThrottleBatchResponse response;
        if (!stub->ShouldThrottleBatch(&context, batch, &response).ok() ||
            response.responses_size() != kBatchSize) {
          ++failed;
          continue;
        }
        for (const auto& item : response.responses()) {
          if (item.wait_ms() == 0) ++allowed;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(allowed.load(), 100);
}

// ------------------------------------------- hostile input (issue 11, 3-5)

// A caller sending bytes the server must refuse, or that must not change
// another spec's bucket, or that must not flood stderr.
class HostileInputTest : public TraffikdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer(kConfigYaml)); }

  std::string Scrape() {
    absl::StatusOr<HttpResponse> response = HttpGet(process_->metrics_port(), "/metrics");
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->body : "";
  }
};

// Verifies a non-UTF-8 identifier (\xff\xfe) is decided like any other: the
// identifier is bytes on the wire.
TEST_F(HostileInputTest, NonUtf8IdentifierIsDecided) {
  const std::string id = "\xff\xfe";
  EXPECT_EQ(CountAllowed(InlineRequest(id, 2, kHourMs), 3), 2);
  EXPECT_EQ(CountAllowed(ConfiguredRequest(id, "search"), 4), 3);
  const auto other = Decide(InlineRequest("\xff\xfd", 2, kHourMs));
  ASSERT_TRUE(other.status.ok()) << other.status.error_message();
  EXPECT_EQ(other.response.remaining(), 1u);
}

// Verifies a non-UTF-8 tenant or uid is INVALID_ARGUMENT with a message (not
// UNIMPLEMENTED from a parse failure), 2000 such calls leave stderr small, and
// every one is counted in traffik_errors_total.
TEST_F(HostileInputTest, NonUtf8TenantAndUidAreInvalidArgument) {
  ExpectError(ConfiguredRequest("x", "search", "gold\xff"),
              grpc::StatusCode::INVALID_ARGUMENT,
              "tenant name 'gold\\xff' is not valid UTF-8");
  ExpectError(InlineRequest("x", 5, kHourMs, 0, "", "ad\xfehoc"),
              grpc::StatusCode::INVALID_ARGUMENT,
              "throttle uid 'ad\\xfehoc' is not valid UTF-8");
  const size_t stderr_before = process_->StderrText().size();
  int invalid = 2;
  for (int i = 0; i < 1000; ++i) {
    const auto t = Decide(ConfiguredRequest("x", "search", "\xfe\xff"));
    const auto u = Decide(InlineRequest("\xff", 5, kHourMs, 0, "", "\xc3"));
    invalid += t.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT;
    invalid += u.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT;
  }
  EXPECT_EQ(invalid, 2002);
  const std::string after = process_->StderrText();
  EXPECT_LT(after.size() - stderr_before, 2048u) << after.substr(stderr_before, 4096);
  EXPECT_EQ(SampleValue(Scrape(), "traffik_errors_total", {{"code", "INVALID_ARGUMENT"}}),
            2002.0);
}

// Verifies a 2 MB tenant is refused INVALID_ARGUMENT (over the 256-byte tenant
// cap; a default client would get RESOURCE_EXHAUSTED if it were echoed) fast,
// with a short message, and a newline in a tenant comes back escaped.
TEST_F(HostileInputTest, HugeAndNewlineTenantsAreQuoted) {
  const auto start = std::chrono::steady_clock::now();
  const auto huge = Decide(ConfiguredRequest("x", "search", std::string(2 << 20, 't')));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(huge.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << huge.status.error_message().substr(0, 300);
  EXPECT_LT(huge.status.error_message().size(), 300u);
  EXPECT_THAT(huge.status.error_message(), HasSubstr("(2097152 bytes)"));
  EXPECT_LT(elapsed, std::chrono::seconds(2));

  const auto newline = Decide(ConfiguredRequest("x", "search", "evil\nforged: line"));
  EXPECT_EQ(newline.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(newline.status.error_message(), HasSubstr("'evil\\nforged: line'"));
  EXPECT_EQ(newline.status.error_message().find('\n'), std::string::npos);

  // A well-formed unknown tenant stays NOT_FOUND, its name cut at 64 bytes.
  const auto unknown = Decide(ConfiguredRequest("x", "search", std::string(200, 'u')));
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(unknown.status.error_message(),
              HasSubstr(std::string(64, 'u') + "\xE2\x80\xA6' (200 bytes)"));
}

// Verifies a drained 10/min inline bucket stays drained after calls with spec
// (2^53, 1) on the same uid and identifier (single, batch, all-or-nothing),
// and those calls answer sane numbers.
TEST_F(HostileInputTest, OtherSpecCannotRefillInlineBucket) {
  const uint64_t kHuge = uint64_t{1} << 53;
  const auto small = InlineRequest("victim", 10, 60'000);
  const auto big = InlineRequest("victim", kHuge, 1);
  EXPECT_EQ(CountAllowed(small, 11), 10);
  // Time passes, so a shared bucket would refill to (2^53, 1)'s full.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto one = Decide(big);
  ASSERT_TRUE(one.status.ok()) << one.status.error_message();
  EXPECT_LE(one.response.reset_ms(), 1u);
  EXPECT_EQ(CountAllowed(small, 1), 0);
  for (bool all_or_nothing : {false, true}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    v1::ShouldThrottleBatchRequest batch;
    *batch.add_requests() = big;
    *batch.add_requests() = small;
    *batch.add_requests() = big;
    batch.set_all_or_nothing(all_or_nothing);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    v1::ShouldThrottleBatchResponse response;
    const grpc::Status status = stub_->ShouldThrottleBatch(&context, batch, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.responses_size(), 3);
    EXPECT_GT(response.responses(1).wait_ms(), 0u);
    EXPECT_LE(response.responses(1).wait_ms(), 6'000u);
    EXPECT_EQ(response.responses(1).remaining(), 0u);
    EXPECT_LE(response.responses(1).reset_ms(), 60'000u);
    EXPECT_LE(response.responses(0).reset_ms(), 1u);
    EXPECT_LE(response.responses(2).reset_ms(), 1u);
  }
  EXPECT_EQ(CountAllowed(small, 1), 0);
}

// ------------------------------------------------------- memory shares

// Two memory tenants with equal shares (2 buckets each) of memory.max_buckets
// 4; tenant a would fail open on an outage.
constexpr char kSharesYaml[] = R"yaml(
throttles:
  - uid: api
    limit: 1
    period: 1h
tenants:
  - name: a
    on_backend_error: allow
  - name: b
default_tenant: a
memory:
  max_buckets: 4
)yaml";

class MemoryShareTest : public MetricsTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer(kSharesYaml)); }
};

// Verifies, over gRPC against traffikd, that with the cap reached a flood of
// new buckets from tenant a is refused RESOURCE_EXHAUSTED at a's own share
// (exactly 2, naming the tenant, never the identifier, not failed open) and
// never refills tenant b's drained bucket, whose share stays free.
TEST_F(MemoryShareTest, FloodNeverRefillsAnotherTenantsBucket) {
  EXPECT_EQ(CountAllowed(ConfiguredRequest("victim", "api", "b"), 2), 1);
  int stored = 0;
  int refused = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = absl::StrCat("flood-identifier-", i);
    const Reply<v1::ShouldThrottleResponse> reply =
        Decide(ConfiguredRequest(id, "api", "a"));
    if (reply.status.ok()) {
      EXPECT_EQ(reply.response.wait_ms(), 0u);
      ++stored;
      continue;
    }
    ++refused;
    ASSERT_EQ(reply.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << reply.status.error_message();
    EXPECT_THAT(reply.status.error_message(), HasSubstr("tenant 'a'"));
    EXPECT_THAT(reply.status.error_message(), Not(HasSubstr("flood-identifier")));
  }
  EXPECT_EQ(stored, 2);
  EXPECT_EQ(refused, 998);
  const Reply<v1::ShouldThrottleResponse> victim =
      Decide(ConfiguredRequest("victim", "api", "b"));
  ASSERT_TRUE(victim.status.ok()) << victim.status.error_message();
  EXPECT_GT(victim.response.wait_ms(), 3'000'000u) << "b's drained bucket was refilled";
  EXPECT_EQ(CountAllowed(ConfiguredRequest("second", "api", "b"), 1), 1);

  const std::string text = Scrape();
  EXPECT_EQ(SampleValue(text, "traffik_bucket_rejections_total",
                        {{"backend", "memory"}, {"tenant", "a"}}),
            998.0)
      << text;
  EXPECT_EQ(SampleValue(text, "traffik_bucket_rejections_total",
                        {{"backend", "memory"}, {"tenant", "b"}}),
            0.0)
      << text;
  EXPECT_EQ(SampleValue(text, "traffik_buckets", {{"backend", "memory"}}), 4.0) << text;
  EXPECT_EQ(SampleValue(text, "traffik_errors_total", {{"code", "RESOURCE_EXHAUSTED"}}),
            998.0)
      << text;
}

// ------------------------------------------------------- error reasons

// Verifies that an all_or_nothing batch spanning two backends carries, besides
// INVALID_ARGUMENT, a google.rpc.ErrorInfo {domain "traffik.v1", reason
// ALL_OR_NOTHING_SPANS_BACKENDS} in the status details (clients decide on it,
// not on the message), and that other errors carry no reason.
TEST_F(TraffikdTest, AllOrNothingAcrossBackendsCarriesErrorInfo) {
  ASSERT_NO_FATAL_FAILURE(StartServer(R"yaml(
tenants:
  - name: default
    backend: memory
  - name: remote
    backend: redis://127.0.0.1:1/0
default_tenant: default
)yaml"));
  v1::ShouldThrottleRequest a = InlineRequest("reason:1", 5, 60000);
  v1::ShouldThrottleRequest b = InlineRequest("reason:1", 5, 60000);
  b.set_tenant("remote");
  v1::ShouldThrottleBatchRequest batch;
  *batch.add_requests() = a;
  *batch.add_requests() = b;
  batch.set_all_or_nothing(true);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  v1::ShouldThrottleBatchResponse response;
  const grpc::Status status = stub_->ShouldThrottleBatch(&context, batch, &response);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(status.error_details()));
  EXPECT_EQ(details.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(details.message(), status.error_message());
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(details.details(0).UnpackTo(&info));
  EXPECT_EQ(info.domain(), "traffik.v1");
  EXPECT_EQ(info.reason(), v1::ErrorReason_Name(v1::ALL_OR_NOTHING_SPANS_BACKENDS));

  v1::ShouldThrottleRequest unknown = InlineRequest("reason:1", 5, 60000);
  unknown.set_tenant("nobody");
  const Reply<v1::ShouldThrottleResponse> reply = Decide(unknown);
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(reply.status.error_details().empty());
}

}  // namespace
}  // namespace traffik::e2e
