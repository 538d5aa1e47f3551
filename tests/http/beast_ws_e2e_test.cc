// End-to-end: the real traffikd and the real examples/beast_ws_echo as
// processes on 127.0.0.1 (port 0), driven by a Beast WebSocket client and
// libcurl.

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/e2e_helpers.h"

#ifndef BEAST_WS_ECHO_PATH
#error "BEAST_WS_ECHO_PATH must name the beast_ws_echo binary"
#endif

namespace traffik::http_e2e {
namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

// A blocking WebSocket client with a read timeout.
class WsClient {
 public:
  explicit WsClient(int port) : ws_(ioc_) {
    tcp::endpoint endpoint(net::ip::make_address("127.0.0.1"),
                           static_cast<uint16_t>(port));
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(5));
    beast::get_lowest_layer(ws_).connect(endpoint);
    ws_.handshake("127.0.0.1:" + std::to_string(port), "/ws");
  }

  // Sends `text` and reads one frame. On error, `error` is set (closed: the
  // close reason is in reason()).
  std::string RoundTrip(const std::string& text, beast::error_code& error) {
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(5));
    ws_.text(true);
    ws_.write(net::buffer(text), error);
    if (error) return "";
    beast::flat_buffer buffer;
    ws_.read(buffer, error);
    return beast::buffers_to_string(buffer.data());
  }

  // Writes `bytes` to the TCP stream as they are (a hand-made frame).
  void WriteRaw(const std::string& bytes, beast::error_code& error) {
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(5));
    net::write(beast::get_lowest_layer(ws_), net::buffer(bytes), error);
  }

  // Reads one message; returns the error (closed: see reason()), or
  // timed_out when nothing arrives for 5 s (the connection is then closed).
  beast::error_code Read() {
    beast::flat_buffer buffer;
    std::optional<beast::error_code> result;
    ws_.async_read(buffer, [&](beast::error_code error, size_t) { result = error; });
    ioc_.restart();
    ioc_.run_for(std::chrono::seconds(5));
    if (!result.has_value()) {
      beast::get_lowest_layer(ws_).close();  // cancels the read
      ioc_.restart();
      ioc_.run();
      return net::error::timed_out;
    }
    return *result;
  }

  const websocket::close_reason& reason() const { return ws_.reason(); }

 private:
  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_;
};

class BeastWsEchoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<e2e::TraffikdProcess>> traffikd =
        e2e::TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen", ""});
    ASSERT_TRUE(traffikd.ok()) << traffikd.status();
    traffikd_ = std::move(*traffikd);
  }

  void StartApp(std::vector<std::string> args = {}, std::string traffikd = "") {
    absl::StatusOr<std::unique_ptr<AppProcess>> app = AppProcess::StartExample(
        BEAST_WS_ECHO_PATH, traffikd.empty() ? traffikd_->grpc_address() : traffikd,
        args);
    ASSERT_TRUE(app.ok()) << app.status();
    app_ = std::move(*app);
  }

  std::unique_ptr<e2e::TraffikdProcess> traffikd_;
  std::unique_ptr<AppProcess> app_;
};

// Verifies the example's default limit, 10 messages per 10 s per connection:
// messages 1-10 are echoed and the 11th closes the connection with 1008 and a
// reason carrying the wait (one token per second: 1 s).
TEST_F(BeastWsEchoTest, DefaultClosesWith1008AtEleventhMessage) {
  StartApp();
  WsClient client(app_->port());
  beast::error_code error;
  for (int i = 1; i <= 10; ++i) {
    const std::string message = "m" + std::to_string(i);
    EXPECT_EQ(client.RoundTrip(message, error), message);
    ASSERT_FALSE(error) << "message " << i << ": " << error.message();
  }
  client.RoundTrip("m11", error);
  EXPECT_EQ(error, websocket::error::closed) << error.message();
  EXPECT_EQ(client.reason().code, 1008);
  EXPECT_EQ(std::string(client.reason().reason.data(), client.reason().reason.size()),
            "rate limited; retry in 1s");
}

// Verifies messages 1-3 are echoed and the 4th closes the connection with 1008
// and a reason carrying the wait (3 per minute: about 20 s).
TEST_F(BeastWsEchoTest, ClosesWith1008AtFourthMessage) {
  StartApp({"--limit", "3", "--period-ms", "60000"});
  WsClient client(app_->port());
  beast::error_code error;
  for (int i = 1; i <= 3; ++i) {
    const std::string message = "m" + std::to_string(i);
    EXPECT_EQ(client.RoundTrip(message, error), message);
    ASSERT_FALSE(error) << "message " << i << ": " << error.message();
  }
  client.RoundTrip("m4", error);
  EXPECT_EQ(error, websocket::error::closed) << error.message();
  EXPECT_EQ(client.reason().code, 1008);
  EXPECT_THAT(std::string(client.reason().reason.data(), client.reason().reason.size()),
              AnyOf("rate limited; retry in 19s", "rate limited; retry in 20s"));
}

// Verifies each connection has its own bucket: a new connection is echoed
// after another one was closed for its rate.
TEST_F(BeastWsEchoTest, ConnectionsHaveSeparateBuckets) {
  StartApp({"--limit", "1"});
  beast::error_code error;
  {
    WsClient first(app_->port());
    EXPECT_EQ(first.RoundTrip("a", error), "a");
    first.RoundTrip("b", error);
    EXPECT_EQ(error, websocket::error::closed);
  }
  WsClient second(app_->port());
  EXPECT_EQ(second.RoundTrip("c", error), "c");
  EXPECT_FALSE(error);
}

// Verifies with --error-frames the app's handler gets the wait: a refused
// message is answered with an error frame and the connection stays open.
TEST_F(BeastWsEchoTest, ErrorFramesKeepConnectionOpen) {
  StartApp({"--limit", "2", "--error-frames"});
  WsClient client(app_->port());
  beast::error_code error;
  EXPECT_EQ(client.RoundTrip("1", error), "1");
  EXPECT_EQ(client.RoundTrip("2", error), "2");
  for (int i = 0; i < 2; ++i) {
    const std::string reply = client.RoundTrip("3", error);
    ASSERT_FALSE(error) << error.message();
    EXPECT_THAT(reply,
                MatchesRegex(R"(\{"error":"rate limited","retry_after_ms":[0-9]+\})"));
  }
}

// Verifies the Beast HTTP route: 200 with RateLimit-* twice, then 429 with
// Retry-After (2 per minute).
TEST_F(BeastWsEchoTest, HttpRoute429AtThirdRequest) {
  StartApp();
  for (int i = 1; i <= 2; ++i) {
    absl::StatusOr<CurlResponse> r = Curl(app_->port(), "/hello");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello\n");
    EXPECT_EQ(r->Header("ratelimit-limit"), "2");
    EXPECT_EQ(r->Header("ratelimit-remaining"), std::to_string(2 - i));
  }
  absl::StatusOr<CurlResponse> r = Curl(app_->port(), "/hello");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 429);
  EXPECT_THAT(r->Header("retry-after"), AnyOf("29", "30"));
}

// Verifies the Beast middleware and decorator over the real server: /api/status
// carries the "api" rule's headers; the decorated /api/items carries the most
// restrictive limit's (its own 2 per minute) and its 429 only its own, never the
// rule's; the rule's 429 comes from the middleware; /hello is outside the rule.
TEST_F(BeastWsEchoTest, HttpMiddlewareAndDecorator) {
  ASSERT_NO_FATAL_FAILURE(StartApp({"--api-limit", "5"}));
  auto get = [&](const std::string& path) {
    absl::StatusOr<CurlResponse> r = Curl(app_->port(), path);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CurlResponse{};
  };
  CurlResponse r = get("/api/status");  // api: 4 left
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(r.Header("ratelimit-limit"), "5");
  EXPECT_EQ(r.Header("ratelimit-remaining"), "4");
  for (int i = 1; i <= 2; ++i) {  // api: 3, 2 left; items: 1, 0 left
    r = get("/api/items");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "items\n");
    EXPECT_EQ(r.Header("ratelimit-limit"), "2");
    EXPECT_EQ(r.Header("ratelimit-remaining"), std::to_string(2 - i));
  }
  r = get("/api/items");  // api: 1 left; items refuses
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.Header("ratelimit-limit"), "2");
  EXPECT_EQ(r.Header("ratelimit-remaining"), "0");
  EXPECT_THAT(r.Header("retry-after"), AnyOf("29", "30"));
  r = get("/api/status");  // api: 0 left
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("ratelimit-limit"), "5");
  EXPECT_EQ(r.Header("ratelimit-remaining"), "0");
  r = get("/api/status");  // the middleware refuses
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.Header("ratelimit-limit"), "5");
  EXPECT_FALSE(r.Header("retry-after").empty());
  r = get("/hello");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("ratelimit-limit"), "2");
  r = get("/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.Header("ratelimit-limit"), "");
}

// Verifies HTTP keep-alive has no request cap and answers do not stall: 200
// throttled requests on one connection, answered in well under the ~40 ms per
// response a Nagle / delayed-ACK stall costs (8 s for 200).
TEST_F(BeastWsEchoTest, KeepAliveManyRequestsOneConnection) {
  ASSERT_NO_FATAL_FAILURE(StartApp({"--api-limit", "100000", "--threads", "4"}));
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"),
                               static_cast<uint16_t>(app_->port())));
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) {
    stream.expires_after(std::chrono::seconds(5));
    beast::http::request<beast::http::empty_body> request{beast::http::verb::get,
                                                          "/api/status", 11};
    request.set(beast::http::field::host, "127.0.0.1");
    beast::http::write(stream, request);
    beast::flat_buffer buffer;
    beast::http::response<beast::http::string_body> response;
    beast::http::read(stream, buffer, response);
    ASSERT_EQ(response.result_int(), 200u) << "request " << i;
    ASSERT_TRUE(response.keep_alive()) << "request " << i;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
}

// The header of a masked client frame (binary, FIN) announcing `size` payload bytes.
std::string FrameHeader(uint64_t size) {
  std::string header = {'\x82', '\xff'};  // FIN + binary; mask bit + 64-bit length
  for (int shift = 56; shift >= 0; shift -= 8) {
    header.push_back(static_cast<char>((size >> shift) & 0xff));
  }
  header += std::string("\x01\x02\x03\x04", 4);  // masking key
  return header;
}

// Verifies a 1 MiB message is refused from its frame header (close 1009, message too
// big) without the server reading, let alone buffering, its payload: only the header
// and 1 KiB are sent, and the close arrives; a message of exactly the limit (64 KiB by
// default) is still echoed.
TEST_F(BeastWsEchoTest, OversizedMessageClosedWith1009BeforePayload) {
  ASSERT_NO_FATAL_FAILURE(StartApp());
  {
    WsClient client(app_->port());
    beast::error_code error;
    const std::string at_limit(64 * 1024, 'm');
    EXPECT_EQ(client.RoundTrip(at_limit, error), at_limit);
    ASSERT_FALSE(error) << error.message();
  }
  WsClient client(app_->port());
  beast::error_code error;
  client.WriteRaw(FrameHeader(1 << 20) + std::string(1024, 'x'), error);
  ASSERT_FALSE(error) << error.message();
  EXPECT_EQ(client.Read(), websocket::error::closed);
  EXPECT_EQ(client.reason().code, websocket::close_code::too_big);
}

// Verifies --max-message-bytes changes the bound.
TEST_F(BeastWsEchoTest, MaxMessageBytesFlag) {
  ASSERT_NO_FATAL_FAILURE(StartApp({"--max-message-bytes", "100"}));
  WsClient client(app_->port());
  beast::error_code error;
  EXPECT_EQ(client.RoundTrip(std::string(100, 'a'), error), std::string(100, 'a'));
  client.RoundTrip(std::string(101, 'a'), error);
  EXPECT_EQ(error, websocket::error::closed);
  EXPECT_EQ(client.reason().code, websocket::close_code::too_big);
}

// Verifies connections beyond --max-connections are closed at once (WebSocket
// handshake and plain HTTP fail), and a closed connection frees its place.
TEST_F(BeastWsEchoTest, ConnectionsBeyondCapRefused) {
  ASSERT_NO_FATAL_FAILURE(StartApp({"--max-connections", "3"}));
  std::vector<std::unique_ptr<WsClient>> held;
  for (int i = 0; i < 3; ++i) held.push_back(std::make_unique<WsClient>(app_->port()));
  EXPECT_THROW(WsClient extra(app_->port()), boost::system::system_error);
  EXPECT_FALSE(Curl(app_->port(), "/hello").ok());
  held.pop_back();  // closes one connection
  bool reconnected = false;
  for (int attempt = 0; attempt < 50 && !reconnected; ++attempt) {
    try {
      WsClient again(app_->port());
      beast::error_code error;
      reconnected = again.RoundTrip("back", error) == "back";
    } catch (const boost::system::system_error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  EXPECT_TRUE(reconnected);
}

// Verifies an HTTP request header over --max-header-bytes (default 8 KiB) gets the
// connection closed without an answer, and one under it is served.
TEST_F(BeastWsEchoTest, OversizedHeaderRefused) {
  ASSERT_NO_FATAL_FAILURE(StartApp());
  absl::StatusOr<CurlResponse> small =
      Curl(app_->port(), "/hello", {"X-Pad: " + std::string(1000, 'p')});
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->status, 200);
  absl::StatusOr<CurlResponse> large =
      Curl(app_->port(), "/hello", {"X-Pad: " + std::string(10'000, 'p')});
  EXPECT_FALSE(large.ok()) << large->status;
}

// Verifies with traffikd down each policy quickly: allow echoes, deny closes
// with 1008 (retry in 1s), raise closes with 1011.
TEST_F(BeastWsEchoTest, TraffikdDownFailurePolicies) {
  const std::string down = "127.0.0.1:" + std::to_string(UnusedPort());
  beast::error_code error;
  {
    StartApp({"--failure-policy", "allow", "--deadline-ms", "300"}, down);
    WsClient client(app_->port());
    for (int i = 0; i < 5; ++i) EXPECT_EQ(client.RoundTrip("x", error), "x");
    EXPECT_FALSE(error);
  }
  {
    StartApp({"--failure-policy", "deny", "--deadline-ms", "300"}, down);
    WsClient client(app_->port());
    const auto start = std::chrono::steady_clock::now();
    client.RoundTrip("x", error);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
    EXPECT_EQ(error, websocket::error::closed);
    EXPECT_EQ(client.reason().code, 1008);
    EXPECT_EQ(std::string(client.reason().reason.data(), client.reason().reason.size()),
              "rate limited; retry in 1s");
  }
  {
    StartApp({"--failure-policy", "raise", "--deadline-ms", "300"}, down);
    WsClient client(app_->port());
    client.RoundTrip("x", error);
    EXPECT_EQ(error, websocket::error::closed);
    EXPECT_EQ(client.reason().code, 1011);
    EXPECT_THAT(std::string(client.reason().reason.data(), client.reason().reason.size()),
                HasSubstr("unavailable"));
  }
}

}  // namespace
}  // namespace traffik::http_e2e
