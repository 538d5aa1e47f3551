// End-to-end tests of envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit
// on a real traffikd: a client built from our Envoy-compatible protos
// (proto/envoy/), envoyproxy/ratelimit config files in a temp directory,
// memory and Redis (tests/redis/redis_harness.h) tenants.
//
// Limits use long units (hour) so refill never interferes, except where a
// reset duration is checked (bounded by the real time the calls take).

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "e2e/traffikd_process.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "redis/redis_harness.h"

namespace traffik::e2e {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using ::testing::HasSubstr;
using ::traffik::testing_redis::KeySlot;
using ::traffik::testing_redis::RedisCluster;
using ::traffik::testing_redis::RedisServer;
using Code = rls::RateLimitResponse::Code;
using Status = rls::RateLimitResponse::DescriptorStatus;

constexpr auto kRpcTimeout = std::chrono::seconds(5);
constexpr uint64_t kHourMs = 3'600'000;

// The envoyproxy/ratelimit file of domain "rl" (memory tenant).
constexpr char kRlDomain[] = R"yaml(
domain: rl
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 5
      name: per_user
  - key: path
    value: /login
    rate_limit:
      unit: hour
      requests_per_unit: 2
  - key: free
    rate_limit:
      unlimited: true
  - key: blocked
    rate_limit:
      unit: second
      requests_per_unit: 0
  - key: shadow
    shadow_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: burst
    rate_limit:
      unit: hour
      requests_per_unit: 50
)yaml";

// Domain "rl_redis" (Redis tenant "shared").
constexpr char kRedisDomain[] = R"yaml(
domain: rl_redis
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 3
  - key: path
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: burst
    rate_limit:
      unit: hour
      requests_per_unit: 40
)yaml";

// A temp directory of ratelimit files, removed at the end.
class RuleDir {
 public:
  RuleDir() {
    char tmpl[] = "/tmp/traffik-envoy-e2e-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~RuleDir() { std::filesystem::remove_all(path_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(path_ + "/" + name) << text;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Reply {
  grpc::Status status;
  rls::RateLimitResponse response;
};

class EnvoyE2eTest : public ::testing::Test {
 protected:
  // Starts traffikd with the two domains; `redis_url` empty: no Redis tenant.
  void Start(const std::string& redis_url = "", bool response_headers = true) {
    rules_.Write("rl.yaml", kRlDomain);
    std::string tenants = "tenants:\n  - name: default\n";
    std::string mapping = "    rl: default\n";
    if (!redis_url.empty()) {
      rules_.Write("rl_redis.yaml", kRedisDomain);
      absl::StrAppend(&tenants, "  - name: shared\n    backend: ", redis_url, "\n");
      absl::StrAppend(&mapping, "    rl_redis: shared\n");
    }
    const std::string yaml = absl::StrCat(
        "max_identifier_bytes: 64\nmax_batch_size: 10\n", tenants,
        "envoy:\n  config_dirs: [", rules_.path(), "]\n  tenant_for_domain:\n", mapping,
        "  response_headers: ", response_headers ? "true" : "false", "\n");
    absl::StatusOr<TempFile> config = TempFile::Create(yaml);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = std::make_unique<TempFile>(std::move(*config));
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> process =
        TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen",
                                "127.0.0.1:0", "--config", config_->path()});
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = std::move(*process);
    stub_ = NewStub(0);
  }

  std::unique_ptr<rls::RateLimitService::Stub> NewStub(int tag) {
    grpc::ChannelArguments args;
    args.SetInt("traffik.e2e.channel", tag);  // distinct connections
    return rls::RateLimitService::NewStub(grpc::CreateCustomChannel(
        process_->grpc_address(), grpc::InsecureChannelCredentials(), args));
  }

  static Reply Call(rls::RateLimitService::Stub& stub,
                    const rls::RateLimitRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    Reply reply;
    reply.status = stub.ShouldRateLimit(&context, request, &reply.response);
    return reply;
  }
  Reply Call(const rls::RateLimitRequest& request) { return Call(*stub_, request); }

  std::string Metrics() {
    absl::StatusOr<HttpResponse> page = HttpGet(process_->metrics_port(), "/metrics");
    return page.ok() ? page->body : "";
  }

  RuleDir rules_;
  std::unique_ptr<TempFile> config_;
  std::unique_ptr<TraffikdProcess> process_;
  std::unique_ptr<rls::RateLimitService::Stub> stub_;
};

// One descriptor's entries, in order.
using Entries = std::vector<std::pair<std::string, std::string>>;

rls::RateLimitRequest Request(const std::string& domain,
                              const std::vector<Entries>& descriptors,
                              uint32_t hits_addend = 0) {
  rls::RateLimitRequest request;
  request.set_domain(domain);
  request.set_hits_addend(hits_addend);
  for (const Entries& entries : descriptors) {
    auto* d = request.add_descriptors();
    for (const auto& [key, value] : entries) {
      auto* e = d->add_entries();
      e->set_key(key);
      e->set_value(value);
    }
  }
  return request;
}

uint64_t ResetMs(const Status& status) {
  return static_cast<uint64_t>(status.duration_until_reset().seconds()) * 1000 +
         static_cast<uint64_t>(status.duration_until_reset().nanos()) / 1'000'000;
}

std::map<std::string, std::string> Headers(const rls::RateLimitResponse& response) {
  std::map<std::string, std::string> out;
  for (const auto& h : response.response_headers_to_add()) out[h.key()] = h.value();
  return out;
}

// Verifies codes, current_limit, limit_remaining and duration_until_reset
// (exact to the ms: one token of a 5/hour bucket is 720000 ms) over a bucket's
// whole life, and that a refused hit takes nothing.
TEST_F(EnvoyE2eTest, CodesStatusesRemainingAndReset) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const auto start = std::chrono::steady_clock::now();
  for (uint32_t i = 1; i <= 6; ++i) {
    Reply reply = Call(Request("rl", {{{"user", "alice"}}}));
    ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
    ASSERT_EQ(reply.response.statuses_size(), 1);
    const Status& status = reply.response.statuses(0);
    const uint64_t taken = std::min<uint32_t>(i, 5);
    EXPECT_EQ(reply.response.overall_code(),
              i <= 5 ? rls::RateLimitResponse::OK : rls::RateLimitResponse::OVER_LIMIT);
    EXPECT_EQ(status.code(), reply.response.overall_code());
    EXPECT_EQ(status.current_limit().requests_per_unit(), 5u);
    EXPECT_EQ(status.current_limit().unit(), rls::RateLimitResponse::RateLimit::HOUR);
    EXPECT_EQ(status.current_limit().name(), "per_user");
    EXPECT_EQ(status.limit_remaining(), 5 - taken);
    const uint64_t elapsed_ms =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - start)
                                  .count());
    // Until full again: `taken` tokens of 720000 ms each, less what refilled.
    EXPECT_LE(ResetMs(status), taken * 720'000);
    EXPECT_GE(ResetMs(status) + elapsed_ms + 1, taken * 720'000);
  }
}

// Verifies the response headers: RateLimit-Limit/Remaining/Reset of the
// descriptor with the least remaining, of the over-limit one when over, plus
// Retry-After (whole seconds, rounded up) only when over.
TEST_F(EnvoyE2eTest, ResponseHeaders) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Reply reply = Call(Request("rl", {{{"user", "hana"}}, {{"path", "/login"}}}));
  ASSERT_TRUE(reply.status.ok());
  auto headers = Headers(reply.response);
  // path (2/hour) has 1 left, user (5/hour) 4: path's numbers.
  EXPECT_EQ(headers["RateLimit-Limit"], "2");
  EXPECT_EQ(headers["RateLimit-Remaining"], "1");
  EXPECT_EQ(headers["RateLimit-Reset"], "1800");  // one token of 2/hour, rounded up
  EXPECT_EQ(headers.count("Retry-After"), 0u);

  ASSERT_TRUE(Call(Request("rl", {{{"path", "/login"}}})).status.ok());
  reply = Call(Request("rl", {{{"user", "hana"}}, {{"path", "/login"}}}));
  ASSERT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  headers = Headers(reply.response);
  EXPECT_EQ(headers["RateLimit-Limit"], "2");
  EXPECT_EQ(headers["RateLimit-Remaining"], "0");
  EXPECT_EQ(headers["RateLimit-Reset"], "3600");
  ASSERT_EQ(headers.count("Retry-After"), 1u);
  EXPECT_EQ(headers["Retry-After"], "1800");  // one token refills in 1800 s (ceil)
}

// Verifies that without `response_headers: true` no header is added.
TEST_F(EnvoyE2eTest, NoHeadersUnlessEnabled) {
  ASSERT_NO_FATAL_FAILURE(Start("", /*response_headers=*/false));
  Reply reply = Call(Request("rl", {{{"user", "ivan"}}}));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.response_headers_to_add_size(), 0);
}

// Verifies the answers that take nothing: an unknown domain and an unmatched
// descriptor are OK without current_limit, `unlimited` is OK with
// limit_remaining 2^32-1, requests_per_unit 0 is always OVER_LIMIT.
TEST_F(EnvoyE2eTest, UnknownNoMatchUnlimitedAndZero) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Reply reply = Call(Request("nope", {{{"user", "a"}}, {{"x", "y"}}}));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OK);
  ASSERT_EQ(reply.response.statuses_size(), 2);
  for (const Status& s : reply.response.statuses()) {
    EXPECT_EQ(s.code(), rls::RateLimitResponse::OK);
    EXPECT_FALSE(s.has_current_limit());
  }

  reply = Call(Request("rl", {{{"nothing", "here"}}, {{"free", "1"}}}));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_FALSE(reply.response.statuses(0).has_current_limit());
  EXPECT_FALSE(reply.response.statuses(1).has_current_limit());
  EXPECT_EQ(reply.response.statuses(1).limit_remaining(), 4294967295u);

  reply = Call(Request("rl", {{{"blocked", "1"}}}));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(reply.response.statuses(0).current_limit().requests_per_unit(), 0u);
}

// Verifies hits_addend at both levels: the request's is every descriptor's
// cost, a descriptor's own replaces it, 0 only checks, and a cost above the
// capacity is OVER_LIMIT taking nothing.
TEST_F(EnvoyE2eTest, HitsAddendAtBothLevels) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Reply reply = Call(Request("rl", {{{"user", "bob"}}}, /*hits_addend=*/3));
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 2u);

  rls::RateLimitRequest check = Request("rl", {{{"user", "bob"}}}, 3);
  check.mutable_descriptors(0)->mutable_hits_addend()->set_value(0);
  reply = Call(check);
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 2u);  // nothing taken

  rls::RateLimitRequest too_much = Request("rl", {{{"user", "bob"}}});
  too_much.mutable_descriptors(0)->mutable_hits_addend()->set_value(6);
  reply = Call(too_much);
  ASSERT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 2u);

  rls::RateLimitRequest two = Request("rl", {{{"user", "bob"}}}, 5);
  two.mutable_descriptors(0)->mutable_hits_addend()->set_value(2);
  reply = Call(two);
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 0u);
}

// Verifies all-or-nothing: when one descriptor is over, the others take
// nothing; a shadow_mode descriptor over its limit answers OK, does not block
// the others, and is counted as shadow_over_limit; requests_per_unit 0 blocks
// the others too.
TEST_F(EnvoyE2eTest, AllOrNothingAcrossDescriptors) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Call(Request("rl", {{{"user", "carol"}}, {{"path", "/login"}}}))
                  .response.overall_code(),
              rls::RateLimitResponse::OK);
  }
  Reply reply = Call(Request("rl", {{{"user", "carol"}}, {{"path", "/login"}}}));
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(reply.response.statuses(1).code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 3u);  // nothing taken
  reply = Call(Request("rl", {{{"user", "carol"}}}));
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 2u);

  reply = Call(Request("rl", {{{"blocked", "x"}}, {{"user", "erin"}}}));
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  reply = Call(Request("rl", {{{"user", "erin"}}}));
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(),
            4u);  // the blocked call took none

  for (uint32_t i = 0; i < 2; ++i) {
    reply = Call(Request("rl", {{{"shadow", "s"}}, {{"user", "dave"}}}));
    EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OK);
    EXPECT_EQ(reply.response.statuses(0).code(), rls::RateLimitResponse::OK);
    EXPECT_EQ(reply.response.statuses(1).limit_remaining(), 4 - i);
  }
  const std::string metrics = Metrics();
  EXPECT_EQ(SampleValue(
                metrics, "traffik_envoy_decisions_total",
                {{"domain", "rl"}, {"rule", "shadow"}, {"result", "shadow_over_limit"}}),
            1.0)
      << metrics;
  EXPECT_EQ(
      SampleValue(metrics, "traffik_envoy_decisions_total",
                  {{"domain", "rl"}, {"rule", "path_/login"}, {"result", "over_limit"}}),
      1.0);
  EXPECT_EQ(
      SampleValue(metrics, "traffik_envoy_decisions_total",
                  {{"domain", "rl"}, {"rule", "blocked"}, {"result", "over_limit"}}),
      1.0);
}

// Verifies a descriptor's limit override: its own bucket (the rate is part of
// the key), current_limit from the override, the configured bucket untouched.
TEST_F(EnvoyE2eTest, LimitOverride) {
  ASSERT_NO_FATAL_FAILURE(Start());
  rls::RateLimitRequest request = Request("rl", {{{"user", "gina"}}});
  request.mutable_descriptors(0)->mutable_limit()->set_requests_per_unit(2);
  request.mutable_descriptors(0)->mutable_limit()->set_unit(::envoy::type::v3::HOUR);
  for (int i = 0; i < 3; ++i) {
    Reply reply = Call(request);
    ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
    EXPECT_EQ(reply.response.overall_code(),
              i < 2 ? rls::RateLimitResponse::OK : rls::RateLimitResponse::OVER_LIMIT);
    EXPECT_EQ(reply.response.statuses(0).current_limit().requests_per_unit(), 2u);
    EXPECT_EQ(reply.response.statuses(0).current_limit().unit(),
              rls::RateLimitResponse::RateLimit::HOUR);
  }
  // Another rate: another bucket.
  request.mutable_descriptors(0)->mutable_limit()->set_requests_per_unit(3);
  EXPECT_EQ(Call(request).response.statuses(0).limit_remaining(), 2u);
  // An override applies even where no rule matches (as upstream).
  rls::RateLimitRequest unmatched = Request("rl", {{{"nothing", "x"}}});
  unmatched.mutable_descriptors(0)->mutable_limit()->set_requests_per_unit(1);
  unmatched.mutable_descriptors(0)->mutable_limit()->set_unit(::envoy::type::v3::DAY);
  EXPECT_EQ(Call(unmatched).response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(Call(unmatched).response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  // The configured bucket is untouched.
  EXPECT_EQ(
      Call(Request("rl", {{{"user", "gina"}}})).response.statuses(0).limit_remaining(),
      4u);
}

// Verifies exactness under 8 concurrent callers on separate connections: a
// 50/hour limit allows exactly 50 of 8 x 25 calls.
TEST_F(EnvoyE2eTest, ExactUnderEightConcurrentCallers) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto stub = NewStub(t + 1);
      for (int i = 0; i < 25; ++i) {
        Reply reply = Call(*stub, Request("rl", {{{"burst", "one"}}}));
        if (!reply.status.ok()) {
          failed.fetch_add(1);
        } else if (reply.response.overall_code() == rls::RateLimitResponse::OK) {
          ok.fetch_add(1);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ok.load(), 50);
}

// Verifies INVALID_ARGUMENT for an empty domain, no descriptors, too many
// descriptors or entries, an empty key, an oversized value (named by its
// index, echoed only quoted and truncated) and a bucket identity over
// max_identifier_bytes; nothing is taken by a rejected request.
TEST_F(EnvoyE2eTest, InvalidRequests) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Reply reply = Call(Request("", {{{"user", "a"}}}));
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("domain is empty"));

  reply = Call(Request("rl", {}));
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("descriptors is empty"));

  reply = Call(Request("rl", std::vector<Entries>(11, Entries{{"user", "zed"}})));
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  reply = Call(Request("rl", {Entries(33, {"k", "v"})}));
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("descriptors[0] has 33 entries"));

  reply = Call(Request("rl", {{{"user", "zed"}}, {{"", "v"}}}));
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("descriptors[1].entries[0].key"));

  const std::string huge(100'000, 'h');
  reply = Call(Request("rl", {{{"user", "zed"}}, {{"user", "zed"}, {"x", huge}}}));
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("descriptors[1].entries[1].value"));
  EXPECT_LT(reply.status.error_message().size(), 400u);

  // An override's unit must be SECOND ... YEAR; its rate must fit the exact
  // bucket arithmetic (requests_per_unit * unit in ms <= 2^53).
  rls::RateLimitRequest bad_unit = Request("rl", {{{"user", "zed"}}});
  bad_unit.mutable_descriptors(0)->mutable_limit()->set_requests_per_unit(1);
  reply = Call(bad_unit);
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("descriptors[0].limit.unit"));
  rls::RateLimitRequest huge_rate = Request("rl", {{{"user", "zed"}}});
  huge_rate.mutable_descriptors(0)->mutable_limit()->set_requests_per_unit(
      4'000'000'000u);
  huge_rate.mutable_descriptors(0)->mutable_limit()->set_unit(::envoy::type::v3::YEAR);
  reply = Call(huge_rate);
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("descriptors[0]: limit of"));

  // Each value fits, the bucket identity (all entries) does not.
  reply = Call(Request("rl", {{{"user", std::string(60, 'u')}}}));
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("descriptors[0]"));

  reply = Call(Request("rl", {{{"user", "zed"}}}));
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 4u);
}

// Verifies traffik_envoy_decisions_total: results by configured domain and
// rule path; an unknown domain is counted under domain="" (bounded).
TEST_F(EnvoyE2eTest, DecisionMetrics) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Call(Request("rl", {{{"user", "m"}}, {{"free", "x"}}, {{"none", "x"}}}));
  Call(Request("attacker-chosen-domain", {{{"user", "m"}}}));
  const std::string metrics = Metrics();
  auto value = [&](const std::string& domain, const std::string& rule,
                   const std::string& result) {
    return SampleValue(metrics, "traffik_envoy_decisions_total",
                       {{"domain", domain}, {"rule", rule}, {"result", result}});
  };
  EXPECT_EQ(value("rl", "user", "ok"), 1.0) << metrics;
  EXPECT_EQ(value("rl", "free", "unlimited"), 1.0);
  EXPECT_EQ(value("rl", "", "no_match"), 1.0);
  EXPECT_EQ(value("", "", "no_match"), 1.0);
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("attacker-chosen-domain")));
}

// Verifies that a reload (SIGHUP) swaps the rules with the rest of the
// config: a changed requests_per_unit applies to the next call.
TEST_F(EnvoyE2eTest, ReloadSwapsRules) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_EQ(Call(Request("rl", {{{"user", "rex"}}}))
                .response.statuses(0)
                .current_limit()
                .requests_per_unit(),
            5u);
  std::string changed = kRlDomain;
  changed.replace(changed.find("requests_per_unit: 5"), 20, "requests_per_unit: 7");
  rules_.Write("rl.yaml", changed);
  ASSERT_TRUE(process_->SendSignal(SIGHUP));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  uint32_t limit = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    limit = Call(Request("rl", {{{"user", "rex"}}}))
                .response.statuses(0)
                .current_limit()
                .requests_per_unit();
    if (limit == 7) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(limit, 7u) << process_->StderrText();
}

// Verifies that traffikd without an `envoy:` section serves ShouldRateLimit
// and answers OK for every descriptor (no domains).
TEST(EnvoyE2eNoConfigTest, EveryDescriptorOk) {
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> process = TraffikdProcess::Start(
      {"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(process.ok()) << process.status();
  auto stub = rls::RateLimitService::NewStub(grpc::CreateChannel(
      (*process)->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  rls::RateLimitResponse response;
  grpc::Status status =
      stub->ShouldRateLimit(&context, Request("any", {{{"user", "a"}}}), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  ASSERT_EQ(response.statuses_size(), 1);
  EXPECT_FALSE(response.statuses(0).has_current_limit());
}

// ------------------------------------------------------------------ Redis

class EnvoyRedisE2eTest : public EnvoyE2eTest {
 protected:
  void StartWithRedis() {
    absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = std::move(*redis);
    ASSERT_NO_FATAL_FAILURE(StartOn(redis_->url()));
  }

  // Starts traffikd with the Redis tenant on `url` and waits until it decides.
  void StartOn(const std::string& url) {
    ASSERT_NO_FATAL_FAILURE(Start(url));
    // traffikd connects in the background: wait until a decision succeeds.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    Reply reply;
    do {
      reply = Call(Request("rl_redis", {{{"warmup", "x"}}}));  // no rule: no key
      rls::RateLimitRequest probe = Request("rl_redis", {{{"user", "warmup"}}});
      probe.mutable_descriptors(0)->mutable_hits_addend()->set_value(0);
      reply = Call(probe);
      if (reply.status.ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < deadline);
    FAIL() << "Redis tenant never decided: " << reply.status.error_message() << "\n"
           << process_->StderrText();
  }

  std::unique_ptr<RedisServer> redis_;
};

// Verifies a Redis tenant: exact counts, the documented key layout
// (prefix:\x1fenvoy/<domain>/<rule path>:{<bucket_id>}), all-or-nothing
// across descriptors, and exactness under 8 concurrent callers.
TEST_F(EnvoyRedisE2eTest, RedisTenant) {
  ASSERT_NO_FATAL_FAILURE(StartWithRedis());
  for (uint32_t i = 0; i < 4; ++i) {
    Reply reply = Call(Request("rl_redis", {{{"user", "ann"}}}));
    ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
    EXPECT_EQ(reply.response.overall_code(),
              i < 3 ? rls::RateLimitResponse::OK : rls::RateLimitResponse::OVER_LIMIT);
    EXPECT_EQ(reply.response.statuses(0).limit_remaining(), i < 3 ? 2 - i : 0);
  }
  absl::StatusOr<std::string> exists =
      redis_->Command({"EXISTS",
                       "shared:\x1f"
                       "envoy/rl_redis/user:{4:user3:ann}"});
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_EQ(*exists, "1");

  // path (1/hour) refuses the second call: user takes nothing then.
  EXPECT_EQ(Call(Request("rl_redis", {{{"user", "bea"}}, {{"path", "p"}}}))
                .response.overall_code(),
            rls::RateLimitResponse::OK);
  Reply reply = Call(Request("rl_redis", {{{"user", "bea"}}, {{"path", "p"}}}));
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 2u);

  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto stub = NewStub(t + 1);
      for (int i = 0; i < 10; ++i) {
        Reply r = Call(*stub, Request("rl_redis", {{{"burst", "b"}}}));
        if (!r.status.ok()) {
          failed.fetch_add(1);
        } else if (r.response.overall_code() == rls::RateLimitResponse::OK) {
          ok.fetch_add(1);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ok.load(), 40);
  (void)kHourMs;
}

// Verifies Redis Cluster: descriptors whose keys live in different hash slots
// cannot be decided together (kFailedPrecondition from the backend), so they
// are decided one by one (documented): the call succeeds, each limit holds.
TEST_F(EnvoyRedisE2eTest, ClusterKeysInSeveralSlots) {
  absl::StatusOr<std::unique_ptr<RedisCluster>> cluster = RedisCluster::Start(3);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_NO_FATAL_FAILURE(StartOn((*cluster)->seeds_url()));
  const std::string user_key =
      "shared:\x1f"
      "envoy/rl_redis/user:{4:user3:ann}";
  const std::string path_key =
      "shared:\x1f"
      "envoy/rl_redis/path:{4:path1:p}";
  ASSERT_NE(KeySlot(user_key), KeySlot(path_key));
  Reply reply = Call(Request("rl_redis", {{{"user", "ann"}}, {{"path", "p"}}}));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(reply.response.statuses(0).limit_remaining(), 2u);
  EXPECT_EQ(reply.response.statuses(1).limit_remaining(), 0u);
  reply = Call(Request("rl_redis", {{{"user", "ann"}}, {{"path", "p"}}}));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(reply.response.statuses(1).code(), rls::RateLimitResponse::OVER_LIMIT);
}

}  // namespace
}  // namespace traffik::e2e
