#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/generic/generic_stub.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/mutex.h"  // header-only; TSan-visible, unlike absl::Mutex
#include "failure_log.h"
#include "short_circuit_cache.h"
#include "traffik/client.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik::client_internal {

// The Client: one gRPC channel (and stub) per Client, every RPC made with the
// callback API and a deadline of options.deadline; the blocking methods wait
// on the asynchronous ones. In-flight calls hold a reference to the
// ClientImpl, so it outlives them.
//
// Lifetime: create with Make() only. gRPC 1.51 aborts when the last
// grpc::Channel is destroyed on one of its callback threads (the thread
// joins itself), which happens when the last reference to a Client is
// dropped by a callback. So callbacks drop their reference to the ClientImpl
// last (after their ClientContext), inside a CallbackScope, and Make()'s
// deleter hands a ClientImpl released inside a CallbackScope to a new thread
// to be destroyed.
//
// Coalescing (options.coalesce): CheckAsync queues the check (a Pending);
// the queue is taken whole (TakeLocked) by the thread that fills it to
// max_batch or finds nothing in flight, by the callback of the last coalesced
// RPC in flight, or by the flusher thread max_delay after its first check;
// SendCoalesced splits it per tenant into one ShouldThrottleBatch per tenant
// (ShouldThrottle for a single check). A batch refused whole for one item
// (INVALID_ARGUMENT: nothing was taken) is sent again in halves until each
// check has its own answer. The queue holds a reference to the ClientImpl
// while it is not empty.
//
// Thread-safe: the stub is, the cache and failure log lock internally, the
// counters are atomic, the coalescing queue is guarded by coalesce_mu_.
class ClientImpl final : public Client, public std::enable_shared_from_this<ClientImpl> {
 public:
  // `options` must have been validated (Client::Create does).
  // `channel`: from MakeChannel(options).
  static std::shared_ptr<ClientImpl> Make(ClientOptions options,
                                          std::shared_ptr<grpc::Channel> channel);

  absl::StatusOr<ThrottleResult> Check(const ThrottleRequest& request,
                                       std::optional<FailurePolicy> policy) override;
  void CheckAsync(const ThrottleRequest& request,
                  std::function<void(absl::StatusOr<ThrottleResult>)> done,
                  std::optional<FailurePolicy> policy) override;
  using Client::CheckBatch;  // the deprecated forms
  using Client::CheckBatchAsync;
  absl::StatusOr<BatchResult> CheckBatch(const std::vector<ThrottleRequest>& requests,
                                         const BatchOptions& options) override;
  void CheckBatchAsync(const std::vector<ThrottleRequest>& requests,
                       std::function<void(absl::StatusOr<BatchResult>)> done,
                       const BatchOptions& options) override;
  absl::StatusOr<bool> Healthy(const std::string& service) override;
  ClientStats stats() const override;

 private:
  ClientImpl(ClientOptions options, std::shared_ptr<grpc::Channel> channel);
  ~ClientImpl() override;
  // Adds what every call carries (the API key) to `context`.
  void Prepare(grpc::ClientContext& context) const;
  // Make()'s deleter.
  static void Destroy(ClientImpl* client);

  using SteadyTime = std::chrono::steady_clock::time_point;
  struct CheckCall;
  struct BatchCall;
  struct Pending;
  struct CoalescedCall;
  // A queue taken for sending, with the reference that kept the client alive.
  struct Taken {
    std::vector<Pending> items;
    std::shared_ptr<ClientImpl> keepalive;
  };

  // How long a blocking method waits for its callback beyond the deadline
  // before giving up (the deadline always ends the RPC first; this only
  // guards against a lost callback).
  static constexpr std::chrono::milliseconds kSyncSlack{2000};

  std::chrono::system_clock::time_point RpcDeadline() const;
  void OnCheckDone(CheckCall& call, const grpc::Status& status);
  // Sends `call` (deadline, keys, costs, policy and done already set).
  void SendBatch(std::unique_ptr<BatchCall> call);
  template <typename Call>
  void SendBatchRpc(std::unique_ptr<Call> call,
                    void (ClientImpl::*on_done)(Call&, const grpc::Status&));
  void OnBatchDone(BatchCall& call, const grpc::Status& status);
  // Counts and logs a failure; applies `policy` to it when it is an outage
  // (IsOutage), returns it as the error otherwise.
  absl::StatusOr<ThrottleResult> Fail(const absl::Status& status, FailurePolicy policy);
  // The answer `policy` gives for `status` (an outage), or `status` itself.
  absl::StatusOr<ThrottleResult> ApplyPolicy(const absl::Status& status,
                                             FailurePolicy policy) const;
  // Sends `call` as a ShouldThrottle (deadline, key, cost, policy, done and
  // request already set).
  void SendCheck(std::unique_ptr<CheckCall> call);

  // Coalescing. Queues `pending`, sending the queue when it is due.
  void Enqueue(Pending pending);
  // Takes the whole queue (coalesce_mu_ held); counts the RPCs it will make
  // as in flight.
  Taken TakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(coalesce_mu_);
  // The number of RPCs SendCoalesced(items) makes (one per tenant).
  static int RpcCountOf(const std::vector<Pending>& items);
  // Sends `items` (arrival order), one RPC per tenant.
  void SendCoalesced(std::vector<Pending> items);
  // Sends `items` (one tenant) as one RPC: ShouldThrottle for one item,
  // ShouldThrottleBatch for more.
  void SendGroup(std::vector<Pending> items);
  void OnCoalescedDone(CoalescedCall& call, const grpc::Status& status);
  // A coalesced RPC answered; called before its checks' `done` run, so a
  // caller that checks again at once (a closed loop, one thread) finds
  // nothing in flight and is sent without waiting (measured: 1 caller, p50
  // 73 us when called after `done`, 60 us before, as unary's 59 us).
  void OnCoalescedRpcEnd();
  // The flusher thread: sends the queue max_delay after its first check.
  void FlushLoop();

  // Remembers a refusal from the server for the short-circuit.
  void Remember(const std::string& key, uint32_t cost, SteadyTime sent_at,
                const ThrottleResult& result);

  const ClientOptions options_;
  const std::string authorization_;  // "Bearer <api_key>", or empty
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ThrottleService::Stub> stub_;
  grpc::GenericStub health_stub_;
  ShortCircuitCache short_circuit_;
  FailureLog failure_log_;

  std::atomic<uint64_t> rpcs_{0};
  std::atomic<uint64_t> short_circuited_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> coalesced_{0};

  // Coalescing (only with options_.coalesce).
  Mutex coalesce_mu_;
  CondVar coalesce_cv_;  // wakes the flusher
  std::vector<Pending> queue_ ABSL_GUARDED_BY(coalesce_mu_);
  // Keeps the client alive while queue_ is not empty.
  std::shared_ptr<ClientImpl> queue_keepalive_ ABSL_GUARDED_BY(coalesce_mu_);
  std::chrono::steady_clock::time_point flush_at_
      ABSL_GUARDED_BY(coalesce_mu_);                         // first arrival + max_delay
  int in_flight_ ABSL_GUARDED_BY(coalesce_mu_) = 0;          // coalesced RPCs
  bool flusher_idle_ ABSL_GUARDED_BY(coalesce_mu_) = false;  // waiting, no deadline
  bool stopping_ ABSL_GUARDED_BY(coalesce_mu_) = false;
  std::thread flusher_;
};

// Validates `options` (the checks behind Client::Create).
absl::Status ValidateOptions(const ClientOptions& options);

// The channel for `options` (validated): plaintext, or TLS with the files of
// options.tls read now (errors name the option, e.g. "tls.ca_file").
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options);

// grpc::Status -> absl::Status (the codes share their numeric values).
absl::Status ToAbslStatus(const grpc::Status& status);

}  // namespace traffik::client_internal
