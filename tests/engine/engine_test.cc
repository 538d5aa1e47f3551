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

// Verifies a drained inline bucket stays drained when the same uid and
// identifier are called with another spec, here (2^53, 1): the spec is part
// of the bucket's identity, and the other spec's answers are sane (single
// calls, a batch and an all-or-nothing batch).
TEST_F(EngineTest, OtherSpecCannotRefillInlineBucket) {
  const uint64_t kHuge = uint64_t{1} << 53;
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(Call(Inline("victim", "adhoc", 10, 60'000))->allowed);
  ASSERT_FALSE(Call(Inline("victim", "adhoc", 10, 60'000))->allowed);
  // Time passes, so a shared bucket would refill to (2^53, 1)'s full.
  clock_.AdvanceMs(5);

  auto big = Call(Inline("victim", "adhoc", kHuge, 1));
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_TRUE(big->allowed);
  EXPECT_EQ(big->limit, kHuge);
  EXPECT_EQ(big->remaining, kHuge - 1);
  EXPECT_LE(big->reset_ms, 1u);
  auto still = Call(Inline("victim", "adhoc", 10, 60'000));
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_FALSE(still->allowed);
  EXPECT_EQ(still->remaining, 0u);

  clock_.AdvanceMs(5);
  auto batch =
      Batch({Inline("victim", "adhoc", kHuge, 1), Inline("victim", "adhoc", 10, 60'000),
             Inline("victim", "adhoc", kHuge, 1), Inline("victim", "adhoc", 10, 60'000)});
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (size_t i : {1, 3}) {
    EXPECT_FALSE((*batch)[i].allowed) << i;
    EXPECT_EQ((*batch)[i].remaining, 0u) << i;
    EXPECT_LE((*batch)[i].reset_ms, 60'000u) << i;
    EXPECT_LE((*batch)[i].wait_ms, 6'000u) << i;
  }
  for (size_t i : {0, 2}) {
    EXPECT_TRUE((*batch)[i].allowed) << i;
    EXPECT_LE((*batch)[i].remaining, kHuge) << i;
    EXPECT_LE((*batch)[i].reset_ms, 1u) << i;
  }

  clock_.AdvanceMs(5);
  auto all = AllOrNothing(
      {Inline("victim", "adhoc", kHuge, 1), Inline("victim", "adhoc", 10, 60'000)});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_FALSE(all->applied);
  EXPECT_FALSE(all->decisions[1].allowed);
  EXPECT_EQ(all->decisions[1].remaining, 0u);
  EXPECT_LE(all->decisions[1].reset_ms, 60'000u);
  EXPECT_LE(all->decisions[0].reset_ms, 1u);
  EXPECT_FALSE(Call(Inline("victim", "adhoc", 10, 60'000))->allowed);
}

// Verifies an inline bucket is keyed by the raw spec, so a changed quota
// multiplier keeps its state (a drained bucket stays drained) instead of
// starting a fresh bucket.
TEST_F(EngineTest, InlineKeyUsesTheRawSpec) {
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Call(Inline("k", "adhoc", 4, 60'000))->allowed);
  config_.tenants[0].quota_multiplier = 2.0;
  Rebuild();
  auto d = Call(Inline("k", "adhoc", 4, 60'000));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->limit, 8u);
  EXPECT_FALSE(d->allowed);
  PreparedHit hit;
  ASSERT_TRUE(engine_->Prepare(Inline("k", "adhoc", 4, 60'000), &hit).ok());
  EXPECT_EQ(hit.key, "default:adhoc:{k}#4/60000");
  ASSERT_TRUE(engine_->Prepare(Req("k", "burst"), &hit).ok());
  EXPECT_EQ(hit.key, "default:burst:{k}");
}

// Verifies an identifier is any bytes (not UTF-8) while a uid must be UTF-8
// and a tenant at most 256 bytes of UTF-8: INVALID_ARGUMENT with quoted,
// escaped values; an unknown well-formed tenant stays NOT_FOUND.
TEST_F(EngineTest, BytesValidation) {
  auto binary = Call(Req("\xff\xfe", "burst"));
  ASSERT_TRUE(binary.ok()) << binary.status();
  EXPECT_TRUE(binary->allowed);

  auto uid = Call(Inline("x", "ad\xffhoc", 5, 1000));
  EXPECT_EQ(uid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(uid.status().message(), HasSubstr("'ad\\xffhoc' is not valid UTF-8"));

  auto tenant = Call(Req("x", "burst", "gold\xff"));
  EXPECT_EQ(tenant.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tenant.status().message(), HasSubstr("'gold\\xff' is not valid UTF-8"));

  const std::string long_tenant(257, 't');
  auto too_long = Call(Req("x", "burst", long_tenant));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.status().message(), HasSubstr("longer than 256 bytes"));
  EXPECT_THAT(too_long.status().message(), HasSubstr("(257 bytes)"));

  auto newline = Call(Req("x", "burst", "a\nb"));
  EXPECT_EQ(newline.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(newline.status().message(), HasSubstr("'a\\nb'"));

  auto unknown = Call(Req("x", "burst", std::string(256, 's')));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(
      unknown.status().message(),
      HasSubstr("unknown tenant '" + std::string(64, 's') + "\xE2\x80\xA6' (256 bytes)"));
  EXPECT_LT(unknown.status().message().size(), 200u);
}

// Verifies every caller value in an error message is quoted, escaped and
// truncated: no raw newline or non-ASCII byte, bounded length, in single
// calls and batch messages.
TEST_F(EngineTest, MessagesQuoteCallerValues) {
  const std::string evil = "x'\n\xff" + std::string(300, 'y');
  const std::string evil_uid = "u\x7f" + std::string(200, 'v');
  std::vector<absl::Status> errors = {
      Call(Req("x", std::string(250, 'n'))).status(),  // unknown throttle
      Call(Req("x", evil_uid)).status(),               // control character
      Call(Req("x", evil)).status(),                   // too long + control
      Call(Inline("x", std::string(250, 'a'), 0, 1)).status(),
      Call(Inline("x", std::string(250, 'a'), 1, 0)).status(),
      Call(Inline("x", std::string(250, 'a'), uint64_t{1} << 53, 2)).status(),
      Call(Inline("x", std::string(250, 'a'), 5, 1000, "gold")).status(),
      Batch({Req("x", "burst"), Req("x", "burst", evil)}).status(),
  };
  const std::string long_uid(250, 'a');
  HitRequest costly = Req("x", long_uid);
  costly.has_spec = true;
  costly.spec_limit = 2;
  costly.spec_period_ms = 1000;
  costly.cost = 3;
  errors.push_back(Call(costly).status());
  for (const absl::Status& e : errors) {
    EXPECT_FALSE(e.ok());
    EXPECT_LT(e.message().size(), 400u) << e;
    for (char c : e.message()) {
      const auto u = static_cast<unsigned char>(c);
      // Printable ASCII, or the bytes of the truncation mark "…".
      EXPECT_TRUE((u >= 0x20 && u < 0x7f) || u == 0xE2 || u == 0x80 || u == 0xA6) << e;
    }
  }
  EXPECT_EQ(errors[6].code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(errors[8].code(), absl::StatusCode::kOutOfRange);
}

// A backend that always fails, as an unreachable Redis does (`error`).
class FailingBackend final : public Backend {
 public:
  absl::string_view Name() const override { return "redis://10.0.0.1:6379/0"; }
  void Decide(absl::string_view, const Rate&, uint64_t, DecisionCallback done) override {
    std::move(done)(error);
  }
  void DecideBatch(absl::Span<const BucketOp>, BatchCallback done) override {
    std::move(done)(error);
  }
  void DecideAllOrNothing(absl::Span<const BucketOp>,
                          AllOrNothingCallback done) override {
    std::move(done)(all_or_nothing_error);
  }
  void Peek(BackendPartition*, absl::string_view, const Rate&, uint64_t,
            PeekCallback done) override {
    std::move(done)(error);
  }
  void Reset(BackendPartition*, BucketSelector, CountCallback done) override {
    std::move(done)(error);
  }
  absl::Status error = absl::UnavailableError("redis://10.0.0.1:6379/0: not connected");
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

// Verifies a batch whose items are all on one failing backend (the engine's
// one-backend path, which hands the backend the prepared ops as they are)
// follows the tenant's policy: fail-open answers every item allowed, fail
// closed fails the batch UNAVAILABLE.
TEST_F(BackendErrorPolicyTest, BatchOnOneFailingBackendFollowsItsPolicy) {
  const std::vector<std::string> ids = {"user:0", "user:1", "user:2"};
  std::vector<HitRequest> reqs(ids.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].identifier = ids[i];  // a view: ids outlives the calls
    reqs[i].throttle_uid = "api";
    reqs[i].tenant = "open";
  }
  absl::StatusOr<std::vector<Decision>> out = absl::InternalError("not run");
  engine_->ShouldThrottleBatch(
      reqs, [&](absl::StatusOr<std::vector<Decision>> d) { out = std::move(d); });
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 3u);
  for (const Decision& d : *out) EXPECT_TRUE(d.allowed);
  for (HitRequest& r : reqs) r.tenant = "strict";
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

// Verifies fail open applies only to outages: with `allow`, kUnavailable and
// kDeadlineExceeded are answered allowed, while kInternal, kResourceExhausted
// and kFailedPrecondition are returned as is under either policy (and not
// counted as backend outages), for single calls, batches and all-or-nothing
// batches.
TEST_F(BackendErrorPolicyTest, FailOpenOnlyOnOutages) {
  failing_.error = absl::DeadlineExceededError("redis://10.0.0.1:6379/0: timeout");
  auto late = Call("open");
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_TRUE(late->allowed);
  EXPECT_EQ(Call("strict").status().code(), absl::StatusCode::kUnavailable);

  std::vector<HitRequest> reqs(2);
  for (auto& r : reqs) {
    r.identifier = "user:1";
    r.throttle_uid = "api";
    r.tenant = "open";
  }
  for (const absl::Status& error :
       {absl::InternalError("redis://10.0.0.1:6379/0: unexpected reply"),
        absl::ResourceExhaustedError("memory: budget reached"),
        absl::FailedPreconditionError("keys in several slots")}) {
    failing_.error = error;
    failing_.all_or_nothing_error = error;
    for (absl::string_view tenant : {"open", "strict"}) {
      auto d = Call(tenant);
      EXPECT_EQ(d.status(), error) << tenant;
    }
    absl::StatusOr<std::vector<Decision>> batch = absl::InternalError("not run");
    engine_->ShouldThrottleBatch(
        reqs, [&](absl::StatusOr<std::vector<Decision>> d) { batch = std::move(d); });
    EXPECT_EQ(batch.status(), error);
    absl::StatusOr<AllOrNothingResult> all = absl::InternalError("not run");
    engine_->ShouldThrottleBatch(
        reqs, true, [&](absl::StatusOr<AllOrNothingResult> d) { all = std::move(d); });
    EXPECT_EQ(all.status(), error);
  }
  // Only the timeout was an outage.
  EXPECT_THAT(
      metrics_.RenderText(),
      HasSubstr("traffik_backend_errors_total{backend=\"redis://10.0.0.1:6379/0\","
                "policy=\"allow\",tenant=\"open\"} 1\n"));
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

// Verifies inline keys carry the raw spec after the hash tag, differ from the
// configured key and from other specs, and keep the identifier's slot.
TEST(BucketKeyTest, InlineSpecKeys) {
  std::string configured, inline_a, inline_b;
  BuildBucketKey("t", "api", "user:42", &configured);
  BuildInlineBucketKey("t", "api", "user:42", 10, 60'000, &inline_a);
  BuildInlineBucketKey("t", "api", "user:42", uint64_t{1} << 53, 1, &inline_b);
  EXPECT_EQ(configured, "t:api:{user:42}");
  EXPECT_EQ(inline_a, "t:api:{user:42}#10/60000");
  EXPECT_EQ(inline_b, "t:api:{user:42}#9007199254740992/1");
  EXPECT_NE(inline_a, configured);
  EXPECT_NE(inline_a, inline_b);
  EXPECT_EQ(RedisKeySlot(inline_a), RedisKeySlot(configured));
  EXPECT_EQ(RedisKeySlot(inline_b), RedisKeySlot("user:42"));
  // An identifier that looks like a spec suffix still yields distinct keys.
  std::string tricky_configured, tricky_inline;
  BuildBucketKey("t", "api", "x}#10/60000", &tricky_configured);
  BuildInlineBucketKey("t", "api", "x", 10, 60'000, &tricky_inline);
  EXPECT_NE(tricky_configured, tricky_inline);
}

// Verifies ParseBucketKey inverts both key forms for awkward identifiers
// (holding '}', '#', '/', digits, ':' and binary bytes) and rejects non-keys.
TEST(BucketKeyTest, ParseRoundTrip) {
  const std::string ids[] = {
      "a", "}", "x}#1/2", "9", "a:b:{c}", std::string("\0\xff}", 3), "}#12/34}", "#"};
  for (const std::string& id : ids) {
    std::string key;
    BuildBucketKey("go:ld", "api", id, &key);
    auto parts = ParseBucketKey(key);
    ASSERT_TRUE(parts.has_value()) << key;
    EXPECT_EQ(parts->prefix, "go:ld");
    EXPECT_EQ(parts->uid, "api");
    EXPECT_EQ(parts->identifier, id);
    EXPECT_FALSE(parts->is_inline);
    BuildInlineBucketKey("go:ld", "api", id, 7, 1000, &key);
    parts = ParseBucketKey(key);
    ASSERT_TRUE(parts.has_value()) << key;
    EXPECT_EQ(parts->identifier, id);
    EXPECT_TRUE(parts->is_inline);
    EXPECT_EQ(parts->limit, 7u);
    EXPECT_EQ(parts->period_ms, 1000u);
  }
  for (absl::string_view bad :
       {"", "{x}", "t:{x}", "t:api:x", "t:api:{x}#1/", "t:api:{x}#01/2", "t:api:{x}1/2",
        "t:api:{x}#1/99999999999999999999"}) {
    EXPECT_FALSE(ParseBucketKey(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace traffik
