// Tests of the Traffik client library (traffik::client) against the real
// traffikd, started once for the suite on a loopback port; plus a listening
// socket that never answers (deadlines) and a closed port (traffikd down).
//
// Each test uses its own identifiers, so tests sharing the server do not
// interfere. Throttles use 1h periods unless a test needs refill.

#include "traffik/client.h"

#include <atomic>
#include <chrono>
#include <concepts>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "e2e/shared_traffikd.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::StartsWith;
using Source = ThrottleResult::Source;

constexpr milliseconds kHour{3'600'000};
// Generous deadline for calls to the healthy local server (2 shared cores).
constexpr milliseconds kServerDeadline{5000};

// A request with an inline spec `limit` per `period`.
ThrottleRequest Inline(const std::string& identifier, uint64_t limit,
                       milliseconds period = kHour, uint32_t cost = 1,
                       const std::string& uid = "client-test") {
  ThrottleRequest request;
  request.identifier = identifier;
  request.throttle_uid = uid;
  request.cost = cost;
  request.spec = ThrottleSpec{limit, period};
  return request;
}

// A loopback address where nothing listens (a port taken and released).
std::string ClosedAddress() {
  absl::StatusOr<e2e::HeldPort> held = e2e::HeldPort::Listen();
  EXPECT_TRUE(held.ok()) << held.status();
  const int port = held.ok() ? held->port() : 1;
  return absl::StrCat("127.0.0.1:", port);  // `held` closes here
}

// Collects the client's failure log lines.
struct LogLines {
  Mutex mu;
  std::vector<std::string> lines ABSL_GUARDED_BY(mu);
  std::function<void(const std::string&)> Sink() {
    return [this](const std::string& line) {
      MutexLock lock(&mu);
      lines.push_back(line);
    };
  }
  size_t size() {
    MutexLock lock(&mu);
    return lines.size();
  }
};

class ClientTest : public e2e::SharedTraffikdTest {
 protected:
  // Options for the suite's server.
  static ClientOptions ServerOptions() {
    ClientOptions options;
    options.target = server().grpc_address();
    options.deadline = kServerDeadline;
    return options;
  }

  static std::shared_ptr<Client> MakeClient(ClientOptions options) {
    absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *client : nullptr;
  }

  // An identifier unique to the running test.
  static std::string Id(const std::string& suffix = "") {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return absl::StrCat(info->name(), "/", suffix);
  }
};

// Verifies Create rejects unusable options with kInvalidArgument and accepts the
// defaults.
TEST_F(ClientTest, CreateValidatesOptions) {
  ClientOptions empty_target;
  empty_target.target = "";
  EXPECT_EQ(Client::Create(empty_target).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions zero_deadline;
  zero_deadline.deadline = milliseconds(0);
  EXPECT_EQ(Client::Create(zero_deadline).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions negative_deny;
  negative_deny.deny_wait = milliseconds(-1);
  EXPECT_EQ(Client::Create(negative_deny).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions tiny_identifiers;
  tiny_identifiers.max_identifier_bytes = kDigestIdentifierBytes - 1;
  EXPECT_EQ(Client::Create(tiny_identifiers).status().code(),
            absl::StatusCode::kInvalidArgument);
  tiny_identifiers.max_identifier_bytes = kDigestIdentifierBytes;
  EXPECT_TRUE(Client::Create(tiny_identifiers).ok());
  EXPECT_TRUE(Client::Create(ClientOptions()).ok());
}

// Verifies Check returns the server's values: allowed hits, then a throttled one with its
// wait.
TEST_F(ClientTest, CheckReturnsServerValues) {
  auto client = MakeClient(ServerOptions());
  for (uint64_t i = 0; i < 3; ++i) {
    absl::StatusOr<ThrottleResult> result = client->Check(Inline(Id(), 3));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->allowed);
    EXPECT_EQ(result->wait, milliseconds(0));
    EXPECT_EQ(result->limit, 3u);
    EXPECT_EQ(result->remaining, 2 - i);
    EXPECT_GT(result->reset, milliseconds(0));
    EXPECT_EQ(result->source, Source::kServer);
  }
  absl::StatusOr<ThrottleResult> throttled = client->Check(Inline(Id(), 3));
  ASSERT_TRUE(throttled.ok()) << throttled.status();
  EXPECT_FALSE(throttled->allowed);
  EXPECT_GT(throttled->wait, milliseconds(1'000'000));  // ~20 min for 1 token of 3/h
  EXPECT_LE(throttled->wait, kHour / 3);
  EXPECT_EQ(throttled->limit, 3u);
  EXPECT_EQ(throttled->remaining, 0u);
  EXPECT_EQ(throttled->source, Source::kServer);
  EXPECT_EQ(client->stats().rpcs, 4u);
  EXPECT_EQ(client->stats().failures, 0u);
}

// Verifies the cost is sent: a hit of cost 2 takes two tokens.
TEST_F(ClientTest, CostIsSent) {
  auto client = MakeClient(ServerOptions());
  absl::StatusOr<ThrottleResult> result = client->Check(Inline(Id(), 5, kHour, 2));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->remaining, 3u);
}

// Verifies a server error is returned under kRaise with its specific code and message.
TEST_F(ClientTest, ServerErrorRaisedWithCode) {
  auto client = MakeClient(ServerOptions());
  ThrottleRequest unknown;
  unknown.identifier = Id();
  unknown.throttle_uid = "not-configured";  // no spec
  absl::StatusOr<ThrottleResult> result = client->Check(unknown);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("not-configured"));
  EXPECT_EQ(client->Check(Inline(Id(), 2, kHour, 3)).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(client->stats().failures, 2u);
}

// Verifies the failure policy applies to outages only: errors saying the request
// itself was wrong are returned as errors under kAllow and kDeny too (single and batch).
TEST_F(ClientTest, RequestErrorsAreErrorsUnderEveryPolicy) {
  ThrottleRequest unknown;  // NOT_FOUND
  unknown.identifier = Id();
  unknown.throttle_uid = "not-configured";
  const ThrottleRequest empty_identifier = Inline("", 5);  // INVALID_ARGUMENT
  ThrottleRequest no_uid = Inline(Id("no-uid"), 5);
  no_uid.throttle_uid = "";                                            // INVALID_ARGUMENT
  const ThrottleRequest too_costly = Inline(Id("cost"), 2, kHour, 3);  // OUT_OF_RANGE
  for (const FailurePolicy policy : {FailurePolicy::kAllow, FailurePolicy::kDeny}) {
    ClientOptions options = ServerOptions();
    options.failure_policy = policy;
    auto client = MakeClient(options);
    EXPECT_EQ(client->Check(unknown).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(client->Check(empty_identifier).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(client->Check(no_uid).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(client->Check(too_costly).status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_EQ(client->CheckFuture(empty_identifier).get().status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(client->CheckBatch({Inline(Id("ok"), 5), empty_identifier}).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(
        client
            ->CheckBatch({Inline(Id("ok"), 5), empty_identifier},
                         BatchOptions{.policy = std::nullopt, .all_or_nothing = true})
            .status()
            .code(),
        absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(client->stats().failures, 7u);
  }
}

// Verifies an identifier over max_identifier_bytes (5000 bytes, e.g. a huge
// X-Api-Key) is throttled like any other under kAllow instead of failing open: it
// is sent as its digest, one bucket per identifier.
TEST_F(ClientTest, LongIdentifierThrottledNormallyUnderAllow) {
  ClientOptions options = ServerOptions();
  options.failure_policy = FailurePolicy::kAllow;
  auto client = MakeClient(options);
  const std::string long_id = Id() + std::string(5000, 'k');
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ThrottleResult> allowed = client->Check(Inline(long_id, 2));
    ASSERT_TRUE(allowed.ok()) << allowed.status();
    EXPECT_TRUE(allowed->allowed);
    EXPECT_EQ(allowed->source, Source::kServer);
    EXPECT_EQ(allowed->remaining, static_cast<uint64_t>(1 - i));
  }
  absl::StatusOr<ThrottleResult> refused = client->Check(Inline(long_id, 2));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->allowed);
  EXPECT_EQ(refused->source, Source::kServer);
  // Another long identifier (differing in its last byte only) has its own bucket,
  // also in a batch; the identifier at the limit is sent as it is.
  const std::string other = long_id.substr(0, long_id.size() - 1) + "x";
  const std::string at_limit =
      Id("at-limit") + std::string(4096 - Id("at-limit").size(), 'a');
  absl::StatusOr<std::vector<ThrottleResult>> batch =
      client->CheckBatch({Inline(other, 2), Inline(at_limit, 2)});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_TRUE((*batch)[0].allowed);
  EXPECT_EQ((*batch)[0].source, Source::kServer);
  EXPECT_EQ((*batch)[0].remaining, 1u);
  EXPECT_EQ((*batch)[1].source, Source::kServer);
  // The digest names the same bucket as the long identifier.
  absl::StatusOr<ThrottleResult> by_digest =
      client->Check(Inline(WireIdentifier(other), 2));
  ASSERT_TRUE(by_digest.ok()) << by_digest.status();
  EXPECT_EQ(by_digest->remaining, 0u);
  EXPECT_EQ(client->stats().failures, 0u);
}

// Verifies a binary ("\xff") identifier never fails open under kAllow: traffikd
// either throttles it like any other (identifiers are bytes) or rejects it, and a
// rejection is returned as an error. (Tolerant of both until the server's
// `identifier` field is `bytes`.)
TEST_F(ClientTest, BinaryIdentifierNeverFailsOpen) {
  ClientOptions options = ServerOptions();
  options.failure_policy = FailurePolicy::kAllow;
  auto client = MakeClient(options);
  const std::string binary = "\xff\xfe" + Id();
  int allowed = 0;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ThrottleResult> result = client->Check(Inline(binary, 2));
    if (!result.ok()) {
      EXPECT_FALSE(IsOutage(result.status())) << result.status();
      continue;
    }
    EXPECT_EQ(result->source, Source::kServer);
    if (result->allowed) ++allowed;
  }
  EXPECT_LE(allowed, 2);
}

// Verifies identifiers up to the limit (any bytes) are sent as they are and longer
// ones as "sha256:" + the hex SHA-256 (FIPS 180-2 known answers).
TEST(WireIdentifierTest, DigestBeyondLimit) {
  EXPECT_EQ(WireIdentifier("abc", 3), "abc");
  EXPECT_EQ(WireIdentifier("abc", 2),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(WireIdentifier(std::string(1'000'000, 'a')),
            "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(
      WireIdentifier("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 10),
      "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string binary("\xff\x00\x80", 3);
  EXPECT_EQ(WireIdentifier(binary), binary);
  const std::string at_limit(kDefaultMaxIdentifierBytes, 'x');
  EXPECT_EQ(WireIdentifier(at_limit), at_limit);
  const std::string over = at_limit + "x";
  EXPECT_EQ(WireIdentifier(over).size(), kDigestIdentifierBytes);
  EXPECT_NE(WireIdentifier(over), WireIdentifier(at_limit + "y"));
  EXPECT_EQ(WireIdentifier(over), WireIdentifier(over));
}

// Verifies only kUnavailable, kDeadlineExceeded and kResourceExhausted count as
// outages (the failure policy's domain).
TEST(IsOutageTest, OnlyOutageCodes) {
  EXPECT_TRUE(IsOutage(absl::UnavailableError("")));
  EXPECT_TRUE(IsOutage(absl::DeadlineExceededError("")));
  EXPECT_TRUE(IsOutage(absl::ResourceExhaustedError("")));
  for (const absl::Status& status :
       {absl::InvalidArgumentError(""), absl::NotFoundError(""),
        absl::PermissionDeniedError(""), absl::OutOfRangeError(""),
        absl::FailedPreconditionError(""), absl::UnauthenticatedError(""),
        absl::InternalError(""), absl::UnimplementedError(""), absl::CancelledError(""),
        absl::DataLossError(""), absl::UnknownError(""), absl::OkStatus()}) {
    EXPECT_FALSE(IsOutage(status)) << status;
  }
}

// Verifies CheckAsync runs its callback with the answer and CheckFuture resolves.
TEST_F(ClientTest, AsyncAndFuture) {
  auto client = MakeClient(ServerOptions());
  std::promise<absl::StatusOr<ThrottleResult>> promise;
  client->CheckAsync(Inline(Id(), 2), [&promise](absl::StatusOr<ThrottleResult> result) {
    promise.set_value(std::move(result));
  });
  auto first = promise.get_future();
  ASSERT_EQ(first.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  absl::StatusOr<ThrottleResult> a = first.get();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->allowed);
  EXPECT_EQ(a->remaining, 1u);

  auto second = client->CheckFuture(Inline(Id(), 2));
  auto third = client->CheckFuture(Inline(Id(), 2));
  ASSERT_EQ(second.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ASSERT_EQ(third.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  absl::StatusOr<ThrottleResult> b = second.get();
  absl::StatusOr<ThrottleResult> c = third.get();
  ASSERT_TRUE(b.ok() && c.ok());
  EXPECT_EQ(b->allowed + c->allowed, 1);  // one token left for two hits
  EXPECT_EQ(client->stats().rpcs, 3u);
}

// Verifies a batch is answered in request order, as if the hits were made one by one.
TEST_F(ClientTest, BatchInRequestOrder) {
  auto client = MakeClient(ServerOptions());
  const std::vector<ThrottleRequest> batch = {
      Inline(Id("a"), 1), Inline(Id("a"), 1), Inline(Id("b"), 2),
      Inline(Id("b"), 2), Inline(Id("b"), 2),
  };
  absl::StatusOr<std::vector<ThrottleResult>> results = client->CheckBatch(batch);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_THAT(*results, SizeIs(5));
  const bool expected_allowed[] = {true, false, true, true, false};
  const uint64_t expected_limit[] = {1, 1, 2, 2, 2};
  const uint64_t expected_remaining[] = {0, 0, 1, 0, 0};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ((*results)[i].allowed, expected_allowed[i]) << i;
    EXPECT_EQ((*results)[i].limit, expected_limit[i]) << i;
    EXPECT_EQ((*results)[i].remaining, expected_remaining[i]) << i;
    EXPECT_EQ((*results)[i].source, Source::kServer) << i;
    EXPECT_EQ((*results)[i].wait > milliseconds(0), !expected_allowed[i]) << i;
  }
  EXPECT_EQ(client->stats().rpcs, 1u);
}

// Verifies CheckBatchAsync delivers the batch's results to its callback.
TEST_F(ClientTest, BatchAsync) {
  auto client = MakeClient(ServerOptions());
  std::promise<absl::StatusOr<std::vector<ThrottleResult>>> promise;
  client->CheckBatchAsync(
      {Inline(Id("x"), 1), Inline(Id("y"), 1)},
      [&promise](absl::StatusOr<std::vector<ThrottleResult>> results) {
        promise.set_value(std::move(results));
      });
  auto future = promise.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  absl::StatusOr<std::vector<ThrottleResult>> results = future.get();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_THAT(*results, SizeIs(2));
  EXPECT_TRUE((*results)[0].allowed);
  EXPECT_TRUE((*results)[1].allowed);
}

// Verifies a batch with an invalid item is rejected whole (kInvalidArgument) and takes
// nothing.
TEST_F(ClientTest, BatchWithInvalidItemRejectedWhole) {
  auto client = MakeClient(ServerOptions());
  ThrottleRequest invalid = Inline("", 1);  // empty identifier
  absl::StatusOr<std::vector<ThrottleResult>> results =
      client->CheckBatch({Inline(Id(), 1), invalid});
  EXPECT_EQ(results.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(results.status().message()), StartsWith("requests[1]"));
  absl::StatusOr<ThrottleResult> after = client->Check(Inline(Id(), 1));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->allowed);  // the valid item took nothing
}

// Verifies an empty batch is answered locally with no results and no RPC.
TEST_F(ClientTest, EmptyBatch) {
  auto client = MakeClient(ServerOptions());
  absl::StatusOr<std::vector<ThrottleResult>> results = client->CheckBatch({});
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_TRUE(results->empty());
  EXPECT_EQ(client->stats().rpcs, 0u);
}

// Verifies the deadline ends calls to a server that never answers, under kRaise.
TEST_F(ClientTest, DeadlineHonouredAgainstSilentServer) {
  absl::StatusOr<e2e::HeldPort> silent =
      e2e::HeldPort::Listen();  // never accepts nor replies
  ASSERT_TRUE(silent.ok()) << silent.status();
  ClientOptions options;
  options.target = absl::StrCat("127.0.0.1:", silent->port());
  options.deadline = milliseconds(300);
  options.failure_policy = FailurePolicy::kRaise;
  auto client = MakeClient(options);
  const auto margin = milliseconds(700);

  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(client->Check(Inline(Id(), 1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, options.deadline + margin);

  start = std::chrono::steady_clock::now();
  EXPECT_EQ(client->CheckBatch({Inline(Id(), 1)}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, options.deadline + margin);

  start = std::chrono::steady_clock::now();
  auto future = client->CheckFuture(Inline(Id(), 1));
  EXPECT_LT(std::chrono::steady_clock::now() - start,
            milliseconds(100));  // async: no wait
  ASSERT_EQ(future.wait_for(options.deadline + margin), std::future_status::ready);
  EXPECT_EQ(future.get().status().code(), absl::StatusCode::kDeadlineExceeded);

  start = std::chrono::steady_clock::now();
  EXPECT_EQ(client->Healthy().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, options.deadline + margin);

  // Under kDeny the same timeout is a refusal, just as quick.
  start = std::chrono::steady_clock::now();
  absl::StatusOr<ThrottleResult> denied =
      client->Check(Inline(Id(), 1), FailurePolicy::kDeny);
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_FALSE(denied->allowed);
  EXPECT_EQ(denied->source, Source::kFailurePolicy);
  EXPECT_LT(std::chrono::steady_clock::now() - start, options.deadline + margin);
  EXPECT_EQ(client->stats().failures, 4u);  // health checks are not counted
}

// The three failure policies with traffikd down; each call must be quick.
class FailurePolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.target = ClosedAddress();
    options_.deadline = milliseconds(2000);  // a refused connection fails long before
    options_.deny_wait = milliseconds(1234);
    options_.log = log_.Sink();
  }
  // Runs `call` and checks it took less than 1 s.
  template <typename F>
  auto Quick(F call) {
    const auto start = std::chrono::steady_clock::now();
    auto result = call();
    EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
    return result;
  }

  ClientOptions options_;
  LogLines log_;
};

// Verifies kRaise returns kUnavailable quickly when traffikd is down.
TEST_F(FailurePolicyTest, RaiseReturnsUnavailable) {
  options_.failure_policy = FailurePolicy::kRaise;
  auto client = *Client::Create(options_);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ThrottleResult> result =
        Quick([&] { return client->Check(Inline("u", 1)); });
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(Quick([&] { return client->CheckBatch({Inline("u", 1)}); }).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->stats().failures, 4u);
  EXPECT_EQ(log_.size(), 1u);  // one line for the burst
}

// Verifies kAllow fails open quickly when traffikd is down, for single and batch checks.
TEST_F(FailurePolicyTest, AllowFailsOpen) {
  options_.failure_policy = FailurePolicy::kAllow;
  auto client = *Client::Create(options_);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ThrottleResult> result =
        Quick([&] { return client->Check(Inline("u", 1)); });
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->allowed);
    EXPECT_EQ(result->wait, milliseconds(0));
    EXPECT_EQ(result->source, Source::kFailurePolicy);
  }
  absl::StatusOr<std::vector<ThrottleResult>> batch = Quick([&] {
    return client->CheckBatch({Inline("u", 1), Inline("v", 1)});
  });
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_THAT(*batch, SizeIs(2));
  EXPECT_TRUE((*batch)[0].allowed && (*batch)[1].allowed);
  EXPECT_EQ((*batch)[1].source, Source::kFailurePolicy);
  EXPECT_EQ(client->stats().failures, 4u);
  EXPECT_EQ(log_.size(), 1u);
}

// Verifies kDeny fails closed quickly with deny_wait when traffikd is down.
TEST_F(FailurePolicyTest, DenyFailsClosed) {
  options_.failure_policy = FailurePolicy::kDeny;
  auto client = *Client::Create(options_);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ThrottleResult> result =
        Quick([&] { return client->Check(Inline("u", 1)); });
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_FALSE(result->allowed);
    EXPECT_EQ(result->wait, milliseconds(1234));
    EXPECT_EQ(result->source, Source::kFailurePolicy);
  }
  absl::StatusOr<std::vector<ThrottleResult>> batch =
      Quick([&] { return client->CheckBatch({Inline("u", 1)}); });
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_FALSE((*batch)[0].allowed);
  EXPECT_EQ((*batch)[0].wait, milliseconds(1234));
  EXPECT_EQ(client->stats().failures, 4u);
  EXPECT_EQ(log_.size(), 1u);
}

// Verifies a per-call policy overrides the default, also for async calls.
TEST_F(FailurePolicyTest, PerCallPolicyOverridesDefault) {
  options_.failure_policy = FailurePolicy::kRaise;
  auto client = *Client::Create(options_);
  absl::StatusOr<ThrottleResult> allowed =
      Quick([&] { return client->Check(Inline("u", 1), FailurePolicy::kAllow); });
  ASSERT_TRUE(allowed.ok());
  EXPECT_TRUE(allowed->allowed);
  auto future = client->CheckFuture(Inline("u", 1), FailurePolicy::kDeny);
  ASSERT_EQ(future.wait_for(milliseconds(1000)), std::future_status::ready);
  absl::StatusOr<ThrottleResult> denied = future.get();
  ASSERT_TRUE(denied.ok());
  EXPECT_FALSE(denied->allowed);
  EXPECT_EQ(client->Check(Inline("u", 1)).status().code(),
            absl::StatusCode::kUnavailable);
}

// Verifies Healthy returns kUnavailable quickly when traffikd is down.
TEST_F(FailurePolicyTest, HealthyUnavailable) {
  auto client = *Client::Create(options_);
  EXPECT_EQ(Quick([&] { return client->Healthy(); }).status().code(),
            absl::StatusCode::kUnavailable);
}

// Verifies failures are logged once per burst: a success ends a burst, the interval caps
// lines.
TEST_F(ClientTest, FailuresLoggedOncePerBurst) {
  ThrottleRequest unknown;  // NOT_FOUND from the server: a failure
  unknown.identifier = Id();
  unknown.throttle_uid = "not-configured";
  for (const milliseconds interval : {milliseconds(0), kHour}) {
    LogLines log;
    ClientOptions options = ServerOptions();
    options.failure_policy = FailurePolicy::kAllow;
    options.failure_log_interval = interval;
    options.log = log.Sink();
    auto client = MakeClient(options);
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(client->Check(unknown).status().code(), absl::StatusCode::kNotFound);
    }
    EXPECT_EQ(log.size(), 1u);
    ASSERT_TRUE(
        client->Check(Inline(Id(absl::StrCat(interval.count())), 100)).ok());  // success
    for (int i = 0; i < 2; ++i) {
      ASSERT_EQ(client->Check(unknown).status().code(), absl::StatusCode::kNotFound);
    }
    // A new burst logs again, unless the last line is more recent than the interval.
    EXPECT_EQ(log.size(), interval == kHour ? 1u : 2u);
    EXPECT_EQ(client->stats().failures, 5u);
    MutexLock lock(&log.mu);
    EXPECT_THAT(log.lines[0], HasSubstr("NOT_FOUND"));
    EXPECT_THAT(log.lines[0], HasSubstr("returned as errors"));
  }
}

// Verifies Healthy asks the health service: SERVING for "" and the service, kNotFound
// otherwise.
TEST_F(ClientTest, Healthy) {
  auto client = MakeClient(ServerOptions());
  absl::StatusOr<bool> overall = client->Healthy();
  ASSERT_TRUE(overall.ok()) << overall.status();
  EXPECT_TRUE(*overall);
  absl::StatusOr<bool> service = client->Healthy("traffik.v1.ThrottleService");
  ASSERT_TRUE(service.ok()) << service.status();
  EXPECT_TRUE(*service);
  EXPECT_EQ(client->Healthy("no.such.Service").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client->stats().rpcs, 0u);  // only decisions are counted
}

// Verifies the short-circuit: after "wait 1h", 100 more checks make no RPC and are
// refused locally.
TEST_F(ClientTest, ShortCircuitSavesRoundTrips) {
  auto client = MakeClient(ServerOptions());
  ASSERT_TRUE(client->Check(Inline(Id(), 1))->allowed);
  absl::StatusOr<ThrottleResult> throttled = client->Check(Inline(Id(), 1));
  ASSERT_TRUE(throttled.ok()) << throttled.status();
  ASSERT_FALSE(throttled->allowed);
  EXPECT_EQ(throttled->source, Source::kServer);
  EXPECT_EQ(client->stats().rpcs, 2u);
  EXPECT_EQ(client->stats().short_circuit_keys, 1u);

  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<ThrottleResult> local = client->Check(Inline(Id(), 1));
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_FALSE(local->allowed);
    EXPECT_EQ(local->source, Source::kShortCircuit);
    EXPECT_GT(local->wait, kHour - milliseconds(60'000));  // the remaining wait
    EXPECT_LE(local->wait, throttled->wait);
  }
  EXPECT_EQ(client->stats().rpcs, 2u);
  EXPECT_EQ(client->stats().short_circuited, 100u);

  // Async: answered inline, before CheckAsync returns.
  bool answered = false;
  client->CheckAsync(Inline(Id(), 1), [&answered](absl::StatusOr<ThrottleResult> result) {
    answered = result.ok() && result->source == Source::kShortCircuit;
  });
  EXPECT_TRUE(answered);

  // Other keys (identifier, uid, tenant) still ask the server.
  ASSERT_TRUE(client->Check(Inline(Id("other"), 1))->allowed);
  ASSERT_TRUE(client->Check(Inline(Id(), 1, kHour, 1, "other-uid"))->allowed);
  EXPECT_EQ(client->stats().rpcs, 4u);
}

// Verifies the short-circuit ends when the wait has passed: an RPC is made again and
// allowed.
TEST_F(ClientTest, ShortCircuitExpires) {
  auto client = MakeClient(ServerOptions());
  const milliseconds period(500);
  ASSERT_TRUE(client->Check(Inline(Id(), 1, period))->allowed);
  absl::StatusOr<ThrottleResult> throttled = client->Check(Inline(Id(), 1, period));
  ASSERT_TRUE(throttled.ok()) << throttled.status();
  ASSERT_FALSE(throttled->allowed);
  EXPECT_LE(throttled->wait, period);
  EXPECT_EQ(client->Check(Inline(Id(), 1, period))->source, Source::kShortCircuit);
  EXPECT_EQ(client->stats().rpcs, 2u);

  std::this_thread::sleep_for(throttled->wait + milliseconds(50));
  absl::StatusOr<ThrottleResult> again = client->Check(Inline(Id(), 1, period));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->source, Source::kServer);
  EXPECT_TRUE(again->allowed);
  EXPECT_EQ(client->stats().rpcs, 3u);
}

// Verifies a cheaper hit than the refused one still asks the server.
TEST_F(ClientTest, ShortCircuitRespectsCost) {
  auto client = MakeClient(ServerOptions());
  ASSERT_TRUE(client->Check(Inline(Id(), 4, kHour, 3))->allowed);  // 1 token left
  absl::StatusOr<ThrottleResult> big = client->Check(Inline(Id(), 4, kHour, 2));
  ASSERT_FALSE(big->allowed);
  EXPECT_EQ(client->Check(Inline(Id(), 4, kHour, 2))->source, Source::kShortCircuit);
  EXPECT_EQ(client->Check(Inline(Id(), 4, kHour, 3))->source, Source::kShortCircuit);
  absl::StatusOr<ThrottleResult> small = client->Check(Inline(Id(), 4, kHour, 1));
  EXPECT_EQ(small->source, Source::kServer);
  EXPECT_TRUE(small->allowed);
  EXPECT_EQ(client->stats().rpcs, 3u);
}

// Verifies a batch with a short-circuited item makes no RPC and takes no tokens from the
// others.
TEST_F(ClientTest, ShortCircuitBatchIsAllOrNothing) {
  auto client = MakeClient(ServerOptions());
  ASSERT_TRUE(client->Check(Inline(Id("blocked"), 1))->allowed);
  ASSERT_FALSE(client->Check(Inline(Id("blocked"), 1))->allowed);
  const uint64_t rpcs = client->stats().rpcs;

  absl::StatusOr<std::vector<ThrottleResult>> results =
      client->CheckBatch({Inline(Id("free"), 5), Inline(Id("blocked"), 1)});
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_THAT(*results, SizeIs(2));
  EXPECT_FALSE((*results)[0].allowed);
  EXPECT_EQ((*results)[0].wait, milliseconds(0));  // not asked
  EXPECT_EQ((*results)[0].source, Source::kShortCircuit);
  EXPECT_FALSE((*results)[1].allowed);
  EXPECT_GT((*results)[1].wait, milliseconds(0));
  EXPECT_EQ((*results)[1].source, Source::kShortCircuit);
  EXPECT_EQ(client->stats().rpcs, rpcs);
  EXPECT_EQ(client->stats().short_circuited, 2u);

  absl::StatusOr<ThrottleResult> free = client->Check(Inline(Id("free"), 5));
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_EQ(free->remaining, 4u);  // the batch took nothing

  // A refusal inside a batch answered by the server is remembered too.
  ASSERT_TRUE(client->CheckBatch({Inline(Id("c"), 1), Inline(Id("c"), 1)}).ok());
  EXPECT_EQ(client->Check(Inline(Id("c"), 1))->source, Source::kShortCircuit);
}

// Verifies an all-or-nothing batch (burst + sustained): when the burst
// throttle refuses, the sustained one keeps its tokens and applied is false.
TEST_F(ClientTest, AllOrNothingBatch) {
  ClientOptions options = ServerOptions();
  options.short_circuit_max_keys = 0;  // every batch goes to the server
  auto client = MakeClient(options);
  const std::vector<ThrottleRequest> both = {
      Inline(Id(), 1, kHour, 1, "client-burst"),
      Inline(Id(), 10, kHour, 1, "client-sustained")};
  BatchOptions aon;
  aon.all_or_nothing = true;
  absl::StatusOr<BatchResult> first = client->CheckBatch(both, aon);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->applied);
  EXPECT_TRUE(first->all_or_nothing);
  ASSERT_THAT(first->results, SizeIs(2));
  EXPECT_EQ(first->results[1].remaining, 9u);

  absl::StatusOr<BatchResult> second = client->CheckBatch(both, aon);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->applied);
  EXPECT_TRUE(second->all_or_nothing);
  EXPECT_FALSE(second->results[0].allowed);
  EXPECT_GT(second->results[0].wait, milliseconds(0));
  EXPECT_TRUE(second->results[1].allowed);  // would pass alone; took nothing
  EXPECT_EQ(second->results[1].remaining, 9u);

  // The async form, and the plain (independent) batch for comparison.
  std::promise<absl::StatusOr<BatchResult>> promise;
  client->CheckBatchAsync(
      both, [&](absl::StatusOr<BatchResult> r) { promise.set_value(std::move(r)); }, aon);
  absl::StatusOr<BatchResult> third = promise.get_future().get();
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_FALSE(third->applied);
  EXPECT_EQ(third->results[1].remaining, 9u);
  absl::StatusOr<BatchResult> plain = client->CheckBatch(both, BatchOptions{});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(plain->applied);
  EXPECT_FALSE(plain->all_or_nothing);
  EXPECT_EQ(plain->results[1].remaining, 8u);  // taken despite the refusal
}

// `client.CheckBatch(requests, {})` and `{.all_or_nothing = true}` name one
// overload (two overload families made `{}` ambiguous before BatchOptions
// became the one form).
template <typename C>
concept BatchWithBraces = requires(C& c, const std::vector<ThrottleRequest>& r) {
  { c.CheckBatch(r, {}) } -> std::same_as<absl::StatusOr<BatchResult>>;
  { c.CheckBatch(r) } -> std::same_as<absl::StatusOr<BatchResult>>;
  {
    c.CheckBatch(r, {.all_or_nothing = true})
    } -> std::same_as<absl::StatusOr<BatchResult>>;
  c.CheckBatchAsync(r, [](absl::StatusOr<BatchResult>) {}, {});
};
static_assert(BatchWithBraces<Client>);

// Verifies the one CheckBatch form (BatchResult, `{}` options) and that the
// deprecated policy forms and vector-typed results still compile and answer.
TEST_F(ClientTest, OneCheckBatchForm) {
  auto client = MakeClient(ServerOptions());
  const std::vector<ThrottleRequest> two = {Inline(Id("a"), 2), Inline(Id("b"), 2)};
  absl::StatusOr<BatchResult> braces = client->CheckBatch(two, {});
  ASSERT_TRUE(braces.ok()) << braces.status();
  ASSERT_EQ(braces->size(), 2u);
  EXPECT_TRUE(braces->applied);
  EXPECT_EQ((*braces)[0].remaining, 1u);
  size_t seen = 0;
  for (const ThrottleResult& result : *braces) seen += result.allowed ? 1 : 0;
  EXPECT_EQ(seen, 2u);

  // Older code: a vector-typed result, a policy argument, a vector callback.
  absl::StatusOr<std::vector<ThrottleResult>> as_vector = client->CheckBatch(two);
  ASSERT_TRUE(as_vector.ok()) << as_vector.status();
  EXPECT_EQ((*as_vector)[1].remaining, 0u);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  absl::StatusOr<std::vector<ThrottleResult>> with_policy =
      client->CheckBatch(two, FailurePolicy::kAllow);
  std::promise<absl::StatusOr<std::vector<ThrottleResult>>> promise;
  client->CheckBatchAsync(
      two,
      [&](absl::StatusOr<std::vector<ThrottleResult>> r) {
        promise.set_value(std::move(r));
      },
      std::optional<FailurePolicy>());
#pragma GCC diagnostic pop
  ASSERT_TRUE(with_policy.ok()) << with_policy.status();
  EXPECT_FALSE((*with_policy)[0].allowed);
  absl::StatusOr<std::vector<ThrottleResult>> async = promise.get_future().get();
  ASSERT_TRUE(async.ok()) << async.status();
  ASSERT_THAT(*async, SizeIs(2));
  EXPECT_FALSE((*async)[1].allowed);
}

// Verifies a batch over tenants on different backends: all_or_nothing is
// refused INVALID_ARGUMENT, and with fall_back_to_independent the client
// sends it again as an ordinary batch (one more RPC, not a failure).
TEST(ClientAllOrNothingTest, FallsBackAcrossBackends) {
  const std::string yaml = absl::StrCat(R"yaml(
tenants:
  - name: default
    backend: memory
  - name: remote
    backend: redis://)yaml",
                                        ClosedAddress(), R"yaml(/0
    on_backend_error: allow
default_tenant: default
)yaml");
  absl::StatusOr<e2e::TempFile> config = e2e::TempFile::Create(yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<e2e::TraffikdProcess>> server =
      e2e::TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen", "",
                                   "--config", config->path()});
  ASSERT_TRUE(server.ok()) << server.status();
  ClientOptions options;
  options.target = (*server)->grpc_address();
  options.deadline = kServerDeadline;
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();

  std::vector<ThrottleRequest> mixed = {Inline("fallback", 5), Inline("fallback", 5)};
  mixed[1].tenant = "remote";
  BatchOptions aon;
  aon.all_or_nothing = true;
  aon.policy = FailurePolicy::kRaise;
  absl::StatusOr<BatchResult> refused = (*client)->CheckBatch(mixed, aon);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              StartsWith("all_or_nothing batch spans several backends"));
  EXPECT_EQ((*client)->stats().failures, 1u);

  aon.fall_back_to_independent = true;
  const uint64_t rpcs = (*client)->stats().rpcs;
  absl::StatusOr<BatchResult> fallback = (*client)->CheckBatch(mixed, aon);
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_TRUE(fallback->applied);
  EXPECT_FALSE(fallback->all_or_nothing);
  ASSERT_THAT(fallback->results, SizeIs(2));
  EXPECT_EQ(fallback->results[0].remaining, 4u);  // memory: the first token taken
  EXPECT_TRUE(fallback->results[1].allowed);      // Redis down, fails open
  EXPECT_EQ((*client)->stats().rpcs, rpcs + 2);
  EXPECT_EQ((*client)->stats().failures, 1u);
}

// Verifies the cache is bounded: 100 throttled keys with max 10 keep at most 10, the
// latest.
TEST_F(ClientTest, ShortCircuitCacheBounded) {
  ClientOptions options = ServerOptions();
  options.short_circuit_max_keys = 10;
  auto client = MakeClient(options);
  for (int i = 0; i < 100; ++i) {
    const std::string id = Id(absl::StrCat(i));
    ASSERT_TRUE(client->Check(Inline(id, 1))->allowed);
    ASSERT_FALSE(client->Check(Inline(id, 1))->allowed);
    ASSERT_LE(client->stats().short_circuit_keys, 10u);
  }
  EXPECT_EQ(client->stats().short_circuit_keys, 10u);
  const uint64_t rpcs = client->stats().rpcs;
  EXPECT_EQ(client->Check(Inline(Id("99"), 1))->source, Source::kShortCircuit);  // kept
  EXPECT_EQ(client->stats().rpcs, rpcs);
  EXPECT_EQ(client->Check(Inline(Id("0"), 1))->source, Source::kServer);  // evicted
  EXPECT_EQ(client->stats().rpcs, rpcs + 1);
}

// Verifies short_circuit_max_keys 0 turns the short-circuit off.
TEST_F(ClientTest, ShortCircuitDisabled) {
  ClientOptions options = ServerOptions();
  options.short_circuit_max_keys = 0;
  auto client = MakeClient(options);
  ASSERT_TRUE(client->Check(Inline(Id(), 1))->allowed);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(client->Check(Inline(Id(), 1))->source, Source::kServer);
  }
  EXPECT_EQ(client->stats().rpcs, 4u);
  EXPECT_EQ(client->stats().short_circuit_keys, 0u);
}

// Verifies thread safety: 8 threads x 100 checks on one key allow exactly `limit`, with
// and without the short-circuit.
TEST_F(ClientTest, ConcurrentChecksAllowExactlyLimit) {
  for (const size_t max_keys : {size_t{100'000}, size_t{0}}) {
    ClientOptions options = ServerOptions();
    options.deadline = milliseconds(20'000);
    options.short_circuit_max_keys = max_keys;
    auto client = MakeClient(options);
    const std::string id = Id(absl::StrCat(max_keys));
    constexpr uint64_t kLimit = 50;
    std::atomic<int> allowed{0};
    std::atomic<int> errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 100; ++i) {
          absl::StatusOr<ThrottleResult> result = client->Check(Inline(id, kLimit));
          if (!result.ok()) {
            ++errors;
          } else if (result->allowed) {
            ++allowed;
          }
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(allowed.load(), static_cast<int>(kLimit));
    const ClientStats stats = client->stats();
    EXPECT_EQ(stats.rpcs + stats.short_circuited, 800u);
    if (max_keys == 0) {
      EXPECT_EQ(stats.rpcs, 800u);
    }
  }
}

// Verifies a Client dropped with calls in flight stays alive until their callbacks have
// run.
TEST_F(ClientTest, InFlightCallsOutliveClient) {
  absl::StatusOr<e2e::HeldPort> silent = e2e::HeldPort::Listen();
  ASSERT_TRUE(silent.ok()) << silent.status();
  ClientOptions options;
  options.target = absl::StrCat("127.0.0.1:", silent->port());
  options.deadline = milliseconds(200);
  auto client = MakeClient(options);
  auto future = client->CheckFuture(Inline(Id(), 1));
  client.reset();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_EQ(future.get().status().code(), absl::StatusCode::kDeadlineExceeded);
}

// Verifies dropping the last reference to a Client inside its own callback is safe (gRPC
// must not destroy the channel on its callback thread).
TEST_F(ClientTest, ClientReleasedInsideCallback) {
  for (int i = 0; i < 20; ++i) {
    auto client = MakeClient(ServerOptions());
    Client* raw = client.get();
    std::promise<bool> promise;
    raw->CheckAsync(Inline(Id(absl::StrCat(i)), 5),
                    [owner = std::move(client),
                     &promise](absl::StatusOr<ThrottleResult> result) mutable {
                      owner.reset();  // the application's last reference
                      promise.set_value(result.ok() && result->allowed);
                    });
    auto future = promise.get_future();
    ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_TRUE(future.get());
  }
}

}  // namespace
}  // namespace traffik
