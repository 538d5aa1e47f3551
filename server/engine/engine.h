#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "auth/caller_table.h"
#include "backend/backend.h"
#include "bucket/token_bucket.h"
#include "config/config.h"
#include "envoy/rules.h"
#include "metrics/metrics.h"

namespace traffik {

// One hit as the transport hands it over: views into the caller's request,
// valid until Prepare returns.
struct HitRequest {
  absl::string_view identifier;
  absl::string_view throttle_uid;
  absl::string_view tenant;  // empty: the default tenant
  uint32_t cost = 0;         // 0 means 1
  bool has_spec = false;     // an inline ThrottleSpec was given
  uint64_t spec_limit = 0;   // tokens
  uint64_t spec_period_ms = 0;
  // Answer as the hit would be answered, but take nothing (see Engine::Peek).
  bool peek = false;
};

// An admin reset (Engine::ResetBuckets): views into the caller's request.
struct ResetRequest {
  absl::string_view tenant;        // empty: the default tenant
  absl::string_view throttle_uid;  // empty: every throttle of the tenant
  absl::string_view identifier;    // empty: every bucket of the throttle
};

// A configured throttle as a tenant sees it (Engine::ListThrottles).
struct ThrottleInfo {
  std::string uid;
  Rate rate;  // after the tenant's multiplier
};

// ScaledCapacity: bucket/token_bucket.h.

// An immutable resolution table built from one Config: tenant -> backend,
// prefix, quota; (tenant, uid) -> rate and metric counters. Swapped whole on
// reload; requests in flight keep the snapshot they started with.
class Snapshot {
 public:
  struct Throttle {
    Rate rate;  // after the tenant's multiplier
    DecisionCounters counters;
  };
  struct Tenant {
    std::string name;
    std::string prefix;
    Backend* backend = nullptr;  // kept alive by the snapshot (or outlives it)
    // The tenant's partition on `backend` (its share of a memory backend), or
    // nullptr; not owned, outlives every snapshot.
    BackendPartition* partition = nullptr;
    double quota_multiplier = 1.0;
    bool allow_inline_specs = true;
    BackendErrorPolicy on_backend_error = BackendErrorPolicy::kDeny;
    absl::flat_hash_map<std::string, Throttle> throttles;
    DecisionCounters inline_counters;
    prometheus::Counter* backend_errors = nullptr;
  };

  // A tenant's backend and its partition there (nullptr: none).
  struct TenantBackend {
    TenantBackend(Backend* backend, BackendPartition* partition = nullptr)  // NOLINT
        : backend(backend), partition(partition) {}
    // A backend the snapshot keeps alive (a reload may retire it while calls
    // on this snapshot are still in flight).
    TenantBackend(std::shared_ptr<Backend> owned,  // NOLINT
                  BackendPartition* partition = nullptr)
        : backend(owned.get()), partition(partition), owner(std::move(owned)) {}
    Backend* backend;
    BackendPartition* partition;
    std::shared_ptr<Backend> owner;  // may be null: then `backend` outlives it
  };
  // Maps a tenant's `backend` setting to a live backend (and partition).
  using BackendResolver =
      absl::FunctionRef<absl::StatusOr<TenantBackend>(const TenantConfig&)>;

  // Envoy RLS (service/envoy_service.h): a configured domain, resolved.
  struct EnvoyRule {
    std::string uid;  // EnvoyBucketUid(domain, rule path)
    EnvoyDecisionCounters counters;
  };
  struct EnvoyDomain {
    const envoy::Domain* domain = nullptr;  // owned by envoy_rules()
    const Tenant* tenant = nullptr;         // config.envoy.TenantFor(domain)
    // The bucket uid of a limit override no rule matched (empty rule path).
    std::string override_uid;
    // rule="": descriptors matching no rule, and overrides no rule matched.
    EnvoyDecisionCounters no_rule_counters;
    absl::flat_hash_map<const envoy::Rule*, EnvoyRule> rules;  // those with a rate_limit
  };

  static absl::StatusOr<std::shared_ptr<const Snapshot>> Build(const Config& config,
                                                               BackendResolver backends,
                                                               Metrics& metrics);

  // The tenant called `name`, the default tenant for "", or nullptr.
  const Tenant* FindTenant(absl::string_view name) const;
  // Every tenant, by name.
  const absl::flat_hash_map<std::string, Tenant>& tenants() const { return tenants_; }

  // The configured Envoy domain called `name`, or nullptr.
  const EnvoyDomain* FindEnvoyDomain(absl::string_view name) const {
    auto it = envoy_domains_.find(name);
    return it == envoy_domains_.end() ? nullptr : &it->second;
  }
  // Counters for requests naming an unknown domain (domain="", rule="").
  const EnvoyDecisionCounters& envoy_unknown_domain() const {
    return envoy_unknown_domain_;
  }
  // `envoy.response_headers`.
  bool envoy_response_headers() const { return envoy_response_headers_; }
  const envoy::RuleSet* envoy_rules() const { return envoy_rules_.get(); }

  uint64_t max_identifier_bytes() const { return max_identifier_bytes_; }
  uint64_t max_batch_size() const { return max_batch_size_; }
  // The config's callers (auth/): swapped with the tenants on reload.
  const CallerTable& callers() const { return *callers_; }

 private:
  Snapshot() = default;
  std::unique_ptr<const CallerTable> callers_;
  // Resolves config.envoy (domains -> tenants, rules -> uids and counters).
  absl::Status BuildEnvoy(const Config& config, Metrics& metrics);
  absl::flat_hash_map<std::string, Tenant> tenants_;
  std::vector<std::shared_ptr<Backend>> backends_;  // keeps the tenants' backends alive
  const Tenant* default_tenant_ = nullptr;
  uint64_t max_identifier_bytes_ = 0;
  uint64_t max_batch_size_ = 0;
  // The rules travel with the snapshot, so a reload swaps both at once.
  std::shared_ptr<const envoy::RuleSet> envoy_rules_;
  absl::flat_hash_map<std::string, EnvoyDomain> envoy_domains_;
  EnvoyDecisionCounters envoy_unknown_domain_;
  bool envoy_response_headers_ = false;
};

// One Envoy descriptor's bucket as the transport resolved it from a rule
// match (service/envoy_service.h); decided by Engine::DecideRules.
struct RuleHit {
  size_t descriptor_index = 0;     // names the descriptor in error messages
  absl::string_view uid;           // EnvoyBucketUid: from the config, key-safe
  absl::string_view identifier;    // envoy::Match::bucket_id (caller bytes)
  uint64_t requests_per_unit = 0;  // >= 1; before the tenant's quota multiplier
  uint64_t unit_ms = 0;            // >= 1
  // A request's limit override: the rate is part of the bucket key
  // (BuildInlineBucketKey), so an override never refills another rate's bucket.
  bool rate_in_key = false;
  // Tokens to take. 0: check only (takes nothing, allowed, the bucket as it
  // stands). Above the capacity: refused (and so is the group, see
  // DecideRules), never an error.
  uint64_t cost = 1;
  // Decided on its own, outside the all-or-nothing group (shadow_mode).
  bool independent = false;
};

// What Engine::DecideRules answers for one RuleHit.
struct RuleDecision {
  Decision decision;       // allowed: tokens were (or, if not applied, would be) taken
  bool fail_open = false;  // allowed by the tenant's on_backend_error: allow
};
using RuleCallback =
    absl::AnyInvocable<void(absl::StatusOr<std::vector<RuleDecision>>) &&>;

// A validated hit, ready for its backend. The caller owns it until the
// backend's callback has run (the key and snapshot must stay alive).
struct PreparedHit {
  std::shared_ptr<const Snapshot> snapshot;
  const Snapshot::Tenant* tenant = nullptr;
  Backend* backend = nullptr;
  BackendPartition* partition = nullptr;  // the tenant's, on `backend`
  std::string key;
  Rate rate;
  uint64_t cost = 0;
  const DecisionCounters* counters = nullptr;
};

// The decision logic between the transport and the backends: validation,
// resolution against the current Snapshot, key building, metrics.
//
// Thread-safe: the snapshot pointer is swapped atomically.
class Engine {
 public:
  explicit Engine(std::shared_ptr<const Snapshot> snapshot)
      : snapshot_(std::move(snapshot)) {
    auth_maybe_required_.store(snapshot_.load()->callers().required());
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  std::shared_ptr<const Snapshot> snapshot() const { return snapshot_.load(); }
  void SetSnapshot(std::shared_ptr<const Snapshot> snapshot) {
    // Raised before a snapshot requiring auth is published and lowered only
    // after one that does not: whenever the current snapshot requires auth,
    // auth_maybe_required() is true.
    const bool required = snapshot->callers().required();
    if (required) auth_maybe_required_.store(true);
    snapshot_.store(std::move(snapshot));
    if (!required) auth_maybe_required_.store(false);
  }
  // False when the current snapshot has `auth: off`: lets a transport skip
  // loading the snapshot for the auth check (auth/grpc_auth.h) on that path.
  // True: load the snapshot and ask its callers().required().
  bool auth_maybe_required() const { return auth_maybe_required_.load(); }

  // Validates and resolves one hit. Errors: kInvalidArgument (identifier
  // empty or over max_identifier_bytes; uid not valid per ValidateThrottleUid,
  // which includes UTF-8; tenant over 256 bytes, not UTF-8 or with control
  // characters (ValidateTenantName); bad spec), kNotFound (unknown tenant or
  // throttle), kPermissionDenied (inline spec on a tenant that forbids them),
  // kOutOfRange (cost above capacity). Messages show caller values only
  // through QuoteForMessage. An inline spec's raw values are part of its
  // bucket key (engine/key.h). `*out` may be reused across calls (its key
  // keeps its capacity).
  absl::Status Prepare(const HitRequest& request, PreparedHit* out) const;

  // Turns what the backend answered into the caller's answer and counts it:
  // a decision is counted by result; a backend error is counted. An outage
  // (kUnavailable, kDeadlineExceeded) follows the tenant's on_backend_error
  // policy: an allowed hit (allow) or a kUnavailable error naming the backend
  // (deny). Any other backend error (kInternal, kResourceExhausted,
  // kFailedPrecondition, ...) is returned as is under either policy: fail
  // open is for outages only.
  static absl::StatusOr<Decision> Finish(const PreparedHit& hit,
                                         absl::StatusOr<Decision> result);

  // Prepare + backend + Finish for one hit. Convenience for callers that do
  // not keep their own PreparedHit (it is heap-allocated while in flight).
  // With request.peek: Peek.
  void ShouldThrottle(const HitRequest& request, DecisionCallback done) const;

  // The answer ShouldThrottle would give `request` (same validation and
  // errors, same on_backend_error policy on an outage), taking nothing and
  // creating no bucket (Backend::Peek). Not counted as a decision.
  void Peek(const HitRequest& request, DecisionCallback done) const;
  // Turns what Backend::Peek answered into Peek's answer (the hit's decision;
  // an outage follows the tenant's policy as in Finish). Counts nothing but
  // backend errors.
  static absl::StatusOr<Decision> FinishPeek(const PreparedHit& hit,
                                             absl::StatusOr<PeekResult> result);

  // The admin view of one bucket: Prepare (same validation and errors as
  // ShouldThrottle; request.peek is ignored) + Backend::Peek. Backend errors
  // are returned as they are: no on_backend_error policy applies.
  void GetBucket(const HitRequest& request, PeekCallback done) const;

  // Forgets buckets (Backend::Reset) of a tenant, one of its throttle uids
  // (configured or not, inline-spec buckets included) or one uid and
  // identifier (its configured and inline-spec buckets), answering how many
  // were removed. Errors: kInvalidArgument (identifier without throttle_uid;
  // identifier over max_identifier_bytes; uid or tenant invalid as for
  // Prepare), kNotFound (unknown tenant), and the backend's errors as they
  // are.
  void ResetBuckets(const ResetRequest& request, CountCallback done) const;

  // After a reload from `before` to `after`: forgets the buckets that no
  // configuration reaches any more, so removed tenants and throttles take
  // their state with them. For a tenant removed, moved to another backend or
  // given another prefix, its old buckets on a shared backend (Redis; a memory
  // tenant's partition is dropped with it); for a throttle removed from a
  // kept tenant, that uid's buckets (configured and inline) on any backend.
  // Skips an old prefix that a tenant of `after` uses on the same backend.
  // Asynchronous (Backend::Reset); `done` gets the total removed, or the
  // first error. The snapshots are kept alive until then.
  static void DropUnreachableBuckets(std::shared_ptr<const Snapshot> before,
                                     std::shared_ptr<const Snapshot> after,
                                     CountCallback done);

  // The configured throttles of a tenant (empty: the default tenant) after
  // its multiplier, sorted by uid. kInvalidArgument for a bad tenant name,
  // kNotFound for an unknown tenant.
  absl::StatusOr<std::vector<ThrottleInfo>> ListThrottles(absl::string_view tenant) const;

  // A batch: every item is prepared first; any invalid item rejects the whole
  // batch with kInvalidArgument naming its index ("requests[3]: ...") and no
  // tokens taken. Otherwise the hits run in order, one backend batch per
  // backend, and answers come back in request order. An item with `peek`
  // takes nothing (it sees what earlier items took) and is not counted.
  void ShouldThrottleBatch(absl::Span<const HitRequest> requests,
                           BatchCallback done) const;

  // Envoy RLS: decides `hits` on `tenant` (of `snapshot`). The hits without
  // `independent` form one all-or-nothing group (Backend::DecideAllOrNothing;
  // a cost-0 hit takes nothing and is always allowed): if any is refused,
  // none takes tokens. A hit whose cost exceeds its capacity refuses the
  // group without a backend write (a dry run describes the buckets). The
  // `independent` hits are decided each on its own (Backend::DecideBatch).
  // On a backend that cannot decide the group's keys together
  // (kFailedPrecondition: Redis Cluster, keys in different slots), the group
  // is decided hit by hit (DecideBatch), not atomically. An outage follows
  // the tenant's on_backend_error policy per hit (fail open: allowed, marked
  // fail_open; deny: the call fails with kUnavailable); other backend errors
  // are returned as they are. Errors before any backend call:
  // kInvalidArgument "descriptors[i]: ..." (identifier over
  // max_identifier_bytes, a rate whose capacity * unit_ms exceeds 2^53).
  // With `refuse_group` (the transport refuses another member of the group
  // itself, e.g. requests_per_unit 0), the group is only described (a dry
  // run): nothing is taken. Counts no decision metrics (the transport does);
  // `snapshot` is kept alive until `done` runs.
  static void DecideRules(std::shared_ptr<const Snapshot> snapshot,
                          const Snapshot::Tenant& tenant, absl::Span<const RuleHit> hits,
                          bool refuse_group, RuleCallback done);

  // The same with the wire's all_or_nothing flag (false: the batch above,
  // answered with applied = true). True: after the same preparation, every
  // item must be on one backend (else kInvalidArgument "all_or_nothing batch
  // spans several backends ..."), which decides them with
  // Backend::DecideAllOrNothing: tokens are taken only if every item is
  // allowed (applied); otherwise nothing is taken. A backend outage follows
  // each item's tenant policy as in the batch above (all fail-open: answered
  // allowed, applied); any other backend error (e.g. kFailedPrecondition:
  // keys it cannot decide together) is returned as is. Metrics count an item
  // as allowed only when it was allowed and applied. With `peek` on every
  // item: a dry run (Backend::DecideAllOrNothing), not counted; `peek` on
  // some items only is kInvalidArgument.
  void ShouldThrottleBatch(absl::Span<const HitRequest> requests, bool all_or_nothing,
                           AllOrNothingCallback done) const;

 private:
  std::atomic<std::shared_ptr<const Snapshot>> snapshot_;
  std::atomic<bool> auth_maybe_required_{false};
};

}  // namespace traffik
