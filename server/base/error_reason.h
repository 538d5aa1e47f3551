#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace traffik {

// A machine-readable reason on an absl::Status (traffik.v1.ErrorReason names,
// proto/traffik/v1/errors.proto), carried as a status payload through the
// layers that know no protos. The gRPC services turn it into a
// google.rpc.ErrorInfo {domain: kErrorDomain, reason} in the status details,
// so clients decide on it instead of on message text.
inline constexpr char kErrorDomain[] = "traffik.v1";

// `status` with `reason` attached (an OK status is returned unchanged).
absl::Status WithReason(absl::Status status, absl::string_view reason);

// The reason attached by WithReason, if any.
std::optional<std::string> ReasonOf(const absl::Status& status);

}  // namespace traffik
