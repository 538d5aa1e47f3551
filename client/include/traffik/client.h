#pragma once

// The Traffik client: asks a traffikd server whether a hit may go ahead.
//
// Thread-safe: one Client is meant to be shared by a whole application (it
// owns its gRPC channel(s) and its local short-circuit cache).

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace traffik {

// The structs below are meant for designated initializers naming only the
// members that matter (`{.all_or_nothing = true}`): every member has a
// default member initializer, since GCC's -Wmissing-field-initializers
// (-Wextra) warns about an omitted member that has none. Keep it so.

// An inline throttle definition (used when the uid is not configured on the
// server): `limit` tokens refilled continuously over `period`.
struct ThrottleSpec {
  uint64_t limit = 0;
  std::chrono::milliseconds period{0};
};

// traffikd's default `max_identifier_bytes`.
inline constexpr size_t kDefaultMaxIdentifierBytes = 4096;
// The size of a digest identifier: "sha256:" and 64 lower-case hex digits.
inline constexpr size_t kDigestIdentifierBytes = 71;

// The identifier the Client sends for `identifier`: `identifier` itself when
// it is at most `max_identifier_bytes` long, otherwise its digest form
// "sha256:" + the lower-case hex SHA-256 of all its bytes (71 bytes), so an
// over-long identifier (a huge header, a long path) is throttled like any
// other instead of being refused by traffikd. Identifiers are bytes: any byte
// values are sent as they are (traffikd keys buckets by bytes). Two
// identifiers share a bucket only if they are equal, or if one is the digest
// form of the other (an identifier that already reads "sha256:<hex>" is
// sent unchanged). Use this to name the bucket of a long identifier to
// traffikd's admin API.
std::string WireIdentifier(std::string_view identifier,
                           size_t max_identifier_bytes = kDefaultMaxIdentifierBytes);

// True for the failures that mean traffikd could not decide: kUnavailable
// (unreachable, shutting down), kDeadlineExceeded (too slow) and
// kResourceExhausted (out of room for new buckets, or a message limit:
// not the request's fault). These, and only these, are subject to the
// FailurePolicy; any other error (kInvalidArgument, kNotFound, kOutOfRange,
// kFailedPrecondition, kPermissionDenied, kUnauthenticated, kInternal, ...)
// says the request itself was wrong or traffikd is broken, and is returned as
// an error whatever the policy.
bool IsOutage(const absl::Status& status);

// One hit to decide.
struct ThrottleRequest {
  // Who is limited (e.g. "203.0.113.9:/api/search"); bytes, not necessarily
  // UTF-8. Longer than ClientOptions::max_identifier_bytes: sent in its digest
  // form (WireIdentifier). Empty: traffikd refuses it (kInvalidArgument).
  std::string identifier{};
  std::string throttle_uid{};  // which throttle
  std::string tenant{};        // empty: the server's default tenant
  uint32_t cost = 1;           // tokens this hit takes
  std::optional<ThrottleSpec> spec{};
};

// What the client does when traffikd cannot decide: an outage (IsOutage:
// unreachable, too slow, out of room). Errors that are not outages (the
// request was invalid, the throttle is unknown, ...) are returned as errors
// under every policy, so an `allow` policy never lets a bad request through.
enum class FailurePolicy {
  kAllow,  // fail open: the hit is allowed
  kDeny,   // fail closed: the hit is refused (wait = ClientOptions::deny_wait)
  kRaise,  // the error is returned to the caller
};

// The answer for one hit.
struct ThrottleResult {
  bool allowed = false;
  std::chrono::milliseconds wait{0};   // 0 when allowed
  uint64_t limit = 0;                  // bucket capacity (0 if unknown)
  uint64_t remaining = 0;              // whole tokens left (0 if unknown)
  std::chrono::milliseconds reset{0};  // until the bucket is full again
  // How the answer was reached: from traffikd, refused locally because an
  // earlier answer said "wait" for this key and that wait has not passed, or
  // from the failure policy.
  enum class Source { kServer, kShortCircuit, kFailurePolicy };
  Source source = Source::kServer;
};

// How a batch is decided (CheckBatch / CheckBatchAsync with BatchOptions).
struct BatchOptions {
  // nullopt: ClientOptions::failure_policy.
  std::optional<FailurePolicy> policy{};
  // Ask traffikd for an all-or-nothing batch (several throttles guarding one
  // action): the items are evaluated in order as if made one by one, and
  // their tokens are taken only if EVERY item is allowed; if one is refused,
  // nothing is taken from any of them (BatchResult::applied is false).
  // traffikd can do this only when all items are on one backend (kInvalid-
  // Argument "all_or_nothing batch spans several backends" otherwise) and, on
  // a Redis Cluster backend, share one identifier (kFailedPrecondition
  // otherwise): failures like any other, unless `fall_back_to_independent`.
  bool all_or_nothing = false;
  // With all_or_nothing: when traffikd answers one of the two errors above,
  // send the batch again at once as an ordinary batch (items decided
  // independently; BatchResult::all_or_nothing false) instead of failing. The
  // retry shares the first RPC's deadline.
  bool fall_back_to_independent = false;
};

// The answer for a batch (CheckBatch with BatchOptions).
struct BatchResult {
  // One per request, in request order.
  std::vector<ThrottleResult> results{};
  // True when the answers took effect: every result with allowed=true may go
  // ahead (traffikd took its tokens, or the failure policy kAllow allowed
  // it). False when the batch was refused as a whole and nothing was taken:
  // an all-or-nothing batch with a refused item (results with allowed=true
  // there would have passed on their own, and must not go ahead either), or
  // a batch refused locally by the short-circuit. At least one result is
  // refused (wait > 0) whenever applied is false.
  bool applied = true;
  // True when traffikd decided the batch all-or-nothing (false for an
  // ordinary batch, after a fall-back, and for answers reached locally).
  bool all_or_nothing = false;

  // A BatchResult reads like its results: size(), [i], range-for.
  size_t size() const { return results.size(); }
  bool empty() const { return results.empty(); }
  const ThrottleResult& operator[](size_t i) const { return results[i]; }
  ThrottleResult& operator[](size_t i) { return results[i]; }
  std::vector<ThrottleResult>::const_iterator begin() const { return results.begin(); }
  std::vector<ThrottleResult>::const_iterator end() const { return results.end(); }
  // For code written against the deprecated CheckBatch(requests, policy),
  // which answered a std::vector<ThrottleResult>:
  // `absl::StatusOr<std::vector<ThrottleResult>> r = client->CheckBatch(requests);`
  // keeps compiling (BatchResult::applied is dropped: read it instead).
  operator std::vector<ThrottleResult>() const& { return results; }
  operator std::vector<ThrottleResult>() && { return std::move(results); }
};

namespace client_internal {
// The policy argument of the deprecated CheckBatch(requests, policy) forms.
template <typename P>
inline constexpr bool kIsPolicyArg =
    std::is_same_v<std::decay_t<P>, FailurePolicy> ||
    std::is_same_v<std::decay_t<P>, std::optional<FailurePolicy>> ||
    std::is_same_v<std::decay_t<P>, std::nullopt_t>;
}  // namespace client_internal

// TLS to traffikd (ClientOptions::tls). Files are PEM, read once by
// Client::Create.
struct ClientTlsOptions {
  // The CA bundle that signs traffikd's certificate; empty: the system's
  // default roots (gRPC's, or GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
  std::string ca_file{};
  // A client certificate chain and its key, for a traffikd that asks for one
  // (mutual TLS); both or neither.
  std::string cert_file{};
  std::string key_file{};
  // The name traffikd's certificate is checked against (and sent as SNI);
  // empty: the host of `target`.
  std::string server_name{};
};

// The longest API key accepted (ClientOptions::api_key).
inline constexpr size_t kMaxApiKeyBytes = 4096;

// traffikd's default `max_batch_size`: the most items CoalesceOptions::
// max_batch may ask for.
inline constexpr size_t kMaxCoalesceBatch = 1000;

// Coalescing (ClientOptions::coalesce): concurrent Check / CheckAsync calls
// travel together as one ShouldThrottleBatch RPC, so traffikd sees fewer,
// larger calls. Each check keeps its own answer, error, failure policy and
// deadline, exactly as if sent alone; the price is up to `max_delay` of added
// latency for a check that waits for company.
//
// When a check is sent: at once when no coalesced RPC is in flight (a lone
// check under light load waits for nothing, and goes as a plain
// ShouldThrottle); otherwise it queues, and the queue is sent when it holds
// `max_batch` checks, when the coalesced RPCs in flight have all answered, or
// `max_delay` after its first check arrived, whichever comes first. A queue
// of checks for several tenants is sent as one RPC per tenant (items in
// arrival order); one check alone is sent as ShouldThrottle.
struct CoalesceOptions {
  // The longest a check waits in the queue for company; > 0 and at most
  // ClientOptions::deadline (the deadline counts the wait too).
  std::chrono::microseconds max_delay{500};
  // The most checks sent in one ShouldThrottleBatch; 1 to kMaxCoalesceBatch,
  // and at most traffikd's `max_batch_size` (default 1000; a larger batch is
  // refused by traffikd and sent again in smaller parts).
  size_t max_batch = 64;
};

struct ClientOptions {
  std::string target = "127.0.0.1:50051";                // traffikd's gRPC address
  std::chrono::milliseconds deadline{200};               // per RPC
  FailurePolicy failure_policy = FailurePolicy::kRaise;  // default for calls without one
  std::chrono::milliseconds deny_wait{1000};             // wait reported by kDeny
  // Identifiers longer than this are sent in their digest form (see
  // WireIdentifier). Set it to traffikd's `max_identifier_bytes` if that is
  // configured below the default; at least kDigestIdentifierBytes.
  size_t max_identifier_bytes = kDefaultMaxIdentifierBytes;
  // Local short-circuit: once traffikd says "wait N ms" for a key (tenant,
  // uid, identifier), further checks of that key are refused locally until
  // the N ms have passed, without an RPC. Only hits costing at least as much
  // as the refused one are refused locally (a cheaper one may fit sooner).
  // At most this many keys are remembered (when full: expired entries are
  // dropped first, then the soonest-expiring); 0 turns it off.
  size_t short_circuit_max_keys = 100'000;
  // Failure logging: the first failure of a burst (failures with no success in
  // between) writes one line, further failures of the burst write nothing;
  // and at most one line per `failure_log_interval` in any case.
  std::chrono::milliseconds failure_log_interval{10'000};
  // Where failure lines go (one call per line, without a newline); empty:
  // stderr. Called from client threads; must be thread-safe and quick.
  std::function<void(const std::string&)> log{};
  // nullopt: plaintext (the default; fine on loopback). Set: TLS, the
  // server's certificate verified against `tls->ca_file`.
  std::optional<ClientTlsOptions> tls{};
  // Sent on every call as gRPC metadata `authorization: Bearer <api_key>`
  // (traffikd's `callers:` with `auth: required`); empty: none. Printable
  // ASCII without spaces, at most kMaxApiKeyBytes. Never logged; over
  // plaintext anyone on the path can read it: use TLS off loopback.
  std::string api_key{};
  // nullopt (the default): every Check is its own ShouldThrottle RPC. Set:
  // concurrent Check / CheckAsync calls are coalesced into ShouldThrottleBatch
  // RPCs (see CoalesceOptions). CheckBatch is never coalesced.
  std::optional<CoalesceOptions> coalesce{};
};

// Counters for observability and tests.
struct ClientStats {
  uint64_t rpcs = 0;             // ShouldThrottle + ShouldThrottleBatch RPCs sent
  uint64_t short_circuited = 0;  // hits refused locally (no RPC; every item of a batch)
  uint64_t failures = 0;         // RPCs that failed (unreachable, error status)
  uint64_t short_circuit_keys = 0;  // keys remembered now (<= short_circuit_max_keys)
  // Checks answered by a ShouldThrottleBatch of coalesced checks
  // (ClientOptions::coalesce); a check sent alone is not counted.
  uint64_t coalesced = 0;
};

class Client {
 public:
  virtual ~Client() = default;

  // Connects lazily; never blocks. Errors only for unusable options
  // (kInvalidArgument: empty target, deadline <= 0, negative deny_wait or
  // failure_log_interval, max_identifier_bytes < kDigestIdentifierBytes, a
  // tls cert_file without key_file or the reverse, an api_key that is not
  // printable ASCII or too long, a coalesce.max_delay not in (0, deadline], a
  // coalesce.max_batch not in [1, kMaxCoalesceBatch]; kNotFound / kInvalidArgument: a tls
  // file that cannot be read or holds no PEM data, naming the option). One gRPC channel
  // per Client: share the Client.
  static absl::StatusOr<std::shared_ptr<Client>> Create(ClientOptions options);

  // Decides one hit. An outage (IsOutage: kUnavailable, kDeadlineExceeded,
  // kResourceExhausted) is returned as the error status under
  // FailurePolicy::kRaise and becomes an allowed/refused result (source
  // kFailurePolicy) under kAllow/kDeny. Any other error status from traffikd
  // (kInvalidArgument, kNotFound, kOutOfRange, ...) is returned as the error
  // under every policy. Every failure is counted (stats().failures) and
  // logged once per burst. Never takes longer than the deadline (plus
  // scheduling).
  //
  // A short-circuited hit (see ClientOptions::short_circuit_max_keys) is
  // answered at once without an RPC: allowed=false, wait = the time left,
  // limit and remaining as traffikd gave them with its refusal, reset counted
  // down from that answer's, source kShortCircuit.
  virtual absl::StatusOr<ThrottleResult> Check(
      const ThrottleRequest& request, std::optional<FailurePolicy> policy = {}) = 0;
  // The same, without blocking: `done` runs on a client thread (or inline for
  // a short-circuited hit). Do not call the blocking methods from `done`.
  // The Client stays alive until every `done` has run.
  virtual void CheckAsync(const ThrottleRequest& request,
                          std::function<void(absl::StatusOr<ThrottleResult>)> done,
                          std::optional<FailurePolicy> policy = {}) = 0;
  std::future<absl::StatusOr<ThrottleResult>> CheckFuture(
      const ThrottleRequest& request, std::optional<FailurePolicy> policy = {});

  // Decides several hits in one RPC, answered in request order as if made one
  // by one: `client->CheckBatch(requests)`, or with options, e.g.
  // `client->CheckBatch(requests, {.all_or_nothing = true})`. BatchResult::
  // applied says whether the decisions took effect; the BatchResult reads
  // like its results (size(), [i], range-for).
  //
  // The server rejects a batch with an invalid item whole (an error for the
  // whole batch, whatever the policy; an outage: the policy applies to the
  // whole batch, and an outage turned into results by kAllow/kDeny has
  // applied = (policy is kAllow)).
  //
  // Local short-circuit: if ANY item's key is short-circuited, no RPC is made
  // and the whole batch is refused locally (applied = false), so no tokens
  // are taken from the other items (all-or-nothing, as several throttles on
  // one request need). Every result then has source kShortCircuit and
  // allowed=false; the short-circuited items carry their remaining wait, the
  // others wait 0 (they were not asked). An empty batch is answered locally
  // with no results.
  virtual absl::StatusOr<BatchResult> CheckBatch(
      const std::vector<ThrottleRequest>& requests, const BatchOptions& options = {}) = 0;
  // The same without blocking: `done` runs on a client thread (or inline for
  // an answer reached locally). A `done` taking
  // absl::StatusOr<std::vector<ThrottleResult>> (the older form) is accepted.
  virtual void CheckBatchAsync(const std::vector<ThrottleRequest>& requests,
                               std::function<void(absl::StatusOr<BatchResult>)> done,
                               const BatchOptions& options = {}) = 0;

  // Deprecated forms (before BatchOptions): the failure policy alone, the
  // results as a vector. Use CheckBatch(requests, {.policy = policy}).
  template <typename Policy,
            typename = std::enable_if_t<client_internal::kIsPolicyArg<Policy>>>
  [[deprecated(
      "use CheckBatch(requests, {.policy = ...}), which answers a BatchResult")]] absl::
      StatusOr<std::vector<ThrottleResult>>
      CheckBatch(const std::vector<ThrottleRequest>& requests, Policy policy) {
    BatchOptions options;
    options.policy = std::optional<FailurePolicy>(policy);
    absl::StatusOr<BatchResult> result = CheckBatch(requests, options);
    if (!result.ok()) return result.status();
    return std::move(result->results);
  }
  template <typename Done, typename Policy,
            typename = std::enable_if_t<client_internal::kIsPolicyArg<Policy>>>
  [[deprecated("use CheckBatchAsync(requests, done, {.policy = ...})")]] void
  CheckBatchAsync(const std::vector<ThrottleRequest>& requests, Done done,
                  Policy policy) {
    BatchOptions options;
    options.policy = std::optional<FailurePolicy>(policy);
    CheckBatchAsync(requests,
                    std::function<void(absl::StatusOr<BatchResult>)>(std::move(done)),
                    options);
  }

  // Asks traffikd's gRPC health service (service "" unless given): true when
  // SERVING, false for any other status. Errors (kUnavailable,
  // kDeadlineExceeded, kNotFound for an unknown service, ...) are returned
  // as they are; the failure policy does not apply. Bounded by the deadline.
  virtual absl::StatusOr<bool> Healthy(const std::string& service = "") = 0;

  virtual ClientStats stats() const = 0;
};

}  // namespace traffik
