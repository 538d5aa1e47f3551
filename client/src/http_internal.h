#pragma once

// Helpers shared by the HTTP and WebSocket throttling sources. Private.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "traffik/client.h"

namespace traffik::http_internal {

// ASCII case-insensitive equality (header names, methods).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// The one policy for an RPC deciding several throttles (see HttpThrottler).
std::optional<FailurePolicy> CombinePolicies(
    const std::vector<std::optional<FailurePolicy>>& policies);

// "rate limited; retry in <RetryAfterSeconds(wait)>s".
std::string WaitText(std::chrono::milliseconds wait);

// `options` with its uid and inline spec set: the (uid, spec, options)
// constructors of HttpThrottle and WebSocketThrottle.
template <typename Options>
Options WithUidAndSpec(std::string uid, ThrottleSpec spec, Options options) {
  options.uid = std::move(uid);
  options.spec = spec;
  return options;
}

}  // namespace traffik::http_internal
