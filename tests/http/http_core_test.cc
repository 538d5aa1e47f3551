// Unit tests of the framework-agnostic HTTP core (traffik/http.h) with a fake
// Client: identifiers, trusted proxies, kUnlimited, headers, several
// throttles, failure policies, the decorator.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/fake_client.h"
#include "traffik/http.h"

namespace traffik {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::Pair;
using ::traffik::testing::FakeClient;

HttpRequest Request(std::string path, std::string peer, HttpHeaders headers = {},
                    std::string method = "GET") {
  HttpRequest r;
  r.method = std::move(method);
  r.path = std::move(path);
  r.peer_address = std::move(peer);
  r.headers = std::move(headers);
  return r;
}

TrustedProxies Trust(const std::vector<std::string>& entries) {
  absl::StatusOr<TrustedProxies> parsed = TrustedProxies::Parse(entries);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : TrustedProxies();
}

HttpThrottle Inline(std::string uid, uint64_t limit = 5,
                    milliseconds period = seconds(10)) {
  return HttpThrottle({.uid = std::move(uid), .spec = ThrottleSpec{limit, period}});
}

// ------------------------------------------------------------------ requests

class HttpRequestTest : public ::testing::Test {};

// Verifies header lookup is case-insensitive and joins repeated fields with ", ".
TEST_F(HttpRequestTest, HeaderIsCaseInsensitiveAndJoinsRepeats) {
  HttpRequest r = Request(
      "/", "1.2.3.4", {{"x-forwarded-for", "1.1.1.1"}, {"X-Forwarded-For", "2.2.2.2"}});
  EXPECT_EQ(r.Header("X-FORWARDED-FOR"), "1.1.1.1, 2.2.2.2");
  EXPECT_EQ(r.Header("Authorization"), std::nullopt);
}

// Verifies query and form parameters are decoded ("+", %XX), the first value wins,
// form fields need a form Content-Type, and route parameters are found by name.
TEST_F(HttpRequestTest, QueryFormAndRouteParams) {
  HttpRequest r;
  r.query = "a=1&q=x%20y+z&a=2&flag&bad=%zz";
  EXPECT_EQ(r.QueryParam("a"), "1");
  EXPECT_EQ(r.QueryParam("q"), "x y z");
  EXPECT_EQ(r.QueryParam("flag"), "");
  EXPECT_EQ(r.QueryParam("bad"), "%zz");
  EXPECT_EQ(r.QueryParam("none"), std::nullopt);
  const std::string body = "username=al%69ce&password=p";
  r.body = body;
  EXPECT_EQ(r.FormParam("username"), std::nullopt);  // no Content-Type
  r.headers = {{"content-type", "application/x-www-form-urlencoded; charset=utf-8"}};
  EXPECT_EQ(r.FormParam("username"), "alice");
  r.headers = {{"Content-Type", "application/x-www-form-urlencodedx"}};
  EXPECT_EQ(r.FormParam("username"), std::nullopt);
  r.route_params = {{"id", "42"}, {"1", "42"}};
  EXPECT_EQ(r.RouteParam("id"), "42");
  EXPECT_EQ(r.RouteParam("2"), std::nullopt);
}

// Verifies SetHeader replaces a field case-insensitively instead of adding a second one.
TEST_F(HttpRequestTest, ResponseSetHeaderReplaces) {
  HttpResponse response;
  response.SetHeader("retry-after", "1");
  response.SetHeader("Retry-After", "2");
  EXPECT_THAT(response.headers, ElementsAre(Pair("Retry-After", "2")));
}

// ---------------------------------------------------------------- identifiers

class DefaultIdentifierTest : public ::testing::Test {};

// Verifies the default identifier is "<client address>:<path>".
TEST_F(DefaultIdentifierTest, ClientAddressAndPath) {
  HttpRequest r = Request("/api/search", "203.0.113.9");
  r.client_address = "203.0.113.9";
  EXPECT_EQ(DefaultHttpIdentifier(r).value(), "203.0.113.9:/api/search");
}

// Verifies the route pattern, when the adapter knows it, replaces the path.
TEST_F(DefaultIdentifierTest, RouteWinsOverPath) {
  HttpRequest r = Request("/users/42", "10.0.0.1");
  r.route = "/users/:id";
  EXPECT_EQ(DefaultHttpIdentifier(r).value(), "10.0.0.1:/users/:id");
}

// Verifies a request without any address is identified as "unknown", never "".
TEST_F(DefaultIdentifierTest, NoAddressIsUnknown) {
  EXPECT_EQ(DefaultHttpIdentifier(Request("/x", "")).value(), "unknown:/x");
}

// Verifies the default identifier uses the normalized path: every spelling of one
// path (doubled slashes, dot segments, a trailing slash, percent-encoded unreserved
// characters) is one bucket.
TEST_F(DefaultIdentifierTest, NormalizesPath) {
  for (const char* path : {"/api/x", "/api//x", "/api/./x", "/api/x/", "/api/y/../x",
                           "/%61pi/%78", "//api///x//", "/api/x/."}) {
    EXPECT_EQ(DefaultHttpIdentifier(Request(path, "10.0.0.1")).value(), "10.0.0.1:/api/x")
        << path;
  }
  EXPECT_EQ(DefaultHttpIdentifier(Request("/api/X", "10.0.0.1")).value(),
            "10.0.0.1:/api/X");  // case is kept
}

class NormalizeHttpPathTest : public ::testing::Test {};

// Verifies each documented rule of NormalizeHttpPath, with both trailing-slash modes.
TEST_F(NormalizeHttpPathTest, DocumentedRules) {
  struct Case {
    std::string in;
    std::string removed;  // TrailingSlash::kRemove
    std::string kept;     // TrailingSlash::kKeep
  };
  for (const Case& c : std::vector<Case>{
           {"", "/", "/"},
           {"/", "/", "/"},
           {"//", "/", "/"},
           {"/api/x", "/api/x", "/api/x"},
           {"/api/x/", "/api/x", "/api/x/"},
           {"/api/", "/api", "/api/"},
           {"api/x", "/api/x", "/api/x"},
           {"/api//x", "/api/x", "/api/x"},
           {"/api/./x", "/api/x", "/api/x"},
           {"/api/y/../x", "/api/x", "/api/x"},
           {"/../../x", "/x", "/x"},
           {"/api/x/..", "/api", "/api/"},
           {"/api/x/.", "/api/x", "/api/x/"},
           {"/a/.../b", "/a/.../b", "/a/.../b"},  // "..." is an ordinary segment
           {"/%61%70%69/%7E%2d%2E%5f", "/api/~-._", "/api/~-._"},
           {"/api/%2e%2e/x", "/x", "/x"},   // decoded dot segments count
           {"/a%2fb", "/a%2Fb", "/a%2Fb"},  // an encoded slash stays encoded
           {"/a%2Fb/%c3%a9", "/a%2Fb/%C3%A9", "/a%2Fb/%C3%A9"},
           {"/a%zz/%4", "/a%zz/%4", "/a%zz/%4"},  // invalid escapes kept
           {"/a%", "/a%", "/a%"},
           {std::string("/\xff/x", 4), std::string("/\xff/x", 4),
            std::string("/\xff/x", 4)},
       }) {
    EXPECT_EQ(NormalizeHttpPath(c.in), c.removed) << c.in;
    EXPECT_EQ(NormalizeHttpPath(c.in, TrailingSlash::kKeep), c.kept) << c.in;
  }
}

// Verifies normalization is linear and bounded on a hostile path (100k segments).
TEST_F(NormalizeHttpPathTest, LongHostilePath) {
  std::string path;
  for (int i = 0; i < 100'000; ++i) path += "/a/..";
  EXPECT_EQ(NormalizeHttpPath(path + "/x"), "/x");
  EXPECT_EQ(NormalizeHttpPath(std::string(200'000, '/')), "/");
}

// Verifies kUnlimited converts to an unlimited Identifier and strings do not.
TEST_F(DefaultIdentifierTest, UnlimitedSentinel) {
  Identifier unlimited = kUnlimited;
  Identifier key = "user:1";
  EXPECT_TRUE(unlimited.unlimited());
  EXPECT_FALSE(key.unlimited());
  EXPECT_EQ(key.value(), "user:1");
}

// ------------------------------------------------------------ trusted proxies

class TrustedProxiesTest : public ::testing::Test {};

// Verifies exact IPv4/IPv6 entries and CIDR blocks match exactly their addresses.
TEST_F(TrustedProxiesTest, ExactAndCidr) {
  TrustedProxies t =
      Trust({"10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8", "172.16.0.0/12"});
  EXPECT_TRUE(t.Contains("10.255.1.2"));
  EXPECT_FALSE(t.Contains("11.0.0.1"));
  EXPECT_TRUE(t.Contains("192.168.1.7"));
  EXPECT_FALSE(t.Contains("192.168.1.8"));
  EXPECT_TRUE(t.Contains("::1"));
  EXPECT_TRUE(t.Contains("fd12:3456::1"));
  EXPECT_FALSE(t.Contains("fe80::1"));
  EXPECT_TRUE(t.Contains("172.31.255.255"));
  EXPECT_FALSE(t.Contains("172.32.0.0"));
  EXPECT_FALSE(t.Contains("not-an-ip"));
}

// Verifies IPv4-mapped IPv6 peers match IPv4 entries, and bracket/port forms parse.
TEST_F(TrustedProxiesTest, MappedBracketsAndPorts) {
  TrustedProxies t = Trust({"127.0.0.1"});
  EXPECT_TRUE(t.Contains("::ffff:127.0.0.1"));
  EXPECT_TRUE(t.Contains("127.0.0.1:5000"));
  EXPECT_TRUE(Trust({"::1"}).Contains("[::1]:443"));
}

// Verifies /0 trusts everything of that family and non-byte prefixes mask correctly.
TEST_F(TrustedProxiesTest, PrefixEdgeCases) {
  TrustedProxies all_v4 = Trust({"0.0.0.0/0"});
  EXPECT_TRUE(all_v4.Contains("8.8.8.8"));
  EXPECT_FALSE(all_v4.Contains("2001:db8::1"));
  TrustedProxies odd = Trust({"10.0.0.0/9"});
  EXPECT_TRUE(odd.Contains("10.127.0.1"));
  EXPECT_FALSE(odd.Contains("10.128.0.1"));
}

// Verifies bad entries are rejected with kInvalidArgument naming the entry.
TEST_F(TrustedProxiesTest, RejectsBadEntries) {
  for (const std::string bad : {"10.0.0.0/33", "::/129", "banana", "10.0.0.1/",
                                "10.0.0.1/x", "1.2.3.4:80", "[::1]", ""}) {
    absl::StatusOr<TrustedProxies> parsed = TrustedProxies::Parse({bad});
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(parsed.status().message()), ::testing::HasSubstr(bad));
  }
}

class ClientAddressTest : public ::testing::Test {};

// Verifies X-Forwarded-For is ignored when no proxy is trusted (no spoofing).
TEST_F(ClientAddressTest, IgnoresForwardedWithoutTrustedProxies) {
  HttpRequest r = Request("/", "198.51.100.7", {{"X-Forwarded-For", "1.1.1.1"}});
  EXPECT_EQ(ClientAddress(r, TrustedProxies()), "198.51.100.7");
}

// Verifies X-Forwarded-For is ignored when the peer is not a trusted proxy.
TEST_F(ClientAddressTest, IgnoresForwardedFromUntrustedPeer) {
  HttpRequest r = Request("/", "198.51.100.7", {{"X-Forwarded-For", "1.1.1.1"}});
  EXPECT_EQ(ClientAddress(r, Trust({"10.0.0.0/8"})), "198.51.100.7");
}

// Verifies a trusted peer's X-Forwarded-For gives the right-most untrusted entry.
TEST_F(ClientAddressTest, RightMostUntrustedEntry) {
  TrustedProxies t = Trust({"10.0.0.0/8"});
  // The client forged "6.6.6.6"; the edge proxy appended the real 1.1.1.1,
  // an inner proxy 10.0.0.5 appended its own hop.
  HttpRequest r =
      Request("/", "10.0.0.9", {{"X-Forwarded-For", "6.6.6.6, 1.1.1.1, 10.0.0.5"}});
  EXPECT_EQ(ClientAddress(r, t), "1.1.1.1");
}

// Verifies several X-Forwarded-For fields are read as one chain, in order.
TEST_F(ClientAddressTest, SeveralForwardedFields) {
  HttpRequest r = Request(
      "/", "10.0.0.9", {{"X-Forwarded-For", "6.6.6.6"}, {"X-Forwarded-For", "2.2.2.2"}});
  EXPECT_EQ(ClientAddress(r, Trust({"10.0.0.0/8"})), "2.2.2.2");
}

// Verifies an all-trusted chain yields its left-most entry.
TEST_F(ClientAddressTest, AllTrustedGivesLeftMost) {
  HttpRequest r = Request("/", "10.0.0.9", {{"X-Forwarded-For", "10.1.1.1, 10.2.2.2"}});
  EXPECT_EQ(ClientAddress(r, Trust({"10.0.0.0/8"})), "10.1.1.1");
}

// Verifies a garbage entry is never used: the last trusted hop is the client.
TEST_F(ClientAddressTest, GarbageEntryStopsAtLastTrustedHop) {
  HttpRequest r =
      Request("/", "10.0.0.9", {{"X-Forwarded-For", "1.1.1.1, evil, 10.0.0.4"}});
  EXPECT_EQ(ClientAddress(r, Trust({"10.0.0.0/8"})), "10.0.0.4");
}

// Verifies a trusted peer without X-Forwarded-For is itself the client.
TEST_F(ClientAddressTest, TrustedPeerWithoutHeader) {
  EXPECT_EQ(ClientAddress(Request("/", "10.0.0.9"), Trust({"10.0.0.0/8"})), "10.0.0.9");
}

// Verifies addresses are normalized (mapped IPv4, IPv6 spelling, ports).
TEST_F(ClientAddressTest, Normalizes) {
  EXPECT_EQ(ClientAddress(Request("/", "::ffff:192.0.2.1"), {}), "192.0.2.1");
  EXPECT_EQ(ClientAddress(Request("/", "2001:DB8:0:0::1"), {}), "2001:db8::1");
  HttpRequest r = Request("/", "127.0.0.1",
                          {{"X-Forwarded-For", "[2001:db8::7]:1234, 192.0.2.9:80"}});
  EXPECT_EQ(ClientAddress(r, Trust({"127.0.0.1", "192.0.2.9"})), "2001:db8::7");
}

// -------------------------------------------------------------------- headers

class HeadersTest : public ::testing::Test {};

// Verifies Retry-After rounds up to whole seconds and is at least 1.
TEST_F(HeadersTest, RetryAfterRounding) {
  EXPECT_EQ(RetryAfterSeconds(milliseconds(0)), 1);
  EXPECT_EQ(RetryAfterSeconds(milliseconds(1)), 1);
  EXPECT_EQ(RetryAfterSeconds(milliseconds(999)), 1);
  EXPECT_EQ(RetryAfterSeconds(milliseconds(1000)), 1);
  EXPECT_EQ(RetryAfterSeconds(milliseconds(1001)), 2);
  EXPECT_EQ(RetryAfterSeconds(milliseconds(19962)), 20);
}

// Verifies RateLimit-* carry limit, remaining and the reset rounded up in seconds.
TEST_F(HeadersTest, RateLimitHeaders) {
  EXPECT_THAT(RateLimitHeaders(FakeClient::Allowed(3, 2, milliseconds(20001))),
              ElementsAre(Pair("RateLimit-Limit", "3"), Pair("RateLimit-Remaining", "2"),
                          Pair("RateLimit-Reset", "21")));
  EXPECT_TRUE(RateLimitHeaders(ThrottleResult{}).empty());  // unknown limit
}

// Verifies the default 429 has Retry-After, RateLimit-* and a body with the wait.
TEST_F(HeadersTest, TooManyRequests) {
  HttpResponse r =
      TooManyRequests(FakeClient::Refused(milliseconds(2500), 5, seconds(10)));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.Header("Retry-After"), "3");
  EXPECT_EQ(r.Header("RateLimit-Limit"), "5");
  EXPECT_EQ(r.Header("RateLimit-Remaining"), "0");
  EXPECT_EQ(r.Header("RateLimit-Reset"), "10");
  EXPECT_EQ(r.body, "rate limited; retry in 3s\n");
}

// ------------------------------------------------------------------ throttler

class HttpThrottlerTest : public ::testing::Test {
 protected:
  std::shared_ptr<FakeClient> client_ = std::make_shared<FakeClient>();
};

// Verifies one throttle sends one Check with uid, spec, cost, tenant and the default
// identifier.
TEST_F(HttpThrottlerTest, SingleThrottleRequestFields) {
  HttpThrottler throttler(client_);
  HttpThrottle t({.uid = "search",
                  .spec = ThrottleSpec{5, seconds(10)},
                  .cost = 2,
                  .tenant = "gold",
                  .failure_policy = FailurePolicy::kDeny});
  HttpRequest r = Request("/search", "203.0.113.9");
  HttpVerdict v = throttler.Check(r, {t});
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.exempt);
  ASSERT_EQ(client_->rpc_count(), 1u);
  FakeClient::Call call = client_->calls()[0];
  EXPECT_FALSE(call.batch);
  EXPECT_EQ(call.policy, FailurePolicy::kDeny);
  ASSERT_EQ(call.requests.size(), 1u);
  EXPECT_EQ(call.requests[0].identifier, "203.0.113.9:/search");
  EXPECT_EQ(call.requests[0].throttle_uid, "search");
  EXPECT_EQ(call.requests[0].tenant, "gold");
  EXPECT_EQ(call.requests[0].cost, 2u);
  ASSERT_TRUE(call.requests[0].spec.has_value());
  EXPECT_EQ(call.requests[0].spec->limit, 5u);
  EXPECT_EQ(call.requests[0].spec->period, seconds(10));
  EXPECT_EQ(r.client_address, "203.0.113.9");
}

// Verifies a server-configured throttle (no spec) sends no spec.
TEST_F(HttpThrottlerTest, ServerConfiguredSendsNoSpec) {
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/", "1.2.3.4");
  throttler.Check(r, {HttpThrottle({.uid = "api_quota"})});
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_FALSE(client_->calls()[0].requests[0].spec.has_value());
}

// Verifies allowed verdicts carry the RateLimit-* headers.
TEST_F(HttpThrottlerTest, AllowedCarriesHeaders) {
  client_->set_responder([](const ThrottleRequest&) {
    return FakeClient::Allowed(3, 2, milliseconds(20000));
  });
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {Inline("a")});
  EXPECT_TRUE(v.allowed);
  EXPECT_THAT(v.headers,
              ElementsAre(Pair("RateLimit-Limit", "3"), Pair("RateLimit-Remaining", "2"),
                          Pair("RateLimit-Reset", "20")));
}

// Verifies a refused hit produces the default 429 with Retry-After rounded up.
TEST_F(HttpThrottlerTest, RefusedGives429) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(19962), 3); });
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {Inline("a")});
  ASSERT_FALSE(v.allowed);
  EXPECT_EQ(v.wait, milliseconds(19962));
  ASSERT_TRUE(v.response.has_value());
  EXPECT_EQ(v.response->status, 429);
  EXPECT_EQ(v.response->Header("Retry-After"), "20");
  EXPECT_EQ(v.response->Header("RateLimit-Limit"), "3");
  EXPECT_EQ(v.response->Header("RateLimit-Remaining"), "0");
}

// Verifies a custom identifier returning kUnlimited exempts the request with no RPC at
// all.
TEST_F(HttpThrottlerTest, UnlimitedMakesNoRpc) {
  HttpThrottler throttler(client_);
  HttpThrottle t({.uid = "a",
                  .spec = ThrottleSpec{1, seconds(1)},
                  .identifier = [](const HttpRequest& r) -> Identifier {
                    if (r.Header("X-Api-Key") == "admin") return kUnlimited;
                    return "key:" + r.Header("X-Api-Key").value_or("none");
                  }});
  HttpRequest admin = Request("/", "1.2.3.4", {{"X-Api-Key", "admin"}});
  HttpVerdict v = throttler.Check(admin, {t});
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(v.exempt);
  EXPECT_TRUE(v.headers.empty());
  EXPECT_EQ(client_->rpc_count(), 0u);

  HttpRequest user = Request("/", "1.2.3.4", {{"X-Api-Key", "u1"}});
  throttler.Check(user, {t});
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_EQ(client_->calls()[0].requests[0].identifier, "key:u1");
}

// Verifies the identifier sees the client address resolved through trusted proxies.
TEST_F(HttpThrottlerTest, IdentifierUsesTrustedForwardedAddress) {
  HttpThrottler throttler(client_, {.trusted_proxies = Trust({"127.0.0.1"})});
  HttpRequest via_proxy = Request("/p", "127.0.0.1", {{"X-Forwarded-For", "9.9.9.9"}});
  throttler.Check(via_proxy, {Inline("a")});
  HttpRequest direct = Request("/p", "8.8.8.8", {{"X-Forwarded-For", "9.9.9.9"}});
  throttler.Check(direct, {Inline("a")});
  ASSERT_EQ(client_->rpc_count(), 2u);
  EXPECT_EQ(client_->calls()[0].requests[0].identifier, "9.9.9.9:/p");
  EXPECT_EQ(client_->calls()[1].requests[0].identifier, "8.8.8.8:/p");
}

// Verifies several throttles go in one CheckBatch and the longest wait wins.
TEST_F(HttpThrottlerTest, SeveralThrottlesOneBatchLongestWait) {
  client_->set_responder([](const ThrottleRequest& r) {
    if (r.throttle_uid == "burst") return FakeClient::Refused(milliseconds(1500), 10);
    if (r.throttle_uid == "sustained")
      return FakeClient::Refused(milliseconds(42000), 100);
    return FakeClient::Allowed();
  });
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/search", "1.2.3.4");
  HttpVerdict v =
      throttler.Check(r, {Inline("burst"), Inline("sustained"), Inline("other")});
  ASSERT_EQ(client_->rpc_count(), 1u);
  FakeClient::Call call = client_->calls()[0];
  EXPECT_TRUE(call.batch);
  EXPECT_TRUE(call.all_or_nothing);  // a refusal takes nothing from the others
  ASSERT_EQ(call.requests.size(), 3u);
  EXPECT_EQ(call.requests[0].throttle_uid, "burst");
  EXPECT_EQ(call.requests[1].throttle_uid, "sustained");
  ASSERT_FALSE(v.allowed);
  EXPECT_EQ(v.wait, milliseconds(42000));
  EXPECT_EQ(v.response->Header("Retry-After"), "42");
  EXPECT_EQ(v.response->Header("RateLimit-Limit"), "100");
  EXPECT_EQ(v.results.size(), 3u);
}

// Verifies a single refusing throttle among allowing ones refuses the request.
TEST_F(HttpThrottlerTest, AllMustAllow) {
  client_->set_responder([](const ThrottleRequest& r) {
    if (r.throttle_uid == "sustained") return FakeClient::Refused(milliseconds(10), 100);
    return FakeClient::Allowed();
  });
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {Inline("burst"), Inline("sustained")});
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.response->Header("Retry-After"), "1");
}

// Verifies when all allow, headers come from the throttle with the fewest remaining
// tokens.
TEST_F(HttpThrottlerTest, AllowedHeadersFromTightestThrottle) {
  client_->set_responder([](const ThrottleRequest& r) {
    if (r.throttle_uid == "burst") return FakeClient::Allowed(10, 7, seconds(3));
    return FakeClient::Allowed(100, 2, seconds(100));
  });
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {Inline("burst"), Inline("sustained")});
  EXPECT_TRUE(v.allowed);
  EXPECT_THAT(v.headers, ElementsAre(Pair("RateLimit-Limit", "100"),
                                     Pair("RateLimit-Remaining", "2"),
                                     Pair("RateLimit-Reset", "100")));
}

// Verifies exempt throttles are left out of the batch; one remaining uses plain Check.
TEST_F(HttpThrottlerTest, ExemptThrottlesLeftOutOfBatch) {
  HttpThrottler throttler(client_);
  HttpThrottle exempt({.uid = "x", .identifier = [](const HttpRequest&) -> Identifier {
                         return kUnlimited;
                       }});
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {exempt, Inline("y")});
  EXPECT_FALSE(v.exempt);
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_FALSE(client_->calls()[0].batch);
  EXPECT_EQ(client_->calls()[0].requests[0].throttle_uid, "y");
}

// Verifies a custom on_throttled replaces the 429 and gets the refusing throttle's
// result; with keep_throttled_response it is sent exactly as returned (no Retry-After).
TEST_F(HttpThrottlerTest, CustomOnThrottled) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(3000)); });
  HttpThrottler throttler(client_);
  HttpThrottle t({.uid = "a",
                  .on_throttled =
                      [](const HttpRequest& req, const ThrottleResult& result) {
                        HttpResponse response;
                        response.status = 503;
                        response.content_type = "application/json";
                        response.body = "{\"path\":\"" + req.path + "\",\"wait_ms\":" +
                                        std::to_string(result.wait.count()) + "}";
                        return response;
                      },
                  .keep_throttled_response = true});
  HttpRequest r = Request("/q", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {t});
  ASSERT_FALSE(v.allowed);
  EXPECT_EQ(v.response->status, 503);
  EXPECT_EQ(v.response->body, "{\"path\":\"/q\",\"wait_ms\":3000}");
  EXPECT_FALSE(v.response->Header("Retry-After").has_value());
}

// Verifies an on_throttled response without Retry-After / RateLimit-* gets the refusing
// throttle's, and stale RateLimit-* it set are replaced (whatever it returns).
TEST_F(HttpThrottlerTest, OnThrottledResponseGetsDecisionHeaders) {
  client_->set_responder([](const ThrottleRequest&) {
    return FakeClient::Refused(milliseconds(2500), 4, seconds(9));
  });
  HttpThrottler throttler(client_);
  HttpThrottle t("a", {4, seconds(10)},
                 {.on_throttled = [](const HttpRequest&, const ThrottleResult&) {
                   HttpResponse response;
                   response.status = 429;
                   response.SetHeader("RateLimit-Limit", "100");  // not the deciding one
                   response.SetHeader("ratelimit-remaining", "93");
                   response.body = "slow down";
                   return response;
                 }});
  HttpRequest r = Request("/q", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {t});
  ASSERT_FALSE(v.allowed);
  EXPECT_EQ(v.response->body, "slow down");
  EXPECT_EQ(v.response->Header("Retry-After"), "3");
  EXPECT_EQ(v.response->Header("RateLimit-Limit"), "4");
  EXPECT_EQ(v.response->Header("RateLimit-Remaining"), "0");
  EXPECT_EQ(v.response->Header("RateLimit-Reset"), "9");
  EXPECT_EQ(v.response->headers.size(), 4u);  // replaced, not duplicated
}

// Verifies a kDeny answer (numbers unknown) strips RateLimit-* an on_throttled set, and
// keeps Retry-After.
TEST_F(HttpThrottlerTest, OnThrottledUnknownNumbersDropsRateLimit) {
  ThrottleResult deny;
  deny.wait = seconds(1);
  deny.source = ThrottleResult::Source::kFailurePolicy;
  client_->set_responder([deny](const ThrottleRequest&) { return deny; });
  HttpThrottler throttler(client_);
  HttpThrottle t(
      {.uid = "a", .on_throttled = [](const HttpRequest&, const ThrottleResult&) {
         HttpResponse response;
         response.status = 429;
         response.SetHeader("RateLimit-Limit", "100");
         return response;
       }});
  HttpRequest r = Request("/q", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {t});
  EXPECT_EQ(v.response->Header("Retry-After"), "1");
  EXPECT_FALSE(v.response->Header("RateLimit-Limit").has_value());
}

// Verifies TooManyRequestsWith keeps the default 429's headers and substitutes
// {retry_after} into the JSON body.
TEST_F(HttpThrottlerTest, TooManyRequestsWithJsonBody) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(1500), 3); });
  HttpThrottler throttler(client_);
  HttpThrottle t("login", {3, seconds(60)},
                 {.on_throttled = TooManyRequestsWith(
                      R"({"error":"rate_limited","retry_after":{retry_after}})")});
  HttpRequest r = Request("/login", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {t});
  ASSERT_FALSE(v.allowed);
  EXPECT_EQ(v.response->status, 429);
  EXPECT_EQ(v.response->content_type, "application/json");
  EXPECT_EQ(v.response->body, R"({"error":"rate_limited","retry_after":2})");
  EXPECT_EQ(v.response->Header("Retry-After"), "2");
  EXPECT_EQ(v.response->Header("RateLimit-Limit"), "3");
}

// Verifies one reusable throttle keyed on a form field limits per username; a request
// without the field falls back to the default identifier.
TEST_F(HttpThrottlerTest, FormFieldIdentifierPerUsername) {
  HttpThrottler throttler(client_);
  HttpThrottle login("login", {3, seconds(60)}, {.identifier = ByFormField("username")});
  HttpRequest alice =
      Request("/login", "1.2.3.4",
              {{"Content-Type", "application/x-www-form-urlencoded"}}, "POST");
  const std::string body = "password=x&username=alice%40example.org+b";
  alice.body = body;
  throttler.Check(alice, {login});
  HttpRequest none = Request("/login", "1.2.3.4", {}, "POST");
  throttler.Check(none, {login});
  ASSERT_EQ(client_->rpc_count(), 2u);
  EXPECT_EQ(client_->calls()[0].requests[0].identifier,
            "form:username=alice@example.org b");
  EXPECT_EQ(client_->calls()[1].requests[0].identifier, "1.2.3.4:/login");
}

// Verifies ByClientAddress, ByHeader, ByQueryParam and ByRouteParam keys.
TEST_F(HttpThrottlerTest, ReadyMadeIdentifiers) {
  HttpRequest r = Request("/items/7", "10.0.0.1", {{"X-Api-Key", "k1"}});
  r.query = "page=2&key=a%2Bb";
  r.route_params = {{"1", "7"}};
  EXPECT_EQ(ByClientAddress(r).value(), "ip:10.0.0.1");
  EXPECT_EQ(ByHeader("x-api-key")(r).value(), "header:x-api-key=k1");
  EXPECT_EQ(ByQueryParam("key")(r).value(), "query:key=a+b");
  EXPECT_EQ(ByRouteParam("1")(r).value(), "route:1=7");
  EXPECT_EQ(ByQueryParam("absent")(r).value(), "10.0.0.1:/items/7");
}

// Verifies per-request tenant and cost functions replace the static ones; an empty
// tenant answer keeps the static tenant.
TEST_F(HttpThrottlerTest, PerRequestTenantAndCost) {
  HttpThrottler throttler(client_);
  HttpThrottle upload(
      "upload", {1000, seconds(60)},
      {.tenant = "free",
       .tenant_of = [](const HttpRequest& r) { return r.Header("X-Tier").value_or(""); },
       .cost_of =
           [](const HttpRequest& r) {
             return static_cast<uint32_t>(1 + r.body.size() / 1024);
           }});
  HttpRequest gold = Request("/upload", "1.2.3.4", {{"X-Tier", "gold"}}, "POST");
  const std::string payload(5000, 'x');
  gold.body = payload;
  throttler.Check(gold, {upload});
  HttpRequest plain = Request("/upload", "1.2.3.4", {}, "POST");
  throttler.Check(plain, {upload});
  EXPECT_EQ(client_->calls()[0].requests[0].tenant, "gold");
  EXPECT_EQ(client_->calls()[0].requests[0].cost, 5u);
  EXPECT_EQ(client_->calls()[1].requests[0].tenant, "free");
  EXPECT_EQ(client_->calls()[1].requests[0].cost, 1u);
}

// Verifies identifiers can read the framework's own request via native<T>(), and that
// CheckAsync clears the borrowed parts before the answer (on_throttled sees none).
TEST_F(HttpThrottlerTest, NativeRequestForIdentifiers) {
  struct FrameworkRequest {
    std::string user;
  };
  FrameworkRequest native{"bob"};
  HttpRequest r = Request("/", "1.2.3.4");
  r.set_native(native);
  EXPECT_EQ(r.native<int>(), nullptr);
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(100)); });
  HttpThrottler throttler(client_);
  bool native_in_on_throttled = true;
  HttpThrottle t({.uid = "a",
                  .identifier = [](const HttpRequest& req) -> Identifier {
                    return "user:" + req.native<FrameworkRequest>()->user;
                  },
                  .on_throttled =
                      [&](const HttpRequest& req, const ThrottleResult& result) {
                        native_in_on_throttled =
                            req.native<FrameworkRequest>() != nullptr;
                        return TooManyRequests(result);
                      }});
  throttler.CheckAsync(r, {t}, [](HttpVerdict) {});
  EXPECT_EQ(client_->calls()[0].requests[0].identifier, "user:bob");
  EXPECT_FALSE(native_in_on_throttled);
}

// Verifies MoreRestrictive: fewer remaining wins, ties go to the later reset, headers
// without numbers never win.
TEST_F(HttpThrottlerTest, MoreRestrictiveHeaders) {
  const HttpHeaders a = {{"RateLimit-Remaining", "3"}, {"RateLimit-Reset", "5"}};
  const HttpHeaders b = {{"ratelimit-remaining", "93"}, {"RateLimit-Reset", "50"}};
  const HttpHeaders c = {{"RateLimit-Remaining", "3"}, {"RateLimit-Reset", "9"}};
  EXPECT_TRUE(MoreRestrictive(a, b));
  EXPECT_FALSE(MoreRestrictive(b, a));
  EXPECT_TRUE(MoreRestrictive(c, a));
  EXPECT_FALSE(MoreRestrictive({}, a));
  EXPECT_TRUE(MoreRestrictive(a, {}));
}

// Verifies an error returned by the Client (kRaise) becomes the 503 and keeps the status.
TEST_F(HttpThrottlerTest, RaiseFailureGives503) {
  client_->set_failure(absl::UnavailableError("connection refused"));
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(
      r, {HttpThrottle({.uid = "a", .failure_policy = FailurePolicy::kRaise})});
  ASSERT_FALSE(v.allowed);
  EXPECT_EQ(v.error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(v.response->status, 503);
  EXPECT_EQ(client_->calls()[0].policy, FailurePolicy::kRaise);
}

// Verifies an error that is not an outage (kInvalidArgument and others) is never
// allowed, whatever the policy: the default answer is a 500, not the 503 of an
// outage, and the body does not echo the error's message.
TEST_F(HttpThrottlerTest, RequestErrorGives500UnderAllow) {
  for (const absl::Status& error :
       {absl::InvalidArgumentError("identifier \"<script>\" is bad"),
        absl::NotFoundError("throttle"), absl::OutOfRangeError("cost"),
        absl::PermissionDeniedError("tenant"), absl::InternalError("bug")}) {
    SCOPED_TRACE(error.ToString());
    client_->set_failure(error);
    HttpThrottler throttler(client_);
    HttpRequest r = Request("/", "1.2.3.4");
    HttpVerdict v = throttler.Check(
        r, {HttpThrottle({.uid = "a", .failure_policy = FailurePolicy::kAllow})});
    ASSERT_FALSE(v.allowed);
    EXPECT_EQ(v.error, error);
    ASSERT_TRUE(v.response.has_value());
    EXPECT_EQ(v.response->status, 500);
    EXPECT_EQ(v.response->body, "rate limiter error\n");
    // Several throttles (one batch) answer alike.
    HttpVerdict batch = throttler.Check(r, {Inline("a"), Inline("b")});
    ASSERT_FALSE(batch.allowed);
    EXPECT_EQ(batch.response->status, 500);
  }
}

// Verifies RateLimiterError maps outages to 503 and every other error to 500.
TEST_F(HttpThrottlerTest, RateLimiterErrorByCode) {
  const HttpRequest r = Request("/", "1.2.3.4");
  EXPECT_EQ(RateLimiterError(r, absl::UnavailableError("")).status, 503);
  EXPECT_EQ(RateLimiterError(r, absl::DeadlineExceededError("")).status, 503);
  EXPECT_EQ(RateLimiterError(r, absl::ResourceExhaustedError("")).status, 503);
  EXPECT_EQ(RateLimiterError(r, absl::InvalidArgumentError("")).status, 500);
  EXPECT_EQ(RateLimiterError(r, absl::FailedPreconditionError("")).status, 500);
}

// Verifies an empty identifier from a custom function is never sent: the default
// identifier is used instead (a single throttle and a batch).
TEST_F(HttpThrottlerTest, EmptyIdentifierFallsBackToDefault) {
  HttpThrottler throttler(client_);
  auto empty = [](const HttpRequest&) -> Identifier { return ""; };
  HttpRequest r = Request("/api//x", "203.0.113.9");
  throttler.Check(r, {HttpThrottle({.uid = "a", .identifier = empty})});
  throttler.Check(r, {HttpThrottle({.uid = "a", .identifier = empty}),
                      HttpThrottle({.uid = "b", .identifier = empty})});
  ASSERT_EQ(client_->rpc_count(), 2u);
  for (const FakeClient::Call& call : client_->calls()) {
    for (const ThrottleRequest& sent : call.requests) {
      EXPECT_EQ(sent.identifier, "203.0.113.9:/api/x");
    }
  }
}

// Verifies long and binary keys (a 5000-byte X-Api-Key, a "\xff" key, a 5000-byte
// path) reach the Client byte for byte, so the Client's digest and traffikd's bytes
// identify them (they are not dropped, cut or exempted on the way).
TEST_F(HttpThrottlerTest, LongAndBinaryKeysReachClientIntact) {
  HttpThrottler throttler(client_);
  HttpThrottle by_key({.uid = "a", .identifier = [](const HttpRequest& r) -> Identifier {
                         return "key:" + r.Header("X-Api-Key").value_or("");
                       }});
  const std::string long_key(5000, 'k');
  const std::string binary_key("\xff\x00\xfe", 3);
  const std::string long_path = "/api/" + std::string(5000, 'p');
  for (const std::string& key : {long_key, binary_key}) {
    HttpRequest r = Request("/api/x", "1.2.3.4", {{"X-Api-Key", key}});
    throttler.Check(r, {by_key});
  }
  HttpRequest r = Request(long_path, "1.2.3.4");
  throttler.Check(r, {Inline("b")});
  ASSERT_EQ(client_->rpc_count(), 3u);
  EXPECT_EQ(client_->calls()[0].requests[0].identifier, "key:" + long_key);
  EXPECT_EQ(client_->calls()[1].requests[0].identifier, "key:" + binary_key);
  EXPECT_EQ(client_->calls()[2].requests[0].identifier, "1.2.3.4:" + long_path);
}

// Verifies on_error replaces the default 503.
TEST_F(HttpThrottlerTest, CustomOnError) {
  client_->set_failure(absl::DeadlineExceededError("slow"));
  HttpThrottler throttler(client_,
                          {.on_error = [](const HttpRequest&, const absl::Status& s) {
                            HttpResponse response;
                            response.status = 500;
                            response.body = std::string(s.message());
                            return response;
                          }});
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {Inline("a")});
  EXPECT_EQ(v.response->status, 500);
  EXPECT_EQ(v.response->body, "slow");
}

// Verifies a kDeny policy answer (Source::kFailurePolicy, no limit) gives 429 without
// RateLimit-*.
TEST_F(HttpThrottlerTest, DenyPolicyAnswerGives429WithoutRateLimitHeaders) {
  client_->set_responder([](const ThrottleRequest&) {
    ThrottleResult r;
    r.allowed = false;
    r.wait = milliseconds(1000);
    r.source = ThrottleResult::Source::kFailurePolicy;
    return r;
  });
  HttpThrottler throttler(client_);
  HttpRequest r = Request("/", "1.2.3.4");
  HttpVerdict v = throttler.Check(r, {Inline("a")});
  EXPECT_EQ(v.response->status, 429);
  EXPECT_EQ(v.response->Header("Retry-After"), "1");
  EXPECT_FALSE(v.response->Header("RateLimit-Limit").has_value());
}

// Verifies the batch policy: agreement passes through; otherwise deny > raise > client
// default.
TEST_F(HttpThrottlerTest, BatchPolicyCombination) {
  HttpThrottler throttler(client_);
  auto with = [](std::string uid, std::optional<FailurePolicy> p) {
    return HttpThrottle({.uid = std::move(uid), .failure_policy = p});
  };
  struct Case {
    std::optional<FailurePolicy> a, b, expected;
  };
  const std::vector<Case> cases = {
      {FailurePolicy::kAllow, FailurePolicy::kAllow, FailurePolicy::kAllow},
      {std::nullopt, std::nullopt, std::nullopt},
      {FailurePolicy::kAllow, FailurePolicy::kDeny, FailurePolicy::kDeny},
      {FailurePolicy::kRaise, FailurePolicy::kDeny, FailurePolicy::kDeny},
      {FailurePolicy::kAllow, FailurePolicy::kRaise, FailurePolicy::kRaise},
      {std::nullopt, FailurePolicy::kRaise, FailurePolicy::kRaise},
      {FailurePolicy::kAllow, std::nullopt, std::nullopt},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    HttpRequest r = Request("/", "1.2.3.4");
    throttler.Check(r, {with("a", cases[i].a), with("b", cases[i].b)});
    EXPECT_EQ(client_->calls()[i].policy, cases[i].expected) << "case " << i;
  }
}

// Verifies CheckAsync gives the same verdict as Check, batch included.
TEST_F(HttpThrottlerTest, AsyncMatchesSync) {
  client_->set_responder([](const ThrottleRequest& r) {
    return r.throttle_uid == "b" ? FakeClient::Refused(milliseconds(4200))
                                 : FakeClient::Allowed();
  });
  HttpThrottler throttler(client_);
  std::optional<HttpVerdict> got;
  throttler.CheckAsync(Request("/", "1.2.3.4"), {Inline("a"), Inline("b")},
                       [&](HttpVerdict v) { got = std::move(v); });
  ASSERT_TRUE(got.has_value());
  EXPECT_FALSE(got->allowed);
  EXPECT_EQ(got->response->Header("Retry-After"), "5");
  EXPECT_TRUE(client_->calls()[0].batch);
}

// Verifies CheckAsync with every throttle exempt answers inline without an RPC.
TEST_F(HttpThrottlerTest, AsyncExemptNoRpc) {
  HttpThrottler throttler(client_);
  HttpThrottle exempt({.uid = "x", .identifier = [](const HttpRequest&) -> Identifier {
                         return kUnlimited;
                       }});
  bool called = false;
  throttler.CheckAsync(Request("/", "1.2.3.4"), {exempt}, [&](HttpVerdict v) {
    called = true;
    EXPECT_TRUE(v.exempt);
  });
  EXPECT_TRUE(called);
  EXPECT_EQ(client_->rpc_count(), 0u);
}

// ------------------------------------------------------------------ decorator

class ThrottledDecoratorTest : public ::testing::Test {
 protected:
  std::shared_ptr<FakeClient> client_ = std::make_shared<FakeClient>();
};

// Verifies the decorator calls the handler when allowed and adds RateLimit-* to its
// response.
TEST_F(ThrottledDecoratorTest, AllowedCallsHandlerAndAddsHeaders) {
  int calls = 0;
  HttpHandler handler = Throttled(
      HttpThrottler(client_),
      [&](const HttpRequest&) {
        ++calls;
        HttpResponse r;
        r.body = "ok";
        return r;
      },
      Inline("a"));
  HttpResponse response = handler(Request("/", "1.2.3.4"));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "ok");
  EXPECT_EQ(response.Header("RateLimit-Remaining"), "9");
}

// Verifies the decorator does not call the handler when refused and returns the 429.
TEST_F(ThrottledDecoratorTest, RefusedSkipsHandler) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(700)); });
  int calls = 0;
  HttpHandler handler = Throttled(
      HttpThrottler(client_),
      [&](const HttpRequest&) {
        ++calls;
        return HttpResponse{};
      },
      Inline("a"), Inline("b"));
  HttpResponse response = handler(Request("/", "1.2.3.4"));
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.Header("Retry-After"), "1");
  EXPECT_TRUE(client_->calls()[0].batch);
}

}  // namespace
}  // namespace traffik
