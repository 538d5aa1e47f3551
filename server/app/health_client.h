#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"
#include "app/options.h"

namespace traffik {

// Asks the standard gRPC health service (grpc.health.v1.Health/Check) at
// `address` (host:port; plaintext, or TLS when `tls` is set) about `service`
// ("" = the whole server), waiting at most `timeout` for the answer. A TLS
// file that cannot be read is kNotFound / kInvalidArgument naming the flag's
// option; a failed handshake is the RPC's kUnavailable.
//
// Returns true for SERVING and false for NOT_SERVING, UNKNOWN and
// SERVICE_UNKNOWN. A failed RPC becomes an error with the gRPC code mapped to
// the absl code of the same name (e.g. NOT_FOUND for a service the server does
// not know, DEADLINE_EXCEEDED, UNAVAILABLE when nothing listens) and a message
// naming the address. A malformed answer is kDataLoss.
//
// A thin wrapper over the client library's Client::Healthy (one place encodes
// the health messages). Thread-safe; each call uses its own channel.
absl::StatusOr<bool> CheckHealth(const std::string& address, const std::string& service,
                                 std::chrono::milliseconds timeout,
                                 const std::optional<HealthCheckTls>& tls = std::nullopt);

}  // namespace traffik
