#include "engine/engine.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backend/memory/memory_backend.h"
#include "backend/redis/key_slot.h"
#include "clock/clock.h"
#include "engine/key.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : memory_(clock_, MemoryBackendOptions{1'000'000, 0}) {
    config_.throttles = {{"api_quota", 10, 3'600'000}, {"burst", 3, 1000}};
    TenantConfig def;
    def.name = "default";
    def.prefix = "default";
    TenantConfig gold;
    gold.name = "gold";
    gold.prefix = "gold";
    gold.quota_multiplier = 2.5;
    gold.allow_inline_specs = false;
    config_.tenants = {def, gold};
    config_.default_tenant = "default";
    config_.max_identifier_bytes = 16;
    Rebuild();
  }

  void Rebuild() {
    auto snap = Snapshot::Build(
        config_,
        [this](const TenantConfig&) -> absl::StatusOr<Backend*> { return &memory_; },
        metrics_);
    ASSERT_TRUE(snap.ok()) << snap.status();
    engine_ = std::make_unique<Engine>(*snap);
  }

  absl::StatusOr<Decision> Call(HitRequest r) {
    absl::StatusOr<Decision> out = absl::InternalError("callback not run");
    engine_->ShouldThrottle(r, [&](absl::StatusOr<Decision> d) { out = std::move(d); });
    return out;
  }

  absl::StatusOr<std::vector<Decision>> Batch(const std::vector<HitRequest>& r) {
    absl::StatusOr<std::vector<Decision>> out = absl::InternalError("callback not run");
    engine_->ShouldThrottleBatch(
        r, [&](absl::StatusOr<std::vector<Decision>> d) { out = std::move(d); });
    return out;
  }

  absl::StatusOr<AllOrNothingResult> AllOrNothing(const std::vector<HitRequest>& r,
                                                  bool all_or_nothing = true) {
    absl::StatusOr<AllOrNothingResult> out = absl::InternalError("callback not run");
    engine_->ShouldThrottleBatch(
        r, all_or_nothing,
        [&](absl::StatusOr<AllOrNothingResult> d) { out = std::move(d); });
    return out;
  }

  static HitRequest Req(absl::string_view id, absl::string_view uid,
                        absl::string_view tenant = "") {
    HitRequest r;
    r.identifier = id;
    r.throttle_uid = uid;
    r.tenant = tenant;
    return r;
  }
  static HitRequest Inline(absl::string_view id, absl::string_view uid, uint64_t limit,
                           uint64_t period_ms, absl::string_view tenant = "") {
    HitRequest r = Req(id, uid, tenant);
    r.has_spec = true;
    r.spec_limit = limit;
    r.spec_period_ms = period_ms;
    return r;
  }

  FakeClock clock_;
  MemoryBackend memory_;
  Metrics metrics_;
  Config config_;
  std::unique_ptr<Engine> engine_;
};

// Verifies a configured throttle allows `limit` hits then answers a wait.
TEST_F(EngineTest, ConfiguredThrottle) {
  for (int i = 0; i < 3; ++i) {
    auto d = Call(Req("user:1", "burst"));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(d->allowed);
    EXPECT_EQ(d->limit, 3u);
  }
  auto d = Call(Req("user:1", "burst"));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->wait_ms, 334u);  // ceil(1000 / 3)
}

// Verifies the tenant's quota multiplier scales capacity (floor).
TEST_F(EngineTest, QuotaMultiplier) {
  auto d = Call(Req("user:1", "api_quota", "gold"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->limit, 25u);
  EXPECT_EQ(d->remaining, 24u);
  EXPECT_EQ(ScaledCapacity(3, 0.1), 1u);  // at least 1
  EXPECT_EQ(ScaledCapacity(3, 1.5), 4u);  // floor(4.5)
}

// Verifies buckets are keyed by (tenant, throttle, identifier).
TEST_F(EngineTest, BucketsIndependent) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Call(Req("a", "burst"))->allowed);
  EXPECT_FALSE(Call(Req("a", "burst"))->allowed);
  EXPECT_TRUE(Call(Req("b", "burst"))->allowed);
  EXPECT_TRUE(Call(Req("a", "api_quota"))->allowed);
  EXPECT_TRUE(Call(Req("a", "burst", "gold"))->allowed);
  EXPECT_TRUE(Call(Req("a", "burst", "default"))->allowed == false);  // "" = default
}

// Verifies inline specs define a throttle on the fly.
TEST_F(EngineTest, InlineSpec) {
  auto d = Call(Inline("x", "adhoc", 2, 500));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->limit, 2u);
  EXPECT_EQ(d->remaining, 1u);
  EXPECT_EQ(d->reset_ms, 250u);
}

// Verifies a configured throttle wins over an inline spec with the same uid.
TEST_F(EngineTest, ConfiguredWinsOverSpec) {
  auto d = Call(Inline("x", "burst", 1000, 1));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->limit, 3u);
}

// Verifies each error maps to its status code with a message naming the problem.
TEST_F(EngineTest, Errors) {
  auto empty = Call(Req("", "burst"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("identifier is empty"));

  auto big = Call(Req(std::string(17, 'x'), "burst"));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("17 bytes"));
  EXPECT_TRUE(Call(Req(std::string(16, 'x'), "burst")).ok());

  auto unknown = Call(Req("x", "nope"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown throttle 'nope'"));

  auto tenant = Call(Req("x", "burst", "silver"));
  EXPECT_EQ(tenant.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tenant.status().message(), HasSubstr("unknown tenant 'silver'"));

  HitRequest costly = Req("x", "burst");
  costly.cost = 4;
  auto cost = Call(costly);
  EXPECT_EQ(cost.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(cost.status().message(), HasSubstr("cost 4 exceeds the capacity 3"));

  auto zero_limit = Call(Inline("x", "adhoc", 0, 1000));
  EXPECT_EQ(zero_limit.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero_limit.status().message(), HasSubstr("spec.limit"));

  auto zero_period = Call(Inline("x", "adhoc", 5, 0));
  EXPECT_EQ(zero_period.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero_period.status().message(), HasSubstr("spec.period_ms"));

  auto huge = Call(Inline("x", "adhoc", uint64_t{1} << 40, uint64_t{1} << 20));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);

  auto forbidden = Call(Inline("x", "adhoc", 5, 1000, "gold"));
  EXPECT_EQ(forbidden.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(forbidden.status().message(), HasSubstr("gold"));

  auto bad_uid = Call(Inline("x", "a:b", 5, 1000));
  EXPECT_EQ(bad_uid.status().code(), absl::StatusCode::kInvalidArgument);
  auto empty_uid = Call(Inline("x", "", 5, 1000));
  EXPECT_EQ(empty_uid.status().code(), absl::StatusCode::kInvalidArgument);
}

// Verifies cost 0 means 1 and a cost equal to capacity is allowed.
TEST_F(EngineTest, Cost) {
  HitRequest r = Req("x", "burst");
  r.cost = 0;
  EXPECT_EQ(Call(r)->remaining, 2u);
  r.cost = 2;
  EXPECT_EQ(Call(r)->remaining, 0u);
  HitRequest full = Req("y", "burst");
  full.cost = 3;
  EXPECT_TRUE(Call(full)->allowed);
}

// Verifies batch answers come in order, as if the hits were made one by one.
TEST_F(EngineTest, BatchInOrder) {
  auto out = Batch({Req("a", "burst"), Req("a", "burst"), Req("a", "burst"),
                    Req("a", "burst"), Req("a", "burst", "gold")});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 5u);
  EXPECT_EQ((*out)[0].remaining, 2u);
  EXPECT_EQ((*out)[2].remaining, 0u);
  EXPECT_FALSE((*out)[3].allowed);
  EXPECT_TRUE((*out)[4].allowed);
  EXPECT_EQ((*out)[4].limit, 7u);
}

// Verifies an invalid item rejects the whole batch, names its index, and no
// tokens are taken by the valid items.
TEST_F(EngineTest, BatchRejectedWhole) {
  auto out = Batch({Req("a", "burst"), Req("a", "burst"), Req("", "burst")});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("requests[2]"));
  EXPECT_THAT(out.status().message(), HasSubstr("identifier is empty"));
  auto unknown = Batch({Req("a", "burst"), Req("a", "nope")});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("requests[1]"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("NOT_FOUND"));
  EXPECT_EQ(Call(Req("a", "burst"))->remaining, 2u);  // nothing was taken
}

// Verifies a batch over max_batch_size is refused.
TEST_F(EngineTest, BatchTooLarge) {
  config_.max_batch_size = 2;
  Rebuild();
  auto out = Batch({Req("a", "burst"), Req("b", "burst"), Req("c", "burst")});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("limit is 2"));
  auto empty = Batch({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

// Verifies an all-or-nothing batch (burst + sustained on one identifier)
// takes nothing from the sustained throttle once the burst one refuses, and
// counts the refused batch's items as throttled.
TEST_F(EngineTest, AllOrNothingBurstAndSustained) {
  const std::vector<HitRequest> both = {Req("u", "burst"), Req("u", "api_quota")};
  for (int i = 0; i < 3; ++i) {
    auto out = AllOrNothing(both);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(out->applied);
    EXPECT_EQ(out->decisions[1].remaining, 9u - i);
  }
  auto refused = AllOrNothing(both);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->applied);
  EXPECT_FALSE(refused->decisions[0].allowed);
  EXPECT_GT(refused->decisions[0].wait_ms, 0u);
  EXPECT_EQ(refused->decisions[1].wait_ms, 0u);
  EXPECT_EQ(refused->decisions[1].remaining, 7u);
  EXPECT_EQ(Call(Req("u", "api_quota"))->remaining, 6u);  // nothing was taken

  const std::string text = metrics_.RenderText();
  EXPECT_THAT(text,
              HasSubstr("traffik_decisions_total{result=\"allowed\",tenant=\"default\","
                        "throttle=\"api_quota\"} 4"));
  EXPECT_THAT(text,
              HasSubstr("traffik_decisions_total{result=\"throttled\",tenant=\"default\","
                        "throttle=\"api_quota\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("traffik_decisions_total{result=\"throttled\",tenant=\"default\","
                        "throttle=\"burst\"} 1"));
}

// Verifies all_or_nothing = false is the ordinary batch (applied), and an
// invalid item rejects an all-or-nothing batch whole like any batch.
TEST_F(EngineTest, AllOrNothingFlagAndValidation) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Call(Req("v", "burst"))->allowed);
  auto plain = AllOrNothing({Req("v", "burst"), Req("v", "api_quota")}, false);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(plain->applied);
  EXPECT_FALSE(plain->decisions[0].allowed);
  EXPECT_EQ(plain->decisions[1].remaining, 9u);  // taken despite the refusal

  auto invalid = AllOrNothing({Req("w", "burst"), Req("w", "nope")});
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(invalid.status().message(), HasSubstr("requests[1]"));
  EXPECT_EQ(Call(Req("w", "burst"))->remaining, 2u);

  auto empty = AllOrNothing({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->applied);
  EXPECT_TRUE(empty->decisions.empty());
}

// Verifies decisions are counted per tenant, throttle and result.
TEST_F(EngineTest, CountsDecisions) {
  for (int i = 0; i < 4; ++i) (void)Call(Req("a", "burst"));
  (void)Call(Inline("a", "adhoc", 5, 1000));
  const std::string text = metrics_.RenderText();
  EXPECT_THAT(
      text,
      HasSubstr("traffik_decisions_total{result=\"allowed\",tenant=\"default\",throttle="
                "\"burst\"} 3"));
  EXPECT_THAT(text,
              HasSubstr("traffik_decisions_total{result=\"throttled\",tenant=\"default\","
                        "throttle=\"burst\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("traffik_decisions_total{result=\"allowed\",tenant=\"default\","
                        "throttle=\"inline\"} 1"));
}

// A backend that always fails, as an unreachable Redis does.
class FailingBackend final : public Backend {
 public:
  absl::string_view Name() const override { return "redis://10.0.0.1:6379/0"; }
  void Decide(absl::string_view, const Rate&, uint64_t, DecisionCallback done) override {
    std::move(done)(absl::UnavailableError("redis://10.0.0.1:6379/0: not connected"));
  }
  void DecideBatch(absl::Span<const BucketOp>, BatchCallback done) override {
    std::move(done)(absl::UnavailableError("redis://10.0.0.1:6379/0: not connected"));
  }
  void DecideAllOrNothing(absl::Span<const BucketOp>,
                          AllOrNothingCallback done) override {
    std::move(done)(all_or_nothing_error);
  }
  absl::Status all_or_nothing_error =
      absl::UnavailableError("redis://10.0.0.1:6379/0: not connected");
};

class BackendErrorPolicyTest : public ::testing::Test {
 protected:
  BackendErrorPolicyTest() : memory_(clock_, MemoryBackendOptions{1000, 0}) {
    config_.throttles = {{"api", 4, 60'000}};
    TenantConfig strict;
    strict.name = strict.prefix = "strict";
    strict.backend = "redis://10.0.0.1:6379/0";
    TenantConfig open = strict;
    open.name = open.prefix = "open";
    open.on_backend_error = BackendErrorPolicy::kAllow;
    TenantConfig mem;
    mem.name = mem.prefix = "mem";
    config_.tenants = {strict, open, mem};
    config_.default_tenant = "mem";
    auto snap = Snapshot::Build(
        config_,
        [this](const TenantConfig& t) -> absl::StatusOr<Backend*> {
          if (t.backend == "memory") return &memory_;
          return &failing_;
        },
        metrics_);
    EXPECT_TRUE(snap.ok()) << snap.status();
    engine_ = std::make_unique<Engine>(*snap);
  }

  absl::StatusOr<Decision> Call(absl::string_view tenant) {
    HitRequest r;
    r.identifier = "user:1";
    r.throttle_uid = "api";
    r.tenant = tenant;
    absl::StatusOr<Decision> out = absl::InternalError("callback not run");
    engine_->ShouldThrottle(r, [&](absl::StatusOr<Decision> d) { out = std::move(d); });
    return out;
  }

  FakeClock clock_;
  MemoryBackend memory_;
  FailingBackend failing_;
  Metrics metrics_;
  Config config_;
  std::unique_ptr<Engine> engine_;
};

// Verifies deny (the default) fails the call UNAVAILABLE naming the backend.
TEST_F(BackendErrorPolicyTest, DenyFailsUnavailable) {
  auto d = Call("strict");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("redis://10.0.0.1:6379/0"));
}

// Verifies allow lets the hit through and counts it in a metric.
TEST_F(BackendErrorPolicyTest, AllowFailsOpenAndCounts) {
  auto d = Call("open");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->wait_ms, 0u);
  EXPECT_EQ(d->limit, 4u);
  (void)Call("strict");
  const std::string text = metrics_.RenderText();
  EXPECT_THAT(
      text, HasSubstr("traffik_backend_errors_total{backend=\"redis://10.0.0.1:6379/0\","
                      "policy=\"allow\",tenant=\"open\"} 1"));
  EXPECT_THAT(
      text, HasSubstr("traffik_backend_errors_total{backend=\"redis://10.0.0.1:6379/0\","
                      "policy=\"deny\",tenant=\"strict\"} 1"));
}

// Verifies a memory tenant is unaffected by another tenant's failing backend.
TEST_F(BackendErrorPolicyTest, OtherBackendsUnaffected) {
  auto d = Call("mem");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->remaining, 3u);
}

// Verifies in a batch each item follows its tenant's policy: fail-open items
// are allowed; one fail-closed item fails the batch UNAVAILABLE.
TEST_F(BackendErrorPolicyTest, BatchFollowsEachTenantsPolicy) {
  std::vector<HitRequest> reqs(2);
  for (auto& r : reqs) {
    r.identifier = "user:1";
    r.throttle_uid = "api";
  }
  reqs[0].tenant = "open";
  reqs[1].tenant = "mem";
  absl::StatusOr<std::vector<Decision>> out = absl::InternalError("not run");
  engine_->ShouldThrottleBatch(
      reqs, [&](absl::StatusOr<std::vector<Decision>> d) { out = std::move(d); });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE((*out)[0].allowed);
  EXPECT_EQ((*out)[1].remaining, 3u);
  reqs[1].tenant = "strict";
  engine_->ShouldThrottleBatch(
      reqs, [&](absl::StatusOr<std::vector<Decision>> d) { out = std::move(d); });
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable);
}

// Verifies an all-or-nothing batch must stay on one backend: tenants on
// different backends are refused INVALID_ARGUMENT and nothing is taken.
TEST_F(BackendErrorPolicyTest, AllOrNothingSpansBackends) {
  std::vector<HitRequest> reqs(2);
  for (auto& r : reqs) {
    r.identifier = "user:1";
    r.throttle_uid = "api";
  }
  reqs[0].tenant = "mem";
  reqs[1].tenant = "open";
  absl::StatusOr<AllOrNothingResult> out = absl::InternalError("not run");
  engine_->ShouldThrottleBatch(
      reqs, true, [&](absl::StatusOr<AllOrNothingResult> d) { out = std::move(d); });
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(out.status().message(),
                               "all_or_nothing batch spans several backends"))
      << out.status();
  EXPECT_EQ(Call("mem")->remaining, 3u);  // nothing was taken
}

// Verifies backend errors in an all-or-nothing batch follow the tenants'
// policies, except FAILED_PRECONDITION (keys the backend cannot decide
// together), which is returned as is.
TEST_F(BackendErrorPolicyTest, AllOrNothingBackendErrors) {
  std::vector<HitRequest> reqs(2);
  for (auto& r : reqs) {
    r.identifier = "user:1";
    r.throttle_uid = "api";
    r.tenant = "open";
  }
  absl::StatusOr<AllOrNothingResult> out = absl::InternalError("not run");
  auto run = [&] {
    engine_->ShouldThrottleBatch(
        reqs, true, [&](absl::StatusOr<AllOrNothingResult> d) { out = std::move(d); });
  };
  run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->applied);
  EXPECT_TRUE(out->decisions[0].allowed);
  EXPECT_TRUE(out->decisions[1].allowed);
  reqs[1].tenant = "strict";
  run();
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable);
  failing_.all_or_nothing_error = absl::FailedPreconditionError("keys in several slots");
  reqs[1].tenant = "open";
  run();
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(out.status().message(), "keys in several slots");
}

// Two memory tenants on one MemoryBackend, each in its own partition with
// an equal share (2 buckets) of memory.max_buckets 4; both fail open on
// outages.
class MemoryTenantsTest : public ::testing::Test {
 protected:
  MemoryTenantsTest() : memory_(clock_, MemoryBackendOptions{4, 0}) {
    config_.throttles = {{"api", 1, 3'600'000}};
    TenantConfig a;
    a.name = a.prefix = "a";
    a.on_backend_error = BackendErrorPolicy::kAllow;
    TenantConfig b = a;
    b.name = b.prefix = "b";
    config_.tenants = {a, b};
    config_.default_tenant = "a";
    config_.memory.max_buckets = 4;
    for (const TenantConfig& t : config_.tenants) {
      const MemoryShareConfig share = MemoryShareOf(config_, t);
      MemoryBackend::Partition* p =
          memory_.AddPartition(t.name, {share.max_bytes, share.max_buckets});
      partitions_[t.name] = p;
      metrics_.AddRejectionSource("memory", t.name, [p] { return p->rejections(); });
    }
    auto snap = Snapshot::Build(
        config_,
        [this](const TenantConfig& t) -> absl::StatusOr<Snapshot::TenantBackend> {
          return Snapshot::TenantBackend(&memory_, partitions_.at(t.name));
        },
        metrics_);
    EXPECT_TRUE(snap.ok()) << snap.status();
    engine_ = std::make_unique<Engine>(*snap);
  }

  static HitRequest Req(absl::string_view tenant, absl::string_view id) {
    HitRequest r;
    r.identifier = id;
    r.throttle_uid = "api";
    r.tenant = tenant;
    return r;
  }
  absl::StatusOr<Decision> Call(absl::string_view tenant, absl::string_view id) {
    absl::StatusOr<Decision> out = absl::InternalError("callback not run");
    engine_->ShouldThrottle(Req(tenant, id),
                            [&](absl::StatusOr<Decision> d) { out = std::move(d); });
    return out;
  }
  absl::StatusOr<AllOrNothingResult> Batch(const std::vector<HitRequest>& reqs,
                                           bool all_or_nothing) {
    absl::StatusOr<AllOrNothingResult> out = absl::InternalError("callback not run");
    engine_->ShouldThrottleBatch(
        reqs, all_or_nothing,
        [&](absl::StatusOr<AllOrNothingResult> d) { out = std::move(d); });
    return out;
  }

  FakeClock clock_;
  MemoryBackend memory_;
  absl::flat_hash_map<std::string, MemoryBackend::Partition*> partitions_;
  Metrics metrics_;
  Config config_;
  std::unique_ptr<Engine> engine_;
};

// Verifies a tenant's flood of new buckets is refused RESOURCE_EXHAUSTED at
// its own share (naming the tenant, never the identifier), is never failed
// open by on_backend_error: allow (not an outage), is counted per tenant, and
// leaves the other tenant's drained bucket drained and its share free.
TEST_F(MemoryTenantsTest, FloodIsRefusedAtItsOwnShare) {
  ASSERT_TRUE(Call("b", "victim")->allowed);
  ASSERT_FALSE(Call("b", "victim")->allowed);
  for (int i = 0; i < 50; ++i) {
    const std::string id = absl::StrCat("flood-identifier-", i);
    absl::StatusOr<Decision> d = Call("a", id);
    if (i < 2) {
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_TRUE(d->allowed);
      continue;
    }
    ASSERT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted) << i;
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("tenant 'a'"));
    EXPECT_THAT(std::string(d.status().message()), Not(HasSubstr("flood-identifier")));
    clock_.AdvanceMs(1000);
  }
  const absl::StatusOr<Decision> victim = Call("b", "victim");
  ASSERT_TRUE(victim.ok());
  EXPECT_FALSE(victim->allowed);
  EXPECT_TRUE(Call("b", "second")->allowed);  // b's second bucket still fits
  EXPECT_EQ(Call("a", "flood-identifier-0")->allowed, false);  // kept, drained
  const std::string text = metrics_.RenderText();
  EXPECT_THAT(
      text,
      HasSubstr("traffik_bucket_rejections_total{backend=\"memory\",tenant=\"a\"} 48"));
  EXPECT_THAT(
      text,
      HasSubstr("traffik_bucket_rejections_total{backend=\"memory\",tenant=\"b\"} 0"));
  EXPECT_THAT(text, HasSubstr("traffik_backend_errors_total{backend=\"memory\","
                              "policy=\"allow\",tenant=\"a\"} 0"));
}

// Verifies batches: one whose new buckets do not fit the tenant's share is
// refused whole RESOURCE_EXHAUSTED (plain or all-or-nothing, never failed
// open) and takes nothing; an all-or-nothing batch across two memory tenants
// (one backend) works and charges each tenant's own share.
TEST_F(MemoryTenantsTest, Batches) {
  ASSERT_TRUE(Call("a", "old")->allowed);
  const std::vector<HitRequest> too_many = {Req("a", "n1"), Req("a", "n2")};
  EXPECT_EQ(Batch(too_many, false).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Batch(too_many, true).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(partitions_["a"]->buckets(), 1u);

  absl::StatusOr<AllOrNothingResult> both =
      Batch({Req("a", "shared"), Req("b", "shared")}, true);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_TRUE(both->applied);
  EXPECT_EQ(partitions_["a"]->buckets(), 2u);
  EXPECT_EQ(partitions_["b"]->buckets(), 1u);
  both = Batch({Req("b", "shared"), Req("a", "shared")}, true);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_FALSE(both->applied);  // both drained (limit 1)
}

// Verifies bucket keys are unambiguous and carry the tenant prefix.
TEST(BucketKeyTest, Format) {
  std::string key;
  BuildBucketKey("gold", "api", std::string("a:b\0c", 5), &key);
  EXPECT_EQ(key, std::string("gold:api:{a:b\0c}", 16));
  std::string other;
  BuildBucketKey("gold", "api", "a", &other);
  EXPECT_NE(key, other);
  // A prefix may hold ':' (never '{'), a uid never: still distinct.
  std::string colon_prefix;
  BuildBucketKey("go:ld", "api", "x", &colon_prefix);
  std::string colon_id;
  BuildBucketKey("go", "ld", "api:x", &colon_id);
  EXPECT_EQ(colon_prefix, "go:ld:api:{x}");
  EXPECT_EQ(colon_id, "go:ld:{api:x}");
}

// Verifies every throttle of one identifier shares the Redis Cluster hash
// tag (one slot, so an all-or-nothing batch is one script), in any tenant.
TEST(BucketKeyTest, HashTagIsTheIdentifier) {
  std::string a, b, c;
  BuildBucketKey("gold", "burst", "user:42", &a);
  BuildBucketKey("silver", "sustained", "user:42", &b);
  BuildBucketKey("gold", "burst", "user:43", &c);
  EXPECT_EQ(RedisKeySlot(a), RedisKeySlot(b));
  EXPECT_EQ(RedisKeySlot(a), RedisKeySlot("user:42"));
  EXPECT_EQ(RedisKeySlot(c), RedisKeySlot("user:43"));
}

}  // namespace
}  // namespace traffik
