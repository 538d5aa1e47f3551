#include "service/throttle_service.h"

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "auth/grpc_auth.h"
#include "base/error_reason.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

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
  const auto code = static_cast<grpc::StatusCode>(status.code());
  std::optional<std::string> reason = ReasonOf(status);
  if (!reason.has_value()) return grpc::Status(code, std::string(status.message()));
  // A reason a client may act on: google.rpc.Status with one ErrorInfo in the
  // grpc-status-details-bin trailer (proto/traffik/v1/errors.proto).
  google::rpc::ErrorInfo info;
  info.set_reason(*std::move(reason));
  info.set_domain(kErrorDomain);
  google::rpc::Status details;
  details.set_code(static_cast<int32_t>(status.code()));
  details.set_message(std::string(status.message()));
  details.add_details()->PackFrom(info);
  return grpc::Status(code, std::string(status.message()), details.SerializeAsString());
}

// Turns a finished decision (or error) into the response and status, and
// records latency and errors. Returns the gRPC status to finish with.
grpc::Status Answer(Metrics& metrics, const PreparedHit& hit,
                    absl::StatusOr<Decision> result, ShouldThrottleResponse* response,
                    int64_t start_ns) {
  result = Engine::Finish(hit, std::move(result));
  metrics.ObserveLatency(Rpc::kShouldThrottle, NowNanos() - start_ns);
  if (!result.ok()) {
    metrics.CountError(result.status().code());
    return ToGrpcStatus(result.status());
  }
  ToProto(*result, response);
  return grpc::Status::OK;
}

// One ShouldThrottle call on a backend that answers later (network): owns the
// prepared hit (key, snapshot) until the backend answers, then finishes the
// call and deletes itself. The call is finished through the context's default
// reactor, not a reactor of our own: gRPC runs the default reactor's (empty)
// OnDone inline, while a user reactor's OnDone is always handed to gRPC's
// executor thread — one more thread wake-up per decision, measured as most of
// the extra futex calls of a Redis decision (bench/analysis.md).
class PendingDecision {
 public:
  static void Start(Metrics& metrics, PreparedHit hit, ShouldThrottleResponse* response,
                    int64_t start_ns, grpc::ServerUnaryReactor* reactor) {
    auto* pending =
        new PendingDecision(metrics, std::move(hit), response, start_ns, reactor);
    pending->hit_.backend->DecideIn(
        pending->hit_.partition, pending->hit_.key, pending->hit_.rate,
        pending->hit_.cost,
        [pending](absl::StatusOr<Decision> result) { pending->Done(std::move(result)); });
  }

 private:
  PendingDecision(Metrics& metrics, PreparedHit hit, ShouldThrottleResponse* response,
                  int64_t start_ns, grpc::ServerUnaryReactor* reactor)
      : metrics_(metrics),
        hit_(std::move(hit)),
        response_(response),
        start_ns_(start_ns),
        reactor_(reactor) {}

  void Done(absl::StatusOr<Decision> result) {
    const grpc::Status status =
        Answer(metrics_, hit_, std::move(result), response_, start_ns_);
    grpc::ServerUnaryReactor* reactor = reactor_;
    // Finish may complete the call (and free the context and response) before
    // it returns: nothing of it is touched after, and this is gone before.
    delete this;
    reactor->Finish(status);
  }

  Metrics& metrics_;
  PreparedHit hit_;
  ShouldThrottleResponse* response_;
  const int64_t start_ns_;
  grpc::ServerUnaryReactor* const reactor_;
};

}  // namespace

HitRequest ToHitRequest(const ShouldThrottleRequest& request) {
  HitRequest hit;
  hit.identifier = request.identifier();
  hit.throttle_uid = request.throttle_uid();
  hit.tenant = request.tenant();
  hit.cost = request.cost();
  hit.peek = request.peek();
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

absl::Status ThrottleServiceImpl::Authorize(grpc::CallbackServerContext* context,
                                            absl::string_view tenant) {
  if (!engine_.auth_maybe_required()) return absl::OkStatus();
  const std::shared_ptr<const Snapshot> snapshot = engine_.snapshot();
  if (!snapshot->callers().required()) return absl::OkStatus();
  CallAccess access;
  access.rpc = "ShouldThrottle";
  access.tenants = {tenant};
  return AuthorizeCall(snapshot->callers(), *context, access, metrics_);
}

grpc::ServerUnaryReactor* ThrottleServiceImpl::ShouldThrottle(
    grpc::CallbackServerContext* context, const ShouldThrottleRequest* request,
    ShouldThrottleResponse* response) {
  const int64_t start_ns = NowNanos();
  // Auth before anything else: no bucket is touched for a refused call.
  if (absl::Status s = Authorize(context, request->tenant()); !s.ok()) {
    metrics_.ObserveLatency(Rpc::kShouldThrottle, NowNanos() - start_ns);
    metrics_.CountError(s.code());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (request->peek()) {
    // Takes nothing: Engine::Peek answers as a decision would, from the
    // backend's callback (inline for memory).
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Metrics& metrics = metrics_;
    engine_.Peek(ToHitRequest(*request), [reactor, response, start_ns,
                                          &metrics](absl::StatusOr<Decision> result) {
      metrics.ObserveLatency(Rpc::kShouldThrottle, NowNanos() - start_ns);
      if (!result.ok()) {
        metrics.CountError(result.status().code());
      } else {
        ToProto(*result, response);
      }
      reactor->Finish(ToGrpcStatus(result.status()));
    });
    return reactor;
  }
  // Reused per gRPC thread: the key keeps its capacity, so a decision on the
  // memory backend allocates nothing here.
  thread_local PreparedHit hit;
  if (absl::Status s = engine_.Prepare(ToHitRequest(*request), &hit); !s.ok()) {
    metrics_.ObserveLatency(Rpc::kShouldThrottle, NowNanos() - start_ns);
    metrics_.CountError(s.code());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (!hit.backend->CompletesInline()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    PendingDecision::Start(metrics_, std::move(hit), response, start_ns, reactor);
    return reactor;
  }
  absl::StatusOr<Decision> result = absl::InternalError("backend did not answer inline");
  hit.backend->DecideIn(hit.partition, hit.key, hit.rate, hit.cost,
                        [&result](absl::StatusOr<Decision> d) { result = std::move(d); });
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Answer(metrics_, hit, std::move(result), response, start_ns));
  return reactor;
}

grpc::ServerUnaryReactor* ThrottleServiceImpl::ShouldThrottleBatch(
    grpc::CallbackServerContext* context, const ShouldThrottleBatchRequest* request,
    ShouldThrottleBatchResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const int64_t start_ns = NowNanos();
  if (std::shared_ptr<const Snapshot> snapshot =
          engine_.auth_maybe_required() ? engine_.snapshot() : nullptr;
      snapshot != nullptr && snapshot->callers().required()) {
    // Auth before anything else: one refused item refuses the whole batch,
    // nothing taken.
    CallAccess access;
    access.rpc = "ShouldThrottleBatch";
    access.batch = true;
    access.tenants.reserve(request->requests_size());
    for (const ShouldThrottleRequest& r : request->requests()) {
      access.tenants.push_back(r.tenant());
    }
    if (absl::Status s = AuthorizeCall(snapshot->callers(), *context, access, metrics_);
        !s.ok()) {
      metrics_.CountError(s.code());
      metrics_.ObserveLatency(Rpc::kShouldThrottleBatch, NowNanos() - start_ns);
      reactor->Finish(ToGrpcStatus(s));
      return reactor;
    }
  }
  std::vector<HitRequest> hits;
  hits.reserve(request->requests_size());
  for (const ShouldThrottleRequest& r : request->requests())
    hits.push_back(ToHitRequest(r));
  Metrics& metrics = metrics_;
  engine_.ShouldThrottleBatch(
      hits, request->all_or_nothing(),
      [reactor, response, start_ns, &metrics](absl::StatusOr<AllOrNothingResult> result) {
        if (result.ok()) {
          response->mutable_responses()->Reserve(
              static_cast<int>(result->decisions.size()));
          for (const Decision& d : result->decisions)
            ToProto(d, response->add_responses());
          response->set_applied(result->applied);
        } else {
          metrics.CountError(result.status().code());
        }
        metrics.ObserveLatency(Rpc::kShouldThrottleBatch, NowNanos() - start_ns);
        reactor->Finish(ToGrpcStatus(result.status()));
      });
  return reactor;
}

}  // namespace traffik
