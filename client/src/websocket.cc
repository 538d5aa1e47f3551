// WebSocket message throttling (traffik/websocket.h).

#include "traffik/websocket.h"

#include <atomic>
#include <cstdio>
#include <random>
#include <utility>

#include "http_internal.h"

namespace traffik {
namespace {

// A random per-process prefix, so connection ids (and therefore default
// buckets) are not reused by a restarted process.
const std::string& ProcessPrefix() {
  static const std::string prefix = [] {
    std::random_device device;
    const uint64_t value = (static_cast<uint64_t>(device()) << 32) ^ device();
    char text[17];
    std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
    return std::string(text);
  }();
  return prefix;
}

std::atomic<uint64_t> next_connection{1};

}  // namespace

WebSocketConnection AcceptWebSocket(HttpRequest upgrade, const TrustedProxies& trusted) {
  WebSocketConnection connection;
  connection.id = ProcessPrefix() + "-" + std::to_string(next_connection.fetch_add(1));
  upgrade.client_address = ClientAddress(upgrade, trusted);
  connection.upgrade = std::move(upgrade);
  return connection;
}

Identifier DefaultWebSocketIdentifier(const WebSocketConnection& connection,
                                      std::string_view context_key) {
  const HttpRequest& upgrade = connection.upgrade;
  const std::string& address =
      upgrade.client_address.empty() ? upgrade.peer_address : upgrade.client_address;
  std::string id =
      (address.empty() ? std::string("unknown") : address) + ":" +
      (upgrade.route.empty() ? NormalizeHttpPath(upgrade.path) : upgrade.route) + ":" +
      connection.id;
  if (!context_key.empty()) {
    id += ":";
    id += context_key;
  }
  return id;
}

WebSocketThrottle::WebSocketThrottle(std::shared_ptr<Client> client,
                                     WebSocketThrottleOptions options)
    : client_(std::move(client)),
      options_(std::make_shared<const WebSocketThrottleOptions>(std::move(options))) {}

WebSocketThrottle::WebSocketThrottle(std::shared_ptr<Client> client, std::string uid,
                                     ThrottleSpec spec, WebSocketThrottleOptions options)
    : WebSocketThrottle(
          std::move(client),
          http_internal::WithUidAndSpec(std::move(uid), spec, std::move(options))) {}

std::optional<ThrottleRequest> WebSocketThrottle::MakeRequest(
    const WebSocketConnection& connection, std::string_view context_key) const {
  Identifier id = options_->identifier
                      ? options_->identifier(connection, context_key)
                      : DefaultWebSocketIdentifier(connection, context_key);
  if (id.unlimited()) return std::nullopt;
  // An empty key would be refused by traffikd: never sent (see Identifier).
  if (id.value().empty()) id = DefaultWebSocketIdentifier(connection, context_key);
  ThrottleRequest request;
  request.identifier = id.value();
  request.throttle_uid = options_->uid;
  request.tenant = options_->tenant;
  request.cost = options_->cost;
  request.spec = options_->spec;
  return request;
}

WebSocketVerdict WebSocketThrottle::Finish(const WebSocketConnection& connection,
                                           absl::StatusOr<ThrottleResult> result) const {
  WebSocketVerdict verdict;
  if (!result.ok()) {
    verdict.allowed = false;
    verdict.error = result.status();
    verdict.close = WebSocketClose{
        kWebSocketInternalError,
        IsOutage(verdict.error) ? "rate limiter unavailable" : "rate limiter error"};
    return verdict;
  }
  verdict.result = *result;
  if (result->allowed) return verdict;
  verdict.allowed = false;
  verdict.wait = result->wait;
  if (options_->on_throttled) {
    verdict.reply = options_->on_throttled(connection, *result);
  } else {
    verdict.close =
        WebSocketClose{kWebSocketPolicyViolation, http_internal::WaitText(result->wait)};
  }
  return verdict;
}

WebSocketVerdict WebSocketThrottle::Check(const WebSocketConnection& connection,
                                          std::string_view context_key) const {
  std::optional<ThrottleRequest> request = MakeRequest(connection, context_key);
  if (!request.has_value()) {
    WebSocketVerdict verdict;
    verdict.exempt = true;
    return verdict;
  }
  return Finish(connection, client_->Check(*request, options_->failure_policy));
}

void WebSocketThrottle::CheckAsync(
    const WebSocketConnection& connection, std::string context_key,
    std::function<void(WebSocketVerdict verdict)> done) const {
  std::optional<ThrottleRequest> request = MakeRequest(connection, context_key);
  if (!request.has_value()) {
    WebSocketVerdict verdict;
    verdict.exempt = true;
    done(std::move(verdict));
    return;
  }
  client_->CheckAsync(
      *request,
      [self = *this, connection,
       done = std::move(done)](absl::StatusOr<ThrottleResult> r) {
        done(self.Finish(connection, std::move(r)));
      },
      options_->failure_policy);
}

}  // namespace traffik
