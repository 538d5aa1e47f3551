// traffik::testing::InProcessClient: traffikd's decision path (validation,
// bucket keys, token-bucket arithmetic, the memory backend's batch rules) run
// in the calling process.
//
// The arithmetic and the key and uid rules are traffikd's own sources
// (server/bucket/token_bucket.cc, server/engine/key.cc and their base
// helpers), compiled into the client library (client/CMakeLists.txt), so
// there is one home for each rule and the installed package needs no
// traffikd library.

#include "traffik/testing/in_process_client.h"

#include <algorithm>
#include <cstddef>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/quote.h"
#include "base/utf8.h"
#include "bucket/token_bucket.h"
#include "engine/key.h"

namespace traffik::testing {
namespace {

// traffikd's tenant-name rule (config.cc ValidateTenantName): 1..256 bytes of
// valid UTF-8 without control characters.
constexpr size_t kMaxTenantNameBytes = 256;

absl::Status ValidateTenant(std::string_view name) {
  const absl::string_view text(name.data(), name.size());
  if (name.size() > kMaxTenantNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tenant name ", QuoteForMessage(text),
                                                   " is longer than ",
                                                   kMaxTenantNameBytes, " bytes"));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tenant name ", QuoteForMessage(text), " contains a control character"));
    }
  }
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant name ", QuoteForMessage(text), " is not valid UTF-8"));
  }
  return absl::OkStatus();
}

absl::string_view View(const std::string& s) {
  return absl::string_view(s.data(), s.size());
}

// A spec's period as traffikd receives it (uint64 milliseconds on the wire).
uint64_t PeriodMs(const ThrottleSpec& spec) {
  return static_cast<uint64_t>(spec.period.count());
}

// One hit, resolved: its bucket, rate and cost.
struct Hit {
  std::string key;
  Rate rate;
  uint64_t cost = 1;
};

// A stored bucket: its state and when it is full again.
struct Entry {
  BucketState state;
  int64_t full_at_ms = 0;
};

ThrottleResult ToResult(const Decision& d) {
  ThrottleResult result;
  result.allowed = d.allowed;
  result.wait = std::chrono::milliseconds(static_cast<int64_t>(d.wait_ms));
  result.limit = d.limit;
  result.remaining = d.remaining;
  result.reset = std::chrono::milliseconds(static_cast<int64_t>(d.reset_ms));
  result.source = ThrottleResult::Source::kServer;
  return result;
}

}  // namespace

std::chrono::milliseconds SteadyClock::Now() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now().time_since_epoch());
}

struct InProcessClient::State {
  InProcessOptions options;
  std::shared_ptr<const Clock> clock;

  mutable absl::Mutex mu;
  absl::flat_hash_map<std::string, Entry> buckets ABSL_GUARDED_BY(mu);

  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> failures{0};

  // Engine::Prepare: validates `request` and resolves its bucket.
  absl::Status Prepare(const ThrottleRequest& request, Hit* out) const {
    const std::string identifier =
        WireIdentifier(request.identifier, options.max_identifier_bytes);
    if (identifier.empty()) return absl::InvalidArgumentError("identifier is empty");
    if (absl::Status s = ValidateThrottleUid(request.throttle_uid); !s.ok()) return s;
    if (!request.tenant.empty()) {
      if (absl::Status s = ValidateTenant(request.tenant); !s.ok()) return s;
    }
    const std::string& tenant_name =
        request.tenant.empty() ? options.default_tenant : request.tenant;
    const auto tenant = options.tenants.find(tenant_name);
    if (tenant == options.tenants.end()) {
      return absl::NotFoundError(
          absl::StrCat("unknown tenant ", QuoteForMessage(View(request.tenant))));
    }
    const double multiplier = tenant->second.quota_multiplier;
    const std::string uid = QuoteForMessage(View(request.throttle_uid));
    const auto configured = options.throttles.find(request.throttle_uid);
    if (configured != options.throttles.end()) {
      out->rate = Rate{ScaledCapacity(configured->second.limit, multiplier),
                       PeriodMs(configured->second)};
      BuildBucketKey(tenant_name, request.throttle_uid, identifier, &out->key);
    } else if (request.spec.has_value()) {
      if (!tenant->second.allow_inline_specs) {
        return absl::PermissionDeniedError(absl::StrCat(
            "throttle ", uid, " is not configured and tenant ",
            QuoteForMessage(View(tenant_name)), " does not allow inline specs"));
      }
      const uint64_t limit = request.spec->limit;
      const uint64_t period_ms = PeriodMs(*request.spec);
      if (limit == 0) {
        return absl::InvalidArgumentError(absl::StrCat("spec.limit is 0 for throttle ",
                                                       uid, "; it must be at least 1"));
      }
      if (period_ms == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec.period_ms is 0 for throttle ", uid, "; it must be at least 1"));
      }
      out->rate = Rate{ScaledCapacity(limit, multiplier), period_ms};
      if (!IsValidRate(out->rate)) {
        return absl::InvalidArgumentError(
            absl::StrCat("spec for throttle ", uid, " is too large: limit (",
                         out->rate.capacity, " after the quota multiplier) * period_ms (",
                         period_ms, ") must be at most ", kMaxScaledCapacityText));
      }
      BuildInlineBucketKey(tenant_name, request.throttle_uid, identifier, limit,
                           period_ms, &out->key);
    } else {
      return absl::NotFoundError(
          absl::StrCat("unknown throttle ", uid, ": not configured and no spec given"));
    }
    out->cost = request.cost == 0 ? 1 : request.cost;
    if (out->cost > out->rate.capacity) {
      return absl::OutOfRangeError(
          absl::StrCat("cost ", out->cost, " exceeds the capacity ", out->rate.capacity,
                       " of throttle ", uid, "; the hit could never be allowed"));
    }
    return absl::OkStatus();
  }

  // The memory backend's DecideLocked: the hits evaluated in order on scratch
  // copies; written back unless `all_or_nothing` and one was refused (then
  // each bucket is described as it stands). kResourceExhausted when the new
  // buckets do not fit.
  absl::StatusOr<BatchResult> Decide(const std::vector<Hit>& hits, bool all_or_nothing) {
    struct Scratch {
      const std::string* key = nullptr;
      bool existed = false;
      BucketState before;
      BucketState state;
      const Rate* rate = nullptr;  // of the last hit on it
    };
    absl::MutexLock lock(&mu);
    const int64_t now_ms = clock->Now().count();
    std::vector<Scratch> scratch;
    std::vector<size_t> scratch_of(hits.size());
    absl::flat_hash_map<std::string_view, size_t> index;
    for (size_t i = 0; i < hits.size(); ++i) {
      auto [it, inserted] = index.try_emplace(hits[i].key, scratch.size());
      if (inserted) {
        Scratch s;
        s.key = &hits[i].key;
        auto stored = buckets.find(hits[i].key);
        if (stored != buckets.end()) {
          s.existed = true;
          s.before = stored->second.state;
          s.state = s.before;
        }
        scratch.push_back(s);
      }
      scratch_of[i] = it->second;
    }
    BatchResult result;
    result.all_or_nothing = all_or_nothing;
    std::vector<Decision> decisions;
    decisions.reserve(hits.size());
    bool applied = true;
    std::vector<char> touched(scratch.size(), 0);
    for (size_t i = 0; i < hits.size(); ++i) {
      Scratch& s = scratch[scratch_of[i]];
      const bool has_state = s.existed || touched[scratch_of[i]];
      const Decision d = traffik::Decide(has_state ? &s.state : nullptr, hits[i].rate,
                                         hits[i].cost, now_ms, &s.state);
      touched[scratch_of[i]] = 1;
      s.rate = &hits[i].rate;
      applied = applied && d.allowed;
      decisions.push_back(d);
    }
    if (all_or_nothing && !applied) {
      for (size_t i = 0; i < hits.size(); ++i) {
        const Scratch& s = scratch[scratch_of[i]];
        BucketState unused;
        const Decision as_is = traffik::Decide(s.existed ? &s.before : nullptr,
                                               hits[i].rate, 0, now_ms, &unused);
        decisions[i].remaining = as_is.remaining;
        decisions[i].reset_ms = as_is.reset_ms;
      }
      result.applied = false;
    } else {
      size_t new_buckets = 0;
      for (const Scratch& s : scratch) {
        if (!s.existed && FullAtMs(s.state, *s.rate) > now_ms) ++new_buckets;
      }
      if (new_buckets > 0 && buckets.size() + new_buckets > options.max_buckets) {
        // Drop the buckets that are full again: no answer changes.
        for (auto it = buckets.begin(); it != buckets.end();) {
          if (it->second.full_at_ms <= now_ms) {
            buckets.erase(it++);
          } else {
            ++it;
          }
        }
        if (buckets.size() + new_buckets > options.max_buckets) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "in-process client: no room for a new bucket: max_buckets (",
              options.max_buckets, ") are taken by buckets that are not full again yet"));
        }
      }
      for (const Scratch& s : scratch) {
        const int64_t full_at_ms = FullAtMs(s.state, *s.rate);
        if (s.existed) {
          buckets[*s.key] = Entry{s.state, full_at_ms};
        } else if (full_at_ms > now_ms) {
          buckets.emplace(*s.key, Entry{s.state, full_at_ms});
        }
      }
      result.applied = true;
    }
    result.results.reserve(decisions.size());
    for (const Decision& d : decisions) result.results.push_back(ToResult(d));
    return result;
  }

  // Counts a failure; applies `policy` to an outage, returns other errors.
  absl::StatusOr<ThrottleResult> Fail(const absl::Status& status,
                                      std::optional<FailurePolicy> policy) {
    failures.fetch_add(1, std::memory_order_relaxed);
    if (!IsOutage(status)) return status;
    ThrottleResult result;
    result.source = ThrottleResult::Source::kFailurePolicy;
    switch (policy.value_or(options.failure_policy)) {
      case FailurePolicy::kAllow:
        result.allowed = true;
        return result;
      case FailurePolicy::kDeny:
        result.wait = options.deny_wait;
        return result;
      case FailurePolicy::kRaise:
        break;
    }
    return status;
  }
};

absl::StatusOr<std::shared_ptr<InProcessClient>> InProcessClient::Create(
    InProcessOptions options) {
  if (options.tenants.empty())
    options.tenants[options.default_tenant] = InProcessTenant{};
  if (options.tenants.find(options.default_tenant) == options.tenants.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_tenant ", QuoteForMessage(View(options.default_tenant)),
                     " is not one of the tenants"));
  }
  for (const auto& [name, tenant] : options.tenants) {
    if (name.empty()) return absl::InvalidArgumentError("a tenant name is empty");
    if (absl::Status s = ValidateTenant(name); !s.ok()) return s;
    if (!(tenant.quota_multiplier > 0) ||
        tenant.quota_multiplier > std::numeric_limits<double>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tenant ", QuoteForMessage(View(name)),
                       ": quota_multiplier must be a positive number"));
    }
    for (const auto& [uid, spec] : options.throttles) {
      if (absl::Status s = ValidateThrottleUid(uid); !s.ok()) return s;
      if (spec.limit == 0 || spec.period.count() <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("throttle ", QuoteForMessage(View(uid)),
                         ": limit and period must be positive"));
      }
      const Rate rate{ScaledCapacity(spec.limit, tenant.quota_multiplier),
                      PeriodMs(spec)};
      if (!IsValidRate(rate)) {
        return absl::InvalidArgumentError(
            absl::StrCat("throttle ", QuoteForMessage(View(uid)), " for tenant ",
                         QuoteForMessage(View(name)), ": capacity * period_ms exceeds ",
                         kMaxScaledCapacityText));
      }
    }
  }
  if (options.max_identifier_bytes < kDigestIdentifierBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_identifier_bytes must be at least ", kDigestIdentifierBytes));
  }
  if (options.max_batch_size == 0) {
    return absl::InvalidArgumentError("max_batch_size must be at least 1");
  }
  if (options.max_buckets == 0) {
    return absl::InvalidArgumentError("max_buckets must be at least 1");
  }
  if (options.deny_wait < std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError("deny_wait must not be negative");
  }
  auto state = std::make_unique<State>();
  state->clock =
      options.clock != nullptr ? options.clock : std::make_shared<SteadyClock>();
  state->options = std::move(options);
  return std::shared_ptr<InProcessClient>(new InProcessClient(std::move(state)));
}

InProcessClient::InProcessClient(std::unique_ptr<State> state)
    : state_(std::move(state)) {}
InProcessClient::~InProcessClient() = default;

absl::StatusOr<ThrottleResult> InProcessClient::Check(
    const ThrottleRequest& request, std::optional<FailurePolicy> policy) {
  state_->calls.fetch_add(1, std::memory_order_relaxed);
  std::vector<Hit> hits(1);
  if (absl::Status s = state_->Prepare(request, &hits[0]); !s.ok()) {
    return state_->Fail(s, policy);
  }
  absl::StatusOr<BatchResult> decided = state_->Decide(hits, /*all_or_nothing=*/false);
  if (!decided.ok()) return state_->Fail(decided.status(), policy);
  return decided->results[0];
}

void InProcessClient::CheckAsync(const ThrottleRequest& request,
                                 std::function<void(absl::StatusOr<ThrottleResult>)> done,
                                 std::optional<FailurePolicy> policy) {
  done(Check(request, policy));
}

absl::StatusOr<BatchResult> InProcessClient::CheckBatch(
    const std::vector<ThrottleRequest>& requests, const BatchOptions& options) {
  if (requests.empty()) return BatchResult{};
  state_->calls.fetch_add(1, std::memory_order_relaxed);
  absl::Status invalid;
  std::vector<Hit> hits(requests.size());
  if (requests.size() > state_->options.max_batch_size) {
    invalid = absl::InvalidArgumentError(absl::StrCat("batch has ", requests.size(),
                                                      " requests; the limit is ",
                                                      state_->options.max_batch_size));
  }
  for (size_t i = 0; invalid.ok() && i < requests.size(); ++i) {
    if (absl::Status s = state_->Prepare(requests[i], &hits[i]); !s.ok()) {
      // As traffikd: an invalid item rejects the whole batch.
      invalid = absl::InvalidArgumentError(absl::StrCat(
          "requests[", i, "]: ", absl::StatusCodeToString(s.code()), ": ", s.message()));
    }
  }
  absl::StatusOr<BatchResult> decided =
      invalid.ok() ? state_->Decide(hits, options.all_or_nothing) : invalid;
  if (decided.ok()) return decided;
  absl::StatusOr<ThrottleResult> failed = state_->Fail(decided.status(), options.policy);
  if (!failed.ok()) return failed.status();
  BatchResult result;
  result.results.assign(requests.size(), *failed);
  result.applied = failed->allowed;
  return result;
}

void InProcessClient::CheckBatchAsync(
    const std::vector<ThrottleRequest>& requests,
    std::function<void(absl::StatusOr<BatchResult>)> done, const BatchOptions& options) {
  done(CheckBatch(requests, options));
}

absl::StatusOr<bool> InProcessClient::Healthy(const std::string& service) {
  if (service.empty() || service == "traffik.v1.ThrottleService") return true;
  return absl::NotFoundError(absl::StrCat(
      "health check (service ", QuoteForMessage(View(service)), "): unknown service"));
}

ClientStats InProcessClient::stats() const {
  ClientStats stats;
  stats.rpcs = state_->calls.load(std::memory_order_relaxed);
  stats.failures = state_->failures.load(std::memory_order_relaxed);
  return stats;
}

void InProcessClient::Reset() {
  absl::MutexLock lock(&state_->mu);
  state_->buckets.clear();
}

size_t InProcessClient::bucket_count() const {
  absl::MutexLock lock(&state_->mu);
  return state_->buckets.size();
}

}  // namespace traffik::testing
