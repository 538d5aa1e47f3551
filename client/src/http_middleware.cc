// ThrottleMiddleware and PathMatcher (traffik/middleware.h).

#include <regex>
#include <utility>

#include "http_internal.h"
#include "traffik/middleware.h"

namespace traffik {

struct PathMatcher::Impl {
  std::string prefix;
  std::optional<std::regex> regex;
};

PathMatcher PathMatcher::Prefix(std::string prefix) {
  PathMatcher matcher;
  auto impl = std::make_shared<Impl>();
  impl->prefix = std::move(prefix);
  matcher.impl_ = std::move(impl);
  return matcher;
}

absl::StatusOr<PathMatcher> PathMatcher::Regex(const std::string& pattern) {
  auto impl = std::make_shared<Impl>();
  try {
    impl->regex.emplace(pattern, std::regex::ECMAScript | std::regex::optimize);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError("path regex '" + pattern + "': " + e.what());
  }
  PathMatcher matcher;
  matcher.impl_ = std::move(impl);
  return matcher;
}

bool PathMatcher::Matches(std::string_view path) const {
  if (impl_ == nullptr) return true;
  if (impl_->regex.has_value()) {
    return std::regex_search(path.begin(), path.end(), *impl_->regex);
  }
  return path.substr(0, impl_->prefix.size()) == impl_->prefix;
}

ThrottleMiddleware::ThrottleMiddleware(HttpThrottler throttler,
                                       std::vector<MiddlewareRule> rules,
                                       MiddlewareOptions options)
    : throttler_(std::move(throttler)),
      rules_(std::make_shared<const std::vector<MiddlewareRule>>(std::move(rules))),
      options_(options) {}

std::vector<HttpThrottle> ThrottleMiddleware::MatchingThrottles(
    const HttpRequest& request) const {
  std::vector<HttpThrottle> matching;
  // Every spelling of a path matches like its canonical form ("//api/x",
  // "/%61pi/x" and "/./api/x" are "/api/x"), so none escapes a rule.
  const std::string path = NormalizeHttpPath(request.path, TrailingSlash::kKeep);
  for (const MiddlewareRule& rule : *rules_) {
    if (!rule.path.Matches(path)) continue;
    if (!rule.methods.empty()) {
      bool method_ok = false;
      for (const std::string& method : rule.methods) {
        if (http_internal::EqualsIgnoreCase(method, request.method)) {
          method_ok = true;
          break;
        }
      }
      if (!method_ok) continue;
    }
    if (rule.hook && !rule.hook(request)) continue;
    matching.push_back(rule.throttle);
    if (options_.mode == MatchMode::kFirstMatch) break;
  }
  return matching;
}

HttpVerdict ThrottleMiddleware::Check(HttpRequest& request) const {
  request.client_address = ClientAddress(request, throttler_.trusted_proxies());
  return throttler_.Check(request, MatchingThrottles(request));
}

void ThrottleMiddleware::CheckAsync(HttpRequest request,
                                    std::function<void(HttpVerdict verdict)> done) const {
  request.client_address = ClientAddress(request, throttler_.trusted_proxies());
  std::vector<HttpThrottle> throttles = MatchingThrottles(request);
  throttler_.CheckAsync(std::move(request), std::move(throttles), std::move(done));
}

}  // namespace traffik
