#pragma once

// cpp-httplib adapter (header-only): converts requests and responses; the
// throttling semantics live in traffik/http.h and traffik/middleware.h.
//
// Debian's libcpp-httplib-dev is a compiled library: link it with
// pkg-config's `cpp-httplib` (which also defines CPPHTTPLIB_OPENSSL_SUPPORT
// etc.; the defines must match the library's build). httplib runs handlers on
// its own worker threads, so the blocking Client calls are used.
//
//   traffik::httplib_adapter::Server server;  // production settings, see below
//   traffik::HttpThrottler throttler(client);
//   server.Get("/items/(\\d+)",
//              traffik::httplib_adapter::Throttled(throttler, Items, items));
//   traffik::httplib_adapter::InstallMiddleware(server, {throttler, rules});
//
// Which RateLimit-* a response carries: those of the limit that decided it.
// A 429 carries the refusing throttle's (the one with the longest wait; none
// when its numbers are unknown, e.g. a kDeny answer while traffikd is down),
// never the middleware's. An allowed response carries the most restrictive
// of every throttle that applied, middleware and decorator together (fewest
// remaining tokens; ties: the later reset).

#include <httplib.h>
#include <sys/socket.h>

#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "traffik/http.h"
#include "traffik/middleware.h"

namespace traffik::httplib_adapter {

namespace internal {
// The route pattern of the handler running on this thread, set by Server's
// route registration (httplib keeps only the compiled regex).
inline thread_local const std::string* current_route = nullptr;
}  // namespace internal

// The core's view of an httplib request: method, path, query, peer
// (remote_addr), headers, the body, regex captures as route parameters "1",
// "2", ..., the route pattern (`route`, else the one Server registered the
// running handler under, else none) and native<httplib::Request>(). Borrows
// `request` (body, native): see HttpRequest::native.
inline HttpRequest ToHttpRequest(const ::httplib::Request& request,
                                 const std::string* route = nullptr) {
  HttpRequest r;
  r.method = request.method;
  r.path = request.path;
  if (route == nullptr) route = internal::current_route;
  if (route != nullptr) r.route = *route;
  r.peer_address = request.remote_addr;
  r.headers.reserve(request.headers.size());
  for (const auto& [name, value] : request.headers) r.headers.emplace_back(name, value);
  if (const size_t q = request.target.find('?'); q != std::string::npos) {
    r.query = request.target.substr(q + 1);
  }
  for (size_t i = 1; i < request.matches.size(); ++i) {
    r.route_params.emplace_back(std::to_string(i), request.matches[i].str());
  }
  r.body = request.body;
  r.set_native(request);
  return r;
}

// Sets `headers` on `response`, replacing fields with the same names.
inline void SetHeaders(const HttpHeaders& headers, ::httplib::Response& response) {
  for (const auto& [name, value] : headers) {
    response.headers.erase(name);  // httplib's header map compares case-insensitively
    response.set_header(name, value);
  }
}

// Writes a core response into `response`.
inline void WriteResponse(const HttpResponse& from, ::httplib::Response& response) {
  response.status = from.status;
  SetHeaders(from.headers, response);
  response.set_content(from.body, from.content_type);
}

// Writes a refusal: drops Retry-After and RateLimit-* set earlier (by
// middleware that allowed the request) so the response carries only the
// refusing limit's.
inline void WriteRefusal(const HttpResponse& from, ::httplib::Response& response) {
  for (const std::string& name : DecisionHeaderNames()) response.headers.erase(name);
  WriteResponse(from, response);
}

// Adds an allowed verdict's RateLimit-* unless `response` already carries
// more restrictive ones (from middleware): the most restrictive limit wins.
inline void MergeAllowedHeaders(const HttpHeaders& headers,
                                ::httplib::Response& response) {
  if (headers.empty()) return;
  HttpHeaders present;
  for (const std::string& name : DecisionHeaderNames()) {
    if (response.has_header(name)) {
      present.emplace_back(name, response.get_header_value(name));
    }
  }
  if (!MoreRestrictive(present, headers)) SetHeaders(headers, response);
}

// The decorator: `handler` runs only when all `throttles` allow. Refused:
// the verdict's response (see the header comment for its RateLimit-*).
// Allowed: RateLimit-* are added to the handler's response (the most
// restrictive of these and the middleware's).
inline ::httplib::Server::Handler Throttled(HttpThrottler throttler,
                                            ::httplib::Server::Handler handler,
                                            std::vector<HttpThrottle> throttles) {
  return [throttler = std::move(throttler), handler = std::move(handler),
          throttles = std::move(throttles)](const ::httplib::Request& request,
                                            ::httplib::Response& response) {
    HttpRequest r = ToHttpRequest(request);
    HttpVerdict verdict = throttler.Check(r, throttles);
    if (!verdict.allowed) {
      WriteRefusal(*verdict.response, response);
      return;
    }
    handler(request, response);
    MergeAllowedHeaders(verdict.headers, response);
  };
}

template <typename... More>
::httplib::Server::Handler Throttled(HttpThrottler throttler,
                                     ::httplib::Server::Handler handler,
                                     HttpThrottle first, More... more) {
  return Throttled(std::move(throttler), std::move(handler),
                   std::vector<HttpThrottle>{std::move(first), std::move(more)...});
}

// The pre-routing handler that runs `middleware`, then (when it allows)
// `next` (the app's own pre-routing handler, if any): a refused request gets
// the 429 / custom response and reaches neither `next` nor a route; an allowed
// one carries the RateLimit-* headers into the route's response.
inline ::httplib::Server::HandlerWithResponse MiddlewareHandler(
    ThrottleMiddleware middleware, ::httplib::Server::HandlerWithResponse next = {}) {
  return [middleware = std::move(middleware), next = std::move(next)](
             const ::httplib::Request& request, ::httplib::Response& response) {
    HttpRequest r = ToHttpRequest(request);
    HttpVerdict verdict = middleware.Check(r);
    if (!verdict.allowed) {
      WriteRefusal(*verdict.response, response);
      return ::httplib::Server::HandlerResponse::Handled;
    }
    SetHeaders(verdict.headers, response);
    return next ? next(request, response) : ::httplib::Server::HandlerResponse::Unhandled;
  };
}

// Settings a production server needs (cpp-httplib 0.11's defaults are for
// demos: see Server).
struct ServerOptions {
  // Worker threads; with httplib one thread serves one connection at a time,
  // keep-alive included, so this is the number of clients served at once.
  size_t threads = 64;
  // Nagle off: without it a small response waits ~40 ms for the client's
  // delayed ACK.
  bool tcp_nodelay = true;
  // Requests per keep-alive connection; httplib's default 5 closes busy
  // connections every 5 requests. An idle connection is still closed after
  // httplib's keep-alive timeout (5 s).
  size_t keep_alive_max_count = std::numeric_limits<size_t>::max();
  // The listen backlog (compiled into libcpp-httplib as 5: connections beyond
  // it are dropped and retried by the client after ~1 s). The kernel caps it
  // at net.core.somaxconn.
  int listen_backlog = 4096;
  // SO_REUSEPORT (httplib's default: a second server on the same port binds
  // without error and takes half the connections); false: SO_REUSEADDR only.
  bool reuse_port = false;
};

// Applies `options` to a plain httplib::Server (all but the listen backlog,
// which needs Server).
inline void ApplyServerOptions(::httplib::Server& server, const ServerOptions& options) {
  const size_t threads = options.threads == 0 ? 1 : options.threads;
  server.new_task_queue = [threads] { return new ::httplib::ThreadPool(threads); };
  server.set_tcp_nodelay(options.tcp_nodelay);
  server.set_keep_alive_max_count(options.keep_alive_max_count);
  const bool reuse_port = options.reuse_port;
  server.set_socket_options([reuse_port](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
#ifdef SO_REUSEPORT
    if (reuse_port) setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof(yes));
#endif
  });
}

// An httplib::Server set up for production (ServerOptions), which also:
// - gives throttled routes their pattern: a handler registered with Get,
//   Post, Put, Patch, Delete or Options here sees HttpRequest::route set to
//   the pattern (e.g. "/items/(\d+)"), so the default identifier is one
//   bucket per client and route, not per URL;
// - chains pre-routing handlers: InstallMiddleware and
//   set_pre_routing_handler can be called in either order; the middleware
//   runs first and the app's handler only for requests it allows.
// Register through this type (not a httplib::Server& to it) for both.
// Not thread-safe during setup, like httplib::Server.
class Server : public ::httplib::Server {
 public:
  explicit Server(ServerOptions options = {}) : options_(options) {
    ApplyServerOptions(*this, options_);
  }

  Server& Get(const std::string& pattern, Handler handler) {
    ::httplib::Server::Get(pattern, WithRoute(pattern, std::move(handler)));
    return *this;
  }
  Server& Post(const std::string& pattern, Handler handler) {
    ::httplib::Server::Post(pattern, WithRoute(pattern, std::move(handler)));
    return *this;
  }
  Server& Post(const std::string& pattern, HandlerWithContentReader handler) {
    ::httplib::Server::Post(pattern, std::move(handler));
    return *this;
  }
  Server& Put(const std::string& pattern, Handler handler) {
    ::httplib::Server::Put(pattern, WithRoute(pattern, std::move(handler)));
    return *this;
  }
  Server& Put(const std::string& pattern, HandlerWithContentReader handler) {
    ::httplib::Server::Put(pattern, std::move(handler));
    return *this;
  }
  Server& Patch(const std::string& pattern, Handler handler) {
    ::httplib::Server::Patch(pattern, WithRoute(pattern, std::move(handler)));
    return *this;
  }
  Server& Patch(const std::string& pattern, HandlerWithContentReader handler) {
    ::httplib::Server::Patch(pattern, std::move(handler));
    return *this;
  }
  Server& Delete(const std::string& pattern, Handler handler) {
    ::httplib::Server::Delete(pattern, WithRoute(pattern, std::move(handler)));
    return *this;
  }
  Server& Delete(const std::string& pattern, HandlerWithContentReader handler) {
    ::httplib::Server::Delete(pattern, std::move(handler));
    return *this;
  }
  Server& Options(const std::string& pattern, Handler handler) {
    ::httplib::Server::Options(pattern, WithRoute(pattern, std::move(handler)));
    return *this;
  }

  // The app's own pre-routing handler: runs after the middleware (if any)
  // has allowed the request.
  Server& set_pre_routing_handler(HandlerWithResponse handler) {
    app_pre_routing_ = std::move(handler);
    return Reinstall();
  }
  // Throttles every request with `middleware` before routing (replacing a
  // middleware installed before; the app's pre-routing handler is kept).
  Server& set_middleware(ThrottleMiddleware middleware) {
    middleware_.assign(1, std::move(middleware));
    return Reinstall();
  }

  // As httplib's, then the listen backlog is raised to
  // ServerOptions::listen_backlog.
  bool bind_to_port(const std::string& host, int port, int socket_flags = 0) {
    return ::httplib::Server::bind_to_port(host, port, socket_flags) && RaiseBacklog();
  }
  int bind_to_any_port(const std::string& host, int socket_flags = 0) {
    const int port = ::httplib::Server::bind_to_any_port(host, socket_flags);
    return port >= 0 && RaiseBacklog() ? port : -1;
  }
  bool listen(const std::string& host, int port, int socket_flags = 0) {
    return bind_to_port(host, port, socket_flags) && listen_after_bind();
  }

 private:
  static Handler WithRoute(const std::string& pattern, Handler handler) {
    return [route = pattern, handler = std::move(handler)](
               const ::httplib::Request& request, ::httplib::Response& response) {
      // Restored even if the handler throws (httplib catches exceptions).
      struct Scope {
        const std::string* outer = internal::current_route;
        ~Scope() { internal::current_route = outer; }
      } scope;
      internal::current_route = &route;
      handler(request, response);
    };
  }

  Server& Reinstall() {
    if (middleware_.empty()) {
      ::httplib::Server::set_pre_routing_handler(app_pre_routing_);
    } else {
      ::httplib::Server::set_pre_routing_handler(
          MiddlewareHandler(middleware_.front(), app_pre_routing_));
    }
    return *this;
  }

  // listen() again on the listening socket: Linux takes the new backlog.
  bool RaiseBacklog() { return ::listen(svr_sock_, options_.listen_backlog) == 0; }

  ServerOptions options_;
  HandlerWithResponse app_pre_routing_;
  std::vector<ThrottleMiddleware> middleware_;  // 0 or 1 (no default constructor)
};

// Runs `middleware` before routing. On a traffik::httplib_adapter::Server it
// chains with the app's own pre-routing handler (see Server). On a plain
// httplib::Server, whose handler cannot be read back, pass the app's
// pre-routing handler as `next` (it runs after the middleware allows); the
// server's current one is replaced.
inline void InstallMiddleware(Server& server, ThrottleMiddleware middleware) {
  server.set_middleware(std::move(middleware));
}
inline void InstallMiddleware(::httplib::Server& server, ThrottleMiddleware middleware,
                              ::httplib::Server::HandlerWithResponse next = {}) {
  server.set_pre_routing_handler(
      MiddlewareHandler(std::move(middleware), std::move(next)));
}

}  // namespace traffik::httplib_adapter
