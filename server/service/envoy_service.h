#pragma once

#include <cstddef>

#include "engine/engine.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "metrics/metrics.h"
#include "service/arena_allocator.h"

namespace traffik {

// Request bounds of ShouldRateLimit (hostile input): anything above is
// INVALID_ARGUMENT naming the field, and nothing is taken. The number of
// descriptors is bounded by the config's max_batch_size, an entry's value by
// max_identifier_bytes (as is a matched bucket's identity: all its entries).
inline constexpr size_t kMaxEnvoyDomainBytes = 256;
inline constexpr size_t kMaxEnvoyEntriesPerDescriptor = 32;
inline constexpr size_t kMaxEnvoyEntryKeyBytes = 256;

// envoy.service.ratelimit.v3.RateLimitService (Envoy's external rate-limit
// API) on the traffik.v1 port: matches each descriptor against the
// snapshot's envoyproxy/ratelimit rules (envoy/rules.h) and decides the
// matched limits as token buckets on the domain's tenant, all or nothing
// (Engine::DecideRules). Never blocks a gRPC thread: the reactor finishes
// from the backend's callback (inline for memory).
//
// Thread-safe; the engine and metrics must outlive the server.
class EnvoyRateLimitServiceImpl final
    : public ::envoy::service::ratelimit::v3::RateLimitService::CallbackService {
 public:
  EnvoyRateLimitServiceImpl(const Engine& engine, Metrics& metrics)
      : engine_(engine), metrics_(metrics) {
    SetMessageAllocatorFor_ShouldRateLimit(&messages_);
  }
  EnvoyRateLimitServiceImpl(const EnvoyRateLimitServiceImpl&) = delete;
  EnvoyRateLimitServiceImpl& operator=(const EnvoyRateLimitServiceImpl&) = delete;

  grpc::ServerUnaryReactor* ShouldRateLimit(
      grpc::CallbackServerContext* context,
      const ::envoy::service::ratelimit::v3::RateLimitRequest* request,
      ::envoy::service::ratelimit::v3::RateLimitResponse* response) override;

 private:
  const Engine& engine_;
  Metrics& metrics_;
  // Each call's request and response on a pooled protobuf arena.
  ArenaMessageAllocator<::envoy::service::ratelimit::v3::RateLimitRequest,
                        ::envoy::service::ratelimit::v3::RateLimitResponse>
      messages_;
};

}  // namespace traffik
