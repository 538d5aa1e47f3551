// Unit tests of the thin framework adapters (traffik/adapters/httplib.h and
// traffik/adapters/beast.h): conversions, and that async verdicts resume on
// the caller's executor. The full request paths are covered by http_e2e_test.

#include <httplib.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <regex>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/fake_client.h"
#include "traffik/adapters/beast.h"
#include "traffik/adapters/httplib.h"

namespace traffik {
namespace {

namespace http = boost::beast::http;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::Pair;
using ::traffik::testing::FakeClient;

class HttplibAdapterTest : public ::testing::Test {};

// Verifies an httplib request becomes the core's request (method, path, peer, headers).
TEST_F(HttplibAdapterTest, ToHttpRequest) {
  ::httplib::Request request;
  request.method = "POST";
  request.path = "/api/x";
  request.remote_addr = "192.0.2.7";
  request.headers.emplace("X-Forwarded-For", "1.1.1.1");
  HttpRequest r = httplib_adapter::ToHttpRequest(request);
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/api/x");
  EXPECT_EQ(r.peer_address, "192.0.2.7");
  EXPECT_EQ(r.Header("x-forwarded-for"), "1.1.1.1");
}

// Verifies SetHeaders replaces existing fields case-insensitively (no duplicates).
TEST_F(HttplibAdapterTest, SetHeadersReplaces) {
  ::httplib::Response response;
  response.set_header("ratelimit-remaining", "4");
  httplib_adapter::SetHeaders({{"RateLimit-Remaining", "3"}}, response);
  EXPECT_EQ(response.get_header_value_count("RateLimit-Remaining"), 1u);
  EXPECT_EQ(response.get_header_value("RateLimit-Remaining"), "3");
}

// Verifies WriteResponse copies status, headers, body and content type.
TEST_F(HttplibAdapterTest, WriteResponse) {
  ::httplib::Response response;
  httplib_adapter::WriteResponse(
      TooManyRequests(FakeClient::Refused(std::chrono::milliseconds(1200), 5)), response);
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.get_header_value("Retry-After"), "2");
  EXPECT_EQ(response.get_header_value("RateLimit-Limit"), "5");
  EXPECT_EQ(response.get_header_value("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(response.body, "rate limited; retry in 2s\n");
}

// Verifies the httplib decorator skips the handler when refused and adds headers when
// allowed.
TEST_F(HttplibAdapterTest, ThrottledDecorator) {
  auto client = std::make_shared<FakeClient>();
  int calls = 0;
  ::httplib::Server::Handler handler = httplib_adapter::Throttled(
      HttpThrottler(client),
      [&](const ::httplib::Request&, ::httplib::Response& response) {
        ++calls;
        response.set_content("ok", "text/plain");
      },
      HttpThrottle({.uid = "a"}));
  ::httplib::Request request;
  request.remote_addr = "192.0.2.7";
  ::httplib::Response allowed;
  handler(request, allowed);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(allowed.body, "ok");
  EXPECT_EQ(allowed.get_header_value("RateLimit-Limit"), "10");
  client->set_responder([](const ThrottleRequest&) {
    return FakeClient::Refused(std::chrono::seconds(5));
  });
  ::httplib::Response refused;
  handler(request, refused);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(refused.status, 429);
}

// Verifies ToHttpRequest also carries the query, the body, regex captures as route
// parameters and the native request.
TEST_F(HttplibAdapterTest, ToHttpRequestQueryBodyCapturesNative) {
  ::httplib::Request request;
  request.method = "POST";
  request.path = "/items/42";
  request.target = "/items/42?q=a+b&x=1";
  request.body = "username=bob";
  const std::string path = request.path;
  static const std::regex kPattern(R"(/items/(\d+))");
  ASSERT_TRUE(std::regex_match(path, request.matches, kPattern));
  HttpRequest r = httplib_adapter::ToHttpRequest(request);
  EXPECT_EQ(r.query, "q=a+b&x=1");
  EXPECT_EQ(r.QueryParam("q"), "a b");
  EXPECT_EQ(r.body, "username=bob");
  EXPECT_EQ(r.RouteParam("1"), "42");
  EXPECT_EQ(r.native<::httplib::Request>(), &request);
  EXPECT_EQ(r.route, "");  // not registered through httplib_adapter::Server
}

// An httplib server listening on 127.0.0.1 (port 0) in a thread until destroyed
// (declare it after the server it runs).
class Running {
 public:
  explicit Running(::httplib::Server& server) : server_(server) {
    port_ = server.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) return;
    thread_ = std::thread([&server] { server.listen_after_bind(); });
    // Bounded wait until it accepts (stop() before that would not end listen).
    for (int i = 0; i < 5000 && !server.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ~Running() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

  bool ok() const { return port_ > 0 && server_.is_running(); }
  int port() const { return port_; }

 private:
  ::httplib::Server& server_;
  std::thread thread_;
  int port_ = 0;
};

// Adapter tests on a real httplib server, with a FakeClient.
class HttplibServerTest : public ::testing::Test {
 protected:
  ::httplib::Result Get(const Running& running, const std::string& path) {
    ::httplib::Client http("127.0.0.1", running.port());
    http.set_connection_timeout(5);
    http.set_read_timeout(5);
    return http.Get(path);
  }

  // The FakeClient answers by uid: "global" allowed 93 of 100, "route" allowed 9 of
  // 10, "deny" refused with unknown numbers (as a kDeny policy answer), "slow" refused
  // with known numbers.
  std::shared_ptr<FakeClient> MakeClient() {
    auto client = std::make_shared<FakeClient>();
    client->set_responder([](const ThrottleRequest& r) -> absl::StatusOr<ThrottleResult> {
      if (r.throttle_uid == "global") return FakeClient::Allowed(100, 93, seconds(40));
      if (r.throttle_uid == "tight") return FakeClient::Allowed(100, 2, seconds(50));
      if (r.throttle_uid == "deny") {
        ThrottleResult deny;
        deny.wait = seconds(1);
        deny.source = ThrottleResult::Source::kFailurePolicy;
        return deny;
      }
      if (r.throttle_uid == "slow") return FakeClient::Refused(seconds(3), 5);
      return FakeClient::Allowed(10, 9, seconds(1));
    });
    return client;
  }

  ThrottleMiddleware Middleware(const HttpThrottler& throttler, std::string uid) {
    return ThrottleMiddleware(throttler,
                              {{.throttle = HttpThrottle({.uid = std::move(uid)}),
                                .path = PathMatcher::Prefix("/api/")}});
  }

  static void Ok(const ::httplib::Request&, ::httplib::Response& response) {
    response.set_content("ok", "text/plain");
  }
};

// Verifies a route's 429 never carries the middleware's RateLimit-* (issue 13: a
// throttled /api/items answered "RateLimit-Limit: 100, Remaining: 93" from the /api/
// rule): with unknown numbers it carries none, and a custom 429 sent as returned
// carries only its own headers.
TEST_F(HttplibServerTest, MiddlewareHeadersNeverLeakIntoRoute429) {
  HttpThrottler throttler(MakeClient());
  ::httplib::Server server;
  httplib_adapter::InstallMiddleware(server, Middleware(throttler, "global"));
  server.Get("/api/items",
             httplib_adapter::Throttled(throttler, Ok, HttpThrottle({.uid = "deny"})));
  server.Get("/api/custom",
             httplib_adapter::Throttled(
                 throttler, Ok,
                 HttpThrottle({.uid = "slow",
                               .on_throttled =
                                   [](const HttpRequest&, const ThrottleResult&) {
                                     HttpResponse response;
                                     response.status = 429;
                                     response.body = "custom";
                                     return response;
                                   },
                               .keep_throttled_response = true})));
  Running running(server);
  ASSERT_TRUE(running.ok());
  ::httplib::Result items = Get(running, "/api/items");
  ASSERT_TRUE(items);
  EXPECT_EQ(items->status, 429);
  EXPECT_EQ(items->get_header_value("Retry-After"), "1");
  EXPECT_FALSE(items->has_header("RateLimit-Limit"));
  EXPECT_FALSE(items->has_header("RateLimit-Remaining"));
  ::httplib::Result custom = Get(running, "/api/custom");
  ASSERT_TRUE(custom);
  EXPECT_EQ(custom->status, 429);
  EXPECT_EQ(custom->body, "custom");
  EXPECT_FALSE(custom->has_header("RateLimit-Limit"));
}

// Verifies an allowed response carries the most restrictive RateLimit-* of the
// middleware's and the decorator's throttles, whichever is tighter.
TEST_F(HttplibServerTest, AllowedResponseCarriesMostRestrictiveHeaders) {
  HttpThrottler throttler(MakeClient());
  ::httplib::Server server;
  httplib_adapter::InstallMiddleware(server, Middleware(throttler, "tight"));
  server.Get("/api/a",
             httplib_adapter::Throttled(throttler, Ok, HttpThrottle({.uid = "r"})));
  server.Get("/other",
             httplib_adapter::Throttled(throttler, Ok, HttpThrottle({.uid = "r"})));
  Running running(server);
  ASSERT_TRUE(running.ok());
  ::httplib::Result a = Get(running, "/api/a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(a->get_header_value("RateLimit-Limit"), "100");  // 2 left beats 9 left
  EXPECT_EQ(a->get_header_value("RateLimit-Remaining"), "2");
  EXPECT_EQ(a->get_header_value_count("RateLimit-Remaining"), 1u);
  ::httplib::Result other =
      Get(running, "/other");  // no middleware rule: the decorator's
  ASSERT_TRUE(other);
  EXPECT_EQ(other->get_header_value("RateLimit-Remaining"), "9");
}

// Verifies httplib_adapter::Server gives throttled handlers their route pattern, so
// the default identifier is one bucket per client and route, not per URL.
TEST_F(HttplibServerTest, ServerSetsRoutePattern) {
  auto client = MakeClient();
  HttpThrottler throttler(client);
  httplib_adapter::Server server;
  server.Get(R"(/items/(\d+))",
             httplib_adapter::Throttled(throttler, Ok, HttpThrottle({.uid = "items"})));
  Running running(server);
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Get(running, "/items/1"));
  ASSERT_TRUE(Get(running, "/items/2"));
  ASSERT_EQ(client->rpc_count(), 2u);
  EXPECT_EQ(client->calls()[0].requests[0].identifier, R"(127.0.0.1:/items/(\d+))");
  EXPECT_EQ(client->calls()[1].requests[0].identifier, R"(127.0.0.1:/items/(\d+))");
}

// Verifies the middleware chains with the app's own pre-routing handler in either
// order (httplib_adapter::Server), and via `next` on a plain httplib::Server: the
// app's handler runs for allowed requests, not for refused ones.
TEST_F(HttplibServerTest, MiddlewareChainsAppPreRoutingHandler) {
  HttpThrottler throttler(MakeClient());
  auto app_handler = [](const ::httplib::Request&, ::httplib::Response& response) {
    response.set_header("X-App", "seen");
    return ::httplib::Server::HandlerResponse::Unhandled;
  };
  for (int order = 0; order < 3; ++order) {
    SCOPED_TRACE(order);
    httplib_adapter::Server tuned;
    ::httplib::Server plain;
    if (order == 0) {
      tuned.set_pre_routing_handler(app_handler);
      httplib_adapter::InstallMiddleware(tuned, Middleware(throttler, "global"));
    } else if (order == 1) {
      httplib_adapter::InstallMiddleware(tuned, Middleware(throttler, "global"));
      tuned.set_pre_routing_handler(app_handler);
    } else {
      httplib_adapter::InstallMiddleware(plain, Middleware(throttler, "global"),
                                         app_handler);
    }
    ::httplib::Server& server = order < 2 ? tuned : plain;
    server.Get("/api/x", Ok);
    Running running(server);
    ASSERT_TRUE(running.ok());
    ::httplib::Result r = Get(running, "/api/x");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->get_header_value("X-App"), "seen");
    EXPECT_EQ(r->get_header_value("RateLimit-Limit"), "100");
  }
  // Refused by the middleware: the app's handler is not reached.
  httplib_adapter::Server server;
  server.set_pre_routing_handler(app_handler);
  httplib_adapter::InstallMiddleware(server, Middleware(throttler, "slow"));
  Running running(server);
  ASSERT_TRUE(running.ok());
  ::httplib::Result refused = Get(running, "/api/x");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429);
  EXPECT_FALSE(refused->has_header("X-App"));
}

class BeastAdapterTest : public ::testing::Test {};

// Verifies a Beast request becomes the core's request: the query is stripped, peer kept.
TEST_F(BeastAdapterTest, ToHttpRequest) {
  http::request<http::string_body> request{http::verb::get, "/ws/chat?room=1", 11};
  request.set("X-Api-Key", "k");
  HttpRequest r =
      beast_adapter::ToHttpRequest(request, boost::asio::ip::make_address("2001:db8::5"));
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/ws/chat");
  EXPECT_EQ(r.peer_address, "2001:db8::5");
  EXPECT_EQ(r.Header("x-api-key"), "k");
}

// Verifies a core response becomes a complete Beast response.
TEST_F(BeastAdapterTest, ToBeastResponse) {
  auto response = beast_adapter::ToBeastResponse(
      TooManyRequests(FakeClient::Refused(std::chrono::milliseconds(500), 7)), 11, true);
  EXPECT_EQ(response.result_int(), 429u);
  EXPECT_EQ(response[http::field::retry_after], "1");
  EXPECT_EQ(response["RateLimit-Limit"], "7");
  EXPECT_EQ(response[http::field::content_length],
            std::to_string(response.body().size()));
  EXPECT_TRUE(response.keep_alive());
}

// Verifies close reasons keep the code and are cut to the 123 bytes a close frame allows.
TEST_F(BeastAdapterTest, ToCloseReasonTruncates) {
  auto reason = beast_adapter::ToCloseReason({1008, std::string(200, 'x')});
  EXPECT_EQ(reason.code, 1008);
  EXPECT_EQ(reason.reason.size(), 123u);
}

// Verifies async verdicts are posted to the given executor, not run on the caller's
// thread.
TEST_F(BeastAdapterTest, AsyncVerdictRunsOnExecutor) {
  auto client = std::make_shared<FakeClient>();  // answers inline
  boost::asio::io_context ioc;
  bool http_done = false;
  bool ws_done = false;
  HttpRequest request;
  request.peer_address = "192.0.2.1";
  beast_adapter::CheckAsync(HttpThrottler(client), request, {HttpThrottle({.uid = "a"})},
                            ioc.get_executor(), [&](HttpVerdict v) {
                              http_done = true;
                              EXPECT_TRUE(v.allowed);
                            });
  WebSocketThrottle ws(client, {.uid = "ws"});
  beast_adapter::CheckMessageAsync(ws, AcceptWebSocket(request), "", ioc.get_executor(),
                                   [&](WebSocketVerdict v) {
                                     ws_done = true;
                                     EXPECT_TRUE(v.allowed);
                                   });
  EXPECT_FALSE(http_done);
  EXPECT_FALSE(ws_done);
  ioc.run();
  EXPECT_TRUE(http_done);
  EXPECT_TRUE(ws_done);
  EXPECT_EQ(client->rpc_count(), 2u);
}

}  // namespace
}  // namespace traffik
