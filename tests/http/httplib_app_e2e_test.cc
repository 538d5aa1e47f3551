// End-to-end: the real traffikd and the real examples/httplib_app as
// processes on 127.0.0.1 (port 0), driven with libcurl.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/e2e_helpers.h"

#ifndef HTTPLIB_APP_PATH
#error "HTTPLIB_APP_PATH must name the httplib_app binary"
#endif

namespace traffik::http_e2e {
namespace {

using std::chrono::milliseconds;
using ::testing::AnyOf;
using ::testing::HasSubstr;

class HttplibAppTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<e2e::TraffikdProcess>> traffikd =
        e2e::TraffikdProcess::Start(
            {"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
    ASSERT_TRUE(traffikd.ok()) << traffikd.status();
    traffikd_ = std::move(*traffikd);
  }

  // Starts the app against this test's traffikd (or `traffikd` if given).
  void StartApp(std::vector<std::string> args = {}, std::string traffikd = "") {
    absl::StatusOr<std::unique_ptr<AppProcess>> app = AppProcess::StartExample(
        HTTPLIB_APP_PATH, traffikd.empty() ? traffikd_->grpc_address() : traffikd, args);
    ASSERT_TRUE(app.ok()) << app.status();
    app_ = std::move(*app);
  }

  CurlResponse Get(const std::string& path, const std::vector<std::string>& headers = {},
                   const std::string& method = "GET") {
    absl::StatusOr<CurlResponse> r = Curl(app_->port(), path, headers, method);
    EXPECT_TRUE(r.ok()) << r.status() << "\napp output:\n" << app_->Output();
    return r.ok() ? *r : CurlResponse{};
  }

  double Decisions() {
    absl::StatusOr<double> total = DecisionsTotal(traffikd_->metrics_port());
    EXPECT_TRUE(total.ok()) << total.status();
    return total.value_or(-1);
  }

  std::unique_ptr<e2e::TraffikdProcess> traffikd_;
  std::unique_ptr<AppProcess> app_;
};

// Verifies the decorated route answers 429 at the 4th request (burst 3/min) with
// Retry-After and RateLimit-* headers, and RateLimit-* on the allowed ones.
TEST_F(HttplibAppTest, DecoratedRoute429AtFourthRequestWithHeaders) {
  StartApp();
  for (int i = 1; i <= 3; ++i) {
    CurlResponse r = Get("/search?q=x");
    ASSERT_EQ(r.status, 200) << "request " << i << ": " << r.body;
    EXPECT_EQ(r.Header("ratelimit-limit"), "3");
    EXPECT_EQ(r.Header("ratelimit-remaining"), std::to_string(3 - i));
    EXPECT_FALSE(r.Header("ratelimit-reset").empty());
  }
  CurlResponse r = Get("/search?q=x");
  EXPECT_EQ(r.status, 429);
  // One token per 20 s: the wait is just under 20 s, rounded up.
  EXPECT_THAT(r.Header("retry-after"), AnyOf("19", "20"));
  EXPECT_EQ(r.Header("ratelimit-limit"), "3");
  EXPECT_EQ(r.Header("ratelimit-remaining"), "0");
  EXPECT_THAT(r.body, HasSubstr("rate limited; retry in"));
}

// Verifies a 429 answered from the client's short-circuit cache (no RPC) carries
// RateLimit-* like the server's 429 (it carried Retry-After only).
TEST_F(HttplibAppTest, ShortCircuited429CarriesRateLimitHeaders) {
  StartApp();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Get("/search").status, 200);
  ASSERT_EQ(Get("/search").status, 429);  // traffikd's refusal
  const double before = Decisions();
  CurlResponse r = Get("/search");  // refused locally
  EXPECT_EQ(Decisions(), before);
  EXPECT_EQ(r.status, 429);
  EXPECT_THAT(r.Header("retry-after"), AnyOf("19", "20"));
  EXPECT_EQ(r.Header("ratelimit-limit"), "3");
  EXPECT_EQ(r.Header("ratelimit-remaining"), "0");
  EXPECT_THAT(r.Header("ratelimit-reset"), AnyOf("59", "60"));
}

// Verifies /items/<n> (5 per 10 s) is one bucket per client and route pattern: six
// different URLs, the 6th refused.
TEST_F(HttplibAppTest, ItemsRouteOneBucketPerPattern) {
  StartApp();
  for (int i = 1; i <= 5; ++i) {
    CurlResponse r = Get("/items/" + std::to_string(i));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.Header("ratelimit-limit"), "5");
    EXPECT_EQ(r.Header("ratelimit-remaining"), std::to_string(5 - i));
  }
  CurlResponse refused = Get("/items/6");
  EXPECT_EQ(refused.status, 429);
  EXPECT_THAT(refused.Header("retry-after"), AnyOf("1", "2"));
}

// Verifies /login is limited 3 per minute per form username with a JSON 429 that keeps
// Retry-After and RateLimit-*, while another username is not affected.
TEST_F(HttplibAppTest, LoginPerUsernameJson429) {
  StartApp();
  const std::vector<std::string> form = {
      "Content-Type: application/x-www-form-urlencoded"};
  auto login = [&](const std::string& body) {
    absl::StatusOr<CurlResponse> r = Curl(app_->port(), "/login", form, "POST", body);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CurlResponse{};
  };
  for (int i = 0; i < 3; ++i) {
    CurlResponse r = login("username=alice&password=p" + std::to_string(i));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, R"({"user":"alice"})");
  }
  CurlResponse refused = login("password=x&username=alice");
  EXPECT_EQ(refused.status, 429);
  EXPECT_THAT(refused.Header("content-type"), HasSubstr("application/json"));
  EXPECT_THAT(refused.body,
              ::testing::MatchesRegex(
                  R"(\{"error":"too many login attempts","retry_after":[0-9]+\})"));
  EXPECT_THAT(refused.Header("retry-after"), AnyOf("19", "20"));
  EXPECT_EQ(refused.Header("ratelimit-limit"), "3");
  EXPECT_EQ(login("username=bob&password=p").status, 200);
}

// Verifies the app's own pre-routing handler still runs (X-Served-By) with the
// middleware installed, and not for requests the middleware refuses; the per-IP /api/
// rule (100 per minute) applies where the "api" rule exempts.
TEST_F(HttplibAppTest, AppPreRoutingHandlerChainedAfterMiddleware) {
  StartApp();
  EXPECT_EQ(Get("/health").Header("x-served-by"), "httplib_app");
  CurlResponse admin = Get("/api/x", {"X-Api-Key: admin-key"});
  EXPECT_EQ(admin.status, 200);
  EXPECT_EQ(admin.Header("x-served-by"), "httplib_app");
  EXPECT_EQ(admin.Header("ratelimit-limit"), "100");
  EXPECT_EQ(admin.Header("ratelimit-remaining"), "99");
  CurlResponse r;
  for (int i = 0; i < 6; ++i) r = Get("/api/x");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.Header("x-served-by"), "");
  EXPECT_EQ(r.Header("ratelimit-limit"), "5");
}

// Verifies a kUnlimited identifier (admin key) bypasses the limit with no RPC to
// traffikd, while a normal request makes one batch RPC (2 decisions).
TEST_F(HttplibAppTest, UnlimitedBypassesWithoutRpc) {
  StartApp();
  const double before = Decisions();
  for (int i = 0; i < 6; ++i) {
    CurlResponse r = Get("/search", {"X-Api-Key: admin-key"});
    ASSERT_EQ(r.status, 200) << "request " << i;
    EXPECT_EQ(r.Header("ratelimit-limit"), "");
  }
  EXPECT_EQ(Decisions(), before);
  EXPECT_EQ(Get("/search", {"X-Api-Key: k1"}).status, 200);
  EXPECT_EQ(Decisions(), before + 2);  // burst + sustained, one batch
}

// Verifies a trusted proxy's X-Forwarded-For picks the bucket (right-most
// untrusted entry), so a forged left-most entry does not escape the limit.
TEST_F(HttplibAppTest, TrustedProxyForwardedFor) {
  StartApp({"--trusted-proxy", "127.0.0.1"});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Get("/search", {"X-Forwarded-For: 198.51.100.1"}).status, 200);
  }
  EXPECT_EQ(Get("/search", {"X-Forwarded-For: 198.51.100.1"}).status, 429);
  EXPECT_EQ(Get("/search", {"X-Forwarded-For: 198.51.100.2"}).status, 200);
  EXPECT_EQ(Get("/search", {"X-Forwarded-For: 203.0.113.66, 198.51.100.1"}).status, 429);
}

// Verifies X-Forwarded-For is ignored from an untrusted peer: a client cannot
// get fresh buckets by forging it.
TEST_F(HttplibAppTest, UntrustedPeerForwardedForIgnored) {
  StartApp({"--trusted-proxy", "10.0.0.0/8"});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Get("/search", {"X-Forwarded-For: 198.51.100." + std::to_string(i)}).status,
              200);
  }
  EXPECT_EQ(Get("/search", {"X-Forwarded-For: 198.51.100.99"}).status, 429);
}

// Verifies the path-prefix rule limits /api/ (5/min) and a path no rule matches
// is never throttled and carries no RateLimit-* headers.
TEST_F(HttplibAppTest, MiddlewarePrefixRuleAndUnmatchedPath) {
  StartApp();
  for (int i = 1; i <= 5; ++i) {
    CurlResponse r = Get("/api/items");
    ASSERT_EQ(r.status, 200) << "request " << i;
    EXPECT_EQ(r.Header("ratelimit-limit"), "5");
    EXPECT_EQ(r.Header("ratelimit-remaining"), std::to_string(5 - i));
  }
  CurlResponse refused = Get("/api/items");
  EXPECT_EQ(refused.status, 429);
  EXPECT_THAT(refused.Header("retry-after"), AnyOf("11", "12"));
  const double before = Decisions();
  for (int i = 0; i < 8; ++i) {
    CurlResponse r = Get("/health");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.Header("ratelimit-limit"), "");
  }
  EXPECT_EQ(Decisions(), before);
}

// Verifies all-match (default): a POST to /api/ is checked by "writes" (2/min)
// and "api" (5/min) together, all or nothing: the 3rd POST, refused by
// "writes", takes no token from "api".
TEST_F(HttplibAppTest, MiddlewareAllMatch) {
  StartApp();
  for (int i = 1; i <= 2; ++i) {
    CurlResponse r = Get("/api/orders", {}, "POST");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.Header("ratelimit-limit"), "2");  // the tighter of the two
  }
  CurlResponse refused = Get("/api/orders", {}, "POST");
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.Header("ratelimit-limit"), "2");
  CurlResponse get = Get("/api/orders");
  EXPECT_EQ(get.status, 200);
  EXPECT_EQ(get.Header("ratelimit-limit"), "5");
  EXPECT_EQ(get.Header("ratelimit-remaining"), "2");  // 2 allowed POSTs + this GET
}

// Verifies first-match: a POST to /api/ is checked by "writes" only, so "api"
// is not charged by the POSTs.
TEST_F(HttplibAppTest, MiddlewareFirstMatch) {
  StartApp({"--first-match"});
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Get("/api/orders", {}, "POST").status, 200);
  EXPECT_EQ(Get("/api/orders", {}, "POST").status, 429);
  CurlResponse get = Get("/api/orders");
  EXPECT_EQ(get.status, 200);
  EXPECT_EQ(get.Header("ratelimit-limit"), "5");
  EXPECT_EQ(get.Header("ratelimit-remaining"), "4");
}

// Verifies the regex rule (^/static/, 10/min) and the hook rule (X-Expensive,
// 1/min) match as documented.
TEST_F(HttplibAppTest, MiddlewareRegexAndHookRules) {
  StartApp();
  CurlResponse asset = Get("/static/app.css");
  EXPECT_EQ(asset.status, 200);
  EXPECT_EQ(asset.Header("ratelimit-limit"), "10");
  EXPECT_EQ(Get("/api/report", {"X-Expensive: 1"}).status, 200);
  CurlResponse refused = Get("/api/report", {"X-Expensive: 1"});
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.Header("ratelimit-limit"), "1");
  EXPECT_THAT(refused.Header("retry-after"), AnyOf("59", "60"));
  EXPECT_EQ(Get("/api/report").status, 200);  // without the header the hook rule is off
}

// The statuses of `count` GET requests to `path` with `headers`.
std::vector<long> Statuses(int port, const std::string& path, int count,
                           const std::vector<std::string>& headers = {}) {
  std::vector<long> statuses;
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<CurlResponse> r = Curl(port, path, headers);
    statuses.push_back(r.ok() ? r->status : -1);
  }
  return statuses;
}

// Verifies, under the app's `allow` policy, a 5000-byte X-Api-Key and a 5000-byte
// path are throttled normally (the "api" rule: 5 per minute, then 429) instead of
// failing open on traffikd's INVALID_ARGUMENT: the client sends their digest.
TEST_F(HttplibAppTest, OversizedKeyAndPathThrottledUnderAllow) {
  ASSERT_NO_FATAL_FAILURE(StartApp({"--failure-policy", "allow"}));
  const std::vector<long> five_ok = {200, 200, 200, 200, 200, 429, 429};
  EXPECT_EQ(Statuses(app_->port(), "/api/x", 7, {"X-Api-Key: " + std::string(5000, 'k')}),
            five_ok);
  EXPECT_EQ(Statuses(app_->port(), "/api/" + std::string(5000, 'p'), 7), five_ok)
      << app_->Output();
}

// Verifies a binary ("\xff") X-Api-Key never fails open under `allow`: traffikd
// either throttles it (identifiers are bytes: 429 after 5) or rejects it, and a
// rejection is answered 500, never let through. Tolerant of both until traffikd's
// `identifier` field is `bytes`.
TEST_F(HttplibAppTest, BinaryKeyNeverFailsOpenUnderAllow) {
  ASSERT_NO_FATAL_FAILURE(StartApp({"--failure-policy", "allow"}));
  const std::vector<long> statuses =
      Statuses(app_->port(), "/api/x", 8, {"X-Api-Key: \xff\xfe"});
  for (size_t i = 0; i < statuses.size(); ++i) {
    if (i < 5) {
      EXPECT_THAT(statuses[i], AnyOf(200, 500)) << i;
    } else {
      EXPECT_THAT(statuses[i], AnyOf(429, 500)) << i;
    }
  }
}

// Verifies spellings of one route share one bucket and one middleware rule: 5
// requests spread over /api/x, /api//x, /api/./x, /api/x/ and /api/y/../x take the
// "api" rule's 5 tokens, then every spelling (also //api/x and /%61pi/x) gets 429.
TEST_F(HttplibAppTest, PathSpellingsShareOneBucket) {
  ASSERT_NO_FATAL_FAILURE(StartApp());
  for (const std::string path :
       {"/api/x", "/api//x", "/api/./x", "/api/x/", "/api/y/../x"}) {
    EXPECT_EQ(Get(path).status, 200) << path;
  }
  for (const std::string path :
       {"/api/x", "/api//x", "/api/./x", "/api/x/", "/api/y/../x", "/%61pi/x"}) {
    EXPECT_EQ(Get(path).status, 429) << path;
  }
}

// Verifies request bodies are bounded (default 64 KiB): a 1 MiB POST gets 413, a small
// one is served.
TEST_F(HttplibAppTest, BodyOverLimitGets413) {
  ASSERT_NO_FATAL_FAILURE(StartApp());
  // Not form-encoded: httplib caps those at 8 KiB on its own.
  const std::vector<std::string> binary = {"Content-Type: application/octet-stream"};
  absl::StatusOr<CurlResponse> small =
      Curl(app_->port(), "/api/a", binary, "POST", std::string(60'000, 's'));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->status, 200);
  absl::StatusOr<CurlResponse> big =
      Curl(app_->port(), "/api/b", binary, "POST", std::string(1 << 20, 'b'));
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->status, 413);
}

// Verifies with traffikd down each failure policy answers quickly: allow ->
// 200, deny -> 429 with Retry-After, raise -> 503.
TEST_F(HttplibAppTest, TraffikdDownFailurePolicies) {
  const std::string down = "127.0.0.1:" + std::to_string(UnusedPort());
  struct Case {
    std::string policy;
    long status;
  };
  for (const Case& c : {Case{"allow", 200}, Case{"deny", 429}, Case{"raise", 503}}) {
    SCOPED_TRACE(c.policy);
    StartApp({"--failure-policy", c.policy, "--deadline-ms", "300"}, down);
    for (int i = 0; i < 3; ++i) {
      CurlResponse r = Get("/search");
      EXPECT_EQ(r.status, c.status) << r.body;
      EXPECT_LT(r.elapsed, milliseconds(1500));
      if (c.policy == "deny") {
        EXPECT_EQ(r.Header("retry-after"), "1");
      }
    }
  }
}

// Verifies a traffikd that accepts TCP but never answers is bounded by the
// client deadline (raise -> 503 within about the deadline).
TEST_F(HttplibAppTest, HungTraffikdBoundedByDeadline) {
  absl::StatusOr<e2e::HeldPort> held = e2e::HeldPort::Listen();
  ASSERT_TRUE(held.ok()) << held.status();
  StartApp({"--failure-policy", "raise", "--deadline-ms", "300"},
           "127.0.0.1:" + std::to_string(held->port()));
  CurlResponse r = Get("/search");
  EXPECT_EQ(r.status, 503);
  EXPECT_LT(r.elapsed, milliseconds(1500));
}

}  // namespace
}  // namespace traffik::http_e2e
