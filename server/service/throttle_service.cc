#include "service/throttle_service.h"

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace traffik {
namespace {

using traffik::v1::ShouldThrottleBatchRequest;
using traffik::v1::ShouldThrottleBatchResponse;
using traffik::v1::ShouldThrottleRequest;
using traffik::v1::ShouldThrottleResponse;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// One ShouldThrottle call. Owns the prepared hit (key, snapshot) until the
// backend answers; deletes itself when gRPC is done with it.
class DecisionReactor final : public grpc::ServerUnaryReactor {
 public:
  DecisionReactor(const Engine& engine, Metrics& metrics,
                  const ShouldThrottleRequest& request, ShouldThrottleResponse* response)
      : metrics_(metrics), response_(response), start_ns_(NowNanos()) {
    if (absl::Status s = engine.Prepare(ToHitRequest(request), &hit_); !s.ok()) {
      Complete(s);
      return;
    }
    hit_.backend->Decide(
        hit_.key, hit_.rate, hit_.cost,
        [this](absl::StatusOr<Decision> result) { OnDecision(std::move(result)); });
  }

  void OnDone() override { delete this; }

 private:
  void OnDecision(absl::StatusOr<Decision> result) {
    result = Engine::Finish(hit_, std::move(result));
    if (!result.ok()) {
      Complete(result.status());
      return;
    }
    ToProto(*result, response_);
    Complete(absl::OkStatus());
  }

  void Complete(const absl::Status& status) {
    metrics_.ObserveLatency(Rpc::kShouldThrottle, NowNanos() - start_ns_);
    if (!status.ok()) metrics_.CountError(status.code());
    Finish(ToGrpcStatus(status));
  }

  Metrics& metrics_;
  ShouldThrottleResponse* response_;
  const int64_t start_ns_;
  PreparedHit hit_;
};

}  // namespace

HitRequest ToHitRequest(const ShouldThrottleRequest& request) {
  HitRequest hit;
  hit.identifier = request.identifier();
  hit.throttle_uid = request.throttle_uid();
  hit.tenant = request.tenant();
  hit.cost = request.cost();
  hit.has_spec = request.has_spec();
  if (hit.has_spec) {
    hit.spec_limit = request.spec().limit();
    hit.spec_period_ms = request.spec().period_ms();
  }
  return hit;
}

void ToProto(const Decision& decision, ShouldThrottleResponse* response) {
  response->set_wait_ms(decision.allowed ? 0 : decision.wait_ms);
  response->set_limit(decision.limit);
  response->set_remaining(decision.remaining);
  response->set_reset_ms(decision.reset_ms);
}

grpc::ServerUnaryReactor* ThrottleServiceImpl::ShouldThrottle(
    grpc::CallbackServerContext* /*context*/, const ShouldThrottleRequest* request,
    ShouldThrottleResponse* response) {
  return new DecisionReactor(engine_, metrics_, *request, response);
}

grpc::ServerUnaryReactor* ThrottleServiceImpl::ShouldThrottleBatch(
    grpc::CallbackServerContext* context, const ShouldThrottleBatchRequest* request,
    ShouldThrottleBatchResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const int64_t start_ns = NowNanos();
  std::vector<HitRequest> hits;
  hits.reserve(request->requests_size());
  for (const ShouldThrottleRequest& r : request->requests())
    hits.push_back(ToHitRequest(r));
  Metrics& metrics = metrics_;
  engine_.ShouldThrottleBatch(hits, [reactor, response, start_ns, &metrics](
                                        absl::StatusOr<std::vector<Decision>> result) {
    if (result.ok()) {
      response->mutable_responses()->Reserve(static_cast<int>(result->size()));
      for (const Decision& d : *result) ToProto(d, response->add_responses());
    } else {
      metrics.CountError(result.status().code());
    }
    metrics.ObserveLatency(Rpc::kShouldThrottleBatch, NowNanos() - start_ns);
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  return reactor;
}

}  // namespace traffik
