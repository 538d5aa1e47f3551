#pragma once

// Helpers shared by the HTTP and WebSocket throttling sources. Private.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
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

}  // namespace traffik::http_internal
