// Unit tests of ThrottleMiddleware and PathMatcher (traffik/middleware.h) with
// a fake Client.

#include "traffik/middleware.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/fake_client.h"

namespace traffik {
namespace {

using ::testing::ElementsAre;
using ::traffik::testing::FakeClient;

HttpRequest Request(std::string method, std::string path, HttpHeaders headers = {}) {
  HttpRequest r;
  r.method = std::move(method);
  r.path = std::move(path);
  r.peer_address = "192.0.2.1";
  r.headers = std::move(headers);
  return r;
}

HttpThrottle T(std::string uid) { return HttpThrottle({.uid = std::move(uid)}); }

std::vector<std::string> Uids(const std::vector<HttpThrottle>& throttles) {
  std::vector<std::string> uids;
  for (const HttpThrottle& t : throttles) uids.push_back(t.uid());
  return uids;
}

class PathMatcherTest : public ::testing::Test {};

// Verifies a prefix matches paths starting with it and nothing else.
TEST_F(PathMatcherTest, Prefix) {
  PathMatcher m = PathMatcher::Prefix("/api/");
  EXPECT_TRUE(m.Matches("/api/users"));
  EXPECT_TRUE(m.Matches("/api/"));
  EXPECT_FALSE(m.Matches("/apiv2/users"));
  EXPECT_FALSE(m.Matches("/x/api/"));
}

// Verifies a regex is searched in the path (anchor with ^) and the default matches all.
TEST_F(PathMatcherTest, RegexAndAny) {
  PathMatcher anchored = PathMatcher::Regex("^/(static|assets)/").value();
  EXPECT_TRUE(anchored.Matches("/static/app.js"));
  EXPECT_FALSE(anchored.Matches("/api/static/x"));
  PathMatcher anywhere = PathMatcher::Regex(R"(\.png$)").value();
  EXPECT_TRUE(anywhere.Matches("/img/a.png"));
  EXPECT_TRUE(PathMatcher().Matches("/anything"));
}

// Verifies an invalid regex is kInvalidArgument, not an exception.
TEST_F(PathMatcherTest, InvalidRegex) {
  absl::StatusOr<PathMatcher> m = PathMatcher::Regex("([a-z");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
}

class ThrottleMiddlewareTest : public ::testing::Test {
 protected:
  std::vector<MiddlewareRule> Rules() {
    return {
        {.throttle = T("writes"), .methods = {"POST", "PUT", "DELETE"}},
        {.throttle = T("api"), .path = PathMatcher::Prefix("/api/")},
        {.throttle = T("assets"),
         .path = PathMatcher::Regex("^/(static|assets)/").value()},
        {.throttle = T("expensive"),
         .path = PathMatcher::Prefix("/api/"),
         .hook =
             [](const HttpRequest& r) { return r.Header("X-Expensive").has_value(); }},
    };
  }
  std::shared_ptr<FakeClient> client_ = std::make_shared<FakeClient>();
};

// Verifies all-match (the default) applies every matching rule, in rule order.
TEST_F(ThrottleMiddlewareTest, AllMatchAppliesEveryMatchingRule) {
  ThrottleMiddleware m(HttpThrottler(client_), Rules());
  EXPECT_THAT(
      Uids(m.MatchingThrottles(Request("POST", "/api/x", {{"X-Expensive", "1"}}))),
      ElementsAre("writes", "api", "expensive"));
  EXPECT_THAT(Uids(m.MatchingThrottles(Request("GET", "/api/x"))), ElementsAre("api"));
  EXPECT_THAT(Uids(m.MatchingThrottles(Request("GET", "/static/a.css"))),
              ElementsAre("assets"));
  EXPECT_TRUE(m.MatchingThrottles(Request("GET", "/home")).empty());
}

// Verifies rules match the normalized path: no spelling of an /api/ path (doubled
// slashes, dot segments, percent-encoded letters) escapes the Prefix("/api/") rule,
// and "/api/" itself still matches it.
TEST_F(ThrottleMiddlewareTest, RulesMatchNormalizedPath) {
  ThrottleMiddleware m(HttpThrottler(client_), Rules());
  for (const char* path : {"/api/x", "//api/x", "/./api/x", "/%61pi/x",
                           "/static/../api/x", "/api//x/", "/api/"}) {
    EXPECT_THAT(Uids(m.MatchingThrottles(Request("GET", path))), ElementsAre("api"))
        << path;
  }
  EXPECT_THAT(Uids(m.MatchingThrottles(Request("GET", "/api/../static/a.css"))),
              ElementsAre("assets"));
  EXPECT_TRUE(m.MatchingThrottles(Request("GET", "/apix")).empty());
}

// Verifies first-match applies only the first matching rule.
TEST_F(ThrottleMiddlewareTest, FirstMatchAppliesFirstRuleOnly) {
  ThrottleMiddleware m(HttpThrottler(client_), Rules(), {.mode = MatchMode::kFirstMatch});
  EXPECT_THAT(
      Uids(m.MatchingThrottles(Request("POST", "/api/x", {{"X-Expensive", "1"}}))),
      ElementsAre("writes"));
  EXPECT_THAT(Uids(m.MatchingThrottles(Request("GET", "/api/x", {{"X-Expensive", "1"}}))),
              ElementsAre("api"));
}

// Verifies rule criteria are AND-ed: path, method set (case-insensitive) and hook.
TEST_F(ThrottleMiddlewareTest, CriteriaAreAnded) {
  int hook_calls = 0;
  ThrottleMiddleware m(HttpThrottler(client_),
                       {{.throttle = T("r"),
                         .path = PathMatcher::Prefix("/api/"),
                         .methods = {"POST"},
                         .hook = [&](const HttpRequest& r) {
                           ++hook_calls;
                           return r.Header("Authorization").has_value();
                         }}});
  EXPECT_TRUE(
      m.MatchingThrottles(Request("GET", "/api/x", {{"Authorization", "b"}})).empty());
  EXPECT_TRUE(
      m.MatchingThrottles(Request("POST", "/web", {{"Authorization", "b"}})).empty());
  EXPECT_EQ(hook_calls, 0);  // hook only runs once path and method match
  EXPECT_TRUE(m.MatchingThrottles(Request("POST", "/api/x")).empty());
  EXPECT_THAT(
      Uids(m.MatchingThrottles(Request("post", "/api/x", {{"Authorization", "b"}}))),
      ElementsAre("r"));
  EXPECT_EQ(hook_calls, 2);
}

// Verifies no matching rule means allowed, exempt and no RPC.
TEST_F(ThrottleMiddlewareTest, NoMatchNoRpc) {
  ThrottleMiddleware m(HttpThrottler(client_), Rules());
  HttpRequest r = Request("GET", "/home");
  HttpVerdict v = m.Check(r);
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(v.exempt);
  EXPECT_EQ(client_->rpc_count(), 0u);
}

// Verifies all-match decides the matching throttles in one batch and the longest wait
// wins.
TEST_F(ThrottleMiddlewareTest, AllMatchOneBatchLongestWait) {
  client_->set_responder([](const ThrottleRequest& r) {
    if (r.throttle_uid == "writes")
      return FakeClient::Refused(std::chrono::milliseconds(2000));
    if (r.throttle_uid == "api")
      return FakeClient::Refused(std::chrono::milliseconds(9000));
    return FakeClient::Allowed();
  });
  ThrottleMiddleware m(HttpThrottler(client_), Rules());
  HttpRequest r = Request("POST", "/api/x");
  HttpVerdict v = m.Check(r);
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_TRUE(client_->calls()[0].batch);
  EXPECT_EQ(client_->calls()[0].requests.size(), 2u);
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.response->Header("Retry-After"), "9");
}

// Verifies in first-match mode an exempting (kUnlimited) first rule exempts the request.
TEST_F(ThrottleMiddlewareTest, FirstMatchExemptRuleStops) {
  HttpThrottle admin_exempt(
      {.uid = "admin",
       .identifier = [](const HttpRequest&) -> Identifier { return kUnlimited; }});
  ThrottleMiddleware m(
      HttpThrottler(client_),
      {{.throttle = admin_exempt, .path = PathMatcher::Prefix("/admin/")},
       {.throttle = T("all")}},
      {.mode = MatchMode::kFirstMatch});
  HttpRequest admin = Request("GET", "/admin/x");
  EXPECT_TRUE(m.Check(admin).exempt);
  EXPECT_EQ(client_->rpc_count(), 0u);
  HttpRequest other = Request("GET", "/other");
  EXPECT_FALSE(m.Check(other).exempt);
  EXPECT_EQ(client_->rpc_count(), 1u);
}

// Verifies hooks see the client address resolved through trusted proxies.
TEST_F(ThrottleMiddlewareTest, HooksSeeResolvedClientAddress) {
  std::string seen;
  ThrottleMiddleware m(
      HttpThrottler(client_,
                    {.trusted_proxies = TrustedProxies::Parse({"192.0.2.1"}).value()}),
      {{.throttle = T("r"), .hook = [&](const HttpRequest& r) {
          seen = r.client_address;
          return true;
        }}});
  HttpRequest r = Request("GET", "/", {{"X-Forwarded-For", "203.0.113.5"}});
  m.Check(r);
  EXPECT_EQ(seen, "203.0.113.5");
}

// Verifies CheckAsync applies the same rules as Check.
TEST_F(ThrottleMiddlewareTest, AsyncMatchesSync) {
  ThrottleMiddleware m(HttpThrottler(client_), Rules());
  std::optional<HttpVerdict> got;
  m.CheckAsync(Request("DELETE", "/api/x"), [&](HttpVerdict v) { got = std::move(v); });
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->allowed);
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_EQ(client_->calls()[0].requests.size(), 2u);
}

}  // namespace
}  // namespace traffik
