// A Boost.Beast server throttled through traffikd: a WebSocket echo limited per
// message, and plain HTTP routes behind a throttling middleware, one of them
// decorated with its own limit. It serves like production code: N I/O threads
// (one strand per connection), TCP_NODELAY on every connection (a small write
// that follows an unacknowledged one, e.g. back-to-back WebSocket frames, is
// not held back ~40 ms by Nagle waiting for the peer's delayed ACK), a
// 4096-deep listen backlog (a burst of connects is queued, not dropped and
// retried a second later), HTTP keep-alive without a request cap.
//
//   beast_ws_echo [--listen HOST:PORT] [--traffikd HOST:PORT]
//                 [--limit N] [--period-ms MS] [--error-frames]
//                 [--api-limit N] [--threads N] [--backlog N]
//                 [--trusted-proxy IP_OR_CIDR]... [--failure-policy allow|deny|raise]
//                 [--deadline-ms N] [--max-message-bytes N] [--max-header-bytes N]
//                 [--max-connections N] [credential flags: credential_flags.h]
//
//   ws://HOST:PORT/ws   echoes every message; each message is checked against
//                       "ws_messages" (--limit per --period-ms, default 10 per
//                       10 s) per connection. Throttled: the connection is
//                       closed with 1008 "rate limited; retry in Ns"; with
//                       --error-frames an error frame
//                       {"error":"rate limited","retry_after_ms":N} is sent
//                       instead and the connection stays open.
//   GET /hello          "hello", throttled by "hello" (2 per minute per client).
//   GET /api/status     "ok"; every /api/ path is throttled by the middleware
//                       rule "api" (--api-limit per minute per client, default
//                       100).
//   GET /api/items      "items": the "api" rule, and its own "items" (2 per
//                       minute per client) with the decorator.
//   --threads           I/O threads (default: the number of cores, at least 2).
//   --backlog           listen backlog (default 4096; the kernel caps it at
//                       net.core.somaxconn).
//
// Bounds (a hostile peer can hold at most about
// max-connections * (max-message-bytes + max-header-bytes) of buffers):
//   --max-message-bytes  largest WebSocket message read (default 65536); a
//                        bigger one is refused from its frame header, before
//                        its payload is read: the connection is closed with
//                        1009 (message too big);
//   --max-header-bytes   largest HTTP request header, also for the upgrade
//                        (default 8192); request bodies are refused above 4 KiB
//                        (no route takes a body); an over-long request gets
//                        the connection closed;
//   --max-connections    open connections, HTTP and WebSocket together (default
//                        256); a connection beyond it is closed at once,
//                        before anything is read from it;
// and an HTTP request must arrive within 10 s (a WebSocket connection: Beast's
// suggested server timeouts).
//
// Prints "beast_ws_echo: listening on HOST:PORT" on stderr once serving.
// Stops on SIGINT/SIGTERM.

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "credential_flags.h"
#include "traffik/adapters/beast.h"
#include "traffik/client.h"
#include "traffik/http.h"
#include "traffik/middleware.h"
#include "traffik/websocket.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace ba = traffik::beast_adapter;
using tcp = net::ip::tcp;

// Request bodies above this are refused (no route takes a body).
constexpr uint64_t kMaxBodyBytes = 4096;
// How long an HTTP request may take to arrive.
constexpr std::chrono::seconds kHttpReadTimeout{10};

// Shared, read-only after startup.
struct App {
  ba::Handler http;  // the routes, behind the middleware
  traffik::WebSocketThrottle messages;
  traffik::TrustedProxies trusted;
  uint64_t max_message_bytes = 0;
  uint32_t max_header_bytes = 0;
};

// The path of a request target (up to '?').
std::string_view PathOf(const ba::Request& request) {
  const std::string_view target(request.target().data(), request.target().size());
  return target.substr(0, target.find('?'));
}

ba::Response Text(const ba::Request& request, http::status status, std::string body) {
  ba::Response response{status, request.version()};
  response.set(http::field::content_type, "text/plain; charset=utf-8");
  response.body() = std::move(body);
  response.keep_alive(request.keep_alive());
  response.prepare_payload();
  return response;
}

// GET /hello, GET /api/status, GET /api/items; 404 otherwise.
ba::Handler Routes(const traffik::HttpThrottler& throttler, traffik::HttpThrottle hello,
                   traffik::HttpThrottle items) {
  ba::Handler hello_route = ba::Throttled(
      throttler,
      [](const ba::Request& r) { return Text(r, http::status::ok, "hello\n"); }, hello);
  ba::Handler items_route = ba::Throttled(
      throttler,
      [](const ba::Request& r) { return Text(r, http::status::ok, "items\n"); }, items);
  ba::Handler status_route =
      ba::Async([](const ba::Request& r) { return Text(r, http::status::ok, "ok\n"); });
  return [=](ba::Request request, ba::HttpContext context, ba::Send send) {
    const std::string_view path = PathOf(request);
    if (request.method() == http::verb::get) {
      if (path == "/hello") return hello_route(std::move(request), context, send);
      if (path == "/api/items") return items_route(std::move(request), context, send);
      if (path == "/api/status") return status_route(std::move(request), context, send);
    }
    send(Text(request, http::status::not_found, "not found\n"));
  };
}

// Counts open connections against --max-connections (atomic: accepts and
// closes happen on all I/O threads).
class ConnectionLimit : public std::enable_shared_from_this<ConnectionLimit> {
 public:
  // One open connection; releases its place when destroyed.
  class Slot {
   public:
    explicit Slot(std::shared_ptr<ConnectionLimit> limit) : limit_(std::move(limit)) {}
    Slot(Slot&&) = default;
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (limit_ != nullptr) limit_->open_.fetch_sub(1);
    }

   private:
    std::shared_ptr<ConnectionLimit> limit_;
  };

  explicit ConnectionLimit(int max) : max_(max) {}

  // A slot, or nullopt when `max` connections are open.
  std::optional<Slot> TryAcquire() {
    int open = open_.load();
    do {
      if (open >= max_) return std::nullopt;
    } while (!open_.compare_exchange_weak(open, open + 1));
    return Slot(shared_from_this());
  }

 private:
  const int max_;
  std::atomic<int> open_{0};
};

// One WebSocket connection: read a message, check it, echo it (or reply with
// the error frame, or close with 1008), read the next.
class WebSocketSession : public std::enable_shared_from_this<WebSocketSession> {
 public:
  WebSocketSession(tcp::socket socket, std::shared_ptr<const App> app,
                   ConnectionLimit::Slot slot)
      : ws_(std::move(socket)), app_(std::move(app)), slot_(std::move(slot)) {}

  void Run(http::request<http::string_body> upgrade) {
    beast::error_code ec;
    const auto peer = beast::get_lowest_layer(ws_).socket().remote_endpoint(ec).address();
    connection_ = ba::AcceptWebSocket(upgrade, peer, app_->trusted);
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    // Checked against each frame header: a bigger message is refused (close
    // 1009) before its payload is read. Beast's default is 16 MB.
    ws_.read_message_max(app_->max_message_bytes);
    ws_.async_accept(upgrade, [self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->Read();
    });
  }

 private:
  void Read() {
    buffer_.consume(buffer_.size());
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;  // closed by the peer, or an error: the session ends
      ba::CheckMessage(self->app_->messages, self->connection_, self->ws_,
                       [self](bool allowed) { allowed ? self->Echo() : self->Read(); });
    });
  }

  void Echo() {
    ws_.text(ws_.got_text());
    ws_.async_write(buffer_.data(),
                    [self = shared_from_this()](beast::error_code ec, size_t) {
                      if (!ec) self->Read();
                    });
  }

  websocket::stream<beast::tcp_stream> ws_;
  std::shared_ptr<const App> app_;
  ConnectionLimit::Slot slot_;
  traffik::WebSocketConnection connection_;
  beast::flat_buffer buffer_;
};

// One HTTP connection: GET /hello (throttled), or an upgrade on /ws.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, std::shared_ptr<const App> app,
              ConnectionLimit::Slot slot)
      : stream_(std::move(socket)), app_(std::move(app)), slot_(std::move(slot)) {}

  void Read() {
    // A fresh parser per request, bounded: an over-long header or body fails
    // the read (the connection is closed) instead of growing the buffer.
    parser_.emplace();
    parser_->header_limit(app_->max_header_bytes);
    parser_->body_limit(kMaxBodyBytes);
    stream_.expires_after(kHttpReadTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->Shutdown();
                       self->request_ = self->parser_->release();
                       self->Route();
                     });
  }

 private:
  void Route() {
    if (websocket::is_upgrade(request_) && PathOf(request_) == "/ws") {
      stream_.expires_never();
      std::make_shared<WebSocketSession>(stream_.release_socket(), app_, std::move(slot_))
          ->Run(std::move(request_));
      return;
    }
    beast::error_code ec;
    const auto peer = stream_.socket().remote_endpoint(ec).address();
    app_->http(std::move(request_), ba::HttpContext(peer, stream_.get_executor()),
               [self = shared_from_this()](ba::Response response) {
                 self->Write(std::move(response));
               });
  }

  void Write(ba::Response response) {
    response_ = std::move(response);
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
  ConnectionLimit::Slot slot_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  ba::Request request_;
  ba::Response response_;
};

void Accept(tcp::acceptor& acceptor, net::io_context& ioc, std::shared_ptr<const App> app,
            std::shared_ptr<ConnectionLimit> limit) {
  acceptor.async_accept(net::make_strand(ioc), [&acceptor, &ioc, app, limit](
                                                   beast::error_code ec,
                                                   tcp::socket socket) {
    if (!ec) {
      if (std::optional<ConnectionLimit::Slot> slot = limit->TryAcquire()) {
        // Small writes go out at once instead of waiting for the ACK of the
        // previous segment (Nagle + the peer's delayed ACK: up to ~40 ms).
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<HttpSession>(std::move(socket), app, std::move(*slot))->Read();
      } else {
        // Over the cap: reset at once (SO_LINGER 0), nothing is read.
        beast::error_code ignored;
        socket.set_option(net::socket_base::linger(true, 0), ignored);
        socket.close(ignored);
      }
    }
    if (acceptor.is_open()) Accept(acceptor, ioc, app, limit);
  });
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(
      stderr,
      "usage: %s [--listen HOST:PORT] [--traffikd HOST:PORT] [--limit N] "
      "[--period-ms MS] [--error-frames] [--api-limit N] [--threads N] [--backlog N] "
      "[--trusted-proxy IP_OR_CIDR]... "
      "[--failure-policy allow|deny|raise] [--deadline-ms N] "
      "[--max-message-bytes N] [--max-header-bytes N] [--max-connections N] %s\n",
      argv0, traffik_examples::kCredentialUsage);
  std::exit(2);
}

// The value of a numeric flag in [1, max]; usage error otherwise.
uint64_t PositiveFlag(const char* argv0, const std::string& text, uint64_t max) {
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || text[0] == '-' || value == 0 || value > max) {
    std::fprintf(stderr, "%s: expected an integer in [1, %llu], got \"%.32s\"\n", argv0,
                 static_cast<unsigned long long>(max), text.c_str());
    std::exit(2);
  }
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8081";
  traffik::ClientOptions client_options;
  traffik_examples::CredentialFlags credentials;
  client_options.failure_policy = traffik::FailurePolicy::kAllow;
  uint64_t limit = 10;
  std::chrono::milliseconds period{10000};
  uint64_t api_limit = 100;
  uint64_t threads = std::max(2u, std::thread::hardware_concurrency());
  uint64_t backlog = 4096;
  bool error_frames = false;
  uint64_t max_message_bytes = 64 * 1024;
  uint64_t max_header_bytes = 8 * 1024;
  uint64_t max_connections = 256;
  std::vector<std::string> trusted;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(argv[0]);
      return argv[++i];
    };
    if (traffik_examples::TakeCredentialFlag(arg, value, credentials)) {
      continue;
    } else if (arg == "--listen") {
      listen = value();
    } else if (arg == "--traffikd") {
      client_options.target = value();
    } else if (arg == "--limit") {
      limit = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--period-ms") {
      period = std::chrono::milliseconds(std::atoll(value().c_str()));
    } else if (arg == "--api-limit") {
      api_limit = PositiveFlag(argv[0], value(), 1'000'000'000);
    } else if (arg == "--threads") {
      threads = PositiveFlag(argv[0], value(), 1024);
    } else if (arg == "--backlog") {
      backlog = PositiveFlag(argv[0], value(), 65535);
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
    } else if (arg == "--max-message-bytes") {
      max_message_bytes = PositiveFlag(argv[0], value(), 1ull << 30);
    } else if (arg == "--max-header-bytes") {
      max_header_bytes = PositiveFlag(argv[0], value(), 1ull << 20);
    } else if (arg == "--max-connections") {
      max_connections = PositiveFlag(argv[0], value(), 1'000'000);
    } else {
      Usage(argv[0]);
    }
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) Usage(argv[0]);
  if (credentials.tls) {
    client_options.tls =
        traffik::ClientTlsOptions{.ca_file = credentials.ca_file,
                                  .cert_file = credentials.cert_file,
                                  .key_file = credentials.key_file,
                                  .server_name = credentials.server_name};
  }
  client_options.api_key = traffik_examples::ApiKeyOrExit(credentials, argv[0]);

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

  // WebSocket: --limit messages per --period-ms per connection (the default
  // identifier: client address, path and connection id).
  traffik::WebSocketThrottleOptions ws_opts;
  if (error_frames) {
    ws_opts.on_throttled = [](const traffik::WebSocketConnection&,
                              const traffik::ThrottleResult& result) {
      return std::optional<std::string>(
          "{\"error\":\"rate limited\",\"retry_after_ms\":" +
          std::to_string(result.wait.count()) + "}");
    };
  }
  traffik::WebSocketThrottle messages(*client, "ws_messages", {limit, period}, ws_opts);
  // HTTP: the /api/ rule (per client address) in front of every route;
  // "hello" and "items" (per client and path) on theirs.
  traffik::HttpThrottler throttler(*client, {.trusted_proxies = *proxies});
  traffik::HttpThrottle api("api", {api_limit, std::chrono::minutes(1)},
                            {.identifier = traffik::ByClientAddress});
  traffik::ThrottleMiddleware middleware(
      throttler, {{.throttle = api, .path = traffik::PathMatcher::Prefix("/api/")}});
  traffik::HttpThrottle hello("hello", {2, std::chrono::minutes(1)});
  traffik::HttpThrottle items("items", {2, std::chrono::minutes(1)});
  auto app = std::make_shared<const App>(App{
      ba::WithMiddleware(middleware, Routes(throttler, hello, items)),
      messages,
      *proxies,
      max_message_bytes,
      static_cast<uint32_t>(max_header_bytes),
  });
  auto connections = std::make_shared<ConnectionLimit>(static_cast<int>(max_connections));

  net::io_context ioc(static_cast<int>(threads));
  beast::error_code ec;
  const auto address = net::ip::make_address(listen.substr(0, colon), ec);
  if (ec) Usage(argv[0]);
  const auto port = static_cast<unsigned short>(std::atoi(listen.c_str() + colon + 1));
  tcp::acceptor acceptor(ioc);
  const tcp::endpoint endpoint(address, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(static_cast<int>(backlog), ec);
  if (ec) {
    std::fprintf(stderr, "beast_ws_echo: cannot listen on %s: %s\n", listen.c_str(),
                 ec.message().c_str());
    return 1;
  }
  Accept(acceptor, ioc, app, connections);
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) { ioc.stop(); });
  std::fprintf(stderr, "beast_ws_echo: listening on %s:%u (traffikd %s)\n",
               acceptor.local_endpoint().address().to_string().c_str(),
               acceptor.local_endpoint().port(), client_options.target.c_str());
  // Every connection runs on its own strand, so the handlers of one
  // connection never run concurrently; connections spread over the threads.
  std::vector<std::thread> workers;
  for (uint64_t i = 1; i < threads; ++i) workers.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (std::thread& worker : workers) worker.join();
  return 0;
}
