// A small cpp-httplib app throttled through traffikd.
//
//   httplib_app [--listen HOST:PORT] [--traffikd HOST:PORT]
//               [--trusted-proxy IP_OR_CIDR]... [--failure-policy allow|deny|raise]
//               [--deadline-ms N] [--first-match]
//
// Routes:
//   GET  /search        decorated: burst (3 per minute) + sustained (100 per
//                       hour), per client address; X-Api-Key: admin-key is
//                       exempt (kUnlimited: no RPC), another key is its own bucket
//   GET  /health        no rule matches: never throttled, no RPC
//   GET|POST /api/...   middleware: "api" 5 per minute on /api/ (admin-key
//                       exempt), "writes" 2 per minute on POST/PUT/DELETE,
//                       "expensive" 1 per minute when X-Expensive is present
//   GET  /static/...    middleware: "static" 10 per minute (regex ^/static/)
// Middleware rules are all-match unless --first-match.
//
// Prints "httplib_app: listening on HOST:PORT" on stderr once serving.
// Stops on SIGINT/SIGTERM.

#include <httplib.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "traffik/adapters/httplib.h"
#include "traffik/client.h"
#include "traffik/http.h"
#include "traffik/middleware.h"

namespace {

using std::chrono::hours;
using std::chrono::minutes;

httplib::Server* g_server = nullptr;

void Stop(int) {
  if (g_server != nullptr) g_server->stop();
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--listen HOST:PORT] [--traffikd HOST:PORT] "
               "[--trusted-proxy IP_OR_CIDR]... [--failure-policy allow|deny|raise] "
               "[--deadline-ms N] [--first-match]\n",
               argv0);
  std::exit(2);
}

// X-Api-Key: admin-key is exempt; another key is its own bucket; no key: the
// default (client address and path).
traffik::Identifier ApiKeyOrAddress(const traffik::HttpRequest& request) {
  std::optional<std::string> key = request.Header("X-Api-Key");
  if (key == "admin-key") return traffik::kUnlimited;
  if (key.has_value()) return "key:" + *key + ":" + request.path;
  return traffik::DefaultHttpIdentifier(request);
}

void Text(httplib::Response& response, const std::string& body) {
  response.set_content(body + "\n", "text/plain; charset=utf-8");
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8080";
  traffik::ClientOptions client_options;
  client_options.failure_policy = traffik::FailurePolicy::kAllow;
  std::vector<std::string> trusted;
  traffik::MiddlewareOptions middleware_options;
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
    } else if (arg == "--first-match") {
      middleware_options.mode = traffik::MatchMode::kFirstMatch;
    } else {
      Usage(argv[0]);
    }
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) Usage(argv[0]);
  const std::string host = listen.substr(0, colon);
  const int port = std::atoi(listen.c_str() + colon + 1);

  absl::StatusOr<std::shared_ptr<traffik::Client>> client =
      traffik::Client::Create(client_options);
  if (!client.ok()) {
    std::fprintf(stderr, "httplib_app: %s\n", client.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<traffik::TrustedProxies> proxies =
      traffik::TrustedProxies::Parse(trusted);
  if (!proxies.ok()) {
    std::fprintf(stderr, "httplib_app: %s\n", proxies.status().ToString().c_str());
    return 2;
  }
  traffik::HttpThrottler throttler(*client, {.trusted_proxies = *proxies});

  // The decorated route: burst and sustained, decided in one batch RPC.
  traffik::HttpThrottle burst({.uid = "search_burst",
                               .spec = traffik::ThrottleSpec{3, minutes(1)},
                               .identifier = ApiKeyOrAddress});
  traffik::HttpThrottle sustained({.uid = "search_sustained",
                                   .spec = traffik::ThrottleSpec{100, hours(1)},
                                   .identifier = ApiKeyOrAddress});

  // Middleware rules, in order.
  traffik::HttpThrottle writes(
      {.uid = "writes", .spec = traffik::ThrottleSpec{2, minutes(1)}});
  traffik::HttpThrottle api({.uid = "api",
                             .spec = traffik::ThrottleSpec{5, minutes(1)},
                             .identifier = ApiKeyOrAddress});
  traffik::HttpThrottle expensive(
      {.uid = "expensive", .spec = traffik::ThrottleSpec{1, minutes(1)}});
  traffik::HttpThrottle assets(
      {.uid = "static", .spec = traffik::ThrottleSpec{10, minutes(1)}});
  std::vector<traffik::MiddlewareRule> rules = {
      {.throttle = writes, .methods = {"POST", "PUT", "DELETE"}},
      {.throttle = api, .path = traffik::PathMatcher::Prefix("/api/")},
      {.throttle = expensive,
       .path = traffik::PathMatcher::Prefix("/api/"),
       .hook =
           [](const traffik::HttpRequest& r) {
             return r.Header("X-Expensive").has_value();
           }},
      {.throttle = assets, .path = traffik::PathMatcher::Regex("^/static/").value()},
  };

  httplib::Server server;
  traffik::httplib_adapter::InstallMiddleware(
      server,
      traffik::ThrottleMiddleware(throttler, std::move(rules), middleware_options));
  server.Get("/search",
             traffik::httplib_adapter::Throttled(
                 throttler,
                 [](const httplib::Request& request, httplib::Response& response) {
                   Text(response, "results for '" + request.get_param_value("q") + "'");
                 },
                 burst, sustained));
  server.Get("/health", [](const httplib::Request&, httplib::Response& response) {
    Text(response, "ok");
  });
  auto api_handler = [](const httplib::Request& request, httplib::Response& response) {
    Text(response, request.method + " " + request.path);
  };
  server.Get("/api/.*", api_handler);
  server.Post("/api/.*", api_handler);
  server.Put("/api/.*", api_handler);
  server.Delete("/api/.*", api_handler);
  server.Get("/static/.*",
             [](const httplib::Request& request, httplib::Response& response) {
               Text(response, "static " + request.path);
             });

  const int bound = port == 0 ? server.bind_to_any_port(host) : port;
  if (port != 0 && !server.bind_to_port(host, port)) {
    std::fprintf(stderr, "httplib_app: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  if (bound < 0) {
    std::fprintf(stderr, "httplib_app: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  g_server = &server;
  std::signal(SIGINT, Stop);
  std::signal(SIGTERM, Stop);
  std::fprintf(stderr, "httplib_app: listening on %s:%d (traffikd %s)\n", host.c_str(),
               bound, client_options.target.c_str());
  return server.listen_after_bind() ? 0 : 1;
}
