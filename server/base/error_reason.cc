#include "base/error_reason.h"

#include "absl/strings/cord.h"

namespace traffik {
namespace {

// The payload's key (a type URL by absl's convention; never sent on the wire).
constexpr char kReasonPayload[] = "traffik.v1/ErrorReason";

}  // namespace

absl::Status WithReason(absl::Status status, absl::string_view reason) {
  if (!status.ok()) status.SetPayload(kReasonPayload, absl::Cord(reason));
  return status;
}

std::optional<std::string> ReasonOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kReasonPayload);  // absl::optional<Cord>
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

}  // namespace traffik
