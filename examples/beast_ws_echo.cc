// A Boost.Beast WebSocket echo server throttled per message through traffikd,
// with one throttled plain HTTP route.
//
//   beast_ws_echo [--listen HOST:PORT] [--traffikd HOST:PORT]
//                 [--limit N] [--period-ms MS] [--error-frames]
//                 [--trusted-proxy IP_OR_CIDR]... [--failure-policy allow|deny|raise]
//                 [--deadline-ms N]
//
//   ws://HOST:PORT/ws   echoes every message; each message is checked against
//                       "ws_messages" (--limit per --period-ms, default 3 per
//                       minute) per connection. Throttled: the connection is
//                       closed with 1008 "rate limited; retry in Ns"; with
//                       --error-frames an error frame
//                       {"error":"rate limited","retry_after_ms":N} is sent
//                       instead and the connection stays open.
//   GET /hello          "hello", throttled by "hello" (2 per minute per client).
//
// Prints "beast_ws_echo: listening on HOST:PORT" on stderr once serving.
// Stops on SIGINT/SIGTERM.

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "traffik/adapters/beast.h"
#include "traffik/client.h"
#include "traffik/http.h"
#include "traffik/websocket.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

// Shared, read-only after startup.
struct App {
  traffik::HttpThrottler throttler;
  traffik::HttpThrottle hello;
  traffik::WebSocketThrottle messages;
  traffik::TrustedProxies trusted;
};

// One WebSocket connection: read a message, check it, echo it (or reply with
// the error frame, or close with 1008), read the next.
class WebSocketSession : public std::enable_shared_from_this<WebSocketSession> {
 public:
  WebSocketSession(tcp::socket socket, std::shared_ptr<const App> app)
      : ws_(std::move(socket)), app_(std::move(app)) {}

  void Run(http::request<http::string_body> upgrade) {
    beast::error_code ec;
    const auto peer = beast::get_lowest_layer(ws_).socket().remote_endpoint(ec).address();
    connection_ = traffik::beast_adapter::AcceptWebSocket(upgrade, peer, app_->trusted);
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.async_accept(upgrade, [self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->Read();
    });
  }

 private:
  void Read() {
    buffer_.consume(buffer_.size());
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;  // closed by the peer, or an error: the session ends
      traffik::beast_adapter::CheckMessageAsync(
          self->app_->messages, self->connection_, "", self->ws_.get_executor(),
          [self](traffik::WebSocketVerdict verdict) {
            self->OnVerdict(std::move(verdict));
          });
    });
  }

  void OnVerdict(traffik::WebSocketVerdict verdict) {
    if (verdict.close.has_value()) {
      ws_.async_close(traffik::beast_adapter::ToCloseReason(*verdict.close),
                      [self = shared_from_this()](beast::error_code) {});
      return;
    }
    auto after_write = [self = shared_from_this()](beast::error_code ec, size_t) {
      if (!ec) self->Read();
    };
    if (!verdict.allowed) {  // the app's error frame; the message is dropped
      reply_ = verdict.reply.value_or("");
      ws_.text(true);
      ws_.async_write(net::buffer(reply_), after_write);
      return;
    }
    ws_.text(ws_.got_text());
    ws_.async_write(buffer_.data(), after_write);
  }

  websocket::stream<beast::tcp_stream> ws_;
  std::shared_ptr<const App> app_;
  traffik::WebSocketConnection connection_;
  beast::flat_buffer buffer_;
  std::string reply_;
};

// One HTTP connection: GET /hello (throttled), or an upgrade on /ws.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, std::shared_ptr<const App> app)
      : stream_(std::move(socket)), app_(std::move(app)) {}

  void Read() {
    request_ = {};
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->Shutdown();
                       self->Route();
                     });
  }

 private:
  void Route() {
    const std::string target(request_.target().data(), request_.target().size());
    const std::string path = target.substr(0, target.find('?'));
    if (websocket::is_upgrade(request_) && path == "/ws") {
      stream_.expires_never();
      std::make_shared<WebSocketSession>(stream_.release_socket(), app_)
          ->Run(std::move(request_));
      return;
    }
    if (path != "/hello" || request_.method() != http::verb::get) {
      traffik::HttpResponse not_found;
      not_found.status = 404;
      not_found.body = "not found\n";
      return Write(not_found, {});
    }
    beast::error_code ec;
    const auto peer = stream_.socket().remote_endpoint(ec).address();
    traffik::beast_adapter::CheckAsync(
        app_->throttler, traffik::beast_adapter::ToHttpRequest(request_, peer),
        {app_->hello}, stream_.get_executor(),
        [self = shared_from_this()](traffik::HttpVerdict verdict) {
          if (!verdict.allowed) return self->Write(*verdict.response, {});
          traffik::HttpResponse hello;
          hello.body = "hello\n";
          self->Write(hello, verdict.headers);
        });
  }

  void Write(const traffik::HttpResponse& from, const traffik::HttpHeaders& extra) {
    response_ = traffik::beast_adapter::ToBeastResponse(from, request_.version(),
                                                        request_.keep_alive());
    traffik::beast_adapter::SetHeaders(extra, response_);
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec || !self->response_.keep_alive()) return self->Shutdown();
                        self->Read();
                      });
  }

  void Shutdown() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  beast::tcp_stream stream_;
  std::shared_ptr<const App> app_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

void Accept(tcp::acceptor& acceptor, net::io_context& ioc,
            std::shared_ptr<const App> app) {
  acceptor.async_accept(net::make_strand(ioc),
                        [&acceptor, &ioc, app](beast::error_code ec, tcp::socket socket) {
                          if (!ec)
                            std::make_shared<HttpSession>(std::move(socket), app)->Read();
                          if (acceptor.is_open()) Accept(acceptor, ioc, app);
                        });
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--listen HOST:PORT] [--traffikd HOST:PORT] [--limit N] "
               "[--period-ms MS] [--error-frames] [--trusted-proxy IP_OR_CIDR]... "
               "[--failure-policy allow|deny|raise] [--deadline-ms N]\n",
               argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8081";
  traffik::ClientOptions client_options;
  client_options.failure_policy = traffik::FailurePolicy::kAllow;
  uint64_t limit = 3;
  int64_t period_ms = 60000;
  bool error_frames = false;
  std::vector<std::string> trusted;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(argv[0]);
      return argv[++i];
    };
    if (arg == "--listen") {
      listen = value();
    } else if (arg == "--traffikd") {
      client_options.target = value();
    } else if (arg == "--limit") {
      limit = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--period-ms") {
      period_ms = std::atoll(value().c_str());
    } else if (arg == "--error-frames") {
      error_frames = true;
    } else if (arg == "--trusted-proxy") {
      trusted.push_back(value());
    } else if (arg == "--failure-policy") {
      const std::string p = value();
      if (p == "allow") {
        client_options.failure_policy = traffik::FailurePolicy::kAllow;
      } else if (p == "deny") {
        client_options.failure_policy = traffik::FailurePolicy::kDeny;
      } else if (p == "raise") {
        client_options.failure_policy = traffik::FailurePolicy::kRaise;
      } else {
        Usage(argv[0]);
      }
    } else if (arg == "--deadline-ms") {
      client_options.deadline = std::chrono::milliseconds(std::atol(value().c_str()));
    } else {
      Usage(argv[0]);
    }
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) Usage(argv[0]);

  absl::StatusOr<std::shared_ptr<traffik::Client>> client =
      traffik::Client::Create(client_options);
  if (!client.ok()) {
    std::fprintf(stderr, "beast_ws_echo: %s\n", client.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<traffik::TrustedProxies> proxies =
      traffik::TrustedProxies::Parse(trusted);
  if (!proxies.ok()) {
    std::fprintf(stderr, "beast_ws_echo: %s\n", proxies.status().ToString().c_str());
    return 2;
  }

  traffik::WebSocketThrottleOptions ws_options{
      .uid = "ws_messages",
      .spec = traffik::ThrottleSpec{limit, std::chrono::milliseconds(period_ms)}};
  if (error_frames) {
    ws_options.on_throttled = [](const traffik::WebSocketConnection&,
                                 const traffik::ThrottleResult& result) {
      return std::optional<std::string>(
          "{\"error\":\"rate limited\",\"retry_after_ms\":" +
          std::to_string(result.wait.count()) + "}");
    };
  }
  auto app = std::make_shared<const App>(App{
      traffik::HttpThrottler(*client, {.trusted_proxies = *proxies}),
      traffik::HttpThrottle(
          {.uid = "hello", .spec = traffik::ThrottleSpec{2, std::chrono::minutes(1)}}),
      traffik::WebSocketThrottle(*client, std::move(ws_options)),
      *proxies,
  });

  net::io_context ioc;
  beast::error_code ec;
  const auto address = net::ip::make_address(listen.substr(0, colon), ec);
  if (ec) Usage(argv[0]);
  const auto port = static_cast<unsigned short>(std::atoi(listen.c_str() + colon + 1));
  tcp::acceptor acceptor(ioc);
  const tcp::endpoint endpoint(address, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    std::fprintf(stderr, "beast_ws_echo: cannot listen on %s: %s\n", listen.c_str(),
                 ec.message().c_str());
    return 1;
  }
  Accept(acceptor, ioc, app);
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) { ioc.stop(); });
  std::fprintf(stderr, "beast_ws_echo: listening on %s:%u (traffikd %s)\n",
               acceptor.local_endpoint().address().to_string().c_str(),
               acceptor.local_endpoint().port(), client_options.target.c_str());
  ioc.run();
  return 0;
}
