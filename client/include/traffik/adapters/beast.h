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
//   // HTTP route:
//   traffik::beast_adapter::CheckAsync(throttler,
//       traffik::beast_adapter::ToHttpRequest(req, peer), {hello_throttle},
//       stream.get_executor(), [self](traffik::HttpVerdict v) { self->Respond(v); });
//
//   // WebSocket, per message:
//   traffik::beast_adapter::CheckMessageAsync(ws_throttle, connection, "",
//       ws.get_executor(), [self](traffik::WebSocketVerdict v) {
//         if (v.close)
//         self->ws_.async_close(traffik::beast_adapter::ToCloseReason(*v.close), ...);
//         ...
//       });

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <string>
#include <utility>
#include <vector>

#include "traffik/http.h"
#include "traffik/middleware.h"
#include "traffik/websocket.h"

namespace traffik::beast_adapter {

// The core's view of a Beast request. `path` is the target up to '?', not
// percent-decoded; `peer` is the TCP peer (socket.remote_endpoint().address()).
template <class Body, class Fields>
HttpRequest ToHttpRequest(const boost::beast::http::request<Body, Fields>& request,
                          const boost::asio::ip::address& peer) {
  HttpRequest r;
  const auto method = request.method_string();
  r.method.assign(method.data(), method.size());
  const auto target = request.target();
  const std::string target_text(target.data(), target.size());
  r.path = target_text.substr(0, target_text.find('?'));
  r.peer_address = peer.to_string();
  for (const auto& field : request) {
    const auto name = field.name_string();
    const auto value = field.value();
    r.headers.emplace_back(std::string(name.data(), name.size()),
                           std::string(value.data(), value.size()));
  }
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

}  // namespace traffik::beast_adapter
