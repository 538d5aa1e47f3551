#include "service/admin_service.h"

#include <string>
#include <utility>
#include <vector>

#include "auth/grpc_auth.h"

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

// The auth check of an admin call on `tenant` (auth/grpc_auth.h): with
// `auth: required`, admin callers granted the tenant only; with `auth: off`,
// everyone, as before.
absl::Status Authorize(const Engine& engine, Metrics& metrics,
                       grpc::CallbackServerContext* context, const char* rpc,
                       absl::string_view tenant) {
  if (!engine.auth_maybe_required()) return absl::OkStatus();
  const std::shared_ptr<const Snapshot> snapshot = engine.snapshot();
  if (!snapshot->callers().required()) return absl::OkStatus();
  CallAccess access;
  access.rpc = rpc;
  access.admin = true;
  access.tenants = {tenant};
  return AuthorizeCall(snapshot->callers(), *context, access, metrics);
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::ResetBuckets(
    grpc::CallbackServerContext* context, const ResetBucketsRequest* request,
    ResetBucketsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s =
          Authorize(engine_, metrics_, context, "ResetBuckets", request->tenant());
      !s.ok()) {
    Finish(metrics_, "ResetBuckets", reactor, s);
    return reactor;
  }
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
  if (absl::Status s =
          Authorize(engine_, metrics_, context, "GetBucket", request->tenant());
      !s.ok()) {
    Finish(metrics_, "GetBucket", reactor, s);
    return reactor;
  }
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
  if (absl::Status s =
          Authorize(engine_, metrics_, context, "ListThrottles", request->tenant());
      !s.ok()) {
    Finish(metrics_, "ListThrottles", reactor, s);
    return reactor;
  }
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
