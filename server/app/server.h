#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "backend/registry.h"
#include "clock/clock.h"
#include "config/config.h"
#include "engine/engine.h"
#include "metrics/http_exposer.h"
#include "metrics/metrics.h"
#include "service/admin_service.h"
#include "service/envoy_service.h"
#include "service/throttle_service.h"

namespace grpc {
class Server;
}

namespace traffik {

class TlsCertificateWatch;

// The fully wired service: backends, engine, gRPC server (ThrottleService,
// health, reflection) and the Prometheus exposer. Start() either returns a
// serving instance or an error with nothing left listening.
//
// Thread-safe: Drain/Shutdown may be called from any thread, once each.
class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const Config& config,
                                                       const Clock& clock);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound addresses, with the real ports (even when 0 was asked for).
  const std::string& grpc_address() const { return grpc_address_; }
  // Empty when metrics are disabled.
  const std::string& metrics_address() const { return metrics_address_; }

  // Health turns NOT_SERVING ("" and traffik.v1.ThrottleService); calls are
  // still answered.
  void Drain();
  // Stops accepting calls, lets in-flight calls finish for up to `grace`,
  // then cancels the rest. Returns when the server has stopped.
  void Shutdown(std::chrono::milliseconds grace);

  // Applies a validated configuration while serving: a new snapshot whose
  // tenants reuse every live backend whose settings are unchanged (buckets
  // and connections stay), new backends for new settings; then the tenants
  // that are gone lose their buckets (memory) and unused backends are retired.
  // Calls in flight finish on the snapshot they started with. `listen` and
  // `metrics_listen` are not re-bound (ConfigReloader keeps them). On error
  // (a backend that cannot be built) nothing changes. Not concurrent with
  // itself (ConfigReloader serialises).
  absl::Status Reload(const Config& config);

  Metrics& metrics() { return *metrics_; }
  Engine& engine() { return *engine_; }
  // The live backends (for tests).
  const BackendPool& backends() const { return *backends_; }

 private:
  Server() = default;

  // Resolves `config`'s tenants to live backends (reusing the pool's) and
  // builds their snapshot; on error nothing live changes.
  absl::StatusOr<std::shared_ptr<const Snapshot>> BuildSnapshot(const Config& config);

  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<BackendPool> backends_;  // outlives the engine's snapshots
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ThrottleServiceImpl> service_;
  std::unique_ptr<AdminServiceImpl> admin_service_;  // only with admin_api: true
  // With `tls:`: checks each change of the certificate files before gRPC
  // serves it (destroyed after grpc_server_).
  std::unique_ptr<TlsCertificateWatch> tls_watch_;
  // envoy.service.ratelimit.v3.RateLimitService: always served (no `envoy:`
  // section: no domains, every descriptor OK).
  std::unique_ptr<EnvoyRateLimitServiceImpl> envoy_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<HttpExposer> exposer_;
  std::string grpc_address_;
  std::string metrics_address_;
};

// How long the server keeps serving after a stop signal at least (drain_delay
// lengthens it). grpc::Server::Shutdown (gRPC 1.51, Server::ShutdownAndNotify
// -> KillPendingWorkLocked -> RequestMatcher::ZombifyPending) cancels every
// call that has arrived but is not yet matched to a handler: under load a few
// calls sent before the signal are queued there and would be answered
// CANCELLED. Serving on (health NOT_SERVING) for this window lets every call
// sent before the signal reach its handler first; Shutdown then only cancels
// calls that arrive in its last instant.
inline constexpr std::chrono::milliseconds kMinDrainDelay{500};

// The gRPC service name reported by the health service.
inline constexpr char kThrottleServiceName[] = "traffik.v1.ThrottleService";

}  // namespace traffik
