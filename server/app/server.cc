#include "app/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <climits>
#include <exception>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "app/backends.h"
#include "app/tls.h"
#include "base/host_port.h"
#include "base/log.h"
#include "grpc/support/sync.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/version_info.h"
#include "metrics/http_exposer.h"

// gRPC's socket mutator (src/core/lib/iomgr/socket_mutator.h, not installed):
// the layout and the one function used, as libgrpc 1.51 (Debian's) exports
// them. A mutator without `mutate_fd_2` is applied to client sockets and
// server listening sockets, not to accepted ones (those inherit the
// listener's keepalive options on Linux).
struct grpc_socket_mutator_vtable {
  bool (*mutate_fd)(int fd, grpc_socket_mutator* mutator);
  int (*compare)(grpc_socket_mutator* a, grpc_socket_mutator* b);
  void (*destroy)(grpc_socket_mutator* mutator);
  bool (*mutate_fd_2)(const void* info, grpc_socket_mutator* mutator);
};
struct grpc_socket_mutator {
  const grpc_socket_mutator_vtable* vtable;
  gpr_refcount refcount;
};
void grpc_socket_mutator_init(grpc_socket_mutator* mutator,
                              const grpc_socket_mutator_vtable* vtable);
static_assert(GRPC_CPP_VERSION_MAJOR == 1 && GRPC_CPP_VERSION_MINOR == 51,
              "check grpc_socket_mutator's layout against this gRPC version "
              "(src/core/lib/iomgr/socket_mutator.h), then update this line");

namespace traffik {
namespace {

// Idle connections are checked by the kernel (TCP keepalive on the listening
// socket, inherited by every accepted connection) instead of gRPC's keepalive
// pings: gRPC arms one timer per connection for those, and the libgrpc traffikd
// links (Debian's, built without NDEBUG) keeps every pending timer in a
// 1009-bucket debug hash table that each timer added or cancelled walks, so
// 10,000 idle connections made every call ~15% dearer. Same schedule as gRPC's
// server default (a ping after 2 h idle, 20 s for the answer): the first probe
// after 2 h idle, then every 20 s, the connection dropped after 3 unanswered.
constexpr int kTcpKeepaliveIdleS = 7200;
constexpr int kTcpKeepaliveIntervalS = 20;
constexpr int kTcpKeepaliveProbes = 3;

bool SetTcpKeepalive(int fd, grpc_socket_mutator* /*mutator*/) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return false;
  if (address.ss_family != AF_INET && address.ss_family != AF_INET6) return true;
  const int on = 1;
  return setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == 0 &&
         setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kTcpKeepaliveIdleS,
                    sizeof(kTcpKeepaliveIdleS)) == 0 &&
         setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kTcpKeepaliveIntervalS,
                    sizeof(kTcpKeepaliveIntervalS)) == 0 &&
         setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kTcpKeepaliveProbes,
                    sizeof(kTcpKeepaliveProbes)) == 0;
}

int CompareMutators(grpc_socket_mutator* a, grpc_socket_mutator* b) {
  return a < b ? -1 : (a > b ? 1 : 0);
}

void DestroyMutator(grpc_socket_mutator* mutator) { delete mutator; }

constexpr grpc_socket_mutator_vtable kTcpKeepaliveVtable = {
    SetTcpKeepalive, CompareMutators, DestroyMutator, nullptr};

// Puts the TCP keepalive mutator into the server's channel arguments (which
// own it from then on) and turns gRPC's keepalive pings off. Client pings are
// still policed by gRPC's defaults (GRPC_ARG_HTTP2_MAX_PING_STRIKES etc.).
class KeepaliveOption : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* args) override {
    auto* mutator = new grpc_socket_mutator;
    grpc_socket_mutator_init(mutator, &kTcpKeepaliveVtable);
    args->SetSocketMutator(mutator);
    args->SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, INT_MAX);  // INT_MAX: never
  }
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*) override {}
};

// `configured` ("host:port", port maybe 0) with the port actually bound.
std::string BoundAddress(const std::string& configured, int port) {
  return JoinHostPort(SplitHostPort(configured, /*port_required=*/true).host,
                      static_cast<uint32_t>(port));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const Config& config,
                                                      const Clock& clock) {
  RegisterBuiltinBackends();  // idempotent; main() has done it already
  std::unique_ptr<Server> server(new Server());
  server->metrics_ = std::make_unique<Metrics>();

  BackendContext context;
  context.clock = &clock;
  context.metrics = server->metrics_.get();
  server->backends_ = std::make_unique<BackendPool>(BackendRegistry::Global(), context);
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
      server->BuildSnapshot(config);
  if (!snapshot.ok()) return snapshot.status();
  server->backends_->Release();
  server->engine_ = std::make_unique<Engine>(*std::move(snapshot));
  server->service_ =
      std::make_unique<ThrottleServiceImpl>(*server->engine_, *server->metrics_);

  if (!config.metrics_listen.empty()) {
    Metrics* metrics = server->metrics_.get();
    absl::StatusOr<std::unique_ptr<HttpExposer>> exposer = HttpExposer::Start(
        config.metrics_listen, [metrics] { return metrics->RenderText(); });
    if (!exposer.ok()) return exposer.status();
    server->exposer_ = *std::move(exposer);
    server->metrics_address_ =
        BoundAddress(config.metrics_listen, server->exposer_->port());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (config.tls.has_value()) {
    // Checked first: an unusable pair is a startup error naming the file, not
    // a server whose every handshake fails.
    absl::StatusOr<std::unique_ptr<TlsCertificateWatch>> watch =
        TlsCertificateWatch::Start(
            *config.tls, *server->metrics_,
            [](const std::string& line) { WriteLogLineToStderr(line); });
    if (!watch.ok()) return watch.status();
    server->tls_watch_ = *std::move(watch);
    credentials = server->tls_watch_->ServerCredentials();
  }
  builder.AddListeningPort(config.listen, credentials, &port);
  // Without this a second server binds the same port silently and the kernel
  // splits connections between them; a taken port must be a startup error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetOption(std::make_unique<KeepaliveOption>());
  builder.RegisterService(server->service_.get());
  server->envoy_service_ =
      std::make_unique<EnvoyRateLimitServiceImpl>(*server->engine_, *server->metrics_);
  builder.RegisterService(server->envoy_service_.get());
  // The admin API exists only when asked for: otherwise gRPC answers its calls
  // as for any service this server does not have.
  if (config.admin_api) {
    server->admin_service_ =
        std::make_unique<AdminServiceImpl>(*server->engine_, *server->metrics_);
    builder.RegisterService(server->admin_service_.get());
  }
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || port == 0) {
    if (server->grpc_server_ != nullptr) server->grpc_server_->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", config.listen,
                     ": the address is invalid or already in use"));
  }
  server->grpc_address_ = BoundAddress(config.listen, port);
  grpc::HealthCheckServiceInterface* health =
      server->grpc_server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(kThrottleServiceName, true);
  return server;
}

absl::StatusOr<std::shared_ptr<const Snapshot>> Server::BuildSnapshot(
    const Config& config) {
  backends_->set_in_process_budget({config.memory.max_bytes, config.memory.max_buckets,
                                    config.memory.sweep_interval_ms});
  std::vector<BackendPool::Request> requests;
  requests.reserve(config.tenants.size());
  for (const TenantConfig& tenant : config.tenants) {
    TenantShare share;
    if (tenant.backend == kMemoryBackend) {
      const MemoryShareConfig memory = MemoryShareOf(config, tenant);
      share = {memory.max_bytes, memory.max_buckets};
    }
    requests.push_back({tenant.name, tenant.backend_spec, share});
  }
  const YamlReader reader(config.source);
  absl::StatusOr<std::vector<BackendPool::Lease>> leases =
      backends_->Acquire(requests, reader);
  if (!leases.ok()) return leases.status();
  absl::flat_hash_map<std::string, const BackendPool::Lease*> by_tenant;
  for (size_t i = 0; i < requests.size(); ++i) {
    by_tenant.emplace(requests[i].tenant, &(*leases)[i]);
  }
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(
      config,
      [&by_tenant](
          const TenantConfig& tenant) -> absl::StatusOr<Snapshot::TenantBackend> {
        const BackendPool::Lease* lease = by_tenant.at(tenant.name);
        return Snapshot::TenantBackend(lease->backend, lease->partition);
      },
      *metrics_);
  if (!snapshot.ok()) backends_->Abandon();
  return snapshot;
}

absl::Status Server::Reload(const Config& config) {
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = BuildSnapshot(config);
  if (!snapshot.ok()) return snapshot.status();
  std::shared_ptr<const Snapshot> before = engine_->snapshot();
  engine_->SetSnapshot(*snapshot);
  backends_->Release();
  // Removed tenants and throttles take their buckets with them (memory
  // partitions went with Release; keys on shared backends are reset here, in
  // the background: the old snapshot keeps their backends alive until then).
  Engine::DropUnreachableBuckets(
      std::move(before), *std::move(snapshot), [](absl::StatusOr<uint64_t> removed) {
        if (!removed.ok()) {
          TRAFFIK_LOG_LIMITED(absl::StrCat(
              "config reload: dropping the buckets of removed tenants and throttles "
              "failed (they expire on their own): ",
              removed.status().message()));
        } else if (*removed > 0) {
          TRAFFIK_LOG_LIMITED(absl::StrCat("config reload: dropped ", *removed,
                                           " buckets of removed tenants and throttles"));
        }
      });
  return absl::OkStatus();
}

Server::~Server() {
  if (grpc_server_ != nullptr) Shutdown(std::chrono::milliseconds(0));
}

void Server::Drain() {
  if (grpc_server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  health->SetServingStatus(kThrottleServiceName, false);
  health->SetServingStatus(false);
}

void Server::Shutdown(std::chrono::milliseconds grace) {
  if (grpc_server_ == nullptr) return;
  Drain();
  grpc_server_->Shutdown(std::chrono::system_clock::now() + grace);
  grpc_server_->Wait();
  grpc_server_.reset();
  exposer_.reset();
  tls_watch_.reset();
}

}  // namespace traffik
