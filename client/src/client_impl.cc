#include "client_impl.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/slice.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/stub_options.h>

#include <condition_variable>
#include <fstream>
#include <future>
#include <iterator>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "health.h"
#include "traffik/v1/errors.pb.h"

namespace traffik::client_internal {
namespace {

// gRPC backs off up to 120 s between reconnection attempts by default; a rate
// limiter that fails open or closed while traffikd restarts should notice it
// is back within seconds.
constexpr int kMaxReconnectBackoffMs = 5000;

// A PEM file named by option `name`, bounded (certificates and keys are small).
absl::StatusOr<std::string> ReadPem(const char* name, const std::string& path) {
  constexpr size_t kMaxPemBytes = 1 << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(name, ": cannot read '", path, "'"));
  std::string text(kMaxPemBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxPemBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": '", path, "' is larger than ", kMaxPemBytes, " bytes"));
  }
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": '", path, "' holds no PEM data"));
  }
  return text;
}

// `identifier` is the wire form of request.identifier (WireIdentifier).
void ToProto(const ThrottleRequest& request, std::string identifier,
             v1::ShouldThrottleRequest* out) {
  out->set_identifier(std::move(identifier));
  out->set_throttle_uid(request.throttle_uid);
  out->set_tenant(request.tenant);
  out->set_cost(request.cost);
  if (request.spec.has_value()) {
    out->mutable_spec()->set_limit(request.spec->limit);
    out->mutable_spec()->set_period_ms(
        static_cast<uint64_t>(request.spec->period.count()));
  }
}

ThrottleResult FromProto(const v1::ShouldThrottleResponse& response) {
  ThrottleResult result;
  result.allowed = response.wait_ms() == 0;
  result.wait = std::chrono::milliseconds(response.wait_ms());
  result.limit = response.limit();
  result.remaining = response.remaining();
  result.reset = std::chrono::milliseconds(response.reset_ms());
  result.source = ThrottleResult::Source::kServer;
  return result;
}

// A local refusal, with the numbers the server gave when it refused (so a 429
// answered locally carries the same RateLimit-* headers).
ThrottleResult ShortCircuitResult(const ShortCircuitCache::Refusal& refusal) {
  ThrottleResult result;
  result.allowed = false;
  result.wait = refusal.wait;
  result.limit = refusal.limit;
  result.remaining = refusal.remaining;
  result.reset = refusal.reset;
  result.source = ThrottleResult::Source::kShortCircuit;
  return result;
}

// True while this thread runs one of our gRPC callbacks.
thread_local bool t_in_callback = false;

// Marks the current thread as running a gRPC callback for its lifetime.
class CallbackScope {
 public:
  CallbackScope() : outer_(t_in_callback) { t_in_callback = true; }
  ~CallbackScope() { t_in_callback = outer_; }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  const bool outer_;
};

// The short-circuit key of `request` sent with the wire identifier `identifier`.
std::string KeyOf(const ThrottleRequest& request, const std::string& identifier) {
  return ShortCircuitCache::Key(request.tenant, request.throttle_uid, identifier);
}

}  // namespace

absl::Status ToAbslStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  if (!options.tls.has_value()) {
    return grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(),
                                     args);
  }
  const ClientTlsOptions& tls = *options.tls;
  grpc::SslCredentialsOptions ssl;
  if (!tls.ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls.ca_file", tls.ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("tls.cert_file", tls.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("tls.key_file", tls.key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  if (!tls.server_name.empty()) {
    args.SetSslTargetNameOverride(tls.server_name);
  }
  return grpc::CreateCustomChannel(options.target, grpc::SslCredentials(ssl), args);
}

absl::Status ValidateOptions(const ClientOptions& options) {
  if (options.tls.has_value() &&
      options.tls->cert_file.empty() != options.tls->key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls.cert_file and tls.key_file go together (a client certificate and its key)");
  }
  if (options.api_key.size() > kMaxApiKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("api_key is longer than ", kMaxApiKeyBytes, " bytes"));
  }
  for (char c : options.api_key) {
    // Never echo the key: only say what is wrong with it.
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "api_key must be printable ASCII without spaces (a stray newline from a "
          "file?)");
    }
  }
  if (options.target.empty()) return absl::InvalidArgumentError("target is empty");
  if (options.deadline <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError(
        absl::StrCat("deadline must be positive, got ", options.deadline.count(), " ms"));
  }
  if (options.deny_wait < std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError(absl::StrCat("deny_wait must not be negative, got ",
                                                   options.deny_wait.count(), " ms"));
  }
  if (options.failure_log_interval < std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError(
        absl::StrCat("failure_log_interval must not be negative, got ",
                     options.failure_log_interval.count(), " ms"));
  }
  if (options.coalesce.has_value()) {
    const CoalesceOptions& coalesce = *options.coalesce;
    if (coalesce.max_delay <= std::chrono::microseconds::zero() ||
        coalesce.max_delay > options.deadline) {
      return absl::InvalidArgumentError(
          absl::StrCat("coalesce.max_delay must be positive and at most the deadline (",
                       std::chrono::microseconds(options.deadline).count(), " us), got ",
                       coalesce.max_delay.count(), " us"));
    }
    if (coalesce.max_batch < 1 || coalesce.max_batch > kMaxCoalesceBatch) {
      return absl::InvalidArgumentError(
          absl::StrCat("coalesce.max_batch must be 1 to ", kMaxCoalesceBatch,
                       " (traffikd's default max_batch_size), got ", coalesce.max_batch));
    }
  }
  if (options.max_identifier_bytes < kDigestIdentifierBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_identifier_bytes must be at least ", kDigestIdentifierBytes,
        " (the size of a digest identifier), got ", options.max_identifier_bytes));
  }
  return absl::OkStatus();
}

// One ShouldThrottle in flight; owned by its gRPC callback.
struct ClientImpl::CheckCall {
  grpc::ClientContext context;
  v1::ShouldThrottleRequest request;
  v1::ShouldThrottleResponse response;
  std::string key;  // short-circuit key ("" when the cache is off)
  uint32_t cost = 0;
  SteadyTime sent_at;
  FailurePolicy policy = FailurePolicy::kRaise;
  std::function<void(absl::StatusOr<ThrottleResult>)> done;
  bool coalesced = false;  // sent by the coalescer (OnCoalescedRpcEnd after)
};

// One check waiting in the coalescing queue.
struct ClientImpl::Pending {
  v1::ShouldThrottleRequest request;
  std::string key;  // short-circuit key ("" when the cache is off)
  uint32_t cost = 0;
  FailurePolicy policy = FailurePolicy::kRaise;
  // Its own deadline: arrival + options.deadline (the queueing counts).
  std::chrono::system_clock::time_point deadline;
  std::function<void(absl::StatusOr<ThrottleResult>)> done;
};

// One ShouldThrottleBatch of coalesced checks (one tenant) in flight; owned
// by its gRPC callback.
struct ClientImpl::CoalescedCall {
  grpc::ClientContext context;
  v1::ShouldThrottleBatchRequest request;
  v1::ShouldThrottleBatchResponse response;
  std::vector<Pending> items;  // their requests moved into `request`
  SteadyTime sent_at;
};

// One ShouldThrottleBatch in flight; owned by its gRPC callback.
struct ClientImpl::BatchCall {
  grpc::ClientContext context;
  v1::ShouldThrottleBatchRequest request;
  v1::ShouldThrottleBatchResponse response;
  std::vector<std::string> keys;  // per item ("" when the cache is off)
  std::vector<uint32_t> costs;    // per item
  SteadyTime sent_at;
  std::chrono::system_clock::time_point deadline;  // shared by a fall-back retry
  FailurePolicy policy = FailurePolicy::kRaise;
  bool fall_back_to_independent = false;
  std::function<void(absl::StatusOr<BatchResult>)> done;
};

std::shared_ptr<ClientImpl> ClientImpl::Make(ClientOptions options,
                                             std::shared_ptr<grpc::Channel> channel) {
  return std::shared_ptr<ClientImpl>(
      new ClientImpl(std::move(options), std::move(channel)), &ClientImpl::Destroy);
}

void ClientImpl::Prepare(grpc::ClientContext& context) const {
  if (!authorization_.empty()) context.AddMetadata("authorization", authorization_);
}

void ClientImpl::Destroy(ClientImpl* client) {
  if (!t_in_callback) {
    delete client;
    return;
  }
  // Released by a gRPC callback: destroying the channel here could be the
  // last one and shut down the callback thread from itself.
  std::thread([client] { delete client; }).detach();
}

ClientImpl::ClientImpl(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      authorization_(
          options_.api_key.empty() ? "" : absl::StrCat("Bearer ", options_.api_key)),
      channel_(std::move(channel)),
      stub_(v1::ThrottleService::NewStub(channel_)),
      health_stub_(channel_),
      short_circuit_(options_.short_circuit_max_keys),
      failure_log_(options_.target, options_.failure_log_interval, options_.log) {
  if (options_.coalesce.has_value()) flusher_ = std::thread([this] { FlushLoop(); });
}

ClientImpl::~ClientImpl() {
  if (!flusher_.joinable()) return;
  {
    MutexLock lock(&coalesce_mu_);
    stopping_ = true;
    coalesce_cv_.Signal();
  }
  // Never this thread: FlushLoop runs in a CallbackScope, so Destroy deletes
  // a client released there on another thread.
  flusher_.join();
}

std::chrono::system_clock::time_point ClientImpl::RpcDeadline() const {
  // gRPC 1.51 takes system_clock deadlines only.
  return std::chrono::system_clock::now() + options_.deadline;
}

absl::StatusOr<ThrottleResult> ClientImpl::Fail(const absl::Status& status,
                                                FailurePolicy policy) {
  failures_.fetch_add(1, std::memory_order_relaxed);
  failure_log_.OnFailure(status, policy);
  return ApplyPolicy(status, policy);
}

absl::StatusOr<ThrottleResult> ClientImpl::ApplyPolicy(const absl::Status& status,
                                                       FailurePolicy policy) const {
  // The policy covers outages only: an answer that the request itself was
  // wrong must never let it through (or refuse it as if throttled).
  if (!IsOutage(status)) return status;
  ThrottleResult result;
  result.source = ThrottleResult::Source::kFailurePolicy;
  switch (policy) {
    case FailurePolicy::kAllow:
      result.allowed = true;
      return result;
    case FailurePolicy::kDeny:
      result.allowed = false;
      result.wait = options_.deny_wait;
      return result;
    case FailurePolicy::kRaise:
      break;
  }
  return status;
}

void ClientImpl::Remember(const std::string& key, uint32_t cost, SteadyTime sent_at,
                          const ThrottleResult& result) {
  if (result.allowed || !short_circuit_.enabled()) return;
  // Measured from the send time: the server decided later, so the local
  // refusal never outlasts the server's.
  // The bucket's numbers are kept for the local refusals' headers.
  short_circuit_.Insert(key, cost, sent_at + result.wait,
                        {.limit = result.limit,
                         .remaining = result.remaining,
                         .full_at = sent_at + result.reset});
}

namespace {

// Hands one synchronous call's answer from the gRPC callback thread to the
// waiting caller. A mutex and condition variable rather than std::promise,
// whose set_value runs through call_once (glibc's slow path always issues a
// futex wake): one wake-up fewer per synchronous check. Shared, so a callback
// that arrives after the caller gave up still has somewhere to write.
template <typename T>
class SyncWaiter {
 public:
  void Set(T value) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      value_.emplace(std::move(value));
    }
    ready_.notify_one();
  }
  // The answer, or nullopt when none came within `timeout`.
  std::optional<T> Wait(std::chrono::nanoseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!ready_.wait_for(lock, timeout, [this] { return value_.has_value(); })) {
      return std::nullopt;
    }
    return std::move(value_);
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::optional<T> value_;
};

}  // namespace

absl::StatusOr<ThrottleResult> ClientImpl::Check(const ThrottleRequest& request,
                                                 std::optional<FailurePolicy> policy) {
  auto waiter = std::make_shared<SyncWaiter<absl::StatusOr<ThrottleResult>>>();
  CheckAsync(
      request,
      [waiter](absl::StatusOr<ThrottleResult> result) { waiter->Set(std::move(result)); },
      policy);
  std::optional<absl::StatusOr<ThrottleResult>> result =
      waiter->Wait(options_.deadline + kSyncSlack);
  if (!result.has_value()) {
    return Fail(absl::DeadlineExceededError("no answer from the gRPC callback in time"),
                policy.value_or(options_.failure_policy));
  }
  return *std::move(result);
}

void ClientImpl::CheckAsync(const ThrottleRequest& request,
                            std::function<void(absl::StatusOr<ThrottleResult>)> done,
                            std::optional<FailurePolicy> policy) {
  std::string identifier =
      WireIdentifier(request.identifier, options_.max_identifier_bytes);
  std::string key;
  if (short_circuit_.enabled()) {
    key = KeyOf(request, identifier);
    if (std::optional<ShortCircuitCache::Refusal> refusal =
            short_circuit_.LookupRefusal(key, request.cost)) {
      short_circuited_.fetch_add(1, std::memory_order_relaxed);
      done(ShortCircuitResult(*refusal));
      return;
    }
  }
  if (options_.coalesce.has_value()) {
    Pending pending;
    ToProto(request, std::move(identifier), &pending.request);
    pending.key = std::move(key);
    pending.cost = request.cost;
    pending.policy = policy.value_or(options_.failure_policy);
    pending.deadline = RpcDeadline();
    pending.done = std::move(done);
    Enqueue(std::move(pending));
    return;
  }
  auto call = std::make_unique<CheckCall>();
  call->key = std::move(key);
  ToProto(request, std::move(identifier), &call->request);
  call->cost = request.cost;
  call->policy = policy.value_or(options_.failure_policy);
  call->done = std::move(done);
  call->context.set_deadline(RpcDeadline());
  SendCheck(std::move(call));
}

void ClientImpl::SendCheck(std::unique_ptr<CheckCall> call) {
  Prepare(call->context);
  call->sent_at = std::chrono::steady_clock::now();
  rpcs_.fetch_add(1, std::memory_order_relaxed);

  CheckCall* raw = call.release();
  stub_->async()->ShouldThrottle(
      &raw->context, &raw->request, &raw->response,
      [self = shared_from_this(), raw](grpc::Status status) mutable {
        // Destroyed in reverse order: the call (its ClientContext holds a
        // channel reference) before the client.
        CallbackScope scope;
        std::shared_ptr<ClientImpl> client = std::move(self);
        std::unique_ptr<CheckCall> owned(raw);
        client->OnCheckDone(*owned, status);
      });
}

void ClientImpl::OnCheckDone(CheckCall& call, const grpc::Status& status) {
  if (call.coalesced) OnCoalescedRpcEnd();
  if (!status.ok()) {
    call.done(Fail(ToAbslStatus(status), call.policy));
  } else {
    failure_log_.OnSuccess();
    ThrottleResult result = FromProto(call.response);
    Remember(call.key, call.cost, call.sent_at, result);
    call.done(std::move(result));
  }
}

void ClientImpl::Enqueue(Pending pending) {
  const CoalesceOptions& coalesce = *options_.coalesce;
  Taken taken;
  {
    MutexLock lock(&coalesce_mu_);
    if (queue_.empty()) {
      queue_keepalive_ = shared_from_this();
      flush_at_ = std::chrono::steady_clock::now() + coalesce.max_delay;
    }
    queue_.push_back(std::move(pending));
    if (queue_.size() >= coalesce.max_batch || in_flight_ == 0) {
      // Full, or nothing in flight to wait for: waiting would only add
      // latency.
      taken = TakeLocked();
    } else if (queue_.size() == 1 && flusher_idle_) {
      flusher_idle_ = false;
      coalesce_cv_.Signal();  // a flusher already waiting on a deadline keeps it
    }
  }
  if (!taken.items.empty()) SendCoalesced(std::move(taken.items));
}

ClientImpl::Taken ClientImpl::TakeLocked() {
  Taken taken;
  taken.items.swap(queue_);
  taken.keepalive = std::move(queue_keepalive_);
  in_flight_ += RpcCountOf(taken.items);
  return taken;
}

namespace {

// The tenants of `items` in order of first appearance, and each item's index
// into them. Hashed: tenants come from the application (perhaps from its
// callers), and a queue may hold up to kMaxCoalesceBatch checks.
template <typename Items>
std::vector<size_t> GroupByTenant(const Items& items, size_t* group_count) {
  std::vector<size_t> group_of(items.size(), 0);
  *group_count = items.empty() ? 0 : 1;
  if (items.empty()) return group_of;
  const std::string& first = items.front().request.tenant();
  size_t i = 0;
  while (i < items.size() && items[i].request.tenant() == first) ++i;
  if (i == items.size()) return group_of;  // the usual case: one tenant
  absl::flat_hash_map<std::string_view, size_t> groups;
  groups.emplace(first, 0);
  for (; i < items.size(); ++i) {
    auto [it, inserted] = groups.try_emplace(items[i].request.tenant(), groups.size());
    group_of[i] = it->second;
  }
  *group_count = groups.size();
  return group_of;
}

}  // namespace

int ClientImpl::RpcCountOf(const std::vector<Pending>& items) {
  size_t count = 0;
  GroupByTenant(items, &count);
  return static_cast<int>(count);
}

// Sends call->request (deadline already set) as one ShouldThrottleBatch;
// `on_done` runs on gRPC's callback thread with the call and its status.
namespace {

// Why a ShouldThrottleBatch of `count` items gave no usable answers: its
// status, or an answer with the wrong number of responses; OK otherwise.
absl::Status BatchFailure(const grpc::Status& status,
                          const v1::ShouldThrottleBatchResponse& response, size_t count) {
  if (!status.ok()) return ToAbslStatus(status);
  if (static_cast<size_t>(response.responses_size()) != count) {
    return absl::DataLossError(absl::StrCat("batch of ", count, " answered with ",
                                            response.responses_size(), " responses"));
  }
  return absl::OkStatus();
}

}  // namespace

template <typename Call>
void ClientImpl::SendBatchRpc(std::unique_ptr<Call> call,
                              void (ClientImpl::*on_done)(Call&, const grpc::Status&)) {
  Prepare(call->context);
  call->sent_at = std::chrono::steady_clock::now();
  rpcs_.fetch_add(1, std::memory_order_relaxed);
  Call* raw = call.release();
  stub_->async()->ShouldThrottleBatch(
      &raw->context, &raw->request, &raw->response,
      [self = shared_from_this(), raw, on_done](grpc::Status status) mutable {
        CallbackScope scope;  // see CheckAsync
        std::shared_ptr<ClientImpl> client = std::move(self);
        std::unique_ptr<Call> owned(raw);
        (client.get()->*on_done)(*owned, status);
      });
}

void ClientImpl::SendCoalesced(std::vector<Pending> items) {
  // One RPC per tenant: traffikd fails a batch whole for an outage of any
  // tenant's backend, and applies each tenant's own on_backend_error; a
  // batch of one tenant fails or answers as each of its checks would alone.
  size_t count = 0;
  std::vector<size_t> group_of = GroupByTenant(items, &count);
  if (count <= 1) {
    SendGroup(std::move(items));
    return;
  }
  std::vector<std::vector<Pending>> groups(count);
  for (size_t i = 0; i < items.size(); ++i) {
    groups[group_of[i]].push_back(std::move(items[i]));
  }
  for (std::vector<Pending>& group : groups) SendGroup(std::move(group));
}

void ClientImpl::SendGroup(std::vector<Pending> items) {
  if (items.size() == 1) {
    Pending& p = items.front();
    auto call = std::make_unique<CheckCall>();
    call->request = std::move(p.request);
    call->key = std::move(p.key);
    call->cost = p.cost;
    call->policy = p.policy;
    call->done = std::move(p.done);
    call->coalesced = true;
    call->context.set_deadline(p.deadline);
    SendCheck(std::move(call));
    return;
  }
  auto call = std::make_unique<CoalescedCall>();
  call->request.mutable_requests()->Reserve(static_cast<int>(items.size()));
  // Items are in arrival order: the first has the earliest deadline.
  call->context.set_deadline(items.front().deadline);
  for (Pending& p : items) *call->request.add_requests() = std::move(p.request);
  call->items = std::move(items);
  SendBatchRpc(std::move(call), &ClientImpl::OnCoalescedDone);
}

void ClientImpl::OnCoalescedDone(CoalescedCall& call, const grpc::Status& status) {
  std::vector<Pending>& items = call.items;
  const size_t count = items.size();
  if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    // traffikd refuses a batch whole, taking nothing, when one item is
    // invalid (or the batch is over its max_batch_size); which item is only
    // in the message text. Send the halves again (each check keeps its own
    // deadline) until every check has its own answer: a single check goes
    // as ShouldThrottle and gets exactly the error it gets alone.
    failures_.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = 0; i < count; ++i) {
      items[i].request = std::move(*call.request.mutable_requests(static_cast<int>(i)));
    }
    std::vector<Pending> second(std::make_move_iterator(items.begin() + count / 2),
                                std::make_move_iterator(items.end()));
    items.resize(count / 2);
    {
      MutexLock lock(&coalesce_mu_);
      in_flight_ += 1;  // two RPCs replace this one
    }
    SendGroup(std::move(items));
    SendGroup(std::move(second));
    return;
  }
  const absl::Status failure = BatchFailure(status, call.response, count);
  coalesced_.fetch_add(count, std::memory_order_relaxed);
  OnCoalescedRpcEnd();
  if (!failure.ok()) {
    // One failed RPC: counted and logged once; each check gets the failure
    // under its own policy, as it would alone.
    failures_.fetch_add(1, std::memory_order_relaxed);
    failure_log_.OnFailure(failure, items.front().policy);
    for (Pending& p : items) p.done(ApplyPolicy(failure, p.policy));
  } else {
    failure_log_.OnSuccess();
    for (size_t i = 0; i < count; ++i) {
      ThrottleResult result = FromProto(call.response.responses(static_cast<int>(i)));
      Remember(items[i].key, items[i].cost, call.sent_at, result);
      items[i].done(std::move(result));
    }
  }
}

void ClientImpl::OnCoalescedRpcEnd() {
  Taken taken;
  {
    MutexLock lock(&coalesce_mu_);
    --in_flight_;
    // The last answer is in: what queued meanwhile goes now.
    if (in_flight_ == 0 && !queue_.empty()) taken = TakeLocked();
  }
  if (!taken.items.empty()) SendCoalesced(std::move(taken.items));
}

void ClientImpl::FlushLoop() {
  // Dropping the queue's reference here may release the client: Destroy
  // then deletes it on another thread (this one is joined by the destructor).
  CallbackScope scope;
  coalesce_mu_.Lock();
  while (!stopping_) {
    if (queue_.empty()) {
      flusher_idle_ = true;
      coalesce_cv_.Wait(&coalesce_mu_);
      flusher_idle_ = false;
      continue;
    }
    if (std::chrono::steady_clock::now() < flush_at_) {
      coalesce_cv_.WaitUntil(&coalesce_mu_, flush_at_);
      continue;
    }
    Taken taken = TakeLocked();
    coalesce_mu_.Unlock();
    SendCoalesced(std::move(taken.items));
    taken.keepalive.reset();
    coalesce_mu_.Lock();
  }
  coalesce_mu_.Unlock();
}

absl::StatusOr<BatchResult> ClientImpl::CheckBatch(
    const std::vector<ThrottleRequest>& requests, const BatchOptions& options) {
  auto waiter = std::make_shared<SyncWaiter<absl::StatusOr<BatchResult>>>();
  CheckBatchAsync(
      requests,
      [waiter](absl::StatusOr<BatchResult> result) { waiter->Set(std::move(result)); },
      options);
  std::optional<absl::StatusOr<BatchResult>> answer =
      waiter->Wait(options_.deadline + kSyncSlack);
  if (!answer.has_value()) {
    const FailurePolicy effective = options.policy.value_or(options_.failure_policy);
    absl::StatusOr<ThrottleResult> failed =
        Fail(absl::DeadlineExceededError("no answer from the gRPC callback in time"),
             effective);
    if (!failed.ok()) return failed.status();
    BatchResult result;
    result.results.assign(requests.size(), *failed);
    result.applied = failed->allowed;
    return result;
  }
  return *std::move(answer);
}

void ClientImpl::CheckBatchAsync(const std::vector<ThrottleRequest>& requests,
                                 std::function<void(absl::StatusOr<BatchResult>)> done,
                                 const BatchOptions& options) {
  if (requests.empty()) {
    done(BatchResult{});
    return;
  }
  auto call = std::make_unique<BatchCall>();
  std::vector<std::string> identifiers;
  identifiers.reserve(requests.size());
  for (const ThrottleRequest& request : requests) {
    identifiers.push_back(
        WireIdentifier(request.identifier, options_.max_identifier_bytes));
  }
  if (short_circuit_.enabled()) {
    call->keys.reserve(requests.size());
    bool any_refused = false;
    std::vector<ThrottleResult> local(requests.size(), ShortCircuitResult({}));
    for (size_t i = 0; i < requests.size(); ++i) {
      call->keys.push_back(KeyOf(requests[i], identifiers[i]));
      if (std::optional<ShortCircuitCache::Refusal> refusal =
              short_circuit_.LookupRefusal(call->keys.back(), requests[i].cost)) {
        local[i] = ShortCircuitResult(*refusal);
        any_refused = true;
      }
    }
    if (any_refused) {
      // All or nothing: the items not refused are not sent either, so no
      // tokens are taken from them.
      short_circuited_.fetch_add(requests.size(), std::memory_order_relaxed);
      BatchResult result;
      result.results = std::move(local);
      result.applied = false;
      done(std::move(result));
      return;
    }
  } else {
    call->keys.assign(requests.size(), std::string());
  }
  call->costs.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    ToProto(requests[i], std::move(identifiers[i]), call->request.add_requests());
    call->costs.push_back(requests[i].cost);
  }
  call->request.set_all_or_nothing(options.all_or_nothing);
  call->fall_back_to_independent = options.fall_back_to_independent;
  call->policy = options.policy.value_or(options_.failure_policy);
  call->done = std::move(done);
  call->deadline = RpcDeadline();
  SendBatch(std::move(call));
}

void ClientImpl::SendBatch(std::unique_ptr<BatchCall> call) {
  call->context.set_deadline(call->deadline);
  SendBatchRpc(std::move(call), &ClientImpl::OnBatchDone);
}

namespace {

// The traffik.v1.ErrorReason a traffikd error carries (a google.rpc.ErrorInfo
// of domain "traffik.v1" in the status details), or UNSPECIFIED.
traffik::v1::ErrorReason ReasonOf(const grpc::Status& status) {
  if (status.error_details().empty()) return traffik::v1::ERROR_REASON_UNSPECIFIED;
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) {
    return traffik::v1::ERROR_REASON_UNSPECIFIED;
  }
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (!any.Is<google::rpc::ErrorInfo>() || !any.UnpackTo(&info)) continue;
    traffik::v1::ErrorReason reason;
    if (info.domain() == "traffik.v1" &&
        traffik::v1::ErrorReason_Parse(info.reason(), &reason)) {
      return reason;
    }
  }
  return traffik::v1::ERROR_REASON_UNSPECIFIED;
}

// True when traffikd refused an all_or_nothing batch only because it cannot
// decide it all-or-nothing (items on several backends, or on several Redis
// Cluster slots); an ordinary batch may still work. Decided on the status
// code and the error's reason, never on its message text.
bool CannotBeAllOrNothing(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) return true;
  return status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
         ReasonOf(status) == traffik::v1::ALL_OR_NOTHING_SPANS_BACKENDS;
}

}  // namespace

void ClientImpl::OnBatchDone(BatchCall& call, const grpc::Status& status) {
  const size_t count = static_cast<size_t>(call.request.requests_size());
  const bool all_or_nothing = call.request.all_or_nothing();
  if (!status.ok() && all_or_nothing && call.fall_back_to_independent &&
      CannotBeAllOrNothing(status)) {
    auto retry = std::make_unique<BatchCall>();
    retry->request = std::move(call.request);
    retry->request.set_all_or_nothing(false);
    retry->keys = std::move(call.keys);
    retry->costs = std::move(call.costs);
    retry->deadline = call.deadline;
    retry->policy = call.policy;
    retry->done = std::move(call.done);
    SendBatch(std::move(retry));
    return;
  }
  const absl::Status failure = BatchFailure(status, call.response, count);
  if (!failure.ok()) {
    absl::StatusOr<ThrottleResult> failed = Fail(failure, call.policy);
    if (!failed.ok()) {
      call.done(failed.status());
    } else {
      BatchResult result;
      result.results.assign(count, *failed);
      result.applied = failed->allowed;
      call.done(std::move(result));
    }
    return;
  }
  failure_log_.OnSuccess();
  BatchResult result;
  result.results.reserve(count);
  bool any_refused = false;
  for (size_t i = 0; i < count; ++i) {
    result.results.push_back(FromProto(call.response.responses(static_cast<int>(i))));
    Remember(call.keys[i], call.costs[i], call.sent_at, result.results.back());
    any_refused = any_refused || !result.results.back().allowed;
  }
  // An ordinary batch always takes effect. An all-or-nothing one did unless
  // the server says otherwise; a server that predates all_or_nothing answers
  // applied=false with nothing refused (it decided independently).
  result.all_or_nothing = all_or_nothing && (call.response.applied() || any_refused);
  result.applied = !result.all_or_nothing || call.response.applied();
  call.done(std::move(result));
}

absl::StatusOr<bool> ClientImpl::Healthy(const std::string& service) {
  struct HealthCall {
    grpc::ClientContext context;
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
  };
  auto call = std::make_shared<HealthCall>();
  call->context.set_deadline(RpcDeadline());
  Prepare(call->context);
  const std::string request_bytes = EncodeHealthCheckRequest(service);
  grpc::Slice request_slice(request_bytes);
  call->request = grpc::ByteBuffer(&request_slice, 1);
  std::future<grpc::Status> future = call->done.get_future();
  health_stub_.UnaryCall(&call->context, kHealthCheckMethod, grpc::StubOptions(),
                         &call->request, &call->response,
                         [self = shared_from_this(), call](grpc::Status status) mutable {
                           CallbackScope scope;  // see CheckAsync
                           std::shared_ptr<ClientImpl> client = std::move(self);
                           std::shared_ptr<HealthCall> owned = std::move(call);
                           owned->done.set_value(std::move(status));
                         });
  if (future.wait_for(options_.deadline + kSyncSlack) != std::future_status::ready) {
    return absl::DeadlineExceededError(
        absl::StrCat("health check of ", options_.target, ": no answer in time"));
  }
  const grpc::Status status = future.get();
  if (!status.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(status.error_code()),
        absl::StrCat(
            "health check of ", options_.target, " (service \"", service, "\") failed: ",
            status.error_message().empty()
                ? absl::StrCat("gRPC code ", static_cast<int>(status.error_code()))
                : status.error_message()));
  }
  // An empty message (status UNKNOWN) may arrive as no buffer at all.
  grpc::Slice response_slice;
  if (call->response.Valid() && !call->response.DumpToSingleSlice(&response_slice).ok()) {
    return absl::DataLossError(
        absl::StrCat("health check of ", options_.target, ": unreadable response"));
  }
  const std::string_view bytes(reinterpret_cast<const char*>(response_slice.begin()),
                               response_slice.size());
  absl::StatusOr<uint64_t> serving = DecodeHealthCheckStatus(bytes);
  if (!serving.ok()) {
    return absl::DataLossError(
        absl::StrCat("health check of ", options_.target,
                     ": malformed response: ", serving.status().message()));
  }
  return *serving == kHealthServing;
}

ClientStats ClientImpl::stats() const {
  ClientStats stats;
  stats.rpcs = rpcs_.load(std::memory_order_relaxed);
  stats.short_circuited = short_circuited_.load(std::memory_order_relaxed);
  stats.failures = failures_.load(std::memory_order_relaxed);
  stats.coalesced = coalesced_.load(std::memory_order_relaxed);
  stats.short_circuit_keys = short_circuit_.size();
  return stats;
}

}  // namespace traffik::client_internal
