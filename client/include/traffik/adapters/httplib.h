#pragma once

// cpp-httplib adapter (header-only): converts requests and responses; the
// throttling semantics live in traffik/http.h and traffik/middleware.h.
//
// Debian's libcpp-httplib-dev is a compiled library: link it with
// pkg-config's `cpp-httplib` (which also defines CPPHTTPLIB_OPENSSL_SUPPORT
// etc.; the defines must match the library's build). httplib runs handlers on
// its own worker threads, so the blocking Client calls are used.
//
//   httplib::Server server;
//   traffik::HttpThrottler throttler(client);
//   server.Get("/search", traffik::httplib_adapter::Throttled(throttler, Search, burst,
//   sustained)); traffik::httplib_adapter::InstallMiddleware(server,
//   traffik::ThrottleMiddleware(throttler, rules));

#include <httplib.h>

#include <string>
#include <utility>
#include <vector>

#include "traffik/http.h"
#include "traffik/middleware.h"

namespace traffik::httplib_adapter {

// The core's view of an httplib request (peer = remote_addr).
inline HttpRequest ToHttpRequest(const ::httplib::Request& request) {
  HttpRequest r;
  r.method = request.method;
  r.path = request.path;
  r.peer_address = request.remote_addr;
  r.headers.reserve(request.headers.size());
  for (const auto& [name, value] : request.headers) r.headers.emplace_back(name, value);
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

// The decorator: `handler` runs only when all `throttles` allow; RateLimit-*
// are added to its response (replacing any set before, e.g. by middleware).
inline ::httplib::Server::Handler Throttled(HttpThrottler throttler,
                                            ::httplib::Server::Handler handler,
                                            std::vector<HttpThrottle> throttles) {
  return [throttler = std::move(throttler), handler = std::move(handler),
          throttles = std::move(throttles)](const ::httplib::Request& request,
                                            ::httplib::Response& response) {
    HttpRequest r = ToHttpRequest(request);
    HttpVerdict verdict = throttler.Check(r, throttles);
    if (!verdict.allowed) {
      WriteResponse(*verdict.response, response);
      return;
    }
    handler(request, response);
    SetHeaders(verdict.headers, response);
  };
}

template <typename... More>
::httplib::Server::Handler Throttled(HttpThrottler throttler,
                                     ::httplib::Server::Handler handler,
                                     HttpThrottle first, More... more) {
  return Throttled(std::move(throttler), std::move(handler),
                   std::vector<HttpThrottle>{std::move(first), std::move(more)...});
}

// Runs `middleware` before routing (httplib's pre-routing handler, which this
// replaces): a refused request gets the 429 / custom response and never
// reaches a route; an allowed one carries the RateLimit-* headers into the
// route's response (a decorator on the route overwrites them with its own).
inline void InstallMiddleware(::httplib::Server& server, ThrottleMiddleware middleware) {
  server.set_pre_routing_handler(
      [middleware = std::move(middleware)](const ::httplib::Request& request,
                                           ::httplib::Response& response) {
        HttpRequest r = ToHttpRequest(request);
        HttpVerdict verdict = middleware.Check(r);
        if (!verdict.allowed) {
          WriteResponse(*verdict.response, response);
          return ::httplib::Server::HandlerResponse::Handled;
        }
        SetHeaders(verdict.headers, response);
        return ::httplib::Server::HandlerResponse::Unhandled;
      });
}

}  // namespace traffik::httplib_adapter
