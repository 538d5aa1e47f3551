// A small cpp-httplib app throttled through traffikd.
//
//   httplib_app [--listen HOST:PORT] [--traffikd HOST:PORT]
//               [--trusted-proxy IP_OR_CIDR]... [--failure-policy allow|deny|raise]
//               [--deadline-ms N] [--first-match] [--max-body-bytes N]
//               [--max-connections N] [--threads N]
//               [credential flags: credential_flags.h]
//
// Routes:
//   GET  /search        decorated: burst (3 per minute) + sustained (100 per
//                       hour), per client address; X-Api-Key: admin-key is
//                       exempt (kUnlimited: no RPC), another key is its own bucket
//   GET  /items/<n>     decorated: 5 per 10 s per client address and route
//                       (one bucket for all /items/<n>: the route pattern)
//   POST /login         decorated: 3 per minute per form field `username`,
//                       a JSON 429
//   GET  /health        no rule matches: never throttled, no RPC
//   GET|POST /api/...   middleware: "api" 5 per minute on /api/ (admin-key
//                       exempt), "writes" 2 per minute on POST/PUT/DELETE
//                       to /api/,
//                       "expensive" 1 per minute when X-Expensive is present,
//                       "api_per_ip" 100 per minute per client address
//   GET  /static/...    middleware: "static" 10 per minute (regex ^/static/)
// The app's own pre-routing handler (X-Served-By on every response) runs
// after the middleware, for the requests it allows.
// Middleware rules are all-match unless --first-match. Rules match the
// normalized path (traffik::NormalizeHttpPath: "/api//x", "/api/./x",
// "/%61pi/x" are "/api/x"), and the identifiers use it too, so no spelling of
// a path gets a bucket of its own.
//
// Serving (traffik::httplib_adapter::Server, ServerOptions): --threads
// workers (default 64; httplib serves one connection per thread), TCP_NODELAY,
// unlimited requests per keep-alive connection (idle ones closed after 5 s),
// a listen backlog of 4096 and no SO_REUSEPORT (a taken port is an error).
// Bounds (cpp-httplib's defaults are unlimited for the first two):
//   --max-body-bytes   request bodies above this are refused with 413 before
//                      they are read (default 65536);
//   --max-connections  connections being served or waiting for a worker
//                      (default 256); beyond it the accept loop waits, so
//                      further connections stay in the listen backlog (and
//                      are refused when it is full);
// and httplib's own: request line and each header line at most 8 KiB, 5 s
// read and write timeouts.
// Responses echo caller text (the path, the query) only quoted and cut to 64
// bytes.
//
// Prints "httplib_app: listening on HOST:PORT" on stderr once serving.
// Stops on SIGINT/SIGTERM.

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "credential_flags.h"
#include "traffik/adapters/httplib.h"
#include "traffik/client.h"
#include "traffik/http.h"
#include "traffik/middleware.h"

namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
namespace adapter = traffik::httplib_adapter;

httplib::Server* g_server = nullptr;

void Stop(int) {
  if (g_server != nullptr) g_server->stop();
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--listen HOST:PORT] [--traffikd HOST:PORT] "
               "[--trusted-proxy IP_OR_CIDR]... [--failure-policy allow|deny|raise] "
               "[--deadline-ms N] [--first-match] [--max-body-bytes N] "
               "[--max-connections N] [--threads N] %s\n",
               argv0, traffik_examples::kCredentialUsage);
  std::exit(2);
}

// X-Api-Key: admin-key is exempt; another key is its own bucket; no key: the
// default (client address and path).
traffik::Identifier ApiKeyOrAddress(const traffik::HttpRequest& request) {
  std::optional<std::string> key = request.Header("X-Api-Key");
  if (key == "admin-key") return traffik::kUnlimited;
  // The key is caller text of any length and bytes: the Client sends an
  // identifier over its max_identifier_bytes as a digest, so a huge key is
  // throttled like any other. The path is normalized like the default's.
  if (key.has_value()) {
    return "key:" + *key + ":" + traffik::NormalizeHttpPath(request.path);
  }
  return traffik::DefaultHttpIdentifier(request);
}

// Caller text as a JSON string: quoted, at most 64 bytes, control bytes,
// quotes and backslashes escaped (\u00XX), non-ASCII bytes dropped.
std::string Json(std::string_view text) {
  constexpr size_t kMax = 64;
  std::string out = "\"";
  for (const char c : text.substr(0, kMax)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '"' || c == '\\') {
      char escaped[7];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", byte);
      out += escaped;
    } else if (byte < 0x80) {
      out.push_back(c);
    }
  }
  return out + "\"";
}

void Text(httplib::Response& response, const std::string& body) {
  response.set_content(body + "\n", "text/plain; charset=utf-8");
}

// Caller text for a response: quoted, at most 64 bytes, control bytes and
// quotes escaped.
std::string Quoted(std::string_view text) {
  constexpr size_t kMax = 64;
  std::string out = "\"";
  for (const char c : text.substr(0, kMax)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '"' || c == '\\') {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
      out += escaped;
    } else {
      out.push_back(c);
    }
  }
  out += text.size() > kMax ? "\"..." : "\"";
  return out;
}

void Item(const httplib::Request& request, httplib::Response& response) {
  Text(response, "item " + Quoted(request.matches[1].str()));
}

void Login(const httplib::Request& request, httplib::Response& response) {
  response.set_content("{\"user\":" + Json(request.get_param_value("username")) + "}",
                       "application/json");
}

// httplib's thread pool with a bound on the connections it holds (being
// served or queued): enqueue() waits while `max` are held, so the accept loop
// stops accepting until a worker is done with a connection.
class BoundedThreadPool : public httplib::TaskQueue {
 public:
  BoundedThreadPool(size_t threads, size_t max) : pool_(threads), max_(max) {}

  void enqueue(std::function<void()> fn) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      room_.wait(lock, [this] { return held_ < max_; });
      ++held_;
    }
    pool_.enqueue([this, fn = std::move(fn)] {
      fn();
      {
        std::lock_guard<std::mutex> lock(mu_);
        --held_;
      }
      room_.notify_one();
    });
  }
  void shutdown() override { pool_.shutdown(); }

 private:
  httplib::ThreadPool pool_;
  const size_t max_;
  std::mutex mu_;
  std::condition_variable room_;
  size_t held_ = 0;  // guarded by mu_
};

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
  std::string listen = "127.0.0.1:8080";
  traffik::ClientOptions client_options;
  traffik_examples::CredentialFlags credentials;
  client_options.failure_policy = traffik::FailurePolicy::kAllow;
  std::vector<std::string> trusted;
  traffik::MiddlewareOptions middleware_options;
  uint64_t max_body_bytes = 64 * 1024;
  uint64_t max_connections = 256;
  uint64_t threads = 64;
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
    } else if (arg == "--max-body-bytes") {
      max_body_bytes = PositiveFlag(argv[0], value(), 1ull << 30);
    } else if (arg == "--max-connections") {
      max_connections = PositiveFlag(argv[0], value(), 1'000'000);
    } else if (arg == "--threads") {
      threads = PositiveFlag(argv[0], value(), 4096);
    } else {
      Usage(argv[0]);
    }
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) Usage(argv[0]);
  const std::string host = listen.substr(0, colon);
  const int port = std::atoi(listen.c_str() + colon + 1);
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
      {.throttle = writes,
       .path = traffik::PathMatcher::Prefix("/api/"),
       .methods = {"POST", "PUT", "DELETE"}},
      {.throttle = api, .path = traffik::PathMatcher::Prefix("/api/")},
      {.throttle = expensive,
       .path = traffik::PathMatcher::Prefix("/api/"),
       .hook =
           [](const traffik::HttpRequest& r) {
             return r.Header("X-Expensive").has_value();
           }},
      {.throttle = assets, .path = traffik::PathMatcher::Regex("^/static/").value()},
  };

  adapter::Server server({.threads = threads});
  server.set_payload_max_length(max_body_bytes);
  server.new_task_queue = [threads, max_connections] {
    return new BoundedThreadPool(threads, max_connections);
  };
  // The app's own pre-routing handler: kept, run after the middleware allows.
  server.set_pre_routing_handler(
      [](const httplib::Request&, httplib::Response& response) {
        response.set_header("X-Served-By", "httplib_app");
        return httplib::Server::HandlerResponse::Unhandled;
      });

  // Global rule: 100 per minute per client address on /api/.
  traffik::HttpThrottle per_ip("api_per_ip", {100, minutes(1)},
                               {.identifier = traffik::ByClientAddress});
  rules.push_back({.throttle = per_ip, .path = traffik::PathMatcher::Prefix("/api/")});
  adapter::InstallMiddleware(server, {throttler, std::move(rules), middleware_options});

  server.Get("/search",
             adapter::Throttled(
                 throttler,
                 [](const httplib::Request& request, httplib::Response& response) {
                   Text(response, "results for " + Quoted(request.get_param_value("q")));
                 },
                 burst, sustained));

  // 5 per 10 s per client address, one bucket for the route (its pattern).
  traffik::HttpThrottle items("items", {5, seconds(10)});
  server.Get(R"(/items/(\d+))", adapter::Throttled(throttler, Item, items));

  // 3 logins per minute per username (form field), answered with a JSON 429.
  traffik::HttpThrottle login(
      "login", {3, minutes(1)},
      {.identifier = traffik::ByFormField("username"),
       .on_throttled = traffik::TooManyRequestsWith(
           R"({"error":"too many login attempts","retry_after":{retry_after}})")});
  server.Post("/login", adapter::Throttled(throttler, Login, login));

  server.Get("/health", [](const httplib::Request&, httplib::Response& response) {
    Text(response, "ok");
  });
  auto api_handler = [](const httplib::Request& request, httplib::Response& response) {
    Text(response, request.method + " " + Quoted(request.path));
  };
  server.Get("/api/.*", api_handler);
  server.Post("/api/.*", api_handler);
  server.Put("/api/.*", api_handler);
  server.Delete("/api/.*", api_handler);
  server.Get("/static/.*",
             [](const httplib::Request& request, httplib::Response& response) {
               Text(response, "static " + Quoted(request.path));
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
