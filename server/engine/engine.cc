#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/error_reason.h"
#include "base/mutex.h"
#include "base/quote.h"
#include "engine/key.h"

namespace traffik {

absl::StatusOr<std::shared_ptr<const Snapshot>> Snapshot::Build(const Config& config,
                                                                BackendResolver backends,
                                                                Metrics& metrics) {
  std::shared_ptr<Snapshot> snap(new Snapshot());
  snap->max_identifier_bytes_ = config.max_identifier_bytes;
  snap->max_batch_size_ = config.max_batch_size;
  snap->callers_ = std::make_unique<const CallerTable>(config, &metrics);
  for (const TenantConfig& tc : config.tenants) {
    absl::StatusOr<TenantBackend> backend = backends(tc);
    if (!backend.ok()) return backend.status();
    if (backend->owner != nullptr) snap->backends_.push_back(backend->owner);
    Tenant t;
    t.name = tc.name;
    t.prefix = tc.prefix.empty() ? tc.name : tc.prefix;
    t.backend = backend->backend;
    t.partition = backend->partition;
    t.quota_multiplier = tc.quota_multiplier;
    t.allow_inline_specs = tc.allow_inline_specs;
    t.on_backend_error = tc.on_backend_error;
    t.backend_errors = metrics.ForBackendErrors(
        tc.name, std::string(t.backend->Name()),
        tc.on_backend_error == BackendErrorPolicy::kAllow ? "allow" : "deny");
    t.inline_counters = metrics.ForThrottle(tc.name, "inline");
    for (const ThrottleConfig& th : config.throttles) {
      const Rate rate{ScaledCapacity(th.limit, tc.quota_multiplier), th.period_ms};
      if (!IsValidRate(rate)) {
        return absl::InvalidArgumentError(
            absl::StrCat("throttle '", th.uid, "' for tenant '", tc.name,
                         "': capacity * period_ms exceeds ", kMaxScaledCapacityText));
      }
      t.throttles.emplace(th.uid, Throttle{rate, metrics.ForThrottle(tc.name, th.uid)});
    }
    if (!snap->tenants_.emplace(tc.name, std::move(t)).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tenant '", tc.name, "'"));
    }
  }
  auto it = snap->tenants_.find(config.default_tenant);
  if (it == snap->tenants_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_tenant '", config.default_tenant, "' is not a tenant"));
  }
  snap->default_tenant_ = &it->second;
  if (absl::Status s = snap->BuildEnvoy(config, metrics); !s.ok()) return s;
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

namespace {

// Adds the rules of `rules` (and below) that hold a rate_limit to `out`,
// checking that each usable rate fits the bucket arithmetic for `tenant`.
absl::Status AddEnvoyRules(const envoy::Domain& domain,
                           const std::vector<envoy::Rule>& rules,
                           const Snapshot::Tenant& tenant, Metrics& metrics,
                           Snapshot::EnvoyDomain* out) {
  for (const envoy::Rule& rule : rules) {
    if (rule.rate_limit.has_value()) {
      const envoy::RateLimit& limit = *rule.rate_limit;
      if (!limit.unlimited && limit.requests_per_unit > 0) {
        const Rate rate{ScaledCapacity(limit.requests_per_unit, tenant.quota_multiplier),
                        static_cast<uint64_t>(envoy::UnitMs(limit.unit))};
        if (!IsValidRate(rate)) {
          return absl::InvalidArgumentError(absl::StrCat(
              domain.source, ": domain '", domain.name, "' rule '", rule.path,
              "': requests_per_unit (", rate.capacity, " for tenant '", tenant.name,
              "') * the unit in ms (", rate.period_ms, ") exceeds ",
              kMaxScaledCapacityText, "; use a shorter unit"));
        }
      }
      out->rules.emplace(
          &rule, Snapshot::EnvoyRule{EnvoyBucketUid(domain.name, rule.path),
                                     metrics.ForEnvoyRule(domain.name, rule.path)});
    }
    if (absl::Status s = AddEnvoyRules(domain, rule.children, tenant, metrics, out);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Snapshot::BuildEnvoy(const Config& config, Metrics& metrics) {
  envoy_rules_ = config.envoy.rules;
  envoy_response_headers_ = config.envoy.response_headers;
  envoy_unknown_domain_ = metrics.ForEnvoyRule("", "");
  if (envoy_rules_ == nullptr) return absl::OkStatus();
  for (const envoy::Domain& domain : envoy_rules_->domains()) {
    const std::string& tenant_name =
        config.envoy.TenantFor(domain.name, config.default_tenant);
    auto it = tenants_.find(tenant_name);
    if (it == tenants_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("envoy domain '", domain.name,
                                                     "': tenant '", tenant_name,
                                                     "' is not a tenant"));
    }
    EnvoyDomain d;
    d.domain = &domain;
    d.tenant = &it->second;
    d.override_uid = EnvoyBucketUid(domain.name, "");
    d.no_rule_counters = metrics.ForEnvoyRule(domain.name, "");
    if (absl::Status s =
            AddEnvoyRules(domain, domain.descriptors, it->second, metrics, &d);
        !s.ok()) {
      return s;
    }
    envoy_domains_.emplace(domain.name, std::move(d));
  }
  return absl::OkStatus();
}

const Snapshot::Tenant* Snapshot::FindTenant(absl::string_view name) const {
  if (name.empty()) return default_tenant_;
  auto it = tenants_.find(name);
  return it == tenants_.end() ? nullptr : &it->second;
}

absl::Status Engine::Prepare(const HitRequest& request, PreparedHit* out) const {
  out->snapshot = snapshot_.load(std::memory_order_acquire);
  const Snapshot& snap = *out->snapshot;

  // Every caller value below is echoed only through QuoteForMessage (quoted,
  // escaped, truncated), never raw.
  if (request.identifier.empty()) {
    return absl::InvalidArgumentError("identifier is empty");
  }
  if (request.identifier.size() > snap.max_identifier_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("identifier is ", request.identifier.size(), " bytes; the limit is ",
                     snap.max_identifier_bytes(), " bytes"));
  }
  if (absl::Status s = ValidateThrottleUid(
          std::string_view(request.throttle_uid.data(), request.throttle_uid.size()));
      !s.ok()) {
    return s;
  }
  if (!request.tenant.empty()) {
    if (absl::Status s = ValidateTenantName(
            std::string_view(request.tenant.data(), request.tenant.size()));
        !s.ok()) {
      return s;
    }
  }

  const Snapshot::Tenant* tenant = snap.FindTenant(request.tenant);
  if (tenant == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("unknown tenant ", QuoteForMessage(request.tenant)));
  }

  // Quoted only for an error message: a decision builds no string but its key.
  const auto uid = [&request] { return QuoteForMessage(request.throttle_uid); };
  auto it = tenant->throttles.find(request.throttle_uid);
  bool is_inline = false;
  if (it != tenant->throttles.end()) {
    // A configured throttle wins over an inline spec with the same uid.
    out->rate = it->second.rate;
    out->counters = &it->second.counters;
  } else if (request.has_spec) {
    if (!tenant->allow_inline_specs) {
      return absl::PermissionDeniedError(
          absl::StrCat("throttle ", uid(), " is not configured and tenant ",
                       QuoteForMessage(tenant->name), " does not allow inline specs"));
    }
    if (request.spec_limit == 0) {
      return absl::InvalidArgumentError(absl::StrCat("spec.limit is 0 for throttle ",
                                                     uid(), "; it must be at least 1"));
    }
    if (request.spec_period_ms == 0) {
      return absl::InvalidArgumentError(absl::StrCat("spec.period_ms is 0 for throttle ",
                                                     uid(), "; it must be at least 1"));
    }
    out->rate = Rate{ScaledCapacity(request.spec_limit, tenant->quota_multiplier),
                     request.spec_period_ms};
    if (!IsValidRate(out->rate)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "spec for throttle ", uid(), " is too large: limit (", out->rate.capacity,
          " after the quota multiplier) * period_ms (", request.spec_period_ms,
          ") must be at most ", kMaxScaledCapacityText));
    }
    out->counters = &tenant->inline_counters;
    is_inline = true;
  } else {
    return absl::NotFoundError(
        absl::StrCat("unknown throttle ", uid(), ": not configured and no spec given"));
  }

  out->cost = request.cost == 0 ? 1 : request.cost;
  if (out->cost > out->rate.capacity) {
    return absl::OutOfRangeError(
        absl::StrCat("cost ", out->cost, " exceeds the capacity ", out->rate.capacity,
                     " of throttle ", uid(), "; the hit could never be allowed"));
  }
  out->backend = tenant->backend;
  out->partition = tenant->partition;
  out->tenant = tenant;
  if (is_inline) {
    // The raw spec (before the multiplier) is part of the bucket's identity.
    BuildInlineBucketKey(tenant->prefix, request.throttle_uid, request.identifier,
                         request.spec_limit, request.spec_period_ms, &out->key);
  } else {
    BuildBucketKey(tenant->prefix, request.throttle_uid, request.identifier, &out->key);
  }
  return absl::OkStatus();
}

namespace {

// The answer given when a backend fails and the tenant fails open.
Decision FailOpenDecision(const Rate& rate, uint64_t cost) {
  Decision d;
  d.allowed = true;
  d.limit = rate.capacity;
  d.remaining = rate.capacity - cost;  // what a fresh bucket would say
  return d;
}

// True for the backend errors that mean an outage (the backend could not be
// reached or did not answer in time): the only ones a tenant's
// on_backend_error policy applies to.
bool IsOutage(const absl::Status& error) {
  return error.code() == absl::StatusCode::kUnavailable ||
         error.code() == absl::StatusCode::kDeadlineExceeded;
}

// Applies a tenant's on_backend_error policy to a backend error. An outage fails open
// (allow) or becomes kUnavailable naming the backend (deny). Any other error (kInternal:
// a malformed reply; kResourceExhausted: a full store; kFailedPrecondition: keys not
// decidable together; ...) says the backend answered and the request could not be
// decided: it keeps its code whatever the policy, so a caller can never turn it into an
// allowed hit.
absl::StatusOr<Decision> OnBackendError(const Snapshot::Tenant& tenant, const Rate& rate,
                                        uint64_t cost, const absl::Status& error) {
  const bool outage = IsOutage(error);
  // traffik_backend_errors_total counts outages, the errors the policy is
  // for; other errors are counted by code in traffik_errors_total (and a full
  // memory share in traffik_bucket_rejections_total).
  if (outage) tenant.backend_errors->Increment();
  if (outage && tenant.on_backend_error == BackendErrorPolicy::kAllow) {
    return FailOpenDecision(rate, cost);
  }
  if (!outage) return error;
  // Backend messages start with the backend's name; keep it visible.
  if (absl::StartsWith(error.message(), tenant.backend->Name())) {
    return absl::UnavailableError(error.message());
  }
  return absl::UnavailableError(
      absl::StrCat("backend ", tenant.backend->Name(), ": ", error.message()));
}

}  // namespace

absl::StatusOr<Decision> Engine::Finish(const PreparedHit& hit,
                                        absl::StatusOr<Decision> result) {
  if (!result.ok())
    return OnBackendError(*hit.tenant, hit.rate, hit.cost, result.status());
  (result->allowed ? hit.counters->allowed : hit.counters->throttled)->Increment();
  return result;
}

void Engine::ShouldThrottle(const HitRequest& request, DecisionCallback done) const {
  if (request.peek) {
    Peek(request, std::move(done));
    return;
  }
  auto hit = std::make_unique<PreparedHit>();
  if (absl::Status s = Prepare(request, hit.get()); !s.ok()) {
    std::move(done)(std::move(s));
    return;
  }
  PreparedHit* raw = hit.get();
  raw->backend->DecideIn(raw->partition, raw->key, raw->rate, raw->cost,
                         [hit = std::move(hit), done = std::move(done)](
                             absl::StatusOr<Decision> result) mutable {
                           std::move(done)(Finish(*hit, std::move(result)));
                         });
}

absl::StatusOr<Decision> Engine::FinishPeek(const PreparedHit& hit,
                                            absl::StatusOr<PeekResult> result) {
  if (!result.ok())
    return OnBackendError(*hit.tenant, hit.rate, hit.cost, result.status());
  return result->hit;
}

namespace {

// Prepare + Backend::Peek, the common part of Peek and GetBucket: `answer`
// gets the prepared hit (alive until then: key, snapshot) and what the
// backend answered, or is not called when the request is invalid (`done`
// then gets the error).
template <typename Done>
void PrepareAndPeek(
    const Engine& engine, const HitRequest& request, Done done,
    absl::AnyInvocable<void(const PreparedHit&, absl::StatusOr<PeekResult>, Done) &&>
        answer) {
  auto hit = std::make_unique<PreparedHit>();
  if (absl::Status s = engine.Prepare(request, hit.get()); !s.ok()) {
    std::move(done)(std::move(s));
    return;
  }
  PreparedHit* raw = hit.get();
  raw->backend->Peek(
      raw->partition, raw->key, raw->rate, raw->cost,
      [hit = std::move(hit), done = std::move(done),
       answer = std::move(answer)](absl::StatusOr<PeekResult> result) mutable {
        std::move(answer)(*hit, std::move(result), std::move(done));
      });
}

}  // namespace

void Engine::Peek(const HitRequest& request, DecisionCallback done) const {
  PrepareAndPeek<DecisionCallback>(
      *this, request, std::move(done),
      [](const PreparedHit& hit, absl::StatusOr<PeekResult> result,
         DecisionCallback done) { std::move(done)(FinishPeek(hit, std::move(result))); });
}

void Engine::GetBucket(const HitRequest& request, PeekCallback done) const {
  // Backend errors as they are: no on_backend_error policy for the admin view.
  PrepareAndPeek<PeekCallback>(
      *this, request, std::move(done),
      [](const PreparedHit&, absl::StatusOr<PeekResult> result, PeekCallback done) {
        std::move(done)(std::move(result));
      });
}

namespace {

// The tenant named by an admin request (empty: the default one).
absl::StatusOr<const Snapshot::Tenant*> FindAdminTenant(const Snapshot& snap,
                                                        absl::string_view tenant) {
  if (!tenant.empty()) {
    if (absl::Status s =
            ValidateTenantName(std::string_view(tenant.data(), tenant.size()));
        !s.ok()) {
      return s;
    }
  }
  const Snapshot::Tenant* found = snap.FindTenant(tenant);
  if (found == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown tenant ", QuoteForMessage(tenant)));
  }
  return found;
}

}  // namespace

namespace {

// Sums the answers of several Backend::Reset calls; answers `done` once the
// last one has answered (the first error wins).
struct DropTally {
  std::atomic<int> pending{1};  // 1 for the caller, released by Finish()
  std::atomic<uint64_t> removed{0};
  Mutex mu;
  absl::Status error ABSL_GUARDED_BY(mu);
  CountCallback done;

  void Add(absl::StatusOr<uint64_t> result) {
    if (result.ok()) {
      removed.fetch_add(*result);
    } else {
      MutexLock lock(&mu);
      if (error.ok()) error = result.status();
    }
    Release();
  }
  void Release() {
    if (pending.fetch_sub(1) != 1) return;
    absl::Status first;
    {
      MutexLock lock(&mu);
      first = error;
    }
    if (first.ok()) {
      std::move(done)(removed.load());
    } else {
      std::move(done)(first);
    }
  }
};

// Resets the buckets of `prefix` (and `uid` when not empty) on `backend`.
void DropPrefix(const std::shared_ptr<DropTally>& tally,
                std::shared_ptr<const Snapshot> keep_alive, Backend* backend,
                BackendPartition* partition, const std::string& prefix,
                const std::string& uid) {
  BucketSelector selector;
  selector.key_prefix = BucketKeyPrefix(prefix, uid, "");
  selector.matches = [prefix, uid](absl::string_view key) {
    return BucketKeyMatches(key, prefix, uid, "");
  };
  tally->pending.fetch_add(1);
  backend->Reset(
      partition, std::move(selector),
      [tally, keep_alive = std::move(keep_alive)](absl::StatusOr<uint64_t> removed) {
        tally->Add(std::move(removed));
      });
}

}  // namespace

void Engine::DropUnreachableBuckets(std::shared_ptr<const Snapshot> before,
                                    std::shared_ptr<const Snapshot> after,
                                    CountCallback done) {
  auto tally = std::make_shared<DropTally>();
  tally->done = std::move(done);
  for (const auto& [name, old] : before->tenants()) {
    auto it = after->tenants().find(name);
    const Snapshot::Tenant* now = it == after->tenants().end() ? nullptr : &it->second;
    if (now == nullptr || now->backend != old.backend || now->prefix != old.prefix) {
      // A memory tenant's partition goes with it; on a shared backend its
      // keys stay unless dropped here, unless a tenant now uses that prefix.
      if (old.partition != nullptr) continue;
      bool reused = false;
      for (const auto& [other_name, other] : after->tenants()) {
        if (other.backend == old.backend && other.prefix == old.prefix) reused = true;
      }
      if (!reused) DropPrefix(tally, before, old.backend, nullptr, old.prefix, "");
      continue;
    }
    for (const auto& [uid, throttle] : old.throttles) {
      if (now->throttles.contains(uid)) continue;
      // The kept tenant's current partition (a memory share may be new).
      DropPrefix(tally, after, now->backend, now->partition, now->prefix, uid);
    }
  }
  tally->Release();
}

void Engine::ResetBuckets(const ResetRequest& request, CountCallback done) const {
  std::shared_ptr<const Snapshot> snap = snapshot_.load(std::memory_order_acquire);
  if (!request.identifier.empty() && request.throttle_uid.empty()) {
    std::move(done)(absl::InvalidArgumentError(
        "identifier given without throttle_uid; to reset every bucket of an "
        "identifier, name its throttle"));
    return;
  }
  if (request.identifier.size() > snap->max_identifier_bytes()) {
    std::move(done)(absl::InvalidArgumentError(
        absl::StrCat("identifier is ", request.identifier.size(), " bytes; the limit is ",
                     snap->max_identifier_bytes(), " bytes")));
    return;
  }
  if (!request.throttle_uid.empty()) {
    if (absl::Status s = ValidateThrottleUid(
            std::string_view(request.throttle_uid.data(), request.throttle_uid.size()));
        !s.ok()) {
      std::move(done)(std::move(s));
      return;
    }
  }
  absl::StatusOr<const Snapshot::Tenant*> tenant = FindAdminTenant(*snap, request.tenant);
  if (!tenant.ok()) {
    std::move(done)(tenant.status());
    return;
  }
  const Snapshot::Tenant& t = **tenant;
  BucketSelector selector;
  selector.key_prefix =
      BucketKeyPrefix(t.prefix, request.throttle_uid, request.identifier);
  selector.matches = [prefix = t.prefix, uid = std::string(request.throttle_uid),
                      identifier =
                          std::string(request.identifier)](absl::string_view key) {
    return BucketKeyMatches(key, prefix, uid, identifier);
  };
  selector.whole_partition = request.throttle_uid.empty() && t.partition != nullptr;
  // The snapshot keeps the backend and partition alive until the answer.
  t.backend->Reset(
      t.partition, std::move(selector),
      [snap, done = std::move(done)](absl::StatusOr<uint64_t> removed) mutable {
        std::move(done)(std::move(removed));
      });
}

absl::StatusOr<std::vector<ThrottleInfo>> Engine::ListThrottles(
    absl::string_view tenant) const {
  std::shared_ptr<const Snapshot> snap = snapshot_.load(std::memory_order_acquire);
  absl::StatusOr<const Snapshot::Tenant*> found = FindAdminTenant(*snap, tenant);
  if (!found.ok()) return found.status();
  std::vector<ThrottleInfo> out;
  out.reserve((*found)->throttles.size());
  for (const auto& [uid, throttle] : (*found)->throttles) {
    out.push_back(ThrottleInfo{uid, throttle.rate});
  }
  std::sort(out.begin(), out.end(),
            [](const ThrottleInfo& a, const ThrottleInfo& b) { return a.uid < b.uid; });
  return out;
}

namespace {

// Collects the answers of one batch split over several backends.
struct BatchState {
  std::shared_ptr<const Snapshot> snapshot;
  std::vector<BucketOp> ops;
  std::vector<const DecisionCounters*> counters;
  std::vector<const Snapshot::Tenant*> tenants;
  std::vector<char> peek;  // 1: a peek (not counted as a decision)
  std::vector<Decision> results;
  std::vector<char> fail_open;  // 1: allowed by an on_backend_error: allow policy
  std::atomic<int> pending{0};
  std::atomic<bool> failed{false};
  absl::Status error;  // written once, by the first failing group
  BatchCallback done;

  // Applies each item's tenant policy to a backend error for `indices`.
  void OnError(const std::vector<size_t>& indices, const absl::Status& status) {
    // On an outage each item follows its own tenant's policy: fail-open items
    // are allowed, and any fail-closed item fails the whole batch. Any other
    // error fails the whole batch with its own code (OnBackendError).
    for (size_t i : indices) {
      const BucketOp& op = ops[i];
      absl::StatusOr<Decision> d = OnBackendError(*tenants[i], op.rate, op.cost, status);
      if (d.ok()) {
        results[i] = *d;
        fail_open[i] = true;
      } else if (!failed.exchange(true)) {
        error = d.status();
      }
    }
  }

  // Counts the decisions; only an applied decision counts as allowed.
  void Count(bool applied) const {
    for (size_t i = 0; i < results.size(); ++i) {
      if (fail_open[i]) continue;  // counted as a backend error
      if (peek[i]) continue;       // took nothing: no decision
      (applied && results[i].allowed ? counters[i]->allowed : counters[i]->throttled)
          ->Increment();
    }
  }

  void Finish() {
    if (failed.load()) {
      std::move(done)(error);
      return;
    }
    Count(/*applied=*/true);
    std::move(done)(std::move(results));
  }
};

// Checks the batch size and prepares every item into `state` (so an invalid
// item takes no tokens anywhere), grouping the indices by backend.
absl::Status PrepareBatch(const Engine& engine, absl::Span<const HitRequest> requests,
                          BatchState& state, std::vector<Backend*>& backends,
                          std::vector<std::vector<size_t>>& groups) {
  state.snapshot = engine.snapshot();
  if (requests.size() > state.snapshot->max_batch_size()) {
    return absl::InvalidArgumentError(absl::StrCat("batch has ", requests.size(),
                                                   " requests; the limit is ",
                                                   state.snapshot->max_batch_size()));
  }
  state.ops.reserve(requests.size());
  state.peek.reserve(requests.size());
  state.counters.reserve(requests.size());
  state.tenants.reserve(requests.size());
  PreparedHit hit;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (absl::Status s = engine.Prepare(requests[i], &hit); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "requests[", i, "]: ", absl::StatusCodeToString(s.code()), ": ", s.message()));
    }
    size_t g = 0;
    while (g < backends.size() && backends[g] != hit.backend) ++g;
    if (g == backends.size()) {
      backends.push_back(hit.backend);
      groups.emplace_back();
    }
    groups[g].push_back(i);
    // The key moves: Prepare builds the next one afresh.
    state.ops.push_back(BucketOp{std::move(hit.key), hit.rate, hit.cost, hit.partition,
                                 requests[i].peek});
    state.counters.push_back(hit.counters);
    state.tenants.push_back(hit.tenant);
    state.peek.push_back(requests[i].peek ? 1 : 0);
  }
  state.results.resize(requests.size());
  state.fail_open.assign(requests.size(), 0);
  return absl::OkStatus();
}

}  // namespace

namespace {

// One Engine::DecideRules call in flight: its ops and answers, until the last
// backend call has answered.
using RuleIndices = absl::InlinedVector<size_t, 4>;

struct RuleState {
  std::shared_ptr<const Snapshot> snapshot;
  const Snapshot::Tenant* tenant = nullptr;
  // Inline storage: the usual request has one or two descriptors.
  absl::InlinedVector<BucketOp, 2> ops;     // one per hit, as prepared
  absl::InlinedVector<char, 4> impossible;  // 1: cost above the capacity (refused)
  std::vector<RuleDecision> results;
  size_t one = 0;               // DecideOne's hit
  std::atomic<int> pending{1};  // 1 for the caller, released by Release()
  Mutex mu;
  absl::Status error ABSL_GUARDED_BY(mu);
  RuleCallback done;

  void Fail(const absl::Status& status) {
    MutexLock lock(&mu);
    if (error.ok()) error = status;
  }

  // Applies the tenant's policy to a backend error for `indices`.
  void OnError(absl::Span<const size_t> indices, const absl::Status& status) {
    for (size_t i : indices) {
      const BucketOp& op = ops[i];
      absl::StatusOr<Decision> d =
          OnBackendError(*tenant, op.rate, std::min(op.cost, op.rate.capacity), status);
      if (!d.ok()) {
        Fail(d.status());
        continue;
      }
      results[i].decision = *d;
      results[i].fail_open = true;
      if (impossible[i]) results[i].decision.allowed = false;
    }
  }

  // Stores the decisions of `indices` (in that order).
  void Store(absl::Span<const size_t> indices, const std::vector<Decision>& decisions) {
    if (decisions.size() != indices.size()) {
      Fail(absl::InternalError(absl::StrCat("backend answered ", decisions.size(),
                                            " decisions for ", indices.size(), " ops")));
      return;
    }
    for (size_t k = 0; k < indices.size(); ++k) {
      const size_t i = indices[k];
      results[i].decision = decisions[k];
      if (impossible[i]) {
        // Never allowed whatever it waits: no wait_ms to promise.
        results[i].decision.allowed = false;
        results[i].decision.wait_ms = 0;
      }
    }
  }

  void Release() {
    if (pending.fetch_sub(1) != 1) return;
    absl::Status first;
    {
      MutexLock lock(&mu);
      first = error;
    }
    if (!first.ok()) {
      std::move(done)(first);
      return;
    }
    std::move(done)(std::move(results));
  }
};

// The ops of `indices`; `peek` sets peek on each (a dry run), and a cost-0
// or impossible op becomes a cost-0 peek (it takes nothing either way).
std::vector<BucketOp> OpsOf(const RuleState& state, absl::Span<const size_t> indices,
                            bool peek) {
  std::vector<BucketOp> ops;
  ops.reserve(indices.size());
  for (size_t i : indices) {
    BucketOp op = state.ops[i];
    if (state.impossible[i]) op.cost = 0;
    op.peek = peek || op.cost == 0;
    ops.push_back(std::move(op));
  }
  return ops;
}

// Replaces the remaining and reset_ms of `indices` (decided as peeks that
// took nothing) by their buckets as they stand (cost-0 peeks), keeping
// allowed and wait_ms.
void DescribeAsIs(const std::shared_ptr<RuleState>& state, Backend* backend,
                  const RuleIndices& indices) {
  std::vector<BucketOp> ops = OpsOf(*state, indices, /*peek=*/true);
  for (BucketOp& op : ops) op.cost = 0;
  state->pending.fetch_add(1);
  backend->DecideBatch(ops,
                       [state, indices](absl::StatusOr<std::vector<Decision>> as_is) {
                         if (!as_is.ok()) {
                           state->OnError(indices, as_is.status());
                         } else if (as_is->size() == indices.size()) {
                           for (size_t k = 0; k < indices.size(); ++k) {
                             Decision& d = state->results[indices[k]].decision;
                             d.remaining = (*as_is)[k].remaining;
                             d.reset_ms = (*as_is)[k].reset_ms;
                           }
                         }
                         state->Release();
                       });
}

// One hit that takes tokens (cost >= 1, within the capacity): a plain
// decision, which is all or nothing by itself (the common one-descriptor
// request skips the batch machinery).
void DecideOne(const std::shared_ptr<RuleState>& state, Backend* backend, size_t i) {
  const BucketOp& op = state->ops[i];
  state->pending.fetch_add(1);
  state->one = i;  // (not captured: a callback of one shared_ptr allocates nothing)
  backend->DecideIn(op.partition, op.key, op.rate, op.cost,
                    [state](absl::StatusOr<Decision> result) {
                      const size_t i = state->one;
                      if (result.ok()) {
                        state->results[i].decision = *result;
                      } else {
                        const size_t one[] = {i};
                        state->OnError(one, result.status());
                      }
                      state->Release();
                    });
}

bool TakesTokens(const RuleState& state, size_t i) {
  return state.ops[i].cost >= 1 && state.impossible[i] == 0;
}

// Decides `indices` each on its own (DecideBatch).
void DecideEach(const std::shared_ptr<RuleState>& state, Backend* backend,
                RuleIndices indices) {
  if (indices.size() == 1 && TakesTokens(*state, indices[0])) {
    DecideOne(state, backend, indices[0]);
    return;
  }
  std::vector<BucketOp> ops = OpsOf(*state, indices, /*peek=*/false);
  state->pending.fetch_add(1);
  backend->DecideBatch(ops, [state, indices = std::move(indices)](
                                absl::StatusOr<std::vector<Decision>> result) {
    if (result.ok()) {
      state->Store(indices, *result);
    } else {
      state->OnError(indices, result.status());
    }
    state->Release();
  });
}

// Decides `indices` all or nothing; falls back to DecideEach when the backend
// cannot decide these keys together.
void DecideGroup(const std::shared_ptr<RuleState>& state, Backend* backend,
                 RuleIndices indices, bool refuse_group) {
  bool any_impossible = refuse_group;
  for (size_t i : indices) any_impossible |= state->impossible[i] != 0;
  if (indices.size() == 1 && !refuse_group && TakesTokens(*state, indices[0])) {
    DecideOne(state, backend, indices[0]);
    return;
  }
  std::vector<BucketOp> ops;
  ops.reserve(indices.size());
  for (size_t i : indices) {
    BucketOp op = state->ops[i];
    if (state->impossible[i]) op.cost = 0;
    // A cost-0 op takes nothing and is always allowed; with an impossible op
    // the group is refused anyway: a dry run describes every bucket.
    op.peek = any_impossible;
    ops.push_back(std::move(op));
  }
  state->pending.fetch_add(1);
  backend->DecideAllOrNothing(
      ops, [state, backend, indices = std::move(indices),
            any_impossible](absl::StatusOr<AllOrNothingResult> result) mutable {
        if (result.ok()) {
          state->Store(indices, result->decisions);
          // A dry run that would apply describes the buckets after the hits;
          // nothing was taken, so answer them as they stand.
          if (any_impossible && result->applied) DescribeAsIs(state, backend, indices);
        } else if (result.status().code() == absl::StatusCode::kFailedPrecondition) {
          // Keys the backend cannot decide together (Redis Cluster: several
          // hash slots): decided one by one, as envoyproxy/ratelimit does.
          if (any_impossible) {
            // Refused anyway: whether each would pass, then the buckets as
            // they stand.
            std::vector<BucketOp> ops = OpsOf(*state, indices, /*peek=*/true);
            state->pending.fetch_add(1);
            backend->DecideBatch(ops, [state, backend, indices](
                                          absl::StatusOr<std::vector<Decision>> peeked) {
              if (peeked.ok()) {
                state->Store(indices, *peeked);
                DescribeAsIs(state, backend, indices);
              } else {
                state->OnError(indices, peeked.status());
              }
              state->Release();
            });
          } else {
            DecideEach(state, backend, std::move(indices));
          }
        } else {
          state->OnError(indices, result.status());
        }
        state->Release();
      });
}

}  // namespace

void Engine::DecideRules(std::shared_ptr<const Snapshot> snapshot,
                         const Snapshot::Tenant& tenant, absl::Span<const RuleHit> hits,
                         bool refuse_group, RuleCallback done) {
  auto state = std::make_shared<RuleState>();
  state->tenant = &tenant;
  state->ops.reserve(hits.size());
  state->impossible.reserve(hits.size());
  RuleIndices group;
  RuleIndices independent;
  for (size_t i = 0; i < hits.size(); ++i) {
    const RuleHit& hit = hits[i];
    if (hit.identifier.size() > snapshot->max_identifier_bytes()) {
      std::move(done)(absl::InvalidArgumentError(absl::StrCat(
          "descriptors[", hit.descriptor_index,
          "]: the bucket identity (its entries) is ", hit.identifier.size(),
          " bytes; the limit is ", snapshot->max_identifier_bytes(), " bytes")));
      return;
    }
    const Rate rate{ScaledCapacity(hit.requests_per_unit, tenant.quota_multiplier),
                    hit.unit_ms};
    if (hit.requests_per_unit == 0 || !IsValidRate(rate)) {
      std::move(done)(absl::InvalidArgumentError(
          absl::StrCat("descriptors[", hit.descriptor_index, "]: limit of ",
                       hit.requests_per_unit, " per ", hit.unit_ms,
                       " ms is not usable: requests_per_unit * the unit in ms "
                       "must be between 1 and ",
                       kMaxScaledCapacityText)));
      return;
    }
    BucketOp op;
    if (hit.rate_in_key) {
      BuildInlineBucketKey(tenant.prefix, hit.uid, hit.identifier, hit.requests_per_unit,
                           hit.unit_ms, &op.key);
    } else {
      BuildBucketKey(tenant.prefix, hit.uid, hit.identifier, &op.key);
    }
    op.rate = rate;
    op.cost = hit.cost;
    op.partition = tenant.partition;
    state->ops.push_back(std::move(op));
    state->impossible.push_back(hit.cost > rate.capacity ? 1 : 0);
    (hit.independent ? independent : group).push_back(i);
  }
  state->results.resize(hits.size());
  state->snapshot = std::move(snapshot);
  state->done = std::move(done);
  if (!group.empty()) DecideGroup(state, tenant.backend, std::move(group), refuse_group);
  if (!independent.empty()) DecideEach(state, tenant.backend, std::move(independent));
  state->Release();
}

void Engine::ShouldThrottleBatch(absl::Span<const HitRequest> requests,
                                 BatchCallback done) const {
  auto state = std::make_shared<BatchState>();
  std::vector<Backend*> backends;
  std::vector<std::vector<size_t>> groups;  // indices per distinct backend
  if (absl::Status s = PrepareBatch(*this, requests, *state, backends, groups); !s.ok()) {
    std::move(done)(std::move(s));
    return;
  }
  state->done = std::move(done);
  if (requests.empty()) {
    state->Finish();
    return;
  }
  state->pending.store(static_cast<int>(groups.size()));
  for (size_t g = 0; g < groups.size(); ++g) {
    std::vector<size_t> indices = std::move(groups[g]);
    // The usual batch is on one backend: its ops as they are (no key copies).
    std::vector<BucketOp> group_ops;
    if (groups.size() > 1) {
      group_ops.reserve(indices.size());
      for (size_t i : indices) group_ops.push_back(state->ops[i]);
    }
    backends[g]->DecideBatch(groups.size() > 1 ? absl::MakeConstSpan(group_ops)
                                               : absl::MakeConstSpan(state->ops),
                             [state, indices = std::move(indices)](
                                 absl::StatusOr<std::vector<Decision>> result) mutable {
                               if (!result.ok()) {
                                 state->OnError(indices, result.status());
                               } else {
                                 for (size_t k = 0;
                                      k < indices.size() && k < result->size(); ++k) {
                                   state->results[indices[k]] = (*result)[k];
                                 }
                               }
                               if (state->pending.fetch_sub(1) == 1) state->Finish();
                             });
  }
}

void Engine::ShouldThrottleBatch(absl::Span<const HitRequest> requests,
                                 bool all_or_nothing, AllOrNothingCallback done) const {
  if (!all_or_nothing) {
    ShouldThrottleBatch(
        requests,
        [done = std::move(done)](absl::StatusOr<std::vector<Decision>> result) mutable {
          if (!result.ok()) {
            std::move(done)(result.status());
            return;
          }
          std::move(done)(AllOrNothingResult{*std::move(result), /*applied=*/true});
        });
    return;
  }
  auto state = std::make_shared<BatchState>();
  std::vector<Backend*> backends;
  std::vector<std::vector<size_t>> groups;
  if (absl::Status s = PrepareBatch(*this, requests, *state, backends, groups); !s.ok()) {
    std::move(done)(std::move(s));
    return;
  }
  if (requests.empty()) {
    std::move(done)(AllOrNothingResult{{}, /*applied=*/true});
    return;
  }
  for (size_t i = 1; i < requests.size(); ++i) {
    if (requests[i].peek != requests[0].peek) {
      std::move(done)(absl::InvalidArgumentError(absl::StrCat(
          "all_or_nothing batch mixes peek and non-peek items (requests[0] has peek ",
          requests[0].peek ? "true" : "false", ", requests[", i, "] ",
          requests[i].peek ? "true" : "false",
          "); set peek on every item for a dry run, or on none")));
      return;
    }
  }
  if (backends.size() > 1) {
    std::move(done)(WithReason(
        absl::InvalidArgumentError(absl::StrCat(
            "all_or_nothing batch spans several backends: requests[0] is on backend ",
            backends[0]->Name(), " and requests[", groups[1].front(), "] on backend ",
            backends[1]->Name(), " (tenants ", QuoteForMessage(state->tenants[0]->name),
            " and ", QuoteForMessage(state->tenants[groups[1].front()]->name),
            "); an all_or_nothing batch must stay on one backend")),
        "ALL_OR_NOTHING_SPANS_BACKENDS"));
    return;
  }
  Backend* backend = backends[0];
  const std::vector<BucketOp>& ops = state->ops;
  backend->DecideAllOrNothing(
      ops,
      [state, done = std::move(done)](absl::StatusOr<AllOrNothingResult> result) mutable {
        if (!result.ok()) {
          // An outage follows each item's policy; any other error (e.g.
          // kFailedPrecondition: keys the backend cannot decide together) is
          // returned as is.
          std::vector<size_t> all(state->ops.size());
          for (size_t i = 0; i < all.size(); ++i) all[i] = i;
          state->OnError(all, result.status());
          if (state->failed.load()) {
            std::move(done)(state->error);
            return;
          }
          std::move(done)(AllOrNothingResult{std::move(state->results), true});
          return;
        }
        if (result->decisions.size() != state->ops.size()) {
          std::move(done)(absl::InternalError(
              absl::StrCat("backend answered ", result->decisions.size(),
                           " decisions for ", state->ops.size(), " items")));
          return;
        }
        state->results = result->decisions;
        state->Count(result->applied);
        std::move(done)(*std::move(result));
      });
}

}  // namespace traffik
