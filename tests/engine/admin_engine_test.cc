// The engine's admin entry points (Peek, GetBucket, ResetBuckets,
// ListThrottles) and peek in batches, on the memory backend with one
// partition per tenant, as traffikd wires it; and the key selection they use.

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "backend/memory/memory_backend.h"
#include "clock/clock.h"
#include "engine/engine.h"
#include "engine/key.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;

class AdminEngineTest : public ::testing::Test {
 protected:
  AdminEngineTest() : memory_(clock_, MemoryBackendOptions{1'000'000, 0}) {
    config_.throttles = {{"search", 3, 3'600'000}, {"login", 5, 60'000}};
    TenantConfig def;
    def.name = def.prefix = "default";
    TenantConfig gold;
    gold.name = "gold";
    gold.prefix = "gold";
    gold.quota_multiplier = 2.5;
    // A prefix that starts like the default tenant's keys: its buckets must
    // never be selected for the default tenant.
    TenantConfig nested;
    nested.name = "nested";
    nested.prefix = "default:search";
    config_.tenants = {def, gold, nested};
    config_.default_tenant = "default";
    config_.max_identifier_bytes = 64;
    for (const TenantConfig& t : config_.tenants) {
      partitions_[t.name] = memory_.AddPartition(t.name, {uint64_t{1} << 30, 1000});
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

  static HitRequest Req(absl::string_view id, absl::string_view uid,
                        absl::string_view tenant = "") {
    HitRequest r;
    r.identifier = id;
    r.throttle_uid = uid;
    r.tenant = tenant;
    return r;
  }
  static HitRequest Inline(absl::string_view id, absl::string_view uid, uint64_t limit,
                           absl::string_view tenant = "") {
    HitRequest r = Req(id, uid, tenant);
    r.has_spec = true;
    r.spec_limit = limit;
    r.spec_period_ms = 3'600'000;
    return r;
  }
  static HitRequest Peeking(HitRequest r) {
    r.peek = true;
    return r;
  }

  absl::StatusOr<Decision> Call(const HitRequest& r) {
    absl::StatusOr<Decision> out = absl::InternalError("callback not run");
    engine_->ShouldThrottle(r, [&](absl::StatusOr<Decision> d) { out = std::move(d); });
    return out;
  }
  absl::StatusOr<PeekResult> Get(const HitRequest& r) {
    absl::StatusOr<PeekResult> out = absl::InternalError("callback not run");
    engine_->GetBucket(r, [&](absl::StatusOr<PeekResult> p) { out = std::move(p); });
    return out;
  }
  absl::StatusOr<uint64_t> Reset(absl::string_view tenant, absl::string_view uid = "",
                                 absl::string_view identifier = "") {
    absl::StatusOr<uint64_t> out = absl::InternalError("callback not run");
    engine_->ResetBuckets({tenant, uid, identifier},
                          [&](absl::StatusOr<uint64_t> n) { out = std::move(n); });
    return out;
  }
  absl::StatusOr<AllOrNothingResult> Batch(const std::vector<HitRequest>& r,
                                           bool all_or_nothing) {
    absl::StatusOr<AllOrNothingResult> out = absl::InternalError("callback not run");
    engine_->ShouldThrottleBatch(
        r, all_or_nothing,
        [&](absl::StatusOr<AllOrNothingResult> d) { out = std::move(d); });
    return out;
  }
  uint64_t Remaining(const HitRequest& r) {
    absl::StatusOr<PeekResult> p = Get(r);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? p->as_is.remaining : 0;
  }
  uint64_t Buckets(absl::string_view tenant) {
    return partitions_.at(std::string(tenant))->buckets();
  }

  FakeClock clock_;
  MemoryBackend memory_;
  absl::flat_hash_map<std::string, MemoryBackend::Partition*> partitions_;
  Metrics metrics_;
  Config config_;
  std::unique_ptr<Engine> engine_;
};

// Verifies 100 peeks take nothing and create no bucket, and that a peek gives
// the answer the real hit then gets (remaining after the hit included).
TEST_F(AdminEngineTest, PeekTakesNothing) {
  ASSERT_TRUE(Call(Req("u", "search"))->allowed);
  for (int i = 0; i < 100; ++i) {
    auto p = Call(Peeking(Req("u", "search")));
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE(p->allowed);
    EXPECT_EQ(p->remaining, 1u);  // what the hit would leave
  }
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(Call(Peeking(Req("fresh", "search"))).ok());
  EXPECT_EQ(Buckets("default"), 1u);  // "fresh" was never created
  const Decision peeked = *Call(Peeking(Req("u", "search")));
  const Decision real = *Call(Req("u", "search"));
  EXPECT_EQ(peeked.allowed, real.allowed);
  EXPECT_EQ(peeked.remaining, real.remaining);
  EXPECT_EQ(peeked.reset_ms, real.reset_ms);
  EXPECT_EQ(real.remaining, 1u);  // 3 - 2 hits: the peeks took nothing
}

// Verifies a peek on a drained bucket answers the wait ShouldThrottle would,
// and is not counted as a decision.
TEST_F(AdminEngineTest, PeekOnDrainedBucket) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Call(Req("u", "search"))->allowed);
  const std::string before = metrics_.RenderText();
  auto p = Call(Peeking(Req("u", "search")));
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->allowed);
  EXPECT_EQ(p->wait_ms, 1'200'000u);  // one token of 3 per hour
  EXPECT_EQ(metrics_.RenderText(), before);
  auto real = Call(Req("u", "search"));
  EXPECT_EQ(real->wait_ms, p->wait_ms);
}

// Verifies peek validates exactly as ShouldThrottle: same codes for bad
// identifiers, uids, tenants, specs and costs.
TEST_F(AdminEngineTest, PeekValidatesLikeShouldThrottle) {
  HitRequest too_costly = Req("u", "search");
  too_costly.cost = 4;
  HitRequest no_spec_gold = Inline("u", "nope", 0, "gold");
  const std::string long_id(65, 'x');
  const std::vector<HitRequest> bad = {
      Req("", "search"),   Req("u", "a:b"),       Req("u", "search", "missing"),
      Req("u", "unknown"), Inline("u", "x", 0),   too_costly,
      no_spec_gold,        Req(long_id, "search")};
  for (const HitRequest& r : bad) {
    const absl::Status want = Call(r).status();
    ASSERT_FALSE(want.ok());
    EXPECT_EQ(Call(Peeking(r)).status(), want);
    EXPECT_EQ(Get(r).status(), want);
  }
  EXPECT_EQ(Buckets("default") + Buckets("gold"), 0u);
}

// Verifies GetBucket: a missing bucket is full (remaining = limit, reset 0)
// and is not created; after hits it reports the bucket as it stands and the
// wait a hit of `cost` (0 = 1) would get; a drained bucket reports its wait.
TEST_F(AdminEngineTest, GetBucket) {
  auto fresh = Get(Req("u", "search"));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_TRUE(fresh->hit.allowed);
  EXPECT_EQ(fresh->as_is.limit, 3u);
  EXPECT_EQ(fresh->as_is.remaining, 3u);
  EXPECT_EQ(fresh->as_is.reset_ms, 0u);
  EXPECT_EQ(Buckets("default"), 0u);

  ASSERT_TRUE(Call(Req("u", "search"))->allowed);
  HitRequest two = Req("u", "search");
  two.cost = 2;
  auto after = Get(two);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->hit.allowed);
  EXPECT_EQ(after->hit.remaining, 0u);    // what the hit would leave
  EXPECT_EQ(after->as_is.remaining, 2u);  // as it stands
  EXPECT_EQ(after->as_is.reset_ms, 1'200'000u);
  HitRequest three = Req("u", "search");
  three.cost = 3;
  auto too_many = Get(three);
  ASSERT_TRUE(too_many.ok());
  EXPECT_FALSE(too_many->hit.allowed);
  EXPECT_EQ(too_many->hit.wait_ms, 1'200'000u);

  ASSERT_TRUE(Call(Req("u", "search"))->allowed);
  ASSERT_TRUE(Call(Req("u", "search"))->allowed);
  clock_.AdvanceMs(200'000);
  auto drained = Get(Req("u", "search"));
  ASSERT_TRUE(drained.ok());
  EXPECT_FALSE(drained->hit.allowed);
  EXPECT_EQ(drained->hit.wait_ms, 1'000'000u);
  EXPECT_EQ(drained->as_is.remaining, 0u);
  EXPECT_EQ(drained->as_is.reset_ms, 3'400'000u);
  // The tenant's multiplier applies.
  auto gold = Get(Req("u", "search", "gold"));
  ASSERT_TRUE(gold.ok());
  EXPECT_EQ(gold->as_is.limit, 7u);
}

// Verifies peek in a batch: an item with peek sees what earlier items took
// and takes nothing itself, the others decide as usual; peeks are not
// counted as decisions.
TEST_F(AdminEngineTest, PeekInBatch) {
  auto r = Batch({Req("u", "search"), Peeking(Req("u", "search")), Req("u", "search"),
                  Peeking(Req("new", "search"))},
                 /*all_or_nothing=*/false);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->decisions.size(), 4u);
  EXPECT_EQ(r->decisions[0].remaining, 2u);
  EXPECT_EQ(r->decisions[1].remaining, 1u);  // as the second hit would leave it
  EXPECT_EQ(r->decisions[2].remaining, 1u);  // the peek took nothing
  EXPECT_EQ(r->decisions[3].remaining, 2u);
  EXPECT_EQ(Remaining(Req("u", "search")), 1u);
  EXPECT_EQ(Buckets("default"), 1u);  // "new" was only peeked at
  EXPECT_THAT(metrics_.RenderText(),
              HasSubstr("traffik_decisions_total{result=\"allowed\",tenant=\"default\","
                        "throttle=\"search\"} 2"));
}

// Verifies an all_or_nothing batch with peek on every item is a dry run
// (the answers and `applied` the batch would get, nothing taken), and that
// mixing peek and non-peek items is INVALID_ARGUMENT with nothing taken.
TEST_F(AdminEngineTest, AllOrNothingDryRun) {
  ASSERT_TRUE(Call(Req("u", "search"))->allowed);
  auto would_apply =
      Batch({Peeking(Req("u", "search")), Peeking(Req("u", "login"))}, true);
  ASSERT_TRUE(would_apply.ok()) << would_apply.status();
  EXPECT_TRUE(would_apply->applied);
  EXPECT_EQ(would_apply->decisions[0].remaining, 1u);
  EXPECT_EQ(would_apply->decisions[1].remaining, 4u);
  auto would_refuse = Batch({Peeking(Req("u", "search")), Peeking(Req("u", "search")),
                             Peeking(Req("u", "search"))},
                            true);
  ASSERT_TRUE(would_refuse.ok());
  EXPECT_FALSE(would_refuse->applied);
  EXPECT_GT(would_refuse->decisions[2].wait_ms, 0u);
  EXPECT_EQ(would_refuse->decisions[2].remaining, 2u);  // as it stands
  auto mixed = Batch({Req("u", "search"), Peeking(Req("u", "login"))}, true);
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mixed.status().message(), HasSubstr("mixes peek and non-peek"));
  EXPECT_EQ(Remaining(Req("u", "search")), 2u);
  EXPECT_EQ(Remaining(Req("u", "login")), 5u);
  EXPECT_EQ(Buckets("default"), 1u);
}

// Verifies ResetBuckets of one bucket forgets it and the inline-spec buckets
// of the same uid and identifier, and nothing else (other identifiers, other
// uids, an identifier that only starts the same, other tenants).
TEST_F(AdminEngineTest, ResetOneBucket) {
  ASSERT_TRUE(Call(Req("u", "search"))->allowed);
  ASSERT_TRUE(Call(Inline("u", "search2", 10)).ok());
  ASSERT_TRUE(Call(Inline("u", "search2", 20)).ok());
  ASSERT_TRUE(Call(Inline("u", "search2", 20)).ok());
  ASSERT_TRUE(Call(Inline("u}x", "search2", 20)).ok());  // starts like "u}"
  ASSERT_TRUE(Call(Req("u", "login")).ok());
  ASSERT_TRUE(Call(Req("v", "search")).ok());
  ASSERT_TRUE(Call(Req("u", "search", "gold")).ok());
  ASSERT_EQ(Buckets("default"), 6u);

  auto one = Reset("", "search", "u");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 1u);
  EXPECT_EQ(Remaining(Req("u", "search")), 3u);
  auto inline_ones = Reset("default", "search2", "u");
  ASSERT_TRUE(inline_ones.ok());
  EXPECT_EQ(*inline_ones, 2u);  // both specs; "u}x" kept
  EXPECT_EQ(Remaining(Inline("u}x", "search2", 20)), 19u);
  EXPECT_EQ(Remaining(Req("u", "login")), 4u);
  EXPECT_EQ(Remaining(Req("v", "search")), 2u);
  EXPECT_EQ(Remaining(Req("u", "search", "gold")), 6u);
  EXPECT_EQ(Buckets("default"), 3u);
  EXPECT_EQ(*Reset("", "search", "u"), 0u);  // already gone
}

// Verifies ResetBuckets of a throttle forgets its configured and inline
// buckets for every identifier, even a uid that is not configured, and keeps
// other throttles and other tenants' buckets (also one whose prefix makes
// its keys start like this tenant's).
TEST_F(AdminEngineTest, ResetThrottleAndTenant) {
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(Call(Req(id, "search")).ok());
    ASSERT_TRUE(Call(Inline(id, "search", 9)).ok());  // configured wins: same bucket
    ASSERT_TRUE(Call(Inline(id, "adhoc", 9)).ok());
    ASSERT_TRUE(Call(Req(id, "login")).ok());
    ASSERT_TRUE(Call(Req(id, "login", "nested")).ok());
  }
  ASSERT_TRUE(Call(Req("a", "search", "gold")).ok());
  ASSERT_EQ(Buckets("default"), 9u);
  EXPECT_EQ(*Reset("", "search"), 3u);
  EXPECT_EQ(*Reset("", "adhoc"), 3u);  // inline only, never configured
  EXPECT_EQ(Remaining(Req("a", "search")), 3u);
  EXPECT_EQ(Remaining(Req("a", "login")), 4u);
  EXPECT_EQ(Buckets("default"), 3u);

  EXPECT_EQ(*Reset("default"), 3u);
  EXPECT_EQ(Buckets("default"), 0u);
  EXPECT_EQ(partitions_.at("default")->bytes(), 0u);
  EXPECT_EQ(Buckets("nested"), 3u);
  EXPECT_EQ(Buckets("gold"), 1u);
  EXPECT_EQ(*Reset("gold"), 1u);
  EXPECT_EQ(Remaining(Req("a", "search", "gold")), 7u);
}

// Verifies ResetBuckets validation: identifier without uid, bad uid, bad or
// unknown tenant, identifier over the limit; nothing is removed.
TEST_F(AdminEngineTest, ResetValidation) {
  ASSERT_TRUE(Call(Req("u", "search")).ok());
  EXPECT_EQ(Reset("", "", "u").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reset("", "a:b").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reset("", "a{b").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reset("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Reset(std::string("a\0b", 3)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reset("", "search", std::string(65, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Buckets("default"), 1u);
}

// Verifies ListThrottles lists a tenant's configured throttles sorted by uid,
// after its multiplier; unknown and bad tenants are errors.
TEST_F(AdminEngineTest, ListThrottles) {
  auto def = engine_->ListThrottles("");
  ASSERT_TRUE(def.ok()) << def.status();
  ASSERT_EQ(def->size(), 2u);
  EXPECT_EQ((*def)[0].uid, "login");
  EXPECT_EQ((*def)[0].rate.capacity, 5u);
  EXPECT_EQ((*def)[0].rate.period_ms, 60'000u);
  EXPECT_EQ((*def)[1].uid, "search");
  auto gold = engine_->ListThrottles("gold");
  ASSERT_TRUE(gold.ok());
  EXPECT_EQ((*gold)[0].rate.capacity, 12u);  // floor(5 * 2.5)
  EXPECT_EQ((*gold)[1].rate.capacity, 7u);
  EXPECT_EQ(engine_->ListThrottles("missing").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->ListThrottles(std::string(300, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Verifies the key selection: the literal start of each scope, and exact
// matching of prefix, uid and identifier (identifiers holding '}' or '#',
// longer prefixes and identifiers that start alike, inline keys).
TEST(BucketSelectionTest, PrefixAndMatches) {
  EXPECT_EQ(BucketKeyPrefix("p", "", ""), "p:");
  EXPECT_EQ(BucketKeyPrefix("p", "u", ""), "p:u:{");
  EXPECT_EQ(BucketKeyPrefix("p", "u", "i*d"), "p:u:{i*d}");
  std::string k;
  BuildBucketKey("p", "u", "id", &k);
  EXPECT_TRUE(BucketKeyMatches(k, "p", "", ""));
  EXPECT_TRUE(BucketKeyMatches(k, "p", "u", ""));
  EXPECT_TRUE(BucketKeyMatches(k, "p", "u", "id"));
  EXPECT_FALSE(BucketKeyMatches(k, "p", "u", "i"));
  EXPECT_FALSE(BucketKeyMatches(k, "p", "v", ""));
  BuildInlineBucketKey("p", "u", "id", 5, 1000, &k);
  EXPECT_TRUE(BucketKeyMatches(k, "p", "u", "id"));
  BuildBucketKey("p", "u", "id}#5/1000", &k);  // configured, identifier with '}#'
  EXPECT_TRUE(k.rfind(BucketKeyPrefix("p", "u", "id"), 0) == 0);
  EXPECT_FALSE(BucketKeyMatches(k, "p", "u", "id"));
  EXPECT_TRUE(BucketKeyMatches(k, "p", "u", "id}#5/1000"));
  BuildBucketKey("p:u", "x", "id", &k);  // another tenant's longer prefix
  EXPECT_TRUE(k.rfind(BucketKeyPrefix("p", "", ""), 0) == 0);
  EXPECT_FALSE(BucketKeyMatches(k, "p", "", ""));
  EXPECT_FALSE(BucketKeyMatches("p:not a bucket", "p", "", ""));
}

}  // namespace
}  // namespace traffik
