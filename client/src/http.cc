// HTTP throttling core (traffik/http.h).

#include "traffik/http.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http_internal.h"

namespace traffik {

namespace http_internal {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::optional<FailurePolicy> CombinePolicies(
    const std::vector<std::optional<FailurePolicy>>& policies) {
  if (policies.empty()) return std::nullopt;
  if (std::all_of(policies.begin(), policies.end(),
                  [&](const auto& p) { return p == policies.front(); })) {
    return policies.front();
  }
  for (FailurePolicy strict : {FailurePolicy::kDeny, FailurePolicy::kRaise}) {
    if (std::find(policies.begin(), policies.end(), strict) != policies.end())
      return strict;
  }
  return std::nullopt;  // kAllow mixed with unset: the Client's default
}

std::string WaitText(std::chrono::milliseconds wait) {
  return "rate limited; retry in " + std::to_string(RetryAfterSeconds(wait)) + "s";
}

}  // namespace http_internal

using http_internal::EqualsIgnoreCase;

// ------------------------------------------------------------ request/response

std::optional<std::string> HttpRequest::Header(std::string_view name) const {
  std::optional<std::string> value;
  for (const auto& [field, field_value] : headers) {
    if (!EqualsIgnoreCase(field, name)) continue;
    if (value.has_value()) {
      value->append(", ");
      value->append(field_value);
    } else {
      value = field_value;
    }
  }
  return value;
}

void HttpResponse::SetHeader(std::string_view name, std::string value) {
  RemoveHeader(name);
  headers.emplace_back(std::string(name), std::move(value));
}

void HttpResponse::RemoveHeader(std::string_view name) {
  headers.erase(
      std::remove_if(headers.begin(), headers.end(),
                     [&](const auto& h) { return EqualsIgnoreCase(h.first, name); }),
      headers.end());
}

namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding: "+" is a space, "%XX" a byte;
// an invalid "%" sequence is kept as it is.
std::string FormDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < text.size() && HexDigit(text[i + 1]) >= 0 &&
               HexDigit(text[i + 2]) >= 0) {
      out.push_back(
          static_cast<char>(HexDigit(text[i + 1]) * 16 + HexDigit(text[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// The first value of `name` in "a=1&b=2" (decoded); a field without "=" has
// the value "".
std::optional<std::string> FindFormValue(std::string_view text, std::string_view name) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('&', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view field = text.substr(start, end - start);
    const size_t eq = field.find('=');
    const std::string_view key = field.substr(0, eq);
    if (!field.empty() && FormDecode(key) == name) {
      return eq == std::string_view::npos ? std::string()
                                          : FormDecode(field.substr(eq + 1));
    }
    start = end + 1;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> HttpRequest::QueryParam(std::string_view name) const {
  return FindFormValue(query, name);
}

std::optional<std::string> HttpRequest::FormParam(std::string_view name) const {
  const std::optional<std::string> type = Header("Content-Type");
  constexpr std::string_view kForm = "application/x-www-form-urlencoded";
  if (!type.has_value() || type->size() < kForm.size() ||
      !EqualsIgnoreCase(std::string_view(*type).substr(0, kForm.size()), kForm)) {
    return std::nullopt;
  }
  if (type->size() > kForm.size() && (*type)[kForm.size()] != ';' &&
      (*type)[kForm.size()] != ' ') {
    return std::nullopt;  // another type with this prefix
  }
  return FindFormValue(body, name);
}

std::optional<std::string> HttpRequest::RouteParam(std::string_view name) const {
  for (const auto& [key, value] : route_params) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  for (const auto& [field, value] : headers) {
    if (EqualsIgnoreCase(field, name)) return value;
  }
  return std::nullopt;
}

void AddHeaders(const HttpHeaders& headers, HttpResponse& response) {
  for (const auto& [name, value] : headers) response.SetHeader(name, value);
}

// ---------------------------------------------------------------- identifiers

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 3986 section 2.3 (ASCII only, whatever the locale).
bool Unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

// Step 1 of NormalizeHttpPath: percent-encoding.
std::string NormalizePercentEncoding(std::string_view path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    const bool escape = path[i] == '%' && i + 2 < path.size();
    const int high = escape ? HexValue(path[i + 1]) : -1;
    const int low = high >= 0 ? HexValue(path[i + 2]) : -1;
    if (low < 0) {
      out.push_back(path[i]);
      continue;
    }
    const auto byte = static_cast<unsigned char>(high * 16 + low);
    if (Unreserved(byte)) {
      out.push_back(static_cast<char>(byte));
    } else {
      out.push_back('%');
      out.push_back(kHex[high]);
      out.push_back(kHex[low]);
    }
    i += 2;
  }
  return out;
}

}  // namespace

std::string NormalizeHttpPath(std::string_view path, TrailingSlash trailing) {
  const std::string decoded = NormalizePercentEncoding(path);
  std::vector<std::string_view> segments;
  bool ends_as_directory = false;  // the last segment was "", "." or ".."
  size_t start = 0;
  const std::string_view text(decoded);
  while (start <= text.size()) {
    size_t end = text.find('/', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view segment = text.substr(start, end - start);
    ends_as_directory = segment.empty() || segment == "." || segment == "..";
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!segment.empty() && segment != ".") {
      segments.push_back(segment);
    }
    start = end + 1;
  }
  std::string out;
  out.reserve(decoded.size() + 1);
  for (const std::string_view segment : segments) {
    out.push_back('/');
    out.append(segment);
  }
  if (out.empty() || (trailing == TrailingSlash::kKeep && ends_as_directory)) {
    out.push_back('/');
  }
  return out;
}

namespace {

// The resolved client address, else the peer's, else "unknown".
const std::string& AddressOf(const HttpRequest& request) {
  static const std::string kUnknown = "unknown";
  const std::string& address =
      request.client_address.empty() ? request.peer_address : request.client_address;
  return address.empty() ? kUnknown : address;
}

}  // namespace

Identifier DefaultHttpIdentifier(const HttpRequest& request) {
  return AddressOf(request) + ":" +
         (request.route.empty() ? NormalizeHttpPath(request.path) : request.route);
}

namespace {

// An identifier function keyed on one named field of the request, read by
// `read`; "<kind>:<name>=<value>", or the default identifier when absent.
template <typename Read>
HttpIdentifierFn FieldIdentifier(std::string kind, std::string name, Read read) {
  return [prefix = kind + ":" + name + "=", name, read](const HttpRequest& request) {
    std::optional<std::string> value = read(request, name);
    if (!value.has_value()) return DefaultHttpIdentifier(request);
    return Identifier(prefix + *value);
  };
}

}  // namespace

Identifier ByClientAddress(const HttpRequest& request) {
  return "ip:" + AddressOf(request);
}

HttpIdentifierFn ByHeader(std::string name) {
  return FieldIdentifier(
      "header", std::move(name),
      [](const HttpRequest& r, const std::string& n) { return r.Header(n); });
}

HttpIdentifierFn ByQueryParam(std::string name) {
  return FieldIdentifier(
      "query", std::move(name),
      [](const HttpRequest& r, const std::string& n) { return r.QueryParam(n); });
}

HttpIdentifierFn ByFormField(std::string name) {
  return FieldIdentifier(
      "form", std::move(name),
      [](const HttpRequest& r, const std::string& n) { return r.FormParam(n); });
}

HttpIdentifierFn ByRouteParam(std::string name) {
  return FieldIdentifier(
      "route", std::move(name),
      [](const HttpRequest& r, const std::string& n) { return r.RouteParam(n); });
}

// -------------------------------------------------------------------- headers

int64_t RetryAfterSeconds(std::chrono::milliseconds wait) {
  const int64_t ms = wait.count();
  return std::max<int64_t>(1, ms <= 0 ? 1 : (ms + 999) / 1000);
}

HttpHeaders RateLimitHeaders(const ThrottleResult& result) {
  if (result.limit == 0) return {};
  const int64_t reset_ms = std::max<int64_t>(0, result.reset.count());
  return {
      {"RateLimit-Limit", std::to_string(result.limit)},
      {"RateLimit-Remaining", std::to_string(result.remaining)},
      {"RateLimit-Reset", std::to_string((reset_ms + 999) / 1000)},
  };
}

HttpResponse TooManyRequests(const ThrottleResult& result) {
  HttpResponse response;
  response.status = 429;
  response.SetHeader("Retry-After", std::to_string(RetryAfterSeconds(result.wait)));
  AddHeaders(RateLimitHeaders(result), response);
  response.body = http_internal::WaitText(result.wait) + "\n";
  return response;
}

const std::vector<std::string>& DecisionHeaderNames() {
  static const std::vector<std::string> kNames = {
      "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"};
  return kNames;
}

namespace {

// The value of `name` in `headers` as a number; nullopt when absent or not one.
std::optional<uint64_t> NumberHeader(const HttpHeaders& headers, std::string_view name) {
  for (const auto& [field, value] : headers) {
    if (!EqualsIgnoreCase(field, name)) continue;
    if (value.empty() || value.size() > 19) return std::nullopt;
    uint64_t n = 0;
    for (const char c : value) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    return n;
  }
  return std::nullopt;
}

}  // namespace

bool MoreRestrictive(const HttpHeaders& a, const HttpHeaders& b) {
  const std::optional<uint64_t> a_remaining = NumberHeader(a, "RateLimit-Remaining");
  if (!a_remaining.has_value()) return false;
  const std::optional<uint64_t> b_remaining = NumberHeader(b, "RateLimit-Remaining");
  if (!b_remaining.has_value()) return true;
  if (*a_remaining != *b_remaining) return *a_remaining < *b_remaining;
  return NumberHeader(a, "RateLimit-Reset").value_or(0) >
         NumberHeader(b, "RateLimit-Reset").value_or(0);
}

HttpThrottledFn TooManyRequestsWith(std::string body, std::string content_type) {
  return [body = std::move(body), content_type = std::move(content_type)](
             const HttpRequest& /*request*/, const ThrottleResult& result) {
    HttpResponse response = TooManyRequests(result);
    response.content_type = content_type;
    const std::string seconds = std::to_string(RetryAfterSeconds(result.wait));
    constexpr std::string_view kPlaceholder = "{retry_after}";
    response.body.clear();
    size_t start = 0;
    for (size_t at; (at = body.find(kPlaceholder, start)) != std::string::npos;
         start = at + kPlaceholder.size()) {
      response.body.append(body, start, at - start);
      response.body.append(seconds);
    }
    response.body.append(body, start);
    return response;
  };
}

HttpResponse RateLimiterUnavailable(const HttpRequest& /*request*/,
                                    const absl::Status& /*error*/) {
  HttpResponse response;
  response.status = 503;
  response.body = "rate limiter unavailable\n";
  return response;
}

HttpResponse RateLimiterError(const HttpRequest& request, const absl::Status& error) {
  if (IsOutage(error)) return RateLimiterUnavailable(request, error);
  HttpResponse response;
  response.status = 500;
  response.body = "rate limiter error\n";
  return response;
}

// ------------------------------------------------------------------ throttles

HttpThrottle::HttpThrottle(HttpThrottleOptions options)
    : options_(std::make_shared<const HttpThrottleOptions>(std::move(options))) {}

HttpThrottle::HttpThrottle(std::string uid, ThrottleSpec spec,
                           HttpThrottleOptions options)
    : HttpThrottle(
          http_internal::WithUidAndSpec(std::move(uid), spec, std::move(options))) {}

// ------------------------------------------------------------------ throttler

struct HttpThrottler::Prepared {
  std::vector<ThrottleRequest> requests;
  std::vector<size_t> throttle_index;  // requests[i] is for throttles[throttle_index[i]]
  std::optional<FailurePolicy> policy;
};

namespace {

// A single Check's answer as a one-item batch result.
absl::StatusOr<BatchResult> OneResult(absl::StatusOr<ThrottleResult> one) {
  if (!one.ok()) return one.status();
  BatchResult result;
  result.applied = true;  // a single hit: the answer is its own
  result.results.push_back(*std::move(one));
  return result;
}

}  // namespace

// Several throttles: all or nothing, so a refusal takes no tokens from the
// others; where traffikd cannot (throttles on several backends, or several
// identifiers on Redis Cluster) it falls back to an ordinary batch.
BatchOptions HttpThrottler::BatchOptionsFor(const Prepared& prepared) {
  BatchOptions options;
  options.policy = prepared.policy;
  options.all_or_nothing = true;
  options.fall_back_to_independent = true;
  return options;
}

HttpThrottler::HttpThrottler(std::shared_ptr<Client> client, HttpThrottlerOptions options)
    : client_(std::move(client)),
      options_(std::make_shared<const HttpThrottlerOptions>(std::move(options))) {}

HttpThrottler::Prepared HttpThrottler::Prepare(
    HttpRequest& request, const std::vector<HttpThrottle>& throttles) const {
  request.client_address = ClientAddress(request, options_->trusted_proxies);
  Prepared prepared;
  std::vector<std::optional<FailurePolicy>> policies;
  for (size_t i = 0; i < throttles.size(); ++i) {
    const HttpThrottleOptions& options = throttles[i].options();
    Identifier id =
        options.identifier ? options.identifier(request) : DefaultHttpIdentifier(request);
    if (id.unlimited()) continue;
    // An empty key would be refused by traffikd: never sent (see Identifier).
    if (id.value().empty()) id = DefaultHttpIdentifier(request);
    ThrottleRequest hit;
    hit.identifier = id.value();
    hit.throttle_uid = options.uid;
    hit.tenant = options.tenant;
    if (options.tenant_of) {
      std::string tenant = options.tenant_of(request);
      if (!tenant.empty()) hit.tenant = std::move(tenant);
    }
    hit.cost = options.cost_of ? options.cost_of(request) : options.cost;
    hit.spec = options.spec;
    prepared.requests.push_back(std::move(hit));
    prepared.throttle_index.push_back(i);
    policies.push_back(options.failure_policy);
  }
  prepared.policy = http_internal::CombinePolicies(policies);
  return prepared;
}

HttpVerdict HttpThrottler::Finish(const HttpRequest& request,
                                  const std::vector<HttpThrottle>& throttles,
                                  const Prepared& prepared,
                                  absl::StatusOr<BatchResult> results) const {
  HttpVerdict verdict;
  if (results.ok() && results->results.size() != prepared.requests.size()) {
    results = absl::InternalError(
        "the Client answered " + std::to_string(results->results.size()) +
        " results for " + std::to_string(prepared.requests.size()) + " requests");
  }
  if (!results.ok()) {
    verdict.allowed = false;
    verdict.error = results.status();
    verdict.response = options_->on_error ? options_->on_error(request, verdict.error)
                                          : RateLimiterError(request, verdict.error);
    return verdict;
  }
  const bool applied = results->applied;
  verdict.results = std::move(results->results);
  // The refusal with the longest wait decides the response; when all allow,
  // the throttle closest to refusing decides the headers.
  std::optional<size_t> refusing;
  std::optional<size_t> tightest;
  for (size_t i = 0; i < verdict.results.size(); ++i) {
    const ThrottleResult& r = verdict.results[i];
    if (!r.allowed) {
      if (!refusing || r.wait > verdict.results[*refusing].wait) refusing = i;
    } else if (r.limit > 0) {
      if (!tightest) {
        tightest = i;
      } else {
        const ThrottleResult& t = verdict.results[*tightest];
        if (r.remaining < t.remaining ||
            (r.remaining == t.remaining && r.reset > t.reset)) {
          tightest = i;
        }
      }
    }
  }
  if (!applied && !refusing) {
    // Refused as a whole with no refusing item named (never from a current
    // Client and traffikd): the first throttle stands for the refusal.
    refusing = 0;
    if (verdict.results[0].wait <= std::chrono::milliseconds::zero()) {
      verdict.results[0].wait = std::chrono::milliseconds(1);
    }
    verdict.results[0].allowed = false;
  }
  if (refusing) {
    const ThrottleResult& r = verdict.results[*refusing];
    const HttpThrottleOptions& options =
        throttles[prepared.throttle_index[*refusing]].options();
    verdict.allowed = false;
    verdict.wait = r.wait;
    verdict.headers = RateLimitHeaders(r);
    if (!options.on_throttled) {
      verdict.response = TooManyRequests(r);
      return verdict;
    }
    verdict.response = options.on_throttled(request, r);
    if (!options.keep_throttled_response) {
      // Every refusal carries the deciding throttle's numbers, whatever the
      // handler set: none (unknown limit, e.g. a kDeny answer) drops theirs.
      for (const std::string& name : DecisionHeaderNames()) {
        verdict.response->RemoveHeader(name);
      }
      verdict.response->SetHeader("Retry-After",
                                  std::to_string(RetryAfterSeconds(r.wait)));
      AddHeaders(verdict.headers, *verdict.response);
    }
    return verdict;
  }
  if (tightest) verdict.headers = RateLimitHeaders(verdict.results[*tightest]);
  return verdict;
}

HttpVerdict HttpThrottler::Check(const HttpRequest& request,
                                 const std::vector<HttpThrottle>& throttles) const {
  HttpRequest resolved = request;
  return Check(resolved, throttles);
}

HttpVerdict HttpThrottler::Check(HttpRequest& request,
                                 const std::vector<HttpThrottle>& throttles) const {
  Prepared prepared = Prepare(request, throttles);
  if (prepared.requests.empty()) {
    HttpVerdict verdict;
    verdict.exempt = true;
    return verdict;
  }
  absl::StatusOr<BatchResult> results;
  if (prepared.requests.size() == 1) {
    results = OneResult(client_->Check(prepared.requests[0], prepared.policy));
  } else {
    results = client_->CheckBatch(prepared.requests, BatchOptionsFor(prepared));
  }
  return Finish(request, throttles, prepared, std::move(results));
}

void HttpThrottler::CheckAsync(HttpRequest request, std::vector<HttpThrottle> throttles,
                               std::function<void(HttpVerdict verdict)> done) const {
  struct State {
    HttpRequest request;
    std::vector<HttpThrottle> throttles;
    Prepared prepared;
    std::function<void(HttpVerdict)> done;
  };
  auto state = std::make_shared<State>();
  state->request = std::move(request);
  state->throttles = std::move(throttles);
  state->done = std::move(done);
  state->prepared = Prepare(state->request, state->throttles);
  // The borrowed parts may not outlive this call (see HttpRequest::native).
  state->request.clear_native();
  if (state->prepared.requests.empty()) {
    HttpVerdict verdict;
    verdict.exempt = true;
    state->done(std::move(verdict));
    return;
  }
  HttpThrottler self = *this;  // keeps the options alive until the callback
  if (state->prepared.requests.size() == 1) {
    client_->CheckAsync(
        state->prepared.requests[0],
        [self, state](absl::StatusOr<ThrottleResult> one) {
          state->done(self.Finish(state->request, state->throttles, state->prepared,
                                  OneResult(std::move(one))));
        },
        state->prepared.policy);
    return;
  }
  client_->CheckBatchAsync(
      state->prepared.requests,
      [self, state](absl::StatusOr<BatchResult> results) {
        state->done(self.Finish(state->request, state->throttles, state->prepared,
                                std::move(results)));
      },
      BatchOptionsFor(state->prepared));
}

// ------------------------------------------------------------------ decorator

HttpHandler Throttled(HttpThrottler throttler, HttpHandler handler,
                      std::vector<HttpThrottle> throttles) {
  return [throttler = std::move(throttler), handler = std::move(handler),
          throttles = std::move(throttles)](const HttpRequest& request) {
    HttpRequest checked = request;
    HttpVerdict verdict = throttler.Check(checked, throttles);
    if (!verdict.allowed) return *std::move(verdict.response);
    HttpResponse response = handler(checked);
    AddHeaders(verdict.headers, response);
    return response;
  };
}

}  // namespace traffik
