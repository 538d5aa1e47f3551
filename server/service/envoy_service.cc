#include "service/envoy_service.h"

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "auth/grpc_auth.h"
#include "base/log.h"
#include "base/quote.h"
#include "envoy/rules.h"

namespace traffik {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using RateLimitDescriptor =
    ::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
using ProtoUnit = rls::RateLimitResponse::RateLimit::Unit;

constexpr uint32_t kMaxUint32 = std::numeric_limits<uint32_t>::max();

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ProtoUnit ToProtoUnit(envoy::Unit unit) {
  switch (unit) {
    case envoy::Unit::kSecond:
      return rls::RateLimitResponse::RateLimit::SECOND;
    case envoy::Unit::kMinute:
      return rls::RateLimitResponse::RateLimit::MINUTE;
    case envoy::Unit::kHour:
      return rls::RateLimitResponse::RateLimit::HOUR;
    case envoy::Unit::kDay:
      return rls::RateLimitResponse::RateLimit::DAY;
    case envoy::Unit::kWeek:
      return rls::RateLimitResponse::RateLimit::WEEK;
    case envoy::Unit::kMonth:
      return rls::RateLimitResponse::RateLimit::MONTH;
    case envoy::Unit::kYear:
      return rls::RateLimitResponse::RateLimit::YEAR;
  }
  return rls::RateLimitResponse::RateLimit::UNKNOWN;
}

// A limit override's unit (envoy.type.v3.RateLimitUnit: SECOND = 1 ... YEAR
// = 6, the same numbers as the response's Unit), or nullopt.
std::optional<envoy::Unit> OverrideUnit(int unit) {
  switch (unit) {
    case 1:
      return envoy::Unit::kSecond;
    case 2:
      return envoy::Unit::kMinute;
    case 3:
      return envoy::Unit::kHour;
    case 4:
      return envoy::Unit::kDay;
    case 5:
      return envoy::Unit::kMonth;
    case 6:
      return envoy::Unit::kYear;
    default:
      return std::nullopt;
  }
}

// Checks the request's bounds before anything is matched or taken.
absl::Status Validate(const rls::RateLimitRequest& request, const Snapshot& snapshot) {
  if (request.domain().empty()) return absl::InvalidArgumentError("domain is empty");
  if (request.domain().size() > kMaxEnvoyDomainBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "domain ", QuoteForMessage(request.domain()), " is ", request.domain().size(),
        " bytes; the limit is ", kMaxEnvoyDomainBytes));
  }
  if (request.descriptors_size() == 0) {
    return absl::InvalidArgumentError("descriptors is empty; at least one is required");
  }
  if (static_cast<uint64_t>(request.descriptors_size()) > snapshot.max_batch_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("request has ", request.descriptors_size(),
                     " descriptors; the limit is ", snapshot.max_batch_size()));
  }
  for (int i = 0; i < request.descriptors_size(); ++i) {
    const RateLimitDescriptor& d = request.descriptors(i);
    if (d.entries_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "descriptors[", i, "].entries is empty; at least one is required"));
    }
    if (static_cast<size_t>(d.entries_size()) > kMaxEnvoyEntriesPerDescriptor) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptors[", i, "] has ", d.entries_size(),
                       " entries; the limit is ", kMaxEnvoyEntriesPerDescriptor));
    }
    for (int j = 0; j < d.entries_size(); ++j) {
      const auto& e = d.entries(j);
      if (e.key().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("descriptors[", i, "].entries[", j, "].key is empty"));
      }
      if (e.key().size() > kMaxEnvoyEntryKeyBytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "descriptors[", i, "].entries[", j, "].key ", QuoteForMessage(e.key()),
            " is ", e.key().size(), " bytes; the limit is ", kMaxEnvoyEntryKeyBytes));
      }
      if (e.value().size() > snapshot.max_identifier_bytes()) {
        return absl::InvalidArgumentError(
            absl::StrCat("descriptors[", i, "].entries[", j, "].value ",
                         QuoteForMessage(e.value()), " is ", e.value().size(),
                         " bytes; the limit is ", snapshot.max_identifier_bytes()));
      }
    }
    if (d.has_limit() && !OverrideUnit(d.limit().unit()).has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptors[", i, "].limit.unit is ", d.limit().unit(),
                       "; it must be SECOND (1) ... YEAR (6)"));
    }
  }
  return absl::OkStatus();
}

// How one descriptor is answered.
struct Plan {
  enum Kind { kNoMatch, kUnlimited, kZero, kLimit };
  Kind kind = kNoMatch;
  const EnvoyDecisionCounters* counters = nullptr;
  bool shadow = false;
  uint32_t requests_per_unit = 0;
  ProtoUnit unit = rls::RateLimitResponse::RateLimit::UNKNOWN;
  absl::string_view name;  // the rule's, kept alive by the call's snapshot
  size_t hit = 0;          // kLimit: index into the RuleHits
};

// One call in flight. Inline storage: the usual request has one or two
// descriptors.
struct Call {
  std::shared_ptr<const Snapshot> snapshot;
  absl::InlinedVector<Plan, 2> plans;
  bool response_headers = false;
  // Where the answer goes (so the engine's callback captures only the call).
  grpc::ServerUnaryReactor* reactor = nullptr;
  rls::RateLimitResponse* response = nullptr;
  Metrics* metrics = nullptr;
  int64_t start_ns = 0;
};

void SetDuration(uint64_t ms, google::protobuf::Duration* out) {
  out->set_seconds(static_cast<int64_t>(ms / 1000));
  out->set_nanos(static_cast<int32_t>(ms % 1000) * 1'000'000);
}

void AddHeader(rls::RateLimitResponse* response, const char* key, uint64_t value) {
  auto* header = response->add_response_headers_to_add();
  header->set_key(key);
  header->set_value(absl::StrCat(value));
}

uint64_t CeilSeconds(uint64_t ms) { return ms / 1000 + (ms % 1000 != 0 ? 1 : 0); }

// Fills the response from the plans and the engine's decisions; counts them.
void Answer(const Call& call, const std::vector<RuleDecision>& decisions,
            rls::RateLimitResponse* response) {
  bool over = false;
  absl::InlinedVector<uint64_t, 4> reset_ms(call.plans.size(), 0);
  absl::InlinedVector<uint64_t, 4> wait_ms(call.plans.size(), 0);
  absl::InlinedVector<char, 4> refused(call.plans.size(), 0);  // answered OVER_LIMIT
  response->mutable_statuses()->Reserve(static_cast<int>(call.plans.size()));
  for (size_t i = 0; i < call.plans.size(); ++i) {
    const Plan& plan = call.plans[i];
    auto* status = response->add_statuses();
    status->set_code(rls::RateLimitResponse::OK);
    switch (plan.kind) {
      case Plan::kNoMatch:
        plan.counters->no_match->Increment();
        break;
      case Plan::kUnlimited:
        status->set_limit_remaining(kMaxUint32);
        plan.counters->unlimited->Increment();
        break;
      case Plan::kZero:
      case Plan::kLimit: {
        auto* limit = status->mutable_current_limit();
        limit->set_unit(plan.unit);
        limit->set_name(plan.name.data(), plan.name.size());
        bool allowed = false;
        if (plan.kind == Plan::kLimit) {
          const RuleDecision& rd = decisions[plan.hit];
          const Decision& d = rd.decision;
          limit->set_requests_per_unit(
              static_cast<uint32_t>(std::min<uint64_t>(d.limit, kMaxUint32)));
          status->set_limit_remaining(
              static_cast<uint32_t>(std::min<uint64_t>(d.remaining, kMaxUint32)));
          SetDuration(d.reset_ms, status->mutable_duration_until_reset());
          reset_ms[i] = d.reset_ms;
          wait_ms[i] = d.wait_ms;
          allowed = d.allowed;
          if (rd.fail_open) break;  // counted as a backend error
        } else {
          limit->set_requests_per_unit(0);
          SetDuration(0, status->mutable_duration_until_reset());
        }
        if (allowed) {
          plan.counters->ok->Increment();
        } else if (plan.shadow) {
          plan.counters->shadow_over_limit->Increment();
        } else {
          plan.counters->over_limit->Increment();
          status->set_code(rls::RateLimitResponse::OVER_LIMIT);
          refused[i] = 1;
          over = true;
        }
        break;
      }
    }
  }
  response->set_overall_code(over ? rls::RateLimitResponse::OVER_LIMIT
                                  : rls::RateLimitResponse::OK);
  if (!call.response_headers) return;
  // The first over-limit descriptor, else the one with the least remaining.
  int chosen = -1;
  for (size_t i = 0; i < call.plans.size() && chosen < 0; ++i) {
    if (refused[i]) chosen = static_cast<int>(i);
  }
  if (chosen < 0) {
    uint32_t least = kMaxUint32;
    for (size_t i = 0; i < call.plans.size(); ++i) {
      const auto& status = response->statuses(static_cast<int>(i));
      if (status.has_current_limit() &&
          (chosen < 0 || status.limit_remaining() < least)) {
        chosen = static_cast<int>(i);
        least = status.limit_remaining();
      }
    }
  }
  if (chosen < 0) return;
  const auto& status = response->statuses(chosen);
  AddHeader(response, "RateLimit-Limit", status.current_limit().requests_per_unit());
  AddHeader(response, "RateLimit-Remaining", status.limit_remaining());
  AddHeader(response, "RateLimit-Reset", CeilSeconds(reset_ms[chosen]));
  if (refused[chosen] && wait_ms[chosen] > 0) {
    AddHeader(response, "Retry-After", CeilSeconds(wait_ms[chosen]));
  }
}

grpc::Status ToGrpc(const absl::Status& status) {
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace

grpc::ServerUnaryReactor* EnvoyRateLimitServiceImpl::ShouldRateLimit(
    grpc::CallbackServerContext* context, const rls::RateLimitRequest* request,
    rls::RateLimitResponse* response) {
  const int64_t start_ns = NowNanos();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Metrics& metrics = metrics_;
  auto fail = [&](const absl::Status& status) {
    metrics.ObserveLatency(Rpc::kShouldRateLimit, NowNanos() - start_ns);
    metrics.CountError(status.code());
    reactor->Finish(ToGrpc(status));
    return reactor;
  };

  auto call = std::make_shared<Call>();
  call->snapshot = engine_.snapshot();
  const Snapshot& snapshot = *call->snapshot;
  // Auth first (auth/grpc_auth.h), against this call's snapshot: with `auth:
  // required` the caller must be known and, for a configured domain, granted
  // the domain's tenant; nothing is matched or taken before.
  if (snapshot.callers().required()) {
    CallAccess access;
    access.rpc = "ShouldRateLimit";
    if (const Snapshot::EnvoyDomain* d = snapshot.FindEnvoyDomain(request->domain());
        d != nullptr) {
      access.tenants = {d->tenant->name};
    }
    if (absl::Status s = AuthorizeCall(snapshot.callers(), *context, access, metrics);
        !s.ok()) {
      return fail(s);
    }
  }
  if (absl::Status s = Validate(*request, snapshot); !s.ok()) return fail(s);

  const Snapshot::EnvoyDomain* domain = snapshot.FindEnvoyDomain(request->domain());
  if (domain == nullptr) {
    // An unknown domain: every descriptor OK, as upstream.
    for (int i = 0; i < request->descriptors_size(); ++i) {
      response->add_statuses()->set_code(rls::RateLimitResponse::OK);
      snapshot.envoy_unknown_domain().no_match->Increment();
    }
    response->set_overall_code(rls::RateLimitResponse::OK);
    metrics.ObserveLatency(Rpc::kShouldRateLimit, NowNanos() - start_ns);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  call->response_headers = snapshot.envoy_response_headers();

  const size_t n = static_cast<size_t>(request->descriptors_size());
  // Every descriptor's entries in one array: descriptor i is
  // all_entries[first_entry[i], first_entry[i + 1]).
  absl::InlinedVector<envoy::Entry, 8> all_entries;
  absl::InlinedVector<size_t, 4> first_entry;
  for (const RateLimitDescriptor& d : request->descriptors()) {
    first_entry.push_back(all_entries.size());
    for (const auto& e : d.entries())
      all_entries.push_back(envoy::Entry{e.key(), e.value()});
  }
  first_entry.push_back(all_entries.size());
  auto entries_of = [&](size_t i) {
    return absl::MakeConstSpan(all_entries.data() + first_entry[i],
                               first_entry[i + 1] - first_entry[i]);
  };
  absl::InlinedVector<envoy::Match, 2> matches(n);
  absl::InlinedVector<std::string, 2> override_ids(n);
  call->plans.resize(n);
  const uint64_t request_cost = request->hits_addend() == 0 ? 1 : request->hits_addend();
  for (size_t i = 0; i < n; ++i) {
    const RateLimitDescriptor& d = request->descriptors(static_cast<int>(i));
    // A limit override applies whatever the rules say, with no name, shadow
    // mode or replaces (as upstream): it takes part in `replaces` as Match{}.
    if (!d.has_limit())
      matches[i] = envoy::RuleSet::MatchDescriptor(*domain->domain, entries_of(i));
  }
  const std::vector<bool> replaced = envoy::RuleSet::Replaced(matches);

  absl::InlinedVector<RuleHit, 2> hits;
  bool refuse_group = false;
  for (size_t i = 0; i < n; ++i) {
    const RateLimitDescriptor& d = request->descriptors(static_cast<int>(i));
    Plan& plan = call->plans[i];
    const uint64_t cost = d.has_hits_addend() ? d.hits_addend().value() : request_cost;
    RuleHit hit;
    hit.descriptor_index = i;
    hit.cost = cost;
    if (d.has_limit()) {
      const envoy::Unit unit = *OverrideUnit(d.limit().unit());
      plan.counters = &domain->no_rule_counters;
      plan.requests_per_unit = d.limit().requests_per_unit();
      plan.unit = ToProtoUnit(unit);
      if (plan.requests_per_unit == 0) {
        plan.kind = Plan::kZero;
        refuse_group = true;
        continue;
      }
      override_ids[i] = envoy::RuleSet::EncodeBucketId(entries_of(i));
      hit.uid = domain->override_uid;
      hit.identifier = override_ids[i];
      hit.requests_per_unit = plan.requests_per_unit;
      hit.unit_ms = static_cast<uint64_t>(envoy::UnitMs(unit));
      hit.rate_in_key = true;
    } else {
      const envoy::Match& match = matches[i];
      auto rule =
          match.rule == nullptr ? domain->rules.end() : domain->rules.find(match.rule);
      if (rule == domain->rules.end()) {
        plan.counters = &domain->no_rule_counters;
        continue;  // no match: OK, nothing taken
      }
      plan.counters = &rule->second.counters;
      if (replaced[i]) continue;  // replaced by another match: not applied
      const envoy::RateLimit& limit = *match.rule->rate_limit;
      if (limit.unlimited) {
        plan.kind = Plan::kUnlimited;
        continue;
      }
      plan.shadow = match.rule->shadow_mode;
      plan.requests_per_unit = limit.requests_per_unit;
      plan.unit = ToProtoUnit(limit.unit);
      plan.name = limit.name;
      if (limit.requests_per_unit == 0) {
        plan.kind = Plan::kZero;
        if (!plan.shadow) refuse_group = true;
        continue;
      }
      hit.uid = rule->second.uid;
      hit.identifier = match.bucket_id;
      hit.requests_per_unit = limit.requests_per_unit;
      hit.unit_ms = static_cast<uint64_t>(envoy::UnitMs(limit.unit));
      hit.independent = plan.shadow;
    }
    plan.kind = Plan::kLimit;
    plan.hit = hits.size();
    hits.push_back(hit);
  }

  if (hits.empty()) {
    Answer(*call, std::vector<RuleDecision>(), response);
    metrics.ObserveLatency(Rpc::kShouldRateLimit, NowNanos() - start_ns);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  call->reactor = reactor;
  call->response = response;
  call->metrics = &metrics;
  call->start_ns = start_ns;
  const std::shared_ptr<const Snapshot>& snapshot_ref = call->snapshot;
  Engine::DecideRules(
      snapshot_ref, *domain->tenant, hits, refuse_group,
      [call = std::move(call)](absl::StatusOr<std::vector<RuleDecision>> decisions) {
        Metrics& metrics = *call->metrics;
        metrics.ObserveLatency(Rpc::kShouldRateLimit, NowNanos() - call->start_ns);
        if (!decisions.ok()) {
          metrics.CountError(decisions.status().code());
          if (decisions.status().code() != absl::StatusCode::kInvalidArgument) {
            TRAFFIK_LOG_LIMITED(
                absl::StrCat("ShouldRateLimit failed: ", decisions.status().ToString()));
          }
          call->reactor->Finish(ToGrpc(decisions.status()));
          return;
        }
        Answer(*call, *decisions, call->response);
        call->reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

}  // namespace traffik
