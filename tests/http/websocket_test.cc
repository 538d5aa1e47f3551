// Unit tests of WebSocket message throttling (traffik/websocket.h) with a
// fake Client.

#include "traffik/websocket.h"

#include <memory>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/fake_client.h"

namespace traffik {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ::traffik::testing::FakeClient;

HttpRequest Upgrade(std::string peer, HttpHeaders headers = {}) {
  HttpRequest r;
  r.method = "GET";
  r.path = "/ws";
  r.peer_address = std::move(peer);
  r.headers = std::move(headers);
  return r;
}

class WebSocketThrottleTest : public ::testing::Test {
 protected:
  WebSocketThrottle Throttle(WebSocketThrottleOptions options = {.uid = "ws"}) {
    return WebSocketThrottle(client_, std::move(options));
  }
  std::shared_ptr<FakeClient> client_ = std::make_shared<FakeClient>();
};

// Verifies each accepted connection gets a distinct id and a resolved client address.
TEST_F(WebSocketThrottleTest, AcceptAssignsIdsAndAddress) {
  TrustedProxies trusted = TrustedProxies::Parse({"127.0.0.1"}).value();
  WebSocketConnection a =
      AcceptWebSocket(Upgrade("127.0.0.1", {{"X-Forwarded-For", "5.6.7.8"}}), trusted);
  WebSocketConnection b = AcceptWebSocket(Upgrade("9.9.9.9"), trusted);
  EXPECT_NE(a.id, b.id);
  EXPECT_FALSE(a.id.empty());
  EXPECT_EQ(a.upgrade.client_address, "5.6.7.8");
  EXPECT_EQ(b.upgrade.client_address, "9.9.9.9");
}

// Verifies the default identifier holds client, path, connection id and the context key.
TEST_F(WebSocketThrottleTest, DefaultIdentifierIncludesConnectionAndContext) {
  WebSocketConnection c = AcceptWebSocket(Upgrade("10.1.2.3"));
  EXPECT_EQ(DefaultWebSocketIdentifier(c, "").value(), "10.1.2.3:/ws:" + c.id);
  EXPECT_EQ(DefaultWebSocketIdentifier(c, "typing").value(),
            "10.1.2.3:/ws:" + c.id + ":typing");
  WebSocketThrottle t =
      Throttle({.uid = "ws", .spec = ThrottleSpec{3, std::chrono::seconds(10)}});
  t.Check(c, "chat");
  ASSERT_EQ(client_->rpc_count(), 1u);
  const ThrottleRequest sent = client_->calls()[0].requests[0];
  EXPECT_EQ(sent.identifier, "10.1.2.3:/ws:" + c.id + ":chat");
  EXPECT_EQ(sent.throttle_uid, "ws");
  ASSERT_TRUE(sent.spec.has_value());
  EXPECT_EQ(sent.spec->limit, 3u);
}

// Verifies the (client, uid, spec, options) constructor sends that uid and spec and
// keeps the other options.
TEST_F(WebSocketThrottleTest, UidAndSpecConstructor) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(1000)); });
  WebSocketThrottle t(client_, "ws_messages", {10, std::chrono::seconds(10)},
                      {.uid = "ignored", .cost = 2});
  WebSocketVerdict v = t.Check(AcceptWebSocket(Upgrade("1.1.1.1")));
  EXPECT_FALSE(v.allowed);
  ASSERT_EQ(client_->rpc_count(), 1u);
  const ThrottleRequest sent = client_->calls()[0].requests[0];
  EXPECT_EQ(sent.throttle_uid, "ws_messages");
  ASSERT_TRUE(sent.spec.has_value());
  EXPECT_EQ(sent.spec->limit, 10u);
  EXPECT_EQ(sent.spec->period, std::chrono::seconds(10));
  EXPECT_EQ(sent.cost, 2u);
}

// Verifies two connections from one client get different buckets by default.
TEST_F(WebSocketThrottleTest, ConnectionsHaveSeparateBuckets) {
  WebSocketThrottle t = Throttle();
  t.Check(AcceptWebSocket(Upgrade("10.1.2.3")));
  t.Check(AcceptWebSocket(Upgrade("10.1.2.3")));
  std::set<std::string> ids;
  for (const auto& call : client_->calls()) ids.insert(call.requests[0].identifier);
  EXPECT_EQ(ids.size(), 2u);
}

// Verifies an allowed message is delivered with nothing to send or close.
TEST_F(WebSocketThrottleTest, AllowedDelivers) {
  WebSocketVerdict v = Throttle().Check(AcceptWebSocket(Upgrade("1.1.1.1")));
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.close.has_value());
  EXPECT_FALSE(v.reply.has_value());
}

// Verifies by default a refused message closes with 1008 and a reason carrying the wait.
TEST_F(WebSocketThrottleTest, RefusedClosesWith1008AndWait) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(2001)); });
  WebSocketVerdict v = Throttle().Check(AcceptWebSocket(Upgrade("1.1.1.1")));
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.wait, milliseconds(2001));
  ASSERT_TRUE(v.close.has_value());
  EXPECT_EQ(v.close->code, 1008);
  EXPECT_EQ(v.close->reason, "rate limited; retry in 3s");
  EXPECT_LE(v.close->reason.size(), 123u);
}

// Verifies with on_throttled the app is told the wait, its frame is the reply, no close.
TEST_F(WebSocketThrottleTest, OnThrottledGetsWaitAndReplies) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(1500)); });
  std::string seen_id;
  WebSocketThrottle t = Throttle(
      {.uid = "ws",
       .on_throttled = [&](const WebSocketConnection& c,
                           const ThrottleResult& r) -> std::optional<std::string> {
         seen_id = c.id;
         return "{\"error\":\"rate limited\",\"retry_after_ms\":" +
                std::to_string(r.wait.count()) + "}";
       }});
  WebSocketConnection c = AcceptWebSocket(Upgrade("1.1.1.1"));
  WebSocketVerdict v = t.Check(c);
  EXPECT_FALSE(v.allowed);
  EXPECT_FALSE(v.close.has_value());
  EXPECT_EQ(v.reply, "{\"error\":\"rate limited\",\"retry_after_ms\":1500}");
  EXPECT_EQ(seen_id, c.id);
}

// Verifies a kUnlimited identifier exempts the message with no RPC.
TEST_F(WebSocketThrottleTest, UnlimitedMakesNoRpc) {
  WebSocketThrottle t = Throttle(
      {.uid = "ws",
       .identifier = [](const WebSocketConnection& c, std::string_view) -> Identifier {
         if (c.upgrade.Header("X-Role") == "admin") return kUnlimited;
         return c.upgrade.client_address;
       }});
  WebSocketVerdict v =
      t.Check(AcceptWebSocket(Upgrade("1.1.1.1", {{"X-Role", "admin"}})));
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(v.exempt);
  EXPECT_EQ(client_->rpc_count(), 0u);
}

// Verifies a Client error (kRaise) closes with 1011 and keeps the status.
TEST_F(WebSocketThrottleTest, RaiseFailureClosesWith1011) {
  client_->set_failure(absl::UnavailableError("down"));
  WebSocketVerdict v = Throttle({.uid = "ws", .failure_policy = FailurePolicy::kRaise})
                           .Check(AcceptWebSocket(Upgrade("1.1.1.1")));
  EXPECT_FALSE(v.allowed);
  ASSERT_TRUE(v.close.has_value());
  EXPECT_EQ(v.close->code, 1011);
  EXPECT_THAT(v.close->reason, HasSubstr("unavailable"));
  EXPECT_EQ(v.error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client_->calls()[0].policy, FailurePolicy::kRaise);
}

// Verifies an error that is not an outage closes with 1011 under kAllow too (never
// delivered), with a reason that does not claim an outage.
TEST_F(WebSocketThrottleTest, RequestErrorClosesWith1011UnderAllow) {
  client_->set_failure(absl::InvalidArgumentError("identifier is bad"));
  WebSocketVerdict v = Throttle({.uid = "ws", .failure_policy = FailurePolicy::kAllow})
                           .Check(AcceptWebSocket(Upgrade("1.1.1.1")));
  EXPECT_FALSE(v.allowed);
  ASSERT_TRUE(v.close.has_value());
  EXPECT_EQ(v.close->code, 1011);
  EXPECT_EQ(v.close->reason, "rate limiter error");
  EXPECT_EQ(v.error.code(), absl::StatusCode::kInvalidArgument);
}

// Verifies an empty custom identifier falls back to the default one, and the default
// one uses the normalized upgrade path.
TEST_F(WebSocketThrottleTest, EmptyIdentifierFallsBackAndPathIsNormalized) {
  HttpRequest upgrade = Upgrade("10.1.2.3");
  upgrade.path = "//ws/./";
  WebSocketConnection c = AcceptWebSocket(upgrade);
  EXPECT_EQ(DefaultWebSocketIdentifier(c, "").value(), "10.1.2.3:/ws:" + c.id);
  Throttle({.uid = "ws",
            .identifier = [](const WebSocketConnection&, std::string_view) -> Identifier {
              return "";
            }})
      .Check(c, "chat");
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_EQ(client_->calls()[0].requests[0].identifier, "10.1.2.3:/ws:" + c.id + ":chat");
}

// Verifies CheckAsync gives the same verdict as Check.
TEST_F(WebSocketThrottleTest, AsyncMatchesSync) {
  client_->set_responder(
      [](const ThrottleRequest&) { return FakeClient::Refused(milliseconds(60000)); });
  std::optional<WebSocketVerdict> got;
  Throttle().CheckAsync(AcceptWebSocket(Upgrade("1.1.1.1")), "",
                        [&](WebSocketVerdict v) { got = std::move(v); });
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(got->close.has_value());
  EXPECT_THAT(got->close->reason, StartsWith("rate limited; retry in 60s"));
}

}  // namespace
}  // namespace traffik
