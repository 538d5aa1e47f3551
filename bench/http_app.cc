// The HTTP benchmark's app: one route `/`, served unthrottled or throttled
// through traffik::client + traffikd (bench/run_http_bench.sh drives it with
// wrk), on cpp-httplib (the default) or on Boost.Beast (--server beast).
//
//   traffik_http_app --mode unthrottled [--server httplib|beast]
//                    [--listen HOST:PORT] [--threads N]
//   traffik_http_app --mode throttled|raw-grpc --target HOST:PORT [--tenant NAME]
//                    [--coalesce-max-delay-us N --coalesce-max-batch N]
//                    [--server httplib|beast] [--listen HOST:PORT] [--threads N]
//
// Throttled: `/` is limited to 1,000,000 requests per second per client
// address (ByClientAddress, an inline spec), so it never refuses: every
// request pays exactly one decision. Unthrottled: the same server and the
// same handler without the decorator. Both modes use the same tuning, the one
// a user would pick (traffik::httplib_adapter::Server: a thread per
// keep-alive connection, unlimited requests per connection, TCP_NODELAY).
//
// --server beast: the same route on Boost.Beast, the way an asynchronous app
// serves it: --threads event-loop threads (an io_context each, connections
// handed out round robin), a session per connection reading requests one
// after the other; throttled through traffik::beast_adapter::Throttled, so a
// request waiting for its decision holds no thread (the verdict is posted
// back to the connection's loop). raw-grpc is httplib only.
//
// Prints "listening http=HOST:PORT" on stderr once bound (port 0: a free
// one), then serves until SIGINT/SIGTERM. A request the limiter answers with
// an error (traffikd down) gets a 503, which wrk counts as a non-2xx.

#include <grpcpp/grpcpp.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "traffik/adapters/beast.h"
#include "traffik/adapters/httplib.h"
#include "traffik/client.h"
#include "traffik/http.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace {

namespace adapter = traffik::httplib_adapter;

adapter::Server* g_server = nullptr;

void Stop(int) {
  if (g_server != nullptr) g_server->stop();
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --mode unthrottled|throttled|raw-grpc [--target HOST:PORT] "
               "[--tenant NAME] [--coalesce-max-delay-us N] [--coalesce-max-batch N] "
               "[--server httplib|beast] [--listen HOST:PORT] [--threads N]\n",
               argv0);
  std::exit(2);
}

// A decimal in [min, max], else usage.
uint64_t NumberFlag(const char* argv0, const std::string& text, uint64_t min,
                    uint64_t max) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || text[0] == '-' || v < min || v > max) {
    Usage(argv0);
  }
  return v;
}

struct Coalesce {
  uint64_t max_delay_us = 0;
  uint64_t max_batch = 0;
};

// Turns on client-side coalescing (ClientOptions::coalesce) when this build's
// client library has it; false when it does not. A template so that the
// `requires` test is a substitution check, not a compile error, on a library
// without the option.
template <typename Options>
bool SetCoalesce(Options& options, const Coalesce& coalesce) {
  if constexpr (requires { options.coalesce; }) {
    typename decltype(options.coalesce)::value_type c;
    c.max_delay = std::chrono::microseconds(coalesce.max_delay_us);
    c.max_batch = coalesce.max_batch;
    options.coalesce = c;
    return true;
  } else {
    return false;
  }
}

void Ok(const httplib::Request&, httplib::Response& response) {
  response.set_content("ok\n", "text/plain");
}

// The diagnostic floor (--mode raw-grpc): the same decision as `throttled`
// (uid, spec, per client address) through a blocking gRPC stub on this
// worker thread, without traffik::client or HttpThrottler. Not a way to use
// Traffik: it shows what the client library's own path costs on top.
httplib::Server::Handler RawGrpcHandler(const std::string& target,
                                        const std::string& tenant) {
  auto stub = std::shared_ptr<traffik::v1::ThrottleService::Stub>(
      traffik::v1::ThrottleService::NewStub(
          grpc::CreateChannel(target, grpc::InsecureChannelCredentials())));
  return [stub, tenant](const httplib::Request& request, httplib::Response& response) {
    traffik::v1::ShouldThrottleRequest req;
    req.set_identifier(request.remote_addr);
    req.set_throttle_uid("http_bench");
    req.set_tenant(tenant);
    req.set_cost(1);
    req.mutable_spec()->set_limit(1'000'000);
    req.mutable_spec()->set_period_ms(1000);
    traffik::v1::ShouldThrottleResponse resp;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(200));
    const grpc::Status status = stub->ShouldThrottle(&context, req, &resp);
    if (!status.ok()) {
      response.status = 503;
      return;
    }
    if (resp.wait_ms() > 0) {
      response.status = 429;
      return;
    }
    Ok(request, response);
  };
}

// ----------------------------------------------------------- --server beast

namespace beast = boost::beast;
namespace net = boost::asio;
namespace ba = traffik::beast_adapter;
using tcp = net::ip::tcp;

ba::Response BeastOk(const ba::Request& request) {
  ba::Response response{beast::http::status::ok, request.version()};
  response.set(beast::http::field::content_type, "text/plain");
  response.keep_alive(request.keep_alive());
  response.body() = "ok\n";
  response.prepare_payload();
  return response;
}

// One keep-alive connection: reads a request, lets `handler` answer it (now,
// or later on this connection's loop), writes the answer, reads the next.
class BeastSession : public std::enable_shared_from_this<BeastSession> {
 public:
  BeastSession(tcp::socket socket, const ba::Handler& handler)
      : socket_(std::move(socket)), handler_(handler) {
    beast::error_code ec;
    peer_ = socket_.remote_endpoint(ec).address();
  }

  void Read() {
    request_ = {};
    beast::http::async_read(
        socket_, buffer_, request_,
        [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->Close();
          self->handler_(
              std::move(self->request_),
              ba::HttpContext(self->peer_, self->socket_.get_executor()),
              [self](ba::Response response) { self->Write(std::move(response)); });
        });
  }

 private:
  void Write(ba::Response response) {
    response_ = std::move(response);
    beast::http::async_write(socket_, response_,
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                               if (ec || !self->response_.keep_alive())
                                 return self->Close();
                               self->Read();
                             });
  }

  void Close() {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  tcp::socket socket_;
  const ba::Handler& handler_;  // outlives every session (main's)
  net::ip::address peer_;
  beast::flat_buffer buffer_;
  ba::Request request_;
  ba::Response response_;
};

// Accepts on `contexts[0]` and hands connections to the loops round robin.
void BeastAccept(tcp::acceptor& acceptor,
                 std::vector<std::unique_ptr<net::io_context>>& contexts,
                 const ba::Handler& handler, size_t next) {
  net::io_context& loop = *contexts[next % contexts.size()];
  acceptor.async_accept(loop, [&acceptor, &contexts, &handler, next](beast::error_code ec,
                                                                     tcp::socket socket) {
    if (!ec) {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<BeastSession>(std::move(socket), handler)->Read();
    }
    if (acceptor.is_open()) BeastAccept(acceptor, contexts, handler, next + 1);
  });
}

// Serves `handler` on `host`:`port` with `threads` event loops until
// SIGINT/SIGTERM; the exit status.
int ServeBeast(const ba::Handler& handler, const std::string& mode,
               const std::string& host, int port, size_t threads) {
  std::vector<std::unique_ptr<net::io_context>> contexts;
  for (size_t i = 0; i < threads; ++i)
    contexts.push_back(std::make_unique<net::io_context>(1));
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (ec) {
    std::fprintf(stderr, "traffik_http_app: not an address: %s\n", host.c_str());
    return 1;
  }
  tcp::acceptor acceptor(*contexts[0]);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    std::fprintf(stderr, "traffik_http_app: cannot listen on %s:%d: %s\n", host.c_str(),
                 port, ec.message().c_str());
    return 1;
  }
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work;
  for (auto& context : contexts) work.push_back(net::make_work_guard(*context));
  net::signal_set signals(*contexts[0], SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) {
    beast::error_code ignored;
    acceptor.close(ignored);
    for (auto& context : contexts) context->stop();
  });
  BeastAccept(acceptor, contexts, handler, 0);
  std::fprintf(stderr, "traffik_http_app: mode=%s server=beast listening http=%s:%d\n",
               mode.c_str(), host.c_str(), acceptor.local_endpoint().port());
  std::vector<std::thread> loops;
  for (size_t i = 1; i < threads; ++i) loops.emplace_back([&, i] { contexts[i]->run(); });
  contexts[0]->run();
  for (auto& context : contexts) context->stop();
  for (std::thread& loop : loops) loop.join();
  // Checks still in flight would post their verdicts to the loops destroyed
  // on return: leave at once (a benchmark app has nothing to flush).
  std::fflush(stderr);
  std::_Exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  // As traffikd, the no-op server and the load generator do: Debian builds
  // abseil with mutex deadlock detection on, graph-cycle bookkeeping on every
  // absl::Mutex lock (gRPC's included): 0.5-10 us of the throttled app's
  // ~45 us per request. A production app would switch the debugging aid off
  // too (README, "The client library"); the unthrottled mode takes no
  // absl::Mutex either way.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::string mode;
  std::string listen = "127.0.0.1:0";
  std::string tenant;
  traffik::ClientOptions client_options;
  client_options.target.clear();
  std::optional<Coalesce> coalesce;
  uint64_t threads = 64;
  std::string server_kind = "httplib";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(argv[0]);
      return argv[++i];
    };
    if (arg == "--mode") {
      mode = value();
    } else if (arg == "--listen") {
      listen = value();
    } else if (arg == "--target") {
      client_options.target = value();
    } else if (arg == "--tenant") {
      tenant = value();
    } else if (arg == "--server") {
      server_kind = value();
    } else if (arg == "--threads") {
      threads = NumberFlag(argv[0], value(), 1, 4096);
    } else if (arg == "--coalesce-max-delay-us") {
      if (!coalesce) coalesce.emplace();
      coalesce->max_delay_us = NumberFlag(argv[0], value(), 0, 1'000'000);
    } else if (arg == "--coalesce-max-batch") {
      if (!coalesce) coalesce.emplace();
      coalesce->max_batch = NumberFlag(argv[0], value(), 1, 100'000);
    } else {
      Usage(argv[0]);
    }
  }
  const bool raw_grpc = mode == "raw-grpc";
  const bool throttled = mode == "throttled" || raw_grpc;
  if (!throttled && mode != "unthrottled") Usage(argv[0]);
  if (throttled == client_options.target.empty())
    Usage(argv[0]);  // --target iff throttled
  if (coalesce && (!throttled || raw_grpc || coalesce->max_batch == 0)) Usage(argv[0]);
  if (server_kind != "httplib" && (server_kind != "beast" || raw_grpc)) Usage(argv[0]);
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) Usage(argv[0]);
  const std::string host = listen.substr(0, colon);
  const int port =
      static_cast<int>(NumberFlag(argv[0], listen.substr(colon + 1), 0, 65535));

  std::shared_ptr<traffik::Client> client;
  if (throttled && !raw_grpc) {
    if (coalesce && !SetCoalesce(client_options, *coalesce)) {
      std::fprintf(stderr,
                   "traffik_http_app: this client library has no coalescing "
                   "(ClientOptions::coalesce)\n");
      return 3;
    }
    absl::StatusOr<std::shared_ptr<traffik::Client>> created =
        traffik::Client::Create(client_options);
    if (!created.ok()) {
      std::fprintf(stderr, "traffik_http_app: %s\n", created.status().ToString().c_str());
      return 1;
    }
    client = *std::move(created);
  }
  // Throttled: 1,000,000/s per client address, one decision per request.
  const traffik::HttpThrottle per_ip(
      "http_bench", {1'000'000, std::chrono::seconds(1)},
      {.identifier = traffik::ByClientAddress, .tenant = tenant});

  if (server_kind == "beast") {
    ba::Handler handler = ba::Async(BeastOk);
    if (client) handler = ba::Throttled(traffik::HttpThrottler(client), BeastOk, per_ip);
    return ServeBeast(handler, mode, host, port, threads);
  }

  adapter::Server server({.threads = threads});
  if (!throttled) {
    server.Get("/", Ok);
  } else if (raw_grpc) {
    server.Get("/", RawGrpcHandler(client_options.target, tenant));
  } else {
    server.Get("/", adapter::Throttled(traffik::HttpThrottler(client), Ok, per_ip));
  }

  const int bound = port == 0 ? server.bind_to_any_port(host)
                              : (server.bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    std::fprintf(stderr, "traffik_http_app: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  g_server = &server;
  std::signal(SIGINT, Stop);
  std::signal(SIGTERM, Stop);
  std::fprintf(stderr, "traffik_http_app: mode=%s listening http=%s:%d\n", mode.c_str(),
               host.c_str(), bound);
  return server.listen_after_bind() ? 0 : 1;
}
