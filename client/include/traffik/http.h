#pragma once

// HTTP throttling on top of traffik::Client, independent of any web framework.
//
// The pieces (the seed library's HTTPThrottle, identifiers, UNLIMITED,
// handle_throttled, multiple throttles and the `throttled` decorator):
//
//   HttpRequest    the request facts the core needs; an adapter fills it in
//                  (traffik/adapters/httplib.h, traffik/adapters/beast.h).
//   HttpThrottle   one throttle: uid, inline spec or server-configured, an
//                  identifier function, an on_throttled handler, cost, tenant
//                  and failure policy. A cheap-to-copy, immutable handle.
//   HttpThrottler  a Client plus the trusted proxies: decides a request
//                  against one or several throttles and produces the 429
//                  (or the custom response) and the RateLimit-* headers.
//   Throttled()    the decorator: wraps a handler with throttles.
//
// The middleware with ordered rules is in traffik/middleware.h; WebSocket
// message throttling is in traffik/websocket.h.
//
// Example:
//
//   auto client = traffik::Client::Create({.target = "127.0.0.1:50051"}).value();
//   traffik::HttpThrottler throttler(client);
//   traffik::HttpThrottle burst({.uid = "search_burst",
//                                .spec = traffik::ThrottleSpec{10,
//                                std::chrono::minutes(1)}});
//   traffik::HttpThrottle sustained({.uid = "search_sustained",
//                                    .spec = traffik::ThrottleSpec{100,
//                                    std::chrono::hours(1)}});
//   traffik::HttpHandler search = traffik::Throttled(throttler, SearchHandler, burst,
//   sustained);

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "traffik/client.h"

namespace traffik {

// Header fields in order, as (name, value). Names compare case-insensitively.
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// The facts about an HTTP request that throttling needs. Adapters build one
// per request; identifier functions, hooks and on_throttled handlers read it.
struct HttpRequest {
  std::string method;        // as received, e.g. "GET"
  std::string path;          // the request path without the query string
  std::string route;         // the matched route pattern if the framework knows it
                             // (e.g. "/users/:id", httplib's "/items/(\d+)");
                             // empty: `path` is used
  std::string peer_address;  // the TCP peer's IP address, no port ("10.0.0.7", "::1")
  HttpHeaders headers;       // as received
  // The address of the client, resolved by the HttpThrottler from
  // `peer_address` and X-Forwarded-For under its trusted proxies (see
  // ClientAddress()). Set by HttpThrottler::Check before identifier functions
  // run; whatever the adapter put here is overwritten.
  std::string client_address;
  // The raw query string, without the "?" ("q=a%20b&page=2"); empty if none.
  std::string query;
  // The route's parameters as (name, value), when the framework matched a
  // route: named ones ("id" for "/users/:id"), or regex captures named "1",
  // "2", ... (httplib). Empty before routing (middleware).
  std::vector<std::pair<std::string, std::string>> route_params;
  // The request body, when the framework has read it (a route's decorator;
  // not middleware, which runs before the body is read). Borrowed from the
  // framework's request: see native().
  std::string_view body;

  // The value of header `name` (case-insensitive). Several fields with that
  // name are joined with ", " (RFC 9110 section 5.3). nullopt when absent.
  std::optional<std::string> Header(std::string_view name) const;
  // `route` if set, else `path`.
  const std::string& RouteOrPath() const { return route.empty() ? path : route; }

  // The first value of query parameter `name`, percent-decoded ("+" is a
  // space); nullopt when absent. Linear in the query's size.
  std::optional<std::string> QueryParam(std::string_view name) const;
  // The first value of form field `name` from an
  // application/x-www-form-urlencoded `body`, decoded like QueryParam;
  // nullopt when absent, when the body is not such a form, or not read yet.
  std::optional<std::string> FormParam(std::string_view name) const;
  // The route parameter `name` ("id", or "1" for the first capture); nullopt
  // when absent.
  std::optional<std::string> RouteParam(std::string_view name) const;

  // The framework's own request object (e.g. native<httplib::Request>(),
  // native<boost::beast::http::request<...>>()), or nullptr when the adapter
  // gave another type or none. Borrowed, like `body`: valid while the
  // adapter's call runs, so identifier, tenant, cost and hook functions can
  // always use it; an on_throttled handler can in a blocking Check only
  // (HttpThrottler::CheckAsync clears `native` and `body` once the
  // identifiers have run, since it returns before the answer).
  template <typename T>
  const T* native() const {
    return native_type == &typeid(T) ? static_cast<const T*>(native_object) : nullptr;
  }
  // Set by adapters: `request` must outlive the synchronous use (see native()).
  template <typename T>
  void set_native(const T& request) {
    native_object = &request;
    native_type = &typeid(T);
  }
  // Forgets the borrowed parts: native() is nullptr and `body` empty after.
  void clear_native() {
    native_object = nullptr;
    native_type = nullptr;
    body = {};
  }

  // What set_native() stores (public so that HttpRequest stays an aggregate;
  // use native()).
  const void* native_object = nullptr;
  const std::type_info* native_type = nullptr;
};

// A response the core wants sent instead of calling the handler.
struct HttpResponse {
  int status = 200;
  HttpHeaders headers;  // besides Content-Type
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;

  // Sets header `name` to `value`, replacing any field with that name.
  void SetHeader(std::string_view name, std::string value);
  // Removes every field named `name` (case-insensitive).
  void RemoveHeader(std::string_view name);
  // The first value of header `name` (case-insensitive), nullopt when absent.
  std::optional<std::string> Header(std::string_view name) const;
};

// ---------------------------------------------------------------- identifiers

// The type of kUnlimited.
struct UnlimitedTag {
  friend bool operator==(UnlimitedTag, UnlimitedTag) { return true; }
};
// Returned by an identifier function to exempt a request from a throttle: no
// RPC is made for that throttle and it adds no headers.
inline constexpr UnlimitedTag kUnlimited{};

// What an identifier function returns: the key of the bucket ("who is
// limited"; the server keys buckets by tenant, uid and this), or kUnlimited.
class Identifier {
 public:
  Identifier(std::string value) : value_(std::move(value)) {}  // NOLINT: implicit
  Identifier(const char* value) : value_(value) {}             // NOLINT: implicit
  Identifier(UnlimitedTag) : unlimited_(true) {}               // NOLINT: implicit

  bool unlimited() const { return unlimited_; }
  // The key; empty when unlimited(). Any bytes. An empty key from a custom
  // function is never sent: the throttle uses the default identifier
  // (DefaultHttpIdentifier / DefaultWebSocketIdentifier) instead. A key longer
  // than ClientOptions::max_identifier_bytes is sent in its digest form
  // (WireIdentifier), so it is throttled like any other.
  const std::string& value() const { return value_; }

 private:
  std::string value_;
  bool unlimited_ = false;
};

using HttpIdentifierFn = std::function<Identifier(const HttpRequest& request)>;

// What NormalizeHttpPath does with a trailing slash.
enum class TrailingSlash {
  kRemove,  // "/api/x/" -> "/api/x" (the default identifier)
  kKeep,    // "/api/x/" stays (PathMatcher: "/api/" still matches Prefix("/api/"))
};

// The canonical form of a request path, so that spellings of one resource
// share one bucket (and one middleware rule). Applied in this order:
//  1. percent-encoding: "%XX" encoding an unreserved character (RFC 3986:
//     A-Z a-z 0-9 - . _ ~) is decoded ("/%61pi" -> "/api"); any other valid
//     "%XX" is kept with upper-case hex digits ("%2f" -> "%2F"; an encoded
//     slash stays encoded); an invalid "%" sequence is kept as it is;
//  2. segments: the path is split at "/", and empty segments ("//") and "."
//     segments are dropped, ".." drops the segment before it (never above
//     the root: "/../x" -> "/x"); so "/api//x", "/api/./x" and "/api/y/../x"
//     are all "/api/x" (dot segments produced by step 1 count: "/api/%2e%2e/x"
//     -> "/x");
//  3. the result starts with "/" ("" -> "/", "api/x" -> "/api/x"); with
//     TrailingSlash::kRemove it never ends with "/" except for the root
//     ("/api/x/" -> "/api/x"); with kKeep it ends with "/" when the input's
//     last segment was empty, "." or ".." ("/api/" -> "/api/", "/api/x/.." ->
//     "/api/").
// Case is kept (paths are case-sensitive), as are all other bytes. Linear in
// the path's size. The query string is not part of a path: strip it first.
std::string NormalizeHttpPath(std::string_view path,
                              TrailingSlash trailing = TrailingSlash::kRemove);

// The default HTTP identifier: "<client address>:<route or normalized path>",
// e.g. "203.0.113.9:/api/search" ("unknown" when the adapter gave no address).
// The route (a pattern the framework matched) is used as it is; the path is
// normalized (NormalizeHttpPath with TrailingSlash::kRemove), so
// "/api/x", "/api//x", "/api/./x", "/api/x/", "/api/y/../x" and "/api/%78"
// are one bucket.
Identifier DefaultHttpIdentifier(const HttpRequest& request);

// Ready-made identifier functions (HttpThrottleOptions::identifier), e.g.
// `.identifier = traffik::ByFormField("username")` for "3 logins per minute
// per username". The key names the source, so different sources never share
// a bucket: "ip:<client address>", "header:<name>=<value>",
// "query:<name>=<value>", "form:<name>=<value>", "route:<name>=<value>"
// (values decoded, any bytes; a long one is sent as its digest, see
// WireIdentifier). A request without the field falls back to the default
// identifier (client address and route or path), so it is still limited.
//
// The client address alone (the resolved one, see ClientAddress): one bucket
// per client across all paths, e.g. for a middleware rule over "/api/".
Identifier ByClientAddress(const HttpRequest& request);
HttpIdentifierFn ByHeader(std::string name);
HttpIdentifierFn ByQueryParam(std::string name);
// Only where the body has been read: a route's decorator, not middleware.
HttpIdentifierFn ByFormField(std::string name);
HttpIdentifierFn ByRouteParam(std::string name);

// ------------------------------------------------------------- trusted proxies

// A set of proxy addresses whose X-Forwarded-For is believed: exact IPs and
// CIDR blocks, IPv4 and IPv6 ("10.0.0.0/8", "192.168.1.7", "::1",
// "fd00::/8"). IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4
// entries. Immutable; thread-safe.
class TrustedProxies {
 public:
  TrustedProxies() = default;  // empty: trusts nobody
  // kInvalidArgument naming the bad entry.
  static absl::StatusOr<TrustedProxies> Parse(const std::vector<std::string>& entries);

  bool empty() const { return blocks_.empty(); }
  // True if `address` (an IP in text form, optionally "[v6]" or with a
  // ":port" after an IPv4 address) is in the set. False for non-addresses.
  bool Contains(std::string_view address) const;

 private:
  struct Block {
    unsigned char bytes[16];  // IPv6, or IPv4 as ::ffff:a.b.c.d
    int prefix_bits;          // 0..128
  };
  std::vector<Block> blocks_;
};

// The canonical text of an IP address ("::ffff:10.0.0.1" -> "10.0.0.1",
// "[::1]" -> "::1", "10.0.0.1:5000" -> "10.0.0.1"); nullopt if `text` is not
// an IP address.
std::optional<std::string> NormalizeIpAddress(std::string_view text);

// The address the request comes from:
// - the peer address, unless the peer is a trusted proxy;
// - if it is, the X-Forwarded-For chain is read right to left (each proxy
//   appends the address it received from) and the first entry that is not a
//   trusted proxy is the client: the right-most untrusted address. Entries to
//   its left were written by the client itself and are never believed.
// - if every entry is trusted, the left-most one; if the walk meets an entry
//   that is not an IP address, the last trusted hop before it (a garbage
//   entry is never used as an identity).
// With no trusted proxies X-Forwarded-For is ignored. Addresses are
// normalized (NormalizeIpAddress); an unparsable peer address is used as is.
std::string ClientAddress(const HttpRequest& request, const TrustedProxies& trusted);

// -------------------------------------------------------------------- headers

// Retry-After for `wait`: whole seconds, rounded up, at least 1.
int64_t RetryAfterSeconds(std::chrono::milliseconds wait);

// RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset (seconds until the
// bucket is full again, rounded up) for `result`; empty when the limit is
// unknown (result.limit == 0, e.g. an answer from the failure policy).
HttpHeaders RateLimitHeaders(const ThrottleResult& result);

// The default response for a throttled request: 429 with Retry-After, the
// RateLimit-* headers and a short text body ("rate limited; retry in 3s").
HttpResponse TooManyRequests(const ThrottleResult& result);

// The names of the headers a decision sets: Retry-After, RateLimit-Limit,
// RateLimit-Remaining, RateLimit-Reset.
const std::vector<std::string>& DecisionHeaderNames();

// True when RateLimit-* `a` describe a bucket closer to refusing than `b`:
// fewer remaining tokens, or as many and a later reset. Headers without
// RateLimit-Remaining are never more restrictive; any are more restrictive
// than none.
bool MoreRestrictive(const HttpHeaders& a, const HttpHeaders& b);

// ------------------------------------------------------------------ throttles

// Replaces the default 429 for a refused request. `result` is the refusing
// throttle's answer (result.wait > 0). Retry-After and RateLimit-* for
// `result` are then set on the returned response, replacing any it has,
// unless HttpThrottleOptions::keep_throttled_response is set.
using HttpThrottledFn =
    std::function<HttpResponse(const HttpRequest& request, const ThrottleResult& result)>;

// An on_throttled that answers the default 429 (TooManyRequests: status,
// Retry-After, RateLimit-*) with `body` and `content_type` instead of the
// text body. Every "{retry_after}" in `body` becomes the Retry-After seconds:
//   .on_throttled = traffik::TooManyRequestsWith(
//       R"({"error":"rate_limited","retry_after":{retry_after}})")
HttpThrottledFn TooManyRequestsWith(std::string body,
                                    std::string content_type = "application/json");

struct HttpThrottleOptions {
  std::string uid;  // the throttle uid on the server (required)
  // The inline definition, used by the server when `uid` is not configured
  // there; nullopt: the throttle must be configured on the server.
  std::optional<ThrottleSpec> spec;
  HttpIdentifierFn identifier;   // empty: DefaultHttpIdentifier
  HttpThrottledFn on_throttled;  // empty: TooManyRequests
  uint32_t cost = 1;             // tokens a request takes
  std::string tenant;            // empty: the server's default tenant
  // When traffikd cannot answer; nullopt: the Client's default policy.
  std::optional<FailurePolicy> failure_policy;
  // Per-request tenant (e.g. from a verified JWT claim: the quota tier);
  // set: replaces `tenant` for the request (an empty answer: `tenant`). A
  // tenant traffikd does not know is an error (on_error, 500), not an outage:
  // map caller input onto known tenants.
  std::function<std::string(const HttpRequest& request)> tenant_of;
  // Per-request cost (e.g. by payload size); set: replaces `cost`.
  std::function<uint32_t(const HttpRequest& request)> cost_of;
  // False (the default): a response from on_throttled gets the refusing
  // throttle's Retry-After and RateLimit-* set (replacing any it had), so
  // every refusal carries them. True: it is sent exactly as returned.
  bool keep_throttled_response = false;
};

// One throttle. A cheap-to-copy handle to immutable options; thread-safe.
class HttpThrottle {
 public:
  explicit HttpThrottle(HttpThrottleOptions options);
  // The same with `uid` and the inline `spec` given first (they replace
  // options.uid and options.spec):
  //   traffik::HttpThrottle items("items", {5, std::chrono::seconds(10)});
  //   traffik::HttpThrottle login("login", {3, std::chrono::minutes(1)},
  //                               {.identifier = traffik::ByFormField("username")});
  HttpThrottle(std::string uid, ThrottleSpec spec, HttpThrottleOptions options = {});
  const HttpThrottleOptions& options() const { return *options_; }
  const std::string& uid() const { return options_->uid; }

 private:
  std::shared_ptr<const HttpThrottleOptions> options_;
};

// ------------------------------------------------------------------- decision

// The outcome of checking one request against its throttles.
struct HttpVerdict {
  // False: send `response` instead of calling the handler.
  bool allowed = true;
  // True when no throttle applied (every identifier returned kUnlimited, or no
  // middleware rule matched): no RPC was made.
  bool exempt = false;
  // The longest wait among the refusing throttles; 0 when allowed.
  std::chrono::milliseconds wait{0};
  // RateLimit-* for the handler's response when allowed: those of the throttle
  // with the fewest remaining tokens (ties: the later reset). Empty when exempt
  // or when the numbers are unknown.
  HttpHeaders headers;
  // Set iff !allowed: the default 429, the refusing throttle's on_throttled
  // response, or (an error: see HttpThrottlerOptions::on_error) the on_error
  // one.
  std::optional<HttpResponse> response;
  // OK, or the failure that produced an on_error response.
  absl::Status error;
  // The answers, one per non-exempt throttle, in the order checked.
  std::vector<ThrottleResult> results;
};

using HttpErrorFn =
    std::function<HttpResponse(const HttpRequest& request, const absl::Status& error)>;

// 503, "rate limiter unavailable" (the default response for an outage).
HttpResponse RateLimiterUnavailable(const HttpRequest& request,
                                    const absl::Status& error);

// The default response for an error: RateLimiterUnavailable (503) for an
// outage (IsOutage(error)), else 500 "rate limiter error". The body never
// carries the error's message (it may echo the request).
HttpResponse RateLimiterError(const HttpRequest& request, const absl::Status& error);

struct HttpThrottlerOptions {
  // Proxies whose X-Forwarded-For is believed (see ClientAddress); empty:
  // X-Forwarded-For is ignored.
  TrustedProxies trusted_proxies;
  // The response when the Client answers an error instead of a decision: an
  // outage under FailurePolicy::kRaise, or, under any policy, an error that
  // is not an outage (e.g. kInvalidArgument, kNotFound: the failure policy
  // never lets those through). The Client has logged it (rate-limited).
  // Empty: RateLimiterError (503 for an outage, 500 otherwise).
  HttpErrorFn on_error;
};

// Decides HTTP requests with a Client.
//
// Several throttles on one request (burst + sustained): all must allow; the
// verdict carries the longest wait and the 429 (or on_throttled response) of
// the throttle with that wait. They are decided in ONE all-or-nothing
// ShouldThrottleBatch RPC (BatchOptions::all_or_nothing; a single throttle
// uses ShouldThrottle): the tokens of every throttle are taken only if all of
// them allow, so when one refuses, NONE of the others is charged (better than
// the seed library, which charged the throttles checked before the refusing
// one). The verdict's results then describe each bucket as it stands.
//
// traffikd decides a batch all-or-nothing only when its throttles are on one
// backend (one tenant, or tenants sharing a backend) and, on a Redis Cluster
// backend, share one identifier (the default identifier is the same for every
// throttle of a route). Otherwise the throttler falls back to an ordinary
// batch in a second RPC (BatchOptions::fall_back_to_independent), where the
// throttles that allow take their tokens even when another refuses.
//
// Failure policy with several throttles (one RPC, so one policy): their own if
// all throttles agree (an unset policy means the Client's default); otherwise
// kDeny if any says kDeny, else kRaise if any says kRaise, else the Client's
// default (a mix of kAllow and unset).
//
// Thread-safe; cheap to copy (the copies share the Client).
class HttpThrottler {
 public:
  explicit HttpThrottler(std::shared_ptr<Client> client,
                         HttpThrottlerOptions options = {});

  // Decides `request` against `throttles` (blocking on the RPC). Fills
  // request.client_address first. No throttles, or all exempt: allowed, no RPC.
  HttpVerdict Check(HttpRequest& request,
                    const std::vector<HttpThrottle>& throttles) const;

  // The same without blocking: `done` runs on a Client thread, or inline when
  // no RPC is needed or the Client answers locally.
  void CheckAsync(HttpRequest request, std::vector<HttpThrottle> throttles,
                  std::function<void(HttpVerdict verdict)> done) const;

  const std::shared_ptr<Client>& client() const { return client_; }
  const TrustedProxies& trusted_proxies() const { return options_->trusted_proxies; }

 private:
  struct Prepared;
  Prepared Prepare(HttpRequest& request,
                   const std::vector<HttpThrottle>& throttles) const;
  static BatchOptions BatchOptionsFor(const Prepared& prepared);
  HttpVerdict Finish(const HttpRequest& request,
                     const std::vector<HttpThrottle>& throttles, const Prepared& prepared,
                     absl::StatusOr<BatchResult> results) const;

  std::shared_ptr<Client> client_;
  std::shared_ptr<const HttpThrottlerOptions> options_;
};

// ------------------------------------------------------------------ decorator

// A framework-agnostic handler.
using HttpHandler = std::function<HttpResponse(const HttpRequest& request)>;

// Adds `headers` to `response`, replacing fields with the same names.
void AddHeaders(const HttpHeaders& headers, HttpResponse& response);

// Wraps `handler`: the request is checked against `throttles` first; when
// refused the verdict's response is returned and `handler` is not called;
// when allowed `handler` runs and the RateLimit-* headers are added to its
// response. Adapters offer the same for their frameworks' handler types.
HttpHandler Throttled(HttpThrottler throttler, HttpHandler handler,
                      std::vector<HttpThrottle> throttles);

template <typename... More>
HttpHandler Throttled(HttpThrottler throttler, HttpHandler handler, HttpThrottle first,
                      More... more) {
  return Throttled(std::move(throttler), std::move(handler),
                   std::vector<HttpThrottle>{std::move(first), std::move(more)...});
}

}  // namespace traffik
