#include "app/server.h"

#include <exception>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "metrics/http_exposer.h"

namespace traffik {
namespace {

// "host:port" -> "host" (keeps IPv6 brackets).
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const Config& config,
                                                      const Clock& clock) {
  std::unique_ptr<Server> server(new Server());
  server->metrics_ = std::make_unique<Metrics>();

  MemoryBackendOptions memory_options;
  memory_options.max_bytes = config.memory.max_bytes;
  memory_options.max_buckets = config.memory.max_buckets;
  memory_options.sweep_interval_ms = config.memory.sweep_interval_ms;
  server->memory_ = std::make_unique<MemoryBackend>(clock, memory_options);
  MemoryBackend* memory = server->memory_.get();
  server->metrics_->AddBucketSource(
      "memory", [memory] { return memory->bucket_count(); },
      [memory] { return memory->evictions(); });
  // Each memory tenant stores its buckets in its own partition, within its
  // share of the budget, so no tenant's traffic can touch another's buckets.
  absl::flat_hash_map<std::string, MemoryBackend::Partition*> partitions;
  for (const TenantConfig& tenant : config.tenants) {
    if (tenant.redis.has_value()) continue;
    const MemoryShareConfig share = MemoryShareOf(config, tenant);
    MemoryBackend::Partition* partition =
        memory->AddPartition(tenant.name, {share.max_bytes, share.max_buckets});
    partitions.emplace(tenant.name, partition);
    server->metrics_->AddRejectionSource("memory", tenant.name,
                                         [partition] { return partition->rejections(); });
  }

  // One Redis backend per distinct connection settings, shared by the
  // tenants that name the same Redis.
  for (const TenantConfig& tenant : config.tenants) {
    if (!tenant.redis.has_value()) continue;
    const std::string identity = tenant.redis->IdentityKey();
    if (server->redis_.contains(identity)) continue;
    absl::StatusOr<std::unique_ptr<RedisBackend>> redis =
        RedisBackend::Create(*tenant.redis);
    if (!redis.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tenant '", tenant.name, "': ", redis.status().message()));
    }
    server->redis_.emplace(identity, *std::move(redis));
  }
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(
      config,
      [&server, memory, &partitions](
          const TenantConfig& tenant) -> absl::StatusOr<Snapshot::TenantBackend> {
        if (tenant.redis.has_value()) {
          return Snapshot::TenantBackend(
              server->redis_.at(tenant.redis->IdentityKey()).get());
        }
        if (tenant.backend == "memory") {
          return Snapshot::TenantBackend(memory, partitions.at(tenant.name));
        }
        return absl::InvalidArgumentError(absl::StrCat(
            "tenant '", tenant.name, "': unknown backend '", tenant.backend, "'"));
      },
      *server->metrics_);
  if (!snapshot.ok()) return snapshot.status();
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
        absl::StrCat(HostOf(config.metrics_listen), ":", server->exposer_->port());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, grpc::InsecureServerCredentials(), &port);
  // Without this a second server binds the same port silently and the kernel
  // splits connections between them; a taken port must be a startup error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(server->service_.get());
  // The admin API exists only when asked for: otherwise its calls answer
  // UNIMPLEMENTED like any unknown service.
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
  server->grpc_address_ = absl::StrCat(HostOf(config.listen), ":", port);
  grpc::HealthCheckServiceInterface* health =
      server->grpc_server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(kThrottleServiceName, true);
  return server;
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
}

}  // namespace traffik
