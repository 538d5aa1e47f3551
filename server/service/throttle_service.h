#pragma once

#include "absl/strings/string_view.h"
#include "engine/engine.h"
#include "metrics/metrics.h"
#include "service/arena_allocator.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik {

// The traffik.v1.ThrottleService gRPC callback service: translates protos to
// engine calls and back, records latency and errors, nothing else. A decision
// never blocks a gRPC thread: the reactor finishes from the backend's
// callback (inline for memory).
//
// With `auth: required` every call is checked first (auth/grpc_auth.h):
// UNAUTHENTICATED or PERMISSION_DENIED before any bucket is touched.
//
// Thread-safe; the engine and metrics must outlive the server.
class ThrottleServiceImpl final : public traffik::v1::ThrottleService::CallbackService {
 public:
  ThrottleServiceImpl(const Engine& engine, Metrics& metrics)
      : engine_(engine), metrics_(metrics) {
    SetMessageAllocatorFor_ShouldThrottle(&single_messages_);
    SetMessageAllocatorFor_ShouldThrottleBatch(&batch_messages_);
  }
  ThrottleServiceImpl(const ThrottleServiceImpl&) = delete;
  ThrottleServiceImpl& operator=(const ThrottleServiceImpl&) = delete;

  grpc::ServerUnaryReactor* ShouldThrottle(
      grpc::CallbackServerContext* context,
      const traffik::v1::ShouldThrottleRequest* request,
      traffik::v1::ShouldThrottleResponse* response) override;

  grpc::ServerUnaryReactor* ShouldThrottleBatch(
      grpc::CallbackServerContext* context,
      const traffik::v1::ShouldThrottleBatchRequest* request,
      traffik::v1::ShouldThrottleBatchResponse* response) override;

 private:
  // The auth check (auth/grpc_auth.h) of a ShouldThrottle on `tenant`,
  // against the current snapshot's callers; OK at once with `auth: off`.
  absl::Status Authorize(grpc::CallbackServerContext* context, absl::string_view tenant);

  const Engine& engine_;
  Metrics& metrics_;
  // Each call's request and response on a pooled protobuf arena.
  ArenaMessageAllocator<traffik::v1::ShouldThrottleRequest,
                        traffik::v1::ShouldThrottleResponse>
      single_messages_;
  ArenaMessageAllocator<traffik::v1::ShouldThrottleBatchRequest,
                        traffik::v1::ShouldThrottleBatchResponse>
      batch_messages_;
};

// Translates the proto to the engine's view of it (no copies).
HitRequest ToHitRequest(const traffik::v1::ShouldThrottleRequest& request);

// Fills a response from a decision.
void ToProto(const Decision& decision, traffik::v1::ShouldThrottleResponse* response);

}  // namespace traffik
