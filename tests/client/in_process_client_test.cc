// Tests of traffik::testing::InProcessClient: unit tests on a FakeClock, and
// the same sequences of hits against a real traffikd (memory backend, the
// same throttles and tenants) answered alike.

#include "traffik/testing/in_process_client.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/http.h"

namespace traffik {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::FakeClock;
using testing::InProcessClient;
using testing::InProcessOptions;
using Source = ThrottleResult::Source;

constexpr milliseconds kHour{3'600'000};

ThrottleRequest Hit(const std::string& uid, const std::string& identifier,
                    uint32_t cost = 1, const std::string& tenant = "") {
  ThrottleRequest request;
  request.throttle_uid = uid;
  request.identifier = identifier;
  request.cost = cost;
  request.tenant = tenant;
  return request;
}

ThrottleRequest Inline(const std::string& uid, const std::string& identifier,
                       uint64_t limit, milliseconds period, uint32_t cost = 1,
                       const std::string& tenant = "") {
  ThrottleRequest request = Hit(uid, identifier, cost, tenant);
  request.spec = ThrottleSpec{limit, period};
  return request;
}

// The throttles and tenants of kConfigYaml, for the in-process client.
InProcessOptions Options(std::shared_ptr<FakeClock> clock) {
  InProcessOptions options;
  options.clock = std::move(clock);
  options.throttles["search"] = {3, kHour};
  options.throttles["login"] = {3, std::chrono::minutes(1)};
  options.tenants["default"] = {};
  options.tenants["gold"] = {.quota_multiplier = 2};
  options.tenants["closed"] = {.allow_inline_specs = false};
  return options;
}

constexpr char kConfigYaml[] = R"yaml(
throttles:
  - uid: search
    limit: 3
    period: 1h
  - uid: login
    limit: 3
    period: 1m
tenants:
  - name: default
  - name: gold
    quota_multiplier: 2
  - name: closed
    allow_inline_specs: false
)yaml";

class InProcessClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::shared_ptr<InProcessClient>> client =
        InProcessClient::Create(Options(clock_));
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *client;
  }

  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::shared_ptr<InProcessClient> client_;
};

// Verifies 3 per minute: three allowed, the fourth refused with the wait until a
// token is back, and allowed again once the fake clock has moved that far.
TEST_F(InProcessClientTest, RefusesAtLimitAndRefillsWithTheClock) {
  for (const uint64_t left : {2u, 1u, 0u}) {
    absl::StatusOr<ThrottleResult> r = client_->Check(Hit("login", "alice"));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->allowed);
    EXPECT_EQ(r->remaining, left);
    EXPECT_EQ(r->limit, 3u);
    EXPECT_EQ(r->source, Source::kServer);
  }
  absl::StatusOr<ThrottleResult> refused = client_->Check(Hit("login", "alice"));
  ASSERT_TRUE(refused.ok());
  EXPECT_FALSE(refused->allowed);
  EXPECT_EQ(refused->wait, seconds(20));
  EXPECT_EQ(refused->reset, seconds(60));
  EXPECT_TRUE(client_->Check(Hit("login", "bob"))->allowed);  // its own bucket

  clock_->Advance(milliseconds(19'999));
  EXPECT_EQ(client_->Check(Hit("login", "alice"))->wait, milliseconds(1));
  clock_->Advance(milliseconds(1));
  EXPECT_TRUE(client_->Check(Hit("login", "alice"))->allowed);
  EXPECT_EQ(client_->stats().rpcs, 7u);
}

// Verifies inline specs: the spec is part of the bucket's identity, a
// configured throttle wins over a spec with its uid, a tenant's multiplier
// scales the limit, cost 0 counts as 1.
TEST_F(InProcessClientTest, InlineSpecsTenantsAndCost) {
  EXPECT_EQ(client_->Check(Inline("x", "id", 2, kHour))->remaining, 1u);
  EXPECT_EQ(client_->Check(Inline("x", "id", 5, kHour))->remaining, 4u);  // other bucket
  EXPECT_EQ(client_->Check(Inline("search", "id", 100, kHour))->limit, 3u);
  EXPECT_EQ(client_->Check(Hit("search", "id", 1, "gold"))->limit, 6u);
  EXPECT_EQ(client_->Check(Hit("search", "cost0", 0))->remaining, 2u);
  EXPECT_EQ(client_->Check(Hit("search", "cost3", 3))->remaining, 0u);
}

// Verifies the error codes traffikd answers: invalid identifier / uid / tenant
// name, unknown tenant or throttle, inline specs refused, cost above the limit.
TEST_F(InProcessClientTest, ErrorCodes) {
  auto code = [&](const ThrottleRequest& r) { return client_->Check(r).status().code(); };
  EXPECT_EQ(code(Hit("search", "")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Hit("", "id")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Hit("a:b", "id")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Hit("search", "id", 1, "bad\n")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Hit("search", "id", 1, "nope")), absl::StatusCode::kNotFound);
  EXPECT_EQ(code(Hit("unknown", "id")), absl::StatusCode::kNotFound);
  EXPECT_EQ(code(Inline("x", "id", 1, kHour, 1, "closed")),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(Inline("x", "id", 0, kHour)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Inline("x", "id", 1, milliseconds(0))),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Inline("x", "id", uint64_t{1} << 40, kHour)),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Hit("search", "id", 4)), absl::StatusCode::kOutOfRange);
  // Errors that are not outages are errors under every policy.
  EXPECT_EQ(client_->Check(Hit("unknown", "id"), FailurePolicy::kAllow).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->stats().failures, 12u);
}

// Verifies batches: an invalid item fails the whole batch (kInvalidArgument,
// nothing taken); an all-or-nothing batch with a refused item takes nothing
// and describes each bucket as it stands; an ordinary one takes what passes.
TEST_F(InProcessClientTest, Batches) {
  absl::StatusOr<BatchResult> invalid =
      client_->CheckBatch({Hit("search", "b"), Hit("unknown", "b")});
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(invalid.status().message()),
              ::testing::StartsWith("requests[1]: NOT_FOUND"));
  ASSERT_TRUE(client_->Check(Hit("search", "b"))->allowed);  // 2 left: nothing taken

  ASSERT_TRUE(client_->CheckBatch({Hit("search", "b", 2)})->applied);  // 0 left
  const std::vector<ThrottleRequest> both = {Inline("sustained", "b", 10, kHour),
                                             Hit("search", "b")};
  absl::StatusOr<BatchResult> aon = client_->CheckBatch(both, {.all_or_nothing = true});
  ASSERT_TRUE(aon.ok()) << aon.status();
  EXPECT_FALSE(aon->applied);
  EXPECT_TRUE(aon->all_or_nothing);
  EXPECT_TRUE((*aon)[0].allowed);
  EXPECT_EQ((*aon)[0].remaining, 10u);  // as it stands: nothing taken
  EXPECT_FALSE((*aon)[1].allowed);

  absl::StatusOr<BatchResult> plain = client_->CheckBatch(both);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->applied);
  EXPECT_EQ((*plain)[0].remaining, 9u);  // taken despite the refusal
  EXPECT_EQ(client_->CheckBatch({})->size(), 0u);
}

// Verifies max_buckets bounds the table: buckets full again are dropped for room;
// beyond that a new bucket is kResourceExhausted, an outage the policy applies to.
TEST(InProcessClientLimitsTest, MaxBuckets) {
  auto clock = std::make_shared<FakeClock>();
  InProcessOptions options = Options(clock);
  options.max_buckets = 2;
  std::shared_ptr<InProcessClient> client = *InProcessClient::Create(options);
  ASSERT_TRUE(client->Check(Hit("login", "a"))->allowed);
  ASSERT_TRUE(client->Check(Hit("login", "b"))->allowed);
  EXPECT_EQ(client->Check(Hit("login", "c")).status().code(),
            absl::StatusCode::kResourceExhausted);
  absl::StatusOr<ThrottleResult> open =
      client->Check(Hit("login", "c"), FailurePolicy::kAllow);
  ASSERT_TRUE(open.ok());
  EXPECT_TRUE(open->allowed);
  EXPECT_EQ(open->source, Source::kFailurePolicy);
  absl::StatusOr<ThrottleResult> closed =
      client->Check(Hit("login", "c"), FailurePolicy::kDeny);
  EXPECT_FALSE(closed->allowed);
  EXPECT_EQ(closed->wait, options.deny_wait);
  clock->Advance(seconds(20));  // a and b are full again
  EXPECT_TRUE(client->Check(Hit("login", "c"))->allowed);
  EXPECT_EQ(client->bucket_count(), 1u);
  client->Reset();
  EXPECT_EQ(client->bucket_count(), 0u);
}

// Verifies Create refuses options traffikd would refuse in a config.
TEST(InProcessClientLimitsTest, CreateValidates) {
  InProcessOptions bad_uid;
  bad_uid.throttles["a{b"] = {1, kHour};
  EXPECT_EQ(InProcessClient::Create(bad_uid).status().code(),
            absl::StatusCode::kInvalidArgument);
  InProcessOptions zero;
  zero.throttles["a"] = {0, kHour};
  EXPECT_EQ(InProcessClient::Create(zero).status().code(),
            absl::StatusCode::kInvalidArgument);
  InProcessOptions no_default;
  no_default.tenants["gold"] = {};
  EXPECT_EQ(InProcessClient::Create(no_default).status().code(),
            absl::StatusCode::kInvalidArgument);
  InProcessOptions multiplier;
  multiplier.tenants["default"] = {.quota_multiplier = 0};
  EXPECT_EQ(InProcessClient::Create(multiplier).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(InProcessClient::Create().ok());
}

// Verifies the use the in-process client is for: an app's throttled handler
// unit-tested without traffikd (the HTTP decorator, a const request), 5 per
// 10 s per client, the sixth answered 429 with Retry-After, served again once
// the fake clock has moved.
TEST(InProcessClientUseTest, ThrottledHandlerWithoutTraffikd) {
  auto clock = std::make_shared<FakeClock>();
  std::shared_ptr<InProcessClient> client = *InProcessClient::Create({.clock = clock});
  HttpThrottle search({.uid = "search", .spec = ThrottleSpec{5, seconds(10)}});
  HttpHandler handler = Throttled(
      HttpThrottler(client),
      [](const HttpRequest&) { return HttpResponse{.body = "results"}; }, search);
  const HttpRequest request{
      .method = "GET", .path = "/search", .peer_address = "203.0.113.9"};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(handler(request).status, 200) << i;
  const HttpResponse refused = handler(request);
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.Header("Retry-After"), "2");
  EXPECT_EQ(refused.Header("RateLimit-Limit"), "5");
  clock->Advance(seconds(2));
  EXPECT_EQ(handler(request).status, 200);

  // HttpThrottler::Check takes a const request (and a temporary).
  const HttpThrottler throttler(client);
  EXPECT_FALSE(throttler.Check(request, {search}).allowed);
  HttpVerdict other = throttler.Check(
      HttpRequest{.method = "GET", .path = "/search", .peer_address = "198.51.100.1"},
      {search});
  EXPECT_TRUE(other.allowed);
  EXPECT_THAT(other.headers,
              ::testing::Contains(::testing::Pair("RateLimit-Remaining", "4")));
}

// One step of a sequence: a single hit or a batch.
struct Step {
  std::vector<ThrottleRequest> requests;  // one: Check; more: CheckBatch
  bool all_or_nothing = false;
};

// Verifies the in-process client answers a sequence of hits exactly as a real
// traffikd with the same throttles and tenants: codes, allowed, limit,
// remaining; wait and reset equal up to the real time the server's sequence
// took (the in-process client's fake clock stands still).
TEST(InProcessClientVsTraffikdTest, SameAnswers) {
  absl::StatusOr<e2e::TempFile> config = e2e::TempFile::Create(kConfigYaml);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<e2e::TraffikdProcess>> server =
      e2e::TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen", "",
                                   "--config", config->path()});
  ASSERT_TRUE(server.ok()) << server.status();
  ClientOptions grpc_options;
  grpc_options.target = (*server)->grpc_address();
  grpc_options.deadline = seconds(5);
  grpc_options.short_circuit_max_keys = 0;       // every answer from traffikd
  grpc_options.log = [](const std::string&) {};  // the invalid steps fail on purpose
  std::shared_ptr<Client> remote = *Client::Create(grpc_options);
  std::shared_ptr<Client> local =
      *InProcessClient::Create(Options(std::make_shared<FakeClock>()));

  const std::string long_id(5000, 'x');  // digested by both
  std::vector<Step> steps;
  for (int i = 0; i < 5; ++i) steps.push_back({{Hit("login", "u1")}});
  for (int i = 0; i < 3; ++i) steps.push_back({{Hit("search", "u1", 2, "gold")}});
  for (int i = 0; i < 4; ++i) steps.push_back({{Inline("api", "u1", 3, seconds(10))}});
  steps.push_back({{Inline("api", "u1", 4, seconds(10))}});  // another bucket
  steps.push_back({{Inline("search", "u2", 100, kHour)}});   // configured wins
  for (int i = 0; i < 3; ++i) steps.push_back({{Hit("search", long_id, 0)}});
  steps.push_back({{Hit("search", "")}});
  steps.push_back({{Hit("bad:uid", "u1")}});
  steps.push_back({{Hit("search", "u1", 1, "nope")}});
  steps.push_back({{Hit("nothing", "u1")}});
  steps.push_back({{Inline("x", "u1", 1, kHour, 1, "closed")}});
  steps.push_back({{Hit("search", "u1", 4)}});
  steps.push_back({{Inline("x", "u1", 0, kHour)}});
  steps.push_back({{Inline("big", "u1", uint64_t{1} << 40, kHour)}});
  const std::vector<ThrottleRequest> pair = {Inline("burst", "u3", 1, kHour),
                                             Inline("sustained", "u3", 5, kHour)};
  steps.push_back({pair, true});
  steps.push_back({pair, true});   // refused whole
  steps.push_back({pair, false});  // sustained taken
  steps.push_back({{Hit("search", "u4"), Hit("search", "u4"), Hit("search", "u4"),
                    Hit("search", "u4")},
                   true});
  steps.push_back({{Hit("search", "u4"), Hit("nothing", "u4")}});

  auto run = [](Client& client, const Step& step) -> absl::StatusOr<BatchResult> {
    if (step.requests.size() == 1) {
      absl::StatusOr<ThrottleResult> one = client.Check(step.requests[0]);
      if (!one.ok()) return one.status();
      BatchResult result;
      result.results.push_back(*one);
      return result;
    }
    return client.CheckBatch(step.requests, {.all_or_nothing = step.all_or_nothing});
  };
  std::vector<absl::StatusOr<BatchResult>> from_server;
  const auto start = std::chrono::steady_clock::now();
  for (const Step& step : steps) from_server.push_back(run(*remote, step));
  const int64_t took_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start)
          .count() +
      1;
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("step ", i));
    const absl::StatusOr<BatchResult> mine = run(*local, steps[i]);
    const absl::StatusOr<BatchResult>& theirs = from_server[i];
    ASSERT_EQ(mine.status().code(), theirs.status().code())
        << mine.status() << " vs " << theirs.status();
    if (!mine.ok()) continue;
    EXPECT_EQ(mine->applied, theirs->applied);
    EXPECT_EQ(mine->all_or_nothing, theirs->all_or_nothing);
    ASSERT_EQ(mine->size(), theirs->size());
    for (size_t k = 0; k < mine->size(); ++k) {
      SCOPED_TRACE(absl::StrCat("item ", k));
      const ThrottleResult& a = (*mine)[k];
      const ThrottleResult& b = (*theirs)[k];
      EXPECT_EQ(a.allowed, b.allowed);
      EXPECT_EQ(a.limit, b.limit);
      EXPECT_EQ(a.remaining, b.remaining);
      EXPECT_EQ(a.source, b.source);
      // The server's buckets refilled for up to `took_ms` meanwhile.
      EXPECT_LE(b.wait.count(), a.wait.count());
      EXPECT_GE(b.wait.count(), a.wait.count() - took_ms);
      EXPECT_LE(b.reset.count(), a.reset.count());
      EXPECT_GE(b.reset.count(), a.reset.count() - took_ms);
    }
  }
}

}  // namespace
}  // namespace traffik
