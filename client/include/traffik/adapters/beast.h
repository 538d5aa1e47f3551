#pragma once

// Boost.Beast adapter (header-only, Boost 1.81): converts requests, responses
// and close frames, and resumes asynchronous checks on the caller's executor.
// The throttling semantics live in traffik/http.h, traffik/middleware.h and
// traffik/websocket.h.
//
// Beast code is asynchronous, so this adapter uses the Client's non-blocking
// calls: the verdict is posted back to the executor you pass (a connection's
// strand), never run on a Client thread.
//
//   namespace ba = traffik::beast_adapter;
//   // HTTP: a route handler, throttled (the decorator), and the app's router
//   // behind the middleware.
//   ba::Handler hello = ba::Throttled(throttler, HelloHandler, hello_throttle);
//   ba::Handler app = ba::WithMiddleware(middleware, router);
//   // in the session, once a request is read:
//   app(std::move(request), ba::HttpContext(peer, stream.get_executor()),
//       [self](ba::Response r) { self->Write(std::move(r)); });
//
//   // WebSocket, per message read: refusals are answered here (error frame
//   // or close); `done(true)` means handle the message.
//   ba::CheckMessage(ws_throttle, connection, ws,
//                    [self](bool allowed) { allowed ? self->Echo() : self->Read(); });
//
// Which RateLimit-* an HTTP response carries: those of the limit that decided
// it (see HttpContext::rate_limit_headers), as with the httplib adapter.

#include <algorithm>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "traffik/http.h"
#include "traffik/middleware.h"
#include "traffik/websocket.h"

namespace traffik::beast_adapter {

// The core's view of a Beast request: method, path (the target up to '?',
// not percent-decoded), query (after '?'), peer (the TCP peer:
// socket.remote_endpoint().address()), headers, the body when the request
// has a string body, and native<boost::beast::http::request<Body, Fields>>().
// Beast has no router, so `route` and `route_params` stay empty. Borrows
// `request` (body, native): see HttpRequest::native.
template <class Body, class Fields>
HttpRequest ToHttpRequest(const boost::beast::http::request<Body, Fields>& request,
                          const boost::asio::ip::address& peer) {
  HttpRequest r;
  const auto method = request.method_string();
  r.method.assign(method.data(), method.size());
  const std::string_view target(request.target().data(), request.target().size());
  const size_t question = target.find('?');
  r.path = std::string(target.substr(0, question));
  if (question != std::string_view::npos)
    r.query = std::string(target.substr(question + 1));
  r.peer_address = peer.to_string();
  for (const auto& field : request) {
    const auto name = field.name_string();
    const auto value = field.value();
    r.headers.emplace_back(std::string(name.data(), name.size()),
                           std::string(value.data(), value.size()));
  }
  if constexpr (std::is_same_v<Body, boost::beast::http::string_body>) {
    r.body = request.body();
  }
  r.set_native(request);
  return r;
}

// Sets `headers` on a Beast response, replacing fields with the same names.
template <class Body, class Fields>
void SetHeaders(const HttpHeaders& headers,
                boost::beast::http::response<Body, Fields>& response) {
  for (const auto& [name, value] : headers) response.set(name, value);
}

// A Beast response for a core response (a 429, a custom one, or a 503).
inline boost::beast::http::response<boost::beast::http::string_body> ToBeastResponse(
    const HttpResponse& from, unsigned version, bool keep_alive) {
  boost::beast::http::response<boost::beast::http::string_body> response{
      static_cast<boost::beast::http::status>(from.status), version};
  response.set(boost::beast::http::field::content_type, from.content_type);
  SetHeaders(from.headers, response);
  response.body() = from.body;
  response.keep_alive(keep_alive);
  response.prepare_payload();
  return response;
}

// A Beast close reason for a core close (the reason is cut to the 123 bytes a
// close frame can carry).
inline boost::beast::websocket::close_reason ToCloseReason(const WebSocketClose& close) {
  boost::beast::websocket::close_reason reason(close.code);
  const size_t size = std::min<size_t>(close.reason.size(), reason.reason.max_size());
  reason.reason.assign(close.reason.data(), size);
  return reason;
}

// The connection for an accepted upgrade (see AcceptWebSocket).
template <class Body, class Fields>
WebSocketConnection AcceptWebSocket(
    const boost::beast::http::request<Body, Fields>& upgrade,
    const boost::asio::ip::address& peer, const TrustedProxies& trusted = {}) {
  return ::traffik::AcceptWebSocket(ToHttpRequest(upgrade, peer), trusted);
}

// HttpThrottler::CheckAsync with `done(HttpVerdict)` posted to `executor`.
// `done` must be copyable.
template <class Executor, class Done>
void CheckAsync(const HttpThrottler& throttler, HttpRequest request,
                std::vector<HttpThrottle> throttles, Executor executor, Done done) {
  throttler.CheckAsync(std::move(request), std::move(throttles),
                       [executor, done = std::move(done)](HttpVerdict verdict) mutable {
                         boost::asio::post(
                             executor, [done, verdict = std::move(verdict)]() mutable {
                               done(std::move(verdict));
                             });
                       });
}

// ThrottleMiddleware::CheckAsync with `done(HttpVerdict)` posted to `executor`.
template <class Executor, class Done>
void CheckAsync(const ThrottleMiddleware& middleware, HttpRequest request,
                Executor executor, Done done) {
  middleware.CheckAsync(std::move(request), [executor, done = std::move(done)](
                                                HttpVerdict verdict) mutable {
    boost::asio::post(executor, [done, verdict = std::move(verdict)]() mutable {
      done(std::move(verdict));
    });
  });
}

// WebSocketThrottle::CheckAsync with `done(WebSocketVerdict)` posted to
// `executor`: call it for each message read, before handling it.
template <class Executor, class Done>
void CheckMessageAsync(const WebSocketThrottle& throttle,
                       const WebSocketConnection& connection, std::string context_key,
                       Executor executor, Done done) {
  throttle.CheckAsync(
      connection, std::move(context_key),
      [executor, done = std::move(done)](WebSocketVerdict verdict) mutable {
        boost::asio::post(executor, [done, verdict = std::move(verdict)]() mutable {
          done(std::move(verdict));
        });
      });
}

// WebSocket, the whole per-message step: checks the message just read from
// `ws` and does the I/O a refusal needs, so the caller only says what comes
// next. `done(bool allowed)` runs on ws's executor:
//   done(true)   the message is allowed: handle it;
//   done(false)  it was refused and is dropped; whatever the refusal needed
//                has been done: the on_throttled frame sent (as text) when it
//                returned one, nothing sent when it returned nullopt, or the
//                connection closed (1008 by default, 1011 on an error). Read
//                the next message: after a close that read fails at once, so
//                the session ends the usual way.
// `ws` must outlive the call (capture the session owning it in `done`), and no
// other write may be pending on it (Beast allows one at a time). `done` must
// be copyable.
template <class NextLayer, bool kDeflate, class Done>
void CheckMessage(const WebSocketThrottle& throttle,
                  const WebSocketConnection& connection,
                  boost::beast::websocket::stream<NextLayer, kDeflate>& ws, Done done,
                  std::string context_key = {}) {
  CheckMessageAsync(
      throttle, connection, std::move(context_key), ws.get_executor(),
      [&ws, done = std::move(done)](WebSocketVerdict verdict) mutable {
        if (verdict.close.has_value()) {
          ws.async_close(ToCloseReason(*verdict.close),
                         [done](boost::beast::error_code) mutable { done(false); });
          return;
        }
        if (verdict.allowed) return done(true);
        if (!verdict.reply.has_value()) return done(false);  // on_throttled: nullopt
        auto reply = std::make_shared<std::string>(std::move(*verdict.reply));
        ws.text(true);
        ws.async_write(boost::asio::buffer(*reply),
                       [reply, done](boost::beast::error_code, std::size_t) mutable {
                         done(false);
                       });
      });
}

// ----------------------------------------------------------------- HTTP routes
//
// Beast has no router, so the adapter defines the shape of an asynchronous
// handler; the decorator (Throttled) and the middleware (WithMiddleware) wrap
// one and return one, so they compose with the app's own dispatch:
//
//   Handler router = [hello, items](Request req, HttpContext ctx, Send send) {
//     if (req.target() == "/hello") return hello(std::move(req), ctx, send);
//     ...
//   };
//   Handler app = WithMiddleware(middleware, router);

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
// Answers the request; call it exactly once, on the connection's executor.
using Send = std::function<void(Response response)>;

// Where a request was read.
struct HttpContext {
  HttpContext(boost::asio::ip::address peer_address, boost::asio::any_io_executor io)
      : peer(std::move(peer_address)), executor(std::move(io)) {}

  // The TCP peer (socket.remote_endpoint().address()); X-Forwarded-For is
  // believed only under the throttler's trusted proxies.
  boost::asio::ip::address peer;
  // The connection's executor (its strand): checked handlers resume here.
  boost::asio::any_io_executor executor;
  // The RateLimit-* headers the response will carry, set by WithMiddleware
  // and Throttled (null when neither ran). They describe the limit that
  // decided the response: a refusing route's own limit on its 429 (the
  // middleware's are dropped), and the most restrictive of the limits that
  // allowed it on a handler's response (fewest remaining; ties: the later
  // reset), the rule HttpVerdict::headers follows.
  std::shared_ptr<HttpHeaders> rate_limit_headers;
};

// An asynchronous route handler: answers `request` through `send`, now or
// later.
using Handler = std::function<void(Request request, HttpContext context, Send send)>;
// A synchronous one: the response for `request`.
using SyncHandler = std::function<Response(const Request& request)>;

namespace beast_adapter_internal {

// `current` becomes `candidate` when that is more restrictive (the rule of
// HttpVerdict::headers: fewest remaining, ties the later reset).
inline void KeepMostRestrictive(HttpHeaders& current, const HttpHeaders& candidate) {
  if (current.empty() || MoreRestrictive(candidate, current)) current = candidate;
}

// `send`, adding the context's RateLimit-* headers first.
inline Send WithHeaders(std::shared_ptr<HttpHeaders> headers, Send send) {
  return [headers = std::move(headers), send = std::move(send)](Response response) {
    SetHeaders(*headers, response);
    send(std::move(response));
  };
}

}  // namespace beast_adapter_internal

// An asynchronous handler for a synchronous one.
inline Handler Async(SyncHandler handler) {
  return [handler = std::move(handler)](Request request, HttpContext, Send send) {
    send(handler(request));
  };
}

// The decorator: `handler` runs (on the context's executor) only when all
// `throttles` allow; the RateLimit-* headers are added to its response. A
// refused request gets the 429 (or the throttle's on_throttled response)
// carrying the route's own RateLimit-* headers, never the middleware's.
inline Handler Throttled(HttpThrottler throttler, Handler handler,
                         std::vector<HttpThrottle> throttles) {
  return [throttler = std::move(throttler), handler = std::move(handler),
          throttles = std::move(throttles)](Request request, HttpContext context,
                                            Send send) {
    // Held until the verdict; `checked` borrows it (body, native<Request>()).
    auto held = std::make_shared<Request>(std::move(request));
    HttpRequest checked = ToHttpRequest(*held, context.peer);
    const boost::asio::any_io_executor executor = context.executor;
    CheckAsync(
        throttler, std::move(checked), throttles, executor,
        [handler, held, context = std::move(context),
         send = std::move(send)](HttpVerdict verdict) mutable {
          if (context.rate_limit_headers == nullptr) {
            context.rate_limit_headers = std::make_shared<HttpHeaders>();
          }
          HttpHeaders& headers = *context.rate_limit_headers;
          if (!verdict.allowed) {
            headers.clear();  // the refusing limit decides alone
            send(ToBeastResponse(*verdict.response, held->version(), held->keep_alive()));
            return;
          }
          beast_adapter_internal::KeepMostRestrictive(headers, verdict.headers);
          Send with_headers = beast_adapter_internal::WithHeaders(
              context.rate_limit_headers, std::move(send));
          handler(std::move(*held), std::move(context), std::move(with_headers));
        });
  };
}

inline Handler Throttled(HttpThrottler throttler, SyncHandler handler,
                         std::vector<HttpThrottle> throttles) {
  return Throttled(std::move(throttler), Async(std::move(handler)), std::move(throttles));
}

template <typename... More>
Handler Throttled(HttpThrottler throttler, Handler handler, HttpThrottle first,
                  More... more) {
  return Throttled(std::move(throttler), std::move(handler),
                   std::vector<HttpThrottle>{std::move(first), std::move(more)...});
}

template <typename... More>
Handler Throttled(HttpThrottler throttler, SyncHandler handler, HttpThrottle first,
                  More... more) {
  return Throttled(std::move(throttler), Async(std::move(handler)),
                   std::vector<HttpThrottle>{std::move(first), std::move(more)...});
}

// The middleware in front of `next` (the app's router): a refused request
// gets the 429 / custom response and never reaches `next`; an allowed one
// carries the middleware's RateLimit-* headers into the response (a throttled
// route below replaces them: see HttpContext::rate_limit_headers). A request
// no rule matches goes to `next` with no headers.
inline Handler WithMiddleware(ThrottleMiddleware middleware, Handler next) {
  return [middleware = std::move(middleware), next = std::move(next)](
             Request request, HttpContext context, Send send) {
    // Held until the verdict; `checked` borrows it (body, native<Request>()).
    auto held = std::make_shared<Request>(std::move(request));
    HttpRequest checked = ToHttpRequest(*held, context.peer);
    const boost::asio::any_io_executor executor = context.executor;
    CheckAsync(
        middleware, std::move(checked), executor,
        [next, held, context = std::move(context),
         send = std::move(send)](HttpVerdict verdict) mutable {
          if (!verdict.allowed) {
            send(ToBeastResponse(*verdict.response, held->version(), held->keep_alive()));
            return;
          }
          if (context.rate_limit_headers == nullptr) {
            context.rate_limit_headers = std::make_shared<HttpHeaders>();
          }
          HttpHeaders& headers = *context.rate_limit_headers;
          beast_adapter_internal::KeepMostRestrictive(headers, verdict.headers);
          Send with_headers = beast_adapter_internal::WithHeaders(
              context.rate_limit_headers, std::move(send));
          next(std::move(*held), std::move(context), std::move(with_headers));
        });
  };
}

}  // namespace traffik::beast_adapter
