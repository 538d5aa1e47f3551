#pragma once

// ThrottleMiddleware: throttles chosen per request by ordered rules (the seed
// library's ThrottleMiddleware / MiddlewareThrottle with path, methods, hook).
//
// A rule matches a request when ALL its criteria hold: the path matcher, the
// method set (empty = any method) and the hook (empty = always true; only
// called once path and method matched). Path matchers see the request path
// normalized (NormalizeHttpPath with TrailingSlash::kKeep), so "//api/x",
// "/./api/x", "/%61pi/x" and "/static/../api/x" all match Prefix("/api/") like
// "/api/x" does, and "/api/" still matches it; hooks see the request as
// received. Middleware runs before routing (httplib's pre-routing handler):
// identifiers and hooks see the path, query and headers, but no route
// (`route`, `route_params` empty) and no body yet, so key a rule on the
// client (traffik::ByClientAddress), a header or a query parameter; key on a
// form field in a route's decorator. Which matching rules apply depends on
// MatchMode:
//
//   kAllMatch (default, as in the seed library): every matching rule's
//     throttle applies; they are decided together like several throttles on
//     one handler (one batch RPC, longest wait wins; see HttpThrottler for
//     what a refusal costs the other throttles).
//   kFirstMatch: rules are tried in order and only the first matching rule's
//     throttle applies. That rule decides even when its identifier returns
//     kUnlimited (the request is then exempt; later rules are not consulted),
//     so put specific rules before general ones.
//
// Example:
//
//   // 100 per minute per client address on /api/ (all paths share a bucket):
//   traffik::HttpThrottle per_ip("api_per_ip", {100, std::chrono::minutes(1)},
//                                {.identifier = traffik::ByClientAddress});
//   traffik::ThrottleMiddleware middleware(throttler, {
//       {.throttle = per_ip, .path = traffik::PathMatcher::Prefix("/api/")},
//       {.throttle = writes, .methods = {"POST", "PUT", "DELETE"}},
//       {.throttle = api, .path = traffik::PathMatcher::Prefix("/api/")},
//       {.throttle = assets,
//        .path = traffik::PathMatcher::Regex("^/(static|assets)/").value()},
//       {.throttle = expensive,
//        .hook = [](const traffik::HttpRequest& r) { return
//        r.Header("X-Expensive").has_value(); }},
//   });

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "traffik/http.h"

namespace traffik {

// Matches request paths: any path, a literal prefix, or a regular expression
// (ECMAScript, searched anywhere in the path: anchor it with ^ to match from
// the start). Immutable; cheap to copy; thread-safe.
class PathMatcher {
 public:
  PathMatcher() = default;  // matches every path
  static PathMatcher Any() { return PathMatcher(); }
  // Paths starting with `prefix` ("/api/" matches "/api/users", not "/apiv2").
  static PathMatcher Prefix(std::string prefix);
  // kInvalidArgument when `pattern` does not compile.
  static absl::StatusOr<PathMatcher> Regex(const std::string& pattern);

  bool Matches(std::string_view path) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;  // null: any path
};

struct MiddlewareRule {
  HttpThrottle throttle;
  PathMatcher path{};               // default: any path
  std::set<std::string> methods{};  // upper-case; empty: any method
  // Extra condition; empty: none. Called only when path and method match.
  std::function<bool(const HttpRequest& request)> hook{};
};

enum class MatchMode { kAllMatch, kFirstMatch };

struct MiddlewareOptions {
  MatchMode mode = MatchMode::kAllMatch;
};

// Thread-safe; cheap to copy.
class ThrottleMiddleware {
 public:
  ThrottleMiddleware(HttpThrottler throttler, std::vector<MiddlewareRule> rules,
                     MiddlewareOptions options = {});

  // The throttles that apply to `request` under the match mode, in rule order.
  // Hooks see `request` as given.
  std::vector<HttpThrottle> MatchingThrottles(const HttpRequest& request) const;

  // Decides `request`: resolves request.client_address (so hooks can use it),
  // matches the rules, then checks the matching throttles with the
  // throttler. No matching rule -> allowed and exempt, no RPC.
  HttpVerdict Check(HttpRequest& request) const;
  void CheckAsync(HttpRequest request,
                  std::function<void(HttpVerdict verdict)> done) const;

  const HttpThrottler& throttler() const { return throttler_; }

 private:
  HttpThrottler throttler_;
  std::shared_ptr<const std::vector<MiddlewareRule>> rules_;
  MiddlewareOptions options_;
};

}  // namespace traffik
