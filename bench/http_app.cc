// The HTTP benchmark's app: one cpp-httplib route `/`, served unthrottled or
// throttled through traffik::client + traffikd (bench/run_http_bench.sh
// drives it with wrk).
//
//   traffik_http_app --mode unthrottled [--listen HOST:PORT] [--threads N]
//   traffik_http_app --mode throttled|raw-grpc --target HOST:PORT [--tenant NAME]
//                    [--coalesce-max-delay-us N --coalesce-max-batch N]
//                    [--listen HOST:PORT] [--threads N]
//
// Throttled: `/` is limited to 1,000,000 requests per second per client
// address (ByClientAddress, an inline spec), so it never refuses: every
// request pays exactly one decision. Unthrottled: the same server and the
// same handler without the decorator. Both modes use the same tuning, the one
// a user would pick (traffik::httplib_adapter::Server: a thread per
// keep-alive connection, unlimited requests per connection, TCP_NODELAY).
//
// Prints "listening http=HOST:PORT" on stderr once bound (port 0: a free
// one), then serves until SIGINT/SIGTERM. A request the limiter answers with
// an error (traffikd down) gets a 503, which wrk counts as a non-2xx.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
               "[--listen HOST:PORT] [--threads N]\n",
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
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) Usage(argv[0]);
  const std::string host = listen.substr(0, colon);
  const int port =
      static_cast<int>(NumberFlag(argv[0], listen.substr(colon + 1), 0, 65535));

  adapter::Server server({.threads = threads});
  if (!throttled) {
    server.Get("/", Ok);
  } else if (raw_grpc) {
    server.Get("/", RawGrpcHandler(client_options.target, tenant));
  } else {
    if (coalesce && !SetCoalesce(client_options, *coalesce)) {
      std::fprintf(stderr,
                   "traffik_http_app: this client library has no coalescing "
                   "(ClientOptions::coalesce)\n");
      return 3;
    }
    absl::StatusOr<std::shared_ptr<traffik::Client>> client =
        traffik::Client::Create(client_options);
    if (!client.ok()) {
      std::fprintf(stderr, "traffik_http_app: %s\n", client.status().ToString().c_str());
      return 1;
    }
    traffik::HttpThrottler throttler(*client);
    traffik::HttpThrottle per_ip(
        "http_bench", {1'000'000, std::chrono::seconds(1)},
        {.identifier = traffik::ByClientAddress, .tenant = tenant});
    server.Get("/", adapter::Throttled(throttler, Ok, per_ip));
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
