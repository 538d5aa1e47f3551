#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace traffik::client_internal {

// The grpc.health.v1 messages, hand-encoded so the client needs no vendored
// health.proto (grpc++ already links its own compiled copy, and a second
// descriptor of the same file would clash at startup). The same approach as
// server/app/health_client.cc, kept separate so the client library does not
// depend on the server.

inline constexpr char kHealthCheckMethod[] = "/grpc.health.v1.Health/Check";
// grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING.
inline constexpr uint64_t kHealthServing = 1;

// HealthCheckRequest { string service = 1; }.
std::string EncodeHealthCheckRequest(const std::string& service);

// HealthCheckResponse { ServingStatus status = 1; }: the status (0 UNKNOWN
// when absent). kDataLoss for malformed input.
absl::StatusOr<uint64_t> DecodeHealthCheckStatus(std::string_view data);

}  // namespace traffik::client_internal
