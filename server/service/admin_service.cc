#include "service/admin_service.h"

#include <string>
#include <utility>
#include <vector>

namespace traffik {
namespace {

using traffik::v1::GetBucketRequest;
using traffik::v1::GetBucketResponse;
using traffik::v1::ListThrottlesRequest;
using traffik::v1::ListThrottlesResponse;
using traffik::v1::ResetBucketsRequest;
using traffik::v1::ResetBucketsResponse;

// Counts the call and finishes it with `status` (absl and gRPC share the
// canonical code numbering).
void Finish(Metrics& metrics, const char* rpc, grpc::ServerUnaryReactor* reactor,
            const absl::Status& status) {
  metrics.CountAdminRequest(rpc, status.code());
  reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                               std::string(status.message())));
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::ResetBuckets(
    grpc::CallbackServerContext* context, const ResetBucketsRequest* request,
    ResetBucketsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ResetRequest reset;
  reset.tenant = request->tenant();
  reset.throttle_uid = request->throttle_uid();
  reset.identifier = request->identifier();
  Metrics& metrics = metrics_;
  // The request outlives the call (gRPC keeps it until Finish); the engine
  // copies what its backend needs before returning.
  engine_.ResetBuckets(reset,
                       [reactor, response, &metrics](absl::StatusOr<uint64_t> removed) {
                         if (removed.ok()) response->set_removed(*removed);
                         Finish(metrics, "ResetBuckets", reactor, removed.status());
                       });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetBucket(
    grpc::CallbackServerContext* context, const GetBucketRequest* request,
    GetBucketResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  HitRequest hit;
  hit.identifier = request->identifier();
  hit.throttle_uid = request->throttle_uid();
  hit.tenant = request->tenant();
  hit.cost = request->cost();
  hit.has_spec = request->has_spec();
  if (hit.has_spec) {
    hit.spec_limit = request->spec().limit();
    hit.spec_period_ms = request->spec().period_ms();
  }
  Metrics& metrics = metrics_;
  engine_.GetBucket(
      hit, [reactor, response, &metrics](absl::StatusOr<PeekResult> result) {
        if (result.ok()) {
          response->set_wait_ms(result->hit.allowed ? 0 : result->hit.wait_ms);
          response->set_limit(result->as_is.limit);
          response->set_remaining(result->as_is.remaining);
          response->set_reset_ms(result->as_is.reset_ms);
        }
        Finish(metrics, "GetBucket", reactor, result.status());
      });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListThrottles(
    grpc::CallbackServerContext* context, const ListThrottlesRequest* request,
    ListThrottlesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::vector<ThrottleInfo>> throttles =
      engine_.ListThrottles(request->tenant());
  if (throttles.ok()) {
    response->mutable_throttles()->Reserve(static_cast<int>(throttles->size()));
    for (const ThrottleInfo& t : *throttles) {
      traffik::v1::ThrottleInfo* info = response->add_throttles();
      info->set_uid(t.uid);
      info->set_limit(t.rate.capacity);
      info->set_period_ms(t.rate.period_ms);
    }
  }
  Finish(metrics_, "ListThrottles", reactor, throttles.status());
  return reactor;
}

}  // namespace traffik
