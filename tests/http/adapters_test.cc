// Unit tests of the thin framework adapters (traffik/adapters/httplib.h and
// traffik/adapters/beast.h): conversions, and that async verdicts resume on
// the caller's executor. The full request paths are covered by http_e2e_test.

#include <httplib.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
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
  EXPECT_EQ(r.query, "room=1");
  EXPECT_EQ(r.QueryParam("room"), "1");
  EXPECT_EQ(r.peer_address, "2001:db8::5");
  EXPECT_EQ(r.Header("x-api-key"), "k");
  EXPECT_EQ(r.native<http::request<http::string_body>>(), &request);
  EXPECT_EQ(r.native<http::request<http::empty_body>>(), nullptr);
}

// Verifies a Beast request's string body is the core's body (form fields readable).
TEST_F(BeastAdapterTest, ToHttpRequestForm) {
  http::request<http::string_body> request{http::verb::post, "/login", 11};
  request.set(http::field::content_type, "application/x-www-form-urlencoded");
  request.body() = "username=ann%40x&password=p";
  HttpRequest r =
      beast_adapter::ToHttpRequest(request, boost::asio::ip::make_address("192.0.2.1"));
  EXPECT_EQ(r.FormParam("username"), "ann@x");
  EXPECT_EQ(r.query, "");
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

// ------------------------------------------------ Beast HTTP decorator / middleware

class BeastHttpTest : public ::testing::Test {
 protected:
  // Runs `handler` for GET `target` from 192.0.2.7 on an io_context; the response
  // it sent (nullopt: none).
  std::optional<beast_adapter::Response> Serve(const beast_adapter::Handler& handler,
                                               const std::string& target,
                                               beast_adapter::Request request = {}) {
    boost::asio::io_context ioc;
    std::optional<beast_adapter::Response> sent;
    if (request.method() == http::verb::unknown) request.method(http::verb::get);
    request.target(target);
    request.version(11);
    handler(std::move(request),
            beast_adapter::HttpContext(boost::asio::ip::make_address("192.0.2.7"),
                                       ioc.get_executor()),
            [&](beast_adapter::Response response) {
              EXPECT_FALSE(sent.has_value()) << "sent twice";
              sent = std::move(response);
            });
    ioc.run();
    return sent;
  }

  // The answer for each uid: allowed or refused with the given numbers.
  void Answer(std::map<std::string, ThrottleResult> by_uid) {
    client_->set_responder([by_uid](const ThrottleRequest& request) {
      return by_uid.at(request.throttle_uid);
    });
  }

  // A route answering 200 "<name>", counting its calls.
  beast_adapter::SyncHandler Route(std::string name) {
    return [this, name](const beast_adapter::Request& request) {
      ++route_calls_;
      beast_adapter::Response response{http::status::ok, request.version()};
      response.body() = name;
      response.prepare_payload();
      return response;
    };
  }

  // "/api/" rule (uid "api") in front of a router: /api/items is decorated with
  // "items", anything else is served undecorated.
  beast_adapter::Handler App() {
    HttpThrottler throttler(client_);
    beast_adapter::Handler items = beast_adapter::Throttled(
        throttler, Route("items"), HttpThrottle({.uid = "items"}));
    beast_adapter::Handler other = beast_adapter::Async(Route("other"));
    beast_adapter::Handler router = [items, other](beast_adapter::Request request,
                                                   beast_adapter::HttpContext context,
                                                   beast_adapter::Send send) {
      if (request.target() == "/api/items") {
        return items(std::move(request), std::move(context), std::move(send));
      }
      other(std::move(request), std::move(context), std::move(send));
    };
    return beast_adapter::WithMiddleware(
        ThrottleMiddleware(throttler, {{.throttle = HttpThrottle({.uid = "api"}),
                                        .path = PathMatcher::Prefix("/api/")}}),
        router);
  }

  std::shared_ptr<FakeClient> client_ = std::make_shared<FakeClient>();
  int route_calls_ = 0;
};

// Verifies the Beast decorator runs the handler only when allowed, adds RateLimit-*
// to its response, answers 429 with Retry-After when refused, and keys the default
// identifier on the client and the path without the query.
TEST_F(BeastHttpTest, ThrottledDecorator) {
  beast_adapter::Handler handler = beast_adapter::Throttled(
      HttpThrottler(client_), Route("hello"), HttpThrottle({.uid = "hello"}));
  std::optional<beast_adapter::Response> allowed = Serve(handler, "/hello?x=1");
  ASSERT_TRUE(allowed.has_value());
  EXPECT_EQ(allowed->result_int(), 200u);
  EXPECT_EQ(allowed->body(), "hello");
  EXPECT_EQ((*allowed)["RateLimit-Limit"], "10");
  EXPECT_EQ((*allowed)["RateLimit-Remaining"], "9");
  EXPECT_EQ(route_calls_, 1);
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_EQ(client_->calls()[0].requests[0].identifier, "192.0.2.7:/hello");

  Answer({{"hello", FakeClient::Refused(std::chrono::milliseconds(2500), 3)}});
  std::optional<beast_adapter::Response> refused = Serve(handler, "/hello");
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->result_int(), 429u);
  EXPECT_EQ((*refused)[http::field::retry_after], "3");
  EXPECT_EQ((*refused)["RateLimit-Limit"], "3");
  EXPECT_EQ(route_calls_, 1);
}

// Verifies a kUnlimited identifier exempts a decorated Beast route: no RPC, no headers.
TEST_F(BeastHttpTest, ThrottledExemptMakesNoRpc) {
  beast_adapter::Handler handler = beast_adapter::Throttled(
      HttpThrottler(client_), Route("hello"),
      HttpThrottle({.uid = "hello", .identifier = [](const HttpRequest&) -> Identifier {
                      return kUnlimited;
                    }}));
  std::optional<beast_adapter::Response> response = Serve(handler, "/hello");
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->result_int(), 200u);
  EXPECT_EQ(response->count("RateLimit-Limit"), 0u);
  EXPECT_EQ(client_->rpc_count(), 0u);
}

// Verifies the Beast middleware refuses before the router runs (429 with its headers),
// passes unmatched paths with no RPC and no headers, and puts its RateLimit-* on an
// undecorated route's response.
TEST_F(BeastHttpTest, MiddlewareGuardsRouter) {
  beast_adapter::Handler app = App();
  std::optional<beast_adapter::Response> unmatched = Serve(app, "/other");
  ASSERT_TRUE(unmatched.has_value());
  EXPECT_EQ(unmatched->body(), "other");
  EXPECT_EQ(unmatched->count("RateLimit-Limit"), 0u);
  EXPECT_EQ(client_->rpc_count(), 0u);

  Answer({{"api", FakeClient::Allowed(100, 93)}});
  std::optional<beast_adapter::Response> status = Serve(app, "/api/status");
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->body(), "other");
  EXPECT_EQ((*status)["RateLimit-Limit"], "100");
  EXPECT_EQ((*status)["RateLimit-Remaining"], "93");

  Answer({{"api", FakeClient::Refused(std::chrono::seconds(7), 100)}});
  const int calls_before = route_calls_;
  std::optional<beast_adapter::Response> refused = Serve(app, "/api/status");
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->result_int(), 429u);
  EXPECT_EQ((*refused)[http::field::retry_after], "7");
  EXPECT_EQ((*refused)["RateLimit-Limit"], "100");
  EXPECT_EQ(route_calls_, calls_before);
}

// Verifies a decorated route's 429 under the middleware carries the route's own
// RateLimit-* (the limit that refused), never the middleware's.
TEST_F(BeastHttpTest, RouteRefusalCarriesRouteHeadersOnly) {
  Answer({{"api", FakeClient::Allowed(100, 93)},
          {"items", FakeClient::Refused(std::chrono::seconds(4), 5)}});
  std::optional<beast_adapter::Response> refused = Serve(App(), "/api/items");
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->result_int(), 429u);
  EXPECT_EQ((*refused)["RateLimit-Limit"], "5");
  EXPECT_EQ((*refused)["RateLimit-Remaining"], "0");
  EXPECT_EQ((*refused)[http::field::retry_after], "4");
  EXPECT_EQ(route_calls_, 0);
}

// Verifies an allowed response under middleware and decorator carries the most
// restrictive limit's headers (fewest remaining), whichever of the two it is.
TEST_F(BeastHttpTest, AllowedCarriesMostRestrictiveHeaders) {
  Answer({{"api", FakeClient::Allowed(100, 93)}, {"items", FakeClient::Allowed(5, 2)}});
  std::optional<beast_adapter::Response> route_tighter = Serve(App(), "/api/items");
  ASSERT_TRUE(route_tighter.has_value());
  EXPECT_EQ(route_tighter->body(), "items");
  EXPECT_EQ((*route_tighter)["RateLimit-Limit"], "5");
  EXPECT_EQ((*route_tighter)["RateLimit-Remaining"], "2");

  Answer({{"api", FakeClient::Allowed(100, 1)}, {"items", FakeClient::Allowed(5, 4)}});
  std::optional<beast_adapter::Response> api_tighter = Serve(App(), "/api/items");
  ASSERT_TRUE(api_tighter.has_value());
  EXPECT_EQ((*api_tighter)["RateLimit-Limit"], "100");
  EXPECT_EQ((*api_tighter)["RateLimit-Remaining"], "1");
  EXPECT_EQ(api_tighter->count("RateLimit-Limit"), 1u);
}

// Verifies a decorated Beast route's identifier reads the form body, the query and
// native<beast_adapter::Request>() (e.g. "3 logins per minute per username").
TEST_F(BeastHttpTest, IdentifierSeesFormQueryAndNativeRequest) {
  beast_adapter::Handler login = beast_adapter::Throttled(
      HttpThrottler(client_), Route("login"),
      HttpThrottle({.uid = "login", .identifier = [](const HttpRequest& r) -> Identifier {
                      const beast_adapter::Request* native =
                          r.native<beast_adapter::Request>();
                      if (native == nullptr) return "no native";
                      return "user:" + r.FormParam("username").value_or("?") + ":" +
                             r.QueryParam("app").value_or("?") + ":" +
                             std::string((*native)["X-Client"]);
                    }}));
  beast_adapter::Request request{http::verb::post, "", 11};
  request.set(http::field::content_type, "application/x-www-form-urlencoded");
  request.set("X-Client", "cli");
  request.body() = "username=ann&password=p";
  std::optional<beast_adapter::Response> response =
      Serve(login, "/login?app=web", std::move(request));
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->body(), "login");
  ASSERT_EQ(client_->rpc_count(), 1u);
  EXPECT_EQ(client_->calls()[0].requests[0].identifier, "user:ann:web:cli");
}

// ------------------------------------------------------- Beast WebSocket helper

// A WebSocket connection over loopback: the server side runs the echo loop of
// examples/beast_ws_echo.cc with beast_adapter::CheckMessage; the test is the client.
class BeastWebSocketTest : public ::testing::Test {
 protected:
  using Stream = boost::beast::websocket::stream<boost::beast::tcp_stream>;

  void Start(WebSocketThrottleOptions options) {
    throttle_.emplace(client_, std::move(options));
    HttpRequest upgrade;
    upgrade.method = "GET";
    upgrade.path = "/ws";
    upgrade.peer_address = "127.0.0.1";
    connection_ = AcceptWebSocket(upgrade);
    boost::asio::ip::tcp::acceptor acceptor(
        ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0});
    client_ws_.next_layer().connect(acceptor.local_endpoint());
    server_ws_.emplace(acceptor.accept());
    bool accepted = false;
    bool handshaken = false;
    server_ws_->async_accept([&](boost::beast::error_code ec) { accepted = !ec; });
    client_ws_.async_handshake("127.0.0.1", "/ws",
                               [&](boost::beast::error_code ec) { handshaken = !ec; });
    RunUntil([&] { return accepted && handshaken; });
    ASSERT_TRUE(accepted && handshaken);
    Serve();
  }

  // Closes both ends and lets the pending handlers finish (with an error).
  void TearDown() override {
    boost::beast::error_code ignored;
    if (server_ws_.has_value()) {
      boost::beast::get_lowest_layer(*server_ws_).socket().close(ignored);
    }
    boost::beast::get_lowest_layer(client_ws_).socket().close(ignored);
    ioc_.restart();
    ioc_.run_for(std::chrono::seconds(5));
  }

  // The server loop: read, check, echo (allowed) or read on (dropped).
  void Serve() {
    server_buffer_.consume(server_buffer_.size());
    server_ws_->async_read(server_buffer_, [this](boost::beast::error_code ec, size_t) {
      if (ec) return;
      beast_adapter::CheckMessage(*throttle_, connection_, *server_ws_, [this](bool ok) {
        if (!ok) {
          ++dropped_;
          return Serve();
        }
        server_ws_->text(server_ws_->got_text());
        server_ws_->async_write(server_buffer_.data(),
                                [this](boost::beast::error_code ec, size_t) {
                                  if (!ec) Serve();
                                });
      });
    });
  }

  // Runs the io_context until `done` holds (at most 5 s without progress).
  template <class Predicate>
  void RunUntil(Predicate done) {
    ioc_.restart();  // it stops whenever it runs out of work
    while (!done() && ioc_.run_one_for(std::chrono::seconds(5)) > 0) {
    }
  }

  void Send(const std::string& text) {
    client_ws_.text(true);
    client_ws_.write(boost::asio::buffer(text));
  }

  // The next frame the client receives; on error, `error` is set.
  std::string Receive(boost::beast::error_code& error) {
    boost::beast::flat_buffer buffer;
    bool done = false;
    client_ws_.async_read(buffer, [&](boost::beast::error_code ec, size_t) {
      error = ec;
      done = true;
    });
    RunUntil([&] { return done; });
    EXPECT_TRUE(done) << "no frame within 5 s";
    return boost::beast::buffers_to_string(buffer.data());
  }

  // Refuses the first `refusals` messages, allows the rest.
  void RefuseFirst(int refusals) {
    client_->set_responder(
        [refusals, n = std::make_shared<int>(0)](const ThrottleRequest&) {
          return (*n)++ < refusals ? FakeClient::Refused(std::chrono::seconds(2))
                                   : FakeClient::Allowed();
        });
  }

  boost::asio::io_context ioc_;
  std::shared_ptr<FakeClient> client_ = std::make_shared<FakeClient>();
  std::optional<WebSocketThrottle> throttle_;
  WebSocketConnection connection_;
  Stream client_ws_{ioc_};
  std::optional<Stream> server_ws_;
  boost::beast::flat_buffer server_buffer_;
  int dropped_ = 0;
};

// Verifies an on_throttled that returns nullopt (the README snippet used to
// dereference it) drops the refused message silently and keeps the connection open.
TEST_F(BeastWebSocketTest, NulloptReplyDropsMessageAndStaysOpen) {
  RefuseFirst(1);
  ASSERT_NO_FATAL_FAILURE(
      Start({.uid = "ws",
             .on_throttled = [](const WebSocketConnection&, const ThrottleResult&) {
               return std::optional<std::string>();
             }}));
  Send("m1");
  Send("m2");
  boost::beast::error_code error;
  EXPECT_EQ(Receive(error), "m2");  // m1 was dropped, nothing sent for it
  EXPECT_FALSE(error) << error.message();
  EXPECT_EQ(dropped_, 1);
}

// Verifies an on_throttled frame is sent by the helper and the connection stays open.
TEST_F(BeastWebSocketTest, ReplySentAndStaysOpen) {
  RefuseFirst(1);
  ASSERT_NO_FATAL_FAILURE(Start(
      {.uid = "ws",
       .on_throttled = [](const WebSocketConnection&, const ThrottleResult& r) {
         return std::optional<std::string>("wait " + std::to_string(r.wait.count()));
       }}));
  Send("m1");
  boost::beast::error_code error;
  EXPECT_EQ(Receive(error), "wait 2000");
  Send("m2");
  EXPECT_EQ(Receive(error), "m2");
  EXPECT_FALSE(error) << error.message();
}

// Verifies by default the helper closes the connection with 1008 and the wait, and
// then reports the message dropped (the session's next read ends it).
TEST_F(BeastWebSocketTest, DefaultClosesWith1008) {
  RefuseFirst(1);
  ASSERT_NO_FATAL_FAILURE(Start({.uid = "ws"}));
  Send("m1");
  boost::beast::error_code error;
  Receive(error);
  EXPECT_EQ(error, boost::beast::websocket::error::closed) << error.message();
  EXPECT_EQ(client_ws_.reason().code, 1008);
  EXPECT_EQ(std::string(client_ws_.reason().reason.c_str()), "rate limited; retry in 2s");
  RunUntil([&] { return dropped_ == 1; });
  EXPECT_EQ(dropped_, 1);
}

}  // namespace
}  // namespace traffik
