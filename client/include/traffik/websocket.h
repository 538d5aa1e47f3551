#pragma once

// WebSocket message throttling (the seed library's WebSocketThrottle): every
// incoming message is checked; a refused message is either answered by the
// app's on_throttled (which learns the wait, e.g. to send an error frame) or,
// by default, the connection is closed with 1008 (policy violation) and a
// reason carrying the wait: "rate limited; retry in 3s".
//
// Example (the adapter in traffik/adapters/beast.h does the I/O):
//
//   traffik::WebSocketThrottle messages(client, "ws_messages",
//                                       {5, std::chrono::seconds(10)});
//   traffik::WebSocketConnection connection =
//       traffik::AcceptWebSocket(upgrade_request, trusted_proxies);
//   ... for each message:
//   traffik::WebSocketVerdict v = messages.Check(connection);
//   if (v.allowed) { handle(message); }
//   else if (v.close) { close(v.close->code, v.close->reason); }
//   else if (v.reply) { send(*v.reply); }  // refused, on_throttled's error frame
//   // else: refused, on_throttled returned nullopt: drop the message silently
//
// With Beast, beast_adapter::CheckMessage does all of this I/O itself and
// only tells the session whether to handle the message.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "traffik/client.h"
#include "traffik/http.h"

namespace traffik {

// One accepted WebSocket connection.
struct WebSocketConnection {
  // Unique within the process and across restarts (a random per-process
  // prefix and a counter); part of the default identifier.
  std::string id{};
  // The upgrade request; upgrade.client_address is resolved.
  HttpRequest upgrade{};
};

// Builds the connection for an accepted upgrade: assigns a fresh id and
// resolves the client address under `trusted` (see ClientAddress).
WebSocketConnection AcceptWebSocket(HttpRequest upgrade,
                                    const TrustedProxies& trusted = {});

// Close codes (RFC 6455 section 7.4.1).
inline constexpr uint16_t kWebSocketPolicyViolation = 1008;
inline constexpr uint16_t kWebSocketInternalError = 1011;

struct WebSocketClose {
  uint16_t code = kWebSocketPolicyViolation;
  std::string reason{};  // at most 123 bytes (the close frame limit)
};

// Who is limited for a message. `context_key` is what the app passed to Check
// (e.g. the message type), empty if none.
using WebSocketIdentifierFn = std::function<Identifier(
    const WebSocketConnection& connection, std::string_view context_key)>;

// The default: "<client address>:<path>:<connection id>" plus ":<context key>"
// when one is given, so each connection (and each context) has its own bucket.
// <path> is the upgrade's route if set, else its path normalized
// (NormalizeHttpPath). An empty identifier from a custom function falls back
// to this one (never sent empty).
Identifier DefaultWebSocketIdentifier(const WebSocketConnection& connection,
                                      std::string_view context_key);

// Called for a refused message instead of closing the connection. `result`
// carries the wait. Returns a frame to send back (nullopt: send nothing); the
// message is dropped and the connection stays open.
using WebSocketThrottledFn = std::function<std::optional<std::string>(
    const WebSocketConnection& connection, const ThrottleResult& result)>;

struct WebSocketThrottleOptions {
  std::string uid{};                    // the throttle uid on the server (required)
  std::optional<ThrottleSpec> spec{};   // inline definition; nullopt: server-configured
  WebSocketIdentifierFn identifier{};   // empty: DefaultWebSocketIdentifier
  WebSocketThrottledFn on_throttled{};  // empty: close with 1008 and the wait
  uint32_t cost = 1;                    // tokens a message takes
  std::string tenant{};                 // empty: the server's default tenant
  std::optional<FailurePolicy> failure_policy{};  // nullopt: the Client's default
};

// The outcome for one message. Exactly one of these holds:
//   allowed             handle the message (exempt: no RPC was made);
//   close               close the connection with close->code / reason:
//                       1008 "rate limited; retry in Ns" when refused without
//                       on_throttled; 1011 when the Client answered an error
//                       (`error` says which): "rate limiter unavailable" for
//                       an outage under kRaise, "rate limiter error" for an
//                       error that is not an outage (kInvalidArgument, ...),
//                       under any policy (see FailurePolicy);
//   otherwise           refused and on_throttled ran: drop the message and
//                       send `reply` if set (on_throttled may return nullopt:
//                       then `reply` is empty, never dereference it unchecked).
struct WebSocketVerdict {
  bool allowed = true;
  bool exempt = false;
  std::chrono::milliseconds wait{0};  // when refused
  std::optional<std::string> reply{};
  std::optional<WebSocketClose> close{};
  absl::Status error{};
  std::optional<ThrottleResult> result{};  // the server's (or policy's) answer
};

// Thread-safe; cheap to copy (copies share the Client and options).
class WebSocketThrottle {
 public:
  WebSocketThrottle(std::shared_ptr<Client> client, WebSocketThrottleOptions options);
  // The same with `uid` and the inline `spec` given first (they replace
  // options.uid and options.spec), like HttpThrottle's:
  //   traffik::WebSocketThrottle messages(client, "ws_messages",
  //                                       {10, std::chrono::seconds(10)});
  WebSocketThrottle(std::shared_ptr<Client> client, std::string uid, ThrottleSpec spec,
                    WebSocketThrottleOptions options = {});

  // Decides one incoming message (blocking on the RPC).
  WebSocketVerdict Check(const WebSocketConnection& connection,
                         std::string_view context_key = {}) const;
  // The same without blocking: `done` runs on a Client thread, or inline when
  // no RPC is needed or the Client answers locally. `connection` is copied.
  void CheckAsync(const WebSocketConnection& connection, std::string context_key,
                  std::function<void(WebSocketVerdict verdict)> done) const;

  const WebSocketThrottleOptions& options() const { return *options_; }

 private:
  std::optional<ThrottleRequest> MakeRequest(const WebSocketConnection& connection,
                                             std::string_view context_key) const;
  WebSocketVerdict Finish(const WebSocketConnection& connection,
                          absl::StatusOr<ThrottleResult> result) const;

  std::shared_ptr<Client> client_;
  std::shared_ptr<const WebSocketThrottleOptions> options_;
};

}  // namespace traffik
