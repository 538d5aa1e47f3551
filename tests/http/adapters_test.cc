// Unit tests of the thin framework adapters (traffik/adapters/httplib.h and
// traffik/adapters/beast.h): conversions, and that async verdicts resume on
// the caller's executor. The full request paths are covered by http_e2e_test.

#include <httplib.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/fake_client.h"
#include "traffik/adapters/beast.h"
#include "traffik/adapters/httplib.h"

namespace traffik {
namespace {

namespace http = boost::beast::http;
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
